"""Batches of an in-memory split: deterministic shuffling and the standard crop-and-flip augmentation."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .datasets import ImageData

AUGMENT_PAD = 4


def num_batches(data: ImageData, batch_size: int, drop_last: bool = False) -> int:
    """How many batches `batches` yields for `data` per epoch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return len(data) // batch_size if drop_last else -(-len(data) // batch_size)


def batches(data: ImageData, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0,
            augment: bool = False, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(images [B, C, H, W], labels [B])`` covering `data` once, on the device of `data`.

    Deterministic in (seed, epoch): one CPU torch.Generator seeded with ``seed * 100003 + epoch`` draws
    the permutation and then each batch's augmentation, so a resumed run sees the same batches. The last
    batch is smaller unless `drop_last`.
    """
    count = num_batches(data, batch_size, drop_last)
    gen = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
    order = order.to(data.images.device)
    for b in range(count):
        index = order[b * batch_size:(b + 1) * batch_size]
        images = data.images[index]
        yield (_augment(images, gen) if augment else images), data.labels[index]


def _augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop after 4-pixel zero padding plus random horizontal flip of each image of ``[B, C, H, W]``.

    Zero is the channel mean of normalized images. One gather does both: each sample reads rows
    ``dy + [0, H)`` and columns ``dx + [0, W)`` (reversed when flipped) of its padded image.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (AUGMENT_PAD,) * 4)
    dy = torch.randint(0, 2 * AUGMENT_PAD + 1, (b, 1), generator=gen)
    dx = torch.randint(0, 2 * AUGMENT_PAD + 1, (b, 1), generator=gen)
    flip = torch.rand(b, 1, generator=gen) < 0.5
    rows = dy + torch.arange(h)
    cols = dx + torch.where(flip, torch.arange(w - 1, -1, -1), torch.arange(w))
    rows, cols = rows.to(images.device), cols.to(images.device)
    sample = torch.arange(b, device=images.device)[:, None, None]
    # advanced indices around a slice put their dims first: [B, H, W, C]
    return padded[sample, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


