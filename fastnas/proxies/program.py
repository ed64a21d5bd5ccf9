"""Auto-DAS proxies as programs: a small computation graph over the ops of `autodas_ops`.

A `Program` has up to two parts whose scores add up, as in the paper's searched proxies
(Eq. 4 and 5: an interaction distance plus an instinct term):

- instinct, one of two structures:
  * `LinearInstinct` (the authors' LinearInstinct, lliai/Auto-DAS searchspace/instincts/linear.py,
    used in all their experiments): one per-layer input through a chain of unary ops (4 in the
    authors' code), each layer's result reduced to a number (`layer_reduction`, the authors' mean)
    and the layers reduced again (`reduction`, the authors' sum, instincts/utils.py convert_to_numpy);
  * `Instinct` (fastnas's tree): two branches, each an input through unary ops, joined layer by
    layer by a binary op, each layer's result and then the layers reduced by one `reduction`.
  `layers` picks the layers read: "conv" (Conv2d only, the authors') or "all" (Conv2d and Linear).
- `Interaction` (the authors' ParaInteraction, searchspace/interactions/parallel.py): one input pair
  (the last stage feature maps, the embeddings or the logits of student and teacher), the same
  transforms applied to both (3 in the authors' code), a distance (a scalar), a weight node, and a
  sign: the authors add the weighted distance (+1); fastnas's earlier programs subtracted it (-1), so
  a student closer to its teacher scored higher. When the teacher is wider than the student its
  channels are truncated to the student's (and the larger map average-pooled to the smaller
  resolution) before the transforms, as the authors' inter_fd does for mismatched networks.

`scale` min-max scales each part over the architectures scored together before adding them (the
authors' --scale option, off by default there), so it only exists in `score_population`.

A program is a frozen dataclass, serialized to JSON (`to_json` / `from_json`) and printed as a
formula (`formula`). `score_population` evaluates P programs on N architectures' cached
`ProxyInputs` into a [P, N] tensor, sharing the prefixes of op chains among programs that start
alike; an invalid result (NaN, inf, an op that fails on a shape) is NaN. `ProgramSpace` says what
`random_program`, `mutate` and `crossover` may draw.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..ops import foreach_reduce
from .autodas_ops import (BINARY_OPS, DISTANCES, INSTINCT_INPUTS, INTERACTION_INPUTS, TRANSFORMS, UNARY_OPS, WEIGHTS,
                          LayerReduction)
from .inputs import ProxyInputs

REDUCTIONS = ("sum", "mean")
LAYER_SELECTIONS = ("conv", "all")
SIGNS = (1, -1)
MAX_CHAIN = 8  # ops per chain at most (fastnas's bound; the authors use 4 unary ops and 3 transforms)
PARTS = ("both", "instinct", "interaction")
STRUCTURES = ("linear", "tree")

INPUT_SYMBOLS = {"activations": "A_l", "outputs": "O_l", "grads": "G_l", "weights": "W_l", "virtual_grads": "V_l",
                 "feature": "F", "embedding": "E", "logits": "P"}
# Distances defined per sample (fastnas's), printed with the mean over the batch.
PER_SAMPLE_DISTANCES = ("l1", "l2", "kl", "hard", "cosine", "pearson")
WEIGHT_SYMBOLS = {"w1_teacher": "", "w100_teacher_student": "100 cos_b(T, S) * "}


@dataclass(frozen=True)
class LinearInstinct:
    """reduction over layers l of layer_reduction(ops[-1](...ops[0](input_l)))."""

    input: str
    ops: tuple[str, ...]
    layer_reduction: str = "mean"  # the authors' to_mean_scalar
    reduction: str = "sum"  # the authors' sum over layers
    layers: str = "conv"  # the authors' Conv2d-only inputs


@dataclass(frozen=True)
class Instinct:
    """fastnas's tree: reduction over layers l of reduction(binary(chain_0(inputs[0]_l), chain_1(inputs[1]_l)))."""

    inputs: tuple[str, str]
    unary: tuple[tuple[str, ...], tuple[str, ...]]
    binary: str
    reduction: str
    layers: str = "all"


@dataclass(frozen=True)
class Interaction:
    """sign * weight(distance(transforms(student input), transforms(teacher input)))."""

    input: str
    transforms: tuple[str, ...]
    distance: str
    weight: str = "w1_teacher"
    sign: int = -1  # fastnas's earlier convention; the authors' programs add (+1)


