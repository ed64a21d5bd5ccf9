"""Search strategies: DNAD's progressive shrinking, Auto-DAS's proxy evolution (more to come: DARTS, SD-DARTS)."""

from .autodas import ProxySearch, ProxySearchConfig
from .dnad import DNADConfig, DNADSearch
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

__all__ = ["DNADConfig", "DNADSearch", "ProgressiveShrinking", "ProxySearch", "ProxySearchConfig", "SNPSConfig",
           "sparsity_entropy"]
