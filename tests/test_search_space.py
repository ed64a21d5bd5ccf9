"""DARTS search space: genotypes, the discrete network, the shared cost counter."""

import json

import pytest
import torch
import torch.nn as nn

from fastnas.nn.cost import PrunedFlops, count_flops, count_params
from fastnas.search_spaces import DiscreteNetwork, Genotype, SuperNetwork
from conftest import DEVICES


def test_cost_counter_hand_computed():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, 10))
    assert count_params(net) == (2 * 9 + 2) + (32 * 10 + 10)
    # conv: 2 output channels x 4x4 positions x 9 MACs; linear: 10 x 32 MACs.
    assert count_flops(net, (1, 4, 4)) == 2 * 16 * 9 + 10 * 32


@pytest.mark.parametrize("grouping", [True, False])
def test_pruned_flops_equals_count_flops_as_a_super_network_is_pruned(grouping):
    torch.manual_seed(0)
    net = SuperNetwork(C=4, layers=3, nodes=2, primitives=["sep_conv_3x3", "skip_connect", "dil_conv_5x5"],
                       in_channels=1, mode="relu_norm", alpha_per_cell=True)
    net.set_grouping(grouping)
    flops = PrunedFlops(net, (1, 8, 8))
    unpruned = flops()
    assert unpruned == count_flops(net, (1, 8, 8)) > 0
    nodes = [node for cell in net.cells for node in cell.nodes]
    # one operator at a time until every node is empty, so whole edges and nodes die too
    for node in nodes:
        for edge, op in node.mask.nonzero().tolist():
            node.prune(edge, op)
            assert flops() == count_flops(net, (1, 8, 8))
    assert 0 < flops() < unpruned  # the stem, the cells' preprocessing and the classifier are left
    net.classifier = nn.Linear(net.classifier.in_features, 3)  # a layer it never measured: measured again
    assert flops() == count_flops(net, (1, 8, 8))


def test_darts_genotype_keeps_top2_edges_by_strongest_non_none_weight():
    net = SuperNetwork(C=4, layers=3, nodes=2, primitives=["none", "skip_connect", "avg_pool_3x3"], in_channels=1)
    with torch.no_grad():
        normal = net.alphas[0]
        normal.zero_()
        normal[0] = torch.tensor([9.0, 1.0, 0.0])   # node 0, edge 0: 'none' strongest, skip next
        normal[1] = torch.tensor([0.0, 0.0, 2.0])   # node 0, edge 1: avg_pool
        normal[2:5] = torch.tensor([0.0, 3.0, 0.0])  # node 1: edges 0, 1, 2 skip, equal weights
        normal[4] = torch.tensor([0.0, 0.0, 5.0])   # node 1, edge 2: avg_pool strongest
    genotype = net.genotype()
    assert genotype.normal[0] == [("skip_connect", 0), ("avg_pool_3x3", 1)]
    assert genotype.normal[1][1] == ("avg_pool_3x3", 2) and len(genotype.normal[1]) == 2


def test_genotype_json_round_trip_and_discrete_network(tmp_path):
    genotype = Genotype(cells=[[[("sep_conv_3x3", 0)], [("skip_connect", 2), ("max_pool_3x3", 1)]],
                               [[("dil_conv_3x3", 1)], []],
                               [[], [("avg_pool_3x3", 0)]]])
    path = tmp_path / "g.json"
    genotype.save(path)
    loaded = Genotype.load(path)
    assert loaded == genotype
    net = DiscreteNetwork(loaded, C=4, num_classes=3, in_channels=1)
    logits, features = net(torch.randn(2, 1, 8, 8))
    assert logits.shape == (2, 3) and [f.shape[-1] for f in features] == [8, 4, 2]
    # Cell 1 keeps one node (4 * 2 channels at the first reduction), cell 2 one node too.
    assert net.cells[1].out_channels == 8 and net.cells[2].out_channels == 16


def test_genotype_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown operation"):
        Genotype(normal=[[("conv_9x9", 0)]], reduce=[[("skip_connect", 0)]])
    with pytest.raises(ValueError, match="either"):
        Genotype(normal=[[("skip_connect", 0)]])
    with pytest.raises(FileNotFoundError, match="genotype"):
        Genotype.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"nodes": 1}))
    with pytest.raises(ValueError, match="not a fastnas genotype"):
        Genotype.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read state 3"):
        DiscreteNetwork(Genotype(cells=[[[("skip_connect", 3)]]] * 3), C=4, in_channels=1)
    with pytest.raises(ValueError, match="layers"):
        DiscreteNetwork(Genotype(cells=[[[("skip_connect", 0)]]] * 3), C=4, layers=5, in_channels=1)


def test_super_network_matches_a_reference_style_weighted_sum():
    # The fused node equals sum_e sum_k softmax(alpha_e)_k * op_k(x_e) computed the DARTS way.
    torch.manual_seed(0)
    net = SuperNetwork(C=4, layers=3, nodes=2, primitives=["skip_connect", "sep_conv_3x3", "avg_pool_3x3"],
                       in_channels=1).eval()
    node = net.cells[0].nodes[1]
    inputs = [torch.randn(2, 4, 8, 8) for _ in range(3)]
    alpha = torch.randn(3, 3)
    expected = 0
    for e in range(3):
        weights = torch.softmax(alpha[e], 0)
        for k in range(3):
            op = node.candidates[f"{e}_{k}"]
            x = torch.relu(inputs[e]) if getattr(op, "relu_input", False) else inputs[e]
            expected = expected + weights[k] * op(x)
    torch.testing.assert_close(node(inputs, alpha), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_prune_below_prunes_exactly_the_small_weights_and_they_stay_zero(device):
    torch.manual_seed(0)
    net = SuperNetwork(C=2, num_classes=3, layers=3, nodes=2, in_channels=1, mode="relu_norm", alpha_per_cell=True,
                       primitives=("skip_connect", "sep_conv_3x3", "avg_pool_3x3")).to(device)
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.uniform_(-0.5, 1.0)  # relu: every negative alpha gets weight 0
    before = [w.detach().cpu() for w in net.node_weights()]
    masks = [m.clone() for cell in net.node_masks() for m in cell]
    pruned = net.prune_below(0.05)
    expected = [(m & (w < 0.05)).nonzero().tolist() for m, w in zip(masks, before)]
    assert sorted((i * 2 + j, e, net.primitives.index(op)) for i, j, e, op in pruned) == \
        sorted((n, e, k) for n, pairs in enumerate(expected) for e, k in pairs)
    assert pruned and net.num_live_ops() == sum(int(m.sum()) for m in masks) - len(pruned)
    # the weights after pruning: 0 at pruned entries (the node's device mask was refreshed), renormalized elsewhere
    for w, mask in zip(net.node_weights(), (m for cell in net.node_masks() for m in cell)):
        assert w.device.type == torch.device(device).type
        assert (w.cpu()[~mask] == 0).all()
        assert w.sum().item() == pytest.approx(1.0) or w.sum().item() == 0.0
