"""Loads the compiled core and says which devices it has kernels for."""

from __future__ import annotations

import torch

from .. import _C  # noqa: F401  (loading it registers torch.ops.fastnas.*)


def has_kernel(device: torch.device) -> bool:
    """True where fastnas has compiled kernels: always the CPU, CUDA when built with it."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and _C.with_cuda()


def build_info() -> dict:
    """Facts of this build: version, CUDA kernels compiled in, their arch list, torch versions."""
    return {
        "fastnas": _C.version(),
        "with_cuda": _C.with_cuda(),
        "cuda_arch_list": list(_C.cuda_arch_list()),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }


def reference_grads(reference, wrt: list[torch.Tensor], grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """Gradients of `reference()` w.r.t. `wrt` for the output gradient `grad`, with their own graph.

    For backward passes with create_graph=True (Hessian-vector products, e.g. DARTS's sharpness):
    the fused backward ops have no derivative of their own, so such a pass differentiates the
    plain-PyTorch reference instead, which autograd can differentiate again.
    """
    with torch.enable_grad():
        out = reference()
    return torch.autograd.grad(out, wrt, grad, create_graph=True, allow_unused=True)
