"""Plain-PyTorch implementations of every fastnas op.

These functions are the specification of the fused kernels: the tests compare
the C++/CUDA kernels against them, and ``fastnas.ops`` falls back to them on a
device the extension has no kernel for. They favour clarity over speed, but
none of them builds an N x N matrix per row or a stack of all operator outputs
larger than the inputs themselves.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

MIXED_NODE_MODES = ("softmax", "sigmoid", "relu_norm", "identity")
RANK_CORR_METHODS = ("kendall", "spearman")
FOREACH_TRANSFORMS = (
    "identity", "abs", "square", "pow4", "exp", "log_abs", "sqrt_abs", "sigmoid", "tanh", "relu",
)
FOREACH_REDUCTIONS = ("sum", "mean", "l1", "l2")
PAIR_METRICS = ("l1", "l2", "kl", "cosine", "pearson")

# log(|x| + LOG_ABS_EPS): keeps log finite at x = 0 (Auto-DAS's "abslog").
LOG_ABS_EPS = 1e-6
# Norm floor of the cosine and Pearson distances, as in F.cosine_similarity.
COSINE_EPS = 1e-8
# Norm floor of F.normalize, used by the AT maps and the Gram rows.
NORMALIZE_EPS = 1e-12


# --------------------------------------------------------------------------- mixed_node

def mixed_node_weights(alpha: torch.Tensor, mask: torch.Tensor, mode: str,
                       temperature: float = 1.0, same_node: torch.Tensor | None = None) -> torch.Tensor:
    """Operator weights w [E, K] of a mixed node; exactly 0 where ``mask`` is False.

    softmax: per edge over its live operators of alpha / temperature (an edge
    with no live operator gets all zeros); sigmoid: sigmoid(alpha / temperature);
    relu_norm: relu(alpha) / sum of relu(alpha) over all live entries of the node
    (all zeros when that sum is 0; temperature cancels out); identity: alpha.

    same_node: optional [E, E] 0/1 matrix, 1 where rows i and j belong to the same node, for the
    rows of several nodes at once (a whole cell): relu_norm then sums over each row's node.
    """
    if mask.device != alpha.device:
        mask = mask.to(alpha.device)
    scaled = alpha if temperature == 1 else alpha / temperature  # fewer aten calls: the step is dispatch-bound
    if mode == "softmax":
        # A finite fill (not -inf) keeps rows with no live operator free of NaN.
        logits = torch.where(mask, scaled, torch.finfo(alpha.dtype).min)
        return torch.where(mask, torch.softmax(logits, dim=1), 0.0)
    if mode == "sigmoid":
        return torch.sigmoid(scaled) * mask
    if mode == "relu_norm":
        live_relu = torch.relu(alpha) * mask
        total = live_relu.sum() if same_node is None else (same_node @ live_relu.sum(1)).unsqueeze(1)
        return live_relu / (total + (total == 0))  # total >= 0; divided by 1 when it is 0 (all weights 0)
    if mode == "identity":
        return alpha * mask
    raise ValueError(f"mode: expected one of {MIXED_NODE_MODES}, got {mode!r}")


def mixed_node(outs: Sequence[torch.Tensor], alpha: torch.Tensor, mask: torch.Tensor,
               mode: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """sum over live (e, k), row-major in ``mask``, of w[e, k] * outs[i]."""
    weights = mixed_node_weights(alpha, mask, mode, temperature)
    live_weights = weights.flatten()[mask.to(alpha.device).flatten()]
    result = live_weights[0] * outs[0]
    for weight, out in zip(live_weights[1:], outs[1:]):
        result = result + weight * out
    return result


def chunk_sum(outs: Sequence[torch.Tensor], weights: torch.Tensor, chunks: Sequence[int]) -> torch.Tensor:
    """sum over t and j of weights[s] * outs[t][:, j * C: (j + 1) * C], s counting the chunks in order."""
    total, start = 0, 0
    acc = torch.promote_types(outs[0].dtype, torch.float32)  # float32 sums for float16/bfloat16
    for out, n in zip(outs, chunks):
        w = weights[start: start + n].to(acc).view(1, n, *[1] * (out.dim() - 1))
        total = total + (out.unflatten(1, (n, -1)).to(acc) * w).sum(1)  # [B, n, C, ...] -> [B, C, ...]
        start += n
    return total.to(outs[0].dtype)


# --------------------------------------------------------------------------- depthwise_conv2d

def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int]) -> torch.Tensor:
    """x [B, C, H, W] convolved channel by channel with weight [C, 1, k_h, k_w]: F.conv2d with groups = C."""
    return F.conv2d(x, weight, None, stride, padding, dilation, x.shape[1])


# --------------------------------------------------------------------------- at_loss

def attention_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """AT attention map of a feature map [B, C, H, W]: normalized mean_c |x|^p, shape [B, H*W]."""
    return F.normalize(x.abs().pow(p).mean(1).flatten(1), dim=1, eps=NORMALIZE_EPS)


def at_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
            p: float = 2.0) -> torch.Tensor:
    """sum over pairs of mean((a(s) - a(t))^2); the teacher receives no gradient."""
    losses = [(attention_map(s, p) - attention_map(t.detach(), p)).pow(2).mean()
              for s, t in zip(student, teacher)]
    return torch.stack(losses).sum()


# --------------------------------------------------------------------------- rank_corr

def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dim, ties given their average rank (scipy's rankdata)."""
    ordered = torch.sort(x, dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, x.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, x.contiguous(), right=True)
    return (below + up_to + 1).to(x.dtype) / 2


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def _kendall_tau_b(scores: torch.Tensor, target: torch.Tensor, tile: int = 256) -> torch.Tensor:
    """Kendall tau-b per row by counting pair signs, tiled so memory stays O(P * tile * N)."""
    n = scores.shape[1]
    concordance = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
    untied_x = torch.zeros_like(concordance)
    untied_y = torch.zeros((), dtype=torch.float64, device=scores.device)
    def sign_of_difference(a, b):  # comparisons, not a - b, so that inf - inf is no NaN
        return (a > b).to(torch.float64) - (a < b).to(torch.float64)

    for start in range(0, n, tile):
        stop = min(start + tile, n)
        dx = sign_of_difference(scores[:, start:stop, None], scores[:, None, :])
        dy = sign_of_difference(target[start:stop, None], target[None, :])
        concordance += (dx * dy).sum((1, 2))
        untied_x += (dx != 0).sum((1, 2))
        untied_y += (dy != 0).sum()
    # Each unordered pair was counted twice; the factor cancels in the ratio.
    return concordance / torch.sqrt(untied_x * untied_y)


