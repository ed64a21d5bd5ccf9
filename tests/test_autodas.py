"""Auto-DAS: every op of Table 1 (and of the authors' code) on a hand-computed case, programs (JSON, formula,
validity, batched scoring, mutation, crossover), Algorithm 1 (determinism, finding a known proxy, resume,
crossover, Spearman fitness) and the commands' bad inputs. The released programs: test_autodas_programs.py."""

import json
import math
import random
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from fastnas.cli import main as fastnas
from fastnas.proxies import collect, network_outputs
from fastnas.proxies import score as score_proxy
from fastnas.proxies import program as program_module
from fastnas.proxies.autodas_ops import BINARY_OPS, DISTANCES, TRANSFORMS, UNARY_OPS, WEIGHTS
from fastnas.proxies.program import (TREE_SPACE, Instinct, Interaction, LinearInstinct, Program, ProgramSpace,
                                     crossover, mutate, random_program, score, score_population, valid_rows)
from fastnas.proxies.registry import get_proxy
from fastnas.proxies.released import RELEASED
from fastnas.runs import RunFolder
from fastnas.strategies.autodas import (ProxySearch, ProxySearchConfig, fitness, parse_count, search_proxy,
                                        search_student, split_indices)

E = math.e


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def softmax(values):
    total = sum(math.exp(v) for v in values)
    return [math.exp(v) / total for v in values]


# x = [-1, 0, 2]: each unary op's expected output, worked out by hand.
X = [-1.0, 0.0, 2.0]
UNARY_CASES = {
    "exp": [1 / E, 1.0, E ** 2],
    "mish": [v * math.tanh(math.log1p(math.exp(v))) for v in X],
    "leaky_relu": [-0.01, 0.0, 2.0],
    "relu": [0.0, 0.0, 2.0],
    "tanh": [math.tanh(v) for v in X],
    "softmax": softmax(X),
    "sigmoid": [sigmoid(v) for v in X],
    "pow2": [1.0, 0.0, 4.0],
    "pow4": [1.0, 0.0, 16.0],
    "log": [-math.log(1 + 1e-9), 0.0, math.log(2 + 1e-9)],
    "abslog": [0.0, 0.0, math.log(2)],
    "abssqrt": [1.0, 0.0, math.sqrt(2)],
    "l1_norm": 1.0,  # (1 + 0 + 2) / 3
    "revert": [1.0, 0.0, -2.0],
    "min_max": [0.0, 1 / 3, 1.0],
    "to_mean": 1 / 3,
    "to_std": math.sqrt(14 / 9),  # deviations -4/3, -1/3, 5/3 from the mean 1/3
    "invert": [1 / (-1 + 1e-9), 1e9, 1 / (2 + 1e-9)],
    "ln_norm": math.sqrt(5),
    "normalized_sum": 1 / 3,
    "no_op": X,
    "abs": [1.0, 0.0, 2.0],
    "logsoftmax": [math.log(p) for p in softmax(X)],
    "normalize": [(v - 1 / 3) / math.sqrt(7 / 3) for v in X],  # unbiased variance (16 + 1 + 25) / 9 / 2
    "frobenius_norm": math.sqrt(5),
    "sqrt": [0.0, 0.0, math.sqrt(2)],  # the authors' sqrt: negatives set to 0
    "to_sum": 1.0,
}


def test_unary_table_is_covered():
    assert set(UNARY_CASES) == set(UNARY_OPS)


