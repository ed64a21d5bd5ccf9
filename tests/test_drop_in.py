"""fastnas.nn.MixedOp and darts_node against a DARTS super-network written the way quark0/darts writes it.

The reference below is an independent oracle: operations.py, model_search.py's
MixedOp / Cell / Network, with the reference's names and its Python sum of
w * op(x). The fastnas modules must give the same output and the same
gradients for every weight and both alpha tensors once the state dict is copied
across (float64, so agreement is to rounding).
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastnas.nn import MixedOp, darts_node

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


# ----------------------------------------------------------------------------- reference operations.py

class ReLUConvBN(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False),
                                nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding, bias=False),
                                nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class DilConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation,
                      groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class SepConv(nn.Module):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=stride, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size=kernel_size, stride=1, padding=padding, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, kernel_size=1, padding=0, bias=False),
            nn.BatchNorm2d(C_out, affine=affine))

    def forward(self, x):
        return self.op(x)


class Identity(nn.Module):
    def forward(self, x):
        return x


class Zero(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.)
        return x[:, :, ::self.stride, ::self.stride].mul(0.)


class FactorizedReduce(nn.Module):
    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        out = torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1)
        return self.bn(out)


OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda C, stride, affine: Identity() if stride == 1 else FactorizedReduce(C, C, affine=affine),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine=affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine=affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine=affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine=affine),
}


# ----------------------------------------------------------------------------- reference model_search.py

class ReferenceMixedOp(nn.Module):
    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if "pool" in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self._ops))


class Cell(nn.Module):
    """The reference Cell; `mixed_op` is the class it builds its edges with."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, mixed_op):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        for i in range(self._steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(mixed_op(C, stride))

    def forward(self, s0, s1, weights):
        s0 = self.preprocess0(s0)
        s1 = self.preprocess1(s1)
        states = [s0, s1]
        offset = 0
        for i in range(self._steps):
            s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class NodeFusedCell(Cell):
    """docs/drop-in.md's recipe: one fastnas MixedNode per node instead of one MixedOp per edge."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, mixed_op):
        nn.Module.__init__(self)
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._nodes = nn.ModuleList(darts_node(2 + i, C, reduction) for i in range(steps))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for node in self._nodes:
            edges = len(states)
            states.append(node(states, weights[offset: offset + edges]))
            offset += edges
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    def __init__(self, C, num_classes, layers, steps=3, multiplier=3, stem_multiplier=3,
                 cell=Cell, mixed_op=ReferenceMixedOp):
        super().__init__()
        self._steps = steps
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            if i in [layers // 3, 2 * layers // 3]:
                C_curr *= 2
                reduction = True
            else:
                reduction = False
            self.cells.append(cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                   mixed_op))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        k = sum(1 for i in range(self._steps) for n in range(2 + i))
        self.alphas_normal = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_()
        self.alphas_reduce = (1e-3 * torch.randn(k, len(PRIMITIVES))).requires_grad_()

    def forward(self, input):
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            weights = F.softmax(self.alphas_reduce if cell.reduction else self.alphas_normal, dim=-1)
            s0, s1 = s1, cell(s0, s1, weights)
        out = self.global_pooling(s1)
        return self.classifier(out.view(out.size(0), -1))


# ----------------------------------------------------------------------------- helpers

def copy_state(dst: nn.Module, src: nn.Module) -> None:
    """Copies src's state dict into dst by position: the names differ, order and shapes must not."""
    dst_state, src_state = dst.state_dict(), src.state_dict()
    assert len(dst_state) == len(src_state)
    with torch.no_grad():
        for (dst_name, d), (src_name, s) in zip(dst_state.items(), src_state.items()):
            assert d.shape == s.shape, (dst_name, src_name)
            d.copy_(s)


