"""MixedNode keeps BatchNorm-ended and 'none' operator outputs as recipes: same gradients, fewer saved bytes.

Both paths: every operator on its own (grouping off) and the grouped one (fastnas.nn.grouped).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

import fastnas.nn.mixed
from fastnas.nn import MixedNode
from fastnas.nn.cost import count_saved_bytes
from fastnas.nn.darts_ops import Zero
from fastnas.search_spaces import SuperNetwork

GROUPING = pytest.mark.parametrize("grouping", [False, True], ids=["per-operator", "grouped"])


def networks(grouping: bool = True):
    torch.manual_seed(0)
    recomputing = SuperNetwork(C=4, num_classes=10, layers=3, nodes=2, in_channels=3).double()
    recomputing.set_grouping(grouping)
    saving = copy.deepcopy(recomputing)
    for node in saving.modules():
        if isinstance(node, MixedNode):
            node.recompute_outputs = False
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 9])
    return recomputing, saving, lambda net: F.cross_entropy(net(images)[0], labels)


@GROUPING
def test_same_loss_gradients_and_statistics(grouping):
    recomputing, saving, loss = networks(grouping)
    loss(recomputing).backward()
    loss(saving).backward()
    for (name, a), (_, b) in zip(recomputing.named_parameters(), saving.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13, msg=name)
    for (name, a), (_, b) in zip(recomputing.named_buffers(), saving.named_buffers()):
        torch.testing.assert_close(a, b, msg=name)


def _small_saves(net) -> int:
    """alpha and the masks, saved under the recipe hook, are not seen by count_saved_bytes either."""
    return sum(p.numel() * p.element_size() for p in net.arch_parameters()) + sum(
        node.mask.numel() for node in net.modules() if isinstance(node, MixedNode))


def test_saves_the_recomputed_outputs_less():
    recomputing, saving, loss = networks(grouping=False)
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
    saved_less = count_saved_bytes(lambda: loss(saving)) - with_recompute
    assert len(recomputed) > 50 and sum(recomputed) <= saved_less <= sum(recomputed) + _small_saves(recomputing)


def test_grouped_path_keeps_batch_norm_ended_outputs_and_concatenated_inputs_as_recipes(monkeypatch):
    # 'none' is not run on this path: what is saved less is exactly the BatchNorm-ended terms of chunk_sum
    # (the six grouped operations of each node, and skip_connect's cell inputs, which end in preprocessing's BN)
    # and the concatenated group inputs, which the pools save (here every node has pools on all its edges)
    recomputing, saving, loss = networks(grouping=True)
    kept, chunk_sum, concat = [], fastnas.nn.mixed.chunk_sum, fastnas.nn.mixed.concat

    def recording_chunk_sum(outs, weights, chunks):
        kept.extend(out for out in outs if type(out.grad_fn).__name__ == "NativeBatchNormBackward0")
        return chunk_sum(outs, weights, chunks)

    def recording_concat(tensors, dim=0):
        kept.extend([concat(tensors, dim)] if len(tensors) > 1 else [])
        return kept[-1] if len(tensors) > 1 else concat(tensors, dim)
    monkeypatch.setattr(fastnas.nn.mixed, "chunk_sum", recording_chunk_sum)
    monkeypatch.setattr(fastnas.nn.mixed, "concat", recording_concat)
    with_recompute = count_saved_bytes(lambda: loss(recomputing))
    monkeypatch.setattr(fastnas.nn.mixed, "chunk_sum", chunk_sum)
    monkeypatch.setattr(fastnas.nn.mixed, "concat", concat)
    saved_less = count_saved_bytes(lambda: loss(saving)) - with_recompute
    # a cell input is a term of every node it feeds: count each storage once
    recomputed = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
    assert len(recomputed) > 12
    assert sum(recomputed.values()) <= saved_less <= sum(recomputed.values()) + _small_saves(recomputing)


@GROUPING
def test_hessian_vector_product_through_recomputed_outputs(grouping):
    recomputing, saving, loss = networks(grouping)

    def hvp(net):
        alphas = net.arch_parameters()
        grads = torch.autograd.grad(loss(net), alphas, create_graph=True)
        return torch.autograd.grad(sum((g * g).sum() for g in grads), alphas)
    for a, b in zip(hvp(recomputing), hvp(saving)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


@GROUPING
@pytest.mark.parametrize("mode", ["eval", "no_grad"])
def test_inference_needs_no_recipes(mode, grouping):
    recomputing, saving, _ = networks(grouping)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    if mode == "eval":
        recomputing.eval(), saving.eval()
    with torch.set_grad_enabled(mode == "eval"):
        torch.testing.assert_close(recomputing(x)[0], saving(x)[0])
