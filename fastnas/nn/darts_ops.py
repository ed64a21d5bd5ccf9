"""The DARTS candidate operations (Liu et al., 2019; quark0/darts operations.py).

Two changes from the reference, neither changing a value or a gradient:
- operations that start with a ReLU (separable and dilated convolutions, the
  factorized reduction of skip_connect) are built without it and marked
  ``relu_input = True``. A mixed edge computes relu(x) once and hands it to all
  of them, instead of one ReLU per operator;
- each depthwise -> pointwise convolution pair keeps only its input for
  backward and recomputes the depthwise output there (DepthwisePointwise): a
  depthwise convolution costs 1/C of the pointwise one that follows it, and
  its output is otherwise the largest tensor these operations save;
- a depthwise convolution skips the kernel taps that read only zero padding
  (depthwise_conv2d): on a 2x2 map a dilated 3x3 or 5x5 kernel is one tap;
  on the CPU it runs fastnas.ops.depthwise_conv2d.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from ..ops import depthwise_conv2d as depthwise_conv2d_op, depthwise_conv2d_backward

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


@lru_cache(maxsize=None)
def padding_only_taps(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """How many taps at each end of one kernel dimension read only zero padding on an input `size` long.

    Output h's tap t reads input row h * stride + t * dilation - padding. A tap that no output reads
    inside [0, size) adds exact zeros: dropping the same number from both ends (and as much padding)
    keeps every output value and the output size.
    """
    outputs = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    used = [t for t in range(kernel)
            if any(0 <= h * stride + t * dilation - padding < size for h in range(outputs))]
    return min(used[0], kernel - 1 - used[-1]) if used else 0


def crop_padding_taps(weight: torch.Tensor, input_size, stride, padding, dilation
                      ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(weight [C, 1, k_h - 2 c_h, k_w - 2 c_w], its padding, its dilation, (c_h, c_w)): `weight` without the
    taps that read only zero padding on an input of `input_size` (H, W); the same convolution, fewer taps.
    A kernel dimension cropped to one tap gets dilation 1 (the same convolution; oneDNN is slower dilated)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    crop = tuple(padding_only_taps(int(n), k, s, p, d)
                 for n, k, s, p, d in zip(input_size, weight.shape[-2:], stride, padding, dilation))
    if crop == (0, 0):
        return weight, padding, dilation, crop
    (c_h, c_w), (k_h, k_w) = crop, weight.shape[-2:]
    padding = (padding[0] - c_h * dilation[0], padding[1] - c_w * dilation[1])
    dilation = (1 if k_h - 2 * c_h == 1 else dilation[0], 1 if k_w - 2 * c_w == 1 else dilation[1])
    return weight[..., c_h:k_h - c_h, c_w:k_w - c_w], padding, dilation, crop


def _reformulate(x: torch.Tensor) -> bool:
    """Whether to use fastnas's CPU formulations: eager on the CPU (a compiled graph leaves the choice to Inductor)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


def crop_for_device(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation):
    """crop_padding_taps(weight, ...) where F.conv2d will run; on the CPU (fastnas's kernel, which skips
    the padding-only taps itself) weight, padding and dilation as they are, crop (0, 0)."""
    if _reformulate(x):
        return weight, padding, dilation, (0, 0)
    return crop_padding_taps(weight, x.shape[-2:], stride, padding, dilation)


def _depthwise(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """F.conv2d(x, weight, groups=C): on the CPU fastnas's kernel (one call each way, a fast backward)."""
    if _reformulate(x):
        return depthwise_conv2d_op(x, weight, stride, padding, dilation)
    return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation) -> torch.Tensor:
    """F.conv2d(x [B, C, H, W], weight [C, 1, k, k], groups=C) without the taps that read only padding.

    Same values. Why: DARTS's 5x5 and dilated kernels on the last cells' 2x2 and 4x4 maps (digits' 8x8
    images, ImageNet16's last stage) are mostly padding; the crop makes a dilated kernel on a 2x2 map a
    single tap. On the CPU it is fastnas.ops.depthwise_conv2d, whose loops skip those taps themselves
    (oneDNN's backward was slowest exactly there: bench/bench_depthwise.py); elsewhere F.conv2d of the
    cropped kernel.
    """
    weight, padding, dilation, _ = crop_for_device(x, weight, stride, padding, dilation)
    return _depthwise(x, weight, stride, padding, dilation)


