"""Datasets held in memory: reading, normalizing and splitting them.

Everything is held in memory as float tensors; nothing is ever downloaded. Data specs for `load_data`:

- ``digits``: scikit-learn's 8x8 handwritten digits (embedded, the default);
- ``cifar10:PATH`` / ``cifar100:PATH``: the python-pickle CIFAR batches;
- ``imagenet16:PATH``: NAS-Bench-201's ImageNet16-120, the 16x16 downsampled ImageNet batches (120 classes);
- ``imagefolder:PATH``: ``PATH/train/<class>/*.png`` (etc.) and ``PATH/test`` (or ``PATH/val``);
- ``synthetic`` / ``synthetic:N``: random learnable images for tests and benchmarks.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SPEC_HELP = ("data: expected digits, cifar10:PATH, cifar100:PATH, imagenet16:PATH, imagefolder:PATH or "
             "synthetic[:N], got {!r}")
TEST_FRACTION = 0.25  # held-out share of digits and synthetic
SPLIT_SEED = 0  # the held-out test set never depends on the run seed
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SYNTHETIC_SIZE, SYNTHETIC_CLASSES, SYNTHETIC_DEFAULT_N = 16, 10, 512

# name -> (subfolder of PATH that may hold the files, train files, test files, label key, classes, image side,
# first label kept): python-pickle batches of uint8 rows [N, 3 * side * side] (channel-major) and labels.
CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10, 32, 0),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100, 32, 0),
    # NAS-Bench-201's ImageNet16-120 (AutoDL-Projects xautodl/datasets/DownsampledImageNet.py, ImageNet16 with
    # use_num_of_class_only=120): labels 1..1000, of which the classes 1..120 are kept, as labels 0..119.
    "imagenet16": ("ImageNet16", [f"train_data_batch_{i}" for i in range(1, 11)], ["val_data"], "labels", 120, 16, 1),
}


@dataclass
class ImageData:
    """Images ``[N, C, H, W]`` float32 (already normalized) and their labels ``[N]`` int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"ImageData: expected images [N, C, H, W] and labels [N], got "
                             f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, index: torch.Tensor) -> ImageData:
        """The samples at `index` ``[M]`` (int64), in that order."""
        return ImageData(self.images[index], self.labels[index])


@dataclass
class Dataset:
    """A train/test pair with what a model needs to know about it."""

    name: str  # "digits", "cifar10", "cifar100", "imagefolder" or "synthetic"
    num_classes: int
    in_channels: int
    image_size: int  # H == W
    train: ImageData
    test: ImageData
    augment: bool  # natural images: random crop (pad 4) + horizontal flip while training
    # per-channel statistics both splits were normalized with (what augmentations of raw pixels undo)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def load_data(spec: str, image_size: int | None = None) -> Dataset:
    """The dataset named by `spec` (see the module docstring), normalized with the train split's statistics.

    `image_size` resizes the images to ``[image_size, image_size]`` (bilinear); None keeps the native
    size (32 for imagefolder, whose images differ in size). Raises ValueError for an unknown spec and
    FileNotFoundError when the files of a PATH spec are missing.
    """
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size: expected a positive integer or None, got {image_size!r}")
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        num_classes, train, test = _digits()
    elif kind in CIFAR and arg:  # cifar10, cifar100, imagenet16
        num_classes, train, test = _cifar(kind, arg)
    elif kind == "imagefolder" and arg:
        num_classes, train, test = _imagefolder(arg, image_size or 32)
    elif kind == "synthetic":
        num_classes, train, test = _synthetic(_synthetic_count(spec, arg))
    else:
        raise ValueError(SPEC_HELP.format(spec))
    if image_size is not None and train.images.shape[-1] != image_size:
        train, test = _resize(train, image_size), _resize(test, image_size)
    mean, std = _normalize(train, test)
    return Dataset(name=kind, num_classes=num_classes, in_channels=train.images.shape[1],
                   image_size=train.images.shape[-1], train=train, test=test,
                   augment=kind in ("cifar10", "cifar100", "imagenet16", "imagefolder"), mean=mean, std=std)


def split(data: ImageData, fraction: float, seed: int = 0) -> tuple[ImageData, ImageData]:
    """Stratified random split of `data` (N samples) into two parts, deterministic in `seed`.

    The first part holds ``floor(fraction * n_c + 0.5)`` random samples of each class c (n_c samples,
    rounding half up), the second the rest; both keep the original order of `data`.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"split: fraction must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    labels = data.labels.cpu()
    chosen = torch.zeros(len(labels), dtype=torch.bool)
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        take = math.floor(fraction * len(members) + 0.5)
        chosen[members[torch.randperm(len(members), generator=gen)[:take]]] = True
    device = data.labels.device
    return (data.subset(torch.nonzero(chosen).flatten().to(device)),
            data.subset(torch.nonzero(~chosen).flatten().to(device)))



def _resize(data: ImageData, size: int) -> ImageData:
    return ImageData(F.interpolate(data.images, size=(size, size), mode="bilinear", align_corners=False),
                     data.labels)


def _normalize(train: ImageData, test: ImageData) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Standardize both splits in place with the per-channel mean/std of `train` (std 0 left as 1); returns them."""
    var, mean = torch.var_mean(train.images, dim=(0, 2, 3), correction=0, keepdim=True)
    std = var.sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel: only centre it
    for part in (train, test):
        part.images.sub_(mean).div_(std)
    return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())


