"""Auto-DAS: evolutionary search of a training-free distillation proxy, then a training-free student search.

Proxy search (the paper's Algorithm 1, adaptive-elite EA): a population of P
random programs (`fastnas.proxies.program`, drawn from a `ProgramSpace`); every
iteration draws a fraction r of the population, takes its k fittest, mutates one
gene of a random one of them, and keeps the offspring only if it beats a freshly
drawn random program (otherwise the random program joins); the least fit member
then leaves. Fitness is the Kendall tau (the paper's Eq. 3; the authors' code uses
Spearman: `fitness="spearman"`) between a program's scores and the distilled
accuracies of the ground-truth architectures of the training split, computed for
all candidates in one `rank_corr` call. Defaults (P, T, r, k) = (20, 100, 0.9, 5)
are the paper's. With `crossover_prob` / `mutation_prob` = 0.5 / 0.1 (the authors'
exps/search_proxy/nb201/evo_search_jointly.py) the offspring is the parent with,
at probability 0.5, its instinct or interaction part taken from a second elite
member, then mutated at probability 0.1 (so it may be an unchanged copy).

Choices where the paper is silent:
- the ground truth is split at random (seed `seed`) into a fitting part and a
  held-out part in the paper's ViT-Bench ratio 4:3 (`train_fraction` 4/7); the
  held-out Kendall / Spearman of the best program is reported, never fitted;
- an invalid program (NaN / inf score, an op failing on a shape, a score constant
  over the architectures) has no fitness: it never enters the population, and
  initial members are redrawn until valid (`max_draws` draws per member at most);
- if the offspring and the random program are both invalid, the iteration adds
  and removes nothing;
- every architecture is scored on the same real training batch (`batch_size`
  128, drawn with `seed`) from the same random initialization (torch seed `seed`
  before building each), and the teacher's outputs on it are computed once.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from ..evaluators.proxy_table import nan_as_lowest
from ..evaluators.statistics import CORRELATIONS, correlation_summaries
from ..ops import rank_corr
from ..proxies.inputs import DEFAULT_LAYER_INPUTS, NetworkOutputs, ProxyInputs, collect, network_outputs
from ..proxies.program import (Program, ProgramSpace, combine_parts, crossover, mutate, part_scores, random_program,
                               score, score_population, valid_rows)
from ..proxies.registry import get_proxy
from ..runs import RunFolder

PAPER_TRAIN_FRACTION = 4 / 7  # ViT-Bench: validation and test sets in a 4:3 ratio
AUTHORS_CROSSOVER_PROB, AUTHORS_MUTATION_PROB = 0.5, 0.1  # exps/search_proxy/nb201/evo_search_jointly.py
# Proxies the searched program is compared with on the held-out split: those that read the cached inputs.
HELD_OUT_BASELINES = ("grad_norm", "snip", "conv_count", "conv_sqrt_numel_log_c", "diswot_fastnas", "autodas_nb201",
                      "autodas_resnet", "autodas_nb101", "autodas_vit", "autodas_eq4", "autodas_eq5")


@dataclass
class ProxySearchConfig:
    population: int = 20  # P (paper)
    iterations: int = 100  # T (paper)
    ratio: float = 0.9  # r, the fraction of the population drawn each iteration (paper)
    elite: int = 5  # k (paper)
    seed: int = 0
    max_draws: int = 200  # random draws allowed to find one valid program (our choice)
    space: ProgramSpace = ProgramSpace()  # what programs may hold (parts: the paper's ablation, one alone)
    fitness: str = "kendall"  # the paper's Eq. 3; the authors' code rewards Spearman
    crossover_prob: float = 0.0  # Algorithm 1: mutation only; the authors' code 0.5
    mutation_prob: float = 1.0  # Algorithm 1; the authors' code 0.1

    def __post_init__(self) -> None:
        if self.population < 2:
            raise ValueError(f"population: expected at least 2, got {self.population}")
        if self.iterations < 0:
            raise ValueError(f"iterations: expected >= 0, got {self.iterations}")
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio: expected a fraction in (0, 1], got {self.ratio}")
        if not 1 <= self.elite <= self.population:
            raise ValueError(f"elite: expected 1 <= elite <= population ({self.population}), got {self.elite}")
        if self.max_draws < 1:
            raise ValueError(f"max_draws: expected >= 1, got {self.max_draws}")
        if self.fitness not in CORRELATIONS:
            raise ValueError(f"fitness: expected one of {CORRELATIONS}, got {self.fitness!r}")
        for name in ("crossover_prob", "mutation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {getattr(self, name)}")
        if isinstance(self.space, dict):  # a config read back from JSON
            self.space = ProgramSpace(**self.space)


def fitness(programs: Sequence[Program], architectures: Sequence[ProxyInputs], target: torch.Tensor,
            method: str = "kendall") -> torch.Tensor:
    """[P] rank correlation of every program's scores with `target` [N], in one rank_corr call.

    Invalid programs (see `valid_rows`) get NaN.
    """
    scores = score_population(programs, architectures)
    corr = rank_corr(scores, target.to(scores), method)
    return torch.where(valid_rows(scores), corr, torch.full_like(corr, float("nan")))


def _check_target(architectures: Sequence[ProxyInputs], target: torch.Tensor, name: str) -> torch.Tensor:
    target = torch.as_tensor(target, dtype=torch.float64)
    if target.dim() != 1 or len(target) != len(architectures):
        raise ValueError(f"{name}: expected one accuracy per architecture ({len(architectures)}), "
                         f"got shape {tuple(target.shape)}")
    if len(target) < 3:
        raise ValueError(f"{name}: need at least 3 architectures to rank, got {len(target)}")
    if not torch.isfinite(target).all() or target.max() == target.min():
        raise ValueError(f"{name}: accuracies must be finite and not all equal")
    return target


class ProxySearch:
    """Algorithm 1 over cached architectures; checkpoints into `run` after every iteration.

    Args:
        config: the EA settings.
        architectures, target: the fitting split: N cached inputs and their N distilled accuracies.
        held_out: optional (architectures, target) scored for the log and the result, never fitted.
        run: a RunFolder (checkpoint.pt, metrics.jsonl, config.json); None keeps everything in memory.
        settings: what else defines the run (ground truth, batch, ...), written to config.json with the
            config; resuming with different settings or config (other than `iterations`) is refused.
    """

    def __init__(self, config: ProxySearchConfig, architectures: Sequence[ProxyInputs], target: torch.Tensor,
                 held_out: tuple[Sequence[ProxyInputs], torch.Tensor] | None = None, run: RunFolder | None = None,
                 progress: bool = False, log: Callable[[str], None] = lambda _: None, settings: dict | None = None):
        self.config, self.run_folder, self.progress, self.log = config, run, progress, log
        self.settings = json.loads(json.dumps({
            **asdict(config), **(settings or {}), "architectures": len(architectures),
            "held_out": 0 if held_out is None else len(held_out[0])}, default=str))
        self.architectures, self.target = list(architectures), _check_target(architectures, target, "target")
        missing = sorted(name for name in config.space.layer_inputs()
                         if any(getattr(inputs, name) is None for inputs in self.architectures))
        if missing:
            raise ValueError(f"architectures: the program space reads {missing}, which the cached inputs lack; "
                             f"collect them with collect(..., layer_inputs=[...]) or narrow space.instinct_inputs")
        self.held_out = None if held_out is None else \
            (list(held_out[0]), _check_target(held_out[0], held_out[1], "held_out target"))
        self.rng = random.Random(config.seed)
        self.population: list[tuple[Program, float]] = []
        self.iteration = 0
        self.evaluated = 0

    # ------------------------------------------------------------------ fitness
    def _fitness(self, programs: list[Program]) -> list[float]:
        self.evaluated += len(programs)
        return fitness(programs, self.architectures, self.target, self.config.fitness).tolist()

    def _random_valid(self, count: int) -> list[tuple[Program, float]]:
        """`count` random programs with a fitness, drawn (and scored) in batches of `count`."""
        found: list[tuple[Program, float]] = []
        for _ in range(self.config.max_draws):
            programs = [random_program(self.rng, self.config.space) for _ in range(count - len(found))]
            found += [(p, f) for p, f in zip(programs, self._fitness(programs)) if f == f]
            if len(found) == count:
                return found
        raise RuntimeError(f"no valid random program in {self.config.max_draws} draws: the cached inputs "
                           "give NaN, inf or constant scores for every program (check the ground truth)")

    def held_out_correlation(self, program: Program) -> dict[str, float]:
        """Kendall and Spearman of `program` on the held-out split (empty without one)."""
        if self.held_out is None:
            return {}
        scores = score_population([program], self.held_out[0])
        out = {}
        for method in CORRELATIONS:
            corr = rank_corr(scores, self.held_out[1], method)[0] if valid_rows(scores)[0] else float("nan")
            out[method] = float(corr)
        return out

    def held_out_statistics(self, program: Program, baselines: Sequence[str] = HELD_OUT_BASELINES,
                            n_boot: int = 1000, n_perm: int = 1000) -> dict:
        """`program` and the `baselines` on the held-out split, with intervals (fastnas.evaluators.statistics).

        Returns {"program": summary, "baselines": {name: summary}, "best_baseline": name,
        "vs_best_baseline": {"kendall": {value, low, high}, "spearman": ...}}: each summary Kendall
        and Spearman with 95% bootstrap intervals and permutation p-values; the paired difference is
        program minus the baseline with the highest held-out Kendall tau, on the same resamples. NaN
        scores rank lowest. Baselines that need a teacher are skipped without one.
        """
        if self.held_out is None:
            return {}
        inputs, target = self.held_out
        has_teacher = inputs[0].teacher is not None
        names = [name for name in baselines if has_teacher or not get_proxy(name).needs_teacher]
        rows = [score_population([program], inputs)[0]]
        for name in names:
            proxy = get_proxy(name)
            rows.append(torch.tensor([float(proxy.function(x)) for x in inputs], dtype=torch.float64))
        summaries = correlation_summaries(nan_as_lowest(torch.stack(rows)), target, n_boot=n_boot, n_perm=n_perm,
                                          seed=self.config.seed)
        best = summaries[0]["vs_best"]
        return {"program": {m: summaries[0][m] for m in CORRELATIONS},
                "baselines": {name: {m: summary[m] for m in CORRELATIONS}
                              for name, summary in zip(names, summaries[1:])},
                "best_baseline": None if best is None else names[best["row"] - 1],
                "vs_best_baseline": None if best is None else {m: best[m] for m in CORRELATIONS},
                "architectures": len(inputs)}

    @property
    def best(self) -> tuple[Program, float]:
        return max(self.population, key=lambda member: member[1])

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {"iteration": self.iteration, "evaluated": self.evaluated, "rng": self.rng.getstate(),
                "population": [(p.to_dict(), f) for p, f in self.population]}

    def _restore(self, state: dict) -> None:
        self.iteration, self.evaluated = state["iteration"], state["evaluated"]
        self.rng.setstate(state["rng"])
        self.population = [(Program.from_dict(p), f) for p, f in state["population"]]

    def _check_settings(self, folder: RunFolder) -> None:
        path = folder.path / "config.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        changed = sorted(k for k, v in self.settings.items() if k != "iterations" and saved.get(k) != v)
        if changed:
            raise ValueError(f"resume: {folder.path} was run with other settings ({', '.join(changed)}: "
                             f"{[saved.get(k) for k in changed]} there, {[self.settings[k] for k in changed]} "
                             "now); resume with the same ones or choose another --out")

    # ------------------------------------------------------------------ Algorithm 1
    def _offspring(self, elite: list[tuple[Program, float]]) -> Program:
        """A parent of the elite, crossed with a second one and mutated, each at its probability."""
        c = self.config
        child = self.rng.choice(elite)[0]
        if c.crossover_prob > 0 and self.rng.random() < c.crossover_prob:
            child = crossover(child, self.rng.choice(elite)[0], self.rng)
        if c.mutation_prob >= 1 or self.rng.random() < c.mutation_prob:
            child = mutate(child, self.rng, c.space)
        return child

    def step(self) -> dict:
        """One iteration of Algorithm 1; returns its metrics record."""
        c = self.config
        drawn = self.rng.sample(self.population, max(1, round(c.ratio * len(self.population))))
        elite = sorted(drawn, key=lambda member: member[1], reverse=True)[:c.elite]
        child = self._offspring(elite)
        baseline = random_program(self.rng, c.space)
        child_fitness, baseline_fitness = self._fitness([child, baseline])
        kept = None
        # A NaN fitness compares False, so an invalid offspring never wins and an invalid baseline never joins.
        if child_fitness == child_fitness and not child_fitness <= baseline_fitness:
            kept = "offspring"
            self.population.append((child, child_fitness))
        elif baseline_fitness == baseline_fitness:
            kept = "random"
            self.population.append((baseline, baseline_fitness))
        if kept is not None:
            self.population.remove(min(self.population, key=lambda member: member[1]))
        self.iteration += 1
        best, best_fitness = self.best
        return {"iteration": self.iteration, "best_fitness": best_fitness,
                "mean_fitness": sum(f for _, f in self.population) / len(self.population),
                "offspring_fitness": child_fitness, "random_fitness": baseline_fitness, "kept": kept,
                "evaluated": self.evaluated, "best": best.formula(),
                **{f"held_out_{k}": v for k, v in self.held_out_correlation(best).items()}}

    def run(self, stop_after: int | None = None) -> tuple[Program, float]:
        """Runs (or resumes) the search; returns the best program and its fitting Kendall tau.

        `stop_after` ends after that many iterations of this call (simulates an interruption).
        """
        c = self.config
        folder = self.run_folder
        if self.population:  # a second call continues this object's search
            self.log(f"continuing at iteration {self.iteration}")
        elif folder is not None and folder.checkpoint_path.exists():
            self._check_settings(folder)
            self._restore(folder.load_checkpoint())
            folder.truncate_metrics(self.iteration)
            self.log(f"resumed at iteration {self.iteration}")
        else:
            if folder is not None:
                folder.write_config(self.settings)
            self.population = self._random_valid(c.population)
            if folder is not None:
                folder.save_checkpoint(self._state())
        bar = tqdm(total=c.iterations, initial=self.iteration, desc="autodas proxy search", unit="it",
                   disable=not self.progress)
        done_now = 0
        while self.iteration < c.iterations and (stop_after is None or done_now < stop_after):
            started = time.time()
            record = self.step()
            record["seconds"] = time.time() - started
            if folder is not None:
                folder.log(record)
                folder.save_checkpoint(self._state())
            bar.set_postfix(best=f"{record['best_fitness']:.3f}")
            bar.update(1)
            done_now += 1
        bar.close()
        return self.best


# --- ground truth and cached inputs ------------------------------------------------------------------
def split_indices(n: int, train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A random (seeded) split of range(n) into a fitting part and a held-out part, both of >= 3."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction: expected a fraction in (0, 1), got {train_fraction}")
    if n < 6:
        raise ValueError(f"gt: {n} architectures; the proxy search needs at least 6 (3 to fit, 3 held out)")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cut = min(max(3, round(train_fraction * n)), n - 3)
    return sorted(order[:cut]), sorted(order[cut:])


def collect_architectures(build: Callable[[str], torch.nn.Module], archs: Sequence[str], images: torch.Tensor,
                          labels: torch.Tensor, teacher: NetworkOutputs | None, seed: int = 0,
                          progress: bool = False, layer_inputs: Sequence[str] = DEFAULT_LAYER_INPUTS
                          ) -> list[ProxyInputs]:
    """ProxyInputs of every architecture on one batch: torch seed `seed` before each `build(arch)`,
    one forward and one backward each (another pair for virtual_grads); `teacher` is the teacher's
    outputs on the same batch; `layer_inputs` as for `collect`."""
    out = []
    for arch in tqdm(archs, desc="collect proxy inputs", unit="arch", disable=not progress):
        torch.manual_seed(seed)
        model = build(arch).to(images.device)
        out.append(collect(model, images, labels, teacher, layer_inputs=layer_inputs))
    return out


# --- training-free student search -------------------------------------------------------------------
@dataclass
class StudentScorer:
    """How search-student scores a network: `score(model, images, labels, inputs, teacher)` returns its score,
    or for a program with min-max scaled parts its (instinct, interaction) pair, scaled over all candidates
    at the end (`program`). `layer_inputs` is what `collect` keeps for it."""

    score: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, ProxyInputs, NetworkOutputs | None],
                    float | tuple[float, float]]
    layer_inputs: tuple[str, ...] = DEFAULT_LAYER_INPUTS
    needs_teacher: bool = False
    program: Program | None = None  # set when the score is a pair of parts

    def finish(self, values: Sequence[float | tuple[float, float]]) -> list[float]:
        """The final scores of all candidates from what `score` returned for each."""
        if self.program is None:
            return [float(v) for v in values]
        parts = torch.tensor([list(v) for v in values], dtype=torch.float64)[None]
        return combine_parts([self.program], parts)[0].tolist()


def rank_students(scorer: StudentScorer, build: Callable[[str], torch.nn.Module],
                  archs: Sequence[str], images: torch.Tensor, labels: torch.Tensor,
                  teacher: NetworkOutputs | None, seed: int = 0, done: dict | None = None,
                  on_scored: Callable[[str, Any], None] = lambda arch, value: None,
                  progress: bool = False) -> list[tuple[str, float]]:
    """Scores every architecture training-free (one forward and backward each, inputs dropped after
    scoring); returns (arch, score) pairs best first, NaN scores last. `done` holds values of a
    previous run that are reused; `on_scored` is called after each new value (for resuming)."""
    values = dict(done or {})
    for arch in tqdm(archs, desc="score students", unit="arch", disable=not progress):
        if arch in values:
            continue
        torch.manual_seed(seed)
        model = build(arch).to(images.device)
        inputs = collect(model, images, labels, teacher, layer_inputs=scorer.layer_inputs)
        values[arch] = scorer.score(model, images, labels, inputs, teacher)
        on_scored(arch, values[arch])
    ranked = list(zip(archs, scorer.finish([values[arch] for arch in archs])))
    return sorted(ranked, key=lambda item: -item[1] if item[1] == item[1] else math.inf)  # NaN last


# --- the two commands, as functions -----------------------------------------------------------------
def _setup(data: str, teacher_spec: str, batch_size: int, seed: int, device: str, progress: bool):
    """The dataset, the proxy batch and the teacher's outputs on it (one teacher forward).

    The batch is the first training batch of seed `seed`, the one `fastnas proxies` scores on.
    """
    from ..data import batches, load_data
    from ..distill import load_teacher

    dataset = load_data(data)
    if not 1 <= batch_size <= len(dataset.train):
        raise ValueError(f"batch_size: expected 1..{len(dataset.train)} (the training images), got {batch_size}")
    images, labels = next(batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=True))
    images, labels = images.to(device), labels.to(device)
    if teacher_spec == "none":
        return dataset, images, labels, None
    teacher = load_teacher(teacher_spec, dataset, device, progress=progress)
    return dataset, images, labels, network_outputs(teacher, images)


def search_proxy(gt: str | Path, out: str | Path, config: ProxySearchConfig, data: str = "digits",
                 teacher: str = "builtin", train_fraction: float = PAPER_TRAIN_FRACTION, batch_size: int = 128,
                 device: str = "cpu", resume: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """`fastnas autodas search-proxy`: Algorithm 1 on a gt.jsonl; writes proxy.json, proxy.txt,
    fitness.png, metrics.jsonl, result.json and checkpoint.pt into `out`. Returns the result dict."""
    from ..evaluators.proxy_table import load_ground_truth
    from ..plots import plot_proxy_fitness
    from ..search_spaces import get_space

    truth = load_ground_truth(gt)
    if truth.data is not None and truth.data != data:
        raise ValueError(f"data: the ground truth {gt} was measured on {truth.data!r}, not {data!r}")
    space = get_space(truth.space)
    fit_index, held_index = split_indices(len(truth.archs), train_fraction, config.seed)
    run = RunFolder(out, resume=resume)
    dataset, images, labels, teacher_out = _setup(data, teacher, batch_size, config.seed, device, progress)
    if teacher_out is None:  # interaction parts read the teacher
        config = replace(config, space=replace(config.space, parts=("instinct",)))

    def build(arch: str) -> torch.nn.Module:
        return space.build(arch, dataset.num_classes, dataset.in_channels, image_size=dataset.image_size,
                           **truth.options)

    started = time.time()
    # Only what the programs and the baselines read: a cached population of layer lists is the memory.
    layer_inputs = {"weights", "grads"} | config.space.layer_inputs()
    layer_inputs |= {name for proxy in HELD_OUT_BASELINES for name in get_proxy(proxy).layer_inputs}
    inputs = collect_architectures(build, truth.archs, images, labels, teacher_out, config.seed, progress,
                                   layer_inputs=sorted(layer_inputs))
    collect_seconds = time.time() - started
    accuracy = truth.accuracy
    settings = {"gt": str(Path(gt).resolve()), "data": data, "teacher": teacher, "train_fraction": train_fraction,
                "batch_size": batch_size}
    search = ProxySearch(config, [inputs[i] for i in fit_index], accuracy[fit_index],
                         held_out=([inputs[i] for i in held_index], accuracy[held_index]), run=run,
                         progress=progress, log=log, settings=settings)
    best, best_fitness = search.run()
    result = {"program": best.to_dict(), "formula": best.formula(), "fitness": config.fitness,
              f"fit_{config.fitness}": best_fitness, "held_out": search.held_out_correlation(best),
              "held_out_statistics": search.held_out_statistics(best), "fit_architectures": len(fit_index),
              "held_out_architectures": len(held_index), "train_fraction": train_fraction, "split_seed": config.seed,
              "held_out_archs": [truth.archs[i] for i in held_index],
              "held_out_scores": score_population([best], [inputs[i] for i in held_index])[0].tolist(),
              "space": space.name, "data": data,
              "teacher": teacher, "batch_size": batch_size,
              "collect_seconds": collect_seconds, "programs_evaluated": search.evaluated,
              "search_seconds": sum(m.get("seconds", 0.0) for m in run.metrics())}
    run.write_json("proxy.json", result)
    (run.path / "proxy.txt").write_text(best.formula() + "\n")
    run.write_json("result.json", result)
    plot_proxy_fitness(run.metrics(), run.path / "fitness.png")
    return result


def load_proxy(spec: str) -> StudentScorer:
    """A StudentScorer from `spec`: the path of a proxy.json of search-proxy (or of a bare program JSON),
    or ``name:NAME`` of a registered proxy (fastnas.proxies registry, e.g. name:autodas_nb201 or name:diswot)."""
    if spec.startswith("name:"):
        proxy = get_proxy(spec[len("name:"):])
        layer_inputs = tuple(sorted(set(DEFAULT_LAYER_INPUTS) | set(proxy.layer_inputs)))
        if proxy.reads == "inputs":
            return StudentScorer(lambda model, images, labels, inputs, teacher: float(proxy.function(inputs)),
                                 layer_inputs, proxy.needs_teacher)
        if proxy.reads == "pair":
            return StudentScorer(lambda model, images, labels, inputs, teacher:
                                 float(proxy.function(model, teacher.model, images, labels)), layer_inputs, True)
        # The model is a fresh network built for scoring only, so the proxy may run its own passes on it.
        return StudentScorer(lambda model, images, labels, inputs, teacher: float(proxy.function(model, images,
                                                                                                 labels)))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"proxy: {path} does not exist (write it with `fastnas autodas search-proxy`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"proxy: {path} is not JSON ({error})") from None
    program = Program.from_dict(data["program"] if isinstance(data, dict) and "program" in data else data)
    layer_inputs = tuple(sorted(set(DEFAULT_LAYER_INPUTS) | program.layer_inputs()))
    if program.scale:
        return StudentScorer(lambda model, images, labels, inputs, teacher: part_scores(program, inputs),
                             layer_inputs, program.needs_teacher, program)
    return StudentScorer(lambda model, images, labels, inputs, teacher: score(program, inputs), layer_inputs,
                         program.needs_teacher)


def parse_count(text: str) -> int:
    """'0.5M' -> 500000, '200k' -> 200000, '12345' -> 12345."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale != 1 else text) * scale
    except ValueError:
        raise ValueError(f"expected a count such as 500000, 200k or 0.5M, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"expected a positive count, got {text!r}")
    return int(value)


def sample_candidates(space, n: int, max_params: int | None, input_shape: tuple[int, int, int], num_classes: int,
                      seed: int, max_draws_per_candidate: int = 50, progress: bool = False) -> list[dict]:
    """`n` distinct architectures of `space` with at most `max_params` parameters, with their costs."""
    if n < 1:
        raise ValueError(f"n: expected a positive number of candidates, got {n}")
    rng, seen, out = random.Random(seed), set(), []
    bar = tqdm(total=n, desc="sample candidates", unit="arch", disable=not progress)
    for _ in range(n * max_draws_per_candidate):
        arch = space.sample(rng)
        if arch in seen:
            continue
        seen.add(arch)
        cost = space.cost(arch, input_shape, num_classes)  # builds the network once
        if max_params is None or cost["params"] <= max_params:
            out.append({"arch": arch, **cost})
            bar.update(1)
            if len(out) == n:
                bar.close()
                return out
    bar.close()
    raise ValueError(f"max_params: found only {len(out)} distinct architectures of {space.name} under "
                     f"{max_params} parameters in {n * max_draws_per_candidate} draws; lower --n or raise --max-params")


def search_student(proxy: str, space_name: str, out: str | Path, n: int = 1000, max_params: int | None = None,
                   top_k: int = 10, data: str = "digits", teacher: str = "builtin", batch_size: int = 128,
                   seed: int = 0, device: str = "cpu", resume: bool = False, progress: bool = True) -> list[dict]:
    """`fastnas autodas search-student`: ranks `n` sampled candidates training-free with `proxy`;
    writes ranking.csv, top_k.json, checkpoint.pt (resumable) into `out`. Returns the top-k rows."""
    from ..search_spaces import get_space

    if top_k < 1:
        raise ValueError(f"top_k: expected a positive number, got {top_k}")
    scorer = load_proxy(proxy)
    space = get_space(space_name)
    run = RunFolder(out, resume=resume)
    dataset, images, labels, teacher_out = _setup(data, teacher, batch_size, seed, device, progress)
    if scorer.needs_teacher and teacher_out is None:
        raise ValueError(f"teacher: the proxy {proxy} compares students with a teacher; give --teacher, not none")
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    if resume:
        state = run.load_checkpoint()
        candidates, done = state["candidates"], state["scores"]
        run.truncate_metrics(len(done))
    else:
        run.write_config({"proxy": proxy, "space": space_name, "n": n, "max_params": max_params, "top_k": top_k,
                          "data": data, "teacher": teacher, "batch_size": batch_size, "seed": seed})
        candidates = sample_candidates(space, n, max_params, input_shape, dataset.num_classes, seed,
                                       progress=progress)
        done = {}
        run.save_checkpoint({"candidates": candidates, "scores": done})

    def on_scored(arch: str, value: float | tuple[float, float]) -> None:
        done[arch] = value
        run.log({"arch": arch, "score" if scorer.program is None else "parts": value})
        if len(done) % 25 == 0:
            run.save_checkpoint({"candidates": candidates, "scores": done})

    def build(arch: str) -> torch.nn.Module:
        return space.build(arch, dataset.num_classes, dataset.in_channels, image_size=dataset.image_size)

    ranked = rank_students(scorer, build,
                           [c["arch"] for c in candidates], images, labels, teacher_out, seed, dict(done),
                           on_scored, progress)
    run.save_checkpoint({"candidates": candidates, "scores": done})
    cost = {c["arch"]: c for c in candidates}
    rows = [{"rank": i + 1, "arch": arch, "score": value, "params": cost[arch]["params"],
             "flops": cost[arch]["flops"]} for i, (arch, value) in enumerate(ranked)]
    with open(run.path / "ranking.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run.write_json("top_k.json", rows[:top_k])
    return rows[:top_k]
