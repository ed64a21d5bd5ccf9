"""Knowledge distillation: AT, soft-target and feature losses, frozen teachers and their loaders."""

from .losses import KD_KINDS, ATLoss, DistillLoss, FeatureMSELoss, KDLoss, make_kd_loss, match_spatial
from .teachers import (TEACHER_SPECS, Teacher, TeacherResNet, check_teacher_matches, load_teacher,
                       save_teacher_checkpoint, train_builtin_teacher)

__all__ = [
    "KD_KINDS", "TEACHER_SPECS", "ATLoss", "DistillLoss", "FeatureMSELoss", "KDLoss", "Teacher", "TeacherResNet",
    "check_teacher_matches", "load_teacher", "make_kd_loss", "match_spatial", "save_teacher_checkpoint",
    "train_builtin_teacher",
]
