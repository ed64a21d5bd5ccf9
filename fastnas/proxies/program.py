"""Auto-DAS proxies as programs: a small computation graph over the ops of `autodas_ops`.

A `Program` has up to two parts whose scores add up, as in the paper's searched
proxy (Eq. 4: an interaction distance plus an instinct term):

- instinct (the authors' tree structure): two branches, each one student input
  (activations, grads or weights of every layer) through two unary ops; a binary
  op joins the branches layer by layer; each layer's result is reduced to one
  number and the layers are reduced again (`reduction`: sum or mean, both times).
- interaction (the authors' parallel structure): one input pair (the last stage
  feature maps, the embeddings or the logits of student and teacher), the same
  two transforms applied to both, then a distance per sample; the part scores
  minus the mean distance, so a student closer to its teacher scores higher
  (DisWOT's sign). When the transformed student and teacher differ in size (the
  teacher is wider), both are replaced by their row-normalized batch Gram
  matrices [B, B], DisWOT's relation, before the distance.

A program is a frozen dataclass, serialized to JSON (`to_json` / `from_json`) and
printed as a formula (`formula`). `score_population` evaluates P programs on N
architectures' cached `ProxyInputs` into a [P, N] tensor, sharing the branch
computations of programs that start alike; an invalid result (NaN, inf, an op
that fails on a shape) is NaN.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..ops import foreach_reduce
from .autodas_ops import (BINARY_OPS, DISTANCES, INSTINCT_INPUTS, INTERACTION_INPUTS, TRANSFORMS, UNARY_OPS,
                          LayerReduction)
from .inputs import ProxyInputs

REDUCTIONS = ("sum", "mean")
UNARY_PER_BRANCH = 2  # the authors' tree: two unary ops on each of two inputs
TRANSFORMS_PER_PROGRAM = 2  # our choice (the authors sample 3): Eq. 4 and DisWOT each need at most two

INPUT_SYMBOLS = {"activations": "A_l", "grads": "G_l", "weights": "W_l",
                 "feature": "F", "embedding": "E", "logits": "P"}


@dataclass(frozen=True)
class Instinct:
    """sum or mean over layers l of reduction(binary(u1b(u1a(inputs[0]_l)), u2b(u2a(inputs[1]_l))))."""

    inputs: tuple[str, str]
    unary: tuple[tuple[str, str], tuple[str, str]]
    binary: str
    reduction: str


@dataclass(frozen=True)
class Interaction:
    """-mean over samples of distance(t2(t1(student input)), t2(t1(teacher input)))."""

    input: str
    transforms: tuple[str, str]
    distance: str


@dataclass(frozen=True)
class Program:
    """One Auto-DAS proxy: instinct part, interaction part, or both (their scores add)."""

    instinct: Instinct | None = None
    interaction: Interaction | None = None

    def __post_init__(self) -> None:
        if self.instinct is None and self.interaction is None:
            raise ValueError("program: needs an instinct part, an interaction part or both")
        if self.instinct is not None:
            _check_names("instinct.inputs", self.instinct.inputs, INSTINCT_INPUTS, 2)
            for branch in self.instinct.unary:
                _check_names("instinct.unary", branch, UNARY_OPS, UNARY_PER_BRANCH)
            if len(self.instinct.unary) != 2:
                raise ValueError(f"instinct.unary: expected 2 branches, got {len(self.instinct.unary)}")
            _check_names("instinct.binary", (self.instinct.binary,), BINARY_OPS, 1)
            _check_names("instinct.reduction", (self.instinct.reduction,), REDUCTIONS, 1)
        if self.interaction is not None:
            _check_names("interaction.input", (self.interaction.input,), INTERACTION_INPUTS, 1)
            _check_names("interaction.transforms", self.interaction.transforms, TRANSFORMS, TRANSFORMS_PER_PROGRAM)
            _check_names("interaction.distance", (self.interaction.distance,), DISTANCES, 1)

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"instinct": None, "interaction": None}
        if self.instinct is not None:
            out["instinct"] = {"inputs": list(self.instinct.inputs),
                               "unary": [list(branch) for branch in self.instinct.unary],
                               "binary": self.instinct.binary, "reduction": self.instinct.reduction}
        if self.interaction is not None:
            out["interaction"] = {"input": self.interaction.input,
                                  "transforms": list(self.interaction.transforms),
                                  "distance": self.interaction.distance}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Program":
        if not isinstance(data, dict) or set(data) - {"instinct", "interaction"}:
            raise ValueError(f"program: expected a dict with keys 'instinct' and 'interaction', got {data!r}")
        instinct = interaction = None
        try:
            if data.get("instinct") is not None:
                part = data["instinct"]
                instinct = Instinct(inputs=tuple(part["inputs"]), unary=tuple(tuple(b) for b in part["unary"]),
                                    binary=part["binary"], reduction=part["reduction"])
            if data.get("interaction") is not None:
                part = data["interaction"]
                interaction = Interaction(input=part["input"], transforms=tuple(part["transforms"]),
                                          distance=part["distance"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"program: malformed part ({error!r}) in {data!r}") from None
        return cls(instinct, interaction)

    @classmethod
    def from_json(cls, text: str) -> "Program":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"program: not valid JSON ({error})") from None
        return cls.from_dict(data)

    # --- printing ------------------------------------------------------------------------------
    def formula(self) -> str:
        """The proxy as a formula, e.g. ``sum_l sum(multiply(abslog(G_l), W_l)) - mean_b kl(softmax(F_S), ...)``."""
        terms = []
        if self.instinct is not None:
            p = self.instinct
            a, b = (_chain(branch, INPUT_SYMBOLS[name]) for name, branch in zip(p.inputs, p.unary))
            terms.append(f"{p.reduction}_l {p.reduction}({p.binary}({a}, {b}))")
        if self.interaction is not None:
            p = self.interaction
            symbol = INPUT_SYMBOLS[p.input]
            student, teacher = (_chain(p.transforms, symbol + side) for side in ("_S", "_T"))
            terms.append(f"- mean_b {p.distance}({student}, {teacher})")
        return " ".join(terms)

    def __str__(self) -> str:
        return self.formula()


def _check_names(field: str, names: Sequence[str], valid, count: int) -> None:
    if len(names) != count:
        raise ValueError(f"{field}: expected {count} name(s), got {list(names)}")
    for name in names:
        if name not in valid:
            raise ValueError(f"{field}: unknown op or input {name!r}; valid: {', '.join(valid)}")


def _chain(ops: Sequence[str], symbol: str) -> str:
    text = symbol
    for op in ops:
        if op != "no_op":
            text = f"{op}({text})"
    return text


# --- random programs and mutation ----------------------------------------------------------------
def random_instinct(rng: random.Random) -> Instinct:
    return Instinct(inputs=(rng.choice(INSTINCT_INPUTS), rng.choice(INSTINCT_INPUTS)),
                    unary=tuple(tuple(rng.choice(list(UNARY_OPS)) for _ in range(UNARY_PER_BRANCH))
                                for _ in range(2)),
                    binary=rng.choice(list(BINARY_OPS)), reduction=rng.choice(REDUCTIONS))


def random_interaction(rng: random.Random) -> Interaction:
    return Interaction(input=rng.choice(INTERACTION_INPUTS),
                       transforms=tuple(rng.choice(list(TRANSFORMS)) for _ in range(TRANSFORMS_PER_PROGRAM)),
                       distance=rng.choice(list(DISTANCES)))


PARTS = ("both", "instinct", "interaction")


def check_parts(parts: Sequence[str]) -> None:
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts: expected a non-empty subset of {PARTS}, got {list(parts)}")


def random_program(rng: random.Random, parts: Sequence[str] = PARTS) -> Program:
    """A uniformly drawn program: which parts (among `parts`), then every node uniformly among its ops."""
    check_parts(parts)
    parts = rng.choice(list(parts))
    return Program(instinct=random_instinct(rng) if parts != "interaction" else None,
                   interaction=random_interaction(rng) if parts != "instinct" else None)


def _nodes(program: Program, can_switch_parts: bool) -> list[str]:
    """The mutable nodes of `program`: which parts it has (when another is allowed), and every
    input / op of each part."""
    nodes = ["parts"] if can_switch_parts else []
    if program.instinct is not None:
        nodes += ["instinct.input0", "instinct.input1", "instinct.binary", "instinct.reduction"]
        nodes += [f"instinct.unary{b}{i}" for b in range(2) for i in range(UNARY_PER_BRANCH)]
    if program.interaction is not None:
        nodes += ["interaction.input", "interaction.distance"]
        nodes += [f"interaction.transform{i}" for i in range(TRANSFORMS_PER_PROGRAM)]
    return nodes


def _replace_item(items: tuple, index: int, value) -> tuple:
    return items[:index] + (value,) + items[index + 1:]


def mutate(program: Program, rng: random.Random, parts: Sequence[str] = PARTS) -> Program:
    """Algorithm 1's MUTATE: one node of the graph drawn at random gets a new random op or input.

    The `parts` node switches to another combination of parts among `parts` (a part that
    appears is drawn at random). The result always differs from `program`.
    """
    check_parts(parts)
    current = "both" if program.instinct and program.interaction else \
        "instinct" if program.instinct else "interaction"
    node = rng.choice(_nodes(program, can_switch_parts=any(p != current for p in parts)))
    if node == "parts":
        parts = rng.choice([p for p in parts if p != current])
        return Program(instinct=None if parts == "interaction" else program.instinct or random_instinct(rng),
                       interaction=None if parts == "instinct" else program.interaction or random_interaction(rng))
    part_name, field = node.split(".")
    part = getattr(program, part_name)

    def other(current: str, choices) -> str:
        return rng.choice([c for c in choices if c != current])

    if field.startswith("input") and part_name == "instinct":
        i = int(field[-1])
        part = replace(part, inputs=_replace_item(part.inputs, i, other(part.inputs[i], INSTINCT_INPUTS)))
    elif field.startswith("unary"):
        b, i = int(field[-2]), int(field[-1])
        branch = _replace_item(part.unary[b], i, other(part.unary[b][i], UNARY_OPS))
        part = replace(part, unary=_replace_item(part.unary, b, branch))
    elif field == "binary":
        part = replace(part, binary=other(part.binary, BINARY_OPS))
    elif field == "reduction":
        part = replace(part, reduction=other(part.reduction, REDUCTIONS))
    elif field == "input":
        part = replace(part, input=other(part.input, INTERACTION_INPUTS))
    elif field == "distance":
        part = replace(part, distance=other(part.distance, DISTANCES))
    else:  # transformI
        i = int(field[-1])
        part = replace(part, transforms=_replace_item(part.transforms, i, other(part.transforms[i], TRANSFORMS)))
    return replace(program, **{part_name: part})


# --- evaluation ------------------------------------------------------------------------------------
def _apply_unary(name: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    op = UNARY_OPS[name]
    if isinstance(op, LayerReduction):
        return op.many(tensors)  # every layer in one fused foreach_reduce call
    return [op(t) for t in tensors]


def _layers(inputs: ProxyInputs, name: str) -> list[torch.Tensor]:
    layers = getattr(inputs, name)
    if not layers:
        raise ValueError(f"inputs: the architecture has no Conv2d / Linear layers to read {name} from")
    return layers


def _instinct_score(part: Instinct, inputs: ProxyInputs, memo: dict) -> torch.Tensor:
    branches = []
    for name, ops in zip(part.inputs, part.unary):
        key = ("branch", name, *ops)
        if key not in memo:
            tensors = _layers(inputs, name)
            for op in ops:
                tensors = _apply_unary(op, tensors)
            memo[key] = tensors
        branches.append(memo[key])
    binary = BINARY_OPS[part.binary]
    per_layer = foreach_reduce([binary(a, b) for a, b in zip(*branches)], "identity", part.reduction)
    return per_layer.sum() if part.reduction == "sum" else per_layer.mean()


def _interaction_inputs(name: str, inputs: ProxyInputs) -> tuple[torch.Tensor, torch.Tensor]:
    if inputs.teacher is None:
        raise ValueError("inputs: interaction proxies need the teacher's outputs (collect(..., teacher=...))")
    student, teacher = inputs.student, inputs.teacher
    if student.logits.shape[0] != teacher.logits.shape[0]:
        raise ValueError(f"inputs: teacher outputs are for a batch of {teacher.logits.shape[0]}, "
                         f"the student's for {student.logits.shape[0]}; use the same batch for both")
    if name == "logits":
        return student.logits, teacher.logits
    if name == "embedding":
        return student.embedding, teacher.embedding
    if not student.features or not teacher.features:
        raise ValueError("inputs: the feature input needs student and teacher returning (logits, [feature maps])")
    s, t = student.features[-1], teacher.features[-1]
    if s.dim() == 4 and t.dim() == 4 and s.shape[2:] != t.shape[2:]:
        # Our choice: the larger map is average-pooled to the smaller one's resolution.
        size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
    return s, t


def _relation(x: torch.Tensor) -> torch.Tensor:
    """Row-normalized batch Gram matrix [B, B] (DisWOT's relation) of [B, D] rows."""
    return F.normalize(x @ x.t(), dim=1)


def _interaction_score(part: Interaction, inputs: ProxyInputs, memo: dict) -> torch.Tensor:
    key = ("pair", part.input, *part.transforms)
    if key not in memo:
        s, t = _interaction_inputs(part.input, inputs)
        for op in part.transforms:
            s, t = TRANSFORMS[op](s), TRANSFORMS[op](t)
        s, t = s.flatten(1), t.flatten(1)
        if s.shape != t.shape:
            s, t = _relation(s), _relation(t)
        memo[key] = (s.contiguous(), t.contiguous())
    s, t = memo[key]
    return -DISTANCES[part.distance](s, t).mean()


def score(program: Program, inputs: ProxyInputs, memo: dict | None = None) -> float:
    """The proxy score of one architecture (NaN when the program is invalid on it).

    `memo` shares branch results between programs scored on the same `inputs`.
    Raises ValueError when `inputs` lack what the program reads (no teacher, mismatched batch).
    """
    memo = {} if memo is None else memo
    total = torch.zeros((), dtype=torch.float64)
    try:
        if program.instinct is not None:
            total = total + _instinct_score(program.instinct, inputs, memo).double()
        if program.interaction is not None:
            total = total + _interaction_score(program.interaction, inputs, memo).double()
    except torch.OutOfMemoryError:  # a RuntimeError too, but the device's limit, not the program's fault
        raise
    except RuntimeError:  # an op undefined on these shapes (e.g. a 0-d tensor given to a map op)
        return float("nan")
    value = float(total)
    return value if torch.isfinite(torch.tensor(value)) else float("nan")


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
    scores = torch.empty(len(programs), len(architectures), dtype=torch.float64)
    for n, inputs in enumerate(architectures):
        memo: dict = {}
        for p, program in enumerate(programs):
            scores[p, n] = score(program, inputs, memo)
    return scores


def valid_rows(scores: torch.Tensor) -> torch.Tensor:
    """[P] bool: rows with every score finite and not all equal (a constant proxy ranks nothing)."""
    finite = torch.isfinite(scores).all(dim=1)
    spread = scores.max(dim=1).values > scores.min(dim=1).values
    return finite & spread