def _by_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, C, H, W] -> [groups, C / groups, B * H * W]: each group's channels as one matrix."""
    B, C, H, W = t.shape
    return t.reshape(B, groups, C // groups, H * W).permute(1, 2, 0, 3).reshape(groups, C // groups, B * H * W)


def _from_groups(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """[groups, C_g, B * H * W] -> [B, groups * C_g, H, W] (the inverse of _by_group), for shape (B, _, H, W)."""
    groups, channels = t.shape[:2]
    B, _, H, W = shape
    return t.reshape(groups, channels, B, H, W).permute(2, 0, 1, 3, 4).reshape(B, groups * channels, H, W)


def _group_matrices(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[C_out, C / groups, 1, 1] -> [groups, C_out / groups, C / groups]: each group's 1x1 weights as a matrix."""
    return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1])


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """F.conv2d(x [B, C, H, W], weight [C_out, C / groups, 1, 1], groups=groups) -> [B, C_out, H, W].

    On the CPU one batched matmul over the groups: oneDNN's grouped 1x1 convolution is slower there for
    the shapes of grouped candidates (bench/bench_depthwise.py); elsewhere F.conv2d.
    """
    if not _reformulate(x):
        return F.conv2d(x, weight, None, 1, 0, 1, groups)
    return _from_groups(torch.bmm(_group_matrices(weight, groups), _by_group(x, groups)), x.shape)


def pointwise_conv2d_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, groups: int,
                              need_input: bool = True, need_weight: bool = True
                              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(d/dx [B, C, H, W], d/dweight [C_out, C / groups, 1, 1]) of pointwise_conv2d, given grad [B, C_out, H, W]."""
    if not _reformulate(x):
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], groups, [need_input, need_weight, False])
        return grad_x, grad_weight
    grad_by_group = _by_group(grad, groups)
    grad_x = grad_weight = None
    if need_input:
        grad_x = _from_groups(torch.bmm(_group_matrices(weight, groups).transpose(1, 2), grad_by_group), x.shape)
    if need_weight:
        grad_weight = torch.bmm(grad_by_group, _by_group(x, groups).transpose(1, 2)).reshape(weight.shape)
    return grad_x, grad_weight


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d(C, C, kernel, groups=C, bias=False) running as depthwise_conv2d (same values, same state_dict)."""

    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int = 1):
        super().__init__(C, C, kernel, stride, padding, dilation=dilation, groups=C, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.stride, self.padding, self.dilation)


class PointwiseConv2d(nn.Conv2d):
    """nn.Conv2d(C_in, C_out, 1, bias=False) running as pointwise_conv2d, so that every path (module call,
    DepthwisePointwise, grouped) computes the same numbers."""

    def __init__(self, C_in: int, C_out: int):
        super().__init__(C_in, C_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv2d(x, self.weight, self.groups)


def _depthwise_then_pointwise(x: torch.Tensor, w_dw: torch.Tensor, w_pw: torch.Tensor, stride, padding,
                              dilation) -> torch.Tensor:
    return pointwise_conv2d(depthwise_conv2d(x, w_dw, stride, padding, dilation), w_pw, x.shape[1] // w_pw.shape[1])


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
        out = _depthwise_then_pointwise(x, w_dw, w_pw, stride, padding, dilation)
        ctx.compute_dtype = out.dtype  # bfloat16 under autocast: backward computes as forward did
        return out

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        x, w_dw, w_pw = (as_dtype(t, ctx.compute_dtype) for t in saved)
        grad = as_dtype(grad, ctx.compute_dtype)
        stride, padding, dilation = ctx.geometry
        w_dw, padding, dilation, (c_h, c_w) = crop_for_device(x, w_dw, stride, padding, dilation)
        channels = x.shape[1]
        depthwise = _depthwise(x, w_dw, stride, padding, dilation)
        need_x, need_dw, need_pw = ctx.needs_input_grad[:3]
        grad_depthwise, grad_pw = pointwise_conv2d_backward(grad, depthwise, w_pw, channels // w_pw.shape[1],
                                                            need_x or need_dw, need_pw)
        grad_x, grad_dw = depthwise_conv2d_backward(grad_depthwise, x, w_dw, stride, padding, dilation, need_x,
                                                    need_dw)
        if grad_dw is not None and (c_h or c_w):
            grad_dw = F.pad(grad_dw, (c_w, c_w, c_h, c_h))  # the cropped taps read only padding: zero gradient
        # each gradient in its input's dtype, as autocast's casts would return it
        grads = (grad_x, grad_dw, grad_pw)
        grad_x, grad_dw, grad_pw = (g if g is None else as_dtype(g, t.dtype) for g, t in zip(grads, saved))
        return grad_x, grad_dw, grad_pw, None, None, None


def depthwise_pointwise_weights(x: torch.Tensor, w_dw: torch.Tensor, w_pw: torch.Tensor, stride, padding, dilation,
                                recompute: bool = True) -> torch.Tensor:
    """pointwise(depthwise(x)) from the weights, as DepthwisePointwise; `recompute`: rebuild the middle in backward."""
    if recompute and torch.is_grad_enabled():
        return DepthwisePointwise.apply(x, w_dw, w_pw, stride, padding, dilation)
    return _depthwise_then_pointwise(x, w_dw, w_pw, stride, padding, dilation)


def depthwise_pointwise(x: torch.Tensor, depthwise: nn.Conv2d, pointwise: nn.Conv2d,
                        recompute: bool = True) -> torch.Tensor:
    """pointwise(depthwise(x)) for two bias-free Conv2d modules; `recompute`: rebuild the middle in backward."""
    if not (recompute and torch.is_grad_enabled()):
        return pointwise(depthwise(x))  # module calls: forward hooks (fastnas.nn.cost's FLOP count) see them
    return depthwise_pointwise_weights(x, depthwise.weight, pointwise.weight, depthwise.stride, depthwise.padding,
                                       depthwise.dilation)


class DilConv(nn.Sequential):
    """(ReLU) -> depthwise dilated conv -> pointwise conv -> BN."""

    relu_input = True
    recompute_depthwise = True  # see DepthwisePointwise; SuperNetwork.set_recompute switches it

    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__(
            DepthwiseConv2d(C, kernel, stride, padding, dilation),
            PointwiseConv2d(C, C),
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
            DepthwiseConv2d(C, kernel, stride, padding),
            PointwiseConv2d(C, C),
            nn.BatchNorm2d(C, affine=affine),
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C, kernel, 1, padding),
            PointwiseConv2d(C, C),
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