def _hold_out(data: ImageData) -> tuple[ImageData, ImageData]:
    """(train, test) with a fixed stratified 25% of `data` as test, whatever the run seed."""
    test, train = split(data, TEST_FRACTION, SPLIT_SEED)
    return train, test


def _digits() -> tuple[int, ImageData, ImageData]:
    """(10, train, test) from scikit-learn's digits: 1797 images ``[1, 8, 8]`` in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    return 10, *_hold_out(ImageData(images, torch.from_numpy(digits.target).long()))


def _cifar(kind: str, path: str) -> tuple[int, ImageData, ImageData]:
    """(classes, train, test) from the pickle batches (CIFAR's layout) in `path` or its subfolder: ``[N, 3, side,
    side]`` in [0, 1]; labels outside the dataset's classes (ImageNet16's classes 121..1000) are left out."""
    subfolder, train_files, test_files, label_key, num_classes, side, first_label = CIFAR[kind]
    path = os.path.expanduser(path)
    expected = ", ".join(train_files + test_files)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data: {kind} folder {path!r} does not exist "
                                f"(expected it or its {subfolder}/ to hold {expected})")
    folder = os.path.join(path, subfolder) if os.path.isdir(os.path.join(path, subfolder)) else path
    missing = [f for f in train_files + test_files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"data: {kind} folder {folder!r} lacks {', '.join(missing)} "
                                f"(expected the python-pickle batches {expected}, in {path!r} or its {subfolder}/)")

    def read(files: list[str]) -> ImageData:
        images, labels = [], []
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                batch = pickle.load(f, encoding="latin1")  # Python 2 pickles (CIFAR) as Python 3 ones (ImageNet16)
            batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
            batch_labels = np.asarray(batch[label_key], dtype=np.int64) - first_label
            kept = (batch_labels >= 0) & (batch_labels < num_classes)
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, side, side)[kept])
            labels.append(batch_labels[kept])
        return ImageData(torch.from_numpy(np.concatenate(images)).float().div_(255.0),
                         torch.from_numpy(np.concatenate(labels)))

    return num_classes, read(train_files), read(test_files)


def _imagefolder(path: str, size: int) -> tuple[int, ImageData, ImageData]:
    """(classes, train, test) from ``path/train/<class>/*`` and ``path/test`` (or ``path/val``), RGB at `size`."""
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"data: imagefolder {path!r} does not exist (expected {path}/train/<class>/*.png "
                                "and test/ or val/ alike)")
    train_dir = os.path.join(path, "train")
    test_dir = next((os.path.join(path, s) for s in ("test", "val") if os.path.isdir(os.path.join(path, s))), None)
    if not os.path.isdir(train_dir) or test_dir is None:
        raise FileNotFoundError(f"data: imagefolder {path!r} needs a train/ and a test/ (or val/) subfolder, "
                                f"each with one folder of images per class; found {sorted(os.listdir(path))}")
    classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    return len(classes), _read_images(train_dir, classes, size), _read_images(test_dir, classes, size)


def _read_images(folder: str, classes: list[str], size: int) -> ImageData:
    """Every image in ``folder/<class>/`` for the given classes, as RGB ``[N, 3, size, size]`` in [0, 1]."""
    from PIL import Image

    unknown = sorted(set(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))) - set(classes))
    if unknown:
        raise ValueError(f"data: {folder!r} has class folders {unknown} that the train/ folder lacks")
    images, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        if not os.path.isdir(class_dir):
            continue
        for file in sorted(os.listdir(class_dir)):
            if file.lower().endswith(IMAGE_EXTENSIONS):
                with Image.open(os.path.join(class_dir, file)) as image:
                    rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
                images.append(np.asarray(rgb, dtype=np.uint8))
                labels.append(label)
    if not images:
        raise FileNotFoundError(f"data: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {folder!r}")
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return ImageData(stacked.contiguous(), torch.tensor(labels, dtype=torch.int64))


def _synthetic_count(spec: str, arg: str) -> int:
    if not arg:
        return SYNTHETIC_DEFAULT_N
    if not arg.isdigit() or int(arg) < 2 * SYNTHETIC_CLASSES:
        raise ValueError(f"data: synthetic:N needs an integer N >= {2 * SYNTHETIC_CLASSES} "
                         f"(two samples a class), got {spec!r}")
    return int(arg)


def _synthetic(n: int) -> tuple[int, ImageData, ImageData]:
    """(10, train, test) of `n` images ``[3, 16, 16]``, balanced classes: a random pattern per class + unit noise."""
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    patterns = torch.randn(SYNTHETIC_CLASSES, 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE, generator=gen)
    labels = torch.arange(n) % SYNTHETIC_CLASSES
    images = patterns[labels] + torch.randn(n, 3, SYNTHETIC_SIZE, SYNTHETIC_SIZE, generator=gen)
    return SYNTHETIC_CLASSES, *_hold_out(ImageData(images, labels))
