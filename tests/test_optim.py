"""SharedStepAdam against torch.optim.Adam(fused=True): the same values to the bit, one step counter."""

import io

import pytest
import torch

from fastnas.nn.optim import SharedStepAdam


def make_params(seed: int = 0, dtype=torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (5,), (2, 3, 3), (), (0, 2), (7, 1)]
    return [torch.randn(s, generator=generator, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(params: list[torch.Tensor], step: int, skip: set[int] = frozenset()) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i in skip else torch.randn(p.shape, generator=generator, dtype=p.dtype)


def pair(options: dict, dtype=torch.float64):
    """(torch's fused Adam, SharedStepAdam) on two copies of the same parameters."""
    ours, theirs = make_params(dtype=dtype), make_params(dtype=dtype)
    return torch.optim.Adam(theirs, fused=True, **options), SharedStepAdam(ours, **options), theirs, ours


def assert_same(theirs: list[torch.Tensor], ours: list[torch.Tensor], reference, optimizer) -> None:
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
        state_a, state_b = reference.state.get(a, {}), optimizer.state.get(b, {})
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            torch.testing.assert_close(state_b[key], state_a[key], rtol=0, atol=0)


OPTIONS = [dict(lr=1e-2), dict(lr=5e-4, betas=(0.5, 0.999), weight_decay=3e-4), dict(lr=1e-2, amsgrad=True),
           dict(lr=1e-2, maximize=True, eps=1e-3), dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
           dict(lr=torch.tensor(1e-2))]


@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "dnad", "amsgrad", "maximize", "adamw", "tensor-lr"])
def test_same_values_as_torch_fused_adam(options):
    reference, optimizer, theirs, ours = pair(options)
    for step in range(6):
        skip = {1, 4} if step in (2, 3) else set()  # parameters without a gradient for two steps
        set_grads(theirs, step, skip)
        set_grads(ours, step, skip)
        reference.step()
        optimizer.step()
        assert_same(theirs, ours, reference, optimizer)
    assert optimizer.state[ours[0]]["step"].item() == 6 and optimizer.state[ours[1]]["step"].item() == 4


def test_parameters_that_step_together_share_one_counter():
    _, optimizer, _, ours = pair(dict(lr=1e-2))
    set_grads(ours, 0)
    optimizer.step()
    assert len({id(optimizer.state[p]["step"]) for p in ours}) == 1
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        set_grads(ours, 1)
        optimizer.step()
    assert sum(e.name == "aten::add_" for e in prof.events()) == 1  # torch's fused Adam: one per parameter
    set_grads(ours, 2, skip={2})
    optimizer.step()
    counts = [optimizer.state[p]["step"].item() for p in ours]
    assert counts == [3, 3, 2, 3, 3, 3]


def test_a_parameter_dropped_mid_run_as_dnad_prunes():
    reference, optimizer, theirs, ours = pair(dict(lr=1e-2))
    for step in range(4):
        if step == 2:
            for opt, params in ((reference, theirs), (optimizer, ours)):
                opt.state.pop(params[0])
                opt.param_groups[0]["params"] = params[1:]
        set_grads(theirs, step)
        set_grads(ours, step)
        reference.step()
        optimizer.step()
        assert_same(theirs[1:], ours[1:], reference, optimizer)


def test_state_dict_round_trip_resumes_identically_and_shares_again():
    reference, optimizer, theirs, ours = pair(dict(lr=1e-2, amsgrad=True))
    for step in range(3):
        set_grads(theirs, step, skip={5} if step == 1 else set())
        set_grads(ours, step, skip={5} if step == 1 else set())
        reference.step()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    assert saved.keys() == reference.state_dict().keys()
    assert saved["state"].keys() == reference.state_dict()["state"].keys()
    resumed = SharedStepAdam(ours, lr=1e-2, amsgrad=True)
    resumed.load_state_dict(saved)
    steps = {id(resumed.state[p]["step"]): resumed.state[p]["step"].item() for p in ours}
    assert sorted(steps.values()) == [2, 3]  # the one that skipped a step, and the rest sharing one counter
    for step in range(3, 5):
        set_grads(theirs, step)
        set_grads(ours, step)
        reference.step()
        resumed.step()
        assert_same(theirs, ours, reference, resumed)


def test_a_found_inf_skips_the_step_and_its_count():
    reference, optimizer, theirs, ours = pair(dict(lr=1e-2))
    for step, inf in enumerate([0.0, 1.0, 0.0]):
        for opt, params in ((reference, theirs), (optimizer, ours)):
            set_grads(params, step)
            opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(inf)
            opt.step()
        assert_same(theirs, ours, reference, optimizer)
    assert optimizer.state[ours[0]]["step"].item() == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision(dtype):
    reference, optimizer, theirs, ours = pair(dict(lr=1e-2), dtype=dtype)
    for step in range(3):
        set_grads(theirs, step)
        set_grads(ours, step)
        reference.step()
        optimizer.step()
    assert_same(theirs, ours, reference, optimizer)


def test_not_fused_is_refused():
    with pytest.raises(ValueError, match="fused"):
        SharedStepAdam(make_params(), fused=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_same_values_and_one_counter_on_the_device():
    theirs = [p.detach().cuda().requires_grad_() for p in make_params(dtype=torch.float32)]
    ours = [p.detach().cuda().requires_grad_() for p in make_params(dtype=torch.float32)]
    reference = torch.optim.Adam(theirs, lr=1e-2, weight_decay=3e-4, fused=True)
    optimizer = SharedStepAdam(ours, lr=1e-2, weight_decay=3e-4)
    for step in range(3):
        for params in (theirs, ours):
            set_grads(params, step)
            for p in params:
                p.grad = p.grad.cuda()
        reference.step()
        optimizer.step()
    assert_same(theirs, ours, reference, optimizer)
    assert optimizer.state[ours[0]]["step"].device.type == "cuda"
    assert len({id(optimizer.state[p]["step"]) for p in ours}) == 1
