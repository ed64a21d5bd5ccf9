"""fastnas.nn.pooling.avg_pool_3x3 equals nn.AvgPool2d(3, 1, 1, count_include_pad=False)."""

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnas.nn.pooling import avg_pool_3x3

REFERENCE = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(0, 3), channels=st.integers(1, 5), height=st.integers(1, 9), width=st.integers(1, 9),
       layout=st.sampled_from(["contiguous", "channels_last", "strided"]), seed=st.integers(0, 2 ** 16))
def test_avg_pool_3x3_equals_the_module(batch, channels, height, width, layout, seed):
    x = torch.randn(batch, channels, height, width * (2 if layout == "strided" else 1), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    if layout == "strided":
        x = x[..., ::2]
    elif layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(avg_pool_3x3(x), REFERENCE(x), rtol=1e-14, atol=1e-15)


def test_avg_pool_3x3_gradient_and_float32():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(avg_pool_3x3, (x,))
    assert torch.autograd.gradgradcheck(avg_pool_3x3, (x,))  # the hand-written backward is differentiable too
    x32 = torch.randn(64, 16, 32, 32)
    torch.testing.assert_close(avg_pool_3x3(x32), REFERENCE(x32), rtol=1e-5, atol=1e-6)
    assert avg_pool_3x3(x32.to(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 2, 1, 1), (3, 1, 1, 6), (0, 2, 3, 3)])
def test_avg_pool_3x3_backward_equals_the_modules(shape):
    """The hand-written backward (the box sum of the scaled gradient) against autograd through nn.AvgPool2d."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(shape, dtype=torch.float64)
    (got,) = torch.autograd.grad(avg_pool_3x3(x), x, grad)
    (want,) = torch.autograd.grad(REFERENCE(x), x, grad)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-15)


def test_avg_pool_3x3_bad_input():
    with pytest.raises(ValueError, match=r"x: expected a tensor \[..., H, W\] with H, W >= 1, got shape \(2, 0\)"):
        avg_pool_3x3(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="x: expected a floating-point tensor, got torch.int64"):
        avg_pool_3x3(torch.zeros(2, 2, dtype=torch.long))
