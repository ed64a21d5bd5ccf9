"""The proxy registry: `@register_proxy`, `score` and `score_many`.

A proxy is registered under a name with what it reads:

* ``reads="inputs"``: a function of the shared `ProxyInputs` (weights, CE
  gradients, activations, student/teacher outputs). `score_many` computes them
  with one forward + one backward of the student and hands them to every such
  proxy, so ten of them cost one pass.
* ``reads="model"``: a function ``(model, images, labels)`` for a proxy that needs
  its own passes (synflow's all-ones input on |weights|, GraSP's Hessian-gradient
  product, jacov's input Jacobian, NWOT's ReLU codes, ...).
* ``reads="pair"``: a function ``(model, teacher_model, images, labels)`` for a proxy
  that runs the teacher itself (DisWOT as its authors' code re-initialises both networks).

All kinds run on a private deep copy of the user's model in train mode (batch
statistics, as the zero-cost proxy papers score), so the model's parameters,
.grad fields, BN buffers and training mode are never touched; a "pair" proxy must
leave the teacher as it was too (it copies it before changing it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .inputs import DEFAULT_LAYER_INPUTS, LAYER_INPUTS, NetworkOutputs, collect, network_outputs


@dataclass(frozen=True)
class Proxy:
    """One registered proxy."""

    name: str
    function: Callable[..., torch.Tensor | float]
    reads: str  # "inputs", "model" or "pair"
    needs_teacher: bool
    source: str  # the paper (or code) that defines it
    layer_inputs: tuple[str, ...] = ()  # per-layer lists of ProxyInputs it reads beyond the default ones


_PROXIES: dict[str, Proxy] = {}
READS = ("inputs", "model", "pair")


def register_proxy(name: str, *, reads: str = "inputs", needs_teacher: bool = False, source: str = "",
                   layer_inputs: Sequence[str] = ()) -> Callable:
    """Decorator registering a proxy under `name`; higher score = predicted better architecture.

    reads="inputs": ``function(inputs: ProxyInputs) -> scalar``; `layer_inputs` names the per-layer
    lists it reads that `collect` keeps only on request (outputs, virtual_grads);
    reads="model": ``function(model, images [B, C, H, W], labels [B]) -> scalar``, where `model` is
    the private copy (free to run passes on, but copy it again before changing weights);
    reads="pair": ``function(model, teacher_model, images, labels) -> scalar`` (always needs a teacher).
    """
    if reads not in READS:
        raise ValueError(f"reads: expected one of {READS}, got {reads!r}")
    if reads == "model" and needs_teacher:
        raise ValueError("needs_teacher: a reads='model' proxy gets no teacher; use reads='inputs' (its outputs) "
                         "or reads='pair' (the teacher network)")
    unknown = sorted(set(layer_inputs) - set(LAYER_INPUTS))
    if unknown:
        raise ValueError(f"layer_inputs: unknown {unknown}; expected names of {LAYER_INPUTS}")

    def decorate(function: Callable) -> Callable:
        if name in _PROXIES:
            raise ValueError(f"name: a proxy named {name!r} is already registered")
        _PROXIES[name] = Proxy(name, function, reads, needs_teacher or reads == "pair", source, tuple(layer_inputs))
        return function

    return decorate


def available_proxies() -> list[str]:
    """The registered proxy names, sorted."""
    return sorted(_PROXIES)


def get_proxy(name: str) -> Proxy:
    """The registered proxy `name`; ValueError naming the available ones otherwise."""
    if name not in _PROXIES:
        raise ValueError(f"proxy: unknown name {name!r}; available: {', '.join(sorted(_PROXIES))}")
    return _PROXIES[name]


def score(name: str, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
          teacher: nn.Module | NetworkOutputs | None = None) -> float:
    """Proxy `name` of `model` on `batch` = (images [B, C, H, W], labels [B]).

    `teacher` is an nn.Module (e.g. a fastnas Teacher) returning logits or (logits, [maps]), or its
    `network_outputs` on the same images (to share one teacher pass among many students; they keep
    the network for reads="pair" proxies), or None for proxies that need no teacher.
    """
    return score_many([name], model, batch, teacher)[name]


def score_many(names: Sequence[str], model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
               teacher: nn.Module | NetworkOutputs | None = None) -> dict[str, float]:
    """{name: score} of every proxy in `names`; the shared inputs are collected once."""
    proxies = [get_proxy(name) for name in names]
    images, labels = _check_batch(batch)
    needing_teacher = [p.name for p in proxies if p.needs_teacher]
    if needing_teacher and teacher is None:
        raise ValueError(f"teacher: proxies {needing_teacher} compare the student with a teacher; "
                         "pass teacher= (an nn.Module or its network_outputs on the same images)")
    teacher_outputs = None
    if needing_teacher:
        teacher_outputs = teacher if isinstance(teacher, NetworkOutputs) else network_outputs(teacher, images)
        if teacher_outputs.logits.shape[0] != images.shape[0]:
            raise ValueError(f"teacher: outputs are for a batch of {teacher_outputs.logits.shape[0]} images, "
                             f"the student batch has {images.shape[0]}")
    teacher_model = teacher if isinstance(teacher, nn.Module) else getattr(teacher, "model", None)
    pairs = [p.name for p in proxies if p.reads == "pair"]
    if pairs and teacher_model is None:
        raise ValueError(f"teacher: proxies {pairs} run the teacher network; pass it (or network_outputs(teacher, "
                         "images), which keeps it), not outputs made without it")
    work = _private_copy(model)
    shared = None
    if any(p.reads == "inputs" for p in proxies):
        layer_inputs = set(DEFAULT_LAYER_INPUTS).union(*(p.layer_inputs for p in proxies))
        shared = collect(work, images, labels, teacher_outputs, layer_inputs=sorted(layer_inputs))
    scores = {}
    for proxy in proxies:
        if proxy.reads == "inputs":
            value = proxy.function(shared)
        elif proxy.reads == "model":
            value = proxy.function(work, images, labels)
        else:
            value = proxy.function(work, teacher_model, images, labels)
        scores[proxy.name] = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    return scores


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ValueError(f"batch: expected (images [B, C, H, W], labels [B]), got {type(batch).__name__}")
    images, labels = batch
    if not (isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[0] > 0):
        raise ValueError(f"batch: expected images [B, C, H, W] with B >= 1, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not (isinstance(labels, torch.Tensor) and labels.dim() == 1 and labels.shape[0] == images.shape[0]):
        raise ValueError(f"batch: expected labels [{images.shape[0]}] (one int per image), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    return images, labels.long()


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy in train mode whose parameters all require grad (the user's model stays as it was)."""
    work = copy.deepcopy(model)
    work.train()
    for parameter in work.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None
    return work

