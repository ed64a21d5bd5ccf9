"""A pooling-based vision transformer student space (PiT, Heo et al. 2021), as Auto-DAS's ViT-Bench samples.

Three stages of pre-norm transformer blocks; each stage chooses its depth, embedding
dimension, number of heads and MLP ratio. Between stages a PiT pooling layer (a
3x3 stride-2 grouped convolution on the token grid, kernel stride + 1 and padding
stride // 2 as in PiT) halves the grid and changes the width. PiT's pooling conv is
depthwise because its widths double; our widths are free, so the conv uses
gcd(C_in, C_out) groups, which is PiT's depthwise conv whenever C_out is a multiple
of C_in. Our choice: global average pooling of the tokens feeds the classifier
instead of PiT's class token, so every token is part of a stage feature map.

Architecture string: ``dDeEhHrR`` per stage joined by ``-``, e.g.
``d2e32h2r2-d2e64h4r2-d2e128h4r4`` (depth 2, width 32, 2 heads, MLP ratio 2, ...).
Choices: depth 1-3, widths (16, 24, 32) / (32, 48, 64) / (64, 96, 128) by stage,
heads 1, 2, 4, MLP ratio 1, 2, 4: 3^12 = 531441 architectures (a CPU-sized
version of PiT-Tiny's 2 / 6 / 4 blocks at 64 / 128 / 256 with MLP ratio 4).
"""

from __future__ import annotations

import math
import random
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = (1, 2, 3)
WIDTHS = ((16, 24, 32), (32, 48, 64), (64, 96, 128))  # choices of stage 1, 2, 3
HEADS = (1, 2, 4)
MLP_RATIOS = (1, 2, 4)
STAGE_PATTERN = re.compile(r"d(\d+)e(\d+)h(\d+)r(\d+)")

# (depth, width, heads, mlp_ratio) of each stage
Stages = tuple[tuple[int, int, int, int], ...]


def parse_arch(arch: str) -> Stages:
    """The (depth, width, heads, mlp ratio) of each stage of `arch`; ValueError naming the problem."""
    if not isinstance(arch, str):
        raise ValueError(f"arch: expected a PiT string such as 'd2e32h2r2-d2e64h4r2-d2e128h4r4', "
                         f"got {type(arch).__name__}")
    parts = arch.strip().split("-")
    if len(parts) != len(WIDTHS):
        raise ValueError(f"arch: expected {len(WIDTHS)} stages 'dDeEhHrR' joined by '-', got {len(parts)} in {arch!r}")
    stages = []
    for i, part in enumerate(parts):
        match = STAGE_PATTERN.fullmatch(part)
        if match is None:
            raise ValueError(f"arch: stage {i + 1} must be 'd<depth>e<width>h<heads>r<mlp ratio>', got {part!r}")
        depth, width, heads, ratio = (int(g) for g in match.groups())
        for what, value, choices in (("depth", depth, DEPTHS), ("width", width, WIDTHS[i]),
                                     ("heads", heads, HEADS), ("mlp ratio", ratio, MLP_RATIOS)):
            if value not in choices:
                raise ValueError(f"arch: stage {i + 1} {what} must be one of {choices}, got {value}")
        stages.append((depth, width, heads, ratio))
    return tuple(stages)


def format_arch(stages: Stages) -> str:
    return "-".join(f"d{d}e{e}h{h}r{r}" for d, e, h, r in stages)


def sample_arch(rng: random.Random) -> str:
    """A uniformly random architecture (every choice of every stage independent)."""
    return format_arch(tuple((rng.choice(DEPTHS), rng.choice(widths), rng.choice(HEADS), rng.choice(MLP_RATIOS))
                             for widths in WIDTHS))


def default_patch_size(image_size: int) -> int:
    """2 below 16 pixels (digits 8x8 -> a 4x4 grid), else an 8x8 grid (32x32 -> patch 4)."""
    return 2 if image_size < 16 else image_size // 8


class Attention(nn.Module):
    """Multi-head self-attention on tokens [B, N, C] -> [B, N, C] (qkv and output projections are nn.Linear)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, C / heads]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width ratio * dim."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PiTStudent(nn.Module):
    """Patch embedding (conv, kernel = stride = patch_size) + learned position embedding, three stages of
    transformer blocks with PiT pooling between them, LayerNorm, token average, linear classifier.

    forward(x [B, in_channels, H, W]) -> (logits [B, num_classes], [f1 [B, e1, G, G],
    f2 [B, e2, ceil(G/2), ...], f3 [B, e3, ceil(G/4), ...]]) with G = H / patch_size: the
    tokens at the end of each stage laid out as maps. The position embedding is made for
    `image_size`; another input size interpolates it (bilinear) to the actual grid.
    """

    def __init__(self, stages: Stages, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 patch_size: int | None = None):
        super().__init__()
        patch_size = default_patch_size(image_size) if patch_size is None else patch_size
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels),
                            ("image_size", image_size), ("patch_size", patch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if patch_size > image_size:
            raise ValueError(f"patch_size: {patch_size} is larger than image_size {image_size}")
        width = stages[0][1]
        grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, width, grid, grid) * 0.02)
        self.pools = nn.ModuleList()
        self.stages = nn.ModuleList()
        for i, (depth, dim, heads, ratio) in enumerate(stages):
            if i > 0:
                self.pools.append(nn.Conv2d(width, dim, 3, stride=2, padding=1, groups=math.gcd(width, dim)))
            self.stages.append(nn.Sequential(*(TransformerBlock(dim, heads, ratio) for _ in range(depth))))
            width = dim
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, num_classes)  # registered last: the last nn.Linear of the module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.patch_embed(x)  # [B, e1, G, G]
        pos = self.pos_embed
        if pos.shape[-2:] != out.shape[-2:]:
            pos = F.interpolate(pos, size=out.shape[-2:], mode="bilinear", align_corners=False)
        out = out + pos
        features = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                out = self.pools[i - 1](out)
            b, c, h, w = out.shape
            tokens = stage(out.flatten(2).transpose(1, 2))  # [B, h*w, c]
            out = tokens.transpose(1, 2).reshape(b, c, h, w)
            features.append(out)
        pooled = self.norm(out.flatten(2).transpose(1, 2)).mean(dim=1)
        return self.classifier(pooled), features


def build(arch: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
          patch_size: int | None = None) -> PiTStudent:
    """The network of PiT architecture string `arch` for inputs of `image_size` (default patch: see
    default_patch_size)."""
    return PiTStudent(parse_arch(arch), num_classes, in_channels, image_size, patch_size)