@pytest.mark.parametrize("name", sorted(UNARY_CASES))
def test_unary_op(name):
    out = UNARY_OPS[name](torch.tensor(X, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(UNARY_CASES[name], dtype=torch.float64), rtol=1e-6, atol=1e-9)


BINARY_CASES = {"sum": [4.0, 6.0], "subtract": [-2.0, -2.0], "multiply": [3.0, 8.0],
                "divide": [1 / (3 + 1e-9), 2 / (4 + 1e-9)], "dot": 11.0}


@pytest.mark.parametrize("name", sorted(BINARY_OPS))
def test_binary_op(name):
    a, b = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(BINARY_OPS[name](a, b), torch.tensor(BINARY_CASES[name], dtype=torch.float64))


def test_binary_op_on_different_shapes_uses_the_means():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([[3.0, 5.0, 7.0]])
    assert BINARY_OPS["multiply"](a, b).item() == pytest.approx(1.5 * 5.0)


X2 = [[1.0, -2.0], [3.0, 0.0]]  # [B=2, C=2]
BN = 1 / math.sqrt(1 + 1e-5)


def elementwise(fn):
    return [[fn(v) for v in row] for row in X2]


TRANSFORM_CASES_2D = {
    "tanh": elementwise(math.tanh),
    "log": elementwise(lambda v: math.copysign(math.log(abs(v) + 1e-9), v) if v else 0.0),
    "sqrt": elementwise(lambda v: math.sqrt(abs(v))),
    "batchnorm": [[-BN, -BN], [BN, BN]],  # channel 0: [1, 3] -> mean 2, var 1; channel 1: [-2, 0]
    "min_max": [[0.6, 0.0], [1.0, 0.4]],
    "norm": [[1 / math.sqrt(5), -2 / math.sqrt(5)], [1.0, 0.0]],
    "softmax": [softmax([1.0, -2.0]), softmax([3.0, 0.0])],
    "exp": elementwise(math.exp),
    "mish": elementwise(lambda v: v * math.tanh(math.log1p(math.exp(v)))),
    "leaky_relu": [[1.0, -0.02], [3.0, 0.0]],
    "mask": X2,  # masks act on maps only
    "no_op": X2,
    "bmm": X2,  # a channel Gram needs a map
    "mm": [[5.0, 3.0], [3.0, 9.0]],
    "scale": elementwise(lambda v: (v + 1) / 2),
    "multi_scale": X2,
    "local": X2,
    "batch": X2,
    "channel": X2,
    "satt": X2,
    "natt": [[2 * p for p in pair] for pair in zip(softmax([2.0, 6.0]), softmax([-4.0, 0.0]))],  # softmax(x/T) over B
    "catt": [[2 * p for p in softmax([2.0, -4.0])], [2 * p for p in softmax([6.0, 0.0])]],  # over C, T = 0.5
    "sigmoid": elementwise(sigmoid),
    "relu": [[1.0, 0.0], [3.0, 0.0]],
    "abs": [[1.0, 2.0], [3.0, 0.0]],
    "pow2": [[1.0, 4.0], [9.0, 0.0]],
    "softmax_N": [list(row) for row in zip(*(softmax([1.0, 3.0]), softmax([-2.0, 0.0])))],  # over the batch
    "norm_N": [[1 / math.sqrt(10), -1.0], [3 / math.sqrt(10), 0.0]],  # each column to unit l2 norm
    "multi_scale_r4": X2,
}


def test_transform_table_is_covered():
    assert set(TRANSFORM_CASES_2D) | {"drop"} == set(TRANSFORMS)  # drop's fixed pattern: test_map_transforms


@pytest.mark.parametrize("name", sorted(TRANSFORM_CASES_2D))
def test_transform_on_rows(name):
    out = TRANSFORMS[name](torch.tensor(X2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor(TRANSFORM_CASES_2D[name], dtype=torch.float64), rtol=1e-6,
                               atol=1e-9)


def test_map_transforms():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # [B=1, C=2, H=1, W=2]
    torch.testing.assert_close(TRANSFORMS["bmm"](f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]))
    assert TRANSFORMS["batch"](f).tolist() == [[1.0, 2.0, 3.0, 4.0]]
    assert TRANSFORMS["channel"](f).tolist() == [[[1.0, 2.0], [3.0, 4.0]]]
    assert TRANSFORMS["multi_scale"](torch.tensor([[[[1.0, 5.0], [3.0, 2.0]]]])).tolist() == [[[[5.0]]]]
    assert TRANSFORMS["multi_scale_r4"](torch.arange(25.0).view(1, 1, 5, 5)).tolist() == [[[[18.0, 19.0],
                                                                                           [23.0, 24.0]]]]
    patches = TRANSFORMS["local"](torch.arange(8.0).view(1, 1, 2, 4))
    assert patches.tolist() == [[[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]]
    # satt: mean_c |x| = [2, 3] over the two positions; H W softmax(. / 0.5)
    expected = [2 * p for p in softmax([4.0, 6.0])]
    torch.testing.assert_close(TRANSFORMS["satt"](f), torch.tensor([expected]))
    # catt: mean_hw |x| = [1.5, 3.5] per channel; C softmax(. / 0.5)
    torch.testing.assert_close(TRANSFORMS["catt"](f), torch.tensor([[2 * p for p in softmax([3.0, 7.0])]]))
    big = torch.randn(4, 8, 4, 4)
    masked = TRANSFORMS["mask"](big)
    assert torch.equal(masked, TRANSFORMS["mask"](big))  # the same pattern every call
    kept = masked != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # whole positions, all channels alike
    dropped = TRANSFORMS["drop"](big)
    ratio = dropped / big
    assert torch.all((ratio.abs() < 1e-6) | ((ratio - 1 / 0.9).abs() < 1e-5))


def tempered_kl(temperature):
    """T^2 KL(softmax(t / T) || softmax(s / T)) of s = [1, 2], t = [2, 0]."""
    p, q = softmax([2.0 / temperature, 0.0]), softmax([1.0 / temperature, 2.0 / temperature])
    return temperature ** 2 * sum(a * math.log(a / b) for a, b in zip(p, q))


DIST_CASES = {  # s = [[1, 2]], t = [[2, 0]]: one sample
    "l1": 3.0, "l2": math.sqrt(5), "cosine": 1 - 2 / (math.sqrt(5) * 2), "pearson": 2.0, "kl": tempered_kl(1.0),
    "hard": math.log(E + E ** 2) - 1,  # teacher's class 0; -log softmax(s)[0]
    "multiply": 1.0,  # mean of [2, 0]
    "kl_T1": tempered_kl(1.0), "kl_T4": tempered_kl(4.0), "kl_T8": tempered_kl(8.0),
    "l1_loss": 1.5,  # mean of |[-1, 2]|
    "mse_loss": 2.5,
}


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_distance(name):
    s, t = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    assert DISTANCES[name](s, t).item() == pytest.approx(DIST_CASES[name], rel=1e-6)


def test_distances_over_the_batch():
    s = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    assert DISTANCES["l1"](s, t).item() == pytest.approx((3.0 + 1.0) / 2)  # per sample, then the batch mean
    assert DISTANCES["l1_loss"](s, t).item() == pytest.approx(4.0 / 4)  # the mean over every element
    # kl_T on a map: softmax over channels at each position, summed over positions, / B
    maps_s, maps_t = s.T.reshape(1, 2, 1, 2), t.T.reshape(1, 2, 1, 2)
    expected = sum(tempered_kl_rows(a, b) for a, b in zip(s.tolist(), t.tolist()))
    assert DISTANCES["kl_T1"](maps_s, maps_t).item() == pytest.approx(expected)


def tempered_kl_rows(s_row, t_row):
    p, q = softmax(t_row), softmax(s_row)
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_weights():
    d = torch.tensor(0.5, dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    s = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    assert WEIGHTS["w1_teacher"](d, t, s).item() == 0.5
    # column cosines across the batch: column 0 (1, 0).(1, 1) / sqrt 2, column 1 (0, 2).(1, 1) / (2 sqrt 2)
    assert WEIGHTS["w100_teacher_student"](d, t, s).item() == pytest.approx(0.5 * 100 * (1 / math.sqrt(2)))


# --- programs --------------------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self, width: int, depth: int = 2):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else width, width, 3, padding=1) for i in range(depth)])
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        features = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            features.append(x)
        return self.fc(x.mean((2, 3))), features


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 1, 6, 6, generator=gen), torch.randint(0, 10, (16,), generator=gen)


ALL_LAYER_INPUTS = ["weights", "grads", "activations", "outputs", "virtual_grads"]


@pytest.fixture(scope="module")
def archs(batch):
    images, labels = batch
    torch.manual_seed(0)
    teacher = network_outputs(Tiny(12, 3), images)
    out = []
    for i in range(12):
        torch.manual_seed(i)
        out.append(collect(Tiny(2 + i % 6, 1 + i % 3), images, labels, teacher, layer_inputs=ALL_LAYER_INPUTS))
    return out


TREE = Program(instinct=Instinct(("grads", "grads"), (("softmax", "ln_norm"), ("no_op", "no_op")), "sum", "mean"),
               interaction=Interaction("feature", ("batchnorm", "no_op"), "kl"))
LINEAR = Program(instinct=LinearInstinct("outputs", ("abs", "to_mean")),
                 interaction=Interaction("embedding", ("norm_N", "relu", "pow2"), "mse_loss", "w100_teacher_student",
                                         1),
                 scale=True)


def test_json_round_trip_and_formula():
    assert Program.from_json(TREE.to_json()) == TREE and Program.from_json(LINEAR.to_json()) == LINEAR
    assert TREE.formula() == ("mean_l[all] mean(sum(ln_norm(softmax(G_l)), G_l)) "
                              "- mean_b kl(batchnorm(F_S), batchnorm(F_T))")
    assert LINEAR.formula() == ("minmax[sum_l[conv] mean(to_mean(abs(O_l)))] + minmax[100 cos_b(T, S) * "
                                "mse_loss(pow2(relu(norm_N(E_S))), pow2(relu(norm_N(E_T))))]")
    interaction_only = Program(interaction=Interaction("logits", ("exp",), "l1", sign=1))
    assert interaction_only.formula() == "mean_b l1(exp(P_S), exp(P_T))"
    # A program written before the sign, the weight and the linear structure were genes: the old defaults.
    old = '{"instinct": {"inputs": ["grads", "weights"], "unary": [["exp", "exp"], ["exp", "exp"]], ' \
          '"binary": "sum", "reduction": "sum"}, "interaction": {"input": "logits", "transforms": ["tanh", "exp"], ' \
          '"distance": "l1"}}'
    program = Program.from_json(old)
    assert program.interaction.sign == -1 and program.interaction.weight == "w1_teacher"
    assert isinstance(program.instinct, Instinct) and program.instinct.layers == "all" and not program.scale


@pytest.mark.parametrize("space", [ProgramSpace(), TREE_SPACE, ProgramSpace(signs=(1,), scale=(False, True))])
def test_random_programs_and_mutations(space):
    rng = random.Random(0)
    for _ in range(60):
        program = random_program(rng, space)
        assert Program.from_dict(json.loads(program.to_json())) == program
        assert isinstance(program.instinct, LinearInstinct if space.instinct == "linear" else Instinct) or \
            program.instinct is None
        if program.instinct is not None:
            assert program.instinct.layers == space.layers
        if program.interaction is not None:
            assert program.interaction.sign in space.signs and len(program.interaction.transforms) == space.transforms
        mutated = mutate(program, rng, space)
        assert mutated != program
        differing = sum(a != b for a, b in zip(genes(program), genes(mutated)))
        assert differing == 1 or (program.instinct is None) != (mutated.instinct is None) or \
            (program.interaction is None) != (mutated.interaction is None)  # one gene, or the parts changed


def genes(program):
    """Every gene of a program, flat (None where a part is missing)."""
    def frozen(value):
        return tuple(frozen(v) for v in value) if isinstance(value, list) else value

    d = program.to_dict()
    flat = [d["scale"]]
    for part in ("instinct", "interaction"):
        flat += [None] if d[part] is None else [frozen(value) for value in d[part].values()]
    return flat


def test_mutation_draws_every_gene():
    rng, space = random.Random(1), ProgramSpace(signs=(1, -1), scale=(False, True))
    program = Program(instinct=LinearInstinct("grads", ("tanh", "no_op", "abs", "exp")),
                      interaction=Interaction("logits", ("exp", "tanh", "abs"), "l1", "w1_teacher", 1))
    changed = set()
    for _ in range(400):
        mutated = mutate(program, rng, space)
        for i, (a, b) in enumerate(zip(genes(program), genes(mutated))):
            if a != b:
                changed.add(i)
    # scale; instinct input and ops (one entry for the tuple; the reductions and the layers are fixed by the
    # space); interaction input, transforms, distance, weight, sign
    assert {0, 2, 3, 7, 8, 9, 10, 11} <= changed


def test_crossover_swaps_one_part():
    a = Program(instinct=LinearInstinct("grads", ("tanh",)), interaction=Interaction("logits", ("exp",), "l1"))
    b = Program(instinct=LinearInstinct("weights", ("abs",)), interaction=Interaction("embedding", ("relu",), "kl"))
    children = {crossover(a, b, random.Random(seed)) for seed in range(20)}
    assert children == {replace(a, instinct=b.instinct), replace(a, interaction=b.interaction)}
    lone = Program(instinct=LinearInstinct("grads", ("tanh",)))
    no_instinct = Program(interaction=Interaction("logits", ("exp",), "l1"))
    assert {crossover(lone, no_instinct, random.Random(seed)) for seed in range(20)} == \
        {lone, Program(instinct=lone.instinct, interaction=no_instinct.interaction)}


@pytest.mark.parametrize("text, field", [
    ('{"instinct": null, "interaction": {"input": "logits", "transforms": ["tanh", "nope"], "distance": "l1"}}',
     "nope"),
    ('{"instinct": {"inputs": ["weights", "bias"], "unary": [["exp", "exp"], ["exp", "exp"]], "binary": "sum", '
     '"reduction": "sum"}, "interaction": null}', "bias"),
    ('{"instinct": {"structure": "ring", "input": "grads"}}', "instinct.structure"),
    ('{"instinct": {"structure": "linear", "input": "grads", "ops": []}}', "instinct.ops"),
    ('{"instinct": {"structure": "linear", "input": "grads", "ops": ["tanh"], "layers": "fc"}}', "instinct.layers"),
    ('{"interaction": {"input": "logits", "transforms": ["exp"], "distance": "l1", "sign": 2}}', "interaction.sign"),
    ('{"interaction": {"input": "logits", "transforms": ["exp"], "distance": "l1", "weight": "w7"}}',
     "interaction.weight"),
    ('{"interaction": {"input": "logits", "transforms": ["exp"], "distance": "l1"}, "scale": "yes"}', "scale"),
    ('{"instinct": null, "interaction": null}', "needs an instinct part"),
    ('{"interaction": {"input": "logits"}}', "malformed"),
    ("not json", "not valid JSON"),
])
def test_bad_program_json(text, field):
    with pytest.raises(ValueError, match=field):
        Program.from_json(text)


@pytest.mark.parametrize("kw, field", [({"parts": ("all",)}, "parts"), ({"instinct": "ring"}, "instinct"),
                                       ({"instinct_inputs": ("bias",)}, "instinct_inputs"),
                                       ({"unary_ops": 0}, "unary_ops"), ({"signs": (2,)}, "signs"),
                                       ({"layers": "fc"}, "layers")])
def test_bad_space(kw, field):
    with pytest.raises(ValueError, match=field):
        ProgramSpace(**kw)


def reference_parts(program: Program, inputs) -> tuple[float, float]:
    """A plain per-architecture evaluation of (instinct, interaction): no memo, no fused reductions."""
    def layer_list(name, layers):
        return [t for t, conv in zip(getattr(inputs, name), inputs.is_conv) if conv or layers == "all"]

    def chain(x, ops):
        for op in ops:
            x = UNARY_OPS[op](x)
        return x

    def reduce(z, how):
        return z.sum() if how == "sum" else z.mean()

    def instinct(part):
        if isinstance(part, LinearInstinct):
            per_layer = [reduce(chain(a, part.ops).double(), part.layer_reduction)
                         for a in layer_list(part.input, part.layers)]
        else:
            pairs = zip(layer_list(part.inputs[0], part.layers), layer_list(part.inputs[1], part.layers))
            per_layer = [reduce(BINARY_OPS[part.binary](chain(a, part.unary[0]), chain(b, part.unary[1])).double(),
                                part.reduction) for a, b in pairs]
        return reduce(torch.stack(per_layer), part.reduction)

    def interaction(p):
        if p.input == "feature":
            s, t = inputs.student.features[-1], inputs.teacher.features[-1]
            if s.shape[2:] != t.shape[2:]:
                size = [min(a, b) for a, b in zip(s.shape[2:], t.shape[2:])]
                s, t = (torch.nn.functional.adaptive_avg_pool2d(x, size) for x in (s, t))
        else:
            s, t = getattr(inputs.student, p.input), getattr(inputs.teacher, p.input)
        width = min(s.shape[1], t.shape[1])
        s, t = s[:, :width], t[:, :width]
        for op in p.transforms:
            s, t = TRANSFORMS[op](s), TRANSFORMS[op](t)
        return p.sign * WEIGHTS[p.weight](DISTANCES[p.distance](s, t), t, s)

    out = []
    for part, function in ((program.instinct, instinct), (program.interaction, interaction)):
        try:
            value = 0.0 if part is None else float(function(part))
        except (RuntimeError, IndexError):
            value = float("nan")
        out.append(value if math.isfinite(value) else float("nan"))
    return out[0], out[1]


def reference_scores(programs, archs) -> torch.Tensor:
    rows = []
    for program in programs:
        parts = torch.tensor([reference_parts(program, a) for a in archs], dtype=torch.float64)  # [N, 2]
        if program.scale:
            for i, present in enumerate((program.instinct is not None, program.interaction is not None)):
                if present:
                    low, high = parts[:, i].min(), parts[:, i].max()
                    parts[:, i] = (parts[:, i] - low) / (high - low)
        rows.append(parts.sum(1))
    return torch.stack(rows)


def test_batched_scores_equal_the_per_architecture_loop(archs):
    rng = random.Random(1)
    programs = [random_program(rng) for _ in range(25)] + [random_program(rng, TREE_SPACE) for _ in range(15)]
    programs += [random_program(rng, ProgramSpace(scale=(True,))) for _ in range(10)]
    programs += [TREE, LINEAR] + [program for program, _ in RELEASED.values()]
    batched = score_population(programs, archs)
    looped = reference_scores(programs, archs)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert torch.isfinite(batched).any(dim=1).sum() > len(programs) // 2  # most programs are valid somewhere


def test_collect_keeps_what_is_asked(batch):
    images, labels = batch
    model = Tiny(3)
    plain = collect(model, images, labels)
    assert plain.outputs is None and plain.virtual_grads is None and len(plain.activations) == 3
    assert plain.is_conv == [True, True, False]
    full = collect(model, images, labels, layer_inputs=["outputs", "virtual_grads"])
    assert full.activations is None
    x = images
    for i, conv in enumerate(model.convs):  # Tiny applies relu after each conv: outputs are pre-relu
        out = conv(x)
        torch.testing.assert_close(full.outputs[i], out.detach())
        x = torch.relu(out)
    ones_logits = model(torch.ones_like(images))[0]
    expected = torch.autograd.grad(ones_logits.sum(), [c.weight for c in model.convs] + [model.fc.weight])
    for got, want in zip(full.virtual_grads, expected):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="layer_inputs"):
        collect(model, images, labels, layer_inputs=["biases"])
    with pytest.raises(ValueError, match="collect.*outputs"):
        score(Program(instinct=LinearInstinct("outputs", ("abs",))), plain)
    with pytest.raises(ValueError, match="no Conv2d layers"):
        score(Program(instinct=LinearInstinct("grads", ("abs",))), replace(plain, is_conv=[False] * 3))
    with pytest.raises(ValueError, match="score_population"):
        score(LINEAR, full)


def test_invalid_programs_are_rejected(archs):
    overflow = Program(instinct=Instinct(("weights", "weights"), (("exp", "no_op"), ("no_op", "no_op")),
                                         "sum", "sum"))  # exp(1e4 w) overflows
    scores = torch.tensor([[1.0, float("nan"), 2.0], [1.0, float("inf"), 0.0], [3.0, 3.0, 3.0], [1.0, 2.0, 0.0]])
    assert valid_rows(scores).tolist() == [False, False, False, True]
    nan_free = Program(instinct=Instinct(("grads", "weights"), (("no_op", "no_op"), ("no_op", "no_op")),
                                         "multiply", "sum"))
    target = torch.arange(len(archs), dtype=torch.float64)
    big = [replace(a, weights=[w * 1e4 for w in a.weights]) for a in archs]
    fit = fitness([overflow, nan_free], big, target)
    assert math.isnan(fit[0]) and not math.isnan(fit[1])


def test_out_of_memory_is_raised_not_scored_nan(archs, monkeypatch):
    # Any other RuntimeError marks the program invalid on that architecture; running out of memory must not.
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(program_module, "_instinct_score", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        score(TREE, archs[0])


def test_constant_scores_have_no_fitness(archs):
    same = [archs[0]] * 5
    program = Program(instinct=Instinct(("grads", "weights"), (("no_op", "no_op"), ("no_op", "no_op")),
                                        "multiply", "sum"))
    assert math.isnan(fitness([program], same, torch.arange(5.0))[0])


def test_mismatched_teacher_batch(archs, batch):
    images, labels = batch
    small_teacher = network_outputs(Tiny(4), images[:8])
    with pytest.raises(ValueError, match="teacher"):
        collect(Tiny(4), images, labels, small_teacher)
    broken = replace(archs[0], teacher=small_teacher)
    with pytest.raises(ValueError, match="same batch"):
        score(TREE, broken)


def test_interaction_without_teacher(archs):
    lonely = replace(archs[0], teacher=None)
    with pytest.raises(ValueError, match="teacher"):
        score(TREE, lonely)


# --- Algorithm 1 -----------------------------------------------------------------------------------
TARGET_PROGRAM = Program(instinct=Instinct(("grads", "weights"), (("no_op", "no_op"), ("no_op", "no_op")),
                                           "multiply", "sum"))  # synflow-like: sum g * w


def synthetic_target(archs):
    return score_population([TARGET_PROGRAM], archs)[0]


def small_config(**kw):
    return ProxySearchConfig(**{"population": 8, "iterations": 25, "elite": 3, "seed": 0, **kw})


def test_ea_is_deterministic(archs):
    target = synthetic_target(archs)
    runs = [ProxySearch(small_config(iterations=8), archs, target) for _ in range(2)]
    results = [run.run() for run in runs]
    assert results[0] == results[1]
    assert [p for p, _ in runs[0].population] == [p for p, _ in runs[1].population]


@pytest.fixture(scope="module")
def width_archs(batch):
    """12 two-layer networks of widths 2..13: the sum of squared weights grows (noisily) with the width."""
    images, labels = batch
    teacher = network_outputs(Tiny(12, 3), images)
    out = []
    for width in range(2, 14):
        torch.manual_seed(width)
        out.append(collect(Tiny(width), images, labels, teacher, layer_inputs=ALL_LAYER_INPUTS))
    return out


def test_ea_finds_a_perfectly_correlated_proxy(width_archs):
    known = Program(instinct=Instinct(("weights", "weights"), (("pow2", "no_op"), ("pow2", "no_op")), "sum", "sum"))
    target = score_population([known], width_archs)[0]  # 2 sum w^2: `known` has Kendall tau 1
    search = ProxySearch(small_config(population=20, elite=5, iterations=100), width_archs, target)
    search.run(stop_after=0)
    initial_best = search.best[1]
    best, best_fitness = search.run()
    assert best_fitness >= 0.9 and best_fitness >= initial_best
    assert fitness([best], width_archs, target)[0].item() == pytest.approx(best_fitness)
    assert all(f == f for _, f in search.population)  # no invalid program ever joins


def test_ea_resume_matches_an_uninterrupted_run(archs, tmp_path):
    target = synthetic_target(archs)
    config = small_config(iterations=10)
    whole = ProxySearch(config, archs, target, run=RunFolder(tmp_path / "whole"))
    expected = whole.run()
    interrupted = ProxySearch(config, archs, target, run=RunFolder(tmp_path / "cut"))
    interrupted.run(stop_after=4)
    resumed = ProxySearch(config, archs, target, run=RunFolder(tmp_path / "cut", resume=True))
    assert resumed.run() == expected

    def without_times(run):
        return [{k: v for k, v in m.items() if k != "seconds"} for m in run.run_folder.metrics()]

    assert without_times(resumed) == without_times(whole) and len(without_times(whole)) == 10
    longer = ProxySearch(small_config(iterations=12), archs, target, run=RunFolder(tmp_path / "cut", resume=True))
    assert longer.run() is not None and longer.iteration == 12  # more iterations may be asked on resume
    with pytest.raises(ValueError, match="seed"):
        ProxySearch(small_config(seed=1), archs, target, run=RunFolder(tmp_path / "cut", resume=True)).run()


def test_ea_with_the_authors_crossover_is_deterministic(archs):
    target = synthetic_target(archs)
    config = small_config(iterations=12, crossover_prob=0.5, mutation_prob=0.1)
    runs = [ProxySearch(config, archs, target) for _ in range(2)]
    assert runs[0].run() == runs[1].run()
    assert len(runs[0].population) == 8 and all(f == f for _, f in runs[0].population)


@pytest.mark.parametrize("crossover_prob, mutation_prob, expected", [(0.0, 1.0, ["mutate"]),
                                                                     (1.0, 0.0, ["crossover"]),
                                                                     (1.0, 1.0, ["crossover", "mutate"])])
def test_offspring_follows_the_probabilities(archs, monkeypatch, crossover_prob, mutation_prob, expected):
    from fastnas.strategies import autodas as autodas_module

    calls = []
    monkeypatch.setattr(autodas_module, "crossover", lambda a, b, rng: calls.append("crossover") or a)
    monkeypatch.setattr(autodas_module, "mutate", lambda p, rng, space: calls.append("mutate") or p)
    config = small_config(iterations=5, crossover_prob=crossover_prob, mutation_prob=mutation_prob)
    ProxySearch(config, archs, synthetic_target(archs)).run()
    assert calls == expected * 5


def test_spearman_fitness(archs):
    from scipy import stats

    target = synthetic_target(archs) + torch.linspace(0, 1e-3, len(archs), dtype=torch.float64)
    rng = random.Random(2)
    programs = [random_program(rng) for _ in range(10)]
    scores = score_population(programs, archs)
    got = fitness(programs, archs, target, "spearman")
    for row, value in zip(scores, got):
        if torch.isfinite(row).all() and row.max() > row.min():
            assert value.item() == pytest.approx(stats.spearmanr(row.numpy(), target.numpy())[0])
        else:
            assert math.isnan(value)
    search = ProxySearch(small_config(iterations=3, fitness="spearman"), archs, target)
    best, best_fitness = search.run()
    assert best_fitness == pytest.approx(fitness([best], archs, target, "spearman")[0].item())


def test_held_out_statistics(archs):
    from scipy import stats

    target = synthetic_target(archs)
    search = ProxySearch(small_config(iterations=2), archs[:6], target[:6], held_out=(archs[6:], target[6:]))
    best, _ = search.run()
    result = search.held_out_statistics(best, baselines=("grad_norm", "conv_count"), n_boot=50, n_perm=50)
    assert result["architectures"] == 6 and set(result["baselines"]) == {"grad_norm", "conv_count"}
    held = search.held_out_correlation(best)
    assert result["program"]["kendall"]["value"] == pytest.approx(held["kendall"])
    assert result["program"]["spearman"]["value"] == pytest.approx(held["spearman"])
    direct = {name: stats.kendalltau([float(get_proxy(name).function(a)) for a in archs[6:]],
                                     target[6:].numpy())[0] for name in ("grad_norm", "conv_count")}
    for name, value in direct.items():
        assert result["baselines"][name]["kendall"]["value"] == pytest.approx(value, nan_ok=True)
    best_name = max(direct, key=lambda n: -math.inf if math.isnan(direct[n]) else direct[n])
    assert result["best_baseline"] == best_name
    difference = result["vs_best_baseline"]["kendall"]
    assert difference["value"] == pytest.approx(held["kendall"] - direct[best_name])
    assert difference["low"] <= difference["value"] <= difference["high"]


def test_space_reading_uncollected_inputs_is_refused(batch):
    images, labels = batch
    plain = [collect(Tiny(w), images, labels) for w in range(2, 8)]
    with pytest.raises(ValueError, match="virtual_grads"):
        ProxySearch(small_config(), plain, torch.arange(6.0))
    narrow = ProgramSpace(parts=("instinct",), instinct_inputs=("grads", "weights"))
    assert ProxySearch(small_config(space=narrow, iterations=1), plain, torch.arange(6.0)).run()


@pytest.mark.parametrize("kw, message", [({"population": 1}, "population"), ({"ratio": 0.0}, "ratio"),
                                         ({"elite": 9}, "elite"), ({"space": {"parts": ("all",)}}, "parts"),
                                         ({"fitness": "pearson"}, "fitness"), ({"crossover_prob": 1.5}, "crossover"),
                                         ({"mutation_prob": -0.1}, "mutation")])
def test_bad_config(kw, message):
    with pytest.raises(ValueError, match=message):
        small_config(**kw)


def test_bad_ground_truth(tmp_path, archs):
    with pytest.raises(FileNotFoundError, match="gt"):
        search_proxy(tmp_path / "missing.jsonl", tmp_path / "out", small_config(), teacher="none")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="0 architecture"):
        search_proxy(empty, tmp_path / "out", small_config(), teacher="none")
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"arch": f"a{i}", "space": "nb201", "accuracy_kd": i / 10}) + "\n"
                           for i in range(4)))
    with pytest.raises(ValueError, match="at least 6"):
        search_proxy(few, tmp_path / "out", small_config(), teacher="none")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arch": "x", "space": "nb201"}\n')
    with pytest.raises(ValueError, match="accuracy_kd"):
        search_proxy(bad, tmp_path / "out", small_config(), teacher="none")
    with pytest.raises(ValueError, match="one accuracy per architecture"):
        ProxySearch(small_config(), archs, torch.arange(3.0))
    with pytest.raises(ValueError, match="not all equal"):
        ProxySearch(small_config(), archs, torch.ones(len(archs)))
    with pytest.raises(ValueError, match="train_fraction"):
        split_indices(10, 1.5, 0)
    fit, held = split_indices(10, 4 / 7, 0)
    assert len(fit) == 6 and len(held) == 4 and not set(fit) & set(held)
    assert parse_count("0.5M") == 500_000 and parse_count("200k") == 200_000
    with pytest.raises(ValueError, match="count"):
        parse_count("lots")


