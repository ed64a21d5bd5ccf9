"""Horizontal fusion (fastnas.nn.grouped): the grouped node computes what the per-operator node computes,
in float64, for DARTS, SD-DARTS and DNAD steps, with pruning in the middle of a run; BatchNorm buffers
included. The op chunk_sum has its own file, tests/test_chunk_sum.py."""

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.testing import assert_close

from fastnas import ops
from fastnas.nn import MixedNode, darts_node
from fastnas.nn.cost import count_flops
from fastnas.nn.grouped import PackedStats
from fastnas.search_spaces import DARTS_PRIMITIVES, SuperNetwork

DNAD_OPS = ("sep_conv_3x3", "skip_connect", "dil_conv_5x5", "avg_pool_3x3")
CLOSE = dict(rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- one node

def node_pair(num_edges=3, reduction=True, primitives=DARTS_PRIMITIVES, mode="softmax"):
    torch.manual_seed(0)
    grouped = darts_node(num_edges, 4, reduction, primitives, mode).double()
    with torch.no_grad():
        for buffer in grouped.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)  # running statistics no default value can hide behind
    per_operator = copy.deepcopy(grouped)
    per_operator.group_operators = False
    return grouped, per_operator


def node_inputs(num_edges=3, reduction=True):
    gen = torch.Generator().manual_seed(1)
    # a reduction cell: the two cell inputs at 8x8, the intermediate nodes at 4x4
    sizes = [8 if reduction and e < 2 else (4 if reduction else 8) for e in range(num_edges)]
    return [torch.randn(3, 4, s, s, generator=gen, dtype=torch.float64).requires_grad_() for s in sizes]


def assert_same_node(grouped, per_operator, inputs, alpha, mask=None, weights_given=False):
    values = []
    for node in (grouped, per_operator):
        alpha_copy = alpha.detach().clone().requires_grad_()
        weights = node.weights(alpha_copy) if weights_given and node is grouped else None
        out = node(inputs, alpha_copy, mask, weights=weights)
        grads = torch.autograd.grad(out, [*inputs, alpha_copy, *node.parameters()], torch.ones_like(out) / 7,
                                    allow_unused=mask is not None)  # a call mask skips some modules
        values.append((out, grads))
    assert_close(values[0][0], values[1][0], **CLOSE)
    for got, want in zip(values[0][1], values[1][1]):
        assert (got is None) == (want is None)
        if got is not None:
            assert_close(got, want, **CLOSE)
    for (name, got), want in zip(grouped.state_dict().items(), per_operator.state_dict().values()):
        assert_close(got, want, **CLOSE, msg=name)


@pytest.mark.parametrize("mode", ["softmax", "relu_norm", "sigmoid"])
def test_grouped_node_equals_per_operator_node_in_a_reduction_cell(mode):
    grouped, per_operator = node_pair(mode=mode)
    inputs, alpha = node_inputs(), torch.randn(3, len(DARTS_PRIMITIVES), dtype=torch.float64)
    for _ in range(2):  # the second call reads the running statistics the first one updated
        assert_same_node(grouped, per_operator, inputs, alpha)
    # the same operation ran as one call per stride: 2 edges at stride 2, 1 at stride 1 (alone)
    plan = next(iter(grouped._plans.values()))
    assert sorted({term.edges for term in plan.terms if term.run is not None}) == [(0, 1)]
    grouped.eval(), per_operator.eval()
    assert_same_node(grouped, per_operator, inputs, alpha)


def test_grouped_node_with_pruning_a_call_mask_and_given_weights():
    grouped, per_operator = node_pair(num_edges=4, reduction=False)
    inputs, alpha = node_inputs(4, reduction=False), torch.randn(4, len(DARTS_PRIMITIVES), dtype=torch.float64)
    assert_same_node(grouped, per_operator, inputs, alpha)
    for node in (grouped, per_operator):
        for edge, op in [(0, 4), (2, 4), (3, 1), (1, 6)]:
            node.prune(edge, op)
    assert_same_node(grouped, per_operator, inputs, alpha, weights_given=True)
    plan = next(iter(grouped._plans.values()))
    sep_conv_3x3 = next(t for t in plan.terms if t.modules[0] is grouped.candidates["1_4"])
    assert sep_conv_3x3.edges == (1, 3)  # the group shrank with the pruning
    mask = torch.ones(4, len(DARTS_PRIMITIVES), dtype=torch.bool)
    mask[1, 5] = mask[0, 3] = False
    assert_same_node(grouped, per_operator, inputs, alpha, mask=mask)


