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
from .statistics import CORRELATIONS, correlation_summaries, excludes_zero



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


def correlation_table(proxies: Sequence[str], scores: torch.Tensor, accuracy: torch.Tensor, n_boot: int = 1000,
                      n_perm: int = 1000, seed: int = 0) -> list[dict]:
    """One row per row of scores [P, N]: {proxy, kendall, spearman, pearson, nan_scores, source} and the statistics.

    Kendall and Spearman rank NaN scores lowest (`nan_as_lowest`); Pearson uses the finite scores
    only. A constant row gives NaN. Statistics (fastnas.evaluators.statistics, resampling the
    architectures `n_boot` times with `seed`): `{m}_low`, `{m}_high` (95% bootstrap interval) and `{m}_p`
    (two-sided permutation p-value against no association, `n_perm` permutations) for m = kendall,
    spearman; `best_other`, the other proxy with the highest Kendall tau, and `{m}_diff`, `{m}_diff_low`,
    `{m}_diff_high`, this proxy minus that one on the same resamples (None for a table of one proxy);
    `within_noise`: the Kendall difference's interval holds 0. With n_boot = 0 or fewer than 3
    architectures there are no statistics (those keys are absent).
    """
    ranked = nan_as_lowest(scores)
    with_statistics = n_boot > 0 and n_perm > 0 and scores.shape[1] >= 3
    values = {method: rank_corr(ranked, accuracy, method) for method in CORRELATIONS}
    summaries = correlation_summaries(ranked, accuracy, n_boot=n_boot, n_perm=n_perm, seed=seed) \
        if with_statistics else [None] * len(proxies)
    rows = []
    for i, (proxy, summary) in enumerate(zip(proxies, summaries)):
        finite = torch.isfinite(scores[i])
        pearson = math.nan
        if finite.sum() >= 2:
            pearson = torch.corrcoef(torch.stack([scores[i][finite], accuracy[finite]]))[0, 1].item()
        row = {"proxy": proxy, "kendall": values["kendall"][i].item(), "spearman": values["spearman"][i].item(),
               "pearson": pearson, "nan_scores": int(torch.isnan(scores[i]).sum()), "source": get_proxy(proxy).source}
        rows.append(row)
        if summary is None:
            continue
        for method in CORRELATIONS:
            row.update({f"{method}_low": summary[method]["low"], f"{method}_high": summary[method]["high"],
                        f"{method}_p": summary[method]["p_value"]})
        best = summary["vs_best"]
        row["best_other"] = None if best is None else proxies[best["row"]]
        for method in CORRELATIONS:
            for key, name in (("value", "diff"), ("low", "diff_low"), ("high", "diff_high")):
                row[f"{method}_{name}"] = None if best is None else best[method][key]
        row["within_noise"] = None if best is None else not excludes_zero(best["kendall"])
    return rows


def _interval(row: dict, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_low']:.3f}, {row[key + '_high']:.3f}]"


def format_markdown(rows: Sequence[dict]) -> str:
    """The table with 95% bootstrap intervals, permutation p-values and the paired Kendall difference."""
    if rows and "kendall_low" not in rows[0]:
        lines = ["| proxy | Kendall tau | Spearman rho | Pearson r | NaN scores |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {row['proxy']} | {row['kendall']:.3f} | {row['spearman']:.3f} | {row['pearson']:.3f} | "
                  f"{row['nan_scores']} |" for row in rows]
        return "\n".join(lines)
    lines = ["| proxy | Kendall tau [95% CI] | p | Spearman rho [95% CI] | Pearson r | "
             "Kendall minus the best other [95% CI] | NaN scores |", "|---|---:|---:|---:|---:|---|---:|"]
    for row in rows:
        if row["best_other"] is None:
            difference = "-"
        else:
            verdict = "within noise" if row["within_noise"] else "resolved"
            difference = f"{_interval(row, 'kendall_diff')} vs {row['best_other']} ({verdict})"
        lines.append(f"| {row['proxy']} | {_interval(row, 'kendall')} | {row['kendall_p']:.3g} | "
                     f"{_interval(row, 'spearman')} | {row['pearson']:.3f} | {difference} | {row['nan_scores']} |")
    return "\n".join(lines)


CSV_COLUMNS = ["proxy", "kendall", "kendall_low", "kendall_high", "kendall_p", "spearman", "spearman_low",
               "spearman_high", "spearman_p", "pearson", "best_other", "kendall_diff", "kendall_diff_low",
               "kendall_diff_high", "spearman_diff", "spearman_diff_low", "spearman_diff_high", "within_noise",
               "nan_scores"]


def write_tables(out: Path, rows: Sequence[dict], meta: dict) -> None:
    """OUT/proxy_table.json ({meta..., rows}), proxy_table.csv and proxy_table.md."""
    atomic_write_json(out / "proxy_table.json", {**meta, "rows": list(rows)})
    columns = [c for c in CSV_COLUMNS if not rows or c in rows[0]]
    csv_lines = [",".join(columns)]
    csv_lines += [",".join("" if row[c] is None else row[c] if isinstance(row[c], str) else repr(row[c])
                           for c in columns) for row in rows]
    (out / "proxy_table.csv").write_text("\n".join(csv_lines) + "\n")
    (out / "proxy_table.md").write_text(format_markdown(rows) + "\n")
