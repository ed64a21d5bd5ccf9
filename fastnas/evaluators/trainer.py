"""Training and evaluation of a discrete network, plain or distilled (`fastnas train`).

The recipe is that of the reference retraining scripts (quark0/darts cnn/train.py and
train_imagenet.py, RaoXuan-1998/NADD train_eval_cifar.py and train_eval_imagenet.py): SGD with
momentum and weight decay, gradients clipped by their global norm, a learning rate set once per
epoch (cosine, step or PC-DARTS's linear decay, optional linear warm-up), label smoothing,
an auxiliary head's loss, drop-path ramped linearly over the epochs, cutout and AutoAugment.
Every value is a TrainConfig field; `fastnas.presets` holds the papers' values.

Networks return ``(logits, stage features)``, or ``(logits, stage features, auxiliary logits)``
while training when they have an auxiliary head. A network with drop-path has a float attribute
``drop_path_prob``, which the trainer sets at the start of each epoch, as the reference does.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import Augmentation, Dataset, ImageData, batches, num_batches
from ..data.augment import auto_augment_policy
from ..distill import Teacher, make_kd_loss
from ..runs import RunFolder

SCHEDULES = ("cosine-steps", "cosine", "step", "linear")
DROP_PATH_SCHEDULES = ("linear", "dnad")
AMP_MODES = ("off", "bf16")
# Fields that do not change what a run computes: a resumed run may give other values.
RESUMABLE_CHANGES = ("workers", "checkpoint_every", "eval_every")
# PC-DARTS train_imagenet.py adjust_lr (copied by NADD train_eval_imagenet.py): the last epochs decay slower.
LINEAR_TAIL_EPOCHS = 5


@dataclass
class TrainConfig:
    """Retraining settings. The defaults are fastnas's for small data (digits); see fastnas.presets."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    lr_min: float = 0.0          # the cosine's floor (CosineAnnealingLR's eta_min)
    # cosine-steps: cosine over every step (fastnas's digits default); cosine: per epoch (DARTS); step:
    # lr * lr_gamma ** (epoch // lr_decay_period) (DARTS ImageNet); linear: PC-DARTS/NADD ImageNet adjust_lr
    schedule: str = "cosine-steps"
    lr_gamma: float = 0.97
    lr_decay_period: int = 1
    warmup_epochs: int = 0       # lr * (epoch + 1) / warmup_epochs in the first epochs (PC-DARTS ImageNet)
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.0  # weight of the auxiliary head's loss (0: no auxiliary loss)
    drop_path: float = 0.0       # the ramp's final probability (see drop_path_probability)
    cutout: int = 0              # side of the square cut out of each training image (0: none)
    autoaugment: bool = False    # torchvision AutoAugment, CIFAR10 policy
    kd: str = "none"             # at | feature | soft | none
    kd_rate: float = 1.0
    ce_rate: float = 1.0         # weight of the cross-entropy; DisWOT's KD benchmark uses 0.1 CE + 0.9 KD
    seed: int = 0
    workers: int = 0             # DataLoader worker processes making the batches (0: this process)
    channels_last: bool = False  # NHWC memory layout of the network and its inputs
    amp: str = "off"             # off | bf16: bfloat16 autocast of the forward pass and losses
    checkpoint_every: int = 0    # steps between mid-epoch checkpoints (0: at the end of each epoch only)
    eval_every: int = 0          # epochs between test-set evaluations logged in metrics.jsonl (0: at the end)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "lr_decay_period"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        for name in ("warmup_epochs", "cutout", "workers", "checkpoint_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min: expected 0 <= lr_min <= lr ({self.lr}), got {self.lr_min}")
        for name in ("kd_rate", "ce_rate", "auxiliary_weight", "weight_decay", "momentum", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma: expected 0 < lr_gamma <= 1, got {self.lr_gamma}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: expected 0 <= label_smoothing < 1, got {self.label_smoothing}")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"drop_path: expected a probability 0 <= p < 1, got {self.drop_path}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule == "linear" and self.epochs <= LINEAR_TAIL_EPOCHS:
            raise ValueError(f"epochs: the linear schedule needs more than {LINEAR_TAIL_EPOCHS} epochs, "
                             f"got {self.epochs}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp: expected one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.autoaugment:
            auto_augment_policy()  # torchvision is there, or a ValueError says so before any data is read


def learning_rate(config: TrainConfig, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The learning rate of step `step` (0-based, of `steps_per_epoch`) of epoch `epoch` (0-based).

    - cosine: ``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``, the value of
      CosineAnnealingLR(T_max=epochs, eta_min=lr_min) stepped once per epoch (quark0/darts cnn/train.py);
    - cosine-steps: the same over steps, ``t = epoch * steps_per_epoch + step`` of ``epochs * steps_per_epoch``;
    - step: ``lr * lr_gamma ** (epoch // lr_decay_period)``, StepLR (quark0/darts cnn/train_imagenet.py);
    - linear: PC-DARTS train_imagenet.py adjust_lr, ``lr * (E - 5 - epoch) / (E - 5)`` while more than 5
      epochs remain, then ``lr * (E - epoch) / ((E - 5) * 5)``.

    During the first `warmup_epochs` epochs it is multiplied by ``(epoch + 1) / warmup_epochs`` (PC-DARTS
    train_imagenet.py; NADD's copy multiplies the initial lr instead, which differs by under 2% in 5 of 250
    epochs: fastnas's choice is PC-DARTS's).
    """
    c, E = config, config.epochs
    if c.schedule == "cosine":
        rate = c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * epoch / E)) / 2
    elif c.schedule == "cosine-steps":
        t = (epoch * steps_per_epoch + step) / (E * steps_per_epoch)
        rate = c.lr_min + (c.lr - c.lr_min) * (1 + math.cos(math.pi * t)) / 2
    elif c.schedule == "step":
        rate = c.lr * c.lr_gamma ** (epoch // c.lr_decay_period)
    elif E - epoch > LINEAR_TAIL_EPOCHS:
        rate = c.lr * (E - LINEAR_TAIL_EPOCHS - epoch) / (E - LINEAR_TAIL_EPOCHS)
    else:
        rate = c.lr * (E - epoch) / ((E - LINEAR_TAIL_EPOCHS) * LINEAR_TAIL_EPOCHS)
    if epoch < c.warmup_epochs:
        rate *= (epoch + 1) / c.warmup_epochs
    return rate


def drop_path_probability(final: float, epoch: int, epochs: int) -> float:
    """``final * epoch / epochs``: the drop-path probability of epoch `epoch` (0-based), 0 in the first epoch
    and ``final * (epochs - 1) / epochs`` in the last, as quark0/darts cnn/train.py and NADD set it."""
    return final * epoch / epochs


def dnad_drop_path(base: float, operators: int, cells: int) -> float:
    """The final drop-path probability DNAD's code gives a network of `operators` operations in `cells` cells:
    ``base + 0.15 / 112 * (operators - 8 * cells)``, 8 being a DARTS cell's operations (2 per node, 4 nodes)
    (RaoXuan-1998/NADD train_eval_cifar.py, drop_prob_max). Raises ValueError if it leaves [0, 1)."""
    final = base + 0.15 / 112 * (operators - 8 * cells)
    if not 0 <= final < 1:
        raise ValueError(f"drop_path: DNAD's schedule gives {final:.3f} for {operators} operations in {cells} "
                         f"cells from the base {base}; expected a probability in [0, 1)")
    return final


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, batch_size: int = 256,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """(top-1 accuracy in [0, 1], mean cross-entropy) of `model` on `data`."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for images, labels in batches(data, batch_size, shuffle=False):
        images, labels = images.to(device), labels.to(device)
        logits = model(images)[0]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    model.train(was_training)
    return correct / max(1, len(data)), loss_sum / max(1, len(data))


def stage_channels(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str) -> list[int]:
    """Channels of the stage features of `model` (one probe forward)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        features = model(torch.zeros(1, *input_shape, device=device))[1]
    model.train(was_training)
    return [f.shape[1] for f in features]


def training_augmentation(dataset: Dataset, config: TrainConfig) -> Augmentation | None:
    """What the training batches get: crop and flip on natural images (padded with black pixels, as
    torchvision's RandomCrop pads the raw image), cutout and AutoAugment as configured; None if nothing."""
    if not (dataset.augment or config.cutout or config.autoaugment):
        return None
    return Augmentation(crop_flip=dataset.augment, cutout=config.cutout, autoaugment=config.autoaugment,
                        mean=dataset.mean, std=dataset.std)


def _check_resumable(saved: dict, config: TrainConfig, run: RunFolder) -> None:
    changed = {name: (saved.get(name), value) for name, value in asdict(config).items()
               if name not in RESUMABLE_CHANGES and saved.get(name) != value}
    if changed:
        described = ", ".join(f"{name} {old!r} (now {new!r})" for name, (old, new) in changed.items())
        raise ValueError(f"resume: the run in {run.path} was started with {described}; resume it with the "
                         "same settings, or start a new run in another --out")


def train_network(model: nn.Module, dataset: Dataset, config: TrainConfig, teacher: Teacher | None = None,
                  device: torch.device | str = "cpu", run: RunFolder | None = None, progress: bool = True,
                  on_epoch: Callable[[dict], None] | None = None,
                  on_step: Callable[[int], None] | None = None) -> dict:
    """Trains `model` from its current weights on dataset.train, reports test accuracy.

    With `run`, a checkpoint is written atomically at the end of each epoch and every
    `config.checkpoint_every` steps; a resumed run continues from the step after it and computes what
    the uninterrupted run computes (the batches depend on (seed, epoch, batch) only; the RNG states of
    the drop-path draws are in the checkpoint). `on_step(steps done)` is called after every step.
    Returns {"test_accuracy", "test_loss", "epochs", "seconds"}.
    """
    c, device = config, torch.device(device)
    torch.manual_seed(c.seed)
    model.to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    if c.kd != "none" and teacher is None:
        raise ValueError(f"kd: '{c.kd}' needs a teacher")
    student_channels = stage_channels(model, input_shape, device) if c.kd == "feature" else ()
    kd_loss = make_kd_loss(c.kd, student_channels, teacher.stage_channels if teacher is not None else ()).to(device)
    params = list(model.parameters()) + list(kd_loss.parameters())
    optimizer = torch.optim.SGD(params, c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    steps_per_epoch = num_batches(dataset.train, c.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size: {c.batch_size} is larger than the {len(dataset.train)} training images")
    if c.drop_path > 0 and not hasattr(model, "drop_path_prob"):
        raise ValueError(f"drop_path: {type(model).__name__} has no drop-path (no drop_path_prob attribute); "
                         "train it with --drop-path 0")
    augment = training_augmentation(dataset, c)
    epoch, step, seconds = 0, 0, 0.0
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, kd, correct, seen of the epoch so far
    if run is not None and run.checkpoint_path.exists():
        state = run.load_checkpoint()
        _check_resumable(state["config"], c, run)
        model.load_state_dict(state["model"])
        kd_loss.load_state_dict(state["kd_loss"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, step, seconds, sums = state["epoch"], state["step"], state["seconds"], state["sums"].to(device)
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        run.truncate_metrics(epoch)

    def save() -> None:
        run.save_checkpoint({"model": model.state_dict(), "kd_loss": kd_loss.state_dict(),
                             "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                             "seconds": seconds, "sums": sums.cpu(), "rng": torch.get_rng_state(),
                             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
                             "config": asdict(c)})

    bar = tqdm(total=c.epochs * steps_per_epoch, initial=epoch * steps_per_epoch + step, desc="train",
               unit="step", disable=not progress)
    while epoch < c.epochs:
        started = time.time()
        model.train()
        drop_path = drop_path_probability(c.drop_path, epoch, c.epochs)
        if hasattr(model, "drop_path_prob"):
            model.drop_path_prob = drop_path
        for images, labels in batches(dataset.train, c.batch_size, shuffle=True, seed=c.seed, epoch=epoch,
                                      augment=augment or False, drop_last=True, start=step, workers=c.workers,
                                      pin_memory=c.workers > 0 and device.type == "cuda"):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(c, epoch, step, steps_per_epoch)
            sums += train_step(model, kd_loss, teacher, optimizer, params, images, labels, c, device)
            step += 1
            bar.update(1)
            if run is not None and c.checkpoint_every and step < steps_per_epoch and \
                    (epoch * steps_per_epoch + step) % c.checkpoint_every == 0:
                seconds += time.time() - started
                started = time.time()
                save()
            if on_step is not None:
                on_step(epoch * steps_per_epoch + step)
        seconds += time.time() - started
        loss_sum, kd_sum, correct, seen = sums.tolist()
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "kd_loss": kd_sum / seen,
                  "train_accuracy": correct / seen, "lr": learning_rate(c, epoch, 0, steps_per_epoch),
                  "drop_path": drop_path}
        if c.eval_every and (epoch + 1) % c.eval_every == 0:
            record["test_accuracy"], record["test_loss"] = evaluate(model, dataset.test, device=device)
        epoch, step = epoch + 1, 0
        sums.zero_()
        if run is not None:
            run.log(record)
            save()
        if on_epoch is not None:
            on_epoch(record)
    bar.close()
    accuracy, test_loss = evaluate(model, dataset.test, device=device)
    if math.isnan(test_loss):
        raise FloatingPointError("train: the test loss is NaN; lower --lr")
    return {"test_accuracy": accuracy, "test_loss": test_loss, "epochs": c.epochs, "seconds": seconds}


def train_step(model: nn.Module, kd_loss: nn.Module, teacher: Teacher | None, optimizer: torch.optim.Optimizer,
                params: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, c: TrainConfig,
                device: torch.device) -> torch.Tensor:
    """One SGD step; returns (loss sum, kd sum, correct, samples) of the batch, float64 ``[4]``, on `device`."""
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    if c.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.amp == "bf16"):
        outputs = model(images)
        logits, features = outputs[0], outputs[1]
        aux_logits = outputs[2] if len(outputs) > 2 else None
        kd = torch.zeros((), device=device)
        if teacher is not None and c.kd != "none":
            teacher_logits, teacher_features = teacher(images)
            kd = kd_loss(logits, features, teacher_logits, teacher_features).float()
    # the losses in float32 at least (bfloat16 logits under autocast), label-smoothed as CrossEntropyLabelSmooth
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
    total = c.ce_rate * loss + c.kd_rate * kd
    if c.auxiliary_weight > 0:
        if aux_logits is None:
            raise ValueError("auxiliary_weight: the network returned no auxiliary logits (build it with its "
                             "auxiliary head, or train with --auxiliary-weight 0)")
        aux_logits = aux_logits.to(logits.dtype)
        total = total + c.auxiliary_weight * F.cross_entropy(aux_logits, labels, label_smoothing=c.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    nn.utils.clip_grad_norm_(params, c.grad_clip)
    optimizer.step()
    n = labels.new_tensor(len(labels), dtype=torch.float64)
    correct = (logits.argmax(1) == labels).sum().to(torch.float64)
    return torch.stack([loss.detach().double() * n, kd.detach().double() * n, correct, n])
