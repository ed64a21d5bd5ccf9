"""pair_distance and gram_distance: student-teacher feature distances for distillation-aware NAS proxies."""

from __future__ import annotations

import torch

from . import _reference
from ._extension import has_kernel, reference_grads

_PAIR = torch.ops.fastnas.pair_distance
_PAIR_BACKWARD = torch.ops.fastnas.pair_distance_backward
_GRAM = torch.ops.fastnas.gram_distance
_GRAM_BACKWARD = torch.ops.fastnas.gram_distance_backward


def pair_distance(student: torch.Tensor, teacher: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Distance between each student feature row and its teacher row.

    Args:
        student: features [B, D], D >= 1, float32/float64 (also float16/bfloat16 on CUDA).
        teacher: features [B, D], same dtype and device as ``student``.
        metric: ``l1`` (sum |s - t|), ``l2`` (||s - t||_2; its gradient at s == t is 0),
            ``kl`` (KL(softmax(t) || softmax(s)), teacher as the target distribution),
            ``cosine`` (1 - s.t / (max(||s||, 1e-8) max(||t||, 1e-8))) or
            ``pearson`` (the cosine distance of the row-centred vectors).

    Returns:
        [B] distances; differentiable w.r.t. both inputs.
    """
    if not has_kernel(student.device):
        return _reference.pair_distance(student, teacher, metric)
    return _PAIR(student, teacher, metric)


def gram_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """DisWOT relation distance of the row-normalized batch Gram matrices.

    Args:
        student: features [B, Ds] (flatten feature maps first).
        teacher: features [B, Dt]; same B, dtype and device as ``student``, Dt may differ.

    Returns:
        0-d tensor ||G_t - G_s||_F^2 / B^2 with G = F.normalize(f f^T, dim=1, eps=1e-12);
        NaN for B = 0. Differentiable w.r.t. both inputs.
    """
    if not has_kernel(student.device):
        return _reference.gram_distance(student, teacher)
    return _GRAM(student, teacher)


@torch.library.register_fake("fastnas::pair_distance")
def _(student, teacher, metric):
    torch._check(student.dim() == 2 and teacher.shape == student.shape,
                 lambda: "student, teacher: expected two [batch, features] tensors of the same shape")
    return student.new_empty(student.shape[0])


@torch.library.register_fake("fastnas::pair_distance_backward")
def _(grad, student, teacher, metric):
    return (torch.empty_like(student, memory_format=torch.contiguous_format),
            torch.empty_like(teacher, memory_format=torch.contiguous_format))


@torch.library.register_fake("fastnas::gram_distance")
def _(student, teacher):
    torch._check(student.dim() == 2 and teacher.dim() == 2 and student.shape[0] == teacher.shape[0],
                 lambda: "student, teacher: expected two 2-d tensors with the same batch size")
    return student.new_empty(())


@torch.library.register_fake("fastnas::gram_distance_backward")
def _(grad, student, teacher):
    return (torch.empty_like(student, memory_format=torch.contiguous_format),
            torch.empty_like(teacher, memory_format=torch.contiguous_format))


def _pair_setup_context(ctx, inputs, output):
    student, teacher, metric = inputs
    ctx.save_for_backward(student, teacher)
    ctx.metric = metric


def _pair_backward(ctx, grad):
    student, teacher = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        grad_student, grad_teacher = reference_grads(
            lambda s, t: _reference.pair_distance(s, t, ctx.metric), [student, teacher], grad)
        return grad_student, grad_teacher, None
    grad_student, grad_teacher = _PAIR_BACKWARD(grad.contiguous(), student, teacher, ctx.metric)
    return grad_student, grad_teacher, None


def _gram_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gram_backward(ctx, grad):
    student, teacher = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        return reference_grads(_reference.gram_distance, [student, teacher], grad)
    return _GRAM_BACKWARD(grad, student, teacher)


torch.library.register_autograd("fastnas::pair_distance", _pair_backward, setup_context=_pair_setup_context)
torch.library.register_autograd("fastnas::gram_distance", _gram_backward, setup_context=_gram_setup_context)
