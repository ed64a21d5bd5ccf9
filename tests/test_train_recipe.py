"""The retraining recipe of `fastnas train` against the reference scripts, written out here by hand.

quark0/darts cnn/train.py and train_imagenet.py, PC-DARTS train_imagenet.py and RaoXuan-1998/NADD
train_eval_cifar.py fix the learning-rate schedules, the label-smoothed loss, the auxiliary loss,
the drop-path ramp and DNAD's drop-path maximum; a run killed in the middle of an epoch and resumed
ends bit for bit where the uninterrupted run does.
"""

import math

import pytest
import torch
import torch.nn as nn

from fastnas.data import batches, load_data
from fastnas.evaluators import TrainConfig, train_network
from fastnas.evaluators.trainer import (dnad_drop_path, drop_path_probability, learning_rate,
                                        training_augmentation)
from fastnas.runs import RunFolder
from test_data import fake_cifar


class TinyNet(nn.Module):
    """A conv, drop-path on its output drawn from the global RNG (as DARTS's utils.drop_path), an auxiliary
    classifier that runs only in training, and the classifier. forward -> (logits, [features][, aux logits])."""

    def __init__(self, in_channels: int = 3, classes: int = 10, width: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.aux = nn.Linear(width, classes)
        self.fc = nn.Linear(width, classes)
        self.drop_path_prob = 0.0
        self.probabilities_seen = []  # drop_path_prob at each training forward

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        if self.training:
            self.probabilities_seen.append(self.drop_path_prob)
            if self.drop_path_prob > 0:
                keep = 1 - self.drop_path_prob
                h = h / keep * torch.empty(x.shape[0], 1, 1, 1, dtype=h.dtype).bernoulli_(keep)
        pooled = h.mean((2, 3))
        if self.training:
            return self.fc(pooled), [h], self.aux(pooled)
        return self.fc(pooled), [h]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A tiny cifar-10-batches-py folder (20 train, 10 test images) read by the real loader, in float64."""
    root = tmp_path_factory.mktemp("cifar")
    fake_cifar(root, "cifar10", n_train=20, n_test=10)
    data = load_data(f"cifar10:{root}")
    for part in (data.train, data.test):
        part.images = part.images.double()
    return data


def label_smooth_ce(logits, targets, epsilon):
    """quark0/darts cnn/train_imagenet.py CrossEntropyLabelSmooth, transcribed."""
    log_probs = torch.log_softmax(logits, dim=1)
    one_hot = torch.zeros_like(log_probs).scatter_(1, targets.unsqueeze(1), 1)
    smoothed = (1 - epsilon) * one_hot + epsilon / logits.shape[1]
    return (-smoothed * log_probs).mean(0).sum()


# --------------------------------------------------------------------------- learning-rate schedules


def scheduler_lrs(make, epochs: int, lr: float = 0.1) -> list[float]:
    """The lr each epoch trains at, under a torch scheduler stepped once after every epoch."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr)
    scheduler = make(optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_is_cosine_annealing_stepped_per_epoch():
    config = TrainConfig(epochs=12, lr=0.1, lr_min=0.004, schedule="cosine")
    expected = scheduler_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 12, eta_min=0.004), 12)
    got = [learning_rate(config, epoch, step) for epoch in range(12) for step in (0, 3)][::2]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    # every step of an epoch trains at that epoch's lr
    assert learning_rate(config, 5, 0, 10) == learning_rate(config, 5, 9, 10)


def test_cosine_steps_is_cosine_annealing_over_all_steps():
    config = TrainConfig(epochs=3, lr=0.1)
    expected = scheduler_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 3 * 4), 3 * 4)
    got = [learning_rate(config, epoch, step, 4) for epoch in range(3) for step in range(4)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_step_is_step_lr():
    config = TrainConfig(epochs=9, lr=0.1, schedule="step", lr_gamma=0.97, lr_decay_period=2)
    expected = scheduler_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.97), 9)
    assert [learning_rate(config, e) for e in range(9)] == pytest.approx(expected, rel=1e-12)


def test_linear_with_warm_up_is_pc_darts_adjust_lr():
    def adjust_lr(epoch, epochs=12, lr=0.5):  # PC-DARTS train_imagenet.py, transcribed
        if epochs - epoch > 5:
            rate = lr * (epochs - 5 - epoch) / (epochs - 5)
        else:
            rate = lr * (epochs - epoch) / ((epochs - 5) * 5)
        return rate * (epoch + 1) / 5.0 if epoch < 5 else rate  # warm-up (batch > 256)

    config = TrainConfig(epochs=12, lr=0.5, schedule="linear", warmup_epochs=5)
    assert [learning_rate(config, e) for e in range(12)] == pytest.approx([adjust_lr(e) for e in range(12)])
    assert learning_rate(config, 6) == pytest.approx(0.5 * 1 / 7) and learning_rate(config, 11) == pytest.approx(
        0.5 / 35)


