"""The baseline training-free proxies, each registered under its usual name.

Zero-cost NAS proxies (synflow, snip, grasp, fisher, grad_norm, jacov: Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021, following their reference code
mohsaied/zero-cost-nas; nwot: Mellor et al., "Neural Architecture Search without
Training", ICML 2021), the size baselines params and flops, the distillation-aware
DisWOT (Dong et al., CVPR 2023) and the two proxies Auto-DAS found (Sun et al., ECCV 2024,
as in the authors' lliai/Auto-DAS code). Every score is one float per network,
summed over the Conv2d / Linear layers where the proxy is per layer; higher means
a better predicted architecture.

The ``reads="inputs"`` proxies share one forward + CE backward (`ProxyInputs`); the
``reads="model"`` ones run their own passes on the registry's private copy.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..nn.cost import count_flops, count_params
from ..ops import foreach_reduce, gram_distance, pair_distance
from .inputs import LAYER_TYPES, NetworkOutputs, ProxyInputs, _split_output
from .registry import register_proxy

ZERO_COST = "Abdelfattah et al. 2021, Zero-Cost Proxies for Lightweight NAS"
AUTO_DAS = "Sun et al. 2024, Auto-DAS (ECCV)"
# jacov's eigenvalue offset, as in the reference code.
JACOV_EPS = 1e-5
# Auto-DAS's KL temperature (distance "kl_T8", scaled by T^2) and interaction weight ("w100_teacher_student").
AUTODAS_KL_TEMPERATURE = 8.0
AUTODAS_INTERACTION_WEIGHT = 100.0


# --------------------------------------------------------------------------- helpers

def _layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LAYER_TYPES)]


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return _split_output(model(images))[0]


def _layer_total(tensors: Sequence[torch.Tensor], transform: str, reduction: str) -> torch.Tensor:
    """sum over layers of reduction(transform(x)), one fused foreach_reduce call (0 for no layer)."""
    if not tensors:
        return torch.zeros(())
    return foreach_reduce(list(tensors), transform, reduction).sum()


# --------------------------------------------------------------------------- size

@register_proxy("params", reads="model", source="number of parameters")
def params(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return count_params(model)


@register_proxy("flops", reads="model", source="multiply-accumulates of one image (fastnas.nn.cost)")
def flops(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    return count_flops(model, tuple(images.shape[1:]))


# --------------------------------------------------------------------------- shared-input proxies

@register_proxy("grad_norm", source=ZERO_COST)
def grad_norm(inputs: ProxyInputs) -> torch.Tensor:
    """sum over layers of ||dL/dW||_2."""
    return _layer_total(inputs.grads, "identity", "l2")


@register_proxy("snip", source="Lee et al. 2019, SNIP; " + ZERO_COST)
def snip(inputs: ProxyInputs) -> torch.Tensor:
    """sum |W * dL/dW|: the reference's gradient w.r.t. an all-ones weight mask is exactly W * dL/dW."""
    return _layer_total([w * g for w, g in zip(inputs.weights, inputs.grads)], "abs", "sum")


def _class_weight_gradient(outputs: NetworkOutputs, labels: torch.Tensor) -> torch.Tensor:
    """dCE/dW [K, D] of the classifier: (softmax(z) - onehot(y))^T e / B, for logits z = W e + b.

    Closed form so that the frozen teacher needs no backward pass.
    """
    error = torch.softmax(outputs.logits, dim=1) - F.one_hot(labels, outputs.logits.shape[1]).to(outputs.logits)
    return error.T @ outputs.embedding / labels.shape[0]


def _relation_features(outputs: NetworkOutputs) -> torch.Tensor:
    """[B, D] features of the last stage before pooling (DisWOT's feature[-2]); the embedding without maps."""
    return outputs.features[-1].flatten(1) if outputs.features else outputs.embedding


