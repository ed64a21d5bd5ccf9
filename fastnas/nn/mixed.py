"""Mixed-operator modules of a differentiable super-network, computed by fastnas.ops.mixed_node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import chunk_sum, mixed_node
from ..ops._reference import mixed_node_weights  # alpha -> weights on tiny tensors: plain PyTorch is fine
from .darts_ops import Zero, as_dtype, takes_relu_input
from .grouped import GroupRun, PackedStats, concat, group_signature


def _key(edge: int, op: int) -> str:
    return f"{edge}_{op}"


# ---- Operator outputs kept for the alpha gradient, without keeping them.
# mixed_node saves every operator output: d loss / d w_k = <grad, out_k>. Most DARTS
# operators end in an affine-free BatchNorm, whose backward already holds its input
# x; storing out_k = (x - mean(x)) / sqrt(var(x) + eps) as (x, eps) costs nothing,
# and backward recomputes it (one more pass over x).
# The 'none' operator's zeros are stored as their shape. This is ~20% of the bytes a
# DARTS step saves for backward (bench/bench_search_step.py measures it).
# On the grouped path the same hook also keeps the concatenated inputs of a group, which the
# pools save, as the list of the inputs themselves (packed by the same rules) instead of a copy.
_BATCH_NORM_NODES = ("NativeBatchNormBackward0", "CudnnBatchNormBackward0", "MiopenBatchNormBackward0")

# Called with every tensor the node's saved-tensor hook keeps. That hook hides the saves of mixed_node
# from any outer hook, so fastnas.nn.cost.count_saved_bytes registers here to see them.
saved_tensor_observers: list[Callable[[torch.Tensor], None]] = []


def _pack_operator_output(tensor: torch.Tensor, zero_outputs: set[int], concats: dict | None = None):
    packed = _packed_form(tensor, zero_outputs, concats or {})
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
    if packed[0] == "concat":
        return [kept for part in packed[1] for kept in _tensors_kept(part)]
    return []  # zeros: a shape


def _packed_form(tensor: torch.Tensor, zero_outputs: set[int], concats: dict):
    node = tensor.grad_fn
    if tensor.data_ptr() in zero_outputs:
        return ("zeros", tensor.shape, tensor.dtype, tensor.device)
    made_by, inputs = concats.get(tensor.data_ptr(), (None, None))
    if node is not None and node is made_by:  # the concatenation itself, not a view of it
        return ("concat", [_packed_form(x, zero_outputs, concats) for x in inputs])
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
    if packed[0] == "concat":
        return torch.cat([_unpack_operator_output(part) for part in packed[1]], dim=1)
    _, x, eps, stats = packed
    if stats is None or torch.is_grad_enabled():
        # Batch statistics of x again (a differentiable graph when backward runs with create_graph=True).
        return F.batch_norm(x, None, None, training=True, eps=eps)
    mean, inv_std = stats
    # (x - mean) * inv_std, BatchNorm's own formula with its saved (float32 under autocast) statistics
    per_channel = (1, -1) + (1,) * (x.dim() - 2)
    return as_dtype((x - mean.view(per_channel)) * inv_std.view(per_channel), x.dtype)


@dataclass
class _Term:
    """One call of a node's forward: `modules` (the same operation on `edges`) run as one group, or one module."""

    edges: tuple[int, ...]
    modules: list[nn.Module]
    relu: bool                # the modules take relu(x) (their leading ReLU was factored out)
    run: GroupRun | None      # None: modules[0] alone, called as a module
    batch_norm_sets: list[int]  # the plan's PackedStats sets of its BatchNorms, in the operation's order


class _Plan:
    """How a node computes one live set on inputs of given shapes: its terms, each chunk's (edge, op), and
    the running statistics of every grouped BatchNorm, packed (fastnas.nn.grouped.PackedStats)."""

    def __init__(self, terms: list[_Term], slots: list[int], stats: PackedStats):
        self.terms, self.slots, self.stats = terms, slots, stats
        self.chunks = tuple(len(term.edges) for term in terms)
        self._slot_index: dict[torch.device, torch.Tensor] = {}

    def slot_index(self, device: torch.device) -> torch.Tensor:
        """The flat index e * K + k of each chunk's weight, on `device` (uploaded once)."""
        if device not in self._slot_index:
            self._slot_index[device] = torch.tensor(self.slots, dtype=torch.long, device=device)
        return self._slot_index[device]


