"""depthwise_conv2d (F.conv2d with groups = C as one op) against its reference: a hand-computed map, values
and both gradients over strides, paddings and dilations, gradcheck, opcheck, half precision, autocast, strided
inputs, empty shapes, fuzzing and bad input."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.testing import assert_close

from fastnas import ops
from fastnas.ops import _reference
from conftest import DEVICES, noncontiguous

# (kernel, stride, padding, dilation) of DARTS's depthwise convolutions and a few odd ones
GEOMETRIES = [((3, 3), 1, 1, 1), ((5, 5), 1, 2, 1), ((3, 3), 1, 2, 2), ((5, 5), 1, 4, 2), ((3, 3), 2, 1, 1),
              ((5, 5), 2, 4, 2), ((1, 1), 1, 0, 1), ((3, 1), (2, 1), (0, 1), (1, 3)), ((2, 3), 3, (1, 0), 2)]


def conv_inputs(device, B=3, C=4, H=7, W=6, kernel=(3, 3), dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype).to(device).requires_grad_()
    weight = torch.randn(C, 1, *kernel, generator=gen, dtype=dtype).to(device).requires_grad_()
    return x, weight


def test_depthwise_conv2d_hand_computed():
    # one channel, 3x3 map, 2x2 kernel, padding 1: out[0, 0] = w[1, 1] * x[0, 0] (the other taps read padding)
    x = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    weight = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = ops.depthwise_conv2d(x, weight, 1, 1, 1)
    assert out.shape == (1, 1, 4, 4)
    assert out[0, 0, 0, 0].item() == 4.0 * 1
    assert out[0, 0, 1, 1].item() == 1 * 1 + 2 * 2 + 3 * 4 + 4 * 5
    assert out[0, 0, 3, 3].item() == 1.0 * 9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel,stride,padding,dilation", GEOMETRIES)
def test_depthwise_conv2d_matches_reference_and_gradients(device, kernel, stride, padding, dilation):
    x, weight = conv_inputs(device, kernel=kernel)
    got = ops.depthwise_conv2d(x, weight, stride, padding, dilation)
    want = F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])
    assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(got)
    assert_close(torch.autograd.grad(got, (x, weight), grad), torch.autograd.grad(want, (x, weight), grad),
                 rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_depthwise_conv2d_backward_op_and_mask(device):
    x, weight = conv_inputs(device, kernel=(5, 5))
    geometry = ([2, 2], [4, 4], [2, 2])
    grad = torch.randn_like(ops.depthwise_conv2d(x, weight, *geometry))
    want = torch.ops.aten.convolution_backward(grad, x, weight, None, *geometry, False, [0, 0], 4,
                                               [True, True, False])[:2]
    with torch.no_grad():
        assert_close(ops.depthwise_conv2d_backward(grad, x, weight, *geometry), want, rtol=1e-12, atol=1e-12)
        grad_x, grad_weight = ops.depthwise_conv2d_backward(grad, x, weight, *geometry, need_weight=False)
        assert grad_weight is None
        assert_close(grad_x, want[0], rtol=1e-12, atol=1e-12)
        assert ops.depthwise_conv2d_backward(grad, x, weight, *geometry, need_input=False)[0] is None


@pytest.mark.parametrize("device", DEVICES)
def test_depthwise_conv2d_gradcheck_gradgradcheck_opcheck(device):
    x, weight = conv_inputs(device, B=2, C=2, H=5, W=4)
    for stride, padding, dilation in [(1, 1, 1), (2, 2, 2)]:
        func = lambda a, b: ops.depthwise_conv2d(a, b, stride, padding, dilation)  # noqa: E731
        assert torch.autograd.gradcheck(func, (x, weight))
        assert torch.autograd.gradgradcheck(func, (x, weight))
    torch.library.opcheck(torch.ops.fastnas.depthwise_conv2d, (x, weight, [2, 1], [1, 2], [1, 2]))
    grad = torch.randn(2, 2, 3, 4, dtype=x.dtype, device=device)
    torch.library.opcheck(torch.ops.fastnas.depthwise_conv2d_backward,
                          (grad, x.detach(), weight.detach(), [2, 1], [1, 2], [1, 2], [True, True]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_depthwise_conv2d_half_precision_accumulates_in_float32(device, dtype):
    x, weight = conv_inputs(device, B=4, C=8, H=8, W=8, kernel=(5, 5), dtype=torch.float32)
    half_x, half_w = x.detach().to(dtype).requires_grad_(), weight.detach().to(dtype).requires_grad_()
    got = ops.depthwise_conv2d(half_x, half_w, 1, 4, 2)
    assert got.dtype == dtype
    float_x, float_w = (t.detach().float().requires_grad_() for t in (half_x, half_w))
    want = F.conv2d(float_x, float_w, None, 1, 4, 2, 8)
    assert_close(got.float(), want, rtol=1e-2, atol=2e-2)
    grad = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, (half_x, half_w), grad.to(dtype))
    want_grads = torch.autograd.grad(want, (float_x, float_w), grad)
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == dtype
        assert_close(g.float(), w, rtol=3e-2, atol=0.15)


def test_depthwise_conv2d_under_cpu_autocast_computes_in_bfloat16_as_conv2d():
    x, weight = conv_inputs("cpu", dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.depthwise_conv2d(x, weight, 1, 1, 1)
        want = F.conv2d(x, weight, None, 1, 1, 1, x.shape[1])
    assert got.dtype == want.dtype == torch.bfloat16
    assert_close(got, want, rtol=1e-2, atol=2e-2)
    grad_x, grad_weight = torch.autograd.grad(got.float().sum(), (x, weight))
    assert grad_x.dtype == grad_weight.dtype == torch.float32  # back through autocast's casts


@pytest.mark.parametrize("device", DEVICES)
def test_depthwise_conv2d_noncontiguous_and_empty(device):
    x, weight = conv_inputs(device)
    strided_x, strided_w = noncontiguous(x.detach()), weight.detach()[..., ::2, ::2]
    assert not strided_x.is_contiguous() and not strided_w.is_contiguous()
    assert_close(ops.depthwise_conv2d(strided_x, strided_w, 1, 1, 1),
                 F.conv2d(x.detach(), strided_w.contiguous(), None, 1, 1, 1, 4), rtol=1e-12, atol=1e-12)
    for B, C in [(0, 4), (3, 0)]:
        empty_x, empty_w = conv_inputs(device, B=B, C=C)
        out = ops.depthwise_conv2d(empty_x, empty_w, 1, 1, 1)
        assert out.shape == (B, C, 7, 6)
        grad_x, grad_w = torch.autograd.grad(out.sum(), (empty_x, empty_w))
        assert grad_x.shape == empty_x.shape and grad_w.shape == empty_w.shape
        assert not grad_w.any()


def test_depthwise_conv2d_errors():
    x, weight = conv_inputs("cpu")
    with pytest.raises(RuntimeError, match=r"weight: expected shape \[4, 1, k_h, k_w\]"):
        ops.depthwise_conv2d(x, weight[:3], 1, 1, 1)
    with pytest.raises(RuntimeError, match="weight: expected dtype Double like x"):
        ops.depthwise_conv2d(x, weight.float(), 1, 1, 1)
    with pytest.raises(RuntimeError, match="x: expected a 4-d tensor"):
        ops.depthwise_conv2d(x[0], weight, 1, 1, 1)
    with pytest.raises(RuntimeError, match="stride: expected positive values, got 0 for height"):
        ops.depthwise_conv2d(x, weight, (0, 1), 1, 1)
    with pytest.raises(RuntimeError, match="padding: expected non-negative values"):
        ops.depthwise_conv2d(x, weight, 1, -1, 1)
    with pytest.raises(RuntimeError, match=r"x: the padded input width \(6 \+ 2 \* 0\) is smaller than the dilated"):
        ops.depthwise_conv2d(x, weight, 1, 0, 3)
    with pytest.raises(RuntimeError, match="x: expected a floating tensor"):
        ops.depthwise_conv2d(x.long(), weight.long(), 1, 1, 1)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"grad: expected the output's shape \[3, 4, 7, 6\]"):
        ops.depthwise_conv2d_backward(torch.zeros(3, 4, 7, 5, dtype=x.dtype), x, weight, 1, 1, 1)


@given(B=st.integers(0, 3), C=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9),
       k_h=st.integers(1, 5), k_w=st.integers(1, 5), s_h=st.integers(1, 3), s_w=st.integers(1, 3),
       d_h=st.integers(1, 3), d_w=st.integers(1, 3), p_h=st.integers(0, 4), p_w=st.integers(0, 4),
       strided=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fuzz_against_reference(B, C, H, W, k_h, k_w, s_h, s_w, d_h, d_w, p_h, p_w, strided, seed):
    if H + 2 * p_h < d_h * (k_h - 1) + 1 or W + 2 * p_w < d_w * (k_w - 1) + 1:
        return  # no output: the error is tested above
    x, weight = conv_inputs("cpu", B, C, H, W, (k_h, k_w), seed=seed)
    if strided:
        x = noncontiguous(x.detach()).requires_grad_()
    geometry = ((s_h, s_w), (p_h, p_w), (d_h, d_w))
    got = ops.depthwise_conv2d(x, weight, *geometry)
    want = _reference.depthwise_conv2d(x, weight, *geometry)
    assert_close(got, want, rtol=1e-10, atol=1e-12)
    grad = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    assert_close(torch.autograd.grad(got, (x, weight), grad), torch.autograd.grad(want, (x, weight), grad),
                 rtol=1e-10, atol=1e-12)
