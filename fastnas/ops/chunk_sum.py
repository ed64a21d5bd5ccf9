"""chunk_sum: a node's value from grouped operator outputs, in one fused pass (fastnas.nn.grouped makes them)."""

from __future__ import annotations

from typing import Sequence

import torch

from . import _reference
from ._extension import has_kernel, reference_grads

_OP = torch.ops.fastnas.chunk_sum
_BACKWARD = torch.ops.fastnas.chunk_sum_backward


def chunk_sum(outs: Sequence[torch.Tensor], weights: torch.Tensor, chunks: Sequence[int]) -> torch.Tensor:
    """Weighted sum of the channel chunks of grouped operator outputs.

    Args:
        outs: T tensors, outs[t] of shape [B, chunks[t] * C, *rest]: chunk j is channels j * C .. (j + 1) * C
            (the same operation run on chunks[t] edges as one call). One dtype and device, floating.
        weights: [sum(chunks)], the weight of each chunk, term after term (any floating dtype).
        chunks: the number of chunks of each tensor of outs (>= 1).

    Returns:
        [B, C, *rest]: sum over t and j of weights[s] * outs[t][:, j * C: (j + 1) * C], s counting the
        chunks in order; in the dtype of outs, accumulated in float32 for float16/bfloat16.
    """
    outs, chunks = list(outs), [int(n) for n in chunks]
    if not has_kernel(weights.device):
        return _reference.chunk_sum(outs, weights, chunks)
    return _OP(outs, weights, chunks)


def _result_shape(outs, chunks):
    size = list(outs[0].shape)
    size[1] = size[1] // chunks[0]
    return size


@torch.library.register_fake("fastnas::chunk_sum")
def _(outs, weights, chunks):
    torch._check(len(outs) > 0, lambda: "outs: expected at least one tensor, got an empty list")
    return outs[0].new_empty(_result_shape(outs, chunks))


@torch.library.register_fake("fastnas::chunk_sum_backward")
def _(grad, outs, weights, chunks):
    return [torch.empty_like(out, memory_format=torch.contiguous_format) for out in outs], weights.new_empty(
        weights.shape)


def _setup_context(ctx, inputs, output):
    outs, weights, chunks = inputs
    ctx.save_for_backward(weights, *outs)
    ctx.chunks = chunks


def _backward(ctx, grad):
    weights, *outs = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True
        *grad_outs, grad_weights = reference_grads(
            lambda *t: _reference.chunk_sum(t[:-1], t[-1], ctx.chunks), outs + [weights], grad)
        return list(grad_outs), grad_weights, None
    grad_outs, grad_weights = _BACKWARD(grad.contiguous(), outs, weights, ctx.chunks)
    return list(grad_outs), grad_weights, None


torch.library.register_autograd("fastnas::chunk_sum", _backward, setup_context=_setup_context)
