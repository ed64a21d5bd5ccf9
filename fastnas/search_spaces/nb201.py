"""The NAS-Bench-201 cell space: architecture strings and the network that trains them.

An architecture is one cell (4 nodes, a DAG where node j sums one operation on
each earlier node), written as NAS-Bench-201 writes it:

    |nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|

node 1 from node 0; node 2 from nodes 0, 1; node 3 from nodes 0, 1, 2. That is
5 operations on 6 edges, 5^6 = 15625 architectures.

The network is AutoDL-Projects' ``TinyNetwork`` with ``InferCell`` (the code that
trained NAS-Bench-201), so parameter counts equal the benchmark's for the same
cell at C=16, N=5 and 10 classes: a 3x3 conv + BN stem, three stages of N cells
at C, 2C, 4C channels separated by a ``ResNetBasicblock`` with stride 2, then
BN + ReLU, global average pooling and a linear classifier. Every operation on
an edge keeps the channels and resolution (ReLU-Conv-BN convs with affine BN,
3x3 average pooling without padding in the count, identity, zero).
"""

from __future__ import annotations

import itertools
import random

import torch
import torch.nn as nn

from ..nn.darts_ops import ReLUConvBN, make_op
from ..nn.stages import run_stages

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4  # node 0 is the cell input, node 3 its output
EDGES = NODES * (NODES - 1) // 2  # 6
STAGES = 3

# One cell: for each node j = 1..3, the operation on the edge from each earlier node 0..j-1.
Cell = tuple[tuple[str, ...], ...]


def parse_arch(arch: str) -> Cell:
    """The cell of an architecture string; ValueError naming the problem for a malformed one.

    Within a node the edges may come in any order (each earlier node exactly once).
    """
    if not isinstance(arch, str):
        raise ValueError(f"arch: expected a NAS-Bench-201 string such as '|nor_conv_3x3~0|+|...|', "
                         f"got {type(arch).__name__}")
    nodes = arch.strip().split("+")
    if len(nodes) != NODES - 1:
        raise ValueError(f"arch: expected {NODES - 1} nodes separated by '+', got {len(nodes)} in {arch!r}")
    cell = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|") and len(node) > 1):
            raise ValueError(f"arch: node {j} must be written '|op~input|...|', got {node!r}")
        ops: dict[int, str] = {}
        for edge in node[1:-1].split("|"):
            op, sep, source = edge.partition("~")
            if not sep or not source.isdigit():
                raise ValueError(f"arch: edge {edge!r} of node {j} must be 'op~input' with an integer input")
            if op not in NB201_OPS:
                raise ValueError(f"arch: unknown operation {op!r} in node {j}; valid: {', '.join(NB201_OPS)}")
            if int(source) >= j:
                raise ValueError(f"arch: node {j} can only take nodes 0..{j - 1} as input, got {edge!r}")
            if int(source) in ops:
                raise ValueError(f"arch: node {j} takes node {source} twice")
            ops[int(source)] = op
        if len(ops) != j:
            missing = sorted(set(range(j)) - set(ops))
            raise ValueError(f"arch: node {j} needs one edge from each of nodes 0..{j - 1}, missing {missing}")
        cell.append(tuple(ops[i] for i in range(j)))
    return tuple(cell)


def format_arch(cell: Cell) -> str:
    """The canonical NAS-Bench-201 string of `cell` (edges of a node in input order)."""
    return "+".join("|" + "|".join(f"{op}~{i}" for i, op in enumerate(node)) + "|" for node in cell)


def sample_arch(rng: random.Random) -> str:
    """A uniformly random architecture (every edge independently one of NB201_OPS), as NAS-Bench-201 samples."""
    return format_arch(tuple(tuple(rng.choice(NB201_OPS) for _ in range(j)) for j in range(1, NODES)))


def all_archs() -> list[str]:
    """The 15625 architectures of the space, in a fixed order."""
    ops = itertools.product(NB201_OPS, repeat=EDGES)
    return [format_arch((o[0:1], o[1:3], o[3:6])) for o in ops]


def cell_index(cell: Cell) -> int:
    """The position of `cell` in all_archs(): its edges' operation indices read as one base-5 number."""
    index = 0
    for node in cell:
        for op in node:
            index = index * len(NB201_OPS) + NB201_OPS.index(op)
    return index


