"""DNAD end to end on tiny settings: shrinking, Pareto points, resume, teacher loading, bad input."""

import json

import pytest
import torch

from fastnas.cli import main as cli_main
from fastnas.distill import TeacherResNet, save_teacher_checkpoint
from fastnas.runs import RunFolder
from fastnas.search_spaces import DiscreteNetwork, Genotype
from fastnas.strategies import DNADConfig, DNADSearch, SNPSConfig

# Coefficients that shrink a tiny super-network within a few steps.
FAST_SNPS = dict(gamma=0.5, gamma_max=1.0, mu=1.0, phi=1.5, k=0.9, tqu_max=2, n_max=0.5, eps=0.05)


def tiny_config(**overrides):
    settings = dict(data="synthetic:96", kd="none", C=4, layers=3, nodes=2, batch_size=16, epochs=4,
                    ops=("sep_conv_3x3", "skip_connect", "avg_pool_3x3"), stop_sparsity=0.0, arch_lr=1.0,
                    snps=SNPSConfig(**FAST_SNPS))
    settings.update(overrides)
    return DNADConfig(**settings)


def run_search(path, config, resume=False, stop_after_epochs=None):
    search = DNADSearch(config, RunFolder(path, resume=resume), progress=False, log=lambda _: None)
    return search, search.run(stop_after_epochs=stop_after_epochs)


def test_search_shrinks_and_saves_pareto_points(tmp_path):
    search, pareto = run_search(tmp_path / "run", tiny_config())
    metrics = RunFolder(tmp_path / "run", resume=True).metrics()
    assert metrics[0]["live_ops"] > metrics[-1]["live_ops"]  # dense to sparse
    assert metrics[0]["params"] > metrics[-1]["params"] and metrics[0]["flops"] > metrics[-1]["flops"]
    assert len(metrics) == search.step
    assert pareto[-1]["kind"] == "final" and any(p["kind"] == "pareto" for p in pareto)
    saved = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert saved == pareto
    for point in pareto:
        genotype = Genotype.load(tmp_path / "run" / point["genotype"])
        net = DiscreteNetwork(genotype, 4, 10, in_channels=3)
        assert sum(p.numel() for p in net.parameters()) == point["params"]
        assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)
    # Later points never hold more operators than earlier ones.
    ops = [p["live_ops"] for p in pareto]
    assert ops == sorted(ops, reverse=True)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    _, full = run_search(tmp_path / "full", tiny_config())
    _, partial = run_search(tmp_path / "cut", tiny_config(), stop_after_epochs=2)
    assert not (tmp_path / "cut" / "pareto.json").exists()
    _, resumed = run_search(tmp_path / "cut", tiny_config(), resume=True)
    strip = lambda points: [{k: v for k, v in p.items()} for p in points]  # noqa: E731
    assert strip(resumed) == strip(full)
    full_metrics = RunFolder(tmp_path / "full", resume=True).metrics()
    cut_metrics = RunFolder(tmp_path / "cut", resume=True).metrics()
    assert [m["live_ops"] for m in cut_metrics] == [m["live_ops"] for m in full_metrics]


def test_distillation_with_a_teacher_from_a_local_checkpoint(tmp_path):
    torch.manual_seed(0)
    teacher = TeacherResNet(3, 10, widths=(8, 16, 32), blocks=1)
    save_teacher_checkpoint(teacher, tmp_path / "teacher.pt")
    search, pareto = run_search(tmp_path / "run", tiny_config(kd="at", teacher=f"checkpoint:{tmp_path / 'teacher.pt'}",
                                                              epochs=1))
    metrics = RunFolder(tmp_path / "run", resume=True).metrics()
    assert all(m["kd"] > 0 for m in metrics)
    assert search.teacher.stage_channels == [8, 16, 32]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated but still the torchscript: path
def test_teacher_whose_stages_cannot_be_matched(tmp_path):
    class Flat(torch.nn.Module):  # stage maps 5x5: not a divisor or multiple of 16, 8, 4
        def forward(self, x):
            f = torch.zeros(x.shape[0], 4, 5, 5)
            return torch.zeros(x.shape[0], 10), [f, f, f]
    torch.jit.save(torch.jit.script(Flat()), str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match="teacher"):
        DNADSearch(tiny_config(kd="at", teacher=f"torchscript:{tmp_path / 'flat.pt'}"), RunFolder(tmp_path / "run"),
                   progress=False)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="ops: unknown operation"):
        tiny_config(ops=("sep_conv_3x3", "conv_9x9"))
    with pytest.raises(FileNotFoundError, match="data"):
        DNADSearch(tiny_config(data=f"cifar10:{tmp_path / 'missing'}"), RunFolder(tmp_path / "run"), progress=False)
    with pytest.raises(FileNotFoundError, match="resume"):
        RunFolder(tmp_path / "nothing", resume=True)


def test_cli_dnad_then_train(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["dnad", "--data", "synthetic:96", "--out", str(out), "--kd", "none", "--C", "4", "--layers", "3",
            "--nodes", "2", "--batch-size", "16", "--epochs", "3", "--ops", "sep_conv_3x3,skip_connect",
            "--stop-sparsity", "0", "--arch-lr", "1.0", "--quiet"] + [f"--{k.replace('_', '-')}={v}" for k, v in FAST_SNPS.items()]
    assert cli_main(args) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "pareto.json", "genotype.json", "search.png",
                 "pareto.png", "cells.png"):
        assert (out / name).exists(), name
    assert cli_main(["train", "--genotype", str(out / "genotype.json"), "--data", "synthetic:96", "--epochs", "2",
                     "--batch-size", "16", "--out", str(tmp_path / "train"), "--quiet"]) == 0
    result = json.loads((tmp_path / "train" / "result.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["params"] > 0
    assert "test accuracy" in capsys.readouterr().out
