"""Distillation losses between a student and a fixed teacher.

Three objectives, all taking the teacher's outputs as fixed targets (detached):

- ``ATLoss``: activation-based attention transfer (Zagoruyko & Komodakis) on the
  stage features, the objective DNAD uses to regularize its search;
- ``KDLoss``: soft-target distillation on the logits (Hinton et al.);
- ``FeatureMSELoss``: the feature variant of the DNAD authors' code (1x1 conv
  adapters + affine-free batch norm, weighted MSE per stage).

``make_kd_loss`` wraps any of them behind one call,
``loss(student_logits, student_feats, teacher_logits, teacher_feats)``, so a
search or trainer does not need to know which one it was given.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops

KD_KINDS = ("at", "feature", "soft", "none")
AT_REDUCTIONS = ("half-sum", "mean")


def match_spatial(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool whichever of two maps [B, C, H, W] is larger down to the smaller H and W.

    Pooling (rather than upsampling) keeps the comparison at the resolution both
    networks actually have; H and W are matched independently.
    """
    height = min(student.shape[-2], teacher.shape[-2])
    width = min(student.shape[-1], teacher.shape[-1])
    if student.shape[-2:] != (height, width):
        student = F.adaptive_avg_pool2d(student, (height, width))
    if teacher.shape[-2:] != (height, width):
        teacher = F.adaptive_avg_pool2d(teacher, (height, width))
    return student, teacher


def _check_pairs(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                 stages: int | None = None) -> None:
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"student_feats: got {len(student_feats)} feature maps but the teacher gave "
                         f"{len(teacher_feats)}; they are compared pairwise")
    if stages is not None and len(student_feats) != stages:
        raise ValueError(f"student_feats: expected {stages} feature maps (one per stage), got {len(student_feats)}")
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        if s.dim() != 4 or t.dim() != 4:
            raise ValueError(f"student_feats[{i}]: expected [B, C, H, W] maps, got student {tuple(s.shape)} "
                             f"and teacher {tuple(t.shape)}")
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"student_feats[{i}]: batch {s.shape[0]} differs from the teacher's {t.shape[0]}")


def _check_attention_sizes(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], student_feats: Sequence[torch.Tensor],
                           teacher_feats: Sequence[torch.Tensor]) -> None:
    """ValueError for a stage compared at 1x1: its normalized attention map is 1 whatever the inputs, so that AT
    term would be exactly 0 (e.g. a torchvision ResNet's layer4 on 32x32 images)."""
    for i, (s, _) in enumerate(pairs):
        if s.shape[-2] * s.shape[-1] == 1:
            raise ValueError(
                f"student_feats[{i}]: stage {i + 1} is compared at 1x1 (student {tuple(student_feats[i].shape[-2:])}, "
                f"teacher {tuple(teacher_feats[i].shape[-2:])}); a 1x1 attention map is constant and its AT term "
                "always 0: give the teacher's (or student's) features of larger maps at that stage")


class ATLoss(nn.Module):
    """Attention-transfer loss over stage pairs: d_i = mean((a(s_i) - a(t_i))^2) per pair, scaled by beta.

    a(x) = normalize(mean_c |x|^p) over H*W per sample (see ``fastnas.ops.at_loss``);
    the mean runs over the map and the batch (the AT paper's "divided by the number
    of elements in attention map and batch size"). Two scales (``reduction``):

    - ``"half-sum"`` (the default here): ``beta / 2 * sum_i d_i``, Eq. 2 of the AT
      paper (Zagoruyko & Komodakis) with its beta = 1e3;
    - ``"mean"``: ``beta * mean_i d_i``, the DNAD authors' code (RaoXuan-1998/NADD
      Distillator.py: ``AT.forward`` is ``beta * F.mse_loss`` of the maps, and
      ``Distillartor`` adds the 3 stages and divides by 3; its map sums over
      channels and divides by norm + 1e-6, the same map up to that eps). DNAD
      uses this one by default (DNADConfig.at_scale). With 3 stages ``"half-sum"``
      is 1.5 times ``"mean"``.

    Zagoruyko's own cifar.py adds ``beta * sum_i d_i`` (twice ``"half-sum"``).

    forward(student_feats, teacher_feats): lists of [B, C_i, H_i, W_i] (channels
    may differ within a pair); a pair whose H, W differ is pooled to the smaller
    size first; a pair compared at 1x1 is refused (ValueError: its AT term would always be 0).
    Returns a 0-d tensor; the teacher gets no gradient.
    """

    def __init__(self, p: float = 2.0, beta: float = 1000.0, reduction: str = "half-sum"):
        super().__init__()
        if reduction not in AT_REDUCTIONS:
            raise ValueError(f"reduction: expected one of {', '.join(AT_REDUCTIONS)}, got {reduction!r}")
        self.p = float(p)
        self.beta = float(beta)
        self.reduction = reduction

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_pairs(student_feats, teacher_feats)
        # The teacher in the student's dtype: under autocast a scripted teacher may still give float32.
        pairs = [match_spatial(s, t.detach().to(s.dtype)) for s, t in zip(student_feats, teacher_feats)]
        _check_attention_sizes(pairs, student_feats, teacher_feats)
        student, teacher = [s for s, _ in pairs], [t for _, t in pairs]
        scale = self.beta / 2 if self.reduction == "half-sum" else self.beta / len(pairs)
        return scale * ops.at_loss(student, teacher, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, beta={self.beta}, reduction={self.reduction!r}"


class KDLoss(nn.Module):
    """Soft-target KD: T^2 * KL(softmax(t / T) || softmax(s / T)), averaged over the batch.

    forward(student_logits [B, K], teacher_logits [B, K]) -> 0-d tensor. The T^2
    factor keeps the gradient scale independent of T (Hinton et al.).
    """

    def __init__(self, T: float = 4.0):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T: expected a positive temperature, got {T}")
        self.T = float(T)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student_logits: shape {tuple(student_logits.shape)} differs from the teacher's "
                             f"{tuple(teacher_logits.shape)}")
        log_p_student = F.log_softmax(student_logits / self.T, dim=1)
        # Log-space target: exact even where the teacher's probabilities underflow.
        log_p_teacher = F.log_softmax(teacher_logits.detach() / self.T, dim=1)
        kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
        return kl * self.T ** 2

    def extra_repr(self) -> str:
        return f"T={self.T}"


