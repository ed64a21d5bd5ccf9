"""The forward pass shared by the staged student networks: stem, then stages, keeping each stage's output."""

from __future__ import annotations

import torch
import torch.nn as nn


def run_stages(stem: nn.Module, stages: nn.ModuleList, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(the last stage's output, [every stage's output]) for an input x [B, C, H, W]."""
    features, out = [], stem(x)
    for stage in stages:
        out = stage(out)
        features.append(out)
    return out, features
