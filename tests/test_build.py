"""Build facts: the pybind11 module, CUDA compiled in wherever a toolkit was found."""

import os
import shutil

import torch

import fastnas
from fastnas import _C

EXPECTED_OPS = ["mixed_node", "at_loss", "rank_corr", "foreach_reduce", "pair_distance", "gram_distance"]


def test_build_info_reports_versions():
    info = fastnas.build_info()
    assert info["fastnas"] == fastnas.__version__ == _C.version()
    assert info["torch"] == torch.__version__
    assert info["with_cuda"] == _C.with_cuda()


def test_cuda_kernels_compiled_when_toolkit_present():
    # CI has no GPU but has nvcc and a CUDA build of torch: the CUDA code must still compile and link.
    wants_cuda = os.environ.get("FASTNAS_CUDA", "auto") != "0"
    if shutil.which("nvcc") and torch.version.cuda and wants_cuda:
        assert _C.with_cuda()
        assert len(_C.cuda_arch_list()) >= 1
    if not _C.with_cuda():
        assert _C.cuda_arch_list() == []


def test_every_op_is_a_dispatcher_op_with_cpu_kernel():
    for name in EXPECTED_OPS:
        op = getattr(torch.ops.fastnas, name)
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.default.name(), "CPU"), name
        if _C.with_cuda():
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op.default.name(), "CUDA"), name