@dataclass(frozen=True)
class Program:
    """One Auto-DAS proxy: instinct part, interaction part, or both (their scores add)."""

    instinct: LinearInstinct | Instinct | None = None
    interaction: Interaction | None = None
    scale: bool = False  # min-max scale each part over the architectures before adding (score_population)

    def __post_init__(self) -> None:
        if self.instinct is None and self.interaction is None:
            raise ValueError("program: needs an instinct part, an interaction part or both")
        if not isinstance(self.scale, bool):
            raise ValueError(f"scale: expected true or false, got {self.scale!r}")
        part = self.instinct
        if isinstance(part, LinearInstinct):
            _check_names("instinct.input", (part.input,), INSTINCT_INPUTS)
            _check_chain("instinct.ops", part.ops, UNARY_OPS)
            _check_names("instinct.layer_reduction", (part.layer_reduction,), REDUCTIONS)
        elif isinstance(part, Instinct):
            _check_names("instinct.inputs", part.inputs, INSTINCT_INPUTS, count=2)
            if len(part.unary) != 2:
                raise ValueError(f"instinct.unary: expected 2 branches, got {len(part.unary)}")
            for branch in part.unary:
                _check_chain("instinct.unary", branch, UNARY_OPS)
            _check_names("instinct.binary", (part.binary,), BINARY_OPS)
        elif part is not None:
            raise ValueError(f"instinct: expected a LinearInstinct or an Instinct, got {type(part).__name__}")
        if part is not None:
            _check_names("instinct.reduction", (part.reduction,), REDUCTIONS)
            _check_names("instinct.layers", (part.layers,), LAYER_SELECTIONS)
        if self.interaction is not None:
            p = self.interaction
            _check_names("interaction.input", (p.input,), INTERACTION_INPUTS)
            _check_chain("interaction.transforms", p.transforms, TRANSFORMS)
            _check_names("interaction.distance", (p.distance,), DISTANCES)
            _check_names("interaction.weight", (p.weight,), WEIGHTS)
            if p.sign not in SIGNS or isinstance(p.sign, bool):
                raise ValueError(f"interaction.sign: expected 1 or -1, got {p.sign!r}")

    # --- what it reads ---------------------------------------------------------------------------
    def layer_inputs(self) -> set[str]:
        """The per-layer lists of ProxyInputs it reads (for collect's layer_inputs)."""
        if isinstance(self.instinct, LinearInstinct):
            return {self.instinct.input}
        if isinstance(self.instinct, Instinct):
            return set(self.instinct.inputs)
        return set()

    @property
    def needs_teacher(self) -> bool:
        return self.interaction is not None

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"instinct": None, "interaction": None, "scale": self.scale}
        part = self.instinct
        if isinstance(part, LinearInstinct):
            out["instinct"] = {"structure": "linear", "input": part.input, "ops": list(part.ops),
                               "layer_reduction": part.layer_reduction, "reduction": part.reduction,
                               "layers": part.layers}
        elif isinstance(part, Instinct):
            out["instinct"] = {"structure": "tree", "inputs": list(part.inputs),
                               "unary": [list(branch) for branch in part.unary], "binary": part.binary,
                               "reduction": part.reduction, "layers": part.layers}
        if self.interaction is not None:
            p = self.interaction
            out["interaction"] = {"input": p.input, "transforms": list(p.transforms), "distance": p.distance,
                                  "weight": p.weight, "sign": p.sign}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Program":
        """The inverse of `to_dict`. Defaults for keys a file may lack: a tree instinct (the only structure
        of fastnas's earlier programs) reading all layers, weight w1_teacher, sign -1, no scaling."""
        if not isinstance(data, dict) or set(data) - {"instinct", "interaction", "scale"}:
            raise ValueError(f"program: expected a dict with keys 'instinct', 'interaction' (and 'scale'), "
                             f"got {data!r}")
        instinct = interaction = None
        try:
            part = data.get("instinct")
            if part is not None:
                structure = part.get("structure", "tree")
                if structure == "linear":
                    instinct = LinearInstinct(input=part["input"], ops=tuple(part["ops"]),
                                              layer_reduction=part.get("layer_reduction", "mean"),
                                              reduction=part.get("reduction", "sum"),
                                              layers=part.get("layers", "conv"))
                elif structure == "tree":
                    instinct = Instinct(inputs=tuple(part["inputs"]),
                                        unary=tuple(tuple(branch) for branch in part["unary"]),
                                        binary=part["binary"], reduction=part["reduction"],
                                        layers=part.get("layers", "all"))
                else:
                    raise ValueError(f"instinct.structure: expected one of {STRUCTURES}, got {structure!r}")
            part = data.get("interaction")
            if part is not None:
                interaction = Interaction(input=part["input"], transforms=tuple(part["transforms"]),
                                          distance=part["distance"], weight=part.get("weight", "w1_teacher"),
                                          sign=part.get("sign", -1))
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"program: malformed part ({error!r}) in {data!r}") from None
        return cls(instinct, interaction, data.get("scale", False))

    @classmethod
    def from_json(cls, text: str) -> "Program":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"program: not valid JSON ({error})") from None
        return cls.from_dict(data)

    # --- printing ------------------------------------------------------------------------------
    def formula(self) -> str:
        """The proxy as a formula, e.g.
        ``sum_l[conv] mean(l1_norm(tanh(logsoftmax(G_l)))) + 100 cos_b(T, S) * multiply(mish(E_S), mish(E_T))``."""
        terms = []
        part = self.instinct
        if isinstance(part, LinearInstinct):
            terms.append(f"{part.reduction}_l[{part.layers}] {part.layer_reduction}"
                         f"({_chain_text(part.ops, INPUT_SYMBOLS[part.input])})")
        elif isinstance(part, Instinct):
            a, b = (_chain_text(branch, INPUT_SYMBOLS[name]) for name, branch in zip(part.inputs, part.unary))
            terms.append(f"{part.reduction}_l[{part.layers}] {part.reduction}({part.binary}({a}, {b}))")
        if self.interaction is not None:
            p = self.interaction
            student, teacher = (_chain_text(p.transforms, INPUT_SYMBOLS[p.input] + side) for side in ("_S", "_T"))
            batch_mean = "mean_b " if p.distance in PER_SAMPLE_DISTANCES else ""
            terms.append(f"{WEIGHT_SYMBOLS[p.weight]}{batch_mean}{p.distance}({student}, {teacher})")
        if self.scale:
            terms = [f"minmax[{term}]" for term in terms]
        text = terms[0] if self.instinct is not None else ""
        if self.interaction is not None:
            sign = "+" if self.interaction.sign > 0 else "-"
            text = f"{text} {sign} {terms[-1]}" if text else (terms[-1] if sign == "+" else f"- {terms[-1]}")
        return text

    def __str__(self) -> str:
        return self.formula()


