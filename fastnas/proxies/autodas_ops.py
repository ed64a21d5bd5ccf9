"""Table 1 of Auto-DAS in code: every primitive operation of the proxy search space, defined once.

Instinct proxies read one tensor per student layer (its weight, gradient, input
activation, output or virtual gradient) and chain UNARY_OPS on it; in fastnas's tree
structure two such branches meet in a BINARY_OPS node. Interaction proxies apply the
same TRANSFORMS to a student tensor and the matching teacher tensor (features,
embedding or logits, batch first), compare them with a DISTANCES function (a scalar)
and scale the distance with a WEIGHTS node.

Table 1 names the ops; the authors' code (lliai/Auto-DAS, primitives/operations/unary_ops.py,
primitives/transform.py, primitives/distance.py, primitives/weight.py) defines them and adds a
few the table does not list (abs, logsoftmax, normalize, frobenius_norm, the transforms
softmax_N, norm_N, sigmoid, relu, abs, pow2, multi_scale_r4, the distances multiply, kl_T1/4/8,
l1_loss, mse_loss and the weights); each definition follows that code unless a comment says
otherwise. Ops that would be random in the authors' code (mask, drop) use a fixed pattern so
that every architecture sees the same one and scores stay comparable.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..ops import foreach_reduce, pair_distance

EPS = 1e-9  # the authors' guard against division by zero and log(0)
ATTENTION_TEMPERATURE = 0.5  # satt / natt / catt temperature T of the authors' code


class LayerReduction:
    """A unary op that reduces a tensor to one number: reduction(transform(x)) of foreach_reduce.

    Called on one tensor it gives a 0-d tensor; `many` reduces every layer of an
    architecture in one fused foreach_reduce call (the batched evaluator uses it).
    """

    def __init__(self, transform: str, reduction: str):
        self.transform, self.reduction = transform, reduction

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.many([x])[0]

    def many(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(foreach_reduce(tensors, self.transform, self.reduction).unbind())


def signed_log(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(|x| + 1e-9): the authors' `log`, defined for every real x."""
    return torch.sign(x) * torch.log(x.abs() + EPS)


def abs_log(x: torch.Tensor) -> torch.Tensor:
    """log|x|, with log|0| taken as 0 (the authors set zeros to 1 first)."""
    return torch.log(torch.where(x == 0, torch.ones_like(x), x.abs()))


def abs_sqrt(x: torch.Tensor) -> torch.Tensor:
    return x.abs().sqrt()


def softmax_all(x: torch.Tensor) -> torch.Tensor:
    """Softmax over all elements. Our choice: the authors take dim 0, which for a weight is
    the output channels and for an activation the batch; one distribution per layer is
    shape-independent."""
    return F.softmax(x.flatten(), dim=0).view_as(x)


def min_max(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min + 1e-9) over the whole tensor."""
    low, high = x.min(), x.max()
    return (x - low) / (high - low + EPS)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the whole tensor (unbiased std as torch.std); NaN (one element, constant x) -> 0."""
    if x.numel() < 2:  # the authors' std is NaN there, which they set to 0
        return torch.zeros_like(x)
    z = (x - x.mean()) / x.std()
    return torch.where(torch.isnan(z), torch.zeros_like(z), z)


def to_std(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of all elements. Our choice: the population std (correction 0),
    so a one-element tensor gives 0 instead of NaN."""
    return x.std(correction=0)


# Instinct unary ops (Table 1, first row). Four reduce a layer to a scalar.
UNARY_OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "mish": F.mish,
    "leaky_relu": F.leaky_relu,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "softmax": softmax_all,
    "sigmoid": torch.sigmoid,
    "pow2": torch.square,
    "pow4": lambda x: x.square().square(),
    "log": signed_log,
    "abslog": abs_log,
    "abssqrt": abs_sqrt,
    "l1_norm": LayerReduction("abs", "mean"),  # authors: sum|x| / numel
    "revert": torch.neg,
    "min_max": min_max,
    "to_mean": LayerReduction("identity", "mean"),
    "to_std": to_std,
    "invert": lambda x: 1 / (x + EPS),
    # Our reading of ln_norm: the Frobenius (l2) norm, the authors' frobenius_norm.
    "ln_norm": LayerReduction("identity", "l2"),
    # The authors' normalized_sum is sum(x) / numel(x), the same number as to_mean; kept as Table 1 names it.
    "normalized_sum": LayerReduction("identity", "mean"),
    "no_op": lambda x: x,
    # In the authors' unary_ops.py, not in Table 1 (their released programs use logsoftmax and frobenius_norm).
    "abs": torch.abs,
    "logsoftmax": lambda x: F.log_softmax(x, dim=0),  # the authors' dim 0: a weight's output channels
    "normalize": normalize,
    "frobenius_norm": LayerReduction("identity", "l2"),
    "sqrt": lambda x: torch.sqrt(torch.relu(x)),  # the authors' sqrt sets x <= 0 to 0 first
    "to_sum": LayerReduction("identity", "sum"),  # the authors' to_sum_scalar; Eq. 5 divides by a sum
}


def _same_shape_or_means(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Branches of different shapes (an activation next to a weight, or a reduced branch)
    meet as their means; the authors' code reduces with convert_to_float in that case."""
    if a.shape == b.shape:
        return a, b
    return a.mean(), b.mean()


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    return lambda a, b: fn(*_same_shape_or_means(a, b))


# Instinct binary ops (Table 1, third row): elementwise on same-shape tensors; dot gives a scalar.
BINARY_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sum": _binary(torch.add),
    "subtract": _binary(torch.sub),
    "multiply": _binary(torch.mul),
    "divide": _binary(lambda a, b: a / (b + EPS)),
    "dot": _binary(lambda a, b: (a * b).sum()),
}


