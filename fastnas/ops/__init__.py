"""Public fused ops of fastnas; each is also torch.ops.fastnas.<name>.

Every op has a C++ kernel for the CPU and a CUDA kernel (when built with CUDA;
depthwise_conv2d's is cuDNN's through aten),
a fake (meta) kernel for torch.compile, autograd whose backward is another
fused op, and a plain-PyTorch reference in ``fastnas.ops._reference`` that
is used on devices without a compiled kernel.
"""

from ._extension import build_info, has_kernel
from .at_loss import at_loss
from .chunk_sum import chunk_sum
from .depthwise_conv2d import depthwise_conv2d, depthwise_conv2d_backward
from .foreach_reduce import clip_grad_norm_, foreach_reduce
from .mixed_node import mixed_node
from .pair_distance import gram_distance, pair_distance
from .rank_corr import rank_corr

__all__ = ["at_loss", "build_info", "chunk_sum", "clip_grad_norm_", "depthwise_conv2d",
           "depthwise_conv2d_backward", "foreach_reduce", "gram_distance", "has_kernel",
           "mixed_node", "pair_distance", "rank_corr"]
