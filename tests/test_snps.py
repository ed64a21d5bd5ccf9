"""SNPS (DNAD): the sparsity term, the attention weights and the coefficient schedule, by hand."""

import math

import pytest
import torch

from fastnas.search_spaces import SuperNetwork
from fastnas.strategies import ProgressiveShrinking, SNPSConfig, sparsity_entropy


def test_sparsity_entropy_hand_computed():
    weights = [torch.tensor([[0.25, 0.75], [0.0, 0.0]]), torch.tensor([[1.0]])]
    expected = math.log(1 + 12.5) + math.log(1 + 37.5) + math.log(51)
    assert sparsity_entropy(weights).item() == pytest.approx(expected)


def test_attention_weights_are_relu_normalized_per_node():
    net = SuperNetwork(C=4, layers=3, nodes=2, primitives=["skip_connect", "avg_pool_3x3"], in_channels=1,
                       mode="relu_norm", alpha_per_cell=True, alpha_init=2.0)
    with torch.no_grad():
        net.alphas[0][0:2] = torch.tensor([[1.0, 3.0], [-1.0, 4.0]])  # node 0 of cell 0: edges 0, 1
    weights = net.cell_weights(0)
    torch.testing.assert_close(weights[0], torch.tensor([[1 / 8, 3 / 8], [0.0, 4 / 8]]))
    # Node 1: 3 edges x 2 ops, every alpha 2.0 -> 1/6 each.
    torch.testing.assert_close(weights[1], torch.full((3, 2), 1 / 6))


def test_loss_formula():
    shrinking = ProgressiveShrinking(SNPSConfig(gamma=0.5, mu=0.2))
    task, sparsity = torch.tensor(2.0), torch.tensor(10.0)
    assert shrinking.loss(task, sparsity, warm_up=True).item() == 2.0
    assert shrinking.loss(task, sparsity, warm_up=False).item() == pytest.approx(2 * (1 + 5) + 0.5 * 0.2 * 10)


def test_schedule_hand_computed():
    config = SNPSConfig(gamma=0.05, gamma_max=0.1, mu=0.1, n_max=0.5, tau=0.5, phi=2.0, k=0.5, rho=3.0,
                        xi=0.5, tqu_max=2)
    s = ProgressiveShrinking(config)
    # Step 1: one op pruned -> EMA 0.5 >= n_max 0.5: gamma decays to 0.025.
    assert s.step(1) is False and s.pruned_ema == 0.5 and s.gamma == pytest.approx(0.025)
    # Step 2: none pruned -> EMA 0.25 < 0.5, gamma below max: grows to 0.05, no count.
    assert s.step(0) is False and s.gamma == pytest.approx(0.05) and s.steps_at_max == 0
    # Step 3: EMA 0.125, gamma 0.05 < 0.1: grows to 0.1.
    assert s.step(0) is False and s.gamma == pytest.approx(0.1) and s.steps_at_max == 0
    # Step 4: gamma at max: grows to 0.2, count 1 of 2.
    assert s.step(0) is False and s.gamma == pytest.approx(0.2) and s.steps_at_max == 1
    # Step 5: count reaches tqu_max: a Pareto point; mu *= 3, n_max *= 0.5, count restarts.
    assert s.step(0) is True
    assert s.gamma == pytest.approx(0.4) and s.mu == pytest.approx(0.3) and s.n_max == pytest.approx(0.25)
    assert s.steps_at_max == 0
    # Step 6: a pruning burst: EMA = 0.5*~0.0078 + 0.5*3 >= 0.25 -> gamma decays, count stays 0.
    assert s.step(3) is False and s.gamma == pytest.approx(0.2) and s.steps_at_max == 0


def test_state_round_trip():
    s = ProgressiveShrinking(SNPSConfig())
    for n in (0, 2, 0, 0):
        s.step(n)
    t = ProgressiveShrinking(SNPSConfig(gamma=1.0))
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()


@pytest.mark.parametrize("field, value", [("gamma", 0.0), ("tau", 1.0), ("eps", 0.0), ("tqu_max", 0), ("mu", -1.0)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=field):
        SNPSConfig(**{field: value})


def test_pruning_removes_operators_and_their_parameters():
    net = SuperNetwork(C=4, layers=3, nodes=2, primitives=["sep_conv_3x3", "skip_connect"], in_channels=1,
                       mode="relu_norm", alpha_per_cell=True, alpha_init=2.0)
    params, ops = sum(p.numel() for p in net.parameters()), net.num_live_ops()
    with torch.no_grad():
        net.alphas[0][0, 0] = -1.0   # cell 0, node 0, edge 0, sep_conv_3x3 -> weight 0
    pruned = net.prune_below(0.01)
    assert pruned == [(0, 0, 0, "sep_conv_3x3")]
    assert net.num_live_ops() == ops - 1
    sep_conv_params = sum(p.numel() for p in
                          SuperNetwork(C=4, layers=3, nodes=2, primitives=["sep_conv_3x3"], in_channels=1)
                          .cells[0].nodes[0].candidates["0_0"].parameters())
    assert sum(p.numel() for p in net.parameters()) == params - sep_conv_params
    # The pruned operator is no longer called.
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in net.cells[0].nodes[0].candidates.values()]
    net(torch.randn(2, 1, 8, 8))
    assert len(calls) == 3
    for h in handles:
        h.remove()
