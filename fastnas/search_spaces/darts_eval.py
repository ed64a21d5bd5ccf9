"""The DARTS evaluation networks: a genotype retrained from scratch (quark0/darts cnn/model.py).

- ``NetworkCIFAR``: a 3x3 convolution stem with ``stem_multiplier * C`` channels and BatchNorm, ``layers``
  cells with reductions at layers/3 and 2*layers/3, global average pooling, a linear classifier;
  the auxiliary head (``AuxiliaryHeadCIFAR``) reads the output of cell 2*layers/3.
- ``NetworkImageNet``: two stride-2 stems (stem0: two stride-2 3x3 convolutions to C, stem1: ReLU and a
  stride-2 3x3 convolution), 14 cells, C = 48 by default (quark0/darts train_imagenet.py), the auxiliary
  head ``AuxiliaryHeadImageNet`` without the BatchNorm after its 768-channel convolution, as the reference
  (which comments it out "for consistency with the experiments in the paper").

Every genotype of the DARTS space builds: shared ``normal``/``reduce`` cells (DARTS, SD-DARTS, the
published cells of ``fastnas.search_spaces.genotypes``) and DNAD's one-entry-per-cell genotypes
(``Genotype.cells``), whose nodes may have any number of inputs. An empty node (no operation left)
outputs nothing and is left out of the cell's concatenation (its zeros would change nothing
downstream), so a cell's output has C times its non-empty nodes channels; a cell with no operation at
all outputs C zero channels. The reference concatenates all four nodes and has no empty node; for DARTS
genotypes (two inputs per node) the two agree.

What the trainer uses (fastnas.evaluators.trainer):

- ``model(x)`` returns ``(logits [B, classes], [3 stage features [B, C_i, H_i, W_i]])``, the features at
  the ends of the three stages (cells layers/3 - 1, 2*layers/3 - 1, layers - 1), as every fastnas network;
  in training mode, a network built with ``auxiliary=True`` returns
  ``(logits, features, auxiliary logits [B, classes])``. In eval mode there is never a third element,
  as in the reference (``logits_aux`` is computed only ``if self._auxiliary and self.training``).
- ``model.drop_path_prob`` (float, 0 at construction): the drop-path probability, set from outside
  before each epoch, as quark0/darts cnn/train.py does (``model.drop_path_prob = args.drop_path_prob *
  epoch / args.epochs``). In training mode each cell drops the output of every operation that is not an
  identity with that probability, per sample (``drop_path``); in eval mode never.
  DNAD's authors (RaoXuan-1998/NADD train_eval_cifar.py, main()) set ``drop_prob * epoch / epochs`` per
  epoch too, with ``drop_prob = args.drop_prob + (0.15 / 112) * (operators - 8 * cells)`` (args.drop_prob
  0.3; operators counted over every node of every cell, calculate_operator_num), through
  ``network.update_drop_prob``; their model_eval.py Normal/Reduction_Computing_Node skip identities the
  same way.
- ``model.config()``: the constructor arguments (JSON types), so that a saved state dict can be rebuilt
  (``NetworkCIFAR.from_config``); this makes retrained networks loadable as teachers
  (``fastnas.distill.save_teacher_checkpoint`` / ``load_teacher("checkpoint:PATH")``).
- ``reference_param_count(model)``: the parameters as the reference counts them (quark0/darts and NADD
  utils count_parameters_in_MB: every parameter whose name does not contain "auxiliary").
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distill.teachers import register_teacher_arch
from ..nn.darts_ops import ReLUConvBN, make_op, takes_relu_input
from .darts import Edge, Genotype, _preprocess0, _Stem, reduction_layers, stage_ends


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zeroes each sample of x [B, ...] with probability `drop_prob` and scales the rest by 1 / (1 - drop_prob).

    The values of quark0/darts cnn/utils.py drop_path (a Bernoulli(1 - p) mask of shape [B, 1, 1, 1]), out of
    place: the reference divides and multiplies x in place. The mask is drawn on x's device from its generator.
    """
    keep = 1.0 - drop_prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


