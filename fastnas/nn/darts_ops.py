"""The DARTS candidate operations (Liu et al., 2019; quark0/darts operations.py).

Two changes from the reference, neither changing a value or a gradient:
- operations that start with a ReLU (separable and dilated convolutions, the
  factorized reduction of skip_connect) are built without it and marked
  ``relu_input = True``. A mixed edge computes relu(x) once and hands it to all
  of them, instead of one ReLU per operator;
- each depthwise -> pointwise convolution pair keeps only its input for
  backward and recomputes the depthwise output there (DepthwisePointwise): a
  depthwise convolution costs 1/C of the pointwise one that follows it, and
  its output is otherwise the largest tensor these operations save.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

DARTS_PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


class Zero(nn.Module):
    """The 'none' operation: zeros of the output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """tensor in dtype; itself, without an aten call, when it has it (the search step is dispatch-bound)."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


class DepthwisePointwise(torch.autograd.Function):
    """pointwise(depthwise(x)) saving x and the weights only; backward recomputes depthwise(x).

    forward(x [B, C, H, W], w_dw [C, 1, k, k], w_pw [C_out, C / g, 1, 1], stride, padding, dilation)
    -> [B, C_out, H', W']. The pointwise convolution has g = C / w_pw.shape[1] groups: 1 for one
    operator, n for n operators run as one (fastnas.nn.grouped). Backward is built from
    differentiable ops, so double backward works.
    """

    @staticmethod
    def forward(ctx, x, w_dw, w_pw, stride, padding, dilation):
        ctx.save_for_backward(x, w_dw, w_pw)
        ctx.geometry = (stride, padding, dilation)
        out = F.conv2d(F.conv2d(x, w_dw, None, stride, padding, dilation, x.shape[1]), w_pw, None, 1, 0, 1,
                       x.shape[1] // w_pw.shape[1])
        ctx.compute_dtype = out.dtype  # bfloat16 under autocast: backward computes as forward did
        return out

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        x, w_dw, w_pw = (as_dtype(t, ctx.compute_dtype) for t in saved)
        grad = as_dtype(grad, ctx.compute_dtype)
        stride, padding, dilation = ctx.geometry
        channels = x.shape[1]
        depthwise = F.conv2d(x, w_dw, None, stride, padding, dilation, channels)
        need_x, need_dw, need_pw = ctx.needs_input_grad[:3]
        # aten.convolution_backward(grad, input, weight, bias_sizes, stride, padding, dilation,
        #                           transposed, output_padding, groups, output_mask)
        grad_depthwise, grad_pw, _ = torch.ops.aten.convolution_backward(
            grad, depthwise, w_pw, None, [1, 1], [0, 0], [1, 1], False, [0, 0], channels // w_pw.shape[1],
            [need_x or need_dw, need_pw, False])
        grad_x = grad_dw = None
        if need_x or need_dw:
            grad_x, grad_dw, _ = torch.ops.aten.convolution_backward(
                grad_depthwise, x, w_dw, None, list(stride), list(padding), list(dilation), False, [0, 0],
                channels, [need_x, need_dw, False])
        # each gradient in its input's dtype, as autocast's casts would return it
        grads = (grad_x, grad_dw, grad_pw)
        grad_x, grad_dw, grad_pw = (g if g is None else as_dtype(g, t.dtype) for g, t in zip(grads, saved))
        return grad_x, grad_dw, grad_pw, None, None, None


def depthwise_pointwise_weights(x: torch.Tensor, w_dw: torch.Tensor, w_pw: torch.Tensor, stride, padding, dilation,
                                recompute: bool = True) -> torch.Tensor:
    """pointwise(depthwise(x)) from the weights, as DepthwisePointwise; `recompute`: rebuild the middle in backward."""
    if recompute and torch.is_grad_enabled():
        return DepthwisePointwise.apply(x, w_dw, w_pw, stride, padding, dilation)
    depthwise = F.conv2d(x, w_dw, None, stride, padding, dilation, x.shape[1])
    return F.conv2d(depthwise, w_pw, None, 1, 0, 1, x.shape[1] // w_pw.shape[1])


def depthwise_pointwise(x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d,
                        recompute: bool = True) -> torch.Tensor:
    """pointwise(depthwise(x)) for two bias-free Conv2d modules; `recompute`: rebuild the middle in backward."""
    if not (recompute and torch.is_grad_enabled()):
        return pointwise(depthwise(x))
    return depthwise_pointwise_weights(x, depthwise.weight, pointwise.weight, depthwise.stride, depthwise.padding,
                                       depthwise.dilation)


class DilConv(nn.Sequential):
    """(ReLU) -> depthwise dilated conv -> pointwise conv -> BN."""

    relu_input = True
    recompute_depthwise = True  # see DepthwisePointwise; SuperNetwork.set_recompute switches it

    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__(
            nn.Conv2d(C, C, kernel, stride, padding, dilation=dilation, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](depthwise_pointwise(x, self[0], self[1], self.recompute_depthwise))


class SepConv(nn.Sequential):
    """(ReLU) -> dw conv (stride) -> pw conv -> BN -> ReLU -> dw conv -> pw conv -> BN."""

    relu_input = True
    recompute_depthwise = True  # see DepthwisePointwise; SuperNetwork.set_recompute switches it

    def __init__(self, C: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(
            nn.Conv2d(C, C, kernel, stride, padding, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False),
            nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, kernel, 1, padding, groups=C, bias=False),
            nn.Conv2d(C, C, 1, bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[3](self[2](depthwise_pointwise(x, self[0], self[1], self.recompute_depthwise)))
        return self[6](depthwise_pointwise(x, self[4], self[5], self.recompute_depthwise))


class FactorizedReduce(nn.Module):
    """(ReLU) -> two 1x1 stride-2 convs on offset grids, concatenated -> BN: halves H and W."""

    relu_input = True

    def __init__(self, C_in: int, C_out: int, affine: bool):
        super().__init__()
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # odd sizes keep matching shapes
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN (the cells' input preprocessing)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(C_out, affine=affine))


def _pool(pool: nn.Module, C: int, with_bn: bool) -> nn.Module:
    # DARTS puts a BN without affine after pooling inside the super-network only.
    return nn.Sequential(pool, nn.BatchNorm2d(C, affine=False)) if with_bn else pool


OPS: dict[str, Callable[[int, int, bool, bool], nn.Module]] = {
    "none": lambda C, stride, affine, search: Zero(stride),
    "max_pool_3x3": lambda C, stride, affine, search: _pool(nn.MaxPool2d(3, stride, 1), C, search),
    "avg_pool_3x3": lambda C, stride, affine, search: _pool(
        nn.AvgPool2d(3, stride, 1, count_include_pad=False), C, search),
    "skip_connect": lambda C, stride, affine, search: (nn.Identity() if stride == 1
                                                       else FactorizedReduce(C, C, affine)),
    "sep_conv_3x3": lambda C, stride, affine, search: SepConv(C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine, search: SepConv(C, 5, stride, 2, affine),
    "dil_conv_3x3": lambda C, stride, affine, search: DilConv(C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine, search: DilConv(C, 5, stride, 4, 2, affine),
}


def check_primitives(primitives: list[str] | tuple[str, ...], arg: str = "ops") -> tuple[str, ...]:
    """The primitives as a tuple, or a ValueError naming the unknown ones and the valid names."""
    unknown = [p for p in primitives if p not in OPS]
    if unknown or not primitives:
        raise ValueError(f"{arg}: unknown operation(s) {unknown or '(empty list)'}; "
                         f"valid names: {', '.join(OPS)}")
    if len(set(primitives)) != len(primitives):
        raise ValueError(f"{arg}: each operation may appear once, got {list(primitives)}")
    return tuple(primitives)


def make_op(name: str, C: int, stride: int, affine: bool, search: bool) -> nn.Module:
    """Operation `name` on C channels; `search` adds the super-network's BN after pooling."""
    return OPS[name](C, stride, affine, search)


def takes_relu_input(op: nn.Module) -> bool:
    """True when `op` expects relu(x) (its own leading ReLU was factored out)."""
    return getattr(op, "relu_input", False)