@register_proxy("diswot", needs_teacher=True, source="Dong et al. 2023, DisWOT (CVPR)")
def diswot(inputs: ProxyInputs) -> torch.Tensor:
    """-(semantic + relation distance), both as gram_distance (row-normalized Gram matrices).

    Semantic: the class x class Gram of the classifier-weight gradients [K, D] (DisWOT's Grad-CAM
    class similarity, which compares classes so student and teacher widths may differ).
    Relation: the sample x sample Gram of the last-stage features [B, D] (similarity-preserving KD).
    """
    teacher = inputs.teacher
    semantic = gram_distance(_class_weight_gradient(inputs.student, inputs.labels),
                             _class_weight_gradient(teacher, inputs.labels))
    relation = gram_distance(_relation_features(inputs.student), _relation_features(teacher))
    return -(semantic + relation)


def _aligned_embeddings(inputs: ProxyInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher embeddings [B, D] truncated to the narrower width.

    Auto-DAS compares them element-wise and leaves alignment as a TODO (its NB201 and ResNet
    students match the ResNet teacher's 64 channels); truncation is what the authors do for
    mismatched channels elsewhere in their code (``inter_fd``).
    """
    student, teacher = inputs.student.embedding, inputs.teacher.embedding
    width = min(student.shape[1], teacher.shape[1])
    return student[:, :width], teacher[:, :width]


def _column_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over feature columns of the cosine similarity across the batch (F.cosine_similarity dim=0)."""
    return 1 - pair_distance(student.T.contiguous(), teacher.T.contiguous(), "cosine").mean()


def _conv_grad_log_softmax(inputs: ProxyInputs) -> list[torch.Tensor]:
    """Auto-DAS's instinct input "grad" (Conv2d weight gradients only), log-softmaxed over output channels."""
    return [F.log_softmax(g, dim=0) for g in inputs.grads if g.dim() == 4]


@register_proxy("autodas_nb201", needs_teacher=True, source=AUTO_DAS + ", program found on NB201")
def autodas_nb201(inputs: ProxyInputs) -> torch.Tensor:
    """Instinct: sum over conv layers of mean |tanh(log_softmax(dL/dW, dim 0))|.
    Interaction: mean(s * t) * 100 * column cosine(s, t), s and t = softmax_0(mish(e)^2) of the embeddings.
    """
    log_probs = _conv_grad_log_softmax(inputs)
    numels = torch.tensor([g.numel() for g in log_probs]).to(inputs.grads[0])
    instinct = (foreach_reduce(log_probs, "tanh", "l1") / numels).sum() if log_probs else torch.zeros(())

    def transform(embedding: torch.Tensor) -> torch.Tensor:
        return F.softmax(F.mish(embedding).pow(2), dim=0)

    student, teacher = (transform(e) for e in _aligned_embeddings(inputs))
    interaction = (student * teacher).mean() * AUTODAS_INTERACTION_WEIGHT * _column_cosine(student, teacher)
    return instinct + interaction


@register_proxy("autodas_resnet", needs_teacher=True, source=AUTO_DAS + ", program found on ResNets (rho_CNN)")
def autodas_resnet(inputs: ProxyInputs) -> torch.Tensor:
    """Instinct: sum over conv layers of ||log_softmax(dL/dW, dim 0)||_F (the program's trailing
    normalized_sum divides a scalar by 1). Interaction: T^2 KL(softmax(t/T) || softmax(s/T)) (batch mean,
    T = 8) * 100 * column cosine(s, t), s and t = |sigmoid(relu(e))| of the embeddings.
    """
    instinct = _layer_total(_conv_grad_log_softmax(inputs), "identity", "l2")

    def transform(embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.relu(embedding)).abs()

    student, teacher = (transform(e) for e in _aligned_embeddings(inputs))
    temperature = AUTODAS_KL_TEMPERATURE
    kl = pair_distance(student / temperature, teacher / temperature, "kl").mean() * temperature ** 2
    interaction = kl * AUTODAS_INTERACTION_WEIGHT * _column_cosine(student, teacher)
    return instinct + interaction


# --------------------------------------------------------------------------- proxies with their own passes

def _remove_batchnorm(model: nn.Module) -> None:
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                setattr(module, name, nn.Identity())


@register_proxy("synflow", reads="model", source="Tanaka et al. 2020, SynFlow; " + ZERO_COST)
def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum |W * dR/dW|, R = sum of the logits of an all-ones image through |all parameters|.

    As the reference: float64, BatchNorm removed, no data and no labels.
    """
    net = copy.deepcopy(model).double()  # |theta| changes the weights: never on the caller's copy
    _remove_batchnorm(net)
    net.eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
    weights = [layer.weight for layer in _layers(net)]
    ones = torch.ones(1, *images.shape[1:], dtype=torch.float64, device=images.device)
    flow = _logits(net, ones).sum()
    grads = torch.autograd.grad(flow, weights, allow_unused=True)
    return _layer_total([w.detach() * g for w, g in zip(weights, grads) if g is not None], "abs", "sum")


@register_proxy("grasp", reads="model", source="Wang et al. 2020, GraSP; " + ZERO_COST)
def grasp(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-sum W * (H g): H the Hessian of the CE loss, g its gradient (treated as a constant)."""
    weights = [layer.weight for layer in _layers(model)]
    loss = F.cross_entropy(_logits(model, images), labels)
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    reached = [(w, g) for w, g in zip(weights, grads) if g is not None]
    gradient_dot = sum((g.detach() * g).sum() for _, g in reached)
    hessian_grads = torch.autograd.grad(gradient_dot, [w for w, _ in reached], allow_unused=True)
    products = [w.detach() * hg for (w, _), hg in zip(reached, hessian_grads) if hg is not None]
    return -_layer_total(products, "identity", "sum")


@register_proxy("fisher", reads="model", source="Turner et al. 2020, BlockSwap; " + ZERO_COST)
def fisher(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sum over layers and output channels k of fan_in * 0.5 mean_n (sum_hw z * dL/dz)^2, z the layer output.

    The fan-in factor is the reference's: it copies each channel's value onto the channel's weights
    before summing.
    """
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [layer.register_forward_hook(lambda m, _inputs, output: calls.append((m, output)))
             for layer in _layers(model)]
    try:
        logits = _logits(model, images)
    finally:
        for hook in hooks:
            hook.remove()
    calls = [(layer, output) for layer, output in calls if output.requires_grad]
    output_grads = torch.autograd.grad(F.cross_entropy(logits, labels), [output for _, output in calls],
                                       allow_unused=True)
    total = torch.zeros((), dtype=logits.dtype, device=logits.device)
    for (layer, output), grad in zip(calls, output_grads):
        if grad is None:
            continue
        act_times_grad = output.detach() * grad
        per_channel = act_times_grad.flatten(2).sum(2) if output.dim() > 2 else act_times_grad  # [B, C]
        total = total + 0.5 * per_channel.pow(2).mean(0).sum() * layer.weight[0].numel()
    return total


@register_proxy("jacov", reads="model", source="Mellor et al. 2020, NASWOT v1; " + ZERO_COST)
def jacov(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-sum_i log(v_i + k) + 1 / (v_i + k), v the eigenvalues of the correlation matrix of the
    per-image input Jacobians of sum(logits), k = 1e-5. NaN when a Jacobian row is constant."""
    x = images.detach().clone().requires_grad_(True)
    logits = _logits(model, x)
    (jacobian,) = torch.autograd.grad(logits, x, torch.ones_like(logits))
    return jacov_of_jacobians(jacobian)


def jacov_of_jacobians(jacobian: torch.Tensor) -> torch.Tensor:
    """jacov's score of the input Jacobians [B, C, H, W] of sum(logits) (also fastnas.proxies.batched's)."""
    correlation = torch.corrcoef(jacobian.flatten(1).double())
    if not torch.isfinite(correlation).all():
        return torch.tensor(float("nan"))
    eigenvalues = torch.linalg.eigvalsh(correlation)
    return -(torch.log(eigenvalues + JACOV_EPS) + 1 / (eigenvalues + JACOV_EPS)).sum()


@register_proxy("nwot", reads="model", source="Mellor et al. 2021, NAS without training (ICML)")
def nwot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log |det K|, K[i, j] = number of ReLU units on which images i and j have the same binary code."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(f"model: nwot reads the codes of nn.ReLU modules; {type(model).__name__} has none")
    batch = images.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=images.device)

    def count_agreements(_module, inputs, _output) -> None:
        codes = (inputs[0].flatten(1) > 0).double()  # an in-place ReLU leaves the same signs
        kernel.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    hooks = [relu.register_forward_hook(count_agreements) for relu in relus]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.linalg.slogdet(kernel).logabsdet