class DiscreteCell(nn.Module):
    """A cell of a derived architecture: each node sums its (op, input) pairs; empty nodes are dropped.

    forward(s0 [B, C_pp, H, W], s1 [B, C_p, H, W], drop_prob) -> [B, out_channels, H', W'] (H' = H / 2 in a
    reduction cell). Operations reading a cell input in a reduction cell have stride 2.
    """

    def __init__(self, genotype_nodes: list[list[Edge]], C_pp: int, C_p: int, C: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = _preprocess0(C_pp, C, reduction_prev, affine=True)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0, affine=True)
        self.node_inputs = [[source for _, source in node] for node in genotype_nodes]
        self.node_ops = nn.ModuleList()
        self.node_droppable: list[list[bool]] = []  # drop-path applies to every operation but the identity
        for j, node in enumerate(genotype_nodes):
            ops = nn.ModuleList()
            for op_name, source in node:
                if source >= 2 + j or (source >= 2 and not genotype_nodes[source - 2]):
                    raise ValueError(f"genotype: node {j} cannot read state {source} (states 0..{1 + j} "
                                     "exist, and an empty node has no output)")
                op = make_op(op_name, C, 2 if reduction and source < 2 else 1, affine=True, search=False)
                ops.append(nn.Sequential(nn.ReLU(inplace=False), op) if takes_relu_input(op) else op)
            self.node_ops.append(ops)
            self.node_droppable.append([not isinstance(op, nn.Identity) for op in ops])
        # An empty node is zero, and zero channels change nothing downstream: they are left out
        # (a cell with no operation left outputs C zero channels).
        self.concat = [2 + j for j, node in enumerate(genotype_nodes) if node]
        self.out_channels = C * max(1, len(self.concat))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        dropping = self.training and drop_prob > 0
        for inputs, ops, droppable in zip(self.node_inputs, self.node_ops, self.node_droppable):
            if not ops:
                states.append(None)
                continue
            total = 0
            for op, source, drop in zip(ops, inputs, droppable):
                h = op(states[source])
                total = total + (drop_path(h, drop_prob) if dropping and drop else h)
            states.append(total)
        if not self.concat:
            stride = 2 if self.reduction else 1
            return states[1][:, :, ::stride, ::stride].mul(0.0)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """ReLU, 5x5 average pooling (no padding), 1x1 conv to 128 + BN + ReLU, 2x2 conv to 768 (+ BN) + ReLU, linear.

    forward(x [B, C, H, W]) -> [B, num_classes]. The layout of quark0/darts cnn/model.py; the pooling must
    leave a 2x2 map, so H and W are limited to a few sides (``sizes()``), else a ValueError says which.
    """

    def __init__(self, C: int, num_classes: int, pool_stride: int, last_batchnorm: bool, expected: str):
        super().__init__()
        self.pool_stride, self.expected = pool_stride, expected
        layers: list[nn.Module] = [nn.ReLU(inplace=False),
                                   nn.AvgPool2d(5, stride=pool_stride, padding=0, count_include_pad=False),
                                   nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
                                   nn.Conv2d(128, 768, 2, bias=False)]
        if last_batchnorm:
            layers.append(nn.BatchNorm2d(768))
        self.features = nn.Sequential(*layers, nn.ReLU(inplace=False))
        self.classifier = nn.Linear(768, num_classes)

    def sizes(self) -> range:
        """The input sides the head takes: those that pooling turns into 2."""
        return range(5 + self.pool_stride, 5 + 2 * self.pool_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(side not in self.sizes() for side in x.shape[-2:]):
            raise ValueError(f"auxiliary: the auxiliary head takes maps of side {self.sizes()[0]} to "
                             f"{self.sizes()[-1]} ({self.expected}), got {x.shape[-2]}x{x.shape[-1]}; "
                             "build the network with auxiliary=False (--auxiliary-weight 0) for these images")
        return self.classifier(torch.flatten(self.features(x), 1))


class AuxiliaryHeadCIFAR(AuxiliaryHead):
    """The CIFAR auxiliary head: pooling stride 3 on the 8x8 maps of 32x32 inputs (quark0/darts cnn/model.py).

    NADD model_eval.py AuxiliaryHeadCifar pools with stride 2 instead (the same 2x2 result and parameters,
    other windows); fastnas follows DARTS.
    """

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=3, last_batchnorm=True, expected="8x8 for 32x32 inputs")


class AuxiliaryHeadImageNet(AuxiliaryHead):
    """The ImageNet auxiliary head: pooling stride 2 on the 7x7 maps of 224x224 inputs, no BatchNorm after the
    768-channel convolution (quark0/darts cnn/model.py; NADD model_eval.py keeps that BatchNorm)."""

    def __init__(self, C: int, num_classes: int):
        super().__init__(C, num_classes, pool_stride=2, last_batchnorm=False, expected="7x7 for 224x224 inputs")


def _cell_count(genotype: Genotype, layers: int | None, default: int) -> int:
    if genotype.cells is not None:
        if layers not in (None, len(genotype.cells)):
            raise ValueError(f"layers: this genotype has one entry per cell ({len(genotype.cells)} cells), "
                             f"got layers={layers}")
        return len(genotype.cells)
    layers = layers or genotype.meta.get("layers", default)
    if layers < 3:
        raise ValueError(f"layers: expected at least 3 cells (three stages), got {layers}")
    return layers