def _check_names(field_name: str, names: Sequence[str], valid, count: int = 1) -> None:
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"{field_name}: expected {count} name(s), got {names!r}")
    for name in names:
        if name not in valid:
            raise ValueError(f"{field_name}: unknown op or input {name!r}; valid: {', '.join(valid)}")


def _check_chain(field_name: str, names: Sequence[str], valid) -> None:
    if isinstance(names, str) or not 1 <= len(names) <= MAX_CHAIN:
        raise ValueError(f"{field_name}: expected a list of 1 to {MAX_CHAIN} names, got {names!r}")
    _check_names(field_name, names, valid, count=len(names))


def _chain_text(ops: Sequence[str], symbol: str) -> str:
    text = symbol
    for op in ops:
        if op != "no_op":
            text = f"{op}({text})"
    return text


# --- what random programs and mutations draw ---------------------------------------------------------
def check_parts(parts: Sequence[str]) -> None:
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts: expected a non-empty subset of {PARTS}, got {list(parts)}")


@dataclass(frozen=True)
class ProgramSpace:
    """The genes a search draws from. Defaults are the authors' code (lliai/Auto-DAS) except `signs`."""

    parts: tuple[str, ...] = PARTS  # the paper's ablation restricts to one part
    instinct: str = "linear"  # the authors' LinearInstinct; "tree" is fastnas's earlier structure
    instinct_inputs: tuple[str, ...] = ("outputs", "grads", "weights", "virtual_grads")  # authors' zc_inputs.py
    layers: str = "conv"  # Conv2d only (zc_inputs.py); "all" adds the Linear layers
    unary_ops: int = 4  # LinearInstinct(length=4)
    no_op_weight: float = 2.0  # sample_unary_key_by_prob: no_op 0.2, every other op 0.1
    transforms: int = 3  # ParaInteraction(n_nodes=3)
    signs: tuple[int, ...] = SIGNS  # fastnas's choice: the sign is a gene; the authors' code always adds (1,)
    scale: tuple[bool, ...] = (False,)  # the authors' --scale default
    layer_reductions: tuple[str, ...] = ("mean",)  # the authors' fixed mean per layer (linear instinct)
    reductions: tuple[str, ...] = ("sum",)  # the authors' fixed sum over layers

    def __post_init__(self) -> None:
        object.__setattr__(self, "parts", tuple(self.parts))
        check_parts(self.parts)
        _check_names("instinct", (self.instinct,), STRUCTURES)
        if not self.instinct_inputs or any(name not in INSTINCT_INPUTS for name in self.instinct_inputs):
            raise ValueError(f"instinct_inputs: expected names of {INSTINCT_INPUTS}, got {list(self.instinct_inputs)}")
        _check_names("layers", (self.layers,), LAYER_SELECTIONS)
        for name, value in (("unary_ops", self.unary_ops), ("transforms", self.transforms)):
            if not isinstance(value, int) or not 1 <= value <= MAX_CHAIN:
                raise ValueError(f"{name}: expected 1 to {MAX_CHAIN} ops per chain, got {value!r}")
        if not self.no_op_weight > 0:
            raise ValueError(f"no_op_weight: expected a positive weight, got {self.no_op_weight!r}")
        for name, values, valid in (("signs", self.signs, SIGNS), ("scale", self.scale, (False, True)),
                                    ("layer_reductions", self.layer_reductions, REDUCTIONS),
                                    ("reductions", self.reductions, REDUCTIONS)):
            if not values or any(v not in valid for v in values):
                raise ValueError(f"{name}: expected a non-empty subset of {valid}, got {list(values)}")

    def layer_inputs(self) -> set[str]:
        """Every per-layer list a program of this space may read."""
        return set(self.instinct_inputs) if self.parts != ("interaction",) else set()


