"""The DARTS evaluation networks against a transcription of the reference (quark0/darts cnn/model.py, operations.py).

The reference below is written the way quark0/darts writes it (each operation starting with its ReLU, drop-path
in place, a flat list of (op, input) pairs, two per node), on the CPU. Its parameters and buffers register in the
same order as fastnas's, so one state dict is copied positionally and the outputs must be equal.
"""

import pytest
import torch
import torch.nn as nn

from fastnas.nn.cost import count_params
from fastnas.search_spaces import (DiscreteNetwork, Genotype, NetworkCIFAR, NetworkImageNet, load_genotype,
                                   reference_param_count)
from fastnas.search_spaces.darts_eval import DiscreteCell, drop_path


# --------------------------------------------------------------------------- the reference, transcribed

class RefSepConv(nn.Sequential):
    def __init__(self, C, k, stride, padding):
        super().__init__(nn.ReLU(), nn.Conv2d(C, C, k, stride, padding, groups=C, bias=False),
                         nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C), nn.ReLU(),
                         nn.Conv2d(C, C, k, 1, padding, groups=C, bias=False), nn.Conv2d(C, C, 1, bias=False),
                         nn.BatchNorm2d(C))


class RefDilConv(nn.Sequential):
    def __init__(self, C, k, stride, padding, dilation):
        super().__init__(nn.ReLU(), nn.Conv2d(C, C, k, stride, padding, dilation, groups=C, bias=False),
                         nn.Conv2d(C, C, 1, bias=False), nn.BatchNorm2d(C))


class RefFactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out):
        super().__init__()
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x):
        x = torch.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class RefIdentity(nn.Module):
    def forward(self, x):
        return x


def ref_op(name, C, stride):
    return {
        "avg_pool_3x3": lambda: nn.AvgPool2d(3, stride, 1, count_include_pad=False),
        "max_pool_3x3": lambda: nn.MaxPool2d(3, stride, 1),
        "skip_connect": lambda: RefIdentity() if stride == 1 else RefFactorizedReduce(C, C),
        "sep_conv_3x3": lambda: RefSepConv(C, 3, stride, 1), "sep_conv_5x5": lambda: RefSepConv(C, 5, stride, 2),
        "dil_conv_3x3": lambda: RefDilConv(C, 3, stride, 2, 2), "dil_conv_5x5": lambda: RefDilConv(C, 5, stride, 4, 2),
    }[name]()


def ref_drop_path(x, drop_prob):  # quark0/darts cnn/utils.py, on the CPU
    keep_prob = 1.0 - drop_prob
    mask = torch.FloatTensor(x.size(0), 1, 1, 1).bernoulli_(keep_prob)
    x.div_(keep_prob)
    x.mul_(mask)
    return x


def rcb(C_in, C_out):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out))


class RefCell(nn.Module):
    def __init__(self, pairs, C_pp, C_p, C, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = RefFactorizedReduce(C_pp, C) if reduction_prev else rcb(C_pp, C)
        self.preprocess1 = rcb(C_p, C)
        self._ops = nn.ModuleList(ref_op(name, C, 2 if reduction and index < 2 else 1) for name, index in pairs)
        self._indices = [index for _, index in pairs]

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._ops) // 2):
            h1, h2 = states[self._indices[2 * i]], states[self._indices[2 * i + 1]]
            op1, op2 = self._ops[2 * i], self._ops[2 * i + 1]
            h1, h2 = op1(h1), op2(h2)
            if self.training and drop_prob > 0.:
                if not isinstance(op1, RefIdentity):
                    h1 = ref_drop_path(h1, drop_prob)
                if not isinstance(op2, RefIdentity):
                    h2 = ref_drop_path(h2, drop_prob)
            states += [h1 + h2]
        return torch.cat(states[2:], dim=1)


def ref_aux_head(C, num_classes, pool_stride, last_bn):
    layers = [nn.ReLU(), nn.AvgPool2d(5, stride=pool_stride, count_include_pad=False), nn.Conv2d(C, 128, 1, bias=False),
              nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 768, 2, bias=False)]
    features = nn.Sequential(*layers, *([nn.BatchNorm2d(768)] if last_bn else []), nn.ReLU())
    return nn.ModuleDict({"features": features, "classifier": nn.Linear(768, num_classes)})


