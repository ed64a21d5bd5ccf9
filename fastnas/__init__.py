"""fastnas: neural architecture search with knowledge distillation on a fused C++/CUDA core."""

from . import ops
from .ops._extension import build_info

__version__ = "0.1.0"
__all__ = ["ops", "build_info", "__version__"]
