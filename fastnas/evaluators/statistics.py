"""How sure a rank correlation is: bootstrap intervals, permutation p-values and paired differences.

A proxy's Kendall tau or Spearman rho on N architectures is an estimate; with N = 26 its null
standard deviation is about 0.14, larger than the gaps between most proxies. These functions say
how wide the uncertainty is, resampling *architectures* (the unit that was sampled):

* `correlation_interval`: the correlation and its bootstrap percentile interval;
* `permutation_p_value`: two-sided p-value of "no association" by permuting the target;
* `paired_difference`: corr(a) - corr(b) and its interval, both proxies on the *same* resamples,
  so a claim "a ranks better than b" holds only when that interval excludes zero.

The batched forms (`bootstrap_correlations`, `permutation_correlations`) take P score rows at once
and are what the proxy tables call. Every correlation is `fastnas.ops.rank_corr` (scipy's
kendalltau tau-b / spearmanr, ties included). A permutation keeps the target fixed, so all
permutations of all rows are one rank_corr call; a bootstrap resample changes the target too, so
it is one call per resample, covering all P rows.

Scores must be NaN-free: rank unscorable networks first (`proxy_table.nan_as_lowest` ranks NaN lowest).
"""

from __future__ import annotations

import math

import torch

from ..ops import rank_corr

CORRELATIONS = ("kendall", "spearman")
# Elements of one rank_corr call in the permutation test: the permuted rows are sent in blocks of this size.
_PERMUTATION_BLOCK = 1 << 22


def _check_inputs(scores: torch.Tensor, target: torch.Tensor, method: str, dims: int,
                  name: str = "scores") -> tuple[torch.Tensor, torch.Tensor]:
    """scores and target as float64 CPU tensors; ValueError naming the argument (`name`) for bad input."""
    if method not in CORRELATIONS:
        raise ValueError(f"method: expected one of {CORRELATIONS}, got {method!r}")
    scores = torch.as_tensor(scores, dtype=torch.float64).detach().cpu()
    target = torch.as_tensor(target, dtype=torch.float64).detach().cpu()
    if scores.dim() != dims:
        shape = "[N]" if dims == 1 else "[P, N]"
        raise ValueError(f"{name}: expected a {dims}-d tensor {shape}, got shape {tuple(scores.shape)}")
    if target.dim() != 1:
        raise ValueError(f"target: expected a 1-d tensor [N], got shape {tuple(target.shape)}")
    if target.shape[0] != scores.shape[-1]:
        raise ValueError(f"{name}: expected {target.shape[0]} values per row (one per architecture of target), "
                         f"got {scores.shape[-1]}")
    if scores.shape[-1] < 3:
        raise ValueError(f"{name}: expected at least 3 architectures, got {scores.shape[-1]}")
    if torch.isnan(scores).any():
        raise ValueError(f"{name}: expected no NaN (rank unscorable networks with nan_as_lowest first)")
    if torch.isnan(target).any():
        raise ValueError("target: expected no NaN")
    return scores, target


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level!r}")


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> torch.Tensor:
    """Resamples of N architectures with replacement: LongTensor [n_boot, n], reproducible from `seed`."""
    _check_count("n", n)
    _check_count("n_boot", n_boot)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=generator)


def permutation_indices(n: int, n_perm: int, seed: int = 0) -> torch.Tensor:
    """Random permutations of range(n): LongTensor [n_perm, n], reproducible from `seed`."""
    _check_count("n", n)
    _check_count("n_perm", n_perm)
    generator = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(n_perm, n, generator=generator, dtype=torch.float64), dim=1)


def bootstrap_correlations(scores: torch.Tensor, target: torch.Tensor, method: str,
                           indices: torch.Tensor) -> torch.Tensor:
    """Correlation of every row on every resample.

    Args:
        scores: [P, N] proxy scores (no NaN). target: [N]. method: kendall or spearman.
        indices: [B, N] resampled architecture indices (`bootstrap_indices`).

    Returns:
        [P, B] float64; NaN for a resample on which a row or the target is constant.
    """
    scores, target = _check_inputs(scores, target, method, dims=2)
    if indices.dim() != 2 or indices.shape[1] != scores.shape[1]:
        raise ValueError(f"indices: expected shape [B, {scores.shape[1]}], got {tuple(indices.shape)}")
    columns = [rank_corr(scores[:, resample], target[resample], method) for resample in indices]
    return torch.stack(columns, dim=1)


