"""Search strategies: DNAD's progressive shrinking (more to come: DARTS, SD-DARTS, Auto-DAS)."""

from .dnad import DNADConfig, DNADSearch
from .sddarts import SDDARTSConfig, SDDARTSSearch
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

__all__ = ["DNADConfig", "DNADSearch", "ProgressiveShrinking", "SDDARTSConfig", "SDDARTSSearch", "SNPSConfig",
           "sparsity_entropy"]