# fastnas's earlier space: tree instinct of 2 x 2 unary ops over all layers' inputs, 2 transforms, the distance
# subtracted.
TREE_SPACE = ProgramSpace(instinct="tree", instinct_inputs=("activations", "grads", "weights"), layers="all",
                          unary_ops=2, no_op_weight=1.0, transforms=2, signs=(-1,), reductions=REDUCTIONS)


def _unary_op(rng: random.Random, space: ProgramSpace) -> str:
    names = list(UNARY_OPS)
    return rng.choices(names, weights=[space.no_op_weight if n == "no_op" else 1.0 for n in names])[0]


def random_instinct(rng: random.Random, space: ProgramSpace = ProgramSpace()) -> LinearInstinct | Instinct:
    if space.instinct == "linear":
        return LinearInstinct(input=rng.choice(space.instinct_inputs),
                              ops=tuple(_unary_op(rng, space) for _ in range(space.unary_ops)),
                              layer_reduction=rng.choice(space.layer_reductions),
                              reduction=rng.choice(space.reductions), layers=space.layers)
    return Instinct(inputs=(rng.choice(space.instinct_inputs), rng.choice(space.instinct_inputs)),
                    unary=tuple(tuple(_unary_op(rng, space) for _ in range(space.unary_ops)) for _ in range(2)),
                    binary=rng.choice(list(BINARY_OPS)), reduction=rng.choice(space.reductions), layers=space.layers)


def random_interaction(rng: random.Random, space: ProgramSpace = ProgramSpace()) -> Interaction:
    return Interaction(input=rng.choice(INTERACTION_INPUTS),
                       transforms=tuple(rng.choice(list(TRANSFORMS)) for _ in range(space.transforms)),
                       distance=rng.choice(list(DISTANCES)), weight=rng.choice(list(WEIGHTS)),
                       sign=rng.choice(space.signs))


def random_program(rng: random.Random, space: ProgramSpace = ProgramSpace()) -> Program:
    """A drawn program: which parts (among space.parts), then every gene (ops uniformly, no_op weighted)."""
    parts = rng.choice(space.parts)
    return Program(instinct=random_instinct(rng, space) if parts != "interaction" else None,
                   interaction=random_interaction(rng, space) if parts != "instinct" else None,
                   scale=rng.choice(space.scale))