class _EvalNetwork(nn.Module):
    """The cell stack, classifier, auxiliary head and forward pass the two evaluation networks share."""

    auxiliary_head_type: type[AuxiliaryHead]

    def __init__(self, genotype: Genotype, config: dict[str, Any]):
        """config: the subclass's constructor arguments but the genotype (C, num_classes, layers, auxiliary...)."""
        super().__init__()
        self.genotype = genotype
        self._config = config
        self.drop_path_prob = 0.0
        self.auxiliary_index = 2 * config["layers"] // 3  # the cell whose output the auxiliary head reads
        self.stage_ends = stage_ends(config["layers"])

    def _build_cells(self, C_pp: int, C_p: int, reduction_prev: bool) -> None:
        config, genotype = self._config, self.genotype
        C_cur = config["C"]
        reductions = reduction_layers(config["layers"])
        self.cells = nn.ModuleList()
        C_auxiliary = C_p
        for i in range(config["layers"]):
            reduction = i in reductions
            C_cur = C_cur * 2 if reduction else C_cur
            cell = DiscreteCell(genotype.cell(i, reduction), C_pp, C_p, C_cur, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            C_pp, C_p = C_p, cell.out_channels
            if i == self.auxiliary_index:
                C_auxiliary = C_p
        # the attribute name contains "auxiliary": reference_param_count leaves the head out, as the reference
        self.auxiliary_head = (self.auxiliary_head_type(C_auxiliary, config["num_classes"])
                               if config["auxiliary"] else None)
        self.classifier = nn.Linear(C_p, config["num_classes"])

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two states (s0, s1) the first cell reads."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s0, s1 = self.stems(x)
        features, auxiliary_logits = [], None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i in self.stage_ends:
                features.append(s1)
            if i == self.auxiliary_index and self.auxiliary_head is not None and self.training:
                auxiliary_logits = self.auxiliary_head(s1)
        # global average pooling (the reference's AdaptiveAvgPool2d(1); its ImageNet AvgPool2d(7) is the same
        # on the 7x7 maps of 224x224 inputs and fails on others: fastnas's choice)
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(s1, 1), 1))
        if auxiliary_logits is None:
            return logits, features
        return logits, features, auxiliary_logits

    def config(self) -> dict[str, Any]:
        """The constructor arguments in JSON types (the genotype as Genotype.to_json), for from_config."""
        return {"genotype": json.loads(json.dumps(self.genotype.to_json())), **self._config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "_EvalNetwork":
        """The network `config()` describes (untrained)."""
        return cls(Genotype.from_json(config["genotype"]), **{k: v for k, v in config.items() if k != "genotype"})


@register_teacher_arch("NetworkCIFAR")
class NetworkCIFAR(_EvalNetwork):
    """The DARTS CIFAR evaluation network (quark0/darts cnn/model.py NetworkCIFAR); see the module docstring.

    forward(x [B, in_channels, H, W]) -> (logits, [f1 [B, ., H, W], f2 [., H/2], f3 [., H/4]]) (+ auxiliary
    logits while training with auxiliary=True). The papers' CIFAR-10 network: C = 36, layers = 20,
    auxiliary=True. `layers` defaults to the genotype's search value (meta), else 8; a DNAD genotype
    (one entry per cell) fixes it.
    """

    auxiliary_head_type = AuxiliaryHeadCIFAR

    def __init__(self, genotype: Genotype, C: int = 16, num_classes: int = 10, layers: int | None = None,
                 auxiliary: bool = False, in_channels: int = 3, stem_multiplier: int = 3):
        layers = _cell_count(genotype, layers, default=8)
        super().__init__(genotype, dict(C=C, num_classes=num_classes, layers=layers, auxiliary=auxiliary,
                                        in_channels=in_channels, stem_multiplier=stem_multiplier))
        self.stem = _Stem(in_channels, stem_multiplier * C)
        self._build_cells(stem_multiplier * C, stem_multiplier * C, reduction_prev=False)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.stem(x)
        return s, s


@register_teacher_arch("NetworkImageNet")
class NetworkImageNet(_EvalNetwork):
    """The DARTS ImageNet evaluation network (quark0/darts cnn/model.py NetworkImageNet); see the module docstring.

    forward(x [B, in_channels, H, W]) -> (logits, [f1 [B, ., H/8, W/8], f2 [., H/16], f3 [., H/32]]) (+ auxiliary
    logits while training with auxiliary=True). stem0 (H/4) feeds the first cell as s0 and stem1 (H/8) as s1,
    so the first cell reduces s0 (FactorizedReduce); reductions at layers/3 and 2*layers/3 bring 224x224 inputs
    to 7x7. The mobile setting of the papers: C = 48, layers = 14, auxiliary=True.
    """

    auxiliary_head_type = AuxiliaryHeadImageNet

    def __init__(self, genotype: Genotype, C: int = 48, num_classes: int = 1000, layers: int | None = None,
                 auxiliary: bool = False, in_channels: int = 3):
        layers = _cell_count(genotype, layers, default=14)
        super().__init__(genotype, dict(C=C, num_classes=num_classes, layers=layers, auxiliary=auxiliary,
                                        in_channels=in_channels))
        self.stem0 = nn.Sequential(
            nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=False),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(C))
        self._build_cells(C, C, reduction_prev=True)

    def stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


# The name the searches use for the network they retrain a genotype as.
DiscreteNetwork = NetworkCIFAR


def reference_param_count(model: nn.Module) -> int:
    """Parameters whose name does not contain "auxiliary": quark0/darts utils.count_parameters_in_MB * 1e6
    (NADD utils_.py the same), the count the papers report."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name)