# --- the commands ----------------------------------------------------------------------------------
def test_search_proxy_and_student_commands(tmp_path):
    from fastnas.search_spaces import get_space

    space, rng = get_space("nb201"), random.Random(3)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(12)))[:8]
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps({"arch": a, "space": "nb201", "accuracy_kd": a.count("conv") + i / 100}) + "\n"
                          for i, a in enumerate(archs)))
    out = tmp_path / "autodas"
    common = ["--gt", str(gt), "--out", str(out), "--teacher", "none", "--population", "4", "--elite", "2",
              "--batch-size", "16", "--device", "cpu", "--quiet"]
    assert fastnas(["autodas", "search-proxy", *common, "--iterations", "2"]) == 0
    assert fastnas(["autodas", "search-proxy", *common, "--iterations", "4", "--resume"]) == 0
    proxy = json.loads((out / "proxy.json").read_text())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert (out / "fitness.png").stat().st_size > 0
    assert (out / "proxy.txt").read_text().strip() == Program.from_dict(proxy["program"]).formula()
    assert proxy["fit_architectures"] + proxy["held_out_architectures"] == 8
    assert proxy["held_out_statistics"]["architectures"] == proxy["held_out_architectures"]
    assert len(proxy["held_out_scores"]) == len(proxy["held_out_archs"])
    authors = tmp_path / "authors"
    flags = ["--crossover", "--fitness", "spearman", "--signs", "+", "--instinct", "tree", "--layers", "conv"]
    assert fastnas(["autodas", "search-proxy", *common[:2], "--out", str(authors), *common[4:], "--iterations", "2",
                    *flags]) == 0
    config = json.loads((authors / "config.json").read_text())
    assert (config["crossover_prob"], config["mutation_prob"], config["fitness"]) == (0.5, 0.1, "spearman")
    assert config["space"]["instinct"] == "tree" and config["space"]["layers"] == "conv"
    assert config["space"]["signs"] == [1]
    assert "fit_spearman" in json.loads((authors / "result.json").read_text())
    with pytest.raises(ValueError, match="signs"):
        fastnas(["autodas", "search-proxy", *common[:2], "--out", str(tmp_path / "bad"), *common[4:], "--signs", "x"])
    top = search_student(str(out / "proxy.json"), "nb201", tmp_path / "students", n=6, max_params=parse_count("1M"),
                         top_k=2, teacher="none", batch_size=16, progress=False)
    ranking = (tmp_path / "students" / "ranking.csv").read_text().splitlines()
    assert len(ranking) == 7 and len(top) == 2
    assert top[0]["score"] >= top[1]["score"]
    with pytest.raises(FileNotFoundError, match="proxy"):
        search_student(str(tmp_path / "none.json"), "nb201", tmp_path / "s2", n=2, teacher="none")