def _parts_of(program: Program) -> str:
    if program.instinct is not None and program.interaction is not None:
        return "both"
    return "instinct" if program.instinct is not None else "interaction"


def _replace_item(items: tuple, index: int, value) -> tuple:
    return items[:index] + (value,) + items[index + 1:]


def _genes(program: Program, space: ProgramSpace) -> list[tuple[str, Any, Sequence, Callable[[Any], Program]]]:
    """(name, current value, choices, program with that gene set) of every gene of `program`."""
    genes: list = [("scale", program.scale, space.scale, lambda v: replace(program, scale=v))]
    part = program.instinct

    def set_instinct(**changes):
        return lambda v: replace(program, instinct=replace(part, **{k: f(v) for k, f in changes.items()}))

    if isinstance(part, LinearInstinct):
        genes.append(("instinct.input", part.input, space.instinct_inputs, set_instinct(input=lambda v: v)))
        genes += [(f"instinct.op{i}", op, list(UNARY_OPS),
                   set_instinct(ops=lambda v, i=i: _replace_item(part.ops, i, v))) for i, op in enumerate(part.ops)]
        genes.append(("instinct.layer_reduction", part.layer_reduction, space.layer_reductions,
                      set_instinct(layer_reduction=lambda v: v)))
        genes.append(("instinct.reduction", part.reduction, space.reductions, set_instinct(reduction=lambda v: v)))
    elif isinstance(part, Instinct):
        genes += [(f"instinct.input{b}", name, space.instinct_inputs,
                   set_instinct(inputs=lambda v, b=b: _replace_item(part.inputs, b, v)))
                  for b, name in enumerate(part.inputs)]
        genes += [(f"instinct.unary{b}{i}", op, list(UNARY_OPS),
                   set_instinct(unary=lambda v, b=b, i=i: _replace_item(part.unary, b,
                                                                        _replace_item(part.unary[b], i, v))))
                  for b, branch in enumerate(part.unary) for i, op in enumerate(branch)]
        genes.append(("instinct.binary", part.binary, list(BINARY_OPS), set_instinct(binary=lambda v: v)))
        genes.append(("instinct.reduction", part.reduction, space.reductions, set_instinct(reduction=lambda v: v)))
    p = program.interaction
    if p is not None:
        def set_interaction(**changes):
            return lambda v: replace(program, interaction=replace(p, **{k: f(v) for k, f in changes.items()}))

        genes.append(("interaction.input", p.input, INTERACTION_INPUTS, set_interaction(input=lambda v: v)))
        genes += [(f"interaction.transform{i}", op, list(TRANSFORMS),
                   set_interaction(transforms=lambda v, i=i: _replace_item(p.transforms, i, v)))
                  for i, op in enumerate(p.transforms)]
        genes.append(("interaction.distance", p.distance, list(DISTANCES), set_interaction(distance=lambda v: v)))
        genes.append(("interaction.weight", p.weight, list(WEIGHTS), set_interaction(weight=lambda v: v)))
        genes.append(("interaction.sign", p.sign, space.signs, set_interaction(sign=lambda v: v)))
    return genes


def mutate(program: Program, rng: random.Random, space: ProgramSpace = ProgramSpace()) -> Program:
    """Algorithm 1's MUTATE: one gene drawn at random (among those with another value allowed) gets a new value.

    The `parts` gene switches to another combination of parts among space.parts (a part that appears
    is drawn at random). The result always differs from `program`.
    """
    current = _parts_of(program)
    genes = [(name, value, [c for c in choices if c != value], apply)
             for name, value, choices, apply in _genes(program, space)]
    genes = [gene for gene in genes if gene[2]]
    other_parts = [p for p in space.parts if p != current]
    if other_parts:
        genes.append(("parts", current, other_parts, None))
    if not genes:
        raise ValueError("space: no gene of the program has another value to mutate to")
    name, _, alternatives, apply = rng.choice(genes)
    if name == "parts":
        parts = rng.choice(alternatives)
        return replace(program,
                       instinct=None if parts == "interaction" else program.instinct or random_instinct(rng, space),
                       interaction=None if parts == "instinct" else program.interaction or random_interaction(rng,
                                                                                                          space))
    return apply(rng.choice(alternatives))


