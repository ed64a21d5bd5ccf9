"""`fastnas proxies`: how well each training-free proxy ranks the architectures of a ground truth.

Every architecture of a ground-truth file (``gt.jsonl`` of ``fastnas bench-gt``) is built
with a fixed seed and scored by every proxy on the same real training batch, the teacher's
outputs computed once; then Kendall tau, Spearman rho and Pearson r of each proxy against the
distilled accuracy. Scores are appended to ``OUT/scores.jsonl`` as they are computed, so a
rerun (after an interruption, or with more proxies) computes only what is missing. Under
torchrun each rank scores its share of the architectures into ``OUT/scores.rank-R.jsonl``
and rank 0 folds those files into ``scores.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..ops import rank_corr
from ..proxies import NetworkOutputs, get_proxy, score_many
from ..runs import atomic_write_json
from .ground_truth import CONFIG_FILE, append_records, read_records

METHODS = ("kendall", "spearman", "pearson")


@dataclass
class GroundTruth:
    """The distilled accuracy of N architectures of one space (mean over the seeds of a file)."""

    space: str
    archs: list[str]
    accuracy: torch.Tensor  # [N] float64, accuracy_kd
    options: dict  # build options of the space (from bench-gt's gt-config.json; {} without one)
    data: str | None  # the dataset of the ground truth (from gt-config.json), None when unknown


def load_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Reads a gt.jsonl ({arch, space, accuracy_kd, ...} per line); seeds of one arch are averaged.

    A last line without its newline is a line still being written by a running bench-gt and is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gt: {path} does not exist")
    accuracies: dict[str, list[float]] = {}
    spaces = set()
    for number, record in enumerate(read_records(path), 1):
        try:
            arch, space, accuracy = record["arch"], record["space"], float(record["accuracy_kd"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"gt: line {number} of {path} is not a JSON object with arch, space and a numeric "
                             f"accuracy_kd ({error})") from None
        spaces.add(space)
        accuracies.setdefault(arch, []).append(accuracy)
    if len(accuracies) < 2:
        raise ValueError(f"gt: {path} holds {len(accuracies)} architecture(s); correlations need at least 2")
    if len(spaces) != 1:
        raise ValueError(f"gt: {path} mixes the spaces {sorted(spaces)}; expected one")
    archs = list(accuracies)
    mean_accuracy = torch.tensor([sum(accuracies[a]) / len(accuracies[a]) for a in archs], dtype=torch.float64)
    config_path = path.parent / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    return GroundTruth(spaces.pop(), archs, mean_accuracy, dict(config.get("options") or {}), config.get("data"))


RANK_SCORES = "scores.rank-{}.jsonl"


def read_scores(paths: Sequence[Path]) -> dict[tuple[str, str], float]:
    """{(arch, proxy): score} of the score files that exist among `paths`."""
    scores = {}
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by an interruption: recomputed
                for proxy, value in record["scores"].items():
                    scores[(record["arch"], proxy)] = value
    return scores


class ScoreCache:
    """Scores already computed, one JSON line {arch, scores: {proxy: value}} per architecture pass.

    Appends to `path`; also reads the files `also_read` (under torchrun: the merged file of earlier runs).
    """

    def __init__(self, path: Path, also_read: Sequence[Path] = ()):
        self.path = path
        self.scores = read_scores([path, *also_read])

    def missing(self, arch: str, proxies: Sequence[str]) -> list[str]:
        return [p for p in proxies if (arch, p) not in self.scores]

    def add(self, arch: str, scores: dict[str, float]) -> None:
        self.add_many({arch: scores})

    def add_many(self, scores_by_arch: dict[str, dict[str, float]]) -> None:
        """Appends one line per architecture, all with one fsync."""
        # NaN/inf are written as JSON's NaN/Infinity, which json.loads reads back.
        append_records(self.path, [{"arch": arch, "scores": scores} for arch, scores in scores_by_arch.items()])
        for arch, scores in scores_by_arch.items():
            self.scores.update({(arch, p): v for p, v in scores.items()})


def score_architectures(archs: Sequence[str], proxies: Sequence[str], build: Callable[[str], nn.Module],
                        batch: tuple[torch.Tensor, torch.Tensor], teacher: NetworkOutputs | None,
                        cache: ScoreCache, seed: int = 0, progress: bool = True) -> None:
    """Adds the scores of `proxies` on `archs` that `cache` lacks.

    `build(arch)` makes the network; the global RNG is seeded with `seed` before each build so
    an architecture's initial weights do not depend on the order, the rank or what the cache held.
    """
    from tqdm import tqdm

    for arch in tqdm(archs, disable=not progress, desc="proxies", unit="arch"):
        todo = cache.missing(arch, proxies)
        if todo:
            torch.manual_seed(seed)
            cache.add(arch, score_many(todo, build(arch), batch, teacher))


def score_matrix(cache: ScoreCache, proxies: Sequence[str], archs: Sequence[str]) -> torch.Tensor:
    """Scores [P, N] (float64) of `proxies` on `archs`, all in `cache`."""
    return torch.tensor([[cache.scores[(arch, p)] for arch in archs] for p in proxies], dtype=torch.float64)


def merge_rank_scores(out: Path) -> ScoreCache:
    """Folds the ranks' files into OUT/scores.jsonl (each (arch, proxy) once) and removes them."""
    shards = sorted(out.glob(RANK_SCORES.format("*")))
    merged = ScoreCache(out / "scores.jsonl")
    by_arch: dict[str, dict[str, float]] = {}
    for (arch, proxy), value in read_scores(shards).items():
        if (arch, proxy) not in merged.scores:
            by_arch.setdefault(arch, {})[proxy] = value
    for arch, scores in by_arch.items():
        merged.add(arch, scores)
    for shard in shards:
        shard.unlink()
    return merged