def test_a_hooked_candidate_runs_on_its_own():
    grouped, per_operator = node_pair(reduction=False)
    calls = []
    grouped.candidates["1_4"].register_forward_hook(lambda *_: calls.append(1))
    assert_same_node(grouped, per_operator, node_inputs(reduction=False),
                     torch.randn(3, len(DARTS_PRIMITIVES), dtype=torch.float64))
    assert calls == [1]


def test_packed_running_statistics_follow_moves_copies_and_loads():
    grouped, per_operator = node_pair(reduction=False)
    inputs, alpha = node_inputs(reduction=False), torch.randn(3, len(DARTS_PRIMITIVES), dtype=torch.float64)
    assert_same_node(grouped, per_operator, inputs, alpha)
    bn = grouped.candidates["0_4"][2]
    assert bn.running_mean._base is not None  # a view of the group's packed statistics
    # a deep copy keeps its own packed statistics, aliasing its own modules only
    twin = copy.deepcopy(grouped)
    twin(inputs, alpha)
    assert_close(grouped.candidates["0_4"][2].running_mean, per_operator.candidates["0_4"][2].running_mean)
    assert not torch.equal(twin.candidates["0_4"][2].running_mean, bn.running_mean)
    # .to() replaces the buffers: the next call packs them again from their values
    grouped.float().double()
    per_operator.float().double()
    assert_same_node(grouped, per_operator, inputs, alpha)
    # a state dict saved with packed views loads into a fresh node, in place and with assign=True
    buffer = io.BytesIO()
    torch.save(grouped.state_dict(), buffer)
    for assign in (False, True):
        buffer.seek(0)
        fresh, _ = node_pair(reduction=False)
        fresh.load_state_dict(torch.load(buffer), assign=assign)
        for name, value in grouped.state_dict().items():
            assert torch.equal(fresh.state_dict()[name], value), name
        assert_same_node(fresh, copy.deepcopy(per_operator), inputs, alpha)


def test_packed_stats_are_views_of_one_tensor():
    bns = [nn.BatchNorm2d(3, affine=False).double() for _ in range(3)]
    for i, bn in enumerate(bns):
        bn.running_mean.fill_(i + 1.0)
    stats = PackedStats([bns[:2], bns[2:]])  # two grouped calls: one over two modules, one over the third
    stats.refresh()
    (mean_a, _), (mean_b, _) = stats.views
    assert mean_a.tolist() == [1.0] * 3 + [2.0] * 3 and mean_b.tolist() == [3.0] * 3
    mean_a.add_(1.0)
    stats.count.add_(1)
    assert bns[1].running_mean.tolist() == [3.0] * 3 and [bn.num_batches_tracked.item() for bn in bns] == [1] * 3
    bns[2].running_mean = torch.zeros(3, dtype=torch.float64)  # replaced: packed again from the values
    stats.refresh()
    assert stats.views[1][0].tolist() == [0.0] * 3 and stats.views[0][0].tolist() == [2.0] * 3 + [3.0] * 3


# ----------------------------------------------------------------------------- whole search steps

def make_network(method: str, grouping: bool) -> SuperNetwork:
    torch.manual_seed(0)
    dnad = method == "dnad"
    net = SuperNetwork(C=4, num_classes=5, layers=3, nodes=3, primitives=DNAD_OPS if dnad else DARTS_PRIMITIVES,
                       in_channels=3, mode="relu_norm" if dnad else "softmax", alpha_per_cell=dnad,
                       alpha_init=2.0 if dnad else None).double()
    net.set_grouping(grouping)
    return net


def batches(steps: int):
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(6, 3, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 5, (6,), generator=gen))
            for _ in range(2 * steps)]


def voted_kl(net: SuperNetwork, teachers: list[SuperNetwork], images, logits) -> torch.Tensor:
    """SD-DARTS's term: KL(mean of the teachers' softmax || student), the teachers in train mode, no gradient."""
    with torch.no_grad():
        voted = torch.stack([F.softmax(teacher(images)[0], dim=1) for teacher in teachers]).mean(0)
    return F.kl_div(F.log_softmax(logits, dim=1), voted, reduction="batchmean")


