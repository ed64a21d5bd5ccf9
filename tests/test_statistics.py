"""fastnas.evaluators.statistics against scipy.stats and plain loops over the same resample indices."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from fastnas.evaluators import statistics
from fastnas.evaluators.statistics import (bootstrap_correlations, bootstrap_indices, correlation_interval,
                                           excludes_zero, paired_difference, permutation_correlations,
                                           permutation_indices, permutation_p_value)

SCIPY = {"kendall": lambda x, y: stats.kendalltau(x, y)[0], "spearman": lambda x, y: stats.spearmanr(x, y)[0]}
METHODS = ["kendall", "spearman"]


def noisy_pair(n=40, noise=1.0, seed=0, levels=None):
    """target [n] and scores [n] correlated with it; with `levels`, scores rounded to that many values (ties)."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, generator=gen, dtype=torch.float64)
    scores = target + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    if levels is not None:
        scores = torch.round(scores * levels / 4)
    return scores, target


def loop_bootstrap(scores, target, method, indices):
    x, y = scores.numpy(), target.numpy()
    return np.array([SCIPY[method](x[i], y[i]) for i in indices.numpy()])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("levels", [None, 3])
def test_interval_matches_scipy_loop(method, levels):
    scores, target = noisy_pair(levels=levels)
    result = correlation_interval(scores, target, method, n_boot=300, seed=5, level=0.9)
    assert result["n"] == 40
    assert result["value"] == pytest.approx(SCIPY[method](scores.numpy(), target.numpy()), abs=1e-12)
    samples = loop_bootstrap(scores, target, method, bootstrap_indices(40, 300, seed=5))
    low, high = np.quantile(samples, [0.05, 0.95])
    assert result["low"] == pytest.approx(low, abs=1e-12) and result["high"] == pytest.approx(high, abs=1e-12)
    assert result["low"] < result["value"] < result["high"]


def test_bootstrap_rows_are_independent_of_batching():
    scores = torch.stack([noisy_pair(seed=s)[0] for s in range(3)])
    target = noisy_pair()[1]
    indices = bootstrap_indices(40, 50, seed=1)
    batched = bootstrap_correlations(scores, target, "kendall", indices)
    assert batched.shape == (3, 50)
    for row in range(3):
        expected = loop_bootstrap(scores[row], target, "kendall", indices)
        np.testing.assert_allclose(batched[row].numpy(), expected, atol=1e-12)


def test_indices_are_reproducible():
    assert torch.equal(bootstrap_indices(10, 7, seed=3), bootstrap_indices(10, 7, seed=3))
    assert not torch.equal(bootstrap_indices(10, 7, seed=3), bootstrap_indices(10, 7, seed=4))
    perms = permutation_indices(10, 7, seed=3)
    assert torch.equal(torch.sort(perms, dim=1).values, torch.arange(10).expand(7, 10))


def test_degenerate_resamples_are_left_out():
    # 3 architectures: some resamples repeat one architecture only (constant) and give NaN.
    scores, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0])
    samples = bootstrap_correlations(scores[None], target, "spearman", bootstrap_indices(3, 200, seed=0))[0]
    assert torch.isnan(samples).any() and torch.isfinite(samples).any()
    finite = samples[torch.isfinite(samples)].numpy()
    result = correlation_interval(scores, target, "spearman", n_boot=200, seed=0)
    assert result["low"] == pytest.approx(np.quantile(finite, 0.025))
    assert result["high"] == pytest.approx(np.quantile(finite, 0.975))


@pytest.mark.parametrize("method", METHODS)
def test_permutation_p_value_matches_loop(method):
    scores, target = noisy_pair(n=25, noise=3.0, seed=2, levels=4)
    n_perm = 400
    perms = permutation_indices(25, n_perm, seed=9).numpy()
    x, y = scores.numpy(), target.numpy()
    observed = SCIPY[method](x, y)
    null = np.array([SCIPY[method](x[p], y) for p in perms])
    expected = (1 + np.sum(np.abs(null) >= abs(observed) * (1 - 1e-12))) / (1 + n_perm)
    assert permutation_p_value(scores, target, method, n_perm=n_perm, seed=9) == pytest.approx(expected)


def test_permutation_p_value_near_scipy_exact():
    # N = 9 without ties: scipy's kendalltau gives the exact two-sided null p-value. With 20,000
    # permutations the estimate's standard error is below 0.0036; 0.015 is four of them.
    scores, target = noisy_pair(n=9, noise=1.5, seed=4)
    exact = stats.kendalltau(scores.numpy(), target.numpy(), method="exact").pvalue
    estimate = permutation_p_value(scores, target, "kendall", n_perm=20_000, seed=0)
    assert 0.02 < exact < 0.98
    assert estimate == pytest.approx(exact, abs=0.015)


def test_permutation_p_value_floor_and_sign():
    target = torch.arange(30, dtype=torch.float64)
    assert permutation_p_value(target, target, "spearman", n_perm=99) == pytest.approx(1 / 100)
    assert permutation_p_value(-target, target, "kendall", n_perm=99) == pytest.approx(1 / 100)  # two-sided
    assert math.isnan(permutation_p_value(torch.ones(30), target, "kendall", n_perm=10))


