"""foreach_reduce: reduction(transform(x)) of every tensor of a list in one fused call."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from . import _reference
from ._extension import has_kernel, reference_grads

_OP = torch.ops.fastnas.foreach_reduce
_BACKWARD = torch.ops.fastnas.foreach_reduce_backward


def foreach_reduce(tensors: Sequence[torch.Tensor], transform: str = "identity",
                   reduction: str = "sum") -> torch.Tensor:
    """One value per tensor: ``reduction(transform(x))`` for x in ``tensors``.

    Zero-cost NAS proxies apply this to every layer's weights, gradients or
    activations; one call replaces a Python loop of two or three torch ops per layer.

    Args:
        tensors: a non-empty list of N floating tensors of one dtype and device,
            each of any shape (0-d and empty tensors allowed).
        transform: elementwise ``identity``, ``abs``, ``square``, ``pow4``, ``exp``,
            ``log_abs`` (log(|x| + 1e-6)), ``sqrt_abs``, ``sigmoid``, ``tanh`` or ``relu``.
        reduction: ``sum``, ``mean``, ``l1`` (sum of |y|) or ``l2`` (Euclidean norm);
            an empty tensor gives 0, except ``mean`` which gives NaN as torch.mean.

    Raises:
        ValueError: for an empty list; RuntimeError (from the kernel) for any other bad input.

    Returns:
        [N] tensor of the input dtype (accumulated in float32 for float16/bfloat16
        and in float64 otherwise, except float32 on CUDA which accumulates in float32).
    """
    tensors = list(tensors)
    if not tensors:
        # The dispatcher picks the kernel from the tensors: an empty list never reaches it.
        raise ValueError("tensors: expected a non-empty list of tensors, got an empty list")
    if not has_kernel(tensors[0].device):
        return _reference.foreach_reduce(tensors, transform, reduction)
    if not torch.compiler.is_compiling() and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        # No graph to record: skip the Python autograd kernel, whose own check of the
        # inputs costs about twice this one (~8 us for 100 tensors).
        with torch._C._AutoDispatchBelowAutograd():
            return _OP(tensors, transform, reduction)
    return _OP(tensors, transform, reduction)


def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ (L2 norm) with the total norm from one foreach_reduce call.

    On the CPU torch computes one norm per parameter and stacks them, ~6 aten calls each, and a
    super-network has ~700 parameters; here the sum of squares of every gradient is one call. The
    same rule: gradients times min(1, max_norm / (total norm + 1e-6)). On the CPU the
    multiplication is skipped when that factor is 1 (reading it is free there; it changes nothing).
    Returns the total norm (a 0-d tensor).
    """
    parameters = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in parameters]
    if not grads:
        return torch.zeros(())
    if len({(g.device, g.dtype) for g in grads}) > 1 or any(g.is_sparse for g in grads):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    with torch.no_grad():
        total = foreach_reduce(grads, "square", "sum").sum().sqrt()
        factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
        if grads[0].device.type != "cpu" or factor.item() < 1.0:
            torch._foreach_mul_(grads, factor)
    return total


@torch.library.register_fake("fastnas::foreach_reduce")
def _(tensors, transform, reduction):
    torch._check(len(tensors) > 0, lambda: "tensors: expected a non-empty list of tensors, got an empty list")
    return tensors[0].new_empty(len(tensors))


@torch.library.register_fake("fastnas::foreach_reduce_backward")
def _(grad, tensors, transform, reduction):
    return [torch.empty_like(t, memory_format=torch.contiguous_format) for t in tensors]


def _setup_context(ctx, inputs, output):
    tensors, transform, reduction = inputs
    ctx.save_for_backward(*tensors)
    ctx.transform, ctx.reduction = transform, reduction


def _backward(ctx, grad):
    tensors = list(ctx.saved_tensors)
    if torch.is_grad_enabled():  # create_graph=True
        grads = reference_grads(lambda *t: _reference.foreach_reduce(t, ctx.transform, ctx.reduction), tensors, grad)
        return list(grads), None, None
    grads = _BACKWARD(grad.contiguous(), tensors, ctx.transform, ctx.reduction)
    return list(grads), None, None


torch.library.register_autograd("fastnas::foreach_reduce", _backward, setup_context=_setup_context)
