"""Shared test set-up: devices to run on and the hypothesis profile."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import fastnas

settings.register_profile(
    "fastnas", max_examples=int(os.environ.get("FASTNAS_FUZZ_EXAMPLES", "200")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("fastnas")

CUDA_OK = torch.cuda.is_available() and fastnas.build_info()["with_cuda"]
requires_cuda = pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU and a CUDA build of fastnas")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as x in a non-contiguous layout (a strided view of a larger buffer)."""
    if x.numel() == 0 or x.dim() == 0:
        return x
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    view = wide[..., ::2]
    view.copy_(x)
    return view.requires_grad_(x.requires_grad)