# Plans kept per node (one per live set and input shapes seen); more are only made by changing per-call masks.
_MAX_PLANS = 8


class MixedNode(nn.Module):
    """All candidate operations on all incoming edges of one DARTS node.

    The node value is sum over live (edge e, op k) of w(alpha)[e, k] * op_ek(x_e).
    Pruned operations are deleted (their parameters are freed) and never run.
    Operations marked ``relu_input`` share one relu(x_e) per edge.

    With ``group_operators`` (the default) the live copies of one operation on edges of
    one input shape run as one call over their concatenated inputs (fastnas.nn.grouped:
    grouped convolutions, one BatchNorm over all their channels, the pools), 'none' is
    skipped (it adds zeros), and fastnas.ops.chunk_sum weighs the chunks. A candidate with
    forward hooks, or of a kind without a grouped form, runs on its own. Without it,
    every candidate runs on its own and one fastnas.ops.mixed_node call sums them
    (also the path under torch.compile). Both give the same values and gradients.

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
        group_operators: run the same operation on several edges as one call (see above).
    """

    def __init__(self, num_edges: int, num_ops: int, build: Callable[[int, int], nn.Module],
                 mode: str = "softmax", temperature: float = 1.0, input_stride: int = 1,
                 recompute_outputs: bool = True, group_operators: bool = True):
        super().__init__()
        self.mode, self.temperature, self.input_stride = mode, temperature, input_stride
        self.recompute_outputs, self.group_operators = recompute_outputs, group_operators
        self._plans: dict[tuple, _Plan] = {}  # reset by prune()
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
            self._plans.clear()

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """Operator weights [E, K] of this node's mode from alpha [E, K], 0 where pruned; differentiable.

        The mask is copied to alpha's device once per pruning state: an upload per call would block
        the host (a stream sync on CUDA) and could not be captured in a CUDA graph.
        """
        if alpha.device not in self._device_masks:
            self._device_masks[alpha.device] = self.mask.to(alpha.device)
        return mixed_node_weights(alpha, self._device_masks[alpha.device], self.mode, self.temperature)

    @property
    def takes_weights(self) -> bool:
        """Whether forward() uses the `weights` it is given (the grouped path; the fused op derives its own)."""
        return self.group_operators and not torch.compiler.is_compiling()

    def forward(self, inputs: Sequence[torch.Tensor], alpha: torch.Tensor,
                mask: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
        """inputs: E tensors [B, C, H, W]; alpha: [E, K]. Returns [B, C, H', W'].

        mask: optional bool [E, K], False = skip that operator in this call only (it
        is neither run nor read, and its alpha gets no gradient); the node's pruned
        operators are skipped either way. Keep it on the CPU (a device mask costs a sync).
        weights: optional [E, K], self.weights(alpha) computed by the caller (SearchCell does it for
        all its nodes at once); used without a per-call mask, when takes_weights.
        """
        if mask is None:  # the pruning mask: its live list needs no tensor read (no torch.compile graph break)
            mask, live = self.mask, self.live
        else:
            mask = self._call_mask(mask)
            live = [tuple(pair) for pair in mask.nonzero().tolist()]
        if self.takes_weights and live:
            if mask is not self.mask or weights is None:
                weights = self.weights(alpha) if mask is self.mask else mixed_node_weights(
                    alpha, mask, self.mode, self.temperature)
            return self._grouped_forward(inputs, weights, live)
        if not live:
            return self._zeros(inputs)
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

    def _zeros(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The value of a node with nothing to add: zeros of the output shape."""
        return inputs[0][:, :, :: self.input_stride, :: self.input_stride].mul(0.0)

    def _plan(self, live: list[tuple[int, int]], inputs: Sequence[torch.Tensor]) -> _Plan:
        modules = [self.candidates[_key(edge, op)] for edge, op in live]
        hooked = tuple(bool(m._forward_hooks or m._forward_pre_hooks) for m in modules)
        key = (tuple(live), tuple(x.shape for x in inputs), hooked)
        if key not in self._plans:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[key] = self._make_plan(live, modules, hooked, inputs)
        return self._plans[key]

    def _make_plan(self, live, modules, hooked, inputs) -> _Plan:
        # Groups in the order of their first member (row-major): the same operation (op index and
        # configuration) on edges whose inputs have one shape (a reduction cell's two strides apart).
        groups: dict[tuple, list[tuple[int, int, nn.Module]]] = {}
        for (edge, op), module, has_hooks in zip(live, modules, hooked):
            if isinstance(module, Zero) and not has_hooks:
                continue  # 'none' adds zeros: its weight still counts in the softmax, through the weights
            signature = None if has_hooks else group_signature(module)
            key = (edge, op) if signature is None else (op, signature[0], signature[2], inputs[edge].shape)
            groups.setdefault(key, []).append((edge, op, module))
        terms, slots, batch_norm_sets = [], [], []
        num_ops = self.mask.shape[1]
        for members in groups.values():
            modules = [m for _, _, m in members]
            run, batch_norms_of, _ = group_signature(modules[0]) if len(members) > 1 else (None, (), None)
            sets = list(range(len(batch_norm_sets), len(batch_norm_sets) + len(batch_norms_of)))
            batch_norm_sets += [[batch_norm_of(m) for m in modules] for batch_norm_of in batch_norms_of]
            terms.append(_Term(tuple(e for e, _, _ in members), modules, takes_relu_input(modules[0]), run, sets))
            slots += [edge * num_ops + op for edge, op, _ in members]
        return _Plan(terms, slots, PackedStats(batch_norm_sets))

    def _grouped_forward(self, inputs: Sequence[torch.Tensor], weights: torch.Tensor,
                         live: list[tuple[int, int]]) -> torch.Tensor:
        plan = self._plan(live, inputs)
        if not plan.terms:  # only 'none' left
            return self._zeros(inputs)
        if not (self.recompute_outputs and torch.is_grad_enabled()):
            return self._run_plan(plan, inputs, weights, {})
        concats: dict[int, tuple] = {}  # data_ptr -> (grad_fn, inputs) of each concatenated group input
        with torch.autograd.graph.saved_tensors_hooks(lambda t: _pack_operator_output(t, set(), concats),
                                                      _unpack_operator_output):
            return self._run_plan(plan, inputs, weights, concats)

    def _run_plan(self, plan: _Plan, inputs: Sequence[torch.Tensor], weights: torch.Tensor,
                  concats: dict[int, tuple]) -> torch.Tensor:
        stats = plan.stats
        if stats.sets:
            stats.refresh()
            if stats.sets[0][0].training:
                stats.count.add_(1)  # as BatchNorm2d.forward counts its batches: every grouped one at once
        term_inputs: dict[tuple, torch.Tensor] = {}  # (edges, relu) -> the input, shared by the terms
        outs = []
        for term in plan.terms:
            if (term.edges, False) not in term_inputs:
                x = term_inputs[term.edges, False] = concat([inputs[e] for e in term.edges], 1)
                if len(term.edges) > 1:
                    concats[x.data_ptr()] = (x.grad_fn, [inputs[e] for e in term.edges])
            if term.relu and (term.edges, True) not in term_inputs:
                term_inputs[term.edges, True] = F.relu(term_inputs[term.edges, False])
            x = term_inputs[term.edges, term.relu]
            outs.append(term.modules[0](x) if term.run is None
                        else term.run(term.modules, [stats.views[i] for i in term.batch_norm_sets], x))
        return chunk_sum(outs, weights.flatten().index_select(0, plan.slot_index(weights.device)), plan.chunks)