def run_steps(method: str, grouping: bool, steps: int = 4) -> tuple[SuperNetwork, list[float]]:
    """A few steps of the method, as its strategy does them; DNAD prunes after step 2 (some alphas set < 0)."""
    net = make_network(method, grouping)
    data, losses, teachers = batches(steps), [], []
    if method == "dnad":
        weight_opt = torch.optim.Adam(net.weight_parameters(), 1e-2, betas=(0.5, 0.999))
        arch_opt = torch.optim.SGD(net.arch_parameters(), 0.5)
    else:
        weight_opt = torch.optim.SGD(net.weight_parameters(), 0.05, momentum=0.9, weight_decay=3e-4)
        arch_opt = torch.optim.Adam(net.arch_parameters(), 3e-2, betas=(0.5, 0.999))
    for step in range(steps):
        (val_x, val_y), (train_x, train_y) = data[2 * step], data[2 * step + 1]

        def loss_of(images, labels):
            logits, features = net(images)
            loss = F.cross_entropy(logits, labels)
            if method == "sddarts" and teachers:
                loss = loss + voted_kl(net, teachers, images, logits)
            if method == "dnad":
                sparsity = torch.stack([torch.log1p(50 * w).sum() for w in net.node_weights()]).sum()
                loss = loss * (1 + 1e-2 * sparsity) + sum(f.square().mean() for f in features)
            return loss
        if method != "dnad":  # bi-level, first order: the architecture on the validation batch first
            arch_opt.zero_grad()
            loss_of(val_x, val_y).backward()
            arch_opt.step()
        weight_opt.zero_grad(), arch_opt.zero_grad()
        loss = loss_of(train_x, train_y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        weight_opt.step()
        if method == "dnad":
            arch_opt.step()
            if step == 1:
                with torch.no_grad():
                    net.alphas[0][[0, 1, 3], [0, 2, 0]] = -1.0   # cell 0: sep_conv and dil_conv of a few edges
                    net.alphas[1][[0, 1], [1, 3]] = -1.0          # cell 1 (reduction): FactorizedReduce, a pool
            if net.prune_below(0.01):
                live = {id(p) for p in net.weight_parameters()}
                weight_opt.param_groups[0]["params"] = [p for p in weight_opt.param_groups[0]["params"]
                                                        if id(p) in live]
        losses.append(loss.item())
        if method == "sddarts":
            teachers = ([copy.deepcopy(net)] + teachers)[:2]  # the K = 2 previous networks
    return net, losses


@pytest.mark.parametrize("method", ["darts", "sddarts", "dnad"])
def test_search_steps_equal_with_and_without_grouping(method):
    grouped, grouped_losses = run_steps(method, grouping=True)
    per_operator, losses = run_steps(method, grouping=False)
    assert_close(grouped_losses, losses, **CLOSE)
    if method == "dnad":
        assert grouped.num_live_ops() == per_operator.num_live_ops() < make_network("dnad", True).num_live_ops()
    for (name, got), want in zip(grouped.state_dict().items(), per_operator.state_dict().values()):
        assert_close(got, want, **CLOSE, msg=name)  # weights, alphas, BatchNorm running statistics and counts
    groups = [term for node in grouped.modules() if isinstance(node, MixedNode)
              for plan in node._plans.values() for term in plan.terms if term.run is not None]
    assert groups and not any(node._plans for node in per_operator.modules() if isinstance(node, MixedNode))


@pytest.mark.parametrize("max_norm", [1e-2, 1e2])
def test_clip_grad_norm_equals_torchs(max_norm):
    def network_with_grads():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 5)).double()
        net(torch.randn(2, 3, 8, 8, dtype=torch.float64)).square().sum().backward()
        return net
    ours, theirs = network_with_grads(), network_with_grads()
    total = ops.clip_grad_norm_(ours.parameters(), max_norm)
    assert_close(total, nn.utils.clip_grad_norm_(theirs.parameters(), max_norm), **CLOSE)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert_close(a.grad, b.grad, **CLOSE)
    assert (total > max_norm) == (max_norm == 1e-2)  # one case clips, the other leaves the gradients


def test_flops_of_a_grouped_super_network_count_every_convolution():
    grouped, per_operator = make_network("dnad", True).float(), make_network("dnad", False).float()
    assert count_flops(grouped, (3, 8, 8)) == count_flops(per_operator, (3, 8, 8)) > 0
    assert all(node.group_operators for node in grouped.modules() if isinstance(node, MixedNode))
