"""SD-DARTS / DARTS: the distillation loss, the architecture gradients, sharpness, resume and bad input."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fastnas.cli import main as cli_main
from conftest import requires_cuda
from fastnas.data import ImageData
from fastnas.runs import RunFolder
from fastnas.search_spaces import DiscreteNetwork, Genotype
from fastnas.strategies import SDDARTSConfig, SDDARTSSearch
from fastnas.strategies.sddarts import VotedTeacher, self_distillation_kl

TINY = dict(data="synthetic:64", C=2, layers=3, nodes=2, batch_size=8, epochs=3, warm_up=1, teachers=2,
            ops=("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"), sharpness_every=1,
            sharpness_samples=8, sharpness_iterations=3)


def tiny_search(path, resume=False, **overrides) -> SDDARTSSearch:
    return SDDARTSSearch(SDDARTSConfig(**{**TINY, **overrides}), RunFolder(path, resume=resume), progress=False,
                         log=lambda _: None)


# ---------------------------------------------------------------------- the loss


def test_kl_and_voting_match_a_hand_computed_case():
    teacher = VotedTeacher(num_samples=3, num_classes=2, window=2, temperature=2.0)
    index = torch.tensor([0, 2])
    # At T = 2: logits (0, 0) -> (1/2, 1/2); logits (2 ln 3, 0) -> (3/4, 1/4).
    teacher.record(index, torch.tensor([[0.0, 0.0], [0.0, 0.0]]), epoch=0)
    teacher.record(torch.tensor([0]), torch.tensor([[2 * math.log(3), 0.0]]), epoch=1)
    probs, has_teacher = teacher.targets(torch.tensor([0, 1, 2]), epoch=2)
    # Sample 0: vote of epochs 0 and 1 = (5/8, 3/8); sample 1: never seen; sample 2: epoch 0 only.
    torch.testing.assert_close(probs, torch.tensor([[5 / 8, 3 / 8], [0.0, 0.0], [0.5, 0.5]]))
    assert has_teacher.tolist() == [True, False, True]
    # At epoch 3 the window is epochs 1..2: epoch 0's predictions no longer vote.
    probs, has_teacher = teacher.targets(torch.tensor([0, 2]), epoch=3)
    torch.testing.assert_close(probs[0], torch.tensor([0.75, 0.25]))
    assert has_teacher.tolist() == [True, False]

    # Student logits (0, 2 ln 3) at T = 2 -> q = (1/4, 3/4).
    student = torch.tensor([[0.0, 2 * math.log(3)]] * 3)
    kl = self_distillation_kl(student, torch.tensor([[5 / 8, 3 / 8], [0.0, 0.0], [0.5, 0.5]]), 2.0,
                              torch.tensor([True, False, True]))
    kl_0 = 5 / 8 * math.log((5 / 8) / (1 / 4)) + 3 / 8 * math.log((3 / 8) / (3 / 4))
    kl_2 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl.item() == pytest.approx((kl_0 + kl_2) / 2, rel=1e-6)
    assert self_distillation_kl(student, torch.zeros(3, 2), 2.0, torch.zeros(3, dtype=torch.bool)).item() == 0.0


# ---------------------------------------------------------------------- gradients


def _double_precision(search: SDDARTSSearch) -> None:
    search.net.double()
    for name in ("train_data", "val_data"):
        data = getattr(search, name)
        setattr(search, name, ImageData(data.images.double(), data.labels))


def _batch(data: ImageData, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return data.images[:size], torch.arange(size)


def _unrolled_objective(search: SDDARTSSearch, train_batch, val_batch, order: int) -> float:
    """L_val(w', alpha) with w' = w - lr (grad L_train + wd w) (order 2) or w' = w (order 1)."""
    originals = [w.detach().clone() for w in search.weights]
    if order == 2:
        lr, wd = search.scheduler.get_last_lr()[0], search.config.weight_decay
        grads = torch.autograd.grad(search._loss("train", *train_batch)[0], search.weights, allow_unused=True)
        with torch.no_grad():
            for w, g in zip(search.weights, grads):
                w.sub_(lr * ((g if g is not None else 0) + wd * w))
    with torch.no_grad():
        value = search._loss("val", *val_batch)[0].item()
        for w, w0 in zip(search.weights, originals):
            w.copy_(w0)
    return value


@pytest.mark.parametrize("order", [1, 2])
def test_architecture_gradient_matches_finite_differences(tmp_path, order):
    # A large lr makes the second-order term visible; a small finite-difference radius makes the
    # Hessian-vector product exact up to O(r^2) in float64 (DARTS' r = 0.01 is too coarse for a net this tiny).
    search = tiny_search(tmp_path / "run", order=order, lr=0.1, fd_radius=1e-6)
    _double_precision(search)
    train_batch, val_batch = _batch(search.train_data), _batch(search.val_data)
    # Teachers from epoch 0, so that the KL term is part of both losses.
    for split_name, data in (("train", search.train_data), ("val", search.val_data)):
        search.teacher[split_name].record(torch.arange(8), torch.randn(8, 10, dtype=torch.float64), epoch=0)
    search.epoch = 1
    analytic, _ = search._alpha_gradient(train_batch, val_batch)

    numeric, h = [], 1e-5
    for alpha in search.alphas:
        grad = torch.zeros_like(alpha)
        for i in range(alpha.numel()):
            with torch.no_grad():
                alpha.view(-1)[i] += h
            plus = _unrolled_objective(search, train_batch, val_batch, order)
            with torch.no_grad():
                alpha.view(-1)[i] -= 2 * h
            minus = _unrolled_objective(search, train_batch, val_batch, order)
            with torch.no_grad():
                alpha.view(-1)[i] += h
            grad.view(-1)[i] = (plus - minus) / (2 * h)
        numeric.append(grad)
    scale = max(g.abs().max().item() for g in numeric)
    for a, n in zip(analytic, numeric):
        torch.testing.assert_close(a, n, atol=1e-4 * scale, rtol=1e-3)
    if order == 2:  # the unrolled gradient is not the first-order one
        first = torch.cat([g.flatten() for g in torch.autograd.grad(search._loss("val", *val_batch)[0],
                                                                      search.alphas)])
        assert (first - torch.cat([n.flatten() for n in numeric])).abs().max() > 100 * 1e-4 * scale


def test_sharpness_matches_the_autograd_hessian(tmp_path):
    search = tiny_search(tmp_path / "run", sharpness_iterations=40, sharpness_samples=8, fd_radius=1e-6)
    _double_precision(search)
    value = search.measure_sharpness()

    # The exact Hessian, by double backward through the fused mixed_node
    images, labels = search.val_data.images[:8], search.val_data.labels[:8]
    shapes = [a.shape for a in search.alphas]

    def loss(flat):
        a0, a1 = flat[:shapes[0].numel()].view(shapes[0]), flat[shapes[0].numel():].view(shapes[1])
        logits = torch.func.functional_call(search.net, {"alphas.0": a0, "alphas.1": a1}, (images,))[0]
        return F.cross_entropy(logits, labels)

    flat = torch.cat([a.detach().flatten() for a in search.alphas])
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    dominant = eigenvalues[eigenvalues.abs().argmax()].item()
    assert value == pytest.approx(dominant, rel=1e-3)


# ---------------------------------------------------------------------- the run


def test_resume_gives_the_uninterrupted_genotype(tmp_path):
    full = tiny_search(tmp_path / "full").run()
    tiny_search(tmp_path / "cut").run(stop_after_epochs=1)
    assert not (tmp_path / "cut" / "genotype.json").exists()
    resumed = tiny_search(tmp_path / "cut", resume=True).run()
    assert resumed["genotype"] == full["genotype"]
    assert resumed["sharpness"] == pytest.approx(full["sharpness"], rel=1e-5)
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert strip(RunFolder(tmp_path / "cut", resume=True).metrics()) == \
        strip(RunFolder(tmp_path / "full", resume=True).metrics())
    genotype = Genotype.load(tmp_path / "full" / "genotype.json")
    assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)  # top-2 incoming edges per node
    assert sorted(p.name for p in (tmp_path / "full" / "genotypes").iterdir()) == \
        ["epoch_001.json", "epoch_002.json", "epoch_003.json"]