class FeatureMSELoss(nn.Module):
    """The DNAD authors' feature distillation: sum_i w_i * MSE(BN(conv1x1_i(s_i)), BN(t_i)).

    This is the ``Distillartor`` of their model_search.py, the one their
    train_search_cifar.py actually trains with (the paper describes AT).

    Student side: a 1x1 conv (C_s -> C_t, with bias, as in their code) and an
    affine-free ``nn.BatchNorm2d`` (batch statistics in training, running ones in
    eval). Teacher side: an affine-free batch norm with ``track_running_stats=False``,
    i.e. always the current batch's statistics; their code's teacher BN also
    normalizes with batch statistics during the search and its running stats are
    never used, so keeping none is equivalent and holds no state.

    The 1x1 convs are parameters the caller optimizes together with the network.

    forward(student_feats, teacher_feats): lists of [B, C_i, H_i, W_i] with
    C_i = student_channels[i] / teacher_channels[i]; returns a 0-d tensor.
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 weights: Sequence[float] = (0.2, 0.3, 0.5)):
        super().__init__()
        if not len(student_channels) == len(teacher_channels) == len(weights):
            raise ValueError(f"weights: need one student channel count, teacher channel count and weight per "
                             f"stage, got {len(student_channels)}, {len(teacher_channels)} and {len(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cs, ct, kernel_size=1), nn.BatchNorm2d(ct, affine=False))
            for cs, ct in zip(student_channels, teacher_channels))
        self.teacher_norms = nn.ModuleList(
            nn.BatchNorm2d(ct, affine=False, track_running_stats=False) for ct in teacher_channels)

    def forward(self, student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_pairs(student_feats, teacher_feats, stages=len(self.weights))
        total = student_feats[0].new_zeros(())
        for weight, adapter, norm, s, t in zip(self.weights, self.adapters, self.teacher_norms,
                                               student_feats, teacher_feats):
            # Pool before the 1x1 conv: it is linear, so this is cheaper and the same map.
            s, t = match_spatial(s, t.detach())
            total = total + weight * F.mse_loss(adapter(s), norm(t))
        return total


class DistillLoss(nn.Module):
    """One call for every kind: loss(student_logits, student_feats, teacher_logits, teacher_feats) -> 0-d tensor.

    ``inner`` is the wrapped loss (None for kind "none", which returns 0); its
    parameters (FeatureMSELoss's 1x1 convs) are this module's parameters.
    """

    def __init__(self, kind: str, inner: nn.Module | None):
        super().__init__()
        self.kind = kind
        self.inner = inner

    def forward(self, student_logits: torch.Tensor, student_feats: Sequence[torch.Tensor],
                teacher_logits: torch.Tensor, teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.inner is None:
            return student_logits.new_zeros(())
        if self.kind == "soft":
            return self.inner(student_logits, teacher_logits)
        return self.inner(student_feats, teacher_feats)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def make_kd_loss(kind: str, student_channels: Sequence[int] = (), teacher_channels: Sequence[int] = (),
                 **kwargs) -> DistillLoss:
    """Build the distillation loss named by ``kind`` ("at", "feature", "soft" or "none").

    The channel lists are used by "feature" only; ``kwargs`` go to the loss
    (``p``, ``beta``, ``reduction`` for "at"; ``T`` for "soft"; ``weights`` for "feature").
    """
    if kind == "at":
        return DistillLoss(kind, ATLoss(**kwargs))
    if kind == "soft":
        return DistillLoss(kind, KDLoss(**kwargs))
    if kind == "feature":
        return DistillLoss(kind, FeatureMSELoss(student_channels, teacher_channels, **kwargs))
    if kind == "none":
        if kwargs:
            raise TypeError(f"kd 'none' takes no options, got {sorted(kwargs)}")
        return DistillLoss(kind, None)
    raise ValueError(f"kd: expected one of {', '.join(KD_KINDS)}, got {kind!r}")
