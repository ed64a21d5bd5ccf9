"""at_loss against its reference: values, gradients, opcheck, fuzzing and bad input."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastnas.ops import _reference, at_loss
from conftest import DEVICES, noncontiguous, requires_cuda

POWERS = [1.0, 1.5, 2.0, 3.0]


def make_pairs(shapes, device, dtype=torch.float64, seed=0):
    """One (student, teacher) pair per (B, Cs, Ct, H, W); students require grad."""
    gen = torch.Generator().manual_seed(seed)
    student, teacher = [], []
    for batch, cs, ct, h, w in shapes:
        student.append(torch.randn(batch, cs, h, w, generator=gen, dtype=dtype).to(device).requires_grad_())
        teacher.append(torch.randn(batch, ct, h, w, generator=gen, dtype=dtype).to(device))
    return student, teacher


def assert_matches_reference(student, teacher, p, atol=1e-10, rtol=1e-7):
    result = at_loss(student, teacher, p)
    expected = _reference.at_loss(student, teacher, p)
    assert result.shape == () and result.dtype == expected.dtype
    torch.testing.assert_close(result, expected, atol=atol, rtol=rtol, equal_nan=True)
    got = torch.autograd.grad(result, student, allow_unused=True)
    want = torch.autograd.grad(expected, student, allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, atol=atol, rtol=rtol,
                                   equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", POWERS)
def test_single_pair_matches_reference(device, p):
    student, teacher = make_pairs([(4, 6, 10, 7, 5)], device)
    assert_matches_reference(student, teacher, p)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", POWERS)
def test_three_pairs_matches_reference(device, p):
    # Channels differ within and across pairs; 40 x 40 spans several spatial blocks of the CPU kernel.
    student, teacher = make_pairs([(3, 2, 9, 5, 7), (3, 16, 4, 40, 40), (3, 5, 5, 1, 1)], device, seed=1)
    assert_matches_reference(student, teacher, p)


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_reference(device):
    student, teacher = make_pairs([(8, 16, 32, 8, 8), (8, 32, 32, 4, 4)], device, dtype=torch.float32)
    assert_matches_reference(student, teacher, 2.0, atol=1e-7, rtol=1e-4)
    assert_matches_reference(student, teacher, 1.5, atol=1e-7, rtol=1e-4)


def test_hand_computed_p1():
    # Pair 1 (p = 1): student channels (2, 4) and (-4, 4) -> v = mean |x| = (3, 4), a_s = (0.6, 0.8);
    # teacher (4, 3) -> a_t = (0.8, 0.6); loss = mean(0.2^2, 0.2^2) = 0.04.
    # Pair 2: an all-zero student has a_s = 0 (norm below eps); teacher (1, 0) -> a_t = (1, 0);
    # loss = mean(1, 0) = 0.5. Total 0.54.
    s1 = torch.tensor([[[[2.0, 4.0]], [[-4.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    t1 = torch.tensor([[[[4.0, 3.0]]]], dtype=torch.float64)
    s2 = torch.zeros(1, 3, 1, 2, dtype=torch.float64, requires_grad=True)
    t2 = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    loss = at_loss([s1, s2], [t1, t2], p=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.54, dtype=torch.float64))
    loss.backward()
    # g = dL/da_s = 2 (a_s - a_t) / 2 = (-0.2, 0.2); n.g = 0.04; dL/dv = (g - 0.04 a_s) / ||v|| (= 5)
    # = (-0.0448, 0.0336); dL/ds = dL/dv sign(s) / C with C = 2.
    torch.testing.assert_close(s1.grad, torch.tensor([[[[-0.0224, 0.0168]], [[0.0224, 0.0168]]]],
                                                     dtype=torch.float64))
    # |x| has gradient sign(0) = 0 at 0, as torch's abs gives.
    torch.testing.assert_close(s2.grad, torch.zeros_like(s2))


def test_hand_computed_p2_single_tensor_arguments():
    # p = 2: student (1, 0) -> a_s = (1, 0); teacher (0, 2) -> v = (0, 4), a_t = (0, 1); loss = 1.
    s = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[0.0, 2.0]]]], dtype=torch.float64)
    torch.testing.assert_close(at_loss(s, t), torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_teacher_gets_no_gradient(device):
    student, teacher = make_pairs([(2, 3, 4, 3, 3), (2, 2, 2, 2, 5)], device)
    teacher = [t.requires_grad_() for t in teacher]
    at_loss(student, teacher).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None for s in student)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("p", POWERS)
def test_gradcheck(device, p):
    student, teacher = make_pairs([(2, 3, 2, 3, 2), (3, 2, 4, 1, 3)], device, seed=2)
    assert torch.autograd.gradcheck(lambda *s: at_loss(list(s), teacher, p), student)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    student, teacher = make_pairs([(2, 3, 5, 4, 4), (2, 4, 4, 2, 3)], device, dtype=torch.float32)
    for p in (1.5, 2.0):
        torch.library.opcheck(torch.ops.fastnas.at_loss.default, (student, teacher, p))
        grad = torch.tensor(0.7, device=device)
        torch.library.opcheck(torch.ops.fastnas.at_loss_backward.default,
                              (grad, [s.detach() for s in student], teacher, p))


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_gives_nan(device):
    student, teacher = make_pairs([(0, 3, 2, 4, 4), (2, 2, 2, 2, 2)], device)
    loss = at_loss(student, teacher)
    assert math.isnan(loss.item())
    assert math.isnan(_reference.at_loss(student, teacher).item())
    grads = torch.autograd.grad(loss, student)
    assert grads[0].shape == (0, 3, 4, 4)


pair_shapes = st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 5), st.integers(0, 5),
                        st.integers(1, 7))


@given(shapes=st.lists(pair_shapes, min_size=1, max_size=3), p=st.sampled_from(POWERS),
       contiguous=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fuzz_against_reference(shapes, p, contiguous, seed):
    student, teacher = make_pairs(shapes, "cpu", seed=seed)
    if not contiguous:
        student = [noncontiguous(s.detach()).requires_grad_() for s in student]
        teacher = [noncontiguous(t) for t in teacher]
    assert_matches_reference(student, teacher, p)


class TestBadInput:
    def setup_method(self):
        self.student, self.teacher = make_pairs([(2, 3, 4, 3, 3), (2, 2, 2, 4, 4)], "cpu", dtype=torch.float32)

    def call(self, student=None, teacher=None, p=2.0):
        return at_loss(self.student if student is None else student,
                       self.teacher if teacher is None else teacher, p)

    def test_wrong_rank(self):
        with pytest.raises(RuntimeError, match=r"student\[1\]: expected a 4-d tensor \[B, C, H, W\]"):
            self.call(student=[self.student[0], self.student[1].flatten(2)])

    def test_batch_mismatch(self):
        teacher = [self.teacher[0], torch.zeros(3, 2, 4, 4)]
        with pytest.raises(RuntimeError, match=r"teacher\[1\]: expected the batch and spatial sizes"):
            self.call(teacher=teacher)

    def test_spatial_mismatch(self):
        teacher = [torch.zeros(2, 4, 3, 4), self.teacher[1]]
        with pytest.raises(RuntimeError, match=r"teacher\[0\]: expected the batch and spatial sizes \(B, H, W\) "
                                               r"= \(2, 3, 3\)"):
            self.call(teacher=teacher)

    def test_list_length_mismatch(self):
        with pytest.raises(RuntimeError, match=r"teacher: expected one tensor per student tensor \(2\), got 1"):
            self.call(teacher=self.teacher[:1])

    def test_empty_list(self):
        with pytest.raises(RuntimeError, match=r"student: expected at least one \(student, teacher\) pair"):
            self.call(student=[], teacher=[])

    def test_mixed_dtypes(self):
        teacher = [self.teacher[0], self.teacher[1].double()]
        with pytest.raises(RuntimeError, match=r"teacher\[1\]: expected dtype Float"):
            self.call(teacher=teacher)

    def test_integer_dtype(self):
        student = [torch.zeros(2, 3, 3, 3, dtype=torch.int64)]
        teacher = [torch.zeros(2, 4, 3, 3, dtype=torch.int64)]
        with pytest.raises(RuntimeError, match=r"student\[0\]: expected a floating tensor"):
            self.call(student=student, teacher=teacher)

    @pytest.mark.parametrize("p", [0.5, 0.0, -2.0, math.inf, math.nan])
    def test_bad_p(self, p):
        with pytest.raises(RuntimeError, match=r"p: expected a finite number >= 1 \(the gradient of \|x\|\^p at 0 "
                                               r"is undefined for p < 1\)"):
            self.call(p=p)

    def test_backward_grad_not_0d(self):
        with pytest.raises(RuntimeError, match=r"grad: expected a 0-d tensor"):
            torch.ops.fastnas.at_loss_backward(torch.ones(2), self.student, self.teacher, 2.0)

    @requires_cuda
    def test_mixed_devices(self):
        teacher = [self.teacher[0], self.teacher[1].cuda()]
        with pytest.raises(RuntimeError, match=r"teacher\[1\]: expected a tensor on"):
            self.call(teacher=teacher)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("p", [1.5, 2.0])
def test_half_precision(dtype, p, device):
    # Compared with the float32 reference on the same (rounded) inputs; the kernel accumulates in float.
    student, teacher = make_pairs([(4, 8, 16, 6, 6), (4, 16, 16, 3, 5)], device, dtype=torch.float32, seed=3)
    student = [s.detach().to(dtype).requires_grad_() for s in student]
    teacher = [t.to(dtype) for t in teacher]
    result = at_loss(student, teacher, p)
    assert result.dtype == dtype
    student32 = [s.detach().float().requires_grad_() for s in student]
    expected = _reference.at_loss(student32, [t.float() for t in teacher], p)
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    torch.testing.assert_close(result.float(), expected, rtol=tol, atol=1e-5)
    got = torch.autograd.grad(result, student)
    want = torch.autograd.grad(expected, student32)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), w, rtol=tol, atol=tol * w.abs().max().item())


@requires_cuda
def test_cuda_matches_cpu_large():
    student, teacher = make_pairs([(16, 32, 64, 32, 32), (16, 64, 64, 16, 16)], "cpu", dtype=torch.float32, seed=4)
    cpu = at_loss(student, teacher)
    cuda_student = [s.detach().cuda().requires_grad_() for s in student]
    gpu = at_loss(cuda_student, [t.cuda() for t in teacher])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-8)
    for g, w in zip(torch.autograd.grad(gpu, cuda_student), torch.autograd.grad(cpu, student)):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-4, atol=1e-9)
