"""Search strategies: DNAD's progressive shrinking (more to come: DARTS, SD-DARTS, Auto-DAS)."""

from .autodas import ProxySearch, ProxySearchConfig
from .dnad import DNADConfig, DNADSearch
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

__all__ = ["DNADConfig", "DNADSearch", "ProgressiveShrinking", "ProxySearch", "ProxySearchConfig", "SNPSConfig",
           "sparsity_entropy"]
