"""The DARTS cell search space: super-network and genotypes (the retrained networks: darts_eval.py).

One super-network serves DARTS/SD-DARTS and DNAD:
- DARTS (``mode="softmax"``, ``alpha_per_cell=False``): normal and reduction cells
  share two alpha tensors, weights are a softmax per edge, and the genotype keeps
  the top-2 incoming edges of each node.
- DNAD (``mode="relu_norm"``, ``alpha_per_cell=True``): every cell has its own
  alphas (cells of one type may end with different topologies), weights are
  relu(alpha) normalized over a node, operators are pruned from the network, and
  the genotype keeps every live operator (topology-unconstrained).

Macro skeleton as in DARTS: a 3x3 conv stem with ``stem_multiplier * C``
channels, ``layers`` cells with reductions at layers/3 and 2*layers/3 doubling
the channels, global pooling and a linear classifier. The forward pass also
returns the features at the three stage boundaries (after cells n/3-1, 2n/3-1,
n-1) for feature distillation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from ..nn import MixedNode, darts_node
from ..ops._reference import mixed_node_weights
from ..nn.darts_ops import DARTS_PRIMITIVES, DilConv, FactorizedReduce, ReLUConvBN, SepConv, check_primitives

# (op name, index of the input state: 0, 1 = the cell inputs, 2 + j = node j)
Edge = tuple[str, int]


@dataclass
class Genotype:
    """A discrete architecture of the DARTS space, JSON-serializable.

    Either ``normal`` and ``reduce`` (one cell of each type, shared by all cells of
    that type, as DARTS derives) or ``cells`` (one entry per cell, as DNAD derives).
    Each cell is a list over intermediate nodes of the (op, input) pairs summed there.
    """

    normal: list[list[Edge]] | None = None
    reduce: list[list[Edge]] | None = None
    cells: list[list[list[Edge]]] | None = None
    meta: dict = field(default_factory=dict)  # C, layers, primitives... of the search

    def __post_init__(self):
        shared = self.normal is not None and self.reduce is not None
        if shared == (self.cells is not None):
            raise ValueError("genotype: give either 'normal' and 'reduce' or 'cells'")
        for nodes in ([self.normal, self.reduce] if shared else self.cells):
            for node in nodes:
                for op, source in node:
                    check_primitives([op], "genotype op")
                    if not isinstance(source, int) or source < 0:
                        raise ValueError(f"genotype: input index must be an int >= 0, got {source!r}")

    def cell(self, index: int, reduction: bool) -> list[list[Edge]]:
        """The node lists of cell `index`."""
        if self.cells is not None:
            return self.cells[index]
        return self.reduce if reduction else self.normal

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> "Genotype":
        def edges(nodes):
            return [[(str(op), int(source)) for op, source in node] for node in nodes]
        return cls(normal=edges(data["normal"]) if "normal" in data else None,
                   reduce=edges(data["reduce"]) if "reduce" in data else None,
                   cells=[edges(c) for c in data["cells"]] if "cells" in data else None,
                   meta=data.get("meta", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"genotype: no file {path}")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (AttributeError, KeyError, TypeError, ValueError) as err:  # AttributeError: JSON but not an object
            raise ValueError(f"genotype: {path} is not a fastnas genotype file ({err})") from err


def reduction_layers(layers: int) -> set[int]:
    """Indices of the reduction cells: layers/3 and 2*layers/3."""
    return {layers // 3, 2 * layers // 3}


def stage_ends(layers: int) -> list[int]:
    """Indices of the cells whose outputs are the three stage features."""
    return sorted({layers // 3 - 1, 2 * layers // 3 - 1, layers - 1} - {-1})


class _Stem(nn.Sequential):
    def __init__(self, in_channels: int, C: int):
        super().__init__(nn.Conv2d(in_channels, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))


def _preprocess0(C_pp: int, C: int, reduction_prev: bool, affine: bool) -> nn.Module:
    if reduction_prev:
        return nn.Sequential(nn.ReLU(inplace=False), FactorizedReduce(C_pp, C, affine))
    return ReLUConvBN(C_pp, C, 1, 1, 0, affine)


class SearchCell(nn.Module):
    """A super-network cell: every node mixes every candidate from every earlier state."""

    def __init__(self, nodes: int, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 primitives: tuple[str, ...], mode: str):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = _preprocess0(C_pp, C, reduction_prev, affine=False)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=False)
        self.nodes = nn.ModuleList(darts_node(2 + j, C, reduction, primitives, mode) for j in range(nodes))
        self._masks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # see _cell_masks

    def node_weights(self, alpha: torch.Tensor) -> list[torch.Tensor]:
        """Operator weights [E_j, K] of each node (node.weights of its rows of alpha), computed for all at once."""
        first = self.nodes[0]
        mask, same_node = self._cell_masks(alpha)
        weights = mixed_node_weights(alpha, mask, first.mode, first.temperature, same_node)
        return list(weights.split([node.mask.shape[0] for node in self.nodes]))

    def _cell_masks(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The nodes' masks stacked [sum_j E_j, K] and the same-node matrix of the rows, on alpha's device, made
        once per pruning state (prune() only removes, so the live counts name it)."""
        key = (alpha.device, alpha.dtype, tuple(len(node.candidates) for node in self.nodes))
        if key not in self._masks:
            self._masks.clear()
            rows = [node.mask.shape[0] for node in self.nodes]
            same_node = torch.block_diag(*(torch.ones(r, r, dtype=alpha.dtype) for r in rows))
            self._masks[key] = (torch.cat([node.mask for node in self.nodes]).to(alpha.device),
                                same_node.to(alpha.device))
        return self._masks[key]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """alpha: [sum_j (2 + j), K], node j's rows follow node j-1's."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        weights = self.node_weights(alpha) if self.nodes[0].takes_weights else [None] * len(self.nodes)
        offset = 0
        for node, node_weights in zip(self.nodes, weights):
            edges = len(states)
            states.append(node(states, alpha[offset: offset + edges], weights=node_weights))
            offset += edges
        return torch.cat(states[2:], dim=1)


def num_edges(nodes: int) -> int:
    """Edges of a cell with `nodes` intermediate nodes: 2 + 3 + ... + (nodes + 1)."""
    return sum(2 + j for j in range(nodes))


class SuperNetwork(nn.Module):
    """The DARTS super-network; see the module docstring for the two configurations.

    forward(x [B, in_channels, H, W]) -> (logits [B, num_classes], three stage features).
    """

    def __init__(self, C: int = 16, num_classes: int = 10, layers: int = 8, nodes: int = 4,
                 primitives: tuple[str, ...] | list[str] = DARTS_PRIMITIVES, in_channels: int = 3,
                 mode: str = "softmax", alpha_per_cell: bool = False, alpha_init: float | None = None,
                 stem_multiplier: int = 3, recompute: bool = True):
        super().__init__()
        if layers < 3:
            raise ValueError(f"layers: expected at least 3 cells (three stages), got {layers}")
        self.primitives = check_primitives(primitives)
        self.config = dict(C=C, num_classes=num_classes, layers=layers, nodes=nodes,
                           primitives=list(self.primitives), in_channels=in_channels, mode=mode,
                           alpha_per_cell=alpha_per_cell, stem_multiplier=stem_multiplier)
        self.stem = _Stem(in_channels, stem_multiplier * C)
        reductions = reduction_layers(layers)
        C_pp, C_p, C_cur = stem_multiplier * C, stem_multiplier * C, C
        self.cells = nn.ModuleList()
        self.stage_channels = []
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            C_cur = C_cur * 2 if reduction else C_cur
            self.cells.append(SearchCell(nodes, C_pp, C_p, C_cur, reduction, reduction_prev, self.primitives, mode))
            reduction_prev = reduction
            C_pp, C_p = C_p, nodes * C_cur
            if i in stage_ends(layers):
                self.stage_channels.append(C_p)
        self.classifier = nn.Linear(C_p, num_classes)

        # DARTS: alphas ~ 1e-3 * N(0, 1); DNAD: a constant (2.0 in the authors' code).
        shape = (num_edges(nodes), len(self.primitives))
        count = layers if alpha_per_cell else 2

        def init():
            return torch.full(shape, alpha_init) if alpha_init is not None else 1e-3 * torch.randn(shape)
        self.alphas = nn.ParameterList([nn.Parameter(init()) for _ in range(count)])
        self.set_recompute(recompute)

    def set_recompute(self, enabled: bool) -> None:
        """Memory for compute (on by default): backward rebuilds the operator outputs the alpha gradient
        needs from what BatchNorm saved (MixedNode) and each depthwise output from its input
        (DepthwisePointwise) instead of keeping them. Values and gradients are the same either way."""
        for module in self.modules():
            if isinstance(module, MixedNode):
                module.recompute_outputs = enabled
            elif isinstance(module, (SepConv, DilConv)):
                module.recompute_depthwise = enabled

    def set_grouping(self, enabled: bool) -> None:
        """Horizontal fusion (on by default): each node runs the same operation on several edges as one call
        (MixedNode.group_operators, fastnas.nn.grouped); off, every operator runs on its own. Values and
        gradients are the same either way."""
        for module in self.modules():
            if isinstance(module, MixedNode):
                module.group_operators = enabled

    def alpha_of(self, cell_index: int) -> torch.Tensor:
        """The alpha tensor [edges, K] that cell `cell_index` uses."""
        if len(self.alphas) == len(self.cells):
            return self.alphas[cell_index]
        return self.alphas[1 if self.cells[cell_index].reduction else 0]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        s0 = s1 = self.stem(x)
        ends = stage_ends(len(self.cells))
        features = []
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.alpha_of(i))
            if i in ends:
                features.append(s1)
        logits = self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(s1, 1), 1))
        return logits, features

    def node_masks(self) -> list[list[torch.Tensor]]:
        """Live masks [E_j, K] of every node of every cell."""
        return [[node.mask for node in cell.nodes] for cell in self.cells]

    def load_masks(self, masks: list[list[torch.Tensor]]) -> None:
        """Prunes this network to `masks` (as returned by node_masks), e.g. before loading a pruned state dict."""
        for cell, cell_masks in zip(self.cells, masks):
            for node, mask in zip(cell.nodes, cell_masks):
                for edge, op in (~mask).nonzero().tolist():
                    node.prune(edge, op)

    def num_live_ops(self) -> int:
        return sum(int(m.sum()) for cell in self.node_masks() for m in cell)

    def genotype(self, top_k: int | None = 2) -> Genotype:
        """The discrete architecture.

        top_k = 2 (DARTS): per cell type, each node keeps its top-2 incoming edges
        ranked by their strongest non-'none' weight, each with that operation.
        top_k = None (DNAD): every cell keeps every live operation except 'none'.
        """
        meta = {**self.config}
        if top_k is None:
            return Genotype(cells=[self._live_cell(i) for i in range(len(self.cells))], meta=meta)
        normal_index = next(i for i, c in enumerate(self.cells) if not c.reduction)
        reduce_index = next(i for i, c in enumerate(self.cells) if c.reduction)
        return Genotype(normal=self._top_k_cell(normal_index, top_k),
                        reduce=self._top_k_cell(reduce_index, top_k), meta=meta)

    def cell_weights(self, cell_index: int) -> list[torch.Tensor]:
        """Operator weights [E_j, K] of each node of a cell, differentiable w.r.t. alpha, 0 where pruned."""
        return self.cells[cell_index].node_weights(self.alpha_of(cell_index))

    def node_weights(self) -> list[torch.Tensor]:
        """cell_weights of every cell, flattened into one list of [E_j, K] tensors."""
        return [w for i in range(len(self.cells)) for w in self.cell_weights(i)]

    @torch.no_grad()
    def prune_below(self, eps: float) -> list[tuple[int, int, int, str]]:
        """Prunes every live operator whose weight is below eps; returns (cell, node, edge, op name) of each."""
        pruned = []
        per_node = self.node_weights()
        below = torch.cat([w.flatten() for w in per_node]).cpu() < eps  # one download: one sync on a GPU
        below_per_node = iter(below.split([w.numel() for w in per_node]))
        for i, cell in enumerate(self.cells):
            for j, node in enumerate(cell.nodes):
                for edge, op in (node.mask & next(below_per_node).view(node.mask.shape)).nonzero().tolist():
                    node.prune(edge, op)
                    pruned.append((i, j, edge, self.primitives[op]))
        return pruned

    def _live_cell(self, cell_index: int) -> list[list[Edge]]:
        nodes: list[list[Edge]] = []
        for node in self.cells[cell_index].nodes:
            # An empty node outputs zeros, and every search-mode op maps zeros to zeros
            # (BN without affine): edges reading it contribute nothing and are dropped.
            nodes.append([(self.primitives[k], e) for e, k in node.live
                          if self.primitives[k] != "none" and (e < 2 or nodes[e - 2])])
        return nodes

    def _top_k_cell(self, cell_index: int, top_k: int) -> list[list[Edge]]:
        result = []
        weights_of_cell = [w.detach().cpu() for w in self.cell_weights(cell_index)]
        for node, weights in zip(self.cells[cell_index].nodes, weights_of_cell):
            candidates = []
            for edge in range(weights.shape[0]):
                if edge >= 2 and not result[edge - 2]:
                    continue  # an empty node has no output
                best = max((k for k in range(weights.shape[1])
                            if self.primitives[k] != "none" and node.mask[edge, k]),
                           key=lambda k: weights[edge, k].item(), default=None)
                if best is not None:
                    candidates.append((weights[edge, best].item(), self.primitives[best], edge))
            candidates.sort(key=lambda c: -c[0])
            result.append([(op, edge) for _, op, edge in sorted(candidates[:top_k], key=lambda c: c[2])])
        return result
