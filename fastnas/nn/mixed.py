"""Mixed-operator modules of a differentiable super-network, computed by fastnas.ops.mixed_node."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import mixed_node
from ..ops._reference import mixed_node_weights  # alpha -> weights on tiny tensors: plain PyTorch is fine
from .darts_ops import Zero


def _key(edge: int, op: int) -> str:
    return f"{edge}_{op}"


# ---- Operator outputs kept for the alpha gradient, without keeping them.
# mixed_node saves every operator output: d loss / d w_k = <grad, out_k>. Most DARTS
# operators end in an affine-free BatchNorm, whose backward already holds its input
# x; storing out_k = (x - mean(x)) / sqrt(var(x) + eps) as (x, eps) costs nothing,
# and backward recomputes it (one more pass over x).
# The 'none' operator's zeros are stored as their shape. This is ~20% of the bytes a
# DARTS step saves for backward (bench/bench_search_step.py measures it).
_BATCH_NORM_NODES = ("NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0")

# Called with every tensor the node's saved-tensor hook keeps. That hook hides the saves of mixed_node
# from any outer hook, so fastnas.nn.cost.count_saved_bytes registers here to see them.
saved_tensor_observers: list[Callable[[torch.Tensor], None]] = []


def _pack_operator_output(tensor: torch.Tensor, zero_outputs: set[int]):
    packed = _packed_form(tensor, zero_outputs)
    for observe in saved_tensor_observers:
        for kept in _tensors_kept(packed):
            observe(kept)
    return packed


def _tensors_kept(packed) -> list[torch.Tensor]:
    if isinstance(packed, torch.Tensor):
        return [packed]
    if packed[0] == "batch_norm":
        _, x, _, stats = packed
        return [x, *(stats or ())]
    return []  # zeros: a shape


def _packed_form(tensor: torch.Tensor, zero_outputs: set[int]):
    node = tensor.grad_fn
    if tensor.data_ptr() in zero_outputs:
        return ("zeros", tensor.shape, tensor.dtype, tensor.device)
    name = type(node).__name__
    if name in _BATCH_NORM_NODES and node._saved_training and node._saved_weight is None and tensor.dim() >= 2:
        # The CPU/CUDA native kernel also saved the batch mean and 1/std: rebuilding is then one pass.
        stats = (node._saved_result1, node._saved_result2) if name == "NativeBatchNormBackward0" else None
        return ("batch_norm", node._saved_input, node._saved_eps, stats)
    return tensor


def _unpack_operator_output(packed) -> torch.Tensor:
    if isinstance(packed, torch.Tensor):
        return packed
    if packed[0] == "zeros":
        _, shape, dtype, device = packed
        return torch.zeros(shape, dtype=dtype, device=device)
    _, x, eps, stats = packed
    if stats is None or torch.is_grad_enabled():
        # Batch statistics of x again (a differentiable graph when backward runs with create_graph=True).
        return F.batch_norm(x, None, None, training=True, eps=eps)
    mean, inv_std = stats
    # (x - mean) * inv_std as BatchNorm's one-pass inference kernel: var = 1 / inv_std^2 - eps.
    return F.batch_norm(x, mean, inv_std.pow(-2) - eps, training=False, eps=eps)


class MixedNode(nn.Module):
    """All candidate operations on all incoming edges of one DARTS node.

    The node value is sum over live (edge e, op k) of w(alpha)[e, k] * op_ek(x_e),
    computed in one fused call. Pruned operations are deleted (their parameters
    are freed) and never run. Operations marked ``relu_input`` share one relu(x_e)
    per edge.

    Args:
        num_edges: E, the number of inputs of the node.
        num_ops: K, candidates per edge.
        build: build(edge, op) -> the module of candidate op on that edge.
        mode: weight mode of fastnas.ops.mixed_node (softmax, sigmoid, relu_norm, identity).
        input_stride: spatial stride from inputs[0] to the node value (2 in a reduction cell);
            gives the shape of the zeros a fully pruned node outputs.
        recompute_outputs: keep the outputs of operators ending in an affine-free
            BatchNorm (and of 'none') for the alpha gradient as the few numbers that
            rebuild them from what BatchNorm saves anyway (see above); False saves them.
    """

    def __init__(self, num_edges: int, num_ops: int, build: Callable[[int, int], nn.Module],
                 mode: str = "softmax", temperature: float = 1.0, input_stride: int = 1,
                 recompute_outputs: bool = True):
        super().__init__()
        self.mode, self.temperature, self.input_stride = mode, temperature, input_stride
        self.recompute_outputs = recompute_outputs
        self.candidates = nn.ModuleDict({_key(e, k): build(e, k) for e in range(num_edges) for k in range(num_ops)})
        # On the CPU on purpose: mixed_node reads it on the host, a device copy would cost a sync.
        self.mask = torch.ones(num_edges, num_ops, dtype=torch.bool)
        self._device_masks: dict[torch.device, torch.Tensor] = {}  # copies for weights(); reset by prune()

    @property
    def live(self) -> list[tuple[int, int]]:
        """(edge, op) pairs still in the node, row-major: the keys of `candidates` (prune deletes both
        the module and the mask entry), so torch.compile traces it without reading a tensor."""
        return [(int(edge), int(op)) for edge, op in (key.split("_") for key in self.candidates)]

    def _call_mask(self, skip_mask: torch.Tensor) -> torch.Tensor:
        """The node's pruning mask, narrowed by the caller's per-call mask."""
        if skip_mask.dtype != torch.bool or tuple(skip_mask.shape) != tuple(self.mask.shape):
            raise ValueError(f"mask: expected a bool tensor of shape {tuple(self.mask.shape)} (edges, ops), "
                             f"got {skip_mask.dtype} {tuple(skip_mask.shape)}")
        return self.mask & skip_mask.cpu()

    def prune(self, edge: int, op: int) -> None:
        """Removes candidate (edge, op) for good."""
        if self.mask[edge, op]:
            self.mask[edge, op] = False
            del self.candidates[_key(edge, op)]
            self._device_masks.clear()

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """Operator weights [E, K] of this node's mode from alpha [E, K], 0 where pruned; differentiable.

        The mask is copied to alpha's device once per pruning state: an upload per call would block
        the host (a stream sync on CUDA) and could not be captured in a CUDA graph.
        """
        if alpha.device not in self._device_masks:
            self._device_masks[alpha.device] = self.mask.to(alpha.device)
        return mixed_node_weights(alpha, self._device_masks[alpha.device], self.mode, self.temperature)

    def forward(self, inputs: Sequence[torch.Tensor], alpha: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """inputs: E tensors [B, C, H, W]; alpha: [E, K]. Returns [B, C, H', W'].

        mask: optional bool [E, K], False = skip that operator in this call only (it
        is neither run nor read, and its alpha gets no gradient); the node's pruned
        operators are skipped either way. Keep it on the CPU (a device mask costs a sync).
        """
        if mask is None:  # the pruning mask: its live list needs no tensor read (no torch.compile graph break)
            mask, live = self.mask, self.live
        else:
            mask = self._call_mask(mask)
            live = [tuple(pair) for pair in mask.nonzero().tolist()]
        if not live:
            return inputs[0][:, :, :: self.input_stride, :: self.input_stride].mul(0.0)
        outs, relu_inputs, zero_outputs = [], {}, set()
        for edge, op in live:
            module = self.candidates[_key(edge, op)]
            if getattr(module, "relu_input", False):
                if edge not in relu_inputs:
                    relu_inputs[edge] = F.relu(inputs[edge])
                outs.append(module(relu_inputs[edge]))
            else:
                outs.append(module(inputs[edge]))
            if isinstance(module, Zero):
                zero_outputs.add(outs[-1].data_ptr())
        if not (self.recompute_outputs and torch.is_grad_enabled()) or torch.compiler.is_compiling():
            return mixed_node(outs, alpha, mask, self.mode, self.temperature)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: _pack_operator_output(t, zero_outputs),
                                                      _unpack_operator_output):
            return mixed_node(outs, alpha, mask, self.mode, self.temperature)
