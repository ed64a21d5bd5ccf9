"""The baseline training-free proxies, each registered under its usual name.

Zero-cost NAS proxies (synflow, snip, grasp, fisher, grad_norm, jacov: Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021, following their reference code
mohsaied/zero-cost-nas; nwot: Mellor et al., "Neural Architecture Search without
Training", ICML 2021), the size baselines params and flops, two size controls (conv_count,
conv_sqrt_numel_log_c: what the instinct terms of the authors' Auto-DAS programs reduce to),
and the distillation-aware DisWOT (Dong et al., CVPR 2023) as its authors' code computes it
(`diswot`) next to fastnas's earlier variant (`diswot_fastnas`). The Auto-DAS programs are in
`released`. Every score is one float per network, summed over the Conv2d / Linear layers where
the proxy is per layer; higher means a better predicted architecture.

The ``reads="inputs"`` proxies share one forward + CE backward (`ProxyInputs`); the
``reads="model"`` ones run their own passes on the registry's private copy, ``diswot``
(``reads="pair"``) on copies of student and teacher.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distill.teachers import Teacher
from ..nn.cost import count_flops, count_params
from ..ops import foreach_reduce, gram_distance
from .inputs import LAYER_TYPES, NetworkOutputs, ProxyInputs, _split_output, network_outputs
from .registry import register_proxy

ZERO_COST = "Abdelfattah et al. 2021, Zero-Cost Proxies for Lightweight NAS"
DISWOT = "Dong et al. 2023, DisWOT (CVPR)"
# jacov's eigenvalue offset, as in the reference code.
JACOV_EPS = 1e-5


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
    """[B, D] features of the last stage before pooling; the embedding without maps."""
    return outputs.features[-1].flatten(1) if outputs.features else outputs.embedding


@register_proxy("diswot_fastnas", needs_teacher=True, source="fastnas's variant of " + DISWOT)
def diswot_fastnas(inputs: ProxyInputs) -> torch.Tensor:
    """fastnas's DisWOT variant: -(semantic + relation), both as gram_distance (row-normalized Gram matrices).

    Semantic: the class x class Gram of the classifier-weight gradients [K, D] (which compares classes so
    student and teacher widths may differ). Relation: the sample x sample Gram of the last-stage features
    [B, D]. The networks keep their weights (the teacher trained, the student as initialized), unlike
    DisWOT's code (`diswot`).
    """
    teacher = inputs.teacher
    semantic = gram_distance(_class_weight_gradient(inputs.student, inputs.labels),
                             _class_weight_gradient(teacher, inputs.labels))
    relation = gram_distance(_relation_features(inputs.student), _relation_features(teacher))
    return -(semantic + relation)


def gaussian_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """DisWOT's network_weight_gaussian_init (lliai/DisWOT-CVPR2023, predictor/pruners/measures/diswot.py):
    Conv2d and Linear weights N(0, 1) and biases 0, BatchNorm2d / GroupNorm weights 1 and biases 0. In place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def normalized_outer_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||N(a a^T) - N(b b^T)||_F^2 for each pair of rows a, b [..., D], N = F.normalize over rows (eps 1e-12).

    The loss of ICKD / similarity-preserving KD on one vector, without the D x D matrices: row i of
    N(a a^T) is alpha_i a, alpha_i = a_i / max(|a_i| ||a||, eps), and for outer products
    ||alpha a^T - beta b^T||^2 = |alpha|^2 |a|^2 + |beta|^2 |b|^2 - 2 (alpha . beta)(a . b).
    """
    def alpha(x: torch.Tensor) -> torch.Tensor:
        return x / (x.abs() * x.norm(dim=-1, keepdim=True)).clamp_min(eps)

    alpha_a, alpha_b = alpha(a), alpha(b)
    return (alpha_a.square().sum(-1) * a.square().sum(-1) + alpha_b.square().sum(-1) * b.square().sum(-1)
            - 2 * (alpha_a * alpha_b).sum(-1) * (a * b).sum(-1))


def _reinitialized_outputs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(classifier-weight gradient [K, D], embedding [B, D]) of `model` re-initialized N(0, 1), in train mode."""
    work = copy.deepcopy(model.model if isinstance(model, Teacher) else model)  # the Teacher wrapper stays in eval
    gaussian_init_(work, generator).train()
    with torch.no_grad():
        outputs = network_outputs(work, images)
    return _class_weight_gradient(outputs, labels), outputs.embedding


@register_proxy("diswot", reads="pair", source=DISWOT + " (the authors' code)")
def diswot(model: nn.Module, teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DisWOT as its code computes it (lliai/DisWOT-CVPR2023, the NB201 rank script's compute_diswot_procedure):
    teacher and student re-initialized N(0, 1) (`gaussian_init_`), then -(ICKD + SP):

    * ICKD (distiller_zoo/ICKD.py) on the classifier-weight gradients viewed [K, D, 1, 1]: the sum over
      classes k of ||N(g_k g_k^T) teacher - student||^2 / (D K);
    * SP (Similarity, called on the pooled embeddings [B, D] themselves, not a list of them, so it pairs
      sample rows and the code keeps the first): ||N(e e^T) teacher - student||^2 / D^2 of sample 0's
      embeddings e [D].

    fastnas's choices: the student is re-initialized from the global RNG (the caller seeds it), the teacher
    from a generator seeded with torch.initial_seed(), so it is the same network for every student of a run
    (the authors initialize it once); the teacher's gradient is this batch's (the authors' accumulates over
    the students, never zeroed); one batch for all students (the authors draw a new one per student); when
    the embeddings differ in width both are truncated to the narrower (the authors' code needs equal widths).
    """
    generator = torch.Generator(device=images.device).manual_seed(torch.initial_seed())
    grad_t, embedding_t = _reinitialized_outputs(teacher, images, labels, generator)
    grad_s, embedding_s = _reinitialized_outputs(model, images, labels, None)
    width = min(grad_t.shape[1], grad_s.shape[1])
    grad_t, grad_s, embedding_t, embedding_s = (x[:, :width] for x in (grad_t, grad_s, embedding_t, embedding_s))
    ickd = normalized_outer_distance(grad_t, grad_s).sum() / (width * grad_t.shape[0])
    sp = normalized_outer_distance(embedding_t[0], embedding_s[0]) / width ** 2
    return -(ickd + sp)


# --------------------------------------------------------------------------- size controls

@register_proxy("conv_count", source="fastnas's size control: the number of Conv2d layers")
def conv_count(inputs: ProxyInputs) -> float:
    """The number of Conv2d layers: what autodas_nb201's instinct term reduces to (each layer's
    mean |tanh(log_softmax(g))| is about tanh(log C), nearly 1)."""
    return float(sum(inputs.is_conv))


@register_proxy("conv_sqrt_numel_log_c", source="fastnas's size control: sum over Conv2d of sqrt(numel) log C_out")
def conv_sqrt_numel_log_c(inputs: ProxyInputs) -> float:
    """sum over Conv2d weights [C_out, ...] of sqrt(numel) log C_out: what autodas_resnet's instinct term
    ||log_softmax_0(g)||_F tends to when the gradients are small (log_softmax over C_out channels -> -log C_out)."""
    return sum(math.sqrt(w.numel()) * math.log(w.shape[0]) for w, conv in zip(inputs.weights, inputs.is_conv)
               if conv)


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
