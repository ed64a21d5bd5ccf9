"""pair_distance and gram_distance against their reference: values, gradients, opcheck, fuzzing, bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastnas.ops import _reference, gram_distance, pair_distance
from conftest import DEVICES, noncontiguous, requires_cuda

METRICS = ["l1", "l2", "kl", "cosine", "pearson"]


def make_pair(batch, dim, device="cpu", dtype=torch.float64, seed=0, scale=1.0, teacher_dim=None):
    gen = torch.Generator().manual_seed(seed)
    student = (scale * torch.randn(batch, dim, generator=gen, dtype=torch.float64)).to(device, dtype)
    teacher = (scale * torch.randn(batch, dim if teacher_dim is None else teacher_dim, generator=gen,
                                   dtype=torch.float64)).to(device, dtype)
    return student.requires_grad_(), teacher.requires_grad_()


def assert_close_with_grads(fn, ref_fn, inputs, atol=1e-10, rtol=1e-7, seed=1):
    result = fn(*inputs)
    expected = ref_fn(*inputs)
    torch.testing.assert_close(result, expected, atol=atol, rtol=rtol, equal_nan=True)
    if expected.numel() == 0 or torch.isnan(expected).any():
        return
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grad = grad.to(expected.device, expected.dtype)
    got = torch.autograd.grad(result, inputs, grad)
    want = torch.autograd.grad(expected, inputs, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol)


def check_pair(student, teacher, metric, **tolerances):
    assert_close_with_grads(lambda s, t: pair_distance(s, t, metric),
                            lambda s, t: _reference.pair_distance(s, t, metric), [student, teacher], **tolerances)


def check_gram(student, teacher, **tolerances):
    assert_close_with_grads(gram_distance, _reference.gram_distance, [student, teacher], **tolerances)


# --------------------------------------------------------------------------- pair_distance

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_matches_reference(device, metric):
    check_pair(*make_pair(6, 37, device), metric)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_matches_reference_float32_wide_rows(device, metric):
    # Rows long enough for several CUDA warps and several CPU tasks.
    student, teacher = make_pair(300, 1000, device, dtype=torch.float32, scale=3.0)
    check_pair(student, teacher, metric, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("metric, value", [
    ("l1", 2.0),
    ("l2", math.sqrt(2.0)),
    # p_t = (1, e) / (1 + e), p_s = (e, 1) / (1 + e): KL = p_t0 (-1) + p_t1 (+1) = (e - 1) / (e + 1).
    ("kl", (math.e - 1) / (math.e + 1)),
    ("cosine", 1.0),  # orthogonal
    ("pearson", 2.0),  # centred: (1/2, -1/2) vs (-1/2, 1/2), opposite
])
def test_hand_computed(metric, value):
    student = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(pair_distance(student, teacher, metric), torch.tensor([value], dtype=torch.float64))


@pytest.mark.parametrize("metric, grad_student, grad_teacher", [
    ("l1", [1.0, -1.0], [-1.0, 1.0]),
    ("l2", [1 / math.sqrt(2), -1 / math.sqrt(2)], [-1 / math.sqrt(2), 1 / math.sqrt(2)]),
    # d/ds = p_s - p_t = (e - 1, 1 - e) / (1 + e)
    ("kl", [(math.e - 1) / (math.e + 1), (1 - math.e) / (math.e + 1)], None),
    # d/ds (1 - s.t / |s||t|) = -(t - cos s) = -t at cos = 0
    ("cosine", [0.0, -1.0], [-1.0, 0.0]),
])
def test_hand_computed_gradients(metric, grad_student, grad_teacher):
    student = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    pair_distance(student, teacher, metric).sum().backward()
    torch.testing.assert_close(student.grad, torch.tensor([grad_student], dtype=torch.float64))
    if grad_teacher is not None:
        torch.testing.assert_close(teacher.grad, torch.tensor([grad_teacher], dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_l2_gradient_is_zero_at_equal_rows(device):
    student, teacher = make_pair(3, 5, device)
    teacher = torch.cat([student[:1].detach(), teacher[1:].detach()]).requires_grad_()
    result = pair_distance(student, teacher, "l2")
    assert result[0].item() == 0
    result.sum().backward()
    assert (student.grad[0] == 0).all() and (teacher.grad[0] == 0).all()
    assert (student.grad[1:] != 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", ["cosine", "pearson"])
def test_norm_floor_rows(device, metric):
    # A zero row (pearson: a constant row) sits under the 1e-8 norm floor; so does a tiny one.
    student, teacher = make_pair(4, 6, device)
    student = student.detach().clone()
    student[0] = 0.0 if metric == "cosine" else 3.0
    student[1] = 1e-10
    student[2] = 1e-10 * torch.arange(6, dtype=torch.float64)
    check_pair(student.requires_grad_(), teacher, metric)


@pytest.mark.parametrize("device", DEVICES)
def test_kl_is_stable_for_large_logits(device):
    student, teacher = make_pair(4, 10, device, scale=300.0)
    result = pair_distance(student, teacher, "kl")
    assert torch.isfinite(result).all()
    check_pair(student, teacher, "kl", atol=1e-8, rtol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_one_feature(device, metric):
    check_pair(*make_pair(3, 1, device), metric)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_empty_batch(device, metric):
    student, teacher = make_pair(0, 4, device)
    result = pair_distance(student, teacher, metric)
    assert result.shape == (0,)
    result.sum().backward()
    assert student.grad.shape == (0, 4) and teacher.grad.shape == (0, 4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("metric", METRICS)
def test_gradcheck(device, metric):
    student, teacher = make_pair(3, 5, device)
    assert torch.autograd.gradcheck(lambda s, t: pair_distance(s, t, metric), [student, teacher])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    student, teacher = make_pair(4, 7, device, dtype=torch.float32)
    for metric in METRICS:
        torch.library.opcheck(torch.ops.fastnas.pair_distance.default, (student, teacher, metric))


@given(
    batch=st.integers(0, 7), dim=st.integers(1, 9), metric=st.sampled_from(METRICS),
    scale=st.sampled_from([1e-3, 1.0, 20.0]), contiguous=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_reference(batch, dim, metric, scale, contiguous, seed):
    student, teacher = make_pair(batch, dim, seed=seed, scale=scale)
    if not contiguous:
        student = noncontiguous(student.detach()).requires_grad_()
        teacher = teacher.detach().t().contiguous().t().requires_grad_()  # column-major
    check_pair(student, teacher, metric, atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------- gram_distance

@pytest.mark.parametrize("device", DEVICES)
def test_gram_matches_reference(device):
    check_gram(*make_pair(8, 13, device, teacher_dim=21))


@pytest.mark.parametrize("device", DEVICES)
def test_gram_matches_reference_float32(device):
    student, teacher = make_pair(64, 300, device, dtype=torch.float32, teacher_dim=77)
    check_gram(student, teacher, atol=1e-5, rtol=1e-4)


def test_gram_hand_computed():
    # Student I: G_s = I. Teacher rows equal: A = all ones, G_t = all 1/sqrt(2).
    # ||G_t - G_s||^2 = 2 (1/sqrt(2) - 1)^2 + 2 (1/2) = 4 - 2 sqrt(2); / B^2 = 4.
    student = torch.eye(2, dtype=torch.float64)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(gram_distance(student, teacher), torch.tensor(1 - math.sqrt(2) / 2, dtype=torch.float64))
    # Identical relations -> 0, whatever the feature widths.
    torch.testing.assert_close(gram_distance(teacher, 5 * teacher[:, :1]), torch.tensor(0.0, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_gram_zero_row(device):
    # A zero feature row gives a zero Gram row, under the 1e-12 normalize floor.
    student, teacher = make_pair(5, 4, device, teacher_dim=6)
    student = student.detach().clone()
    student[2] = 0
    check_gram(student.requires_grad_(), teacher)


@pytest.mark.parametrize("device", DEVICES)
def test_gram_empty_batch_is_nan(device):
    student, teacher = make_pair(0, 4, device, teacher_dim=3)
    result = gram_distance(student, teacher)
    assert result.shape == () and torch.isnan(result)
    grads = torch.autograd.grad(result, [student, teacher])
    assert grads[0].shape == (0, 4) and grads[1].shape == (0, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_gram_gradcheck(device):
    student, teacher = make_pair(4, 3, device, teacher_dim=5)
    assert torch.autograd.gradcheck(gram_distance, [student, teacher])


@pytest.mark.parametrize("device", DEVICES)
def test_gram_opcheck(device):
    student, teacher = make_pair(6, 5, device, dtype=torch.float32, teacher_dim=9)
    torch.library.opcheck(torch.ops.fastnas.gram_distance.default, (student, teacher))


@given(
    batch=st.integers(0, 7), student_dim=st.integers(1, 9), teacher_dim=st.integers(1, 9),
    scale=st.sampled_from([1e-2, 1.0, 10.0]), contiguous=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_gram_fuzz_against_reference(batch, student_dim, teacher_dim, scale, contiguous, seed):
    student, teacher = make_pair(batch, student_dim, seed=seed, scale=scale, teacher_dim=teacher_dim)
    if not contiguous:
        student = noncontiguous(student.detach()).requires_grad_()
        teacher = teacher.detach().t().contiguous().t().requires_grad_()
    check_gram(student, teacher, atol=1e-9, rtol=1e-7)


# --------------------------------------------------------------------------- CUDA half precision

@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_half_precision(dtype, metric):
    student, teacher = make_pair(16, 300, "cuda", dtype=dtype)
    result = pair_distance(student, teacher, metric)
    assert result.dtype == dtype
    exact = _reference.pair_distance(student.detach().double(), teacher.detach().double(), metric)
    torch.testing.assert_close(result.double(), exact, atol=2e-2, rtol=2e-2)
    result.sum().backward()
    s64, t64 = student.detach().double().requires_grad_(), teacher.detach().double().requires_grad_()
    _reference.pair_distance(s64, t64, metric).sum().backward()
    torch.testing.assert_close(student.grad.double(), s64.grad, atol=2e-2, rtol=5e-2)
    torch.testing.assert_close(teacher.grad.double(), t64.grad, atol=2e-2, rtol=5e-2)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_gram_half_precision(dtype):
    student, teacher = make_pair(16, 40, "cuda", dtype=dtype, teacher_dim=24)
    result = gram_distance(student, teacher)
    assert result.dtype == dtype
    s64, t64 = student.detach().double().requires_grad_(), teacher.detach().double().requires_grad_()
    exact = _reference.gram_distance(s64, t64)
    torch.testing.assert_close(result.double(), exact, atol=1e-2, rtol=2e-2)
    result.backward()
    exact.backward()
    torch.testing.assert_close(student.grad.double(), s64.grad, atol=1e-2, rtol=5e-2)
    torch.testing.assert_close(teacher.grad.double(), t64.grad, atol=1e-2, rtol=5e-2)


# --------------------------------------------------------------------------- bad input

class TestBadInput:
    def setup_method(self):
        self.student, self.teacher = make_pair(3, 4, dtype=torch.float32)

    def test_wrong_rank(self):
        with pytest.raises(RuntimeError, match=r"student: expected a 2-d tensor"):
            pair_distance(self.student.flatten(), self.teacher.flatten())
        with pytest.raises(RuntimeError, match=r"teacher: expected a 2-d tensor"):
            pair_distance(self.student, self.teacher[None])

    def test_shape_mismatch(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected shape \[3, 4\] like student, got \[3, 5\]"):
            pair_distance(self.student, torch.zeros(3, 5))
        with pytest.raises(RuntimeError, match=r"teacher: expected shape"):
            pair_distance(self.student, torch.zeros(2, 4))

    def test_no_features(self):
        with pytest.raises(RuntimeError, match=r"student: expected at least one feature"):
            pair_distance(torch.zeros(3, 0), torch.zeros(3, 0), "cosine")

    def test_mixed_dtypes(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected dtype Float like student, got Double"):
            pair_distance(self.student, self.teacher.double())

    def test_integer_dtype(self):
        with pytest.raises(RuntimeError, match=r"student: expected a floating tensor"):
            pair_distance(torch.zeros(3, 4, dtype=torch.int64), torch.zeros(3, 4, dtype=torch.int64))

    def test_unknown_metric(self):
        with pytest.raises(RuntimeError, match=r"metric: expected one of l1, l2, kl, cosine, pearson, got 'l3'"):
            pair_distance(self.student, self.teacher, "l3")

    def test_backward_grad_shape(self):
        with pytest.raises(RuntimeError, match=r"grad: expected shape \[3\]"):
            torch.ops.fastnas.pair_distance_backward(torch.ones(2), self.student, self.teacher, "l1")

    def test_gram_wrong_rank(self):
        with pytest.raises(RuntimeError, match=r"student: expected a 2-d tensor"):
            gram_distance(self.student[None], self.teacher)

    def test_gram_different_batch(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected 3 rows \(the batch of student\), got shape \[2, 7\]"):
            gram_distance(self.student, torch.zeros(2, 7))

    def test_gram_mixed_dtypes(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected dtype Float like student"):
            gram_distance(self.student, torch.zeros(3, 7, dtype=torch.float64))

    def test_gram_integer_dtype(self):
        with pytest.raises(RuntimeError, match=r"student: expected a floating tensor"):
            gram_distance(torch.zeros(3, 4, dtype=torch.int32), torch.zeros(3, 4, dtype=torch.int32))

    def test_gram_backward_grad_rank(self):
        with pytest.raises(RuntimeError, match=r"grad: expected a 0-d tensor"):
            torch.ops.fastnas.gram_distance_backward(torch.ones(1), self.student, self.teacher)

    @requires_cuda
    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected a tensor on"):
            pair_distance(self.student.cuda(), self.teacher)
        with pytest.raises(RuntimeError, match=r"teacher: expected a tensor on"):
            pair_distance(self.student, self.teacher.cuda())

    @requires_cuda
    def test_gram_mixed_devices(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected a tensor on"):
            gram_distance(self.student.cuda(), self.teacher)