def test_bad_recipe_values_are_named():
    with pytest.raises(ValueError, match="schedule: expected one of"):
        TrainConfig(schedule="exponential")
    with pytest.raises(ValueError, match="linear schedule needs more than 5 epochs"):
        TrainConfig(schedule="linear", epochs=5)
    with pytest.raises(ValueError, match="drop_path: expected a probability"):
        TrainConfig(drop_path=1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=-0.1)
    with pytest.raises(ValueError, match="amp: expected one of off, bf16"):
        TrainConfig(amp="fp16")


# --------------------------------------------------------------------------- drop-path


def test_drop_path_ramps_linearly_from_zero():
    assert [drop_path_probability(0.2, e, 4) for e in range(4)] == pytest.approx([0.0, 0.05, 0.1, 0.15])


def test_dnad_drop_path_maximum():
    # NADD train_eval_cifar.py: drop_prob + (0.15 / 112) * (operator_num - cell_num * 2 * 4)
    assert dnad_drop_path(0.3, 8 * 14, 14) == 0.3
    assert dnad_drop_path(0.3, 140, 14) == pytest.approx(0.3 + 0.15 * 28 / 112)
    assert dnad_drop_path(0.3, 90, 14) == pytest.approx(0.3 - 0.15 * 22 / 112)
    with pytest.raises(ValueError, match="drop_path: DNAD's schedule gives"):
        dnad_drop_path(0.9, 400, 14)


def test_the_trainer_sets_the_ramp_each_epoch(cifar):
    torch.manual_seed(0)
    model = TinyNet().double()
    train_network(model, cifar, TrainConfig(epochs=4, batch_size=10, drop_path=0.2), progress=False)
    assert model.probabilities_seen == pytest.approx([0.0] * 2 + [0.05] * 2 + [0.1] * 2 + [0.15] * 2)


def test_drop_path_needs_a_network_that_has_it(cifar):
    class Plain(TinyNet):
        def __getattr__(self, name):
            if name == "drop_path_prob":
                raise AttributeError(name)
            return super().__getattr__(name)

    model = Plain().double()
    del model.drop_path_prob
    with pytest.raises(ValueError, match="drop_path: Plain has no drop-path"):
        train_network(model, cifar, TrainConfig(epochs=1, batch_size=10, drop_path=0.2), progress=False)


# --------------------------------------------------------------------------- the whole recipe


def reference_training(model, dataset, config, scheduler) -> None:
    """The loop of quark0/darts cnn/train.py (train_imagenet.py with label smoothing), written out."""
    optimizer = torch.optim.SGD(model.parameters(), config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = scheduler(optimizer)
    torch.manual_seed(config.seed)
    for epoch in range(config.epochs):
        model.drop_path_prob = config.drop_path * epoch / config.epochs
        model.train()
        for images, labels in batches(dataset.train, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch,
                                      augment=training_augmentation(dataset, config), drop_last=True):
            optimizer.zero_grad()
            logits, _, logits_aux = model(images)
            loss = label_smooth_ce(logits, labels, config.label_smoothing)
            loss = loss + config.auxiliary_weight * label_smooth_ce(logits_aux, labels, config.label_smoothing)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("recipe, scheduler", [
    (dict(schedule="cosine", lr_min=0.001, cutout=16, drop_path=0.4),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 3, eta_min=0.001)),
    (dict(schedule="step", lr_gamma=0.5, label_smoothing=0.1, weight_decay=3e-5, grad_clip=0.05),
     lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)),
])
def test_one_run_equals_the_reference_loop(cifar, recipe, scheduler):
    config = TrainConfig(epochs=3, batch_size=6, lr=0.1, auxiliary_weight=0.4, seed=3, **recipe)
    torch.manual_seed(0)
    ours, reference = TinyNet().double(), TinyNet().double()
    reference.load_state_dict(ours.state_dict())
    train_network(ours, cifar, config, progress=False)
    reference_training(reference, cifar, config, scheduler)
    for name, value in ours.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], rtol=1e-9, atol=1e-12, msg=name)


def test_an_auxiliary_weight_needs_auxiliary_logits(cifar):
    class NoAux(TinyNet):
        def forward(self, x):
            return super().forward(x)[:2]

    with pytest.raises(ValueError, match="auxiliary_weight: the network returned no auxiliary logits"):
        train_network(NoAux().double(), cifar, TrainConfig(epochs=1, batch_size=10, auxiliary_weight=0.4),
                      progress=False)


