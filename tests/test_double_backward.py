"""Backward passes with create_graph=True (Hessian-vector products) through every differentiable op: gradgradcheck."""

import pytest
import torch
from torch.autograd import gradgradcheck

from fastnas import ops


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("mode", ["softmax", "sigmoid", "relu_norm", "identity"])
def test_mixed_node(mode):
    mask = torch.tensor([[True, False, True], [True, True, True]])
    outs = [rand(2, 3) for _ in range(int(mask.sum()))]
    alpha = (torch.rand(2, 3, dtype=torch.float64) + 0.1).requires_grad_()  # relu_norm: away from the kink
    assert gradgradcheck(lambda a, *o: ops.mixed_node(list(o), a, mask, mode, 1.5), (alpha, *outs))


def test_mixed_node_hessian_vector_product_matches_the_reference():
    mask = torch.ones(2, 3, dtype=torch.bool)
    outs = [rand(4) for _ in range(6)]
    alpha = rand(2, 3)

    def hvp(fn):
        (grad,) = torch.autograd.grad(fn(outs, alpha, mask).pow(2).sum(), alpha, create_graph=True)
        return torch.autograd.grad(grad.sum(), alpha)[0]
    torch.testing.assert_close(hvp(ops.mixed_node), hvp(ops._reference.mixed_node))


def test_at_loss():
    t1, t2 = torch.randn(2, 5, 4, 4, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert gradgradcheck(lambda s1, s2: ops.at_loss([s1, s2], [t1, t2]), (rand(2, 3, 4, 4), rand(2, 2, 2, 2)))


@pytest.mark.parametrize("transform", ["square", "exp", "tanh"])
def test_foreach_reduce(transform):
    assert gradgradcheck(lambda a, b: ops.foreach_reduce([a, b], transform, "l2"), (rand(3, 2), rand(5)))


@pytest.mark.parametrize("metric", ["l2", "kl", "cosine", "pearson"])
def test_pair_distance(metric):
    assert gradgradcheck(lambda s, t: ops.pair_distance(s, t, metric), (rand(3, 4), rand(3, 4)))


def test_gram_distance():
    assert gradgradcheck(ops.gram_distance, (rand(3, 4), rand(3, 5)))


def test_hessian_when_an_operator_output_is_another_nodes_value():
    """A skip connection hands node 1's value to node 2 as an operator output, beside operators computed
    from it: the create_graph backward must take this op's partial derivative only (regression test)."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    x = torch.randn(6, 5, dtype=torch.float64)
    weight = torch.randn(5, 5, dtype=torch.float64)

    def loss(mixed_node, flat):
        node1 = mixed_node([x * (k + 1) for k in range(6)], flat[:6].view(2, 3), mask)
        outs2 = [node1] + [torch.tanh(node1 @ weight) * (k + 1) for k in range(5)]
        return mixed_node(outs2, flat[6:].view(2, 3), mask).pow(2).sum()

    flat = torch.randn(12, dtype=torch.float64)
    fused = torch.autograd.functional.hessian(lambda v: loss(ops.mixed_node, v), flat)
    reference = torch.autograd.functional.hessian(lambda v: loss(ops._reference.mixed_node, v), flat)
    torch.testing.assert_close(fused, reference)
