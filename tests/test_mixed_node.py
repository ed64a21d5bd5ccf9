"""mixed_node against its reference: values, gradients, opcheck, fuzzing and bad input."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastnas.ops import _reference, mixed_node
from conftest import DEVICES, noncontiguous, requires_cuda

MODES = ["softmax", "sigmoid", "relu_norm", "identity"]


def make_case(edges, ops, shape, device, dtype=torch.float64, seed=0, live_fraction=0.7):
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.randn(edges, ops, generator=gen, dtype=dtype).to(device).requires_grad_()
    mask = torch.rand(edges, ops, generator=gen) < live_fraction
    mask.view(-1)[torch.randint(edges * ops, (1,), generator=gen)] = True
    outs = [torch.randn(*shape, generator=gen, dtype=dtype).to(device).requires_grad_()
            for _ in range(int(mask.sum()))]
    return outs, alpha, mask


def assert_matches_reference(outs, alpha, mask, mode, temperature, atol=1e-10):
    result = mixed_node(outs, alpha, mask, mode, temperature)
    expected = _reference.mixed_node(outs, alpha, mask, mode, temperature)
    torch.testing.assert_close(result, expected, atol=atol, rtol=1e-7)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(result, [alpha, *outs], grad, allow_unused=True)
    want = torch.autograd.grad(expected, [alpha, *outs], grad, allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, atol=atol, rtol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference(device, mode):
    outs, alpha, mask = make_case(4, 8, (3, 5, 7, 7), device)
    assert_matches_reference(outs, alpha, mask, mode, 0.8)


def test_hand_computed_softmax():
    # Two edges, two ops; edge 0 has both live with alpha (0, log 3) -> w = (1/4, 3/4),
    # edge 1 keeps only op 1 -> w = 1. outs are constants 4, 8 and 1.
    alpha = torch.tensor([[0.0, torch.log(torch.tensor(3.0))], [5.0, -2.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [False, True]])
    outs = [torch.full((2,), v, dtype=torch.float64) for v in (4.0, 8.0, 1.0)]
    torch.testing.assert_close(mixed_node(outs, alpha, mask), torch.full((2,), 4 / 4 + 8 * 3 / 4 + 1.0,
                                                                            dtype=torch.float64))


def test_hand_computed_relu_norm_gradient():
    # w = relu(a) / sum relu(a) over the node: a = (1, 3, -1) -> w = (1/4, 3/4, 0).
    alpha = torch.tensor([[1.0, 3.0, -1.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    outs = [torch.tensor([v], dtype=torch.float64) for v in (2.0, 6.0, 100.0)]
    result = mixed_node(outs, alpha, mask, "relu_norm")
    torch.testing.assert_close(result, torch.tensor([2 / 4 + 6 * 3 / 4], dtype=torch.float64))
    result.sum().backward()
    # d/da_i = (o_i - sum_j w_j o_j) / S for a_i > 0, 0 otherwise; S = 4, mean = 5.
    torch.testing.assert_close(alpha.grad, torch.tensor([[(2 - 5) / 4, (6 - 5) / 4, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("device", DEVICES)
def test_hand_computed_identity_with_a_pruned_operator(device):
    # identity: the weights are alpha as given, not normalized, negative allowed:
    # alpha = (2, -1 | pruned, 0.5), outs = 3, 5, 7 -> 2*3 - 5 + 0.5*7 = 4.5.
    alpha = torch.tensor([[2.0, -1.0], [9.0, 0.5]], dtype=torch.float64, device=device, requires_grad=True)
    mask = torch.tensor([[True, True], [False, True]])
    outs = [torch.full((2, 3), v, dtype=torch.float64, device=device, requires_grad=True) for v in (3.0, 5.0, 7.0)]
    result = mixed_node(outs, alpha, mask, "identity")
    torch.testing.assert_close(result, torch.full((2, 3), 4.5, dtype=torch.float64, device=device))
    result.sum().backward()
    # d/dalpha[e, k] = sum of outs[i] (6 elements), 0 where pruned; d/douts[i] = alpha[e, k].
    torch.testing.assert_close(alpha.grad, torch.tensor([[18.0, 30.0], [0.0, 42.0]], dtype=torch.float64,
                                                        device=device))
    for out, weight in zip(outs, (2.0, -1.0, 0.5)):
        torch.testing.assert_close(out.grad, torch.full_like(out, weight))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(device, mode):
    outs, alpha, mask = make_case(3, 3, (2, 3, 4), device)
    assert torch.autograd.gradcheck(lambda a, *o: mixed_node(list(o), a, mask, mode, 1.3), [alpha, *outs])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    outs, alpha, mask = make_case(3, 4, (2, 3, 4, 4), device, dtype=torch.float32)
    for mode in MODES:
        torch.library.opcheck(torch.ops.fastnas.mixed_node.default, (outs, alpha, mask, mode, 1.0))
    # A transposed alpha: the fake backward must give grad_alpha the kernels' (contiguous) strides.
    alpha_t = alpha.detach().t().contiguous().t()
    grad = torch.randn_like(outs[0])
    torch.library.opcheck(torch.ops.fastnas.mixed_node_backward.default,
                          (grad, [o.detach() for o in outs], alpha_t, mask, "softmax", 1.0))


@requires_cuda
def test_cuda_backward_alerts_deterministic_mode():
    outs, alpha, mask = make_case(2, 3, (2, 3, 4, 4), "cuda", dtype=torch.float32)
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="mixed_node_backward"):
            mixed_node(outs, alpha, mask, "softmax").sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("device", DEVICES)
def test_pruned_entries_get_zero_alpha_gradient_and_all_pruned_edge_contributes_nothing(device):
    outs, alpha, mask = make_case(3, 4, (2, 5), device)
    mask = mask.clone()
    mask[1] = False  # a whole edge pruned
    mask[0, 0] = True
    outs = outs[: int(mask.sum())]
    result = mixed_node(outs, alpha, mask, "softmax")
    result.sum().backward()
    assert (alpha.grad[~mask.to(device)] == 0).all()
    assert_matches_reference(outs, alpha.detach().requires_grad_(), mask, "softmax", 1.0)


@given(
    edges=st.integers(1, 5), ops=st.integers(1, 8),
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    mode=st.sampled_from(MODES), temperature=st.floats(0.1, 5.0),
    contiguous=st.booleans(), seed=st.integers(0, 2**31 - 1), live_fraction=st.floats(0.0, 1.0),
)
def test_fuzz_against_reference(edges, ops, shape, mode, temperature, contiguous, seed, live_fraction):
    outs, alpha, mask = make_case(edges, ops, shape, "cpu", seed=seed, live_fraction=live_fraction)
    if not contiguous:
        outs = [noncontiguous(o.detach()).requires_grad_() for o in outs]
    assert_matches_reference(outs, alpha, mask, mode, temperature)


class TestBadInput:
    def setup_method(self):
        self.outs, self.alpha, self.mask = make_case(2, 3, (2, 4), "cpu", dtype=torch.float32)

    def call(self, outs=None, alpha=None, mask=None, mode="softmax", temperature=1.0):
        return mixed_node(self.outs if outs is None else outs, self.alpha if alpha is None else alpha,
                          self.mask if mask is None else mask, mode, temperature)

    def test_wrong_number_of_outs(self):
        with pytest.raises(RuntimeError, match=r"outs: expected one tensor per live operator"):
            self.call(outs=self.outs[:-1])

    def test_mask_shape(self):
        with pytest.raises(RuntimeError, match=r"mask: expected shape"):
            self.call(mask=torch.ones(3, 3, dtype=torch.bool))

    def test_mask_dtype(self):
        with pytest.raises(RuntimeError, match=r"mask: expected a bool tensor"):
            self.call(mask=self.mask.float())

    def test_alpha_rank(self):
        with pytest.raises(RuntimeError, match=r"alpha: expected a 2-d tensor"):
            self.call(alpha=self.alpha.flatten())

    def test_mismatched_shapes(self):
        outs = [o.detach() for o in self.outs]
        outs[-1] = torch.zeros(2, 5)
        with pytest.raises(RuntimeError, match=r"outs\[\d+\]: expected shape"):
            self.call(outs=outs)

    def test_mixed_dtypes(self):
        outs = [o.detach() for o in self.outs]
        outs[-1] = outs[-1].double()
        with pytest.raises(RuntimeError, match=r"outs\[\d+\]: expected dtype"):
            self.call(outs=outs)

    def test_integer_outs(self):
        outs = [torch.zeros(2, 4, dtype=torch.int64) for _ in self.outs]
        with pytest.raises(RuntimeError, match=r"outs\[0\]: expected a floating tensor"):
            self.call(outs=outs)

    def test_unknown_mode(self):
        with pytest.raises(RuntimeError, match=r"mode: expected one of softmax, sigmoid, relu_norm, identity"):
            self.call(mode="gumbel")

    def test_bad_temperature(self):
        with pytest.raises(RuntimeError, match=r"temperature: expected a positive finite number"):
            self.call(temperature=0.0)

    def test_fully_pruned_node(self):
        with pytest.raises(RuntimeError, match=r"mask: a node needs at least one live operator"):
            self.call(outs=[], mask=torch.zeros(2, 3, dtype=torch.bool))

    @requires_cuda
    def test_mixed_devices(self):
        outs = [o.detach() for o in self.outs]
        outs[-1] = outs[-1].cuda()
        with pytest.raises(RuntimeError, match=r"outs\[\d+\]: expected a tensor on"):
            self.call(outs=outs, alpha=self.alpha.detach().cuda())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype, mode, device):
    outs, alpha, mask = make_case(5, 8, (4, 16, 8, 8), device, dtype=torch.float32)
    low = [o.detach().to(dtype).requires_grad_() for o in outs]
    result = mixed_node(low, alpha, mask, mode)
    assert result.dtype == dtype
    outs32 = [o.detach().float().requires_grad_() for o in low]
    alpha32 = alpha.detach().clone().requires_grad_()
    expected = _reference.mixed_node(outs32, alpha32, mask, mode)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(result.float(), expected, atol=tol, rtol=tol)
    upstream = torch.randn(result.shape, device=device, generator=torch.Generator(device).manual_seed(1))
    got = torch.autograd.grad(result, [alpha, *low], upstream.to(dtype))
    want = torch.autograd.grad(expected, [alpha32, *outs32], upstream.to(dtype).float())
    assert got[0].dtype == torch.float32 and all(g.dtype == dtype for g in got[1:])
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w, atol=tol * max(1.0, w.abs().max().item()), rtol=tol)
