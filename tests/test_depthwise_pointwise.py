"""The CPU formulations of DARTS's depthwise and pointwise convolutions (fastnas.nn.darts_ops) against aten.

depthwise_conv2d drops kernel taps that read only zero padding and runs fastnas.ops.depthwise_conv2d (its
own tests: tests/test_depthwise_conv2d.py); depthwise_conv2d_backward (as a backward pass calls it: no grad
mode) and pointwise_conv2d(_backward) compute what aten.convolution_backward / F.conv2d compute, by C++
loops and batched matmuls. Every value here is checked against aten in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnas.nn.darts_ops import (DepthwisePointwise, DilConv, SepConv, crop_padding_taps, depthwise_conv2d,
                                  depthwise_conv2d_backward, padding_only_taps, pointwise_conv2d,
                                  pointwise_conv2d_backward)


def aten_backward(grad, x, weight, stride, padding, dilation, groups):
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [stride] * 2, [padding] * 2, [dilation] * 2,
                                               False, [0, 0], groups, [True, True, False])[:2]


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, expected", [
    (2, 5, 1, 4, 2, 2),   # dil_conv_5x5 on a 2x2 map: only the centre tap reads the input
    (2, 3, 1, 2, 2, 1),   # dil_conv_3x3 on 2x2: the centre tap
    (2, 5, 1, 2, 1, 1),   # sep_conv_5x5 on 2x2: the inner 3x3
    (4, 5, 1, 4, 2, 1),   # dil_conv_5x5 on 4x4: a 3x3 dilated kernel
    (8, 5, 1, 4, 2, 0),   # on 8x8 every tap reads the input
    (4, 3, 1, 1, 1, 0),
    (1, 3, 1, 1, 1, 1),   # a 1x1 map: only the centre
    (4, 5, 2, 2, 1, 0),   # stride 2 reaches the outer taps
])
def test_padding_only_taps_of_darts_kernels(size, kernel, stride, padding, dilation, expected):
    assert padding_only_taps(size, kernel, stride, padding, dilation) == expected


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 9), width=st.integers(1, 9), kernel=st.sampled_from([1, 3, 5]),
       stride=st.integers(1, 2), dilation=st.integers(1, 3))
def test_cropped_taps_read_only_padding(height, width, kernel, stride, dilation):
    """The crop keeps the convolution's output, and aten's weight gradient is exactly 0 on every dropped tap."""
    padding = dilation * (kernel - 1) // 2
    torch.manual_seed(height * 100 + width)
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    weight = torch.randn(3, 1, kernel, kernel, dtype=torch.float64)
    full = F.conv2d(x, weight, None, stride, padding, dilation, 3)
    torch.testing.assert_close(depthwise_conv2d(x, weight, stride, padding, dilation), full, rtol=1e-12, atol=1e-12)
    cropped, _, _, (c_h, c_w) = crop_padding_taps(weight, (height, width), stride, padding, dilation)
    assert cropped.shape[-2:] == (kernel - 2 * c_h, kernel - 2 * c_w)
    _, grad_weight = aten_backward(torch.randn_like(full), x, weight, stride, padding, dilation, 3)
    kept = torch.zeros_like(grad_weight, dtype=torch.bool)
    kept[..., c_h:kernel - c_h, c_w:kernel - c_w] = True
    assert (grad_weight[~kept] == 0).all()


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(0, 3), channels=st.integers(1, 4), height=st.integers(1, 9), width=st.integers(1, 9),
       kernel=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), dilation=st.integers(1, 2),
       channels_last=st.booleans())
def test_depthwise_backward_equals_aten(batch, channels, height, width, kernel, stride, dilation, channels_last):
    padding = dilation * (kernel - 1) // 2
    torch.manual_seed(batch * 1000 + height * 10 + width)
    x = torch.randn(batch, channels, height, width, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)  # a non-contiguous NCHW tensor
    weight = torch.randn(channels, 1, kernel, kernel, dtype=torch.float64)
    grad = torch.randn_like(F.conv2d(x, weight, None, stride, padding, dilation, channels))
    expected = aten_backward(grad, x, weight, stride, padding, dilation, channels)
    for need_input, need_weight in [(True, True), (True, False), (False, True)]:
        with torch.no_grad():  # as in a backward pass (with grad mode on it is aten's, for double backward)
            grad_x, grad_weight = depthwise_conv2d_backward(grad, x, weight, stride, padding, dilation, need_input,
                                                            need_weight)
        if need_input:
            torch.testing.assert_close(grad_x, expected[0], rtol=1e-12, atol=1e-12)
        else:
            assert grad_x is None
        if need_weight:
            torch.testing.assert_close(grad_weight, expected[1], rtol=1e-12, atol=1e-12)
        else:
            assert grad_weight is None


@settings(max_examples=60, deadline=None)
@given(batch=st.integers(0, 3), groups=st.integers(1, 5), in_per_group=st.integers(1, 4),
       out_per_group=st.integers(1, 4), height=st.integers(1, 5), width=st.integers(1, 5), transposed=st.booleans())
def test_pointwise_equals_grouped_conv(batch, groups, in_per_group, out_per_group, height, width, transposed):
    torch.manual_seed(groups * 100 + in_per_group * 10 + out_per_group)
    x = torch.randn(batch, groups * in_per_group, width, height, dtype=torch.float64)
    if transposed:
        x = x.transpose(2, 3)  # non-contiguous
    weight = torch.randn(groups * out_per_group, in_per_group, 1, 1, dtype=torch.float64)
    out = F.conv2d(x, weight, None, 1, 0, 1, groups)
    torch.testing.assert_close(pointwise_conv2d(x, weight, groups), out, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    grad_x, grad_weight = pointwise_conv2d_backward(grad, x, weight, groups)
    expected = aten_backward(grad, x, weight, 1, 0, 1, groups)
    torch.testing.assert_close(grad_x, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_weight, expected[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [2, 4, 5])
@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 1, 2), (3, 2, 1),
                                                      (5, 2, 2)])
def test_depthwise_pointwise_gradcheck_and_double_backward(size, kernel, stride, dilation):
    padding = dilation * (kernel - 1) // 2
    torch.manual_seed(size * 10 + kernel)
    x = torch.randn(2, 4, size, size, dtype=torch.float64, requires_grad=True)
    w_dw = torch.randn(4, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    w_pw = torch.randn(6, 2, 1, 1, dtype=torch.float64, requires_grad=True)  # 2 groups, as two grouped operators

    def op(a, b, c):
        return DepthwisePointwise.apply(a, b, c, (stride, stride), (padding, padding), (dilation, dilation))

    def reference(a, b, c):
        return F.conv2d(F.conv2d(a, b, None, stride, padding, dilation, 4), c, None, 1, 0, 1, 2)

    torch.testing.assert_close(op(x, w_dw, w_pw), reference(x, w_dw, w_pw), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(reference(x, w_dw, w_pw))
    got = torch.autograd.grad(op(x, w_dw, w_pw), (x, w_dw, w_pw), grad)
    expected = torch.autograd.grad(reference(x, w_dw, w_pw), (x, w_dw, w_pw), grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(op, (x, w_dw, w_pw))
    assert torch.autograd.gradgradcheck(op, (x, w_dw, w_pw))


@pytest.mark.parametrize("module", [SepConv(3, 5, 1, 2, affine=False), DilConv(3, 5, 1, 4, 2, affine=False)])
def test_operators_on_a_2x2_map_match_plain_convolutions(module):
    """SepConv/DilConv (recompute on and off) equal nn.Conv2d's computation where most taps are padding."""
    module = module.double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    convs = [layer for layer in module if isinstance(layer, torch.nn.Conv2d)]

    def plain(inp):
        for layer in module:
            inp = (F.conv2d(inp, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
                   if isinstance(layer, torch.nn.Conv2d) else layer(inp))
        return inp

    expected_out = plain(x)
    expected = torch.autograd.grad(expected_out.square().sum(), [x] + [c.weight for c in convs])
    for recompute in (True, False):
        module.recompute_depthwise = recompute
        out = module(x)
        torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-10)
        got = torch.autograd.grad(out.square().sum(), [x] + [c.weight for c in convs])
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [2, 5])
@pytest.mark.parametrize("kernel, stride, dilation", [(3, 1, 1), (5, 1, 1), (3, 1, 2), (5, 2, 2)])
def test_depthwise_conv2d_gradients_and_double_backward(size, kernel, stride, dilation):
    """depthwise_conv2d's own backward (the no-recompute path: DepthwiseConv2d modules) against F.conv2d's."""
    padding = dilation * (kernel - 1) // 2
    torch.manual_seed(size * 10 + kernel)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    out = depthwise_conv2d(x, weight, stride, padding, dilation)
    expected = F.conv2d(x, weight, None, stride, padding, dilation, 3)
    grad = torch.randn_like(expected)
    for g, e in zip(torch.autograd.grad(out, (x, weight), grad), torch.autograd.grad(expected, (x, weight), grad)):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: depthwise_conv2d(a, b, stride, padding, dilation), (x, weight))
    assert torch.autograd.gradgradcheck(lambda a, b: depthwise_conv2d(a, b, stride, padding, dilation), (x, weight))
