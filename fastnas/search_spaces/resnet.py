"""The ResNet-like student space of DisWOT / Auto-DAS: a depth and a width per stage.

A CIFAR ResNet (He et al.) with three stages of basic blocks at strides 1, 2, 2.
Auto-DAS's "cifar-ResNet" space gives each stage 1, 3, 5 or 7 blocks; we also let
each stage choose its width among four (half, 1x, 1.5x and 2x of ResNet20's
16 / 32 / 64; our choice, to cover the width dimension of the NDS-ResNet space):
4^6 = 4096 architectures.

Architecture string: ``DxW`` per stage, joined by ``-``, e.g. ``3x16-3x32-3x64`` is
ResNet20 and ``7x16-7x32-7x64`` is ResNet44.
"""

from __future__ import annotations

import random

import torch
import torch.nn as nn

from ..distill.teachers import BasicBlock
from ..nn.stages import run_stages

DEPTHS = (1, 3, 5, 7)
WIDTHS = ((8, 16, 24, 32), (16, 32, 48, 64), (32, 64, 96, 128))  # choices of stage 1, 2, 3
STRIDES = (1, 2, 2)

# ((depth, width) of each stage)
Stages = tuple[tuple[int, int], ...]


def parse_arch(arch: str) -> Stages:
    """The (depth, width) of each stage of `arch`; ValueError naming the problem for a malformed string."""
    if not isinstance(arch, str):
        raise ValueError(f"arch: expected a ResNet string such as '3x16-3x32-3x64', got {type(arch).__name__}")
    parts = arch.strip().split("-")
    if len(parts) != len(WIDTHS):
        raise ValueError(f"arch: expected {len(WIDTHS)} stages 'DxW' joined by '-', got {len(parts)} in {arch!r}")
    stages = []
    for i, part in enumerate(parts):
        depth, sep, width = part.partition("x")
        if not sep or not depth.isdigit() or not width.isdigit():
            raise ValueError(f"arch: stage {i + 1} must be 'DEPTHxWIDTH' with integers, got {part!r}")
        if int(depth) not in DEPTHS:
            raise ValueError(f"arch: stage {i + 1} depth must be one of {DEPTHS}, got {int(depth)}")
        if int(width) not in WIDTHS[i]:
            raise ValueError(f"arch: stage {i + 1} width must be one of {WIDTHS[i]}, got {int(width)}")
        stages.append((int(depth), int(width)))
    return tuple(stages)


def format_arch(stages: Stages) -> str:
    return "-".join(f"{depth}x{width}" for depth, width in stages)


def sample_arch(rng: random.Random) -> str:
    """A uniformly random architecture (depth and width of each stage independent)."""
    return format_arch(tuple((rng.choice(DEPTHS), rng.choice(widths)) for widths in WIDTHS))


class ResNetStudent(nn.Module):
    """CIFAR ResNet: 3x3 conv + BN + ReLU stem at the first stage's width, three stages of
    post-activation basic blocks (1x1 conv shortcut where the shape changes), global pooling, linear.

    forward(x [B, in_channels, H, W]) -> (logits [B, num_classes],
    [f1 [B, w1, H, W], f2 [B, w2, H/2, W/2], f3 [B, w3, H/4, W/4]]), the stage outputs.
    """

    def __init__(self, stages: Stages, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        channels = stages[0][1]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())
        blocks = []
        for (depth, width), stride in zip(stages, STRIDES):
            blocks.append(nn.Sequential(*(BasicBlock(channels if i == 0 else width, width, stride if i == 0 else 1)
                                          for i in range(depth))))
            channels = width
        self.stages = nn.ModuleList(blocks)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out, features = run_stages(self.stem, self.stages, x)
        return self.classifier(out.mean(dim=(2, 3))), features


def build(arch: str, num_classes: int = 10, in_channels: int = 3) -> ResNetStudent:
    """The network of ResNet architecture string `arch`."""
    return ResNetStudent(parse_arch(arch), num_classes, in_channels)