def crossover(program: Program, other: Program, rng: random.Random) -> Program:
    """The authors' joint crossover (exps/search_proxy/nb201/evo_search_jointly.py): `program` with its
    instinct or its interaction part (one of the two at random) replaced by `other`'s.

    If that would leave no part (the other program lacks the chosen one and `program` has only it),
    `program` is returned unchanged.
    """
    if rng.random() < 0.5:
        child = (other.instinct, program.interaction)
    else:
        child = (program.instinct, other.interaction)
    if child == (None, None):
        return program
    return replace(program, instinct=child[0], interaction=child[1])


# --- evaluation ------------------------------------------------------------------------------------
def _apply_unary(name: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    op = UNARY_OPS[name]
    if isinstance(op, LayerReduction):
        return op.many(tensors)  # every layer in one fused foreach_reduce call
    return [op(t) for t in tensors]


def _layers(inputs: ProxyInputs, name: str, layers: str) -> list[torch.Tensor]:
    tensors = getattr(inputs, name)
    if tensors is None:
        raise ValueError(f"inputs: the program reads {name}, which were not collected; "
                         f"collect(..., layer_inputs=[..., {name!r}])")
    if layers == "conv":
        tensors = [t for t, conv in zip(tensors, inputs.is_conv) if conv]
    if not tensors:
        kinds = "Conv2d" if layers == "conv" else "Conv2d / Linear"
        raise ValueError(f"inputs: the architecture has no {kinds} layers to read {name} from")
    return tensors


def _chain(inputs: ProxyInputs, name: str, layers: str, ops: tuple[str, ...], memo: dict) -> list[torch.Tensor]:
    """The layers' `name` tensors through `ops`; every prefix is kept in `memo` for programs that start alike."""
    key = ("chain", name, layers, *ops)
    if key not in memo:
        if ops:
            memo[key] = _apply_unary(ops[-1], _chain(inputs, name, layers, ops[:-1], memo))
        else:
            memo[key] = _layers(inputs, name, layers)
    return memo[key]


def _reduce_layers(per_layer: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_layer.sum() if reduction == "sum" else per_layer.mean()


def _instinct_score(part: LinearInstinct | Instinct, inputs: ProxyInputs, memo: dict) -> torch.Tensor:
    if isinstance(part, LinearInstinct):
        tensors = _chain(inputs, part.input, part.layers, part.ops, memo)
        return _reduce_layers(foreach_reduce(tensors, "identity", part.layer_reduction), part.reduction)
    branches = [_chain(inputs, name, part.layers, ops, memo) for name, ops in zip(part.inputs, part.unary)]
    binary = BINARY_OPS[part.binary]
    per_layer = foreach_reduce([binary(a, b) for a, b in zip(*branches)], "identity", part.reduction)
    return _reduce_layers(per_layer, part.reduction)


def _interaction_inputs(name: str, inputs: ProxyInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher tensors of the interaction input, aligned to the same shape."""
    if inputs.teacher is None:
        raise ValueError("inputs: interaction proxies need the teacher's outputs (collect(..., teacher=...))")
    student, teacher = inputs.student, inputs.teacher
    if student.logits.shape[0] != teacher.logits.shape[0]:
        raise ValueError(f"inputs: teacher outputs are for a batch of {teacher.logits.shape[0]}, "
                         f"the student's for {student.logits.shape[0]}; use the same batch for both")
    if name == "logits":
        if student.logits.shape != teacher.logits.shape:
            raise ValueError(f"inputs: the teacher predicts {teacher.logits.shape[1]} classes, the student "
                             f"{student.logits.shape[1]}")
        return student.logits, teacher.logits
    if name == "embedding":
        s, t = student.embedding, teacher.embedding
    else:
        if not student.features or not teacher.features:
            raise ValueError("inputs: the feature input needs student and teacher returning (logits, [feature maps])")
        s, t = student.features[-1], teacher.features[-1]
        if s.dim() == 4 and t.dim() == 4 and s.shape[2:] != t.shape[2:]:
            # fastnas's choice: the larger map is average-pooled to the smaller one's resolution.
            size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
            s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
    width = min(s.shape[1], t.shape[1])  # the narrower channels, as the authors' inter_fd
    return s[:, :width], t[:, :width]


def _transformed(part: Interaction, inputs: ProxyInputs, memo: dict,
                 count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher after the first `count` transforms (all by default); prefixes kept in `memo`."""
    count = len(part.transforms) if count is None else count
    key = ("pair", part.input, *part.transforms[:count])
    if key not in memo:
        if count == 0:
            memo[key] = _interaction_inputs(part.input, inputs)
        else:
            s, t = _transformed(part, inputs, memo, count - 1)
            op = TRANSFORMS[part.transforms[count - 1]]
            memo[key] = (op(s), op(t))
    return memo[key]


def _interaction_score(part: Interaction, inputs: ProxyInputs, memo: dict) -> torch.Tensor:
    s, t = _transformed(part, inputs, memo)
    if s.shape != t.shape:
        raise RuntimeError(f"transforms give the student {tuple(s.shape)} and the teacher {tuple(t.shape)}")
    return part.sign * WEIGHTS[part.weight](DISTANCES[part.distance](s, t), t, s)


def _finite_or_nan(value: torch.Tensor) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def part_scores(program: Program, inputs: ProxyInputs, memo: dict | None = None) -> tuple[float, float]:
    """(instinct, interaction) scores of one architecture: 0.0 for a missing part, NaN for an invalid one.

    Raises ValueError when `inputs` lack what the program reads (no teacher, mismatched batch,
    a per-layer list not collected).
    """
    memo = {} if memo is None else memo
    scores = []
    for part, function in ((program.instinct, _instinct_score), (program.interaction, _interaction_score)):
        if part is None:
            scores.append(0.0)
            continue
        try:
            scores.append(_finite_or_nan(function(part, inputs, memo).double()))
        except torch.OutOfMemoryError:  # a RuntimeError too, but the device's limit, not the program's fault
            raise
        except (RuntimeError, IndexError):  # an op undefined on these shapes (e.g. a 0-d tensor given to a map op)
            scores.append(math.nan)
    return scores[0], scores[1]


def score(program: Program, inputs: ProxyInputs, memo: dict | None = None) -> float:
    """The proxy score of one architecture (NaN when the program is invalid on it).

    `memo` shares chain results between programs scored on the same `inputs`. A program with
    `scale` needs the other architectures: use `score_population`.
    """
    if program.scale:
        raise ValueError("program: min-max scaled parts need every architecture; score it with score_population")
    instinct, interaction = part_scores(program, inputs, memo)
    return instinct + interaction  # NaN when a part is


def min_max(values: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the last dim, as the authors' --scale (NaN for a constant row)."""
    low, high = values.min(dim=-1, keepdim=True).values, values.max(dim=-1, keepdim=True).values
    return (values - low) / (high - low)


def combine_parts(programs: Sequence[Program], parts: torch.Tensor) -> torch.Tensor:
    """Scores [P, N] from part scores [P, N, 2] (instinct, interaction): their sum, each part of a program
    with `scale` min-max scaled over the N architectures first."""
    parts = parts.clone()
    for p, program in enumerate(programs):
        if program.scale:
            present = [program.instinct is not None, program.interaction is not None]
            for i in (0, 1):
                if present[i]:
                    parts[p, :, i] = min_max(parts[p, :, i])
    return parts.sum(dim=-1)


def score_population(programs: Sequence[Program], architectures: Sequence[ProxyInputs]) -> torch.Tensor:
    """Scores [P, N] (float64) of P programs on N architectures' cached inputs; NaN marks invalid.

    Nothing is recomputed of a network: every program reads the same cached tensors, and
    programs that share an input and its first ops share those results (one memo per
    architecture).
    """
    if not programs:
        raise ValueError("programs: expected at least one program")
    if not architectures:
        raise ValueError("architectures: expected the inputs of at least one architecture")
    parts = torch.empty(len(programs), len(architectures), 2, dtype=torch.float64)
    for n, inputs in enumerate(architectures):
        memo: dict = {}
        for p, program in enumerate(programs):
            parts[p, n] = torch.tensor(part_scores(program, inputs, memo), dtype=torch.float64)
    return combine_parts(programs, parts)


def valid_rows(scores: torch.Tensor) -> torch.Tensor:
    """[P] bool: rows with every score finite and not all equal (a constant proxy ranks nothing)."""
    finite = torch.isfinite(scores).all(dim=1)
    spread = scores.max(dim=1).values > scores.min(dim=1).values
    return finite & spread
