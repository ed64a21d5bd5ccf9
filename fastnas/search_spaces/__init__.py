"""Search spaces: the DARTS/DNAD cell space (more to come: NAS-Bench-201, ResNet-like, ViT-like)."""

from .darts import DiscreteNetwork, Genotype, SuperNetwork
from ..nn.darts_ops import DARTS_PRIMITIVES

__all__ = ["DARTS_PRIMITIVES", "DiscreteNetwork", "Genotype", "SuperNetwork"]
