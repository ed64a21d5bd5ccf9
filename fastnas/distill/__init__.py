"""Knowledge distillation: AT, soft-target and feature losses, frozen teachers and their loaders."""

from .losses import KD_KINDS, ATLoss, DistillLoss, FeatureMSELoss, KDLoss, make_kd_loss, match_spatial
from .teachers import (TEACHER_ARCHS, TEACHER_SPECS, Teacher, TeacherResNet, check_teacher_matches, load_teacher,
                       register_teacher_arch, save_teacher_checkpoint, train_builtin_teacher)

__all__ = [
    "KD_KINDS", "TEACHER_ARCHS", "TEACHER_SPECS", "ATLoss", "DistillLoss", "FeatureMSELoss", "KDLoss", "Teacher",
    "TeacherResNet", "check_teacher_matches", "load_teacher", "make_kd_loss", "match_spatial",
    "register_teacher_arch", "save_teacher_checkpoint", "train_builtin_teacher",
]
