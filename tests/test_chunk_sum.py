"""chunk_sum (the weighted sum of a grouped node's chunks) against its reference: values, gradients,
gradcheck, opcheck, half precision, strided inputs, fuzzing and bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

from fastnas import ops
from fastnas.ops import _reference
from conftest import DEVICES, noncontiguous


def chunk_inputs(device, chunks=(2, 1, 3), C=3, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    outs = [torch.randn(4, n * C, 5, 6, generator=gen, dtype=dtype).to(device).requires_grad_() for n in chunks]
    weights = torch.randn(sum(chunks), generator=gen, dtype=dtype).to(device).requires_grad_()
    return outs, weights, list(chunks)


def test_chunk_sum_hand_computed():
    a = torch.tensor([[[1.0], [2.0]]])   # [B=1, 2 chunks of C=1, 1]
    b = torch.tensor([[[10.0]]])         # [1, 1 chunk, 1]
    weights = torch.tensor([0.5, -1.0, 2.0])
    assert ops.chunk_sum([a, b], weights, [2, 1]).tolist() == [[[0.5 * 1 - 1.0 * 2 + 2.0 * 10]]]


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_sum_matches_reference_and_gradients(device):
    outs, weights, chunks = chunk_inputs(device)
    got = ops.chunk_sum(outs, weights, chunks)
    want = _reference.chunk_sum(outs, weights, chunks)
    assert_close(got, want)
    grad = torch.randn_like(got)
    assert_close(torch.autograd.grad(got, outs + [weights], grad), torch.autograd.grad(want, outs + [weights], grad))


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_sum_gradcheck_gradgradcheck_opcheck(device):
    outs, weights, chunks = chunk_inputs(device, chunks=(2, 1), C=2)
    small = [o.detach()[:2, :, :3, :3].clone().requires_grad_() for o in outs]
    func = lambda w, *o: ops.chunk_sum(list(o), w, chunks)  # noqa: E731
    assert torch.autograd.gradcheck(func, (weights, *small))
    assert torch.autograd.gradgradcheck(func, (weights, *small))
    torch.library.opcheck(torch.ops.fastnas.chunk_sum, (outs, weights, chunks))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunk_sum_half_precision_accumulates_in_float32(device, dtype):
    outs, weights, chunks = chunk_inputs(device, dtype=torch.float32)
    half = [o.detach().to(dtype) for o in outs]
    got = ops.chunk_sum(half, weights.detach(), chunks)
    assert got.dtype == dtype
    assert_close(got.float(), _reference.chunk_sum([h.float() for h in half], weights.detach(), chunks),
                 rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_sum_noncontiguous_outs(device):
    outs, weights, chunks = chunk_inputs(device)
    transposed = [o.detach().transpose(2, 3).contiguous().transpose(2, 3) for o in outs]  # same values, strided
    assert not transposed[0].is_contiguous()
    assert_close(ops.chunk_sum(transposed, weights, chunks), _reference.chunk_sum(outs, weights, chunks))


def test_chunk_sum_errors():
    outs, weights, chunks = chunk_inputs("cpu")
    with pytest.raises(RuntimeError, match="chunks: expected one count per tensor of outs"):
        ops.chunk_sum(outs, weights, chunks[:2])
    with pytest.raises(RuntimeError, match="weights: expected one weight per chunk"):
        ops.chunk_sum(outs, weights[:3], chunks)
    with pytest.raises(RuntimeError, match=r"outs\[0\]: expected channels divisible by chunks\[0\]"):
        ops.chunk_sum(outs, weights, [4, 1, 1])
    with pytest.raises(RuntimeError, match=r"outs\[1\]: expected 1 chunks of shape"):
        ops.chunk_sum([outs[0], outs[1][:, :, :4]], weights[:3], [2, 1])
    with pytest.raises(RuntimeError, match=r"chunks\[0\]: expected a count >= 1"):
        ops.chunk_sum(outs[:1], weights[:0], [0])
    with pytest.raises(RuntimeError, match="at most 128 chunks"):
        ops.chunk_sum([torch.zeros(1, 129, 1)], torch.zeros(129), [129])


@given(chunks=st.lists(st.integers(1, 4), min_size=1, max_size=4), C=st.integers(1, 3),
       batch=st.integers(0, 3), spatial=st.lists(st.integers(0, 5), min_size=0, max_size=2),
       strided=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fuzz_against_reference(chunks, C, batch, spatial, strided, seed):
    # odd and empty shapes (batch 0, a 0-sized map), no spatial dims, strided inputs
    gen = torch.Generator().manual_seed(seed)
    outs = [torch.randn(batch, n * C, *spatial, generator=gen, dtype=torch.float64) for n in chunks]
    outs = [(noncontiguous(o) if strided else o).requires_grad_() for o in outs]
    weights = torch.randn(sum(chunks), generator=gen, dtype=torch.float64).requires_grad_()
    got = ops.chunk_sum(outs, weights, chunks)
    want = _reference.chunk_sum(outs, weights, chunks)
    assert got.shape == (batch, C, *spatial)
    assert_close(got, want, rtol=1e-9, atol=1e-12)
    grad = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    assert_close(torch.autograd.grad(got, outs + [weights], grad),
                 torch.autograd.grad(want, outs + [weights], grad, allow_unused=True, materialize_grads=True),
                 rtol=1e-9, atol=1e-12)
