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
