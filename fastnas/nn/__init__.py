"""Super-network building blocks on the fused core."""

from .mixed import MixedNode
from .mixed_op import MixedOp, darts_node

__all__ = ["MixedNode", "MixedOp", "darts_node"]