def test_rank_students_with_scaled_parts_and_a_pair_proxy(batch, tmp_path):
    from fastnas.strategies.autodas import load_proxy, rank_students

    images, labels = batch
    widths = {f"w{w}": w for w in range(2, 8)}

    def build(arch):
        return Tiny(widths[arch])

    torch.manual_seed(0)
    teacher = network_outputs(Tiny(12, 3), images)
    scaled = replace(LINEAR, instinct=LinearInstinct("grads", ("abs", "to_mean")))
    path = tmp_path / "scaled.json"
    path.write_text(json.dumps({"program": scaled.to_dict()}))
    scorer = load_proxy(str(path))
    assert scorer.program == scaled and "grads" in scorer.layer_inputs
    ranked = dict(rank_students(scorer, build, list(widths), images, labels, teacher, seed=3))
    inputs = []
    for arch in widths:
        torch.manual_seed(3)
        inputs.append(collect(build(arch), images, labels, teacher))
    expected = score_population([scaled], inputs)[0]
    assert [ranked[a] for a in widths] == pytest.approx(expected.tolist())
    assert all(0 <= v <= 2 for v in ranked.values())  # two parts, each scaled to [0, 1]
    # a reads="pair" proxy gets the teacher network that network_outputs kept
    diswot = rank_students(load_proxy("name:diswot"), build, list(widths), images, labels, teacher, seed=3)
    torch.manual_seed(3)  # as rank_students before each build
    model = build(diswot[0][0])
    assert diswot[0][1] == pytest.approx(score_proxy("diswot", model, (images, labels), teacher))


def test_registered_proxy_ranks_students(tmp_path):
    top = search_student("name:synflow", "nb201", tmp_path / "synflow", n=3, top_k=3, teacher="none",
                         batch_size=8, progress=False)
    assert [row["rank"] for row in top] == [1, 2, 3] and top[0]["score"] >= top[2]["score"]
    ranking = (tmp_path / "synflow" / "ranking.csv").read_text()
    # a resumed run reuses the checkpointed scores (none is recomputed: metrics.jsonl keeps 3 lines)
    assert search_student("name:synflow", "nb201", tmp_path / "synflow", n=3, top_k=3, teacher="none",
                          batch_size=8, resume=True, progress=False) == top
    assert (tmp_path / "synflow" / "ranking.csv").read_text() == ranking
    assert len((tmp_path / "synflow" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="unknown name"):
        search_student("name:nope", "nb201", tmp_path / "nope", n=2, teacher="none")