@requires_cuda
def test_cuda_search_resumes(tmp_path):
    # The checkpoint loads on the CPU; the warm-started eigenvector must go back to the GPU. (cuDNN and the
    # fused backward's atomics are not bit-deterministic: no equality with the uninterrupted run here.)
    tiny_search(tmp_path / "cut", device="cuda").run(stop_after_epochs=1)
    resumed = tiny_search(tmp_path / "cut", resume=True, device="cuda").run()
    assert math.isfinite(resumed["sharpness"]) and resumed["genotype"]


def test_cli_search_and_retrain(tmp_path):
    search_dir = tmp_path / "search"
    assert cli_main(["darts", "--data", "synthetic:64", "--out", str(search_dir), "--C", "2", "--layers", "3",
                     "--nodes", "2", "--epochs", "1", "--batch-size", "16", "--ops", "skip_connect,sep_conv_3x3",
                     "--quiet"]) == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "genotype.json", "result.json", "alphas.png",
                 "sharpness.png", "cells.png"):
        assert (search_dir / name).exists(), name
    config = json.loads((search_dir / "config.json").read_text())
    assert config["sd_lambda"] == 0.0 and config["order"] == 1
    steps = [m for m in RunFolder(search_dir, resume=True).metrics() if m["kind"] == "step"]
    assert all(m["kl"] == 0.0 for m in steps)
    # One Adam step moves each alpha by at most the alpha lr (3e-2 on synthetic): the entropy stays near log 2.
    assert math.log(2) - 0.01 < steps[0]["alpha_entropy"] < math.log(2)
    assert cli_main(["train", "--genotype", str(search_dir / "genotype.json"), "--data", "synthetic:64",
                     "--epochs", "1", "--batch-size", "16", "--quiet"]) == 0
    net = DiscreteNetwork(Genotype.load(search_dir / "genotype.json"), 2, 10, in_channels=3)
    assert net(torch.randn(2, 3, 16, 16))[0].shape == (2, 10)


@pytest.mark.parametrize("overrides, message", [
    (dict(ops=("sep_conv_3x3", "conv_9x9")), "ops: unknown operation"),
    (dict(teachers=0), "teachers: expected >= 1"),
    (dict(sd_lambda=-1.0), "sd_lambda: expected >= 0"),
    (dict(order=3), "order: expected 1"),
    (dict(temperature=0.0), "temperature: expected > 0"),
])
def test_bad_arguments_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        SDDARTSConfig(**{**TINY, **overrides})


def test_missing_data_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="data"):
        cli_main(["sddarts", "--data", f"cifar10:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "run"), "--quiet"])