def nan_as_lowest(scores: torch.Tensor) -> torch.Tensor:
    """scores with NaN replaced by -inf, the ranking convention of `correlation_table`.

    A NaN score (jacov of a network whose output ignores its input) ranks below every other
    architecture: the proxy could not score it, and such networks are the worst.
    """
    return torch.where(torch.isnan(scores), -math.inf, scores)


def correlation_table(proxies: Sequence[str], scores: torch.Tensor, accuracy: torch.Tensor) -> list[dict]:
    """One row {proxy, kendall, spearman, pearson, nan_scores, source} per row of scores [P, N].

    Kendall and Spearman rank NaN scores lowest (`nan_as_lowest`); Pearson uses the finite scores
    only. A constant row gives NaN.
    """
    ranked = nan_as_lowest(scores)
    kendall = rank_corr(ranked, accuracy, "kendall")
    spearman = rank_corr(ranked, accuracy, "spearman")
    rows = []
    for i, proxy in enumerate(proxies):
        finite = torch.isfinite(scores[i])
        pearson = math.nan
        if finite.sum() >= 2:
            pearson = torch.corrcoef(torch.stack([scores[i][finite], accuracy[finite]]))[0, 1].item()
        rows.append({"proxy": proxy, "kendall": kendall[i].item(), "spearman": spearman[i].item(),
                     "pearson": pearson, "nan_scores": int(torch.isnan(scores[i]).sum()),
                     "source": get_proxy(proxy).source})
    return rows


def format_markdown(rows: Sequence[dict]) -> str:
    lines = ["| proxy | Kendall tau | Spearman rho | Pearson r | NaN scores |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['proxy']} | " + " | ".join(f"{row[m]:.3f}" for m in METHODS) +
                     f" | {row['nan_scores']} |")
    return "\n".join(lines)


def write_tables(out: Path, rows: Sequence[dict], meta: dict) -> None:
    """OUT/proxy_table.json ({meta..., rows}), proxy_table.csv and proxy_table.md."""
    atomic_write_json(out / "proxy_table.json", {**meta, "rows": list(rows)})
    csv_lines = ["proxy," + ",".join(METHODS) + ",nan_scores"]
    csv_lines += [f"{row['proxy']}," + ",".join(repr(row[m]) for m in METHODS) + f",{row['nan_scores']}"
                  for row in rows]
    (out / "proxy_table.csv").write_text("\n".join(csv_lines) + "\n")
    (out / "proxy_table.md").write_text(format_markdown(rows) + "\n")
