"""Training-time augmentation of a batch: random crop and flip, AutoAugment, cutout.

The order is the reference's (quark0/darts cnn/utils.py ``_data_transforms_cifar10``, and
RaoXuan-1998/NADD utils_.py with its AutoAugment): RandomCrop(32, padding=4) and
RandomHorizontalFlip on the raw image, then AutoAugment's CIFAR10 policy (optional), then
ToTensor and Normalize, then Cutout. The images here are already normalized, so AutoAugment
works on the raw pixels recovered from the normalization statistics, and cutout zeroes
normalized pixels, as the reference's Cutout (``img *= mask`` after Normalize) does.

Every random draw comes from the `torch.Generator` passed in, so a batch is a function of that
generator's seed only (the same in any worker process, and after a resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CROP_PADDING = 4  # RandomCrop(32, padding=4)


@dataclass(frozen=True)
class Augmentation:
    """What to do to each training batch ``[B, C, H, W]`` (normalized images).

    Args:
        crop_flip: random crop of the image padded by 4 pixels, and a random horizontal flip.
        cutout: side of the square zeroed in each image (0: none); the reference's Cutout(16).
        autoaugment: torchvision's AutoAugment with the CIFAR10 policy, per image (needs torchvision).
        mean, std: per-channel statistics the images were normalized with (``Dataset.mean``/``std``).
            With them the crop pads with black pixels, as torchvision's RandomCrop does on the raw
            image; without them it pads with 0, the channel mean (fastnas's search default).
            AutoAugment needs them.
    """

    crop_flip: bool = True
    cutout: int = 0
    autoaugment: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ValueError(f"cutout: expected a square side >= 0 pixels (0 = none), got {self.cutout!r}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("augmentation: give both mean and std, or neither")
        if self.autoaugment:
            if self.mean is None:
                raise ValueError("autoaugment: needs the normalization statistics (mean, std) of the images")
            auto_augment_policy()  # fails now, with a clear message, if torchvision is missing

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The augmented batch, same shape and dtype as `images` ``[B, C, H, W]``."""
        if self.crop_flip:
            images = crop_and_flip(images, gen, self._black())
        if self.autoaugment:
            images = auto_augment(images, gen, self.mean, self.std)
        if self.cutout:
            images = cutout(images, self.cutout, gen)
        return images

    def _black(self) -> torch.Tensor | None:
        """Per-channel value ``[C]`` of a black pixel after normalization, or None (pad with 0)."""
        if self.mean is None:
            return None
        return -torch.tensor(self.mean) / torch.tensor(self.std)


def crop_and_flip(images: torch.Tensor, gen: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop after 4-pixel padding plus random horizontal flip of each image of ``[B, C, H, W]``.

    The padding is `fill` ``[C]`` (per channel) or 0. One gather does both: each sample reads rows
    ``dy + [0, H)`` and columns ``dx + [0, W)`` (reversed when flipped) of its padded image.
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (CROP_PADDING,) * 4)
    if fill is not None:
        border = torch.ones(h + 2 * CROP_PADDING, w + 2 * CROP_PADDING, dtype=torch.bool, device=images.device)
        border[CROP_PADDING:CROP_PADDING + h, CROP_PADDING:CROP_PADDING + w] = False
        padded = torch.where(border, fill.to(images)[:, None, None], padded)
    dy = torch.randint(0, 2 * CROP_PADDING + 1, (b, 1), generator=gen)
    dx = torch.randint(0, 2 * CROP_PADDING + 1, (b, 1), generator=gen)
    flip = torch.rand(b, 1, generator=gen) < 0.5
    rows = dy + torch.arange(h)
    cols = dx + torch.where(flip, torch.arange(w - 1, -1, -1), torch.arange(w))
    rows, cols = rows.to(images.device), cols.to(images.device)
    sample = torch.arange(b, device=images.device)[:, None, None]
    # advanced indices around a slice put their dims first: [B, H, W, C]
    return padded[sample, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def cutout_mask(centres_y: torch.Tensor, centres_x: torch.Tensor, length: int, height: int,
                width: int) -> torch.Tensor:
    """Masks ``[B, H, W]``: 0 inside each image's square, 1 elsewhere.

    As quark0/darts cnn/utils.py Cutout: rows ``clip(y - length // 2, 0, H) .. clip(y + length // 2, 0, H)``
    (end excluded) and the same for columns, for centres ``y`` ``[B]`` and ``x`` ``[B]``.
    """
    half = length // 2

    def inside(centres: torch.Tensor, size: int) -> torch.Tensor:  # [B, size]: in the square's span
        index = torch.arange(size)
        return (index >= (centres - half).clamp(0, size)[:, None]) & (index < (centres + half).clamp(0, size)[:, None])

    return (~(inside(centres_y, height)[:, :, None] & inside(centres_x, width)[:, None, :])).float()


def cutout(images: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """`images` ``[B, C, H, W]`` with one `length`-sided square zeroed per image, its centre uniform over
    the image (``randint(H)``, ``randint(W)`` as the reference) and the square clipped at the borders."""
    b, _, h, w = images.shape
    centres_y = torch.randint(0, h, (b,), generator=gen)
    centres_x = torch.randint(0, w, (b,), generator=gen)
    mask = cutout_mask(centres_y, centres_x, length, h, w).to(images)
    return images * mask[:, None]


def auto_augment_policy():
    """torchvision's AutoAugment with the CIFAR10 policy (imported here: torchvision is optional).

    Raises ValueError naming the option when torchvision is not installed (a setting this machine cannot run).
    """
    try:
        from torchvision.transforms import AutoAugment, AutoAugmentPolicy
    except ImportError as error:
        raise ValueError("autoaugment: needs torchvision, which is not installed (pip install torchvision==0.29.1, "
                         "the build matching torch 2.14.1); without it, train without --autoaugment") from error
    return AutoAugment(AutoAugmentPolicy.CIFAR10)


def auto_augment(images: torch.Tensor, gen: torch.Generator, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> torch.Tensor:
    """torchvision AutoAugment (CIFAR10 policy) applied to each image of the normalized batch ``[B, C, H, W]``.

    Each image is un-normalized to uint8 pixels (exact for 8-bit data), transformed with its own policy
    draw, and normalized again. AutoAugment draws from the global torch RNG; it runs here under a fork of
    that RNG seeded from `gen`, so the result depends on `gen` only and the global RNG is left untouched.
    """
    policy = auto_augment_policy()
    shift = torch.tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    scale = torch.tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    pixels = (images * scale + shift).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([policy(image) for image in pixels.cpu()]).to(images.device)
    return (out.to(images.dtype) / 255.0 - shift) / scale
