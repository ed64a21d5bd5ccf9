"""MixedNode keeps BatchNorm-ended and 'none' operator outputs as recipes: same gradients, fewer saved bytes."""

import copy

import pytest
import torch
import torch.nn.functional as F

from fastnas.nn import MixedNode
from fastnas.nn.cost import count_saved_bytes
from fastnas.nn.darts_ops import Zero
from fastnas.search_spaces import SuperNetwork


def networks():
    torch.manual_seed(0)
    recomputing = SuperNetwork(C=4, num_classes=10, layers=3, nodes=2, in_channels=3).double()
    saving = copy.deepcopy(recomputing)
    for node in saving.modules():
        if isinstance(node, MixedNode):
            node.recompute_outputs = False
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 9])
    return recomputing, saving, lambda net: F.cross_entropy(net(images)[0], labels)


def test_same_loss_gradients_and_statistics():
    recomputing, saving, loss = networks()
    loss(recomputing).backward()
    loss(saving).backward()
    for (name, a), (_, b) in zip(recomputing.named_parameters(), saving.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13, msg=name)
    for (name, a), (_, b) in zip(recomputing.named_buffers(), saving.named_buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_saves_the_recomputed_outputs_less():
    recomputing, saving, loss = networks()
    recomputed = []

    def record(module, _inputs, output):
        # skip_connect's Identity hands on the cell input, which other operators save anyway
        if isinstance(module, Zero) or (type(output.grad_fn).__name__ == "NativeBatchNormBackward0"
                                        and not isinstance(module, torch.nn.Identity)):
            recomputed.append(output.untyped_storage().nbytes())
    hooks = [m.register_forward_hook(record) for node in recomputing.modules() if isinstance(node, MixedNode)
             for m in node.candidates.values()]
    with_recompute = count_saved_bytes(lambda: loss(recomputing))
    for hook in hooks:
        hook.remove()
    # alpha and the masks, saved under the recipe hook, are not seen by count_saved_bytes either
    small = sum(p.numel() * p.element_size() for p in recomputing.arch_parameters()) + sum(
        node.mask.numel() for node in recomputing.modules() if isinstance(node, MixedNode))
    saved_less = count_saved_bytes(lambda: loss(saving)) - with_recompute
    assert len(recomputed) > 50 and sum(recomputed) <= saved_less <= sum(recomputed) + small


def test_hessian_vector_product_through_recomputed_outputs():
    recomputing, saving, loss = networks()

    def hvp(net):
        alphas = net.arch_parameters()
        grads = torch.autograd.grad(loss(net), alphas, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in grads), alphas)
    for a, b in zip(hvp(recomputing), hvp(saving)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_inference_needs_no_recipes(mode):
    recomputing, saving, _ = networks()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    if mode == "eval":
        recomputing.eval(), saving.eval()
    with torch.set_grad_enabled(mode == "eval"):
        torch.testing.assert_close(recomputing(x)[0], saving(x)[0])
