"""mixed_node: the value of a DARTS node from its live operator outputs, in one fused pass."""

from __future__ import annotations

from typing import Sequence

import torch

from . import _reference
from ._extension import has_kernel, reference_grads

_OP = torch.ops.fastnas.mixed_node
_BACKWARD = torch.ops.fastnas.mixed_node_backward


def mixed_node(outs: Sequence[torch.Tensor], alpha: torch.Tensor, mask: torch.Tensor,
               mode: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """Weighted sum of the live operator outputs of a node.

    Args:
        outs: one tensor per live (edge, op) pair, in row-major order of ``mask``;
            all the same shape (any shape, typically [B, C, H, W]) and dtype.
        alpha: architecture parameters [E, K] (E incoming edges, K candidate ops).
        mask: bool [E, K], False = pruned; pruned ops are never passed nor read.
            Keep it on the CPU: a CUDA mask costs one device synchronization.
        mode: how weights come from alpha: ``softmax`` (per edge), ``sigmoid``,
            ``relu_norm`` (per node, DNAD) or ``identity`` (alpha are the weights).
        temperature: divides alpha in ``softmax`` and ``sigmoid`` modes.

    Returns:
        sum over live (e, k) of w[e, k] * outs[i], shaped like ``outs[0]``.
    """
    outs = list(outs)
    if not has_kernel(alpha.device):
        return _reference.mixed_node(outs, alpha, mask, mode, temperature)
    return _OP(outs, alpha, mask, mode, float(temperature))


@torch.library.register_fake("fastnas::mixed_node")
def _(outs, alpha, mask, mode, temperature):
    torch._check(len(outs) > 0, lambda: "outs: a node needs at least one live operator")
    return torch.empty_like(outs[0], memory_format=torch.contiguous_format)


@torch.library.register_fake("fastnas::mixed_node_backward")
def _(grad, outs, alpha, mask, mode, temperature):
    grads = [torch.empty_like(out, memory_format=torch.contiguous_format) for out in outs]
    return grads, alpha.new_empty(alpha.shape)  # contiguous, as both backends return it


def _setup_context(ctx, inputs, output):
    outs, alpha, mask, mode, temperature = inputs
    ctx.save_for_backward(alpha, mask, *outs)
    ctx.mode, ctx.temperature = mode, temperature


def _backward(ctx, grad):
    alpha, mask, *outs = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        *grad_outs, grad_alpha = reference_grads(
            lambda *t: _reference.mixed_node(t[:-1], t[-1], mask, ctx.mode, ctx.temperature), outs + [alpha], grad)
        return grad_outs, grad_alpha, None, None, None
    grad_outs, grad_alpha = _BACKWARD(grad.contiguous(), outs, alpha, mask, ctx.mode, ctx.temperature)
    return list(grad_outs), grad_alpha, None, None, None


torch.library.register_autograd("fastnas::mixed_node", _backward, setup_context=_setup_context)