def test_permutation_blocks_do_not_change_the_result(monkeypatch):
    scores = torch.stack([noisy_pair(seed=s)[0] for s in range(2)])
    target = noisy_pair()[1]
    perms = permutation_indices(40, 30, seed=1)
    whole = permutation_correlations(scores, target, "spearman", perms)
    monkeypatch.setattr(statistics, "_PERMUTATION_BLOCK", 2 * 40 * 7)  # 7 permutations per call
    torch.testing.assert_close(permutation_correlations(scores, target, "spearman", perms), whole, rtol=0, atol=0)
    expected = [[SCIPY["spearman"](scores[r].numpy()[p], target.numpy()) for p in perms.numpy()] for r in range(2)]
    np.testing.assert_allclose(whole.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_paired_difference_matches_loop(method):
    scores_a, target = noisy_pair(noise=0.3, seed=0)
    scores_b = target + 2.0 * torch.randn(40, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    result = paired_difference(scores_a, scores_b, target, method, n_boot=300, seed=2)
    x_a, x_b, y = scores_a.numpy(), scores_b.numpy(), target.numpy()
    assert result["value"] == pytest.approx(SCIPY[method](x_a, y) - SCIPY[method](x_b, y), abs=1e-12)
    indices = bootstrap_indices(40, 300, seed=2).numpy()
    differences = np.array([SCIPY[method](x_a[i], y[i]) - SCIPY[method](x_b[i], y[i]) for i in indices])
    low, high = np.quantile(differences, [0.025, 0.975])
    assert result["low"] == pytest.approx(low, abs=1e-12) and result["high"] == pytest.approx(high, abs=1e-12)
    assert result["n"] == 40
    assert excludes_zero(result)  # noise 0.3 against noise 2.0 on 40 architectures


def test_paired_difference_of_a_proxy_with_itself_is_zero():
    scores, target = noisy_pair()
    result = paired_difference(scores, scores, target, "kendall", n_boot=50)
    assert result == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 40}
    assert not excludes_zero(result)


def test_excludes_zero():
    assert excludes_zero({"low": 0.01, "high": 0.2}) and excludes_zero({"low": -0.3, "high": -0.1})
    assert not excludes_zero({"low": -0.01, "high": 0.2})
    assert not excludes_zero({"low": math.nan, "high": math.nan})


@pytest.mark.parametrize("call, message", [
    (lambda s, t: correlation_interval(s, t, "pearson"), "method: expected one of"),
    (lambda s, t: correlation_interval(s[None], t), "scores: expected a 1-d tensor"),
    (lambda s, t: correlation_interval(s, t[:-1]), "scores: expected 9 values per row"),
    (lambda s, t: correlation_interval(s, t[None]), "target: expected a 1-d tensor"),
    (lambda s, t: correlation_interval(s[:2], t[:2]), "at least 3 architectures"),
    (lambda s, t: correlation_interval(torch.where(s > 0, math.nan, s), t), "scores: expected no NaN"),
    (lambda s, t: correlation_interval(s, torch.full_like(t, math.nan)), "target: expected no NaN"),
    (lambda s, t: correlation_interval(s, t, level=1.0), "level: expected"),
    (lambda s, t: correlation_interval(s, t, n_boot=0), "n_boot: expected an integer >= 1"),
    (lambda s, t: permutation_p_value(s, t, n_perm=2.5), "n_perm: expected an integer"),
    (lambda s, t: paired_difference(s, s[:-1], t), "scores_b: expected"),
    (lambda s, t: bootstrap_correlations(s[None], t, "kendall", torch.zeros(3, 5, dtype=torch.long)), "indices"),
])
def test_bad_input(call, message):
    scores, target = noisy_pair(n=10)
    with pytest.raises(ValueError, match=message):
        call(scores, target)


def test_correlation_summaries_equal_the_single_row_functions():
    rows = torch.stack([noisy_pair(noise=noise, seed=s)[0] for s, noise in enumerate((0.3, 1.0, 3.0))])
    target = noisy_pair(noise=0.3, seed=0)[1]
    summaries = statistics.correlation_summaries(rows, target, n_boot=200, n_perm=200, seed=4)
    assert [s["vs_best"]["row"] for s in summaries] == [1, 0, 0]  # the best other row by Kendall tau
    for i, summary in enumerate(summaries):
        assert summary["n"] == 40
        for method in METHODS:
            interval = correlation_interval(rows[i], target, method, n_boot=200, seed=4)
            assert summary[method]["value"] == pytest.approx(interval["value"], abs=1e-12)
            assert (summary[method]["low"], summary[method]["high"]) == pytest.approx((interval["low"],
                                                                                       interval["high"]), abs=1e-12)
            p_value = permutation_p_value(rows[i], target, method, n_perm=200, seed=4)
            assert summary[method]["p_value"] == pytest.approx(p_value)
            j = summary["vs_best"]["row"]
            difference = paired_difference(rows[i], rows[j], target, method, n_boot=200, seed=4)
            assert summary["vs_best"][method] == pytest.approx({k: difference[k] for k in ("value", "low", "high")},
                                                               abs=1e-12)
    alone = statistics.correlation_summaries(rows[:1], target, n_boot=20, n_perm=20)
    assert alone[0]["vs_best"] is None