def rank_corr(scores: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """Rank correlation of every row of scores [P, N] with target [N]: shape [P].

    Equals scipy.stats.kendalltau (tau-b) or scipy.stats.spearmanr row by row,
    ties included; a row (or target) that is constant or holds NaN gives NaN.
    """
    s = scores.to(torch.float64)
    t = target.to(torch.float64)
    if method == "spearman":
        result = _pearson_rows(average_ranks(s), average_ranks(t).expand_as(s))
    elif method == "kendall":
        result = _kendall_tau_b(s, t)
    else:
        raise ValueError(f"method: expected one of {RANK_CORR_METHODS}, got {method!r}")
    has_nan = torch.isnan(s).any(1) | torch.isnan(t).any()
    return torch.where(has_nan, float("nan"), result).to(scores.dtype)


# --------------------------------------------------------------------------- foreach_reduce

FOREACH_TRANSFORM_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "abs": torch.abs,
    "square": lambda x: x * x,
    "pow4": lambda x: (x * x) * (x * x),
    "exp": torch.exp,
    "log_abs": lambda x: torch.log(x.abs() + LOG_ABS_EPS),
    "sqrt_abs": lambda x: torch.sqrt(x.abs()),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}

FOREACH_REDUCTION_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": torch.sum,
    "mean": torch.mean,
    "l1": lambda y: y.abs().sum(),
    "l2": lambda y: torch.linalg.vector_norm(y),
}


def foreach_reduce(tensors: Sequence[torch.Tensor], transform: str, reduction: str) -> torch.Tensor:
    """[reduction(transform(x)) for x in tensors] as one tensor of shape [len(tensors)]."""
    if transform not in FOREACH_TRANSFORM_FNS:
        raise ValueError(f"transform: expected one of {FOREACH_TRANSFORMS}, got {transform!r}")
    if reduction not in FOREACH_REDUCTION_FNS:
        raise ValueError(f"reduction: expected one of {FOREACH_REDUCTIONS}, got {reduction!r}")
    apply, reduce = FOREACH_TRANSFORM_FNS[transform], FOREACH_REDUCTION_FNS[reduction]
    return torch.stack([reduce(apply(x)) for x in tensors])


# --------------------------------------------------------------------------- pair_distance

def _cosine_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    norms = s.norm(dim=1).clamp_min(COSINE_EPS) * t.norm(dim=1).clamp_min(COSINE_EPS)
    return 1 - (s * t).sum(1) / norms


def pair_distance(student: torch.Tensor, teacher: torch.Tensor, metric: str) -> torch.Tensor:
    """Row-wise distance of feature pairs [B, D] -> [B].

    l1: sum |s - t|; l2: ||s - t||_2; kl: KL(softmax(t) || softmax(s));
    cosine: 1 - cos(s, t); pearson: 1 - cos(s - mean(s), t - mean(t)).
    """
    s, t = student, teacher
    if metric == "l1":
        return (s - t).abs().sum(1)
    if metric == "l2":
        return torch.linalg.vector_norm(s - t, dim=1)
    if metric == "kl":
        log_pt = F.log_softmax(t, dim=1)
        return (log_pt.exp() * (log_pt - F.log_softmax(s, dim=1))).sum(1)
    if metric == "cosine":
        return _cosine_distance(s, t)
    if metric == "pearson":
        return _cosine_distance(s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True))
    raise ValueError(f"metric: expected one of {PAIR_METRICS}, got {metric!r}")


def gram_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """DisWOT relation distance ||G_t - G_s||_F^2 / B^2, G = row-normalized f f^T of [B, D] features."""
    batch = student.shape[0]
    gram_s = F.normalize(student @ student.T, dim=1, eps=NORMALIZE_EPS)
    gram_t = F.normalize(teacher @ teacher.T, dim=1, eps=NORMALIZE_EPS)
    return (gram_t - gram_s).pow(2).sum() / (batch * batch)
