"""foreach_reduce against its reference: values, gradients, opcheck, fuzzing and bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastnas.ops import _reference, foreach_reduce
from conftest import DEVICES, noncontiguous, requires_cuda

TRANSFORMS = list(_reference.FOREACH_TRANSFORMS)
REDUCTIONS = list(_reference.FOREACH_REDUCTIONS)
# Shapes of a small CNN's layers plus the edge cases: 0-d, empty, odd sizes.
SHAPES = [(8, 3, 3, 3), (16, 8, 3, 3), (16,), (), (0,), (2, 0, 3), (5, 7), (3, 1, 5, 2), (1,)]


def away_from_zero(shape, gen, dtype=torch.float64, low=0.2, high=0.8):
    """Values with |x| in [low, high] and random signs: no kinks (abs, relu, sqrt, l1 of
    log_abs, which is 0 at |x| ~ 1) within reach of a finite difference."""
    magnitude = low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    return (magnitude * sign).to(dtype)


def make_tensors(shapes, device, dtype=torch.float64, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_(requires_grad)
            for s in shapes]


def assert_matches_reference(tensors, transform, reduction, rtol=1e-7, atol=1e-10):
    """Output and gradients (with a random output gradient) against the float64 reference."""
    result = foreach_reduce(tensors, transform, reduction)
    assert result.shape == (len(tensors),) and result.dtype == tensors[0].dtype
    wide = [t.detach().double().requires_grad_() for t in tensors]
    expected = _reference.foreach_reduce(wide, transform, reduction)
    torch.testing.assert_close(result.double(), expected, rtol=rtol, atol=atol, equal_nan=True)
    grad = torch.randn(len(tensors), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad(result, tensors, grad.to(result), allow_unused=True)
    want = torch.autograd.grad(expected, wide, grad.to(expected.device), allow_unused=True)
    for g, w, t in zip(got, want, tensors):
        w = torch.zeros_like(t, dtype=torch.float64) if w is None else w
        assert g.shape == t.shape
        torch.testing.assert_close(g.double(), w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_matches_reference(device, transform, reduction):
    tensors = make_tensors(SHAPES, device)
    assert_matches_reference(tensors, transform, reduction)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("transform", ["identity", "abs", "exp", "log_abs", "tanh", "relu"])
def test_float32_matches_float64_reference(device, transform, reduction):
    # Layer-sized tensors that split into several chunks, next to tiny ones; the
    # CPU accumulates float32 in double, CUDA in float.
    tensors = make_tensors([(64, 32, 3, 3), (70000,), (7,), ()], device, dtype=torch.float32)
    assert_matches_reference(tensors, transform, reduction, rtol=2e-5, atol=1e-5)


def test_hand_computed():
    x = torch.tensor([3.0, -4.0], dtype=torch.float64, requires_grad=True)
    cases = {
        ("identity", "sum"): (-1.0, [1.0, 1.0]),
        ("abs", "mean"): (3.5, [0.5, -0.5]),
        ("square", "sum"): (25.0, [6.0, -8.0]),
        ("identity", "l2"): (5.0, [3 / 5, -4 / 5]),
        ("identity", "l1"): (7.0, [1.0, -1.0]),
        # y = (9, 16), ||y|| = sqrt(337); d/dx = y / ||y|| * 2x
        ("square", "l2"): (math.sqrt(337.0), [9 / math.sqrt(337.0) * 6, 16 / math.sqrt(337.0) * -8]),
        ("relu", "sum"): (3.0, [1.0, 0.0]),
        ("pow4", "sum"): (81.0 + 256.0, [108.0, -256.0]),
        ("sqrt_abs", "sum"): (math.sqrt(3) + 2.0, [0.5 / math.sqrt(3), -0.25]),
    }
    for (transform, reduction), (value, grad) in cases.items():
        result = foreach_reduce([x], transform, reduction)
        torch.testing.assert_close(result, torch.tensor([value], dtype=torch.float64))
        (got,) = torch.autograd.grad(result.sum(), x)
        torch.testing.assert_close(got, torch.tensor(grad, dtype=torch.float64))


def test_empty_tensors_and_defaults():
    empty, scalar = torch.zeros(0, 3, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    torch.testing.assert_close(foreach_reduce([empty, scalar]), torch.tensor([0.0, -2.0], dtype=torch.float64))
    for reduction in ("sum", "l1", "l2"):
        assert foreach_reduce([empty], "exp", reduction).item() == 0.0
    result = foreach_reduce([empty, scalar], "abs", "mean")
    assert math.isnan(result[0].item()) and result[1].item() == 2.0
    # A norm of 0 has gradient 0, as torch.linalg.vector_norm.
    zeros = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    foreach_reduce([zeros], "identity", "l2").sum().backward()
    assert (zeros.grad == 0).all()


def test_derivative_at_zero_is_zero_for_abs_and_sqrt_abs():
    for transform in ("abs", "sqrt_abs", "relu"):
        x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        foreach_reduce([x], transform, "sum").backward()
        assert (x.grad == 0).all(), transform


def test_deterministic_across_thread_counts():
    gen = torch.Generator().manual_seed(3)
    tensors = [torch.randn(s, generator=gen) for s in [(300000,), (5,), (40000,), (33, 1000), (1,)]]
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(foreach_reduce(tensors, "square", "sum"))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_gradcheck(device, transform):
    gen = torch.Generator().manual_seed(2)
    tensors = [away_from_zero(s, gen).to(device).requires_grad_() for s in [(2, 3), (4,), (), (1, 2, 2)]]
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda *t: foreach_reduce(list(t), transform, reduction), tensors)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    tensors = make_tensors([(2, 3, 4), (5,), (), (0, 2)], device, dtype=torch.float32)
    for transform, reduction in [("identity", "sum"), ("square", "l2"), ("log_abs", "mean"), ("tanh", "l1")]:
        # opcheck compares outputs without equal_nan: leave out the empty tensor for mean (NaN).
        args = tensors[:-1] if reduction == "mean" else tensors
        torch.library.opcheck(torch.ops.fastnas.foreach_reduce.default, (args, transform, reduction))
        grad = torch.randn(len(args), device=device)
        torch.library.opcheck(torch.ops.fastnas.foreach_reduce_backward.default,
                              (grad, [t.detach() for t in args], transform, reduction))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_half_precision_cuda(dtype, reduction):
    # Half inputs, float accumulation: compare with the float64 reference of the same values.
    gen = torch.Generator().manual_seed(4)
    shapes = [(64, 32, 3, 3), (100000,), (3,), ()]
    tensors = [away_from_zero(s, gen, dtype=dtype).cuda().requires_grad_() for s in shapes]
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for transform in ("identity", "abs", "square", "exp", "log_abs", "tanh", "sigmoid"):
        assert_matches_reference(tensors, transform, reduction, rtol=tol, atol=tol)


@requires_cuda
def test_many_tensors_cuda_matches_cpu():
    # More tensors than one launch table holds and a tensor spanning many blocks.
    gen = torch.Generator().manual_seed(5)
    cpu = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(3, 5)] * 150 + [(2_000_000,), (0,)]]
    cuda = [t.cuda() for t in cpu]
    for transform, reduction in [("abs", "mean"), ("square", "l2"), ("sigmoid", "sum")]:
        torch.testing.assert_close(foreach_reduce(cuda, transform, reduction).cpu(),
                                   foreach_reduce(cpu, transform, reduction), equal_nan=True)


@requires_cuda
def test_cuda_atomics_alert_deterministic_mode():
    # The forward and l2's backward (which recomputes the norms) add float atomics; sum's backward adds none.
    tensors = make_tensors([(3, 4), (5,)], "cuda", dtype=torch.float32, requires_grad=False)
    grad = torch.ones(2, device="cuda")
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match=r"fastnas::foreach_reduce \(CUDA\)"):
            torch.ops.fastnas.foreach_reduce(tensors, "square", "sum")
        with pytest.raises(RuntimeError, match=r"fastnas::foreach_reduce_backward \(CUDA, reduction='l2'\)"):
            torch.ops.fastnas.foreach_reduce_backward(grad, tensors, "identity", "l2")
        grads = torch.ops.fastnas.foreach_reduce_backward(grad, tensors, "square", "sum")
        torch.testing.assert_close(grads[1], 2 * tensors[1])
    finally:
        torch.use_deterministic_algorithms(False)


@given(
    shapes=st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=4), min_size=1, max_size=8),
    transform=st.sampled_from(TRANSFORMS), reduction=st.sampled_from(REDUCTIONS),
    contiguous=st.lists(st.booleans(), min_size=8, max_size=8), scale=st.floats(0.05, 4.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_reference(shapes, transform, reduction, contiguous, scale, seed):
    # |x| <= ~4 * 5 sigma keeps exp and pow4 finite; randn never gives an exact 0
    # (where sqrt_abs has no derivative).
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for shape, keep in zip(shapes, contiguous):
        x = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        tensors.append((x if keep else noncontiguous(x)).requires_grad_())
    assert_matches_reference(tensors, transform, reduction, rtol=1e-7, atol=1e-9)


class TestBadInput:
    def setup_method(self):
        self.tensors = [torch.randn(2, 3), torch.randn(4)]

    def test_empty_list(self):
        with pytest.raises(ValueError, match=r"tensors: expected a non-empty list"):
            foreach_reduce([], "abs", "sum")

    def test_unknown_transform(self):
        with pytest.raises(RuntimeError, match=r"transform: expected one of identity, abs, square, pow4, exp, "
                                               r"log_abs, sqrt_abs, sigmoid, tanh, relu, got 'log'"):
            foreach_reduce(self.tensors, "log", "sum")

    def test_unknown_reduction(self):
        with pytest.raises(RuntimeError, match=r"reduction: expected one of sum, mean, l1, l2, got 'max'"):
            foreach_reduce(self.tensors, "abs", "max")

    def test_mixed_dtypes(self):
        with pytest.raises(RuntimeError, match=r"tensors\[1\]: expected dtype Float like tensors\[0\], got Double"):
            foreach_reduce([self.tensors[0], self.tensors[1].double()])

    def test_integer_dtype(self):
        with pytest.raises(RuntimeError, match=r"tensors\[0\]: expected a floating tensor"):
            foreach_reduce([torch.arange(4), torch.arange(3)])

    def test_half_on_cpu(self):
        with pytest.raises(RuntimeError, match=r"tensors\[0\]: expected a floating tensor \(float32, float64\)"):
            foreach_reduce([t.half() for t in self.tensors])

    def test_backward_grad_shape(self):
        with pytest.raises(RuntimeError, match=r"grad: expected shape \[2\] \(one value per tensor\)"):
            torch.ops.fastnas.foreach_reduce_backward(torch.ones(3), self.tensors, "abs", "sum")

    @requires_cuda
    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"tensors\[1\]: expected a tensor on"):
            foreach_reduce([self.tensors[0].cuda(), self.tensors[1]])
