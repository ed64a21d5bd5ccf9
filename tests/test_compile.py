"""torch.compile(fullgraph=True) over a function calling every fused op: no graph break, same values and gradients."""

import pytest
import torch

from fastnas import ops
from fastnas.search_spaces import SuperNetwork
from conftest import DEVICES


def every_op(outs, alpha, mask, student, teacher, scores, target, layers, feat_s, feat_t, wide_t):
    node = ops.mixed_node(outs, alpha, mask, "relu_norm", 1.0)
    loss = (node.square().mean() + ops.at_loss([student], [teacher]) + ops.foreach_reduce(layers, "square", "l2").sum()
            + ops.pair_distance(feat_s, feat_t, "kl").sum() + ops.gram_distance(feat_s, wide_t))
    return loss, ops.rank_corr(scores, target, "kendall")


def inputs(device):
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(grad)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    return dict(outs=[randn(2, 3, 4, 4, grad=True) for _ in range(4)], alpha=randn(2, 3, grad=True), mask=mask,
                student=randn(2, 5, 4, 4, grad=True), teacher=randn(2, 7, 4, 4), scores=randn(3, 9), target=randn(9),
                layers=[randn(4, 3, grad=True), randn(6, grad=True)], feat_s=randn(4, 6, grad=True),
                feat_t=randn(4, 6, grad=True), wide_t=randn(4, 8, grad=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_matches_eager(device, backend):
    torch._dynamo.reset()
    args = inputs(device)
    leaves = [t for v in args.values() for t in (v if isinstance(v, list) else [v]) if t.requires_grad]
    loss, corr = every_op(**args)
    want = torch.autograd.grad(loss, leaves)
    compiled = torch.compile(every_op, fullgraph=True, backend=backend)
    loss_c, corr_c = compiled(**args)
    torch.testing.assert_close(loss_c, loss)
    torch.testing.assert_close(corr_c, corr)
    for got, expected in zip(torch.autograd.grad(loss_c, leaves), want):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("mode", ["softmax", "relu_norm"])
def test_super_network_compiles_to_one_graph(mode):
    # A pruned operator too: the node's live list comes from its modules, not from reading the mask.
    torch.manual_seed(0)
    net = SuperNetwork(C=2, num_classes=3, layers=3, nodes=2, in_channels=1, mode=mode,
                       alpha_per_cell=mode != "softmax",
                       primitives=("none", "skip_connect", "sep_conv_3x3", "avg_pool_3x3")).double()
    net.cells[0].nodes[1].prune(0, 2)
    images = torch.randn(4, 1, 8, 8, dtype=torch.float64)

    def loss_and_grads(forward):
        net.zero_grad(set_to_none=True)
        logits, features = forward(images)
        loss = logits.square().mean() + sum(f.mean() for f in features)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    eager_loss, eager_grads = loss_and_grads(net)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(net, backend="aot_eager", fullgraph=True))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-12, atol=1e-12)
    assert len(compiled_grads) == len(eager_grads)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