def _is_map(x: torch.Tensor) -> bool:
    return x.dim() == 4


def batchnorm(x: torch.Tensor) -> torch.Tensor:
    """Batch normalization without affine parameters: each channel (dim 1) to zero mean, unit variance."""
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=0)
    return (x - mean) / torch.sqrt(var + 1e-5)


def _fixed_keep_mask(shape: tuple[int, ...], keep: float, device: torch.device) -> torch.Tensor:
    """A 0/1 mask drawn from a generator seeded 0: the same for every architecture."""
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(shape, generator=generator) < keep).to(device)


def spatial_mask(x: torch.Tensor) -> torch.Tensor:
    """Zero 65 % of the spatial positions (the authors' threshold) of a [B, C, H, W] map."""
    if not _is_map(x):
        return x
    B, _, H, W = x.shape
    return x * _fixed_keep_mask((B, 1, H, W), 0.35, x.device).to(x.dtype)


def channel_drop(x: torch.Tensor) -> torch.Tensor:
    """Dropout2d with p = 0.1 (the authors'), fixed pattern, survivors scaled by 1 / 0.9."""
    shape = tuple(x.shape[:2]) + (1,) * (x.dim() - 2)
    return x * _fixed_keep_mask(shape, 0.9, x.device).to(x.dtype) / 0.9


def channel_gram(x: torch.Tensor) -> torch.Tensor:
    """bmm: per-sample channel Gram matrix [B, C, C] of a map (of a [B, C, M] tensor); 2-d unchanged."""
    if x.dim() == 2:
        return x
    flat = x.flatten(2)
    return torch.bmm(flat, flat.transpose(1, 2))


def batch_gram(x: torch.Tensor) -> torch.Tensor:
    """mm: batch Gram matrix [B, B] of the flattened samples."""
    flat = x.flatten(1)
    return flat @ flat.t()


def multi_scale(x: torch.Tensor, ratio: int = 2) -> torch.Tensor:
    """ratio x ratio max pooling of a map (the authors' multi_scale_r2 / _r4; ceil mode so small maps
    survive, where the authors' einops reduce fails unless H and W divide by the ratio)."""
    return F.max_pool2d(x, ratio, ceil_mode=True) if _is_map(x) else x


