"""Auto-DAS: every op of Table 1 on a hand-computed case, programs (JSON, formula, validity, batched
scoring), Algorithm 1 (determinism, finding a known proxy, resume) and the commands' bad inputs."""

import json
import math
import random
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from fastnas.cli import main as fastnas
from fastnas.proxies import collect, network_outputs
from fastnas.proxies import program as program_module
from fastnas.proxies.autodas_ops import BINARY_OPS, DISTANCES, TRANSFORMS, UNARY_OPS
from fastnas.proxies.program import (Instinct, Interaction, Program, mutate, random_program, score,
                                     score_population, valid_rows)
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


DIST_CASES = {
    "l1": 3.0, "l2": math.sqrt(5), "cosine": 1 - 2 / (math.sqrt(5) * 2), "pearson": 2.0,
    "kl": sum(p * math.log(p / q) for p, q in zip(softmax([2.0, 0.0]), softmax([1.0, 2.0]))),
    "hard": math.log(E + E ** 2) - 1,  # teacher's class 0; -log softmax(s)[0]
}


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_distance(name):
    s, t = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    assert DISTANCES[name](s, t).tolist() == pytest.approx([DIST_CASES[name]], rel=1e-6)


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


@pytest.fixture(scope="module")
def archs(batch):
    images, labels = batch
    torch.manual_seed(0)
    teacher = network_outputs(Tiny(12, 3), images)
    out = []
    for i in range(12):
        torch.manual_seed(i)
        out.append(collect(Tiny(2 + i % 6, 1 + i % 3), images, labels, teacher))
    return out


EQ4 = Program(instinct=Instinct(("grads", "grads"), (("softmax", "ln_norm"), ("no_op", "no_op")), "sum", "mean"),
              interaction=Interaction("feature", ("batchnorm", "no_op"), "kl"))


def test_json_round_trip_and_formula():
    assert Program.from_json(EQ4.to_json()) == EQ4
    assert EQ4.formula() == "mean_l mean(sum(ln_norm(softmax(G_l)), G_l)) - mean_b kl(batchnorm(F_S), batchnorm(F_T))"
    rng = random.Random(0)
    for _ in range(50):
        program = random_program(rng)
        assert Program.from_dict(json.loads(program.to_json())) == program
        assert mutate(program, rng) != program


@pytest.mark.parametrize("text, field", [
    ('{"instinct": null, "interaction": {"input": "logits", "transforms": ["tanh", "nope"], "distance": "l1"}}',
     "nope"),
    ('{"instinct": {"inputs": ["weights", "bias"], "unary": [["exp", "exp"], ["exp", "exp"]], "binary": "sum", '
     '"reduction": "sum"}, "interaction": null}', "bias"),
    ('{"instinct": null, "interaction": null}', "needs an instinct part"),
    ('{"interaction": {"input": "logits"}}', "malformed"),
    ("not json", "not valid JSON"),
])
def test_bad_program_json(text, field):
    with pytest.raises(ValueError, match=field):
        Program.from_json(text)


def reference_score(program: Program, inputs) -> float:
    """A plain per-architecture evaluation: no memo, no fused reductions."""
    total = 0.0
    if program.instinct is not None:
        p = program.instinct
        per_layer = []
        for a, b in zip(getattr(inputs, p.inputs[0]), getattr(inputs, p.inputs[1])):
            for op in p.unary[0]:
                a = UNARY_OPS[op](a)
            for op in p.unary[1]:
                b = UNARY_OPS[op](b)
            z = BINARY_OPS[p.binary](a, b).double()
            per_layer.append(z.sum() if p.reduction == "sum" else z.mean())
        layers = torch.stack(per_layer)
        total += float(layers.sum() if p.reduction == "sum" else layers.mean())
    if program.interaction is not None:
        p = program.interaction
        if p.input == "feature":
            s, t = inputs.student.features[-1], inputs.teacher.features[-1]
        else:
            s, t = getattr(inputs.student, p.input), getattr(inputs.teacher, p.input)
        for op in p.transforms:
            s, t = TRANSFORMS[op](s), TRANSFORMS[op](t)
        s, t = s.flatten(1), t.flatten(1)
        if s.shape != t.shape:
            s, t = [torch.nn.functional.normalize(v @ v.t(), dim=1) for v in (s, t)]
        total -= float(DISTANCES[p.distance](s.contiguous(), t.contiguous()).mean())
    return total if math.isfinite(total) else float("nan")


def test_batched_scores_equal_the_per_architecture_loop(archs):
    rng = random.Random(1)
    programs = [random_program(rng) for _ in range(30)] + [EQ4]
    batched = score_population(programs, archs)
    looped = torch.tensor([[reference_score(p, a) for a in archs] for p in programs], dtype=torch.float64)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-6, equal_nan=True)


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
        score(EQ4, archs[0])


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
        score(EQ4, broken)


def test_interaction_without_teacher(archs):
    lonely = replace(archs[0], teacher=None)
    with pytest.raises(ValueError, match="teacher"):
        score(EQ4, lonely)


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
        out.append(collect(Tiny(width), images, labels, teacher))
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


@pytest.mark.parametrize("kw, message", [({"population": 1}, "population"), ({"ratio": 0.0}, "ratio"),
                                         ({"elite": 9}, "elite"), ({"parts": ("all",)}, "parts")])
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
    top = search_student(str(out / "proxy.json"), "nb201", tmp_path / "students", n=6, max_params=parse_count("1M"),
                         top_k=2, teacher="none", batch_size=16, progress=False)
    ranking = (tmp_path / "students" / "ranking.csv").read_text().splitlines()
    assert len(ranking) == 7 and len(top) == 2
    assert top[0]["score"] >= top[1]["score"]
    with pytest.raises(FileNotFoundError, match="proxy"):
        search_student(str(tmp_path / "none.json"), "nb201", tmp_path / "s2", n=2, teacher="none")


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
