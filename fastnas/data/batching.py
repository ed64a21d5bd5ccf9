"""Batches of an in-memory split: deterministic shuffling and augmentation, in this process or in workers."""

from __future__ import annotations

from typing import Iterator

import torch

from .augment import Augmentation
from .datasets import ImageData


def num_batches(data: ImageData, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `batches` yields for `data` per epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return len(data) // batch_size if drop_last else -(-len(data) // batch_size)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of the generator that augments batch `index` of `epoch` (its own, so any process can draw it)."""
    return ((seed * 100003 + epoch) * 1000003 + index + 1) % 2**63


class EpochBatches(torch.utils.data.Dataset):
    """The batches of one epoch, batch `b` made on demand: ``(images [B, C, H, W], labels [B])``.

    The permutation is drawn from a CPU torch.Generator seeded ``seed * 100003 + epoch``; batch b's
    augmentation from one seeded ``batch_seed(seed, epoch, b)``. So a batch is the same whichever process
    makes it and whenever: a resumed run, or a DataLoader worker, sees what an uninterrupted run sees.
    """

    def __init__(self, data: ImageData, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
                 augment: Augmentation | None = None, drop_last: bool = False):
        self.data, self.batch_size, self.augment = data, batch_size, augment
        self.seed, self.epoch = seed, epoch
        self.count = num_batches(data, batch_size, drop_last)
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
        self.order = order.to(data.images.device)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= b < self.count:
            raise IndexError(f"batch {b} of an epoch of {self.count}")
        index = self.order[b * self.batch_size:(b + 1) * self.batch_size]
        images = self.data.images[index]
        if self.augment is not None:
            images = self.augment(images, torch.Generator().manual_seed(batch_seed(self.seed, self.epoch, b)))
        return images, self.data.labels[index]


def batches(data: ImageData, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            augment: bool | Augmentation = False, drop_last: bool = False, start: int = 0, workers: int = 0,
            pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images [B, C, H, W], labels [B])`` covering `data` once, deterministic in (seed, epoch).

    `augment`: True is the standard crop-and-flip (padding 0), an Augmentation says what else. The last
    batch is smaller unless `drop_last`. `start` skips the first batches (a run resumed mid-epoch).
    With `workers` > 0, DataLoader worker processes make the batches (same values, in order), pinned in
    page-locked memory when `pin_memory`; with 0 they are made here, on the device of `data`.
    """
    epoch_batches = EpochBatches(data, batch_size, shuffle=shuffle, seed=seed, epoch=epoch, drop_last=drop_last,
                                 augment=Augmentation() if augment is True else augment or None)
    if workers < 0:
        raise ValueError(f"workers: expected >= 0 worker processes, got {workers}")
    if workers == 0:
        for b in range(start, len(epoch_batches)):
            yield epoch_batches[b]
        return
    # batch_size=None: each item is already a batch. The loader's own generator keeps the global RNG untouched
    # (DataLoader draws a base seed from it otherwise), so drop-path draws do not depend on the worker count.
    yield from torch.utils.data.DataLoader(epoch_batches, batch_size=None, sampler=range(start, len(epoch_batches)),
                                           num_workers=workers, pin_memory=pin_memory,
                                           generator=torch.Generator().manual_seed(seed))
