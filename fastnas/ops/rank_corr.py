"""rank_corr: Kendall tau-b or Spearman rho of many score rows with one target, in one call."""

from __future__ import annotations

import torch

from . import _reference
from ._extension import has_kernel

_OP = torch.ops.fastnas.rank_corr


def rank_corr(scores: torch.Tensor, target: torch.Tensor, method: str = "kendall") -> torch.Tensor:
    """Rank correlation of every row of ``scores`` with ``target``.

    Typical use: P zero-cost proxies (or P candidate rankers) scored on the same
    N architectures, correlated with the N true accuracies.

    Args:
        scores: [P, N], float32 or float64 (float16/bfloat16 too on CUDA). Must be
            2-d: pass ``scores[None]`` for a single row.
        target: [N], same dtype and device as ``scores``.
        method: ``kendall`` (tau-b, as scipy.stats.kendalltau) or ``spearman``
            (as scipy.stats.spearmanr); ties are handled as scipy does.

    Returns:
        [P] in the dtype of ``scores``, computed in float64. A row that is constant
        or holds NaN gives NaN, and so does every row when the target is constant,
        holds NaN, or N < 2. Ranks are not differentiable: the result is detached
        (it never requires grad).
    """
    if not has_kernel(scores.device):
        return _reference.rank_corr(scores.detach(), target.detach(), method)
    return _OP(scores.detach(), target.detach(), method)


@torch.library.register_fake("fastnas::rank_corr")
def _(scores, target, method):
    torch._check(scores.dim() == 2, lambda: f"scores: expected a 2-d tensor [P, N], got shape {tuple(scores.shape)}")
    return scores.new_empty(scores.shape[0])
