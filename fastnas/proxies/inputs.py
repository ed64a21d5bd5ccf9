"""What a training-free proxy reads of one network on the proxy batch, computed once.

Every proxy (the registered baselines and Auto-DAS's searched programs) reads the
same few tensors of a student on one batch: the weights of its layers, their
gradients after one cross-entropy backward, the layers' input activations, and
the student's stage features, embedding and logits next to the teacher's. They
are computed once per architecture (`collect`) and once per batch for the
teacher (`network_outputs` under no_grad), then shared by every proxy.

A network may return ``(logits, [feature maps])`` (fastnas's students and
teachers) or plain logits (any classifier). The embedding is the input of the
last ``nn.Linear`` (the pooled penultimate features), captured by a hook, so it
exists for any classifier that ends in a linear layer.

Per-layer tensors (`LAYER_INPUTS`), for every Conv2d and Linear layer in forward order:
``weights``, ``grads`` (d CE / d weight), ``activations`` (the layer's input),
``outputs`` (the layer's output: the authors' Auto-DAS ``act`` input reads Conv2d outputs) and
``virtual_grads`` (d sum(logits) / d weight for an all-ones batch of the images' shape: the
authors' ``virtual_grad``, lliai/Auto-DAS primitives/operations/zc_inputs.py). Weights and grads
are always collected; the others only when asked for (`collect(..., layer_inputs=...)`), since
a cached population of architectures holds them all in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_TYPES = (nn.Conv2d, nn.Linear)
LAYER_INPUTS = ("weights", "grads", "activations", "outputs", "virtual_grads")
DEFAULT_LAYER_INPUTS = ("weights", "grads", "activations")


@dataclass
class NetworkOutputs:
    """One network's outputs on the proxy batch (B samples), detached.

    `model` is the network itself when `network_outputs` made them (a proxy that re-initialises
    the teacher, DisWOT as its authors' code, reads it); None otherwise.
    """

    logits: torch.Tensor  # [B, classes]
    embedding: torch.Tensor  # [B, D]: input of the last nn.Linear
    features: list[torch.Tensor]  # stage feature maps [B, C_i, H_i, W_i] ([] for a plain classifier)
    model: nn.Module | None = field(default=None, repr=False, compare=False)


@dataclass
class ProxyInputs:
    """Everything a proxy reads of one student; layer lists are in forward order.

    A per-layer list that `collect` was not asked for is None.
    """

    student: NetworkOutputs
    teacher: NetworkOutputs | None
    weights: list[torch.Tensor]  # weight of every Conv2d / Linear layer
    grads: list[torch.Tensor]  # d CE / d weight, same shapes (zeros for a layer the loss does not reach)
    activations: list[torch.Tensor] | None  # input of every Conv2d / Linear layer [B, ...]
    labels: torch.Tensor  # [B] int64
    outputs: list[torch.Tensor] | None = None  # output of every Conv2d / Linear layer [B, ...]
    virtual_grads: list[torch.Tensor] | None = None  # d sum(logits) / d weight on an all-ones batch
    is_conv: list[bool] = field(default_factory=list)  # per layer: an nn.Conv2d (else nn.Linear)


def _split_output(output) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        return output, []
    if isinstance(output, (tuple, list)) and len(output) == 2 and isinstance(output[0], torch.Tensor):
        return output[0], list(output[1])
    raise ValueError("model: expected forward(x) to return logits [B, classes] or (logits, [feature maps]), "
                     f"got {type(output).__name__}")


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model: proxies need a classifier ending in nn.Linear; {type(model).__name__} has none")
    return linears[-1]


def _run(model: nn.Module, images: torch.Tensor, record: Sequence[str] = ()):
    """Forward `images` through `model`; returns (logits, features, embedding, layers, recorded).

    `recorded[kind]` holds each Conv2d / Linear layer's input ("activations") or output ("outputs"),
    detached, for the kinds in `record`.
    """
    captured: dict[str, torch.Tensor] = {}
    layers = [m for m in model.modules() if isinstance(m, LAYER_TYPES)]
    recorded = {kind: [None] * len(layers) for kind in record}
    head = _last_linear(model)
    hooks = [head.register_forward_hook(lambda _m, inputs, _out: captured.__setitem__("embedding", inputs[0]))]

    def keep(i: int):
        def hook(_module, inputs, output):
            if "activations" in recorded:
                recorded["activations"][i] = inputs[0].detach()
            if "outputs" in recorded:
                recorded["outputs"][i] = output.detach()
        return hook

    if recorded:
        hooks += [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        logits, features = _split_output(model(images))
    finally:
        for hook in hooks:
            hook.remove()
    if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"model: expected logits [{images.shape[0]}, classes], got {tuple(logits.shape)}")
    return logits, features, captured["embedding"].flatten(1), layers, recorded


def network_outputs(model: nn.Module, images: torch.Tensor) -> NetworkOutputs:
    """`model`'s outputs on `images` [B, C, H, W] without gradients (the teacher's, once per batch)."""
    with torch.no_grad():
        logits, features, embedding, _, _ = _run(model, images)
    return NetworkOutputs(logits.detach(), embedding.detach(), [f.detach() for f in features], model=model)


def _weight_grads(loss: torch.Tensor, weights: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d weight, detached; zeros for a weight the loss does not reach."""
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g.detach() for w, g in zip(weights, grads)]


def collect(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, teacher: NetworkOutputs | None = None,
            layer_inputs: Sequence[str] = DEFAULT_LAYER_INPUTS) -> ProxyInputs:
    """One forward and one cross-entropy backward of `model` on the batch; everything detached.

    images [B, C, H, W], labels [B]; `teacher` is `network_outputs(teacher_model, images)` on the
    same batch (computed once and passed for every student). `layer_inputs` (of `LAYER_INPUTS`)
    says which per-layer lists to keep besides weights and grads; ``virtual_grads`` costs one more
    forward and backward (of an all-ones batch). The model's .grad fields are left as they were.
    """
    unknown = sorted(set(layer_inputs) - set(LAYER_INPUTS))
    if unknown:
        raise ValueError(f"layer_inputs: unknown {unknown}; expected names of {LAYER_INPUTS}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels: expected [{images.shape[0]}] (one per image), got {tuple(labels.shape)}")
    if teacher is not None and teacher.logits.shape[0] != images.shape[0]:
        raise ValueError(f"teacher: outputs are for a batch of {teacher.logits.shape[0]}, "
                         f"the student batch has {images.shape[0]}")
    record = [kind for kind in ("activations", "outputs") if kind in layer_inputs]
    logits, features, embedding, layers, recorded = _run(model, images, record)
    weights = [layer.weight for layer in layers]
    inputs = ProxyInputs(
        student=NetworkOutputs(logits.detach(), embedding.detach(), [f.detach() for f in features]),
        teacher=teacher, weights=[w.detach() for w in weights],
        grads=_weight_grads(F.cross_entropy(logits, labels), weights), activations=None, labels=labels,
        is_conv=[isinstance(layer, nn.Conv2d) for layer in layers])
    for kind, tensors in recorded.items():  # a layer the forward skipped gets an empty tensor
        setattr(inputs, kind, [t if t is not None else w.new_empty(0) for t, w in zip(tensors, weights)])
    if "virtual_grads" in layer_inputs:
        ones_logits = _split_output(model(torch.ones_like(images)))[0]
        inputs.virtual_grads = _weight_grads(ones_logits.sum(), weights)
    return inputs
