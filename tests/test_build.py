"""Build facts: the pybind11 module, CUDA compiled in wherever a toolkit was found, kernels for every op."""

import importlib.util
import os
import re
import shutil
import types
import warnings
from pathlib import Path

import pytest
import torch

import fastnas
from fastnas import _C
from fastnas.ops import _extension
from fastnas.ops._extension import runs_on

ROOT = Path(__file__).resolve().parents[1]
# Every op declared in the one schema file, forward and *_backward alike.
SCHEMA_OPS = re.findall(r'm\.def\("(\w+)\(', (ROOT / "csrc" / "registration.cpp").read_text())


def load_setup_py() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("fastnas_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the build's functions; setup() runs only as __main__
    return module


def test_build_info_reports_versions():
    info = fastnas.build_info()
    assert info["fastnas"] == fastnas.__version__ == _C.version()
    assert info["torch"] == torch.__version__
    assert info["with_cuda"] == _C.with_cuda()
    assert info["cuda_arch_list"] == list(_C.cuda_arch_list())


def test_cuda_kernels_compiled_when_toolkit_present():
    # CI has no GPU but has nvcc and a CUDA build of torch: the CUDA code must still compile and link.
    wants_cuda = os.environ.get("FASTNAS_CUDA", "auto") != "0"
    if shutil.which("nvcc") and torch.version.cuda and wants_cuda:
        assert _C.with_cuda()
        assert len(_C.cuda_arch_list()) >= 1
    if not _C.with_cuda():
        assert _C.cuda_arch_list() == []


@pytest.mark.skipif(not (torch.cuda.is_available() and _C.with_cuda()), reason="needs a CUDA GPU and a CUDA build")
def test_recorded_cuda_arch_list_runs_on_every_visible_gpu():
    # Built on a machine with GPUs and no TORCH_CUDA_ARCH_LIST, the list comes from those GPUs and is recorded.
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        assert runs_on(_C.cuda_arch_list(), capability), (index, capability, _C.cuda_arch_list())
        assert fastnas.ops.has_kernel(torch.device("cuda", index))


def test_schema_lists_forward_and_backward_ops():
    forward_and_backward = ["mixed_node", "chunk_sum", "depthwise_conv2d", "at_loss", "foreach_reduce",
                            "pair_distance", "gram_distance"]
    for name in forward_and_backward + ["rank_corr"]:
        assert name in SCHEMA_OPS
    for name in forward_and_backward:  # rank_corr: none
        assert f"{name}_backward" in SCHEMA_OPS
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("fastnas::")}
    assert registered == set(SCHEMA_OPS)


@pytest.mark.parametrize("name", SCHEMA_OPS)
def test_every_op_has_cpu_kernel_and_cuda_kernel_when_built_with_cuda(name):
    qualified = getattr(torch.ops.fastnas, name).default.name()
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA") == _C.with_cuda()


@pytest.mark.parametrize("arch_list, capability, expected", [
    (["8.0", "9.0"], (8, 0), True),
    (["8.0", "9.0"], (8, 6), True),       # machine code of 8.0 runs on 8.x, x >= 0
    (["8.6"], (8, 0), False),             # ... not on an older minor
    (["8.0", "9.0"], (10, 0), False),     # ... nor on another major: the case of the old default
    (["8.0", "9.0+PTX"], (10, 0), True),  # PTX is compiled by the driver for newer GPUs
    (["8.0", "9.0+PTX"], (12, 0), True),
    (["8.0", "9.0+PTX"], (7, 5), False),  # ... not for older ones
    (["9.0a"], (9, 0), True),             # arch-specific code: that GPU alone
    (["9.0a+PTX"], (10, 0), False),
    (["10.0f"], (10, 3), True),           # family code: the major's later minors
    ([], (9, 0), False),
])
def test_runs_on(arch_list, capability, expected):
    assert runs_on(arch_list, capability) is expected


def test_runs_on_rejects_unknown_entries():
    with pytest.raises(ValueError, match="arch_list: expected entries like '8.0'.*got 'Hopper'"):
        runs_on(["Hopper"], (9, 0))


@pytest.mark.parametrize("requested, compiled", [
    ("8.0;9.0+PTX", "8.0;9.0+PTX"),
    ("Hopper", "9.0+PTX"),         # named lists are recorded as what was compiled
    ("8.6 9.0a", "8.6;9.0a"),      # spaces separate entries too
    ("10.0;7.5+PTX", "7.5+PTX;10.0"),
])
def test_setup_records_the_architectures_torch_compiles_for(monkeypatch, requested, compiled):
    setup_py = load_setup_py()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", requested)
    assert setup_py.compiled_arch_list() == compiled


def test_gpu_less_default_covers_newer_gpus_through_ptx(monkeypatch):
    setup_py = load_setup_py()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", setup_py.DEFAULT_ARCH_LIST)
    recorded = setup_py.compiled_arch_list().split(";")
    for capability in [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)]:
        assert runs_on(recorded, capability), capability


class FakeGPU:
    def __init__(self, capability, name="Fake GPU"):
        self.major, self.minor = capability
        self.name = name

    def __call__(self, device):
        return self


@pytest.fixture
def fake_cuda_build(monkeypatch):
    """A CUDA build for 8.0;9.0+PTX seen from has_kernel, with the GPU's properties to be faked per test."""
    monkeypatch.setattr(_extension, "WITH_CUDA", True)
    monkeypatch.setattr(_extension, "CUDA_ARCH_LIST", ("8.0", "9.0+PTX"))
    monkeypatch.setattr(_extension, "_KERNEL_IMAGE", {})


def test_gpu_without_code_in_the_build_falls_back_with_one_warning(fake_cuda_build, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", FakeGPU((7, 5), "Tesla T4"))
    device = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match=r"no code for cuda:0 \(Tesla T4, compute capability 7\.5\).*"
                                            r"rebuild with TORCH_CUDA_ARCH_LIST=7\.5 pip install"):
        assert not _extension.has_kernel(device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _extension.has_kernel(device)  # decided once per device: no second warning


def test_gpu_covered_by_ptx_uses_the_kernels(fake_cuda_build, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", FakeGPU((10, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _extension.has_kernel(torch.device("cuda", 1))


def test_has_kernel_compiles_without_graph_break(fake_cuda_build, monkeypatch):
    # The ops call has_kernel inside torch.compile(fullgraph=True) regions: no pybind11 call may be traced.
    monkeypatch.setattr(torch.cuda, "get_device_properties", FakeGPU((9, 0)))
    torch._dynamo.reset()

    def pick(x):
        return x + 1 if _extension.has_kernel(torch.device("cuda", 0)) else x - 1
    assert torch.compile(pick, fullgraph=True, backend="eager")(torch.zeros(2)).tolist() == [1.0, 1.0]
    torch._dynamo.reset()

