"""Training and evaluation of a discrete network, plain or distilled (`fastnas train`).

Networks return (logits, stage features), as every network of fastnas does.
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

from ..data import Dataset, ImageData, batches, num_batches
from ..distill import Teacher, make_kd_loss
from ..runs import RunFolder


@dataclass
class TrainConfig:
    """Retraining settings (DARTS-style SGD with cosine decay, sized for small data)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    kd: str = "none"          # at | feature | soft | none
    kd_rate: float = 1.0
    ce_rate: float = 1.0      # weight of the cross-entropy; DisWOT's KD benchmark uses 0.1 CE + 0.9 KD
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        for name in ("kd_rate", "ce_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")


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


def train_network(model: nn.Module, dataset: Dataset, config: TrainConfig, teacher: Teacher | None = None,
                  device: torch.device | str = "cpu", run: RunFolder | None = None, progress: bool = True,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Trains `model` from its current weights on dataset.train, reports test accuracy.

    With `run`, each epoch is checkpointed atomically and a resumed run continues
    after the last finished epoch. Returns {"test_accuracy", "test_loss", "epochs", "seconds"}.
    """
    torch.manual_seed(config.seed)
    model.to(device)
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    if config.kd != "none" and teacher is None:
        raise ValueError(f"kd: '{config.kd}' needs a teacher")
    kd_loss = make_kd_loss(config.kd, stage_channels(model, input_shape, device),
                           teacher.stage_channels if teacher is not None else ()).to(device)
    params = list(model.parameters()) + list(kd_loss.parameters())
    optimizer = torch.optim.SGD(params, config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    steps_per_epoch = num_batches(dataset.train, config.batch_size, drop_last=True)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    start_epoch, seconds = 0, 0.0
    if run is not None and run.checkpoint_path.exists():
        state = run.load_checkpoint()
        model.load_state_dict(state["model"])
        kd_loss.load_state_dict(state["kd_loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, seconds = state["epoch"], state["seconds"]
        torch.set_rng_state(state["rng"])
        run.truncate_metrics(start_epoch)

    for epoch in tqdm(range(start_epoch, config.epochs), desc="train", unit="epoch", disable=not progress,
                      initial=start_epoch, total=config.epochs):
        started = time.time()
        model.train()
        loss_sum, kd_sum, seen = 0.0, 0.0, 0
        for images, labels in batches(dataset.train, config.batch_size, shuffle=True, seed=config.seed,
                                      epoch=epoch, augment=dataset.augment, drop_last=True):
            images, labels = images.to(device), labels.to(device)
            logits, features = model(images)
            loss = F.cross_entropy(logits, labels)
            kd = torch.zeros((), device=device)
            if teacher is not None and config.kd != "none":
                teacher_logits, teacher_features = teacher(images)
                kd = kd_loss(logits, features, teacher_logits, teacher_features)
            optimizer.zero_grad(set_to_none=True)
            (config.ce_rate * loss + config.kd_rate * kd).backward()
            nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(labels)
            kd_sum += kd.item() * len(labels)
            seen += len(labels)
        seconds += time.time() - started
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen), "kd_loss": kd_sum / max(1, seen),
                  "lr": scheduler.get_last_lr()[0]}
        if run is not None:
            run.log(record)
            run.save_checkpoint({"model": model.state_dict(), "kd_loss": kd_loss.state_dict(),
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                 "epoch": epoch + 1, "seconds": seconds, "rng": torch.get_rng_state(),
                                 "config": asdict(config)})
        if on_epoch is not None:
            on_epoch(record)
    accuracy, test_loss = evaluate(model, dataset.test, device=device)
    if math.isnan(test_loss):
        raise FloatingPointError("train: the test loss is NaN; lower --lr")
    return {"test_accuracy": accuracy, "test_loss": test_loss, "epochs": config.epochs, "seconds": seconds}
