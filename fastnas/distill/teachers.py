"""Teacher networks for distillation: a frozen wrapper, a small built-in ResNet, and loaders.

A teacher is any module returning ``(logits [B, classes], [f1, f2, f3])`` with
the features at the ends of its three stages. ``load_teacher`` turns a spec
string into a frozen ``Teacher``:

- ``builtin``: a ``TeacherResNet`` trained on the dataset once, then cached;
- ``checkpoint:PATH``: a network saved with ``save_teacher_checkpoint``: a
  ``TeacherResNet`` or any network class registered with ``register_teacher_arch``
  (the DARTS evaluation networks of fastnas.search_spaces.darts_eval, so a genotype
  retrained by ``fastnas train`` teaches: the DNAD authors' CIFAR teacher is such a
  network, C = 36, loaded whole by RaoXuan-1998/NADD train_search_cifar.py);
- ``torchscript:PATH``: any scripted/traced module with the return form above;
- ``torchvision:NAME:WEIGHTS.pt``: a torchvision ResNet with weights from a local
  file, features taken by forward hooks from the deepest three consecutive of
  layer1..layer4 whose maps are at least 2x2 for the dataset's images (layer2-4
  at 224x224, layer1-3 at 32x32, where layer4's map is 1x1: the attention map of
  a 1x1 map is constant and its AT term always 0).

The loaded ``Teacher`` carries the test accuracy recorded with it (``test_accuracy``,
None when unknown) and ``summary()``, what a run records about its teacher.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..runs import CHECKPOINT_MARK, atomic_write_bytes

log = logging.getLogger(__name__)

TEACHER_SPECS = ("builtin", "checkpoint:PATH", "torchscript:PATH", "torchvision:NAME:WEIGHTS.pt")
CHECKPOINT_FORMAT = "fastnas.teacher/2"
LEGACY_CHECKPOINT_FORMAT = "fastnas.TeacherResNet/1"  # a TeacherResNet without "arch": cached built-in teachers
# Epochs of the built-in teacher: ~99% test accuracy on digits (1347 train images) in ~5 s on 2 CPU cores.
BUILTIN_EPOCHS = 15
# The built-in recipe; part of the cache key, so changing it retrains instead of reusing a stale file.
BUILTIN_RECIPE = {"widths": [32, 64, 128], "blocks": 2, "lr": 0.05, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 5e-4, "batch_size": 128}
STAGES = 3
# The layers of a torchvision ResNet among which its three stage features are chosen (see _feature_layers).
TORCHVISION_LAYERS = ("layer1", "layer2", "layer3", "layer4")
# Networks a teacher checkpoint may hold: "arch" name -> the class (with config() and from_config(config)).
TEACHER_ARCHS: dict[str, type] = {}


def register_teacher_arch(name: str) -> Callable[[type], type]:
    """Class decorator: `save_teacher_checkpoint` saves instances of the class under `name`, and
    ``checkpoint:PATH`` rebuilds them. The class needs ``config()`` (its constructor arguments in JSON types)
    and a classmethod ``from_config(config)``. The checkpoint also records the class's module, which the
    loader imports when the name is not registered yet (only modules of fastnas)."""
    def register(cls: type) -> type:
        if TEACHER_ARCHS.get(name, cls) is not cls:
            raise ValueError(f"register_teacher_arch: {name!r} is already {TEACHER_ARCHS[name].__qualname__}")
        TEACHER_ARCHS[name] = cls
        cls.teacher_arch = name
        return cls
    return register


# --------------------------------------------------------------------------- networks

class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, post-activation): [B, C_in, H, W] -> [B, C_out, H/stride, W/stride]."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_teacher_arch("TeacherResNet")
class TeacherResNet(nn.Module):
    """A small ResNet whose stages line up with a DARTS super-network's.

    3x3 conv stem at full resolution, three stages of ``blocks`` basic blocks with
    strides (1, 2, 2) and ``widths`` channels, global average pooling, linear.
    For an input [B, in_channels, H, W], forward returns
    (logits [B, num_classes], [f1 [B, w1, H, W], f2 [B, w2, H/2, W/2], f3 [B, w3, H/4, W/4]]),
    the resolutions of a DARTS network with reductions at n/3 and 2n/3.
    TorchScript-compatible (``torch.jit.script``).
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 128), blocks: int = 2):
        super().__init__()
        if len(widths) != STAGES:
            raise ValueError(f"widths: expected {STAGES} stage widths, got {list(widths)}")
        if blocks < 1:
            raise ValueError(f"blocks: expected at least 1 block per stage, got {blocks}")
        self.in_channels, self.num_classes, self.blocks = int(in_channels), int(num_classes), int(blocks)
        self.stage_channels = [int(w) for w in widths]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, channels = [], widths[0]
        for width, stride in zip(widths, (1, 2, 2)):
            layers = [BasicBlock(channels if i == 0 else width, width, stride if i == 0 else 1) for i in range(blocks)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        out = self.stem(x)
        features: List[torch.Tensor] = []
        for stage in self.stages:
            out = stage(out)
            features.append(out)
        logits = self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))
        return logits, features

    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the network for a saved state dict."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes,
                "widths": list(self.stage_channels), "blocks": self.blocks}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TeacherResNet":
        return cls(**config)


