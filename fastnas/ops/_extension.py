"""Loads the compiled core and says which devices it has kernels for."""

from __future__ import annotations

import re
import warnings
from typing import Sequence

import torch

from .. import _C  # noqa: F401  (loading it registers torch.ops.fastnas.*)

# Read once: torch.compile cannot trace into a pybind11 function, but folds these constants.
WITH_CUDA: bool = _C.with_cuda()
CUDA_ARCH_LIST: tuple[str, ...] = tuple(_C.cuda_arch_list())

_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")
_KERNEL_IMAGE: dict[torch.device, bool] = {}  # CUDA device -> the build holds code that runs there


def runs_on(arch_list: Sequence[str], capability: tuple[int, int]) -> bool:
    """Whether CUDA code built for arch_list (TORCH_CUDA_ARCH_LIST entries) runs on a GPU of that capability.

    Machine code of X.Y (and family code X.Yf) runs on X.Z for Z >= Y; PTX of X.Y is compiled by the
    driver for any newer GPU; arch-specific code (X.Ya, e.g. 9.0a) runs on X.Y alone (CUDA C++
    Programming Guide, "Binary Compatibility", "PTX Compatibility", "Feature Set Compiler Targets").
    """
    for entry in arch_list:
        match = _ARCH.fullmatch(entry)
        if match is None:
            raise ValueError(f"arch_list: expected entries like '8.0', '9.0+PTX' or '9.0a', got {entry!r}")
        arch = (int(match.group(1)), int(match.group(2)))
        if match.group(3) == "a":
            covered = arch == capability
        elif match.group(4):
            covered = arch <= capability
        else:
            covered = arch[0] == capability[0] and arch[1] <= capability[1]
        if covered:
            return True
    return False


@torch.compiler.assume_constant_result
def _check_kernel_image(device: torch.device) -> bool:
    properties = torch.cuda.get_device_properties(device)
    capability = (properties.major, properties.minor)
    if runs_on(CUDA_ARCH_LIST, capability):
        return True
    warnings.warn(
        f"fastnas: the CUDA kernels were built for TORCH_CUDA_ARCH_LIST={';'.join(CUDA_ARCH_LIST)}, which holds no "
        f"code for {device} ({properties.name}, compute capability {capability[0]}.{capability[1]}): the ops "
        f"run the plain-PyTorch reference there (slower). To use the kernels, rebuild with "
        f"TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]} pip install --no-build-isolation -e . "
        f"(or leave it unset on that machine: the build then targets its GPUs)", RuntimeWarning, stacklevel=2)
    return False


def has_kernel(device: torch.device) -> bool:
    """True where fastnas has compiled kernels: always the CPU; a CUDA GPU when built with CUDA code for it.

    A GPU the build holds no code for (an architecture left out of TORCH_CUDA_ARCH_LIST) gets the
    reference ops and one warning, instead of "no kernel image is available" at the first launch.
    """
    if device.type == "cpu":
        return True
    if device.type != "cuda" or not WITH_CUDA:
        return False
    if device not in _KERNEL_IMAGE:
        _KERNEL_IMAGE[device] = _check_kernel_image(device)
    return _KERNEL_IMAGE[device]


def build_info() -> dict:
    """Facts of this build: version, CUDA kernels compiled in, their arch list, torch versions."""
    return {
        "fastnas": _C.version(),
        "with_cuda": WITH_CUDA,
        "cuda_arch_list": list(CUDA_ARCH_LIST),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }


def reference_grads(reference, inputs: list[torch.Tensor], grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Gradients of `reference(*inputs)` w.r.t. `inputs` for the output gradient `grad`, with their own graph.

    For backward passes with create_graph=True (Hessian-vector products, e.g. DARTS's sharpness):
    the fused backward ops have no derivative of their own, so such a pass differentiates the
    plain-PyTorch reference instead, which autograd can differentiate again. The reference runs on
    aliases of the inputs: when one input is computed from another (a skip connection hands a node's
    value on as an operator output), the gradient must be the partial derivative of this op alone.
    """
    with torch.enable_grad():
        aliases = [t.view_as(t) if t.requires_grad else t for t in inputs]
        out = reference(*aliases)
    needed = [a for a in aliases if a.requires_grad]
    grads = iter(torch.autograd.grad(out, needed, grad, create_graph=True, allow_unused=True) if needed else ())
    return tuple(next(grads) if a.requires_grad else None for a in aliases)