# --------------------------------------------------------------------------- resume in the middle of an epoch


class Killed(Exception):
    pass


def run_training(folder, dataset, config, kill_after=None, resume=False) -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet().double()

    def on_step(steps):
        if steps == kill_after:
            raise Killed

    train_network(model, dataset, config, run=RunFolder(folder, resume=resume), progress=False, on_step=on_step)
    return model


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_equals_the_uninterrupted_run(cifar, tmp_path, workers):
    # 4 steps an epoch, checkpoints at steps 3, 4 (epoch end), 6, 8, 9, ...; drop-path draws from epoch 1 on
    config = TrainConfig(epochs=3, batch_size=5, lr=0.1, schedule="cosine", drop_path=0.6, cutout=16,
                         auxiliary_weight=0.4, checkpoint_every=3, seed=5, workers=workers)
    whole = run_training(tmp_path / "whole", cifar, config)
    for kill_after in (5, 11):  # the last checkpoints: step 4 (epoch 0's end), step 9 (epoch 2, mid-epoch)
        folder = tmp_path / f"killed{kill_after}"
        with pytest.raises(Killed):
            run_training(folder, cifar, config, kill_after=kill_after)
        state = RunFolder(folder, resume=True).load_checkpoint()
        assert (state["epoch"], state["step"]) == ((1, 0) if kill_after == 5 else (2, 1))
        resumed = run_training(folder, cifar, config, resume=True)
        for name, value in whole.state_dict().items():
            assert torch.equal(value, resumed.state_dict()[name]), name
        assert RunFolder(folder, resume=True).metrics() == RunFolder(tmp_path / "whole", resume=True).metrics()


def test_resume_with_other_settings_is_refused(cifar, tmp_path):
    config = TrainConfig(epochs=2, batch_size=10, checkpoint_every=1)
    with pytest.raises(Killed):
        run_training(tmp_path / "run", cifar, config, kill_after=1)
    other = TrainConfig(epochs=3, batch_size=10, checkpoint_every=1, workers=1)
    with pytest.raises(ValueError, match=r"resume: the run in .* was started with epochs 2 \(now 3\)"):
        run_training(tmp_path / "run", cifar, other, resume=True)


# --------------------------------------------------------------------------- how the steps run


def test_channels_last_computes_the_same(cifar):
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = TinyNet().double()
        config = TrainConfig(epochs=2, batch_size=5, drop_path=0.3, auxiliary_weight=0.4, channels_last=channels_last)
        train_network(model, cifar, config, progress=False)
        results.append(model.state_dict())
    for name, value in results[0].items():
        torch.testing.assert_close(value, results[1][name], rtol=1e-10, atol=1e-12, msg=name)


def test_bf16_autocast_trains_close_to_float32(tmp_path):
    root = tmp_path / "cifar"
    fake_cifar(root, "cifar10", n_train=20, n_test=10)
    data = load_data(f"cifar10:{root}")
    losses = []
    for amp in ("off", "bf16"):
        torch.manual_seed(0)
        model, records = TinyNet(), []
        train_network(model, data, TrainConfig(epochs=2, batch_size=5, amp=amp, auxiliary_weight=0.4),
                      progress=False, on_epoch=records.append)
        losses.append([r["train_loss"] for r in records])
    assert all(math.isfinite(x) for x in losses[1])
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_the_auxiliary_head_runs_only_in_training(cifar):
    from fastnas.search_spaces import NetworkCIFAR, load_genotype

    torch.manual_seed(0)
    net = NetworkCIFAR(load_genotype("DARTS_V2"), C=2, num_classes=10, layers=3, auxiliary=True).double()
    before = {name: p.detach().clone() for name, p in net.auxiliary_head.named_parameters()}
    calls = []
    net.auxiliary_head.register_forward_hook(lambda module, inputs, output: calls.append(module.training))
    result = train_network(net, cifar, TrainConfig(epochs=1, batch_size=10, auxiliary_weight=0.4, drop_path=0.2),
                           progress=False)
    assert calls == [True, True]  # the two training steps; the test-set evaluation runs without the head
    assert 0 <= result["test_accuracy"] <= 1
    assert all(not torch.equal(p, before[name]) for name, p in net.auxiliary_head.named_parameters())


def test_autoaugment_and_workers_train(cifar):
    pytest.importorskip("torchvision")
    records = []
    torch.manual_seed(0)
    train_network(TinyNet().double(), cifar, TrainConfig(epochs=1, batch_size=10, autoaugment=True, cutout=8,
                                                          workers=1), progress=False, on_epoch=records.append)
    assert len(records) == 1 and math.isfinite(records[0]["train_loss"])
