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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

LAYER_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class NetworkOutputs:
    """One network's outputs on the proxy batch (B samples), detached."""

    logits: torch.Tensor  # [B, classes]
    embedding: torch.Tensor  # [B, D]: input of the last nn.Linear
    features: list[torch.Tensor]  # stage feature maps [B, C_i, H_i, W_i] ([] for a plain classifier)


@dataclass
class ProxyInputs:
    """Everything a proxy reads of one student; layer lists are in forward order."""

    student: NetworkOutputs
    teacher: NetworkOutputs | None
    weights: list[torch.Tensor]  # weight of every Conv2d / Linear layer
    grads: list[torch.Tensor]  # d CE / d weight, same shapes (zeros for a layer the loss does not reach)
    activations: list[torch.Tensor]  # input of every Conv2d / Linear layer [B, ...]
    labels: torch.Tensor  # [B] int64


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


def _run(model: nn.Module, images: torch.Tensor, record_layers: bool):
    """Forward `images` through `model`; returns (logits, features, embedding, layers, activations)."""
    captured: dict[str, torch.Tensor] = {}
    layers = [m for m in model.modules() if isinstance(m, LAYER_TYPES)] if record_layers else []
    activations: list[torch.Tensor | None] = [None] * len(layers)
    head = _last_linear(model)
    hooks = [head.register_forward_hook(lambda _m, inputs, _out: captured.__setitem__("embedding", inputs[0]))]
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda _m, inputs, _out, i=i: activations.__setitem__(i, inputs[0].detach())))
    try:
        logits, features = _split_output(model(images))
    finally:
        for hook in hooks:
            hook.remove()
    if logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(f"model: expected logits [{images.shape[0]}, classes], got {tuple(logits.shape)}")
    return logits, features, captured["embedding"].flatten(1), layers, activations


def network_outputs(model: nn.Module, images: torch.Tensor) -> NetworkOutputs:
    """`model`'s outputs on `images` [B, C, H, W] without gradients (the teacher's, once per batch)."""
    with torch.no_grad():
        logits, features, embedding, _, _ = _run(model, images, record_layers=False)
    return NetworkOutputs(logits.detach(), embedding.detach(), [f.detach() for f in features])


def collect(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            teacher: NetworkOutputs | None = None) -> ProxyInputs:
    """One forward and one cross-entropy backward of `model` on the batch; everything detached.

    images [B, C, H, W], labels [B]; `teacher` is `network_outputs(teacher_model, images)` on the
    same batch (computed once and passed for every student). The model's .grad fields are left
    as they were.
    """
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels: expected [{images.shape[0]}] (one per image), got {tuple(labels.shape)}")
    if teacher is not None and teacher.logits.shape[0] != images.shape[0]:
        raise ValueError(f"teacher: outputs are for a batch of {teacher.logits.shape[0]}, "
                         f"the student batch has {images.shape[0]}")
    logits, features, embedding, layers, activations = _run(model, images, record_layers=True)
    weights = [layer.weight for layer in layers]
    grads = torch.autograd.grad(F.cross_entropy(logits, labels), weights, allow_unused=True)
    return ProxyInputs(
        student=NetworkOutputs(logits.detach(), embedding.detach(), [f.detach() for f in features]),
        teacher=teacher,
        weights=[w.detach() for w in weights],
        grads=[torch.zeros_like(w) if g is None else g.detach() for w, g in zip(weights, grads)],
        activations=[a if a is not None else w.new_empty(0) for a, w in zip(activations, weights)],
        labels=labels)
