"""Search strategies: DNAD's progressive shrinking (more to come: DARTS, SD-DARTS, Auto-DAS)."""

from .dnad import DNADConfig, DNADSearch
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

__all__ = ["DNADConfig", "DNADSearch", "ProgressiveShrinking", "SNPSConfig", "sparsity_entropy"]