class _HookedFeatures(nn.Module):
    """Adapts a plain classifier: forward(x) -> (its logits, outputs of ``layers`` captured by forward hooks)."""

    def __init__(self, model: nn.Module, layers: Sequence[str]):
        super().__init__()
        self.model = model
        self.layers = list(layers)
        self._captured: dict[str, torch.Tensor] = {}
        for name in self.layers:
            model.get_submodule(name).register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def capture(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._captured[name] = output
        return capture

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._captured.clear()
        logits = self.model(x)
        features = [self._captured.pop(name) for name in self.layers]
        return logits, features


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return type(value).__name__


class Teacher(nn.Module):
    """A frozen teacher: forward(x [B, C, H, W]) -> (logits [B, classes], [3 maps [B, C_i, H_i, W_i]]).

    Always in eval mode (``train()`` is a no-op: BN statistics and dropout of a
    fixed target must not change), parameters frozen, forward under no_grad.
    One probe forward on zeros of ``input_shape`` (C, H, W) at construction
    validates the model's return form and records ``stage_shapes`` [(C_i, H_i, W_i)],
    ``stage_channels`` [C_i] and ``num_classes`` for that input size.
    ``test_accuracy`` (in [0, 1], or None when unknown) and ``info`` (JSON facts:
    the spec, the network) come from the loader; ``summary()`` puts them together.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], test_accuracy: float | None = None,
                 info: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.test_accuracy = None if test_accuracy is None else float(test_accuracy)
        self.info = dict(info or {})
        self.input_shape = tuple(int(d) for d in input_shape)
        self.requires_grad_(False)
        self.eval()
        reference = next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0)))
        logits, features = self(torch.zeros(1, *self.input_shape, device=reference.device, dtype=reference.dtype))
        self.num_classes = logits.shape[1]
        self.stage_shapes = [tuple(f.shape[1:]) for f in features]
        self.stage_channels = [shape[0] for shape in self.stage_shapes]

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)

    def summary(self) -> dict[str, Any]:
        """What a run records about its teacher (config.json): info, test_accuracy, stage_shapes, num_classes."""
        return {**self.info, "test_accuracy": self.test_accuracy,
                "stage_shapes": [list(shape) for shape in self.stage_shapes], "num_classes": self.num_classes}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        output = self.model(x)
        valid = (isinstance(output, (tuple, list)) and len(output) == 2
                 and isinstance(output[0], torch.Tensor) and output[0].dim() == 2
                 and isinstance(output[1], (tuple, list)) and len(output[1]) == STAGES
                 and all(isinstance(f, torch.Tensor) and f.dim() == 4 for f in output[1]))
        if not valid:
            raise ValueError(f"teacher: the model must return (logits [B, classes], a list of {STAGES} feature "
                             f"maps [B, C, H, W]), got {_describe(output)}")
        return output[0], list(output[1])


def check_teacher_matches(teacher: Teacher, student_stage_shapes: Sequence[Sequence[int]]) -> None:
    """Raise ValueError unless the teacher's stage features can be paired with the student's.

    ``student_stage_shapes``: shapes ([B, C, H, W] or [C, H, W]) of the student's
    stage features for inputs of ``teacher.input_shape``. Per stage, H and W of
    the two must be equal or integer multiples of each other, so the distillation
    losses can average-pool the larger map exactly onto the smaller.
    """
    student = [tuple(shape) for shape in student_stage_shapes]
    if len(student) != len(teacher.stage_shapes):
        raise ValueError(f"teacher: it gives {len(teacher.stage_shapes)} stage features, the student "
                         f"{len(student)}; distillation pairs them stage by stage")
    _, height, width = teacher.input_shape
    for i, (s_shape, t_shape) in enumerate(zip(student, teacher.stage_shapes), start=1):
        if len(s_shape) not in (3, 4):
            raise ValueError(f"student_stage_shapes[{i - 1}]: expected [B, C, H, W] or [C, H, W], got {list(s_shape)}")
        s_size, t_size = s_shape[-2:], t_shape[-2:]
        if not all(a > 0 and b > 0 and (a % b == 0 or b % a == 0) for a, b in zip(s_size, t_size)):
            raise ValueError(
                f"teacher: stage {i} features are {t_size[0]}x{t_size[1]} but the student's are "
                f"{s_size[0]}x{s_size[1]} for {height}x{width} inputs; each side must equal the other or be "
                "an integer multiple of it (pick a teacher whose stages downsample like the student's)")


# --------------------------------------------------------------------------- built-in teacher

def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              batch_size: int = 512) -> float:
    """Top-1 accuracy in [0, 1] of a (logits, features) model on images [N, C, H, W], labels [N]."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits, _ = model(images[start:start + batch_size].to(device))
            correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    return correct / max(len(labels), 1)


def train_builtin_teacher(dataset: Any, epochs: int = BUILTIN_EPOCHS, seed: int = 0, device: str | torch.device = "cpu",
                          progress: bool = True) -> tuple[TeacherResNet, float]:
    """Train a ``TeacherResNet`` on ``dataset.train`` with the built-in recipe.

    SGD (momentum 0.9, Nesterov), lr 0.05 with per-step cosine decay to 0,
    weight decay 5e-4, batch 128, ``dataset.augment`` passed to the batcher.
    Returns (the model in eval mode on ``device``, test accuracy in [0, 1]).
    """
    from ..data import batches

    device = torch.device(device)
    recipe = BUILTIN_RECIPE
    # Seeded init without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TeacherResNet(dataset.in_channels, dataset.num_classes, recipe["widths"], recipe["blocks"])
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"])
    steps = epochs * math.ceil(len(dataset.train.labels) / recipe["batch_size"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    bar = tqdm(range(epochs), desc=f"teacher on {dataset.name}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for images, labels in batches(dataset.train, recipe["batch_size"], shuffle=True, seed=seed, epoch=epoch,
                                      augment=dataset.augment):
            images, labels = images.to(device), labels.to(device)
            logits, _ = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
    return model, _accuracy(model, dataset.test.images, dataset.test.labels, device)


def _data_fingerprint(dataset: Any) -> dict[str, Any]:
    """Cheap summary of the data (sizes, sums): a changed preprocessing or split gets a new cache entry."""
    def summary(data: Any) -> list[Any]:
        total = squares = 0.0
        for chunk in data.images.split(4096):  # chunks: no float64 copy of a whole CIFAR split
            chunk = chunk.double()
            total, squares = total + chunk.sum().item(), squares + chunk.square().sum().item()
        return [len(data.labels), f"{total:.6e}", f"{squares:.6e}", int(data.labels.sum().item())]
    return {"name": dataset.name, "num_classes": dataset.num_classes, "in_channels": dataset.in_channels,
            "image_size": dataset.image_size, "augment": bool(dataset.augment),
            "train": summary(dataset.train), "test": summary(dataset.test)}


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("FASTNAS_CACHE") or Path.home() / ".cache" / "fastnas"
    return Path(cache_dir).expanduser()


def save_teacher_checkpoint(model: nn.Module, path: str | os.PathLike, **metadata: Any) -> None:
    """Save a network of a registered class (``register_teacher_arch``: TeacherResNet, the DARTS evaluation
    networks) for ``load_teacher("checkpoint:PATH", ...)``, atomically.

    The file holds {"format", "arch" (the registered name), "module" (where the class is defined),
    "config" (constructor arguments), "state_dict"} and any ``metadata``; ``test_accuracy`` (in [0, 1]) is
    what the loaded Teacher reports as its test accuracy.
    """
    arch = getattr(type(model), "teacher_arch", None)
    if TEACHER_ARCHS.get(arch) is not type(model):
        raise ValueError(f"model: {type(model).__name__} is not a registered teacher network "
                         f"({', '.join(TEACHER_ARCHS)}); register its class with register_teacher_arch, "
                         "or export it with torch.jit.script and load it as torchscript:PATH")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {**metadata, "format": CHECKPOINT_FORMAT, "arch": arch, "module": type(model).__module__,
               "config": model.config(), "state_dict": state}
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def _not_a_checkpoint(path: Path, why: str) -> ValueError:
    return ValueError(f"teacher: {path} is not a fastnas teacher checkpoint ({why}); give a file written by "
                      "fastnas.distill.save_teacher_checkpoint (fastnas train writes its network as one), or load "
                      "other networks as torchscript:PATH or torchvision:NAME:WEIGHTS.pt")


def _teacher_class(path: Path, payload: dict[str, Any]) -> type:
    """The registered class of a checkpoint's network, importing the fastnas module that registers it."""
    arch, module = payload.get("arch"), payload.get("module")
    if arch not in TEACHER_ARCHS and isinstance(module, str) and module.startswith("fastnas."):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"teacher: {path} holds a {arch!r} network from {module}, which this fastnas "
                             f"cannot import ({err})") from err
    if arch not in TEACHER_ARCHS:
        raise ValueError(f"teacher: {path} holds a {arch!r} network; this fastnas knows "
                         f"{', '.join(TEACHER_ARCHS)}")
    return TEACHER_ARCHS[arch]


def _load_checkpoint(path: Path, dataset: Any) -> tuple[nn.Module, dict[str, Any]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # what torch.load raises depends on the bytes: pickle, zip, EOF, IndexError...
        raise _not_a_checkpoint(path, f"torch.load cannot read it: {type(err).__name__}: "
                                      f"{str(err).split('. ')[0][:200]}") from err
    if not isinstance(payload, dict) or payload.get("format") not in (CHECKPOINT_FORMAT, LEGACY_CHECKPOINT_FORMAT):
        found = f"a dict with format={payload.get('format')!r}" if isinstance(payload, dict) else \
            type(payload).__name__
        if isinstance(payload, dict) and payload.get(CHECKPOINT_MARK) is not None:
            found = "a run folder's training checkpoint (checkpoint.pt)"
        raise _not_a_checkpoint(path, f"found {found}, expected a dict with format={CHECKPOINT_FORMAT!r}")
    if not (isinstance(payload.get("config"), dict) and isinstance(payload.get("state_dict"), dict)):
        raise _not_a_checkpoint(path, "its 'config' or 'state_dict' is missing")
    if payload["format"] == LEGACY_CHECKPOINT_FORMAT:
        payload = {**payload, "arch": "TeacherResNet"}
    config = payload["config"]
    if (config.get("in_channels"), config.get("num_classes")) != (dataset.in_channels, dataset.num_classes):
        raise ValueError(f"teacher: {path} is for {config.get('in_channels')}-channel inputs and "
                         f"{config.get('num_classes')} classes, the dataset {dataset.name!r} has "
                         f"{dataset.in_channels} and {dataset.num_classes}")
    model = _teacher_class(path, payload).from_config(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise _not_a_checkpoint(path, f"its weights do not fit its own {payload['arch']} config: "
                                      f"{str(err).splitlines()[0]}") from err
    return model, payload


def _load_builtin(dataset: Any, device: torch.device, cache_dir: str | os.PathLike | None,
                  progress: bool) -> tuple[TeacherResNet, float]:
    """(the built-in teacher of `dataset`, its test accuracy), from the cache or trained and cached."""
    key = {"recipe": BUILTIN_RECIPE, "epochs": BUILTIN_EPOCHS, "seed": 0, "data": _data_fingerprint(dataset)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = _cache_root(cache_dir) / "teachers" / f"{dataset.name}-{digest}.pt"
    if path.exists():
        model, payload = _load_checkpoint(path, dataset)
        log.info("built-in teacher for %s loaded from %s (test accuracy %.2f%%)", dataset.name, path,
                 100 * payload["test_accuracy"])
        return model, payload["test_accuracy"]
    model, accuracy = train_builtin_teacher(dataset, epochs=BUILTIN_EPOCHS, seed=0, device=device, progress=progress)
    save_teacher_checkpoint(model, path, test_accuracy=accuracy, cache_key=key)
    log.info("built-in teacher for %s trained (test accuracy %.2f%%), cached at %s", dataset.name,
             100 * accuracy, path)
    return model, accuracy


@torch.no_grad()
def _feature_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[str]:
    """The deepest three consecutive of the model's TORCHVISION_LAYERS whose maps are at least 2x2 for one input
    of `input_shape` (C, H, W); ValueError listing every layer's map size when there are none.

    On a 1x1 map the normalized attention map is constant, so its AT term is always exactly 0 (a torchvision
    ResNet's layer4 on 32x32 images)."""
    layers = [name for name in TORCHVISION_LAYERS if hasattr(model, name)]
    sizes: dict[str, tuple[int, int]] = {}

    def record_size(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            sizes[name] = tuple(output.shape[-2:])
        return hook
    handles = [getattr(model, name).register_forward_hook(record_size(name)) for name in layers]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    usable = [name for name in layers if min(sizes[name]) >= 2]
    for end in range(len(layers), STAGES - 1, -1):
        window = layers[end - STAGES:end]
        if all(name in usable for name in window):
            return window
    described = ", ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
    raise ValueError(f"teacher: for {input_shape[1]}x{input_shape[2]} images the layers of this torchvision model "
                     f"give {described}; distillation needs {STAGES} consecutive layers with maps of at least 2x2 "
                     "(a 1x1 attention map is constant: its AT term is always 0). Use larger images or a teacher "
                     "whose stages keep their resolution (checkpoint:PATH, torchscript:PATH)")


def _load_torchvision(name: str, weights: Path, dataset: Any) -> _HookedFeatures:
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(f"teacher: 'torchvision:{name}:...' needs torchvision, which is not installed; "
                          "install it (pip install torchvision) or use another teacher form") from err
    builder = getattr(torchvision.models, name, None)
    if not callable(builder) or name.startswith("_"):
        raise ValueError(f"teacher: torchvision.models has no model {name!r}")
    model = builder(num_classes=dataset.num_classes)
    if sum(hasattr(model, layer) for layer in TORCHVISION_LAYERS) < STAGES or not hasattr(model, "conv1"):
        raise ValueError(f"teacher: torchvision model {name!r} has no conv1 and {'/'.join(TORCHVISION_LAYERS)}; "
                         "only ResNet-style models are supported (export others with torchscript:PATH)")
    if model.conv1.in_channels != dataset.in_channels:
        raise ValueError(f"teacher: torchvision {name} takes {model.conv1.in_channels}-channel images, "
                         f"the dataset {dataset.name!r} has {dataset.in_channels} channels")
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise ValueError(f"teacher: {weights} does not fit torchvision.models.{name}"
                         f"(num_classes={dataset.num_classes}): {err}") from err
    layers = _feature_layers(model, (dataset.in_channels, dataset.image_size, dataset.image_size))
    log.info("torchvision teacher %s: stage features from %s", name, ", ".join(layers))
    return _HookedFeatures(model, layers)


def load_teacher(spec: str, dataset: Any, device: str | torch.device = "cpu",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Teacher:
    """A frozen ``Teacher`` on ``device`` for ``dataset`` from a spec string (see the module docstring).

    ``cache_dir`` (built-in teacher only) defaults to $FASTNAS_CACHE or ~/.cache/fastnas;
    the trained teacher is kept in ``<cache_dir>/teachers/<dataset>-<hash>.pt``.
    The Teacher's ``test_accuracy`` is the one recorded with a checkpoint or the built-in teacher
    (None for torchscript and torchvision teachers); ``summary()`` is what a run records.
    """
    device = torch.device(device)
    kind, _, rest = spec.partition(":")
    accuracy, info = None, {"spec": spec}
    if spec == "builtin":
        model, accuracy = _load_builtin(dataset, device, cache_dir, progress)
        info["arch"] = "TeacherResNet"
    elif kind in ("checkpoint", "torchscript", "torchvision") and rest:
        name, weights = rest.split(":", 1) if kind == "torchvision" and ":" in rest else ("", rest)
        if kind == "torchvision" and not name:
            raise ValueError(f"teacher: expected torchvision:NAME:WEIGHTS.pt, got {spec!r}")
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"teacher: {path} does not exist (from teacher={spec!r})")
        if kind == "checkpoint":
            model, payload = _load_checkpoint(path, dataset)
            accuracy, info["arch"] = payload.get("test_accuracy"), payload["arch"]
        elif kind == "torchscript":
            model = torch.jit.load(str(path), map_location="cpu")
        else:
            model = _load_torchvision(name, path, dataset)
            info.update(arch=f"torchvision.models.{name}", feature_layers=model.layers)
    else:
        raise ValueError(f"teacher: expected one of {', '.join(TEACHER_SPECS)}, got {spec!r}")
    teacher = Teacher(model.to(device), (dataset.in_channels, dataset.image_size, dataset.image_size),
                      test_accuracy=accuracy, info=info)
    if teacher.num_classes != dataset.num_classes:
        raise ValueError(f"teacher: {spec!r} predicts {teacher.num_classes} classes, the dataset "
                         f"{dataset.name!r} has {dataset.num_classes}")
    return teacher
