"""Search spaces: the DARTS/DNAD cell space and the student spaces of Auto-DAS (NAS-Bench-201, ResNet, PiT)."""

from .darts import Genotype, SuperNetwork
from .darts_eval import DiscreteNetwork, NetworkCIFAR, NetworkImageNet, reference_param_count
from .genotypes import GENOTYPES, load_genotype
from ..nn.darts_ops import DARTS_PRIMITIVES
from .students import SPACES, StudentSpace, get_space

__all__ = ["DARTS_PRIMITIVES", "GENOTYPES", "SPACES", "DiscreteNetwork", "Genotype", "NetworkCIFAR",
           "NetworkImageNet", "StudentSpace", "SuperNetwork", "get_space", "load_genotype", "reference_param_count"]