def local_patches(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 patches as tokens: [B, C, H, W] -> [B, C * H/2 * W/2, 2, 2] (the authors' local_s2);
    unchanged when H or W is odd."""
    if not _is_map(x) or x.shape[2] % 2 or x.shape[3] % 2:
        return x
    B, C, H, W = x.shape
    patches = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 2, 4, 3, 5)
    return patches.reshape(B, C * (H // 2) * (W // 2), 2, 2)


def spatial_attention(x: torch.Tensor) -> torch.Tensor:
    """satt: H W softmax(mean_c |x| / T) over positions -> [B, H W]; 2-d / 3-d unchanged."""
    if not _is_map(x):
        return x
    B, _, H, W = x.shape
    return H * W * F.softmax(x.abs().mean(1).view(B, -1) / ATTENTION_TEMPERATURE, dim=1)


def batch_attention(x: torch.Tensor) -> torch.Tensor:
    """natt: B softmax(x / T) over the batch dimension."""
    return x.shape[0] * F.softmax(x / ATTENTION_TEMPERATURE, dim=0)


def channel_attention(x: torch.Tensor) -> torch.Tensor:
    """catt: C softmax(./T) over channels, of mean_hw |x| for a map -> [B, C], of x itself otherwise."""
    C = x.shape[1]
    scores = x.abs().mean(dim=(2, 3)) if _is_map(x) else x
    return C * F.softmax(scores / ATTENTION_TEMPERATURE, dim=1)


# Interaction transforms (Table 1, fourth and fifth rows), applied alike to student and teacher.
TRANSFORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "log": signed_log,
    "sqrt": abs_sqrt,  # sqrt of |x|: the authors' torch.sqrt gives NaN for every negative feature
    "batchnorm": batchnorm,
    "min_max": min_max,
    "norm": lambda x: F.normalize(x, dim=1),  # l2 over channels / classes (the authors' norm_C)
    "softmax": lambda x: F.softmax(x, dim=1),  # over channels / classes (the authors' softmax_C)
    "exp": torch.exp,
    "mish": F.mish,
    "leaky_relu": F.leaky_relu,
    "mask": spatial_mask,
    "no_op": lambda x: x,
    "bmm": channel_gram,
    "mm": batch_gram,
    "scale": lambda x: (x + 1) / 2,
    "multi_scale": multi_scale,
    "local": local_patches,
    "batch": lambda x: x.flatten(1),
    "channel": lambda x: x.flatten(2) if x.dim() > 2 else x,
    "drop": channel_drop,
    "satt": spatial_attention,
    "natt": batch_attention,
    "catt": channel_attention,
    # In the authors' transform.py, not in Table 1 (their released programs use them).
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "abs": torch.abs,
    "pow2": torch.square,
    "softmax_N": lambda x: F.softmax(x, dim=0),  # over the batch
    "norm_N": lambda x: F.normalize(x, dim=0),  # l2 over the batch
    "multi_scale_r4": lambda x: multi_scale(x, 4),
}


def hard_label_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each student row against the teacher row's arg-max (hard-label KD) -> [B]."""
    return F.cross_entropy(student, teacher.argmax(dim=1), reduction="none")


def _per_sample(distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    """fastnas's distances: the mean over samples of a distance between flattened rows [B, D]."""
    return lambda s, t: distance(s.flatten(1).contiguous(), t.flatten(1).contiguous()).mean()


def tempered_kl(temperature: float):
    """The authors' kl_T: T^2 KL(softmax(t / T) || softmax(s / T)) over dim 1, summed, / B (batchmean).

    For a map [B, C, H, W] the softmax is over channels at each position, as F.log_softmax(dim=1).
    """
    def distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        rows_s, rows_t = (x.movedim(1, -1).reshape(-1, x.shape[1]).contiguous() for x in (s, t))
        kl = pair_distance(rows_s / temperature, rows_t / temperature, "kl")
        return kl.sum() / s.shape[0] * temperature ** 2
    return distance


# Interaction distances, student and teacher tensors of one shape -> a scalar. Table 1's last row
# (l1 ... pearson) as fastnas defines them: the mean over samples of a distance between flattened rows
# (fastnas.ops.pair_distance). The authors' own (distance.py), on the whole tensors: multiply, kl_T*, l1_loss,
# mse_loss.
DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _per_sample(lambda s, t: pair_distance(s, t, "l1")),
    "l2": _per_sample(lambda s, t: pair_distance(s, t, "l2")),
    "kl": _per_sample(lambda s, t: pair_distance(s, t, "kl")),
    "hard": _per_sample(hard_label_distance),
    "cosine": _per_sample(lambda s, t: pair_distance(s, t, "cosine")),
    "pearson": _per_sample(lambda s, t: pair_distance(s, t, "pearson")),
    "multiply": lambda s, t: (s * t).mean(),
    "kl_T1": tempered_kl(1.0),
    "kl_T4": tempered_kl(4.0),
    "kl_T8": tempered_kl(8.0),
    "l1_loss": lambda s, t: (s - t).abs().mean(),
    "mse_loss": lambda s, t: (s - t).square().mean(),
}


def teacher_student_cosine(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Mean over feature columns of the cosine similarity across the batch of the flattened t and s
    (the authors' F.cosine_similarity(t.view(N, -1), s.view(N, -1), dim=0).mean())."""
    return F.cosine_similarity(t.flatten(1), s.flatten(1), dim=0).mean()


# Weight nodes (the authors' weight.py; the others there are commented out): distance d, transformed teacher t and
# student s -> the weighted distance.
WEIGHTS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "w1_teacher": lambda d, t, s: d,
    "w100_teacher_student": lambda d, t, s: d * 100 * teacher_student_cosine(t, s),
}

# Instinct inputs: the per-layer lists of fastnas.proxies.inputs (outputs = the authors' act, Conv2d outputs).
INSTINCT_INPUTS = ("activations", "outputs", "grads", "weights", "virtual_grads")
INTERACTION_INPUTS = ("feature", "embedding", "logits")  # the authors' k1, k2, k3
