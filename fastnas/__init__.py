"""fastnas: neural architecture search with knowledge distillation on a fused C++/CUDA core."""

import os

import torch

from . import ops
from .ops._extension import build_info

__version__ = "0.1.0"
__all__ = ["ops", "build_info", "default_threads", "__version__"]


def default_threads() -> int:
    """The command line's CPU threads: OMP_NUM_THREADS when it is set, else one (fastnas's choice). Returns it.

    torch's default is one intra-op thread per core. A search step on small images (the digits default)
    is dispatch-bound: thousands of tiny operator calls, each OpenMP-parallel one ending in a barrier
    that waits for every thread. Beside another busy process one of the threads is often descheduled
    and every barrier waits for it (a 10-60x slower DNAD step was reported on 2 shared cores); one
    thread has no barrier. bench/bench_shared_cores.py measures 1 and 2 threads, alone and shared.
    Set OMP_NUM_THREADS to the number of cores for large inputs on a machine of your own
    (docs/troubleshooting.md, "Threads").
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    return torch.get_num_threads()
