"""rank_corr against scipy.stats (kendalltau, spearmanr) row by row: values, ties, NaN, fuzzing, bad input."""

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fastnas.ops import _reference, rank_corr
from conftest import DEVICES, noncontiguous, requires_cuda

METHODS = ["kendall", "spearman"]
SCIPY = {"kendall": stats.kendalltau, "spearman": stats.spearmanr}


def scipy_rows(scores: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """scipy's statistic for every row, in float64 (NaN where scipy gives NaN)."""
    y = target.detach().double().cpu().numpy()
    values = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input / too few values: scipy warns, returns NaN
        for x in scores.detach().double().cpu().numpy():
            values.append(float(SCIPY[method](x, y)[0]))
    return torch.tensor(values, dtype=torch.float64).reshape(scores.shape[0])


def assert_matches_scipy(scores, target, method, atol=1e-6):
    result = rank_corr(scores, target, method)
    assert result.shape == (scores.shape[0],)
    assert result.dtype == scores.dtype and result.device == scores.device
    torch.testing.assert_close(result.double().cpu(), scipy_rows(scores, target, method), atol=atol, rtol=0,
                               equal_nan=True)


def make_case(rows, n, device, dtype=torch.float64, seed=0, levels=None):
    """Random scores [rows, n] and target [n]; with `levels`, integers in [0, levels) (heavy ties)."""
    gen = torch.Generator().manual_seed(seed)
    if levels is None:
        scores, target = torch.randn(rows, n, generator=gen), torch.randn(n, generator=gen)
    else:
        scores = torch.randint(0, levels, (rows, n), generator=gen).float()
        target = torch.randint(0, levels, (n,), generator=gen).float()
    return scores.to(device, dtype), target.to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels", [None, 2, 3, 7])
def test_matches_scipy(device, method, dtype, levels):
    scores, target = make_case(37, 53, device, dtype, seed=1, levels=levels)
    assert_matches_scipy(scores, target, method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_matches_reference(device, method):
    scores, target = make_case(9, 41, device, levels=5)
    torch.testing.assert_close(rank_corr(scores, target, method), _reference.rank_corr(scores, target, method),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_large_n(device, method):
    # N = 10,000 must not build an N x N tensor; ties mixed in through rounding.
    scores, target = make_case(4, 10_000, device, seed=2)
    scores[1] = torch.round(scores[1] * 4)
    scores[3] = -target + 0.01 * scores[3]
    assert_matches_scipy(scores, target, method)


def test_hand_computed():
    # x = (1, 2, 3, 4), y = (1, 3, 2, 4): 5 concordant pairs and 1 discordant of 6 -> tau = 4/6;
    # rank differences (0, 1, 1, 0) -> rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    # x = (1, 1, 2, 3), y = (1, 2, 3, 3): 4 concordant, one pair tied in x only, one in y only
    # -> tau_b = 4 / sqrt(5 * 5) = 0.8; ranks (1.5, 1.5, 3, 4), (1, 2, 3.5, 3.5) -> rho = 4 / 4.5.
    # A reversed row gives -1 for both.
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], [4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 3.0]], dtype=torch.float64)
    assert rank_corr(scores[:1], target[0], "kendall").item() == pytest.approx(4 / 6, abs=1e-15)
    assert rank_corr(scores[:1], target[0], "spearman").item() == pytest.approx(0.8, abs=1e-15)
    assert rank_corr(scores[1:2], target[1], "kendall").item() == pytest.approx(0.8, abs=1e-15)
    assert rank_corr(scores[1:2], target[1], "spearman").item() == pytest.approx(4 / 4.5, abs=1e-15)
    identity = torch.arange(4.0, dtype=torch.float64)
    torch.testing.assert_close(rank_corr(scores[[0, 2]], identity, "kendall"),
                               torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(rank_corr(scores[[0, 2]], identity, "spearman"),
                               torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_default_method_is_kendall():
    scores, target = make_case(3, 20, "cpu", levels=4)
    torch.testing.assert_close(rank_corr(scores, target), rank_corr(scores, target, "kendall"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_nan_rows(device, method):
    scores, target = make_case(5, 12, device, levels=4)
    scores[1] = 2.0                 # constant row
    scores[3, 7] = float("nan")     # NaN in one row only
    result = rank_corr(scores, target, method)
    assert torch.isnan(result[[1, 3]]).all()
    assert not torch.isnan(result[[0, 2, 4]]).any()
    assert_matches_scipy(scores, target, method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_nan_or_constant_target_gives_all_nan(device, method):
    scores, target = make_case(3, 8, device)
    assert torch.isnan(rank_corr(scores, torch.full_like(target, 3.0), method)).all()
    target[5] = float("nan")
    assert torch.isnan(rank_corr(scores, target, method)).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_values_gives_nan(device, method, n):
    scores, target = make_case(3, n, device)
    result = rank_corr(scores, target, method)
    assert result.shape == (3,) and torch.isnan(result).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_empty_batch(device, method):
    scores, target = make_case(0, 7, device, dtype=torch.float32)
    result = rank_corr(scores, target, method)
    assert result.shape == (0,) and result.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_infinities_rank_as_extremes(device, method):
    # scipy ranks +-inf as the largest / smallest values; so does the kernel.
    scores = torch.tensor([[float("-inf"), 0.0, 1.0, float("inf"), float("inf")]], dtype=torch.float64,
                          device=device)
    target = torch.tensor([0.0, 1.0, 2.0, 3.0, 2.5], dtype=torch.float64, device=device)
    assert_matches_scipy(scores, target, method)


@pytest.mark.parametrize("device", DEVICES)
def test_result_is_detached(device):
    scores, target = make_case(3, 10, device)
    scores.requires_grad_()
    for method in METHODS:
        assert not rank_corr(scores, target, method).requires_grad


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for levels in (None, 3):
        scores, target = make_case(6, 17, device, dtype=torch.float32, levels=levels)
        for method in METHODS:
            torch.library.opcheck(torch.ops.fastnas.rank_corr.default, (scores, target, method))


@requires_cuda
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half(method, dtype):
    # Small integers are exact in half precision, so only the result's rounding differs from scipy.
    scores, target = make_case(11, 300, "cuda", dtype=dtype, levels=9)
    assert_matches_scipy(scores, target, method, atol=1e-2)


@requires_cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    scores, target = make_case(70, 1500, "cpu", levels=40)
    torch.testing.assert_close(rank_corr(scores.cuda(), target.cuda(), method).cpu(),
                               rank_corr(scores, target, method), atol=1e-12, rtol=0)


@given(
    rows=st.integers(1, 6), n=st.integers(0, 40), levels=st.sampled_from([None, 2, 3, 10]),
    dtype=st.sampled_from([torch.float32, torch.float64]), contiguous=st.booleans(),
    nan_row=st.one_of(st.none(), st.integers(0, 5)), seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_scipy(rows, n, levels, dtype, contiguous, nan_row, seed):
    scores, target = make_case(rows, n, "cpu", dtype=dtype, seed=seed, levels=levels)
    if nan_row is not None and nan_row < rows and n > 0:
        scores[nan_row, seed % n] = float("nan")
    if not contiguous:
        scores = noncontiguous(scores)
    for method in METHODS:
        assert_matches_scipy(scores, target, method)


class TestBadInput:
    def setup_method(self):
        self.scores, self.target = make_case(3, 6, "cpu", dtype=torch.float32)

    def call(self, scores=None, target=None, method="kendall"):
        return rank_corr(self.scores if scores is None else scores, self.target if target is None else target,
                         method)

    def test_scores_not_2d(self):
        with pytest.raises(RuntimeError, match=r"scores: expected a 2-d tensor \[P, N\]"):
            self.call(scores=self.scores[0])

    def test_target_not_1d(self):
        with pytest.raises(RuntimeError, match=r"target: expected a 1-d tensor \[N\]"):
            self.call(target=self.target[None])

    def test_length_mismatch(self):
        with pytest.raises(RuntimeError, match=r"target: expected 6 values \(N = scores.size\(1\)\), got 5"):
            self.call(target=self.target[:5])

    def test_mixed_dtypes(self):
        with pytest.raises(RuntimeError, match=r"target: expected dtype Float like scores, got Double"):
            self.call(target=self.target.double())

    def test_integer_scores(self):
        with pytest.raises(RuntimeError, match=r"scores: expected a floating tensor"):
            self.call(scores=self.scores.long(), target=self.target.long())

    def test_half_scores_on_cpu(self):
        with pytest.raises(RuntimeError, match=r"scores: expected a floating tensor \(float32, float64\)"):
            self.call(scores=self.scores.half(), target=self.target.half())

    def test_unknown_method(self):
        with pytest.raises(RuntimeError, match=r"method: expected one of kendall, spearman, got 'pearson'"):
            self.call(method="pearson")

    @requires_cuda
    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"target: expected a tensor on cuda"):
            self.call(scores=self.scores.cuda())


def test_nan_is_float_nan():
    # The NaN rows are real NaN values in the scores' dtype, not a sentinel.
    result = rank_corr(torch.ones(1, 4), torch.arange(4.0))
    assert math.isnan(result.item())
