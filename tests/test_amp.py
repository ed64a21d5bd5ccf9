"""`--amp bf16`: bfloat16 autocast of the DNAD and (SD-)DARTS training steps.

The CPU kernels of mixed_node and at_loss take bfloat16 too, so the autocast path runs here; on CUDA it is
the same code. A bf16 step must move the architecture the way the float32 step does (the rounding is
2^-8 relative), and convolutions must really run in bfloat16.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from fastnas.cli import main as cli_main
from fastnas.runs import RunFolder
from fastnas.search_spaces import Genotype
from fastnas.strategies import DNADConfig, DNADSearch, SDDARTSConfig, SDDARTSSearch
from conftest import DEVICES
from test_dnad import tiny_config
from test_sddarts import TINY


def conv_output_dtypes(net: torch.nn.Module) -> tuple[set, list]:
    """Records the output dtype of every Conv2d forward of `net`; returns (dtypes, hook handles)."""
    seen: set = set()
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
               for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    return seen, handles


def assert_same_direction(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """The concatenations of `a` and `b` point the same way (cosine > 0.95) with norms within 10%."""
    flat_a, flat_b = torch.cat([x.flatten() for x in a]), torch.cat([x.flatten() for x in b])
    assert F.cosine_similarity(flat_a, flat_b, dim=0).item() > 0.95
    assert flat_a.norm().item() == pytest.approx(flat_b.norm().item(), rel=0.1)


@pytest.mark.parametrize("device", DEVICES)
def test_dnad_bf16_step_moves_the_alphas_like_the_float32_step(tmp_path, device):
    updates, metrics = {}, {}
    for amp in ("off", "bf16"):
        search = DNADSearch(tiny_config(amp=amp, kd="at", teacher="builtin", data="digits", batch_size=32,
                                        device=device),
                            RunFolder(tmp_path / amp), progress=False, log=lambda _: None)
        images, labels = search.train_data.images[:32].to(device), search.train_data.labels[:32].to(device)
        before = [a.detach().clone() for a in search.net.arch_parameters()]
        dtypes, handles = conv_output_dtypes(search.net)
        metrics[amp] = search._train_step(images, labels, warm_up=False)
        for h in handles:
            h.remove()
        assert dtypes == ({torch.bfloat16} if amp == "bf16" else {torch.float32})
        updates[amp] = [a.detach() - b for a, b in zip(search.net.arch_parameters(), before)]
    assert metrics["bf16"]["ce"] == pytest.approx(metrics["off"]["ce"], rel=2e-2)
    assert metrics["bf16"]["kd"] == pytest.approx(metrics["off"]["kd"], rel=5e-2)
    assert_same_direction(updates["bf16"], updates["off"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("order", [1, 2])
def test_sddarts_bf16_alpha_gradient_matches_float32(tmp_path, order, device):
    grads = {}
    for amp in ("off", "bf16"):
        search = SDDARTSSearch(SDDARTSConfig(**{**TINY, "order": order, "amp": amp, "C": 4, "device": device}),
                               RunFolder(tmp_path / f"{amp}{order}"), progress=False, log=lambda _: None)
        index = torch.arange(8)
        batch = (search.train_data.images[index].to(device), index.to(device))
        val_batch = (search.val_data.images[index].to(device), index.to(device))
        dtypes, handles = conv_output_dtypes(search.net)
        grads[amp], parts = search._alpha_gradient(batch, val_batch)
        for h in handles:
            h.remove()
        # order 2 runs its finite-difference Hessian-vector product in float32 on purpose
        expected = {torch.float32} if amp == "off" else ({torch.bfloat16} if order == 1 else
                                                         {torch.bfloat16, torch.float32})
        assert dtypes == expected
        assert parts["ce"].dtype == torch.float32
    assert_same_direction(grads["bf16"], grads["off"])


@pytest.mark.parametrize("kd", ["soft", "feature"])
def test_dnad_bf16_step_with_logit_and_feature_distillation(tmp_path, kd):
    steps = {}
    for amp in ("off", "bf16"):
        search = DNADSearch(tiny_config(amp=amp, kd=kd, teacher="builtin", data="digits", batch_size=32),
                            RunFolder(tmp_path / amp), progress=False, log=lambda _: None)
        steps[amp] = search._train_step(search.train_data.images[:32], search.train_data.labels[:32], False)
    assert steps["bf16"]["kd"] == pytest.approx(steps["off"]["kd"], rel=5e-2)


def test_cli_searches_run_under_bf16(tmp_path):
    common = ["--data", "synthetic:48", "--C", "2", "--layers", "3", "--nodes", "2", "--epochs", "1",
              "--batch-size", "16", "--quiet", "--amp", "bf16"]
    assert cli_main(["sddarts", "--out", str(tmp_path / "sd"), "--order", "2",
                     "--ops", "skip_connect,sep_conv_3x3", *common]) == 0
    assert cli_main(["dnad", "--out", str(tmp_path / "dnad"), "--kd", "none",
                     "--ops", "skip_connect,sep_conv_3x3", *common]) == 0
    for run in ("sd", "dnad"):
        assert json.loads((tmp_path / run / "config.json").read_text())["amp"] == "bf16"
        Genotype.load(tmp_path / run / "genotype.json")


@pytest.mark.parametrize("config", [DNADConfig, SDDARTSConfig])
def test_unknown_amp_mode_is_refused(config):
    with pytest.raises(ValueError, match="amp: expected one of off, bf16, got 'fp16'"):
        config(data="synthetic:48", amp="fp16")
