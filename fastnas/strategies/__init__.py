"""Search strategies: DNAD's progressive shrinking, DARTS / SD-DARTS, Auto-DAS's proxy evolution."""

from .autodas import ProxySearch, ProxySearchConfig
from .dnad import DNADConfig, DNADSearch
from .sddarts import SDDARTSConfig, SDDARTSSearch
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

__all__ = ["DNADConfig", "DNADSearch", "ProgressiveShrinking", "ProxySearch", "ProxySearchConfig", "SDDARTSConfig",
           "SDDARTSSearch", "SNPSConfig", "sparsity_entropy"]