def permutation_correlations(scores: torch.Tensor, target: torch.Tensor, method: str,
                             permutations: torch.Tensor) -> torch.Tensor:
    """Correlation of every row with the target under each permutation of the pairing: [P, M] float64.

    corr(scores[p, perm], target) equals corr(scores[p], target[inverse perm]): permuting the
    scores leaves the target fixed, so P x M rows go through rank_corr in a few calls.
    """
    scores, target = _check_inputs(scores, target, method, dims=2)
    if permutations.dim() != 2 or permutations.shape[1] != scores.shape[1]:
        raise ValueError(f"permutations: expected shape [M, {scores.shape[1]}], got {tuple(permutations.shape)}")
    rows, n = scores.shape
    block = max(1, _PERMUTATION_BLOCK // (rows * n))
    parts = []
    for start in range(0, permutations.shape[0], block):
        permuted = scores[:, permutations[start:start + block]]  # [P, m, N]
        parts.append(rank_corr(permuted.reshape(-1, n), target, method).reshape(rows, -1))
    return torch.cat(parts, dim=1)


def percentile_interval(samples: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """(low, high): the (1 - level)/2 and (1 + level)/2 quantiles of the finite samples [B].

    Linear interpolation between order statistics, as numpy.quantile's default; (nan, nan) when
    no sample is finite.
    """
    _check_level(level)
    finite = samples[torch.isfinite(samples)].double()
    if finite.numel() == 0:
        return math.nan, math.nan
    bounds = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(finite, bounds).tolist()
    return low, high


def correlation_interval(scores: torch.Tensor, target: torch.Tensor, method: str = "spearman", n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> dict:
    """Rank correlation of scores [N] with target [N] and its bootstrap percentile interval.

    Returns:
        {"value": the correlation on all N, "low", "high": the interval at `level` over `n_boot`
        resamples of the architectures, "n": N}.
    """
    scores, target = _check_inputs(scores, target, method, dims=1)
    _check_level(level)
    indices = bootstrap_indices(scores.shape[0], n_boot, seed)
    samples = bootstrap_correlations(scores[None], target, method, indices)[0]
    low, high = percentile_interval(samples, level)
    value = rank_corr(scores[None], target, method)[0].item()
    return {"value": value, "low": low, "high": high, "n": scores.shape[0]}


def permutation_p_value(scores: torch.Tensor, target: torch.Tensor, method: str = "spearman", n_perm: int = 1000,
                        seed: int = 0) -> float:
    """Two-sided p-value of a correlation of scores [N] with target [N] against no association.

    p = (1 + #{permutations with |corr| >= |observed corr|}) / (1 + n_perm): the observed pairing
    counts as one of the permutations, so p is never 0 (the add-one estimate of Phipson & Smyth
    2010, as scipy.stats.permutation_test for random permutations). The smallest possible p is
    1 / (1 + n_perm). NaN when the observed correlation is NaN (constant scores or target).
    """
    scores, target = _check_inputs(scores, target, method, dims=1)
    observed = rank_corr(scores[None], target, method)
    null = permutation_correlations(scores[None], target, method, permutation_indices(scores.shape[0], n_perm, seed))
    return _p_values(observed, null)[0]


def _p_values(observed: torch.Tensor, null: torch.Tensor) -> list[float]:
    """Two-sided add-one p-values of observed [P] against the permutation correlations null [P, M]."""
    # A relative tolerance so a permutation that ties the observed value counts despite rounding.
    as_extreme = (null.abs() >= observed.abs()[:, None] * (1 - 1e-12)).sum(dim=1)
    return [math.nan if math.isnan(value) else (1 + int(count)) / (1 + null.shape[1])
            for value, count in zip(observed.tolist(), as_extreme)]


def paired_difference(scores_a: torch.Tensor, scores_b: torch.Tensor, target: torch.Tensor,
                      method: str = "spearman", n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """corr(a) - corr(b) and its bootstrap interval, both correlations on the same resamples.

    Returns:
        {"value", "low", "high", "n"}. The difference is resolved only when the interval
        excludes 0 (`excludes_zero`); otherwise a and b rank within noise of each other.
    """
    scores_a, target = _check_inputs(scores_a, target, method, dims=1, name="scores_a")
    scores_b, _ = _check_inputs(scores_b, target, method, dims=1, name="scores_b")
    pair = torch.stack([scores_a, scores_b])
    _check_level(level)
    samples = bootstrap_correlations(pair, target, method, bootstrap_indices(pair.shape[1], n_boot, seed))
    low, high = percentile_interval(samples[0] - samples[1], level)
    value = rank_corr(pair, target, method)
    return {"value": (value[0] - value[1]).item(), "low": low, "high": high, "n": pair.shape[1]}


def excludes_zero(interval: dict) -> bool:
    """True when an interval {"low", "high"} lies wholly on one side of 0 (NaN bounds: False)."""
    return bool(interval["low"] > 0 or interval["high"] < 0)


def _without_nan(values: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(values), -math.inf, values)


def correlation_summaries(scores: torch.Tensor, target: torch.Tensor, n_boot: int = 1000, n_perm: int = 1000,
                          seed: int = 0, level: float = 0.95) -> list[dict]:
    """Everything a proxy table reports about each row of scores [P, N] (no NaN), all rows on the same resamples.

    Returns one dict per row:
        {"kendall": {"value", "low", "high", "p_value"}, "spearman": {...}, "n": N,
         "vs_best": {"row": j, "kendall": {"value", "low", "high"}, "spearman": {...}}}
    where j is the other row with the highest Kendall tau (vs_best is None when P = 1) and vs_best holds the
    paired difference row - row j (`paired_difference` for every pair at once: the same bootstrap
    indices for every row and both correlations).
    """
    scores, target = _check_inputs(scores, target, "kendall", dims=2)
    _check_level(level)
    rows, n = scores.shape
    indices, permutations = bootstrap_indices(n, n_boot, seed), permutation_indices(n, n_perm, seed)
    kendall = _without_nan(rank_corr(scores, target, "kendall"))
    out: list[dict] = []
    for i in range(rows):
        others = [j for j in range(rows) if j != i]
        best = max(others, key=lambda j: kendall[j].item()) if others else None
        out.append({"n": n, "vs_best": None if best is None else {"row": best}})
    for method in CORRELATIONS:
        values = rank_corr(scores, target, method)
        samples = bootstrap_correlations(scores, target, method, indices)
        p_values = _p_values(values, permutation_correlations(scores, target, method, permutations))
        for i, row in enumerate(out):
            low, high = percentile_interval(samples[i], level)
            row[method] = {"value": values[i].item(), "low": low, "high": high, "p_value": p_values[i]}
            if row["vs_best"] is not None:
                j = row["vs_best"]["row"]
                low, high = percentile_interval(samples[i] - samples[j], level)
                row["vs_best"][method] = {"value": (values[i] - values[j]).item(), "low": low, "high": high}
    return out
