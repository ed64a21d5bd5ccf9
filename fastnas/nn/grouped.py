"""Horizontal fusion: the same candidate operation on several edges of a node, run as one call.

A DARTS node sums K candidate operations on each of its E inputs: E * K small operator calls,
each a few dozen aten calls on a tiny tensor (dispatch-bound on a CPU, launch-bound on a GPU).
The same operation on different edges differs only in its parameters, so MixedNode runs the n
live copies of one operation (and one stride) as one call over the channel-concatenated edge
inputs [B, n * C, H, W], edge i in channels i * C .. (i + 1) * C:

- a depthwise convolution: one convolution with groups = n * C over the n concatenated weights;
- a pointwise (1x1) convolution: groups = n, a block-diagonal convolution, each edge its own C x C;
- an affine-free BatchNorm: per channel, so one call over n * C channels gives each edge its own
  batch statistics. The running statistics of the n modules are views of one packed tensor
  (PackedStats), which that call updates in place;
- pooling: per channel already;
- FactorizedReduce (skip_connect at stride 2): its two 1x1 stride-2 convolutions with groups = n.

Every value is the one the n separate calls compute (tests/test_horizontal_fusion.py checks
forward, gradients and BatchNorm buffers in float64). Parameters stay in their per-(edge, op)
modules, so state dicts, pruning and optimizers see no change; they are concatenated at each
forward and their gradients come back through the concatenation.

fastnas.ops.chunk_sum then weighs the chunks of every group output: the node value.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .darts_ops import (DepthwiseConv2d, DilConv, FactorizedReduce, PointwiseConv2d, SepConv,
                        depthwise_pointwise_weights)


class PackedStats:
    """The running statistics of a node's grouped BatchNorms as views of three packed tensors.

    `sets`: the BatchNorm modules of each grouped call (set i: the n modules one call normalizes over
    n * C channels). views[i] is (running_mean, running_var) [n * C] of set i, slices of the packed
    tensors whose own slices are the modules' buffers, so that call updates each module's statistics
    in place; `count` packs every module's num_batches_tracked, so one add_(1) counts a forward for all.
    refresh() packs the buffers again from their current values when any module's buffer is no longer
    the view handed out (the network was moved with .to(), loaded with assign=True, or another plan
    packed it).
    """

    def __init__(self, sets: Sequence[Sequence[nn.BatchNorm2d]]):
        self.sets = [list(bns) for bns in sets]
        self.views: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.count: torch.Tensor | None = None
        self._handed_out: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def refresh(self) -> None:
        modules = [bn for bns in self.sets for bn in bns]
        current = [(bn.running_mean, bn.running_var, bn.num_batches_tracked) for bn in modules]
        if len(current) != len(self._handed_out) or any(
                a is not b for now, views in zip(current, self._handed_out) for a, b in zip(now, views)):
            self._pack(modules, current)

    def _pack(self, modules: list[nn.BatchNorm2d], current) -> None:
        with torch.no_grad():
            mean, var, self.count = (torch.cat([buffers[i].reshape(-1) for buffers in current]) for i in range(3))
        self.views, self._handed_out, start, index = [], [], 0, 0
        for bns in self.sets:
            width = bns[0].num_features
            self.views.append((mean[start: start + len(bns) * width], var[start: start + len(bns) * width]))
            for bn in bns:
                bn.running_mean, bn.running_var = mean[start: start + width], var[start: start + width]
                bn.num_batches_tracked = self.count[index]
                self._handed_out.append((bn.running_mean, bn.running_var, bn.num_batches_tracked))
                start, index = start + width, index + 1


def _groupable_bn(bn: nn.Module) -> tuple | None:
    """What two BatchNorms must share to run as one (None: this one runs on its own)."""
    if (type(bn) is not nn.BatchNorm2d or bn.affine or not bn.track_running_stats or bn.momentum is None
            or bn.running_mean is None):
        return None
    return (bn.num_features, bn.eps, bn.momentum)


def _conv(conv: nn.Module) -> tuple | None:
    if (type(conv) not in (nn.Conv2d, DepthwiseConv2d, PointwiseConv2d) or conv.bias is not None
            or conv.padding_mode != "zeros"):
        return None
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups)


def _pool(pool: nn.Module) -> tuple | None:
    if type(pool) is nn.MaxPool2d and not pool.return_indices:
        return (nn.MaxPool2d, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    if type(pool) is nn.AvgPool2d:
        return (nn.AvgPool2d, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad,
                pool.divisor_override)
    return None


def _all(*parts) -> tuple | None:
    return None if any(part is None for part in parts) else parts


# ---- The grouped computations: (members, the (running_mean, running_var) of each of their BatchNorm sets,
# x [B, n * C_in, H, W]) -> [B, n * C_out, H', W']. MixedNode counts the batches (PackedStats.count).

def _batch_norm(bn: nn.BatchNorm2d, stats: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """BatchNorm2d.forward of each module of a set on its channels of x, in one call (affine-free, momentum set).

    F.batch_norm's own kernel, called directly: two aten calls fewer (F.batch_norm would pick cuDNN's
    on a GPU; both compute the same).
    """
    mean, var = stats
    return torch.native_batch_norm(x, None, None, mean, var, bn.training, bn.momentum, bn.eps)[0]


class _Concat(torch.autograd.Function):
    """torch.cat whose backward hands out the n gradient chunks as one as_strided view each.

    torch.cat's backward narrows each chunk (narrow -> slice -> as_strided: three aten calls), and a group
    concatenates its inputs and every weight.
    """

    @staticmethod
    def forward(ctx, dim, *tensors):
        ctx.dim, ctx.sizes = dim, [t.shape for t in tensors]
        return torch.cat(tensors, dim)

    @staticmethod
    def backward(ctx, grad):
        stride, offset, chunks = grad.stride(), grad.storage_offset(), []
        for size in ctx.sizes:
            chunks.append(grad.as_strided(size, stride, offset))
            offset += size[ctx.dim] * stride[ctx.dim]
        return None, *chunks


def concat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """torch.cat(tensors, dim) with a cheaper backward (see _Concat); one tensor is returned as it is."""
    return tensors[0] if len(tensors) == 1 else _Concat.apply(dim, *tensors)


def _cat_weights(layers: Sequence[nn.Conv2d]) -> torch.Tensor:
    return concat([layer.weight for layer in layers])


def _depthwise_pointwise(modules: Sequence[nn.Module], depthwise: int, x: torch.Tensor) -> torch.Tensor:
    """Layers depthwise, depthwise + 1 of each SepConv / DilConv: groups n * C then n (block-diagonal)."""
    first = modules[0][depthwise]
    return depthwise_pointwise_weights(x, _cat_weights([m[depthwise] for m in modules]),
                                       _cat_weights([m[depthwise + 1] for m in modules]), first.stride, first.padding,
                                       first.dilation, modules[0].recompute_depthwise)


Stats = Sequence[tuple[torch.Tensor, torch.Tensor]]


def _sep_conv(modules: Sequence[SepConv], stats: Stats, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(_batch_norm(modules[0][2], stats[0], _depthwise_pointwise(modules, 0, x)))
    return _batch_norm(modules[0][6], stats[1], _depthwise_pointwise(modules, 4, x))


def _dil_conv(modules: Sequence[DilConv], stats: Stats, x: torch.Tensor) -> torch.Tensor:
    return _batch_norm(modules[0][2], stats[0], _depthwise_pointwise(modules, 0, x))


def _factorized_reduce(modules: Sequence[FactorizedReduce], stats: Stats, x: torch.Tensor) -> torch.Tensor:
    n, first = len(modules), modules[0]
    shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
    halves = [F.conv2d(inp, _cat_weights([getattr(m, name) for m in modules]), None, 2, 0, 1, n)
              for inp, name in ((x, "conv_1"), (shifted, "conv_2"))]
    batch, _, height, width = halves[0].shape
    # each edge's channels are its conv_1 outputs, then its conv_2 outputs (FactorizedReduce's cat)
    y = torch.cat([h.view(batch, n, -1, height, width) for h in halves], dim=2).view(batch, -1, height, width)
    return _batch_norm(modules[0].bn, stats[0], y)


def _pool_bn(modules: Sequence[nn.Sequential], stats: Stats, x: torch.Tensor) -> torch.Tensor:
    return _batch_norm(modules[0][1], stats[0], modules[0][0](x))


def _bare_pool(modules: Sequence[nn.Module], stats: Stats, x: torch.Tensor) -> torch.Tensor:
    return modules[0](x)


GroupRun = Callable[[Sequence[nn.Module], Stats, torch.Tensor], torch.Tensor]
BatchNormOf = Callable[[nn.Module], nn.BatchNorm2d]


def group_signature(module: nn.Module) -> tuple[GroupRun, tuple[BatchNormOf, ...], tuple] | None:
    """(how to run a group of such modules, where each of their BatchNorms is, what members must share), or None.

    Two candidates run as one group when their signatures are equal (and so are their input shapes);
    None: `module` runs on its own (an operation fastnas has no grouped form for).
    """
    if type(module) is SepConv:
        parts = _all(*(_conv(module[i]) for i in (0, 1, 4, 5)), _groupable_bn(module[2]), _groupable_bn(module[6]))
        return None if parts is None else (_sep_conv, (itemgetter(2), itemgetter(6)), parts)
    if type(module) is DilConv:
        parts = _all(_conv(module[0]), _conv(module[1]), _groupable_bn(module[2]))
        return None if parts is None else (_dil_conv, (itemgetter(2),), parts)
    if type(module) is FactorizedReduce:
        parts = _all(_conv(module.conv_1), _conv(module.conv_2), _groupable_bn(module.bn))
        return None if parts is None else (_factorized_reduce, (attrgetter("bn"),), parts)
    if type(module) is nn.Sequential and len(module) == 2:
        parts = _all(_pool(module[0]), _groupable_bn(module[1]))
        return None if parts is None else (_pool_bn, (itemgetter(1),), parts)
    parts = _pool(module)
    return None if parts is None else (_bare_pool, (), parts)
