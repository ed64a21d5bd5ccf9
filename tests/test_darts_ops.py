"""Recomputation in the DARTS operations and super-network: less memory, no value or gradient changed."""

import json

import pytest
import torch
import torch.nn as nn

from fastnas.cli import main as cli_main
from fastnas.nn.cost import count_saved_bytes
from fastnas.nn.darts_ops import DepthwisePointwise, DilConv, SepConv
from fastnas.search_spaces import SuperNetwork
from fastnas.strategies import DNADConfig, SDDARTSConfig


@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 2, 2), (2, 1, 1)])
def test_depthwise_pointwise_gradcheck(stride, padding, dilation):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, generator=gen).requires_grad_()
    w_dw = torch.randn(3, 1, 3, 3, dtype=torch.float64, generator=gen).requires_grad_()
    w_pw = torch.randn(5, 3, 1, 1, dtype=torch.float64, generator=gen).requires_grad_()

    def op(x, w_dw, w_pw):
        return DepthwisePointwise.apply(x, w_dw, w_pw, (stride, stride), (padding, padding), (dilation, dilation))

    torch.autograd.gradcheck(op, (x, w_dw, w_pw))
    torch.autograd.gradgradcheck(op, (x, w_dw, w_pw))  # sharpness and hessians differentiate twice


@pytest.mark.parametrize("make", [lambda: SepConv(4, 3, 2, 1, affine=False), lambda: SepConv(4, 5, 1, 2, affine=True),
                                  lambda: DilConv(4, 3, 1, 2, 2, affine=False), lambda: DilConv(4, 5, 2, 4, 2, True)])
def test_operations_equal_the_plain_chain_and_save_less(make):
    torch.manual_seed(0)
    op = make().double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    outputs, grads, saved = {}, {}, {}
    for name, forward in (("plain", lambda t: nn.Sequential.forward(op, t)), ("recompute", op)):
        op.zero_grad(set_to_none=True)
        x.grad = None
        outputs[name] = forward(x)
        outputs[name].square().sum().backward()
        grads[name] = [x.grad.clone()] + [p.grad.clone() for p in op.parameters()]
        saved[name] = count_saved_bytes(lambda: forward(x).square().sum())
    torch.testing.assert_close(outputs["recompute"], outputs["plain"], rtol=1e-12, atol=1e-12)
    for got, want in zip(grads["recompute"], grads["plain"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # exactly the depthwise outputs (one per pair) are no longer kept
    depthwise_bytes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: depthwise_bytes.append(out.numel() * out.element_size()))
             for m in op if isinstance(m, nn.Conv2d) and m.groups > 1]
    with torch.no_grad():
        nn.Sequential.forward(op, x)
    for h in hooks:
        h.remove()
    assert saved["plain"] - saved["recompute"] == sum(depthwise_bytes) > 0


@pytest.mark.parametrize("mode", ["softmax", "relu_norm"])
def test_super_network_recompute_changes_memory_not_gradients(mode):
    torch.manual_seed(0)
    net = SuperNetwork(C=4, num_classes=3, layers=3, nodes=2, in_channels=1, mode=mode,
                       alpha_per_cell=mode == "relu_norm").double()
    images = torch.randn(4, 1, 8, 8, dtype=torch.float64)

    def loss():
        logits, features = net(images)
        return logits.square().mean() + sum(f.mean() for f in features)

    grads, saved = {}, {}
    for recompute in (True, False):
        net.set_recompute(recompute)
        net.zero_grad(set_to_none=True)
        loss().backward()
        grads[recompute] = [p.grad.clone() for p in net.parameters()]
        saved[recompute] = count_saved_bytes(loss)
    for got, want in zip(grads[True], grads[False]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert saved[True] < 0.8 * saved[False]


@pytest.mark.parametrize("flags, recorded", [([], False), (["--recompute"], True), (["--no-recompute"], False)])
def test_cli_recompute_is_recorded(tmp_path, flags, recorded):
    """fastnas's default: recompute off on digits/synthetic (small activations), on elsewhere."""
    assert cli_main(["darts", "--data", "synthetic:64", "--out", str(tmp_path), "--C", "2", "--layers", "3",
                     "--nodes", "2", "--epochs", "1", "--batch-size", "16", "--ops", "skip_connect,sep_conv_3x3",
                     "--quiet", *flags]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["recompute"] is recorded


@pytest.mark.parametrize("config", [DNADConfig, SDDARTSConfig])
def test_recompute_default_is_on_except_for_small_data(config):
    assert config(data="cifar10:/data/cifar10").recompute is True
    assert config(data="digits").recompute is False
    assert config(data="digits", recompute=True).recompute is True
