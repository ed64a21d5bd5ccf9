"""DARTS's depthwise and grouped pointwise convolutions on the CPU: oneDNN (aten) against fastnas's formulations.

For each shape the search networks run (the digits default: C = 16, batch 32, maps 8x8 / 4x4 / 2x2, up to
5 operators grouped per node; the CIFAR search: batch 64, maps 32x32 / 16x16 / 8x8), one run times:

- depthwise forward: F.conv2d (groups = C) against fastnas.ops.depthwise_conv2d (C++ loops that skip
  the taps reading only padding), which the search runs on the CPU;
- depthwise backward: aten.convolution_backward (input and weight gradients) against
  fastnas.ops.depthwise_conv2d_backward, which the search's backward runs (DepthwisePointwise's, and
  depthwise_conv2d's own);
- pointwise forward + backward: F.conv2d and aten.convolution_backward with groups = operators, against
  pointwise_conv2d and pointwise_conv2d_backward (batched matmuls).

Each row gives both times (median of --repeats) and aten / fastnas, with the largest difference between
the two results. Per-layer times on a CPU depend on the allocator's state (glibc maps and unmaps large
buffers unless MALLOC_MMAP_THRESHOLD_ is fixed): compare ratios, over more than one run. `pytest bench/bench_depthwise.py` checks the values (CI: --benchmark-disable). Run the
file for the JSON:

    OMP_NUM_THREADS=1 python bench/bench_depthwise.py [--threads 1] [--repeats 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from fastnas.nn.darts_ops import pointwise_conv2d, pointwise_conv2d_backward
from fastnas.ops import depthwise_conv2d, depthwise_conv2d_backward

# (batch, channels, size, kernel, stride, dilation): the grouped depthwise layers of the two searches
DEPTHWISE_SHAPES = [
    (32, 80, 8, 5, 1, 1), (32, 80, 8, 3, 1, 1), (32, 64, 8, 5, 2, 1), (32, 64, 8, 3, 2, 2),
    (32, 160, 4, 3, 1, 1), (32, 128, 4, 5, 1, 2), (32, 128, 4, 3, 2, 1),
    (32, 320, 2, 5, 1, 1), (32, 320, 2, 3, 1, 1), (32, 320, 2, 3, 1, 2), (32, 320, 2, 5, 1, 2),
    (64, 16, 32, 5, 1, 1), (64, 16, 32, 3, 1, 2), (64, 16, 32, 5, 1, 2), (64, 32, 16, 5, 2, 1),
    (64, 64, 8, 3, 1, 2), (64, 64, 8, 3, 1, 1),
]
# (batch, groups, channels per group, size): grouped pointwise layers
POINTWISE_SHAPES = [(32, 5, 16, 8), (32, 4, 32, 4), (32, 5, 64, 2), (32, 1, 64, 2), (64, 5, 16, 32), (64, 4, 32, 16)]


def _median_ms(fn: Callable[[], object], repeats: int, warm_up: int = 10) -> float:
    for _ in range(warm_up):  # the allocator's first rounds of a new shape are slower (page faults)
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _depthwise_layer(batch, channels, size, kernel, stride, dilation, dtype):
    padding = dilation * (kernel - 1) // 2
    x = torch.randn(batch, channels, size, size, dtype=dtype)
    weight = torch.randn(channels, 1, kernel, kernel, dtype=dtype)
    return x, weight, padding


def depthwise_forward_case(batch, channels, size, kernel, stride, dilation, dtype=torch.float32):
    """(F.conv2d as a thunk, fastnas's depthwise_conv2d as a thunk) for one depthwise layer on random data."""
    x, weight, padding = _depthwise_layer(batch, channels, size, kernel, stride, dilation, dtype)
    return (lambda: (F.conv2d(x, weight, None, stride, padding, dilation, channels),),
            lambda: (depthwise_conv2d(x, weight, stride, padding, dilation),))


def depthwise_case(batch, channels, size, kernel, stride, dilation, dtype=torch.float32):
    """(aten's (grad_x, grad_w) as a thunk, fastnas's as a thunk) for one depthwise layer on random data."""
    x, weight, padding = _depthwise_layer(batch, channels, size, kernel, stride, dilation, dtype)
    grad = torch.randn_like(F.conv2d(x, weight, None, stride, padding, dilation, channels))

    def aten():
        return torch.ops.aten.convolution_backward(grad, x, weight, None, [stride] * 2, [padding] * 2,
                                                   [dilation] * 2, False, [0, 0], channels, [True, True, False])[:2]

    @torch.no_grad()  # as in a backward pass
    def fastnas():
        return depthwise_conv2d_backward(grad, x, weight, stride, padding, dilation)

    return aten, fastnas


def pointwise_case(batch, groups, per_group, size, dtype=torch.float32):
    """(aten's forward + (grad_x, grad_w), fastnas's) for one grouped 1x1 layer on random data."""
    channels = groups * per_group
    x = torch.randn(batch, channels, size, size, dtype=dtype)
    weight = torch.randn(channels, per_group, 1, 1, dtype=dtype)
    grad = torch.randn(batch, channels, size, size, dtype=dtype)

    def aten():
        out = F.conv2d(x, weight, None, 1, 0, 1, groups)
        return (out, *torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [0, 0], [1, 1], False,
                                                          [0, 0], groups, [True, True, False])[:2])

    def fastnas():
        return (pointwise_conv2d(x, weight, groups), *pointwise_conv2d_backward(grad, x, weight, groups))

    return aten, fastnas


def _row(aten, fastnas, repeats: int) -> dict:
    difference = max((a - b).abs().max().item() for a, b in zip(aten(), fastnas()))
    aten_ms, fastnas_ms = _median_ms(aten, repeats), _median_ms(fastnas, repeats)
    return {"aten_ms": round(aten_ms, 4), "fastnas_ms": round(fastnas_ms, 4),
            "aten_over_fastnas": round(aten_ms / fastnas_ms, 2), "max_abs_difference": difference}


def measure(repeats: int) -> dict:
    names = ("batch", "channels", "size", "kernel", "stride", "dilation")
    forward = [{**dict(zip(names, shape)), **_row(*depthwise_forward_case(*shape), repeats)}
               for shape in DEPTHWISE_SHAPES]
    depthwise = [{**dict(zip(names, shape)), **_row(*depthwise_case(*shape), repeats)} for shape in DEPTHWISE_SHAPES]
    names = ("batch", "groups", "channels_per_group", "size")
    pointwise = [{**dict(zip(names, shape)), **_row(*pointwise_case(*shape), repeats)} for shape in POINTWISE_SHAPES]
    return {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "repeats": repeats, "unit": "ms, median",
            "depthwise_forward": forward, "depthwise_backward": depthwise, "pointwise_forward_backward": pointwise}


@pytest.mark.parametrize("case, shape", [(case, shape) for case in (depthwise_forward_case, depthwise_case)
                                         for shape in DEPTHWISE_SHAPES[:11:2]]
                         + [(pointwise_case, shape) for shape in POINTWISE_SHAPES[:4]])
def test_formulation_equals_aten(benchmark, case, shape):
    aten, fastnas = case(*shape, dtype=torch.float64)
    for a, b in zip(aten(), fastnas()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    benchmark.group = case.__name__
    benchmark(fastnas)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = json.dumps(measure(args.repeats), indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
