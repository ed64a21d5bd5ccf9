"""Image data for every search and training command: reading, normalizing, splitting, batching.

``datasets`` reads a data spec (digits, cifar10:PATH, ...) into memory; ``batching``
draws deterministic, resumable batches from a split.
"""

from .batching import batches, num_batches
from .datasets import CIFAR, SPEC_HELP, Dataset, ImageData, load_data, split

__all__ = ["CIFAR", "SPEC_HELP", "Dataset", "ImageData", "batches", "load_data", "num_batches", "split"]
