"""Auto-DAS speed: batched program scoring on cached inputs against the reference codes' per-proxy loop.

Two cases, each fused (fastnas) against reference:
- one EA generation: 20 programs over 60 cached NB201 students (fitness = Kendall tau in one
  rank_corr call), against the loop of the zero-cost-nas / Auto-DAS code: for every program and
  every architecture deep-copy the network, recompute the teacher's outputs, run the forward and
  backward, score; then scipy.stats.kendalltau per program;
- ranking 1,000 cached candidates with one fixed program, against the same per-candidate loop.

Networks are NAS-Bench-201 cells at C=8, N=1 on the digits batch of 128 (the 1,000 candidates at
C=4 on 32 images, to keep the cache small), the teacher the built-in teacher's architecture
with random weights (its accuracy does not matter for timing). Programs are drawn from the default
ProgramSpace (the authors' linear instinct over Conv2d outputs, gradients, weights and virtual
gradients, 3 transforms); the fixed program is the authors' NB201 program (registry autodas_nb201).
The cache holds what the space reads; the reference collects, per program, what that program reads.

`pytest bench/bench_autodas.py` times both (pytest-benchmark); with --benchmark-disable (CI) each
runs once on a smaller set and checks that both paths give the same scores.
`python bench/bench_autodas.py` measures the ratios single-threaded and writes
bench/results/autodas-speed.json.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import pytest
import scipy.stats
import torch

from fastnas.data import batches, load_data
from fastnas.distill.teachers import TeacherResNet
from fastnas.proxies import collect, network_outputs
from fastnas.proxies.program import Program, ProgramSpace, random_program, score, score_population
from fastnas.proxies.released import RELEASED
from fastnas.search_spaces import get_space
from fastnas.strategies.autodas import fitness

RESULTS = Path(__file__).parent / "results" / "autodas-speed.json"
SPACE = ProgramSpace()
CACHED = sorted({"weights", "grads"} | SPACE.layer_inputs())  # what search-proxy caches for this space
FIXED = RELEASED["autodas_nb201"][0]


class Setting:
    """Networks, batch, teacher and cached inputs of one case."""

    def __init__(self, n_archs: int, C: int, batch_size: int, seed: int = 0):
        dataset = load_data("digits")
        self.images, self.labels = next(batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=True))
        torch.manual_seed(seed)
        self.teacher = TeacherResNet(dataset.in_channels, dataset.num_classes).train()
        space, rng = get_space("nb201"), random.Random(seed)
        archs = list(dict.fromkeys(space.sample(rng) for _ in range(3 * n_archs)))[:n_archs]
        self.models = []
        for arch in archs:
            torch.manual_seed(seed)
            self.models.append(space.build(arch, dataset.num_classes, dataset.in_channels, C=C, N=1))
        teacher_outputs = network_outputs(self.teacher, self.images)
        self.cached = [collect(model, self.images, self.labels, teacher_outputs, layer_inputs=CACHED)
                       for model in self.models]
        self.target = torch.tensor([rng.random() for _ in archs], dtype=torch.float64)


def reference_scores(programs: list[Program], setting: Setting, n_archs: int | None = None) -> torch.Tensor:
    """The reference codes' loop: per program, per architecture, copy, teacher pass, forward + backward, score."""
    models = setting.models[:n_archs]
    scores = torch.empty(len(programs), len(models), dtype=torch.float64)
    for p, program in enumerate(programs):
        for n, model in enumerate(models):
            work = copy.deepcopy(model)
            teacher = network_outputs(setting.teacher, setting.images)
            needed = sorted({"weights", "grads"} | program.layer_inputs())
            scores[p, n] = score(program, collect(work, setting.images, setting.labels, teacher, layer_inputs=needed))
    return scores


def reference_generation(programs: list[Program], setting: Setting, n_archs: int | None = None) -> list[float]:
    scores = reference_scores(programs, setting, n_archs)
    target = setting.target[:scores.shape[1]].numpy()
    return [scipy.stats.kendalltau(row.numpy(), target).statistic for row in scores]


def population(size: int, seed: int = 0) -> list[Program]:
    rng = random.Random(seed)
    return [random_program(rng, SPACE) for _ in range(size)]


# --- pytest-benchmark ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def disabled(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", False))


@pytest.fixture(scope="module")
def generation_setting(disabled) -> Setting:
    return Setting(n_archs=12 if disabled else 60, C=8, batch_size=128)


@pytest.fixture(scope="module")
def candidates_setting(disabled) -> Setting:
    return Setting(n_archs=40 if disabled else 1000, C=4, batch_size=32)


def check_generation(setting: Setting) -> None:
    programs = population(4)
    fast = fitness(programs, setting.cached[:6], setting.target[:6]).tolist()
    slow = reference_generation(programs, setting, 6)
    for f, s in zip(fast, slow):  # the reference keeps invalid (constant) rows as NaN too
        assert (f != f and (s != s or abs(s) < 1e-12)) or abs(f - s) < 1e-9, (fast, slow)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_ea_generation(benchmark, generation_setting, impl):
    programs = population(20)
    benchmark.group = "autodas EA generation (20 programs)"
    if impl == "fused":
        check_generation(generation_setting)
        benchmark(fitness, programs, generation_setting.cached, generation_setting.target)
    else:
        benchmark.pedantic(reference_generation, (programs[:2] if benchmark.disabled else programs,
                                                  generation_setting), rounds=1, iterations=1)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_rank_candidates(benchmark, candidates_setting, impl):
    benchmark.group = "autodas rank candidates (fixed program)"
    if impl == "fused":
        fast = score_population([FIXED], candidates_setting.cached)
        slow = reference_scores([FIXED], candidates_setting, 10)
        torch.testing.assert_close(fast[:, :10], slow, rtol=1e-5, atol=1e-7, equal_nan=True)
        benchmark(score_population, [FIXED], candidates_setting.cached)
    else:
        benchmark.pedantic(reference_scores, ([FIXED], candidates_setting, 10 if benchmark.disabled else None),
                           rounds=1, iterations=1)


# --- ratios for bench/results ----------------------------------------------------------------------------
def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    rows = {}
    setting = Setting(n_archs=60, C=8, batch_size=128)
    programs = population(20)
    check_generation(setting)
    fused = best_time(lambda: fitness(programs, setting.cached, setting.target), 3)
    reference = best_time(lambda: reference_generation(programs, setting), 1)
    rows["ea_generation"] = {"programs": 20, "architectures": 60, "fused_s": fused, "reference_s": reference,
                             "speedup": reference / fused}
    print(rows["ea_generation"])
    setting = Setting(n_archs=1000, C=4, batch_size=32)
    fused = best_time(lambda: score_population([FIXED], setting.cached), 3)
    reference = best_time(lambda: reference_scores([FIXED], setting), 1)
    rows["rank_1000_candidates"] = {"programs": 1, "architectures": 1000, "fused_s": fused,
                                    "reference_s": reference, "speedup": reference / fused}
    print(rows["rank_1000_candidates"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "fused = fastnas batched scoring of cached ProxyInputs (+ one rank_corr call); reference = "
                "per program and architecture: deepcopy, teacher forward, student forward + backward, score; "
                "scipy.stats.kendalltau per program. Best of 3 (fused) / 1 (reference) runs, 1 thread, CPU.",
        "setting": "NB201 students N=1 (C=8, 128 digits images; 1,000 candidates C=4, 32 images); "
                   "teacher TeacherResNet(32, 64, 128) random weights",
        "torch": torch.__version__, "rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