def edge_op(name: str, C: int) -> nn.Module:
    """Operation `name` of an edge on C channels, as InferCell builds it."""
    if name == "nor_conv_1x1":
        return ReLUConvBN(C, C, 1, 1, 0, affine=True)
    if name == "nor_conv_3x3":
        return ReLUConvBN(C, C, 3, 1, 1, affine=True)
    return make_op(name, C, stride=1, affine=True, search=False)  # none, skip_connect, avg_pool_3x3


class InferCell(nn.Module):
    """One NAS-Bench-201 cell on C channels: [B, C, H, W] -> [B, C, H, W] (node 3).

    A node all of whose edges are ``none`` is zero; so is the cell output when
    no path of non-``none`` edges leads from node 0 to node 3 (NAS-Bench-201
    keeps such cells too; their networks train to chance accuracy).
    """

    def __init__(self, cell: Cell, C: int):
        super().__init__()
        self.cell = cell
        self.edges = nn.ModuleList(edge_op(op, C) for node in cell for op in node)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, edge = [x], 0
        for node in self.cell:
            total = 0
            for source in range(len(node)):
                total = total + self.edges[edge](states[source])
                edge += 1
            states.append(total)
        return states[-1]


class ResNetBasicblock(nn.Module):
    """The stride-2 reduction between stages: [B, C_in, H, W] -> [B, C_out, H/2, W/2].

    Two ReLU-Conv-BN 3x3 (the first with stride 2) plus a shortcut of 2x2 average
    pooling and a 1x1 conv without BN, summed without a final activation.
    """

    def __init__(self, C_in: int, C_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, affine=True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class NB201Network(nn.Module):
    """NAS-Bench-201's TinyNetwork for one cell.

    forward(x [B, in_channels, H, W]) -> (logits [B, num_classes],
    [f1 [B, C, H, W], f2 [B, 2C, H/2, W/2], f3 [B, 4C, H/4, W/4]]), the outputs of the
    three stages (f3 before the final BN + ReLU). H and W must be at least 4
    (two stride-2 reductions).
    """

    def __init__(self, cell: Cell, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, value in (("C", C), ("N", N), ("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        stages, channels = [], C
        for stage in range(STAGES):
            width = C * 2 ** stage
            blocks = [ResNetBasicblock(channels, width)] if stage > 0 else []
            stages.append(nn.Sequential(*blocks, *(InferCell(cell, width) for _ in range(N))))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.lastact = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, features = run_stages(self.stem, self.stages, x)
        pooled = self.lastact(out).mean(dim=(2, 3))
        return self.classifier(pooled), features


def build(arch: str, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3) -> NB201Network:
    """The NAS-Bench-201 network of architecture string `arch` (see NB201Network)."""
    return NB201Network(parse_arch(arch), C, N, num_classes, in_channels)


# Weights and multiply-accumulates per output pixel of an edge operation on C channels, over C * C.
_CONV_TAPS = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}


def count_cost(cell: Cell, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3,
               image_size: int = 32) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one image) of NB201Network(cell, ...), from the cell's ops alone.

    The same numbers as fastnas.nn.cost.count_params and count_flops of the built network (MACs of the
    Conv2d and Linear layers) without building it. Each ReLU-Conv-BN edge has k*k*C*C conv weights and 2C
    BN weights; the stem, the two reductions, the last BN and the classifier are the same for every cell.
    """
    side = image_size
    params = in_channels * C * 9 + 2 * C  # stem: conv 3x3 + BN
    macs = in_channels * C * 9 * side * side
    width = C
    for stage in range(STAGES):
        if stage > 0:  # ResNetBasicblock: conv_a (stride 2) + BN, conv_b + BN, shortcut pool + conv 1x1
            wider, side = 2 * width, (side - 1) // 2 + 1
            params += 9 * width * wider + 2 * wider + 9 * wider * wider + 2 * wider + width * wider
            macs += (9 * width * wider + 9 * wider * wider + width * wider) * side * side
            width = wider
        taps = sum(_CONV_TAPS.get(op, 0) for node in cell for op in node)
        convs = sum(op in _CONV_TAPS for node in cell for op in node)
        params += N * (taps * width * width + convs * 2 * width)
        macs += N * taps * width * width * side * side
    params += 2 * width + width * num_classes + num_classes  # last BN, classifier weight and bias
    macs += width * num_classes
    return params, macs
