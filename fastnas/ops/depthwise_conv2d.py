"""depthwise_conv2d: F.conv2d(x, weight, groups=C) as one op, with both gradients from one backward op.

On the CPU a search's depthwise convolutions run on small maps (8x8 to 2x2), where aten's route to
oneDNN costs ~8 operator calls a convolution and its backward is slow (bench/bench_depthwise.py):
the C++ kernel is one call each way. On CUDA the op is cuDNN's convolution through aten.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn.modules.utils import _pair

from . import _reference
from ._extension import has_kernel

_OP = torch.ops.fastnas.depthwise_conv2d
_BACKWARD = torch.ops.fastnas.depthwise_conv2d_backward


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int | Sequence[int] = 1,
                     padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1) -> torch.Tensor:
    """F.conv2d(x, weight, None, stride, padding, dilation, groups=C), no bias.

    Args:
        x: [B, C, H, W], floating (float16/bfloat16 accumulate in float32).
        weight: [C, 1, k_h, k_w], x's dtype and device.
        stride, padding, dilation: an int or (height, width), as F.conv2d's.

    Returns:
        [B, C, H_out, W_out] with H_out = (H + 2 padding - dilation (k_h - 1) - 1) // stride + 1 (W likewise).
    """
    stride, padding, dilation = list(_pair(stride)), list(_pair(padding)), list(_pair(dilation))
    if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64:  # as autocast casts F.conv2d's inputs
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    if not has_kernel(x.device):
        return _reference.depthwise_conv2d(x, weight, stride, padding, dilation)
    return _OP(x, weight, stride, padding, dilation)


def depthwise_conv2d_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
                              padding: Sequence[int], dilation: Sequence[int], need_input: bool = True,
                              need_weight: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d/dx [B, C, H, W], d/dweight [C, 1, k_h, k_w]) of depthwise_conv2d for its output's gradient `grad`.

    None for a gradient not asked for. With grad mode on (a backward with create_graph=True) the values
    come from aten.convolution_backward, which autograd differentiates again.
    """
    stride, padding, dilation = list(_pair(stride)), list(_pair(padding)), list(_pair(dilation))
    if torch.is_grad_enabled() or not has_kernel(x.device):
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, stride, padding, dilation, False, [0, 0], x.shape[1],
            [need_input, need_weight, False])
        return grad_x, grad_weight
    return _BACKWARD(grad, x, weight, stride, padding, dilation, [need_input, need_weight])


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@torch.library.register_fake("fastnas::depthwise_conv2d")
def _(x, weight, stride, padding, dilation):
    torch._check(x.dim() == 4 and weight.dim() == 4, lambda: "x, weight: expected 4-d tensors")
    sizes = [_out_size(x.shape[2 + d], weight.shape[2 + d], stride[d], padding[d], dilation[d]) for d in range(2)]
    return x.new_empty([x.shape[0], x.shape[1], *sizes])


@torch.library.register_fake("fastnas::depthwise_conv2d_backward")
def _(grad, x, weight, stride, padding, dilation, output_mask):
    return (torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None,
            torch.empty_like(weight, memory_format=torch.contiguous_format) if output_mask[1] else None)


def _setup_context(ctx, inputs, output):
    x, weight, stride, padding, dilation = inputs
    ctx.save_for_backward(x, weight)
    ctx.geometry = (stride, padding, dilation)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    # grad mode on (create_graph=True): aten.convolution_backward, which autograd differentiates again
    grad_x, grad_weight = depthwise_conv2d_backward(grad, x, weight, *ctx.geometry, *ctx.needs_input_grad[:2])
    return grad_x, grad_weight, None, None, None


torch.library.register_autograd("fastnas::depthwise_conv2d", _backward, setup_context=_setup_context)
