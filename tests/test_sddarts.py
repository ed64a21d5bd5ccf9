"""SD-DARTS / DARTS: the distillation loss, the architecture gradients, sharpness, resume and bad input."""

import copy
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
from fastnas.strategies.sddarts import (SnapshotTeachers, VotedTeacher, lanczos_extremes, self_distillation_kl,
                                       snapshot_bytes)

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


# ---------------------------------------------------------------------- snapshot teachers


def test_snapshots_are_taken_every_n_steps_and_the_last_k_kept():
    teachers = SnapshotTeachers(window=2, refresh=3, temperature=1.0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    for step in range(8):
        with torch.no_grad():
            net[0].weight.fill_(step)
            net[1].running_mean.fill_(-step)
        teachers.take(net, step)
    assert teachers.taken_at == [3, 6]
    assert [t[0].weight[0, 0].item() for t in teachers.nets] == [3.0, 6.0]
    assert [t[1].running_mean[0].item() for t in teachers.nets] == [-3.0, -6.0]  # BatchNorm state too
    assert all(not p.requires_grad and p.grad is None for t in teachers.nets for p in t.parameters())
    assert teachers.nbytes() == 2 * snapshot_bytes(net)
    # float32: linear weight and bias, BN weight and bias, running mean and var; int64: BN batch count
    assert snapshot_bytes(net) == (4 + 2 + 2 + 2 + 2 + 2) * 4 + 8


def test_a_snapshot_is_the_network_exactly_and_its_forward_changes_no_buffer(tmp_path):
    search = tiny_search(tmp_path / "run", teachers=1)
    images = search.train_data.images[:8]
    with torch.no_grad():  # BatchNorm statistics that differ from the defaults
        search.net(images)
    for step in range(2):  # the first snapshot is a deep copy, the second overwrites it in place
        search.snapshots.take(search.net, step)
        taken = search.snapshots.nets[0].state_dict()
        student = search.net.state_dict()
        assert taken.keys() == student.keys()
        assert all(torch.equal(taken[k], student[k]) and taken[k].data_ptr() != student[k].data_ptr()
                   for k in student)
        before = {k: v.clone() for k, v in student.items()}
        probs = search.snapshots.voted_probs(images)
        assert all(torch.equal(v, before[k]) for k, v in search.net.state_dict().items())  # the student's
        assert all(torch.equal(v, before[k]) for k, v in search.snapshots.nets[0].state_dict().items())  # its own
        # The teacher's prediction is the network's in train mode (the batch's statistics), on a copy
        expected = F.softmax(copy.deepcopy(search.net).train()(images)[0].detach(), dim=1)
        torch.testing.assert_close(probs, expected, rtol=0, atol=0)
        with torch.no_grad():  # the student moves on, the snapshot does not
            for w in search.weights:
                w.add_(1.0)
        assert not torch.equal(search.snapshots.nets[0].state_dict()["classifier.weight"],
                               search.net.state_dict()["classifier.weight"])


def _hand_loss(net, images, labels, teachers, config, params=None):
    """CE + lambda * KL(mean over teacher copies of softmax(logits / T) || softmax(net logits / T)).

    The teachers run in train mode without gradients; `params` replace some of the net's tensors."""
    logits = (net(images) if params is None else torch.func.functional_call(net, params, (images,)))[0]
    loss = F.cross_entropy(logits, labels)
    if teachers:
        with torch.no_grad():
            p = torch.stack([F.softmax(t.train()(images)[0] / config.temperature, 1) for t in teachers]).mean(0)
        log_q = F.log_softmax(logits / config.temperature, 1)
        loss = loss + config.sd_lambda * (p * (p.log() - log_q)).sum(1).mean()
    return loss


def _hand_alpha_gradient(search, teachers, train, val):
    """d/d alpha of L_val at w (order 1) or at w' = w - lr (grad L_train + wd w + momentum buffer) (order 2),
    by autograd through the unrolled step (no finite difference), on a copy of the network; and that L_val."""
    c = search.config
    net = copy.deepcopy(search.net)
    named = [(n, p) for n, p in net.named_parameters() if not n.startswith("alphas.")]
    if c.order == 1:
        loss = _hand_loss(net, *val, teachers, c)
        return torch.autograd.grad(loss, net.arch_parameters()), loss.item()
    lr = search.scheduler.get_last_lr()[0]
    grads = torch.autograd.grad(_hand_loss(net, *train, teachers, c), [p for _, p in named], create_graph=True,
                                allow_unused=True)
    unrolled = {}
    for (name, w), g, original in zip(named, grads, search.weights):
        buffer = search.optimizer.state.get(original, {}).get("momentum_buffer")
        step = (0 if g is None else g) + c.weight_decay * w + (0 if buffer is None else c.momentum * buffer)
        unrolled[name] = w - lr * step
    loss = _hand_loss(net, *val, teachers, c, params=unrolled)
    return torch.autograd.grad(loss, net.arch_parameters()), loss.item()


def _hand_weight_gradient(search, teachers, train):
    """The clipped gradient of L_train w.r.t. the weights, on a copy of the network; and that L_train."""
    net = copy.deepcopy(search.net)
    loss = _hand_loss(net, *train, teachers, search.config)
    weights = net.weight_parameters()
    for w, g in zip(weights, torch.autograd.grad(loss, weights, allow_unused=True)):
        w.grad = torch.zeros_like(w) if g is None else g
    torch.nn.utils.clip_grad_norm_(weights, search.config.grad_clip)
    return [w.grad for w in weights], loss.item()


def _before_step(optimizer, check) -> None:
    """Runs check() whenever `optimizer` is about to apply its gradients."""
    step = optimizer.step

    def checked(*args, **kwargs):
        check()
        return step(*args, **kwargs)
    optimizer.step = checked


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("K", [1, 2])
def test_snapshot_teachers_equal_a_run_built_by_hand(tmp_path, K, order):
    # K + 1 steps: the last one votes over K teachers, the networks of the K previous steps.
    search = tiny_search(tmp_path / "run", teachers=K, order=order, warm_up=0, lr=0.1, fd_radius=1e-6)
    _double_precision(search)
    copies, checked = [], []  # the network before each step, copied by the test

    def batch(data, step):  # another 6 samples each step (the tiny validation half has 20)
        index = torch.arange(6 * step, 6 * step + 6)
        return data.images[index], data.labels[index], index

    def check_alphas():
        expected, expected_loss = _hand_alpha_gradient(search, teachers, train, val)
        for got, want in zip((a.grad for a in search.alphas), expected):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
        checked.append(("alphas", expected_loss))

    def check_weights():
        expected, expected_loss = _hand_weight_gradient(search, teachers, train)
        for got, want in zip((w.grad for w in search.weights), expected):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
        checked.append(("weights", expected_loss))

    _before_step(search.arch_optimizer, check_alphas)
    _before_step(search.optimizer, check_weights)
    for step in range(K + 1):
        teachers = copies[-K:]
        copies.append(copy.deepcopy(search.net))
        (*train, train_index), (*val, val_index) = batch(search.train_data, step), batch(search.val_data, step)
        metrics = search._train_step((train[0], train_index), (val[0], val_index))
        search.step += 1
        (_, val_loss), (_, train_loss) = checked[-2:]
        assert metrics["val_ce"] + metrics["val_kl"] == pytest.approx(val_loss, rel=1e-6)
        assert metrics["loss"] == pytest.approx(train_loss, rel=1e-6)
        assert (metrics["kl"] > 0) == (step > 0)  # no teacher before the first snapshot
    assert len(checked) == 2 * (K + 1) and search.snapshots.taken_at == list(range(1, K + 1))[-K:]


# ---------------------------------------------------------------------- gradients


def _double_precision(search: SDDARTSSearch) -> None:
    search.net.double()
    for name in ("train_data", "val_data"):
        data = getattr(search, name)
        setattr(search, name, ImageData(data.images.double(), data.labels))


def _batch(data: ImageData, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return data.images[:size], torch.arange(size)


def _unrolled_objective(search: SDDARTSSearch, train_batch, val_batch, targets, order: int) -> float:
    """L_val(w', alpha) with w' = w - lr (grad L_train + wd w) (order 2) or w' = w (order 1)."""
    originals = [w.detach().clone() for w in search.weights]
    if order == 2:
        lr, wd = search.scheduler.get_last_lr()[0], search.config.weight_decay
        grads = torch.autograd.grad(search._loss("train", *train_batch, targets["train"])[0], search.weights,
                                    allow_unused=True)
        with torch.no_grad():
            for w, g in zip(search.weights, grads):
                w.sub_(lr * ((g if g is not None else 0) + wd * w))
    with torch.no_grad():
        value = search._loss("val", *val_batch, targets["val"])[0].item()
        for w, w0 in zip(search.weights, originals):
            w.copy_(w0)
    return value


@pytest.mark.parametrize("order", [1, 2])
def test_architecture_gradient_matches_finite_differences(tmp_path, order):
    # A large lr makes the second-order term visible; a small finite-difference radius makes the
    # Hessian-vector product exact up to O(r^2) in float64 (DARTS' r = 0.01 is too coarse for a net this tiny).
    search = tiny_search(tmp_path / "run", order=order, lr=0.1, fd_radius=1e-6, teacher_source="cache")
    _double_precision(search)
    train_batch, val_batch = _batch(search.train_data), _batch(search.val_data)
    # Cached teachers from epoch 0, so that the KL term is part of both losses.
    for split_name in ("train", "val"):
        search.cache[split_name].record(torch.arange(8), torch.randn(8, 10, dtype=torch.float64), epoch=0)
    search.epoch = 1
    targets = search._teacher_targets(train_batch, val_batch)
    analytic, _ = search._alpha_gradient(train_batch, val_batch, targets)

    numeric, h = [], 1e-5
    for alpha in search.alphas:
        grad = torch.zeros_like(alpha)
        for i in range(alpha.numel()):
            with torch.no_grad():
                alpha.view(-1)[i] += h
            plus = _unrolled_objective(search, train_batch, val_batch, targets, order)
            with torch.no_grad():
                alpha.view(-1)[i] -= 2 * h
            minus = _unrolled_objective(search, train_batch, val_batch, targets, order)
            with torch.no_grad():
                alpha.view(-1)[i] += h
            grad.view(-1)[i] = (plus - minus) / (2 * h)
        numeric.append(grad)
    scale = max(g.abs().max().item() for g in numeric)
    for a, n in zip(analytic, numeric):
        torch.testing.assert_close(a, n, atol=1e-4 * scale, rtol=1e-3)
    if order == 2:  # the unrolled gradient is not the first-order one
        val_loss = search._loss("val", *val_batch, targets["val"])[0]
        first = torch.cat([g.flatten() for g in torch.autograd.grad(val_loss, search.alphas)])
        assert (first - torch.cat([n.flatten() for n in numeric])).abs().max() > 100 * 1e-4 * scale


def test_sharpness_matches_the_autograd_hessian(tmp_path):
    # 40 Lanczos steps = the 2 cells x 5 edges x 4 ops alphas of TINY: the Krylov space is the whole space
    search = tiny_search(tmp_path / "run", sharpness_iterations=40, sharpness_samples=8)
    _double_precision(search)
    spectrum = search.measure_sharpness()

    # The exact Hessian, by double backward through the fused mixed_node
    images, labels = search.val_data.images[:8], search.val_data.labels[:8]
    shapes = [a.shape for a in search.alphas]

    def loss(flat):
        a0, a1 = flat[:shapes[0].numel()].view(shapes[0]), flat[shapes[0].numel():].view(shapes[1])
        logits = torch.func.functional_call(search.net, {"alphas.0": a0, "alphas.1": a1}, (images,))[0]
        return F.cross_entropy(logits, labels)

    flat = torch.cat([a.detach().flatten() for a in search.alphas])
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    assert spectrum.lambda_max == pytest.approx(eigenvalues[-1].item(), rel=1e-6, abs=1e-10)
    assert spectrum.lambda_min == pytest.approx(eigenvalues[0].item(), rel=1e-6, abs=1e-10)
    assert spectrum.max_abs == pytest.approx(eigenvalues[eigenvalues.abs().argmax()].item(), rel=1e-6, abs=1e-10)
    assert search.sharpness == spectrum.lambda_max


def known_spectrum(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    """A symmetric matrix Q diag(eigenvalues) Q^T with a random orthogonal Q (float64)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


def test_lanczos_finds_lambda_max_where_the_largest_magnitude_is_negative():
    # A saddle whose most curved direction points down: power iteration would return -5, the sharpness is 2
    eigenvalues = [-5.0, -1.0, 0.1, 0.3, 1.0, 2.0] + [0.5] * 14
    matrix = known_spectrum(eigenvalues)
    start = torch.randn(len(eigenvalues), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    spectrum = lanczos_extremes(lambda v: matrix @ v, start, steps=len(eigenvalues))
    assert spectrum.lambda_max == pytest.approx(2.0, rel=1e-10)
    assert spectrum.lambda_min == pytest.approx(-5.0, rel=1e-10)
    assert spectrum.max_abs == pytest.approx(-5.0, rel=1e-10)
    # the Ritz vector is the eigenvector (up to sign) and its residual bound is ~0
    assert torch.linalg.norm(matrix @ spectrum.top_vector - 2.0 * spectrum.top_vector) < 1e-8
    assert spectrum.residual_max < 1e-8
    # 7 distinct eigenvalues: the Krylov space is invariant after 7 steps, Lanczos stops there
    assert spectrum.steps == 7


def test_lanczos_residual_bounds_the_error_of_a_partial_run():
    eigenvalues = torch.linspace(-1.0, 3.0, 60).tolist()
    matrix = known_spectrum(eigenvalues, seed=2)
    start = torch.randn(60, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    spectrum = lanczos_extremes(lambda v: matrix @ v, start, steps=8)
    assert spectrum.steps == 8 and spectrum.residual_max > 1e-6
    # a Ritz value lies within its residual of an eigenvalue; from below for the largest (Cauchy interlacing)
    assert 3.0 - spectrum.residual_max - 1e-12 <= spectrum.lambda_max <= 3.0 + 1e-12
    assert -1.0 - 1e-12 <= spectrum.lambda_min <= -1.0 + spectrum.residual_min + 1e-12


def test_sharpness_is_deterministic_in_seed_and_epoch(tmp_path):
    first = tiny_search(tmp_path / "a").measure_sharpness()
    second = tiny_search(tmp_path / "b").measure_sharpness()
    assert first.lambda_max == second.lambda_max and first.lambda_min == second.lambda_min


# ---------------------------------------------------------------------- the run


@pytest.mark.parametrize("source", ["snapshot", "cache"])
def test_resume_gives_the_uninterrupted_run(tmp_path, source):
    full = tiny_search(tmp_path / "full", teacher_source=source).run()
    tiny_search(tmp_path / "cut", teacher_source=source).run(stop_after_epochs=1)
    assert not (tmp_path / "cut" / "genotype.json").exists()
    checkpoint = RunFolder(tmp_path / "cut", resume=True).load_checkpoint()
    if source == "snapshot":  # the teachers of the next step are in the checkpoint: the last two steps'
        steps = checkpoint["step"]
        assert checkpoint["snapshots"]["taken_at"] == [steps - 2, steps - 1]
        assert len(checkpoint["snapshots"]["nets"]) == 2
    resumed = tiny_search(tmp_path / "cut", resume=True, teacher_source=source).run()
    assert resumed["genotype"] == full["genotype"]
    assert resumed["sharpness"] == pytest.approx(full["sharpness"], rel=1e-5)
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    metrics = RunFolder(tmp_path / "cut", resume=True).metrics()
    assert strip(metrics) == strip(RunFolder(tmp_path / "full", resume=True).metrics())
    # the KL term is on from the first step after the resume (warm-up 1 epoch), so the teachers counted
    assert all(m["kl"] > 0 for m in metrics if m["kind"] == "step" and m["epoch"] >= 1)
    genotype = Genotype.load(tmp_path / "full" / "genotype.json")
    assert all(len(node) == 2 for node in genotype.normal + genotype.reduce)  # top-2 incoming edges per node
    assert sorted(p.name for p in (tmp_path / "full" / "genotypes").iterdir()) == \
        ["epoch_001.json", "epoch_002.json", "epoch_003.json"]


@requires_cuda
def test_cuda_search_resumes(tmp_path):
    # The checkpoint loads on the CPU and the search goes on on the GPU. (cuDNN and the
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


def test_cli_teacher_flags_reach_the_search(tmp_path):
    out = tmp_path / "sd"
    assert cli_main(["sddarts", "--data", "synthetic:64", "--out", str(out), "--C", "2", "--layers", "3", "--nodes",
                     "2", "--epochs", "3", "--batch-size", "8", "--ops", "skip_connect,sep_conv_3x3", "--warm-up",
                     "0", "--teacher-refresh", "2", "-K", "2", "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["teacher_source"], config["teacher_refresh"], config["temperature"]) == ("snapshot", 2, 1.0)
    checkpoint = RunFolder(out, resume=True).load_checkpoint()
    assert checkpoint["step"] > 4  # snapshots at the even steps, the last two kept
    assert checkpoint["snapshots"]["taken_at"] == [s for s in range(checkpoint["step"]) if s % 2 == 0][-2:]
    with pytest.raises(ValueError, match="teacher_refresh: applies to snapshot teachers only"):
        cli_main(["sddarts", "--data", "synthetic:64", "--out", str(tmp_path / "cache"), "--teacher-source", "cache",
                  "--teacher-refresh", "2", "--quiet"])


@pytest.mark.parametrize("overrides, message", [
    (dict(ops=("sep_conv_3x3", "conv_9x9")), "ops: unknown operation"),
    (dict(teachers=0), "teachers: expected >= 1"),
    (dict(sd_lambda=-1.0), "sd_lambda: expected >= 0"),
    (dict(order=3), "order: expected 1"),
    (dict(temperature=0.0), "temperature: expected > 0"),
    (dict(teacher_source="ema"), "teacher_source: expected one of snapshot, cache, got 'ema'"),
    (dict(teacher_refresh=0), "teacher_refresh: expected >= 1"),
    (dict(teacher_source="cache", teacher_refresh=2), "teacher_refresh: applies to snapshot teachers only"),
])
def test_bad_arguments_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        SDDARTSConfig(**{**TINY, **overrides})


def test_missing_data_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="data"):
        cli_main(["sddarts", "--data", f"cifar10:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "run"), "--quiet"])
