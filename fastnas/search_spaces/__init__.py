"""Search spaces: the DARTS/DNAD cell space and the student spaces of Auto-DAS (NAS-Bench-201, ResNet, PiT)."""

from .darts import DiscreteNetwork, Genotype, SuperNetwork
from ..nn.darts_ops import DARTS_PRIMITIVES
from .students import SPACES, StudentSpace, get_space

__all__ = ["DARTS_PRIMITIVES", "SPACES", "DiscreteNetwork", "Genotype", "StudentSpace", "SuperNetwork", "get_space"]
