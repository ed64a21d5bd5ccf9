"""Image data for every search and training command: reading, normalizing, splitting, augmenting, batching.

``datasets`` reads a data spec (digits, cifar10:PATH, ...) into memory; ``augment`` holds the
training-time augmentations (crop and flip, AutoAugment, cutout); ``batching`` draws deterministic,
resumable batches from a split, in this process or in DataLoader worker processes.
"""

from .augment import Augmentation, crop_and_flip, cutout, cutout_mask
from .batching import EpochBatches, batch_seed, batches, num_batches
from .datasets import CIFAR, SPEC_HELP, Dataset, ImageData, load_data, split

__all__ = ["CIFAR", "SPEC_HELP", "Augmentation", "Dataset", "EpochBatches", "ImageData", "batch_seed", "batches",
           "crop_and_flip", "cutout", "cutout_mask", "load_data", "num_batches", "split"]