class RefNetwork(nn.Module):
    """NetworkCIFAR (imagenet=False) or NetworkImageNet, flattened genotype pairs as quark0/darts."""

    def __init__(self, C, num_classes, layers, genotype, imagenet):
        super().__init__()
        self._layers = layers
        if imagenet:
            self.stem0 = nn.Sequential(nn.Conv2d(3, C // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(),
                                       nn.Conv2d(C // 2, C, 3, 2, 1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, 2, 1, bias=False), nn.BatchNorm2d(C))
            C_pp, C_p, C_cur, reduction_prev = C, C, C, True
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            C_pp, C_p, C_cur, reduction_prev = 3 * C, 3 * C, C, False
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in [layers // 3, 2 * layers // 3]
            C_cur *= 2 if reduction else 1
            pairs = [pair for node in (genotype.reduce if reduction else genotype.normal) for pair in node]
            self.cells.append(RefCell(pairs, C_pp, C_p, C_cur, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, 4 * C_cur
            if i == 2 * layers // 3:
                C_aux = C_p
        self.auxiliary_head = ref_aux_head(C_aux, num_classes, 2 if imagenet else 3, last_bn=not imagenet)
        self.classifier = nn.Linear(C_p, num_classes)
        self.imagenet = imagenet

    def forward(self, x):
        logits_aux = None
        if self.imagenet:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == 2 * self._layers // 3 and self.training:
                head = self.auxiliary_head
                logits_aux = head["classifier"](head["features"](s1).flatten(1))
        logits = self.classifier(s1.mean((2, 3)))
        return logits, logits_aux


def copy_positionally(source: nn.Module, target: nn.Module) -> None:
    """Copies every parameter and buffer of `source` into `target` in registration order (shapes must agree)."""
    pairs = list(zip(source.state_dict().values(), target.state_dict().values(), strict=True))
    with torch.no_grad():
        for s, t in pairs:
            assert s.shape == t.shape
            t.copy_(s)


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Non-default weights and BatchNorm statistics, so a swapped tensor would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)
                tensor.copy_(0.5 + noise if name.endswith("running_var") else 0.6 * noise - 0.3)


@pytest.mark.parametrize("name", ["DARTS_V2", "PC_DARTS", "PDARTS"])
@pytest.mark.parametrize("imagenet", [False, True], ids=["cifar", "imagenet"])
def test_forward_equals_the_reference_with_aux_head_and_drop_path(name, imagenet):
    genotype = load_genotype(name)
    C, layers, side = (8, 5, 224) if imagenet else (4, 5, 32)  # the auxiliary head reads 7x7 / 8x8 maps
    net = (NetworkImageNet if imagenet else NetworkCIFAR)(genotype, C, 10, layers, auxiliary=True).double()
    ref = RefNetwork(C, 10, layers, genotype, imagenet).double()
    assert count_params(net) == count_params(ref)
    randomize(net)
    copy_positionally(net, ref)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    net.eval(), ref.eval()
    ref.drop_path_prob = 0.0  # the reference's train.py sets it; fastnas's networks start at 0
    logits, features = net(x)  # eval: no auxiliary logits at all
    torch.testing.assert_close(logits, ref(x)[0])
    assert [f.shape[-1] for f in features] == ([side // 8, side // 16, side // 32] if imagenet else [32, 16, 8])

    net.train(), ref.train()
    for p in (0.0, 0.3):
        net.drop_path_prob = ref.drop_path_prob = p
        torch.manual_seed(5)
        logits, _, aux = net(x)
        torch.manual_seed(5)  # the same Bernoulli draws in the same order: per non-identity op, node by node
        ref_logits, ref_aux = ref(x)
        torch.testing.assert_close(logits, ref_logits)
        torch.testing.assert_close(aux, ref_aux)
    assert not torch.equal(logits, net.train()(x)[0])  # the drop-path masks do change the output


def test_the_papers_cifar_network_runs_at_full_size():
    net = NetworkCIFAR(load_genotype("DARTS_V2"), C=36, num_classes=10, layers=20, auxiliary=True)
    x = torch.randn(2, 3, 32, 32)
    logits, features, aux = net.train()(x)
    assert logits.shape == aux.shape == (2, 10)
    assert [tuple(f.shape[1:]) for f in features] == [(144, 32, 32), (288, 16, 16), (576, 8, 8)]
    assert len(net.eval()(x)) == 2
    # the reference's count_parameters_in_MB leaves the auxiliary head out: 768 x 10 + 10 + its convs and BNs
    head = 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    assert count_params(net) - reference_param_count(net) == head


# --------------------------------------------------------------------------- drop-path

def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3, 3)
    out = drop_path(x, 0.3)
    kept = out.flatten(1).amax(1) > 0
    assert torch.all(out[kept] == 1 / 0.7) and torch.all(out[~kept] == 0)
    assert abs((~kept).float().mean().item() - 0.3) < 0.015  # 4.7 standard deviations of a Bernoulli mean
    assert torch.equal(x, torch.ones(20000, 2, 3, 3))  # out of place


def test_drop_path_never_touches_an_identity_and_only_runs_in_training():
    # normal cell of identities (skip_connect at stride 1) and one pooling op
    nodes = [[("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 2)], [("max_pool_3x3", 1)]]
    cell = DiscreteCell(nodes, 4, 4, 4, reduction=False, reduction_prev=False)
    assert cell.node_droppable == [[False, False], [False], [True]]
    s0, s1 = torch.randn(64, 4, 6, 6), torch.randn(64, 4, 6, 6)
    cell.train()
    torch.manual_seed(0)
    dropped = cell(s0, s1, drop_prob=0.9)
    undropped = cell(s0, s1, drop_prob=0.0)
    torch.testing.assert_close(dropped[:, :8], undropped[:, :8])  # the identity nodes: never dropped
    pooled = dropped[:, 8:].flatten(1)
    assert 0 < (pooled.abs().amax(1) == 0).sum() < 64  # the pooling node: dropped for some samples only
    torch.testing.assert_close(pooled[pooled.abs().amax(1) > 0],
                               undropped[:, 8:].flatten(1)[pooled.abs().amax(1) > 0] / 0.1)
    cell.eval()
    torch.testing.assert_close(cell(s0, s1, drop_prob=0.9), cell(s0, s1, drop_prob=0.0))


# --------------------------------------------------------------------------- DNAD's per-cell genotypes

def dnad_genotype():
    """Three cells of different topologies: a node with three inputs, an empty node, a one-input node."""
    return Genotype(cells=[
        [[("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0)], [], [("max_pool_3x3", 2)],
         [("skip_connect", 4)]],
        [[("skip_connect", 1)], [("sep_conv_5x5", 0), ("avg_pool_3x3", 2)], [], []],
        [[("dil_conv_3x3", 1)], [("skip_connect", 2)], [("sep_conv_3x3", 3), ("skip_connect", 0)], []],
    ])


def test_per_cell_genotype_network():
    net = NetworkCIFAR(dnad_genotype(), C=4, num_classes=10, auxiliary=True)
    assert len(net.cells) == 3
    # empty nodes leave the concatenation: 3, 2 and 3 non-empty nodes of C = 4, 8, 16 (reductions at 1 and 2)
    assert [cell.out_channels for cell in net.cells] == [12, 16, 48]
    logits, features, aux = net.train()(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10) and [f.shape[1] for f in features] == [12, 16, 48]
    with pytest.raises(ValueError, match="one entry per cell"):
        NetworkCIFAR(dnad_genotype(), C=4, layers=20)


def test_config_rebuilds_the_same_network():
    for net in (NetworkCIFAR(dnad_genotype(), C=4, num_classes=3, auxiliary=True, in_channels=1),
                NetworkImageNet(load_genotype("PDARTS"), C=8, num_classes=5, layers=5)):
        randomize(net)
        rebuilt = type(net).from_config(net.config())
        rebuilt.load_state_dict(net.state_dict())
        x = torch.randn(2, net.config()["in_channels"], 64, 64)
        torch.testing.assert_close(net.eval()(x), rebuilt.eval()(x))


def test_discrete_network_is_the_cifar_network():
    assert DiscreteNetwork is NetworkCIFAR
    net = DiscreteNetwork(Genotype(normal=[[("skip_connect", 0)]] * 4, reduce=[[("max_pool_3x3", 1)]] * 4,
                                   meta={"layers": 5}), C=4, in_channels=1)
    assert len(net.cells) == 5 and net.auxiliary_head is None and net.drop_path_prob == 0.0


# --------------------------------------------------------------------------- bad input

def test_auxiliary_head_refuses_maps_it_cannot_pool_to_2x2():
    net = NetworkCIFAR(load_genotype("DARTS_V2"), C=4, layers=5, auxiliary=True).train()
    with pytest.raises(ValueError, match=r"auxiliary: .* side 8 to 10 \(8x8 for 32x32 inputs\), got 4x4"):
        net(torch.randn(2, 3, 16, 16))
    net.eval()(torch.randn(2, 3, 16, 16))  # no auxiliary head in eval mode: any size
    with pytest.raises(ValueError, match=r"auxiliary: .* side 7 to 8 \(7x7 for 224x224 inputs\), got 2x2"):
        NetworkImageNet(load_genotype("DARTS_V2"), C=8, layers=5, auxiliary=True).train()(torch.randn(2, 3, 64, 64))


def test_too_few_layers():
    with pytest.raises(ValueError, match="layers: expected at least 3 cells"):
        NetworkCIFAR(load_genotype("DARTS_V2"), C=4, layers=2)
