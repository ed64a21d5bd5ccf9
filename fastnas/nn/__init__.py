"""Super-network building blocks on the fused core."""

from .mixed import MixedNode

__all__ = ["MixedNode"]
