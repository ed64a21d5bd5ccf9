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
            "--stop-sparsity", "0", "--arch-lr", "1.0", "--quiet"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in FAST_SNPS.items()]
    assert cli_main(args) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "pareto.json", "genotype.json", "search.png",
                 "pareto.png", "cells.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["at_scale"] == "mean"
    assert cli_main(["train", "--genotype", str(out / "genotype.json"), "--data", "synthetic:96", "--epochs", "2",
                     "--batch-size", "16", "--out", str(tmp_path / "train"), "--quiet"]) == 0
    result = json.loads((tmp_path / "train" / "result.json").read_text())
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["params"] > 0
    assert "test accuracy" in capsys.readouterr().out


def _hand_sparsity(net) -> float:
    """S = sum over nodes and live operators of log(1 + 50 w), w = relu(alpha) / sum over the node's live relu(alpha)
    (the authors' Architecture.activating and calculate_sparsity), from the alphas and the masks."""
    total = 0.0
    for cell, masks in enumerate(net.node_masks()):
        alpha, row = net.alpha_of(cell).detach(), 0
        for mask in masks:
            block = torch.relu(alpha[row:row + mask.shape[0]]) * mask
            row += mask.shape[0]
            total += torch.log1p(50 * block / block.sum()).sum().item()
    return total


def test_search_stops_at_the_first_epoch_end_where_s_after_pruning_is_below_the_floor(tmp_path):
    # A search that never stops on S gives the trajectory; a floor that S crosses in the middle of an
    # epoch then shows that the search does not stop there but at that epoch's end (or a later one).
    _, _ = run_search(tmp_path / "free", tiny_config(epochs=5))
    free = RunFolder(tmp_path / "free", resume=True).metrics()
    last_of_epoch = {m["epoch"]: i for i, m in enumerate(free)}  # index of each epoch's last step
    s = [m["pruned_sparsity"] for m in free]
    for floor in sorted(set(s), reverse=True):
        first_below = next(i for i, v in enumerate(s) if v < floor) if min(s) < floor else None
        stop_epoch = next((e for e, i in sorted(last_of_epoch.items()) if s[i] < floor), None)
        if first_below is not None and first_below not in last_of_epoch.values() and stop_epoch in (1, 2, 3):
            break
    else:
        pytest.fail("no floor that S crosses mid-epoch: the fixture needs other coefficients")
    assert all(s[last_of_epoch[e]] >= floor for e in range(stop_epoch))

    search, pareto = run_search(tmp_path / "floor", tiny_config(epochs=5, stop_sparsity=floor))
    metrics = RunFolder(tmp_path / "floor", resume=True).metrics()
    assert search.epoch == stop_epoch + 1 and len(metrics) == last_of_epoch[stop_epoch] + 1  # whole epochs
    assert metrics == free[:len(metrics)]  # the same search up to there
    assert pareto[-1]["kind"] == "final" and pareto[-1]["step"] == len(metrics)
    # the logged S after pruning is the network's S, by the authors' formula
    assert metrics[-1]["pruned_sparsity"] == pytest.approx(_hand_sparsity(search.net), rel=1e-6)
    assert metrics[-1]["pruned_sparsity"] < floor


def test_kd_adapter_gradients_are_clipped_on_their_own(tmp_path):
    torch.manual_seed(0)
    save_teacher_checkpoint(TeacherResNet(3, 10, widths=(8, 16, 32), blocks=1), tmp_path / "teacher.pt")
    config = tiny_config(kd="feature", teacher=f"checkpoint:{tmp_path / 'teacher.pt'}", grad_clip=1e-3)
    search = DNADSearch(config, RunFolder(tmp_path / "run"), progress=False, log=lambda _: None)
    norms = {}
    step = search.optimizer.step

    def recorded(*args, **kwargs):  # the gradients the optimizer applies
        for name, params in (("weights", search.net.weight_parameters()), ("adapters", search.kd_loss.parameters())):
            norms[name] = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None)).item()
        return step(*args, **kwargs)
    search.optimizer.step = recorded
    search._train_step(search.train_data.images[:16], search.train_data.labels[:16], warm_up=False)
    # each group at the clip norm (a joint clip would leave both below it)
    assert norms["adapters"] == pytest.approx(1e-3, rel=1e-3) and norms["weights"] == pytest.approx(1e-3, rel=1e-3)


def test_at_scale_is_the_authors_mean_unless_asked(tmp_path):
    torch.manual_seed(0)
    save_teacher_checkpoint(TeacherResNet(3, 10, widths=(8, 16, 32), blocks=1), tmp_path / "teacher.pt")
    teacher = f"checkpoint:{tmp_path / 'teacher.pt'}"
    losses = {}
    for scale in ("mean", "half-sum"):
        config = tiny_config(kd="at", teacher=teacher, **({} if scale == "mean" else {"at_scale": scale}))
        search = DNADSearch(config, RunFolder(tmp_path / scale), progress=False, log=lambda _: None)
        assert search.kd_loss.inner.reduction == scale
        images = search.train_data.images[:8]
        losses[scale] = search.kd_loss(*search.net(images), *search.teacher(images)).item()
    assert losses["half-sum"] == pytest.approx(1.5 * losses["mean"], rel=1e-6)  # 3 stages
    with pytest.raises(ValueError, match="at_scale: expected one of half-sum, mean, got 'sum'"):
        tiny_config(at_scale="sum")