def randomize(module: nn.Module, seed: int) -> None:
    """Random parameters and BN running stats, so that no copy mistake can hide behind a default value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype) + 0.5)


def forward_and_grads(model: Network, x: torch.Tensor, grad: torch.Tensor):
    logits = model(x)
    inputs = [model.alphas_normal, model.alphas_reduce, *model.parameters()]
    return logits, torch.autograd.grad(logits, inputs, grad)


def build_pair(cell, mixed_op, seed=0):
    torch.manual_seed(seed)
    reference = Network(4, 5, layers=3).double()
    randomize(reference, seed)
    model = Network(4, 5, layers=3, cell=cell, mixed_op=mixed_op).double()
    copy_state(model, reference)
    model.alphas_normal = reference.alphas_normal.detach().clone().requires_grad_()
    model.alphas_reduce = reference.alphas_reduce.detach().clone().requires_grad_()
    return reference, model


# ----------------------------------------------------------------------------- the swap, network level

@pytest.mark.parametrize("cell, mixed_op", [(Cell, MixedOp), (NodeFusedCell, None)], ids=["MixedOp", "MixedNode"])
def test_swapped_network_gives_the_reference_output_and_gradients(cell, mixed_op):
    reference, model = build_pair(cell, mixed_op)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64)
    grad = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    want_logits, want_grads = forward_and_grads(reference, x, grad)
    got_logits, got_grads = forward_and_grads(model, x, grad)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-9, atol=1e-12)
    assert len(got_grads) == len(want_grads)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert want_grads[0].abs().sum() > 0 and want_grads[1].abs().sum() > 0  # both alphas reached
    # Training-mode BN updated the same running statistics.
    for got, want in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- MixedOp alone

def make_edge(stride, primitives=PRIMITIVES, seed=0):
    torch.manual_seed(seed)
    reference = ReferenceMixedOp(6, stride, primitives).double()
    randomize(reference, seed)
    fused = MixedOp(6, stride, primitives).double()
    copy_state(fused, reference)
    return reference, fused


@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_uses_the_weights_as_given(stride):
    # Weights that are neither normalized nor positive: the caller's normalization is not redone.
    reference, fused = make_edge(stride)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(len(PRIMITIVES), generator=gen, dtype=torch.float64, requires_grad=True)
    want = reference(x, weights)
    got = fused(x, weights)
    assert got.shape == (3, 6, 6 // stride, 6 // stride)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    g = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad(got, [x, weights], g), torch.autograd.grad(want, [x, weights], g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_mixed_op_with_a_subset_of_primitives():
    primitives = ["avg_pool_3x3", "skip_connect", "dil_conv_3x3"]
    reference, fused = make_edge(2, primitives)
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    weights = torch.softmax(torch.randn(3, dtype=torch.float64), 0)
    torch.testing.assert_close(fused(x, weights), reference(x, weights), rtol=1e-10, atol=1e-12)


def test_mask_skips_operators_without_running_them():
    reference, fused = make_edge(1)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    weights = torch.softmax(torch.randn(len(PRIMITIVES), dtype=torch.float64), 0)
    weights[[0, 4, 7]] = 0.0  # zero-weight operators contribute nothing to the value
    mask = weights != 0
    ran = []
    for k, module in enumerate(fused.candidates.values()):
        module.register_forward_hook(lambda *_, k=k: ran.append(k))
    weights.requires_grad_()
    got = fused(x, weights, mask)
    torch.testing.assert_close(got, reference(x, weights.detach()), rtol=1e-10, atol=1e-12)
    assert ran == [1, 2, 3, 5, 6]
    got.backward(torch.randn_like(got))  # not sum(): BN outputs sum to 0 per channel
    assert (weights.grad[~mask] == 0).all() and (weights.grad[mask] != 0).all()


def test_mixed_node_call_mask_narrows_the_pruned_mask():
    node = darts_node(2, 4, primitives=["skip_connect", "avg_pool_3x3"])
    node.prune(0, 1)
    inputs = [torch.randn(1, 4, 4, 4, dtype=torch.float64) for _ in range(2)]
    node.double()
    weights = torch.tensor([[0.5, 7.0], [2.0, 3.0]], dtype=torch.float64)
    skip = torch.tensor([[True, True], [True, False]])
    # Live: (0, skip) pruned-mask-wise, (1, skip) by the call mask -> 0.5 * x0 + 2 * x1.
    torch.testing.assert_close(node(inputs, weights, skip), 0.5 * inputs[0] + 2.0 * inputs[1])
    assert node.mask.tolist() == [[True, False], [True, True]]  # the call mask changed nothing for good
    nothing = torch.zeros(2, 2, dtype=torch.bool)
    assert node(inputs, weights, nothing).abs().sum() == 0


class TestBadInput:
    def test_weights_shape(self):
        with pytest.raises(ValueError, match=r"weights: expected shape \(8,\)"):
            MixedOp(4, 1)(torch.randn(1, 4, 4, 4), torch.randn(2, 8))

    def test_mask_shape(self):
        with pytest.raises(ValueError, match=r"mask: expected shape \(8,\)"):
            MixedOp(4, 1)(torch.randn(1, 4, 4, 4), torch.randn(8), torch.ones(7, dtype=torch.bool))

    def test_mask_dtype(self):
        with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(1, 8\)"):
            MixedOp(4, 1)(torch.randn(1, 4, 4, 4), torch.randn(8), torch.ones(8))

    def test_stride(self):
        with pytest.raises(ValueError, match=r"stride: expected 1 or 2, got 3"):
            MixedOp(4, 3)

    def test_unknown_primitive(self):
        with pytest.raises(ValueError, match=r"primitives: unknown operation\(s\) \['conv_7x1_1x7'\]"):
            MixedOp(4, 1, primitives=["skip_connect", "conv_7x1_1x7"])

    def test_node_mask_shape(self):
        with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \(2, 8\)"):
            darts_node(2, 4)([torch.randn(1, 4, 4, 4)] * 2, torch.randn(2, 8), torch.ones(8, dtype=torch.bool))
