"""Drop-in replacements for the mixed operations of the DARTS reference code (quark0/darts model_search.py).

``MixedOp(C, stride)`` takes the reference's constructor arguments and its
``forward(x, weights)``: the caller has already normalized the weights (the
reference Network applies ``F.softmax`` to its alphas), so the op sums
``w[k] * op_k(x)`` in one fused call (``fastnas.ops.chunk_sum``, or
``fastnas.ops.mixed_node(mode="identity")`` with grouping off) instead of a Python
``sum`` of K scaled copies. ``darts_node`` builds a ``MixedNode`` holding every
incoming edge of a reference Cell's node, for one fused call per node instead of
one per edge, and runs the same operation on its edges as one call
(docs/fusion.md). docs/drop-in.md shows both switches.

The operators are the ones of ``fastnas.nn.darts_ops`` with
``search=True``: pooling followed by ``BatchNorm2d(affine=False)`` exactly as the
reference MixedOp wraps it, every other operator with ``affine=False``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .darts_ops import DARTS_PRIMITIVES, check_primitives, make_op
from .mixed import MixedNode


def darts_node(num_edges: int, C: int, reduction: bool = False,
               primitives: Sequence[str] = DARTS_PRIMITIVES, mode: str = "identity") -> MixedNode:
    """A node of a DARTS search cell: every primitive on each of its ``num_edges`` incoming edges.

    As in the reference Cell, edges 0 and 1 (the cell inputs) have stride 2 in a
    reduction cell. ``mode="identity"`` takes already-normalized weights [E, K]
    (the reference's ``weights[offset: offset + E]``); ``mode="softmax"`` takes the
    alphas themselves and fuses the softmax too.
    """
    primitives = check_primitives(primitives, "primitives")

    def build(edge: int, op: int):
        stride = 2 if reduction and edge < 2 else 1
        return make_op(primitives[op], C, stride, affine=False, search=True)

    return MixedNode(num_edges, len(primitives), build, mode=mode, input_stride=2 if reduction else 1)


class MixedOp(MixedNode):
    """One DARTS edge: sum over the primitives of weights[k] * op_k(x), in one fused call.

    Args:
        C: channels of the input and the output.
        stride: 1, or 2 on the input edges of a reduction cell (halves H and W).
        primitives: the candidate operation names, in the order of ``weights``.

    forward(x [B, C, H, W], weights [K], mask=None) -> [B, C, H / stride, W / stride].
    ``weights`` are used as given (normalize them first, as the reference does).
    ``mask``, a bool [K] (keep it on the CPU), skips the operators where it is
    False: they are not run and their weights get no gradient, so skip only
    pruned or zero-weight operators. Parameters come in the reference MixedOp's
    order (primitive by primitive), so its state dict values copy across in order.
    """

    def __init__(self, C: int, stride: int, primitives: Sequence[str] = DARTS_PRIMITIVES):
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride}")
        primitives = check_primitives(primitives, "primitives")
        super().__init__(1, len(primitives), lambda _edge, op: make_op(primitives[op], C, stride, affine=False,
                                                                       search=True),
                         mode="identity", input_stride=stride)
        self.primitives = primitives

    def forward(self, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if weights.shape != (len(self.primitives),):
            raise ValueError(f"weights: expected shape ({len(self.primitives)},), one weight per primitive, "
                             f"got {tuple(weights.shape)}")
        if mask is not None and mask.shape != weights.shape:
            raise ValueError(f"mask: expected shape ({len(self.primitives)},) like weights, got {tuple(mask.shape)}")
        return super().forward([x], weights.unsqueeze(0), None if mask is None else mask.unsqueeze(0))
