"""Student search spaces for distillation-aware search (Auto-DAS, DisWOT), behind one interface.

``get_space(name)`` returns a ``StudentSpace`` for "nb201", "resnet" or "pit". An
architecture is always a compact string; every space can sample one, check and
canonicalize one, build its network and count its cost:

    space = get_space("nb201")
    arch = space.sample(random.Random(0))
    model = space.build(arch, num_classes=10, in_channels=1)
    logits, features = model(x)   # [B, classes], [3 stage maps [B, C_i, H_i, W_i]]

Every network ends in its classifier, the last ``nn.Linear`` of the module
(fastnas.proxies.inputs reads the embedding there).
"""

from __future__ import annotations

import random

import torch.nn as nn

from ..nn.cost import count_flops, count_params
from . import nb201, pit, resnet


class StudentSpace:
    """A family of student networks addressed by compact architecture strings.

    Subclasses set ``name`` and ``options`` (the keyword options their ``build`` takes besides
    ``image_size``) and implement ``sample``, ``validate`` and ``build``.
    """

    name: str = ""
    options: tuple[str, ...] = ()

    def sample(self, rng: random.Random) -> str:
        """A random architecture (canonical string), drawn with `rng` only (deterministic in its seed)."""
        raise NotImplementedError

    def validate(self, arch: str) -> str:
        """The canonical string of `arch`; ValueError naming the problem if it is malformed or outside the space."""
        raise NotImplementedError

    def build(self, arch: str, num_classes: int = 10, in_channels: int = 3, **kw) -> nn.Module:
        """The network of `arch`: forward(x [B, in_channels, H, W]) -> (logits [B, num_classes], [stage maps]).

        ``kw`` are space options (C, N for nb201; patch_size for pit). Every space accepts
        ``image_size`` (H == W of the input; only pit's layout depends on it), so a caller can pass
        it without knowing the space; any other unknown option is a TypeError.
        """
        raise NotImplementedError

    def check_options(self, options: dict) -> dict:
        """`options` for ``build``, or a ValueError naming an option this space does not take."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"{unknown[0]}: the {self.name} space takes only the options "
                             f"{list(self.options) or 'none'}")
        return dict(options)

    def cost(self, arch: str, input_shape: tuple[int, int, int], num_classes: int = 10, **kw) -> dict:
        """{"params": int, "flops": int} of `arch` on one input of `input_shape` (C, H, W), FLOPs as MACs."""
        model = self.build(arch, num_classes, input_shape[0], image_size=input_shape[-1], **kw)
        return {"params": count_params(model), "flops": count_flops(model, tuple(input_shape))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class NB201Space(StudentSpace):
    """NAS-Bench-201 cells (see fastnas.search_spaces.nb201); options C (default 16) and N (default 5)."""

    name = "nb201"
    options = ("C", "N")

    def sample(self, rng: random.Random) -> str:
        return nb201.sample_arch(rng)

    def validate(self, arch: str) -> str:
        return nb201.format_arch(nb201.parse_arch(arch))

    def build(self, arch: str, num_classes: int = 10, in_channels: int = 3, C: int = 16, N: int = 5,
              image_size: int | None = None) -> nn.Module:
        return nb201.build(arch, C=C, N=N, num_classes=num_classes, in_channels=in_channels)


class ResNetSpace(StudentSpace):
    """CIFAR ResNets with a depth and a width per stage (see fastnas.search_spaces.resnet)."""

    name = "resnet"

    def sample(self, rng: random.Random) -> str:
        return resnet.sample_arch(rng)

    def validate(self, arch: str) -> str:
        return resnet.format_arch(resnet.parse_arch(arch))

    def build(self, arch: str, num_classes: int = 10, in_channels: int = 3,
              image_size: int | None = None) -> nn.Module:
        return resnet.build(arch, num_classes=num_classes, in_channels=in_channels)


class PiTSpace(StudentSpace):
    """Pooling-based vision transformers (see fastnas.search_spaces.pit); options image_size, patch_size."""

    name = "pit"
    options = ("patch_size",)

    def sample(self, rng: random.Random) -> str:
        return pit.sample_arch(rng)

    def validate(self, arch: str) -> str:
        return pit.format_arch(pit.parse_arch(arch))

    def build(self, arch: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
              patch_size: int | None = None) -> nn.Module:
        return pit.build(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                         patch_size=patch_size)


SPACES: dict[str, type[StudentSpace]] = {"nb201": NB201Space, "resnet": ResNetSpace, "pit": PiTSpace}


def get_space(name: str) -> StudentSpace:
    """The student space called `name` ("nb201", "resnet" or "pit")."""
    if name not in SPACES:
        raise ValueError(f"space: expected one of {', '.join(SPACES)}, got {name!r}")
    return SPACES[name]()
