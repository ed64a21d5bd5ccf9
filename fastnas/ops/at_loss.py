"""at_loss: the attention-transfer loss of (student, teacher) feature-map pairs, fused."""

from __future__ import annotations

from typing import Sequence, Union

import torch

from . import _reference
from ._extension import has_kernel, reference_grads

_OP = torch.ops.fastnas.at_loss
_BACKWARD = torch.ops.fastnas.at_loss_backward

Features = Union[torch.Tensor, Sequence[torch.Tensor]]


def at_loss(student: Features, teacher: Features, p: float = 2.0) -> torch.Tensor:
    """Attention-transfer loss (Zagoruyko & Komodakis) summed over feature-map pairs.

    For a feature map x [B, C, H, W] the attention map is
    a(x) = normalize(mean_c |x|^p, flattened to [B, H*W]) (L2 per row, eps 1e-12),
    and the loss is sum over pairs of mean((a(s) - a(t))^2).

    Args:
        student: one tensor [B, Cs, H, W] or a list of them (one per pair).
        teacher: as many tensors [B, Ct, H, W]; the channel count may differ from
            the student's, B, H and W must match it. The teacher gets no gradient.
        p: exponent of |x|, finite and >= 1 (the gradient of |x|^p at 0 is
            undefined for p < 1).

    Returns:
        a 0-d tensor of the inputs' dtype; NaN when a pair has an empty batch
        (the mean of nothing, as torch gives).
    """
    student = [student] if isinstance(student, torch.Tensor) else list(student)
    teacher = [teacher] if isinstance(teacher, torch.Tensor) else list(teacher)
    if not student:
        # With no tensor at all the dispatcher cannot pick a kernel, so say it here.
        raise RuntimeError("student: expected at least one (student, teacher) pair, got an empty list")
    if not has_kernel(student[0].device):
        return _reference.at_loss(student, teacher, p)
    return _OP(student, teacher, float(p))


@torch.library.register_fake("fastnas::at_loss")
def _(student, teacher, p):
    torch._check(len(student) > 0, lambda: "student: expected at least one (student, teacher) pair")
    return student[0].new_empty(())


@torch.library.register_fake("fastnas::at_loss_backward")
def _(grad, student, teacher, p):
    return [torch.empty_like(s, memory_format=torch.contiguous_format) for s in student]


def _setup_context(ctx, inputs, output):
    # Only the inputs are kept (no maps): backward rebuilds the small maps in its own pass.
    student, teacher, p = inputs
    ctx.save_for_backward(*student, *teacher)
    ctx.pairs, ctx.p = len(student), p


def _backward(ctx, grad):
    saved = ctx.saved_tensors
    student, teacher = list(saved[: ctx.pairs]), list(saved[ctx.pairs:])
    if torch.is_grad_enabled():  # create_graph=True
        grad_student = reference_grads(lambda *s: _reference.at_loss(s, teacher, ctx.p), student, grad)
        return list(grad_student), [None] * len(teacher), None
    grad_student = _BACKWARD(grad.contiguous(), student, teacher, ctx.p)
    # The teacher is a fixed target: one None per teacher tensor (autograd wants the list's structure).
    return list(grad_student), [None] * len(teacher), None


torch.library.register_autograd("fastnas::at_loss", _backward, setup_context=_setup_context)
