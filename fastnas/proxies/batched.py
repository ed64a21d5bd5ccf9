"""Batched scoring of many NAS-Bench-201 cells per pass, instead of building and running one network at a time.

One network at a time spends most of a CPU's time outside arithmetic: building the network, the registry's deep
copies (two for synflow), hooks and many small kernels. Here `SharedNB201` holds one weight per (stage, cell,
edge, operation), and a pass runs a group of architectures side by side: tensors are laid out
``[B, A, C, H, W]`` (A architectures of the group), each edge runs an operation once for all the architectures
that chose it (the architectures folded into the convolution's batch), and BatchNorm normalizes each
architecture with its own batch statistics. Architecture a of a pass computes what ``SharedNB201.network(a)``, an
ordinary NB201Network holding the same weights, computes; tests/test_batched_scoring.py checks every proxy
against the registry's score of that network.

How each proxy is batched:

* ``params``, ``flops``: analytic in the cell's operations (`fastnas.search_spaces.nb201.count_cost`).
* ``synflow``: with |weights|, BatchNorm removed and an all-ones input (the reference's set-up) every activation
  is >= 0, so the ReLUs pass everything and the network is linear; the sum over layers of |W * dR/dW| is then
  the derivative of R = sum(logits) when every layer's weight is scaled by t, at t = 1 (Euler's theorem), a
  forward-mode derivative: each state carries its value v and tangent u, a layer maps (v, u) to (W v, W (u + v))
  and synflow is the tangent of R. Float64 as the reference, forward passes only (no autograd graph).
* ``snip``, ``grad_norm``, ``fisher``: one forward and one cross-entropy backward to every layer output (the
  losses of the architectures summed: each reaches only its own activations); the weight gradients of each
  architecture come from one grouped convolution backward per layer call (the architectures as the groups).
* ``jacov``: the gradient of sum(logits) with respect to each architecture's copy of the images.
* ``nwot``: the ReLU codes of each state. A state read by k ReLUs (k convolution edges leave its node) counts
  k times, as the k ReLU modules of the one-network version do; the kernel is 2 c c^T + D - s_i - s_j (the
  same count as c c^T + (1 - c)(1 - c)^T; s the rows' sums, D the units), its products summed exactly over the
  states (`_CodeAgreements`) and the kernel formed once.
* Any other proxy (grasp's Hessian-vector product, the teacher-based diswot and Auto-DAS programs, proxies a
  user registers) is not batched: each architecture's network is built with the shared weights and scored by
  the registry (`score_many`).

The data proxies share one train-mode forward of the batch: their one-network versions each run such a forward
of the same images, so they read the same activations.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..search_spaces.nb201 import (EDGES, NB201_OPS, STAGES, Cell, NB201Network, cell_index, count_cost, edge_op,
                                    parse_arch)
from ..nn.pooling import avg_pool_3x3
from .baselines import jacov_of_jacobians
from .inputs import NetworkOutputs
from .registry import _check_batch, get_proxy, score_many

DATA_FREE = ("params", "flops", "synflow")
DATA_PROXIES = ("snip", "grad_norm", "fisher", "jacov", "nwot")
BATCHED = DATA_FREE + DATA_PROXIES
CONV_OPS = ("nor_conv_1x1", "nor_conv_3x3")
# Architectures per pass, fastnas's choice, by device type. On a CPU the caches set them: a pass whose
# tensors stay in cache runs faster (2-core EPYC, 2 threads, bench/results/nb201-scoring-cpu-1024-cells*.json:
# synflow on 1,024 sampled cells 13.6 ms a cell at 16 a pass, 21.6 at 64; snip,
# grad_norm and jacov fastest at one architecture of 64 images). Where the cells are dense in the part of
# the space they span (a chunk of consecutive cells, or all of them), the sorted cells of a pass share more
# edges and 64 a pass wins (all 15,625: 202 s against 227 s at 16): the switch at half the span lies between
# those measured points. On a GPU memory sets them: synflow passes
# hold two images per architecture and no autograd graph; the data proxies hold the graph of B images each.
SYNFLOW_ARCHS_PER_PASS = {"cpu": 16, "cpu-dense": 64, "gpu": 64}
IMAGES_PER_PASS = {"cpu": 64, "gpu": 256}
# Edge e of a cell runs from node EDGE_NODES[e][0] to node EDGE_NODES[e][1] (the order of InferCell.edges).
EDGE_NODES = [(source, target) for target in range(1, 4) for source in range(target)]
NWOT_EXACT_UNITS = 2 ** 24  # float32 sums of 0/1 products are exact below this


def _cell_ops(cell: Cell) -> list[str]:
    return [op for node in cell for op in node]


class SharedNB201(nn.Module):
    """The weights of every NAS-Bench-201 cell at once: one per (stage, cell, edge, convolution).

    The stem, the two reductions, the last BatchNorm and the classifier are those of an NB201Network whose cells
    are all ``none`` (``self.base``); ``self.edge_ops[stage][cell][edge][op]`` is the ReLU-Conv-BN of a
    convolution edge. Parameters are drawn by PyTorch's default initialization in that order, so
    ``torch.manual_seed(s)`` before construction fixes them.
    """

    def __init__(self, C: int = 16, N: int = 5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        empty = tuple(("none",) * j for j in range(1, 4))
        self.base = NB201Network(empty, C, N, num_classes, in_channels)  # validates the sizes
        self.C, self.N, self.num_classes, self.in_channels = C, N, num_classes, in_channels
        self.edge_ops = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(nn.ModuleDict({op: edge_op(op, C * 2 ** stage) for op in CONV_OPS})
                                        for _ in range(EDGES)) for _ in range(N)) for stage in range(STAGES))

    def network(self, arch: str) -> NB201Network:
        """The NB201Network of `arch` holding this object's weights (what a batched pass computes for `arch`)."""
        cell = parse_arch(arch)
        net = NB201Network(cell, self.C, self.N, self.num_classes, self.in_channels).to(self.base.stem[0].weight)
        net.load_state_dict(self.base.state_dict(), strict=False)  # all but the edges' convolutions
        for stage in range(STAGES):
            cells = list(net.stages[stage])[1 if stage > 0 else 0:]
            for k, cell_module in enumerate(cells):
                for e, op in enumerate(_cell_ops(cell)):
                    if op in CONV_OPS:
                        cell_module.edges[e].load_state_dict(self.edge_ops[stage][k][e][op].state_dict())
        return net

    def extra_repr(self) -> str:
        return f"C={self.C}, N={self.N}, num_classes={self.num_classes}, in_channels={self.in_channels}"


class _Group:
    """The architectures of one pass: for each edge, which of them run each operation."""

    def __init__(self, cells: Sequence[Cell], device: torch.device):
        self.size = len(cells)
        ops = [_cell_ops(cell) for cell in cells]
        # members[e][op]: indices (into the group) of the architectures running op on edge e; None for all of them
        self.members: list[dict[str, torch.Tensor | None]] = []
        for e in range(EDGES):
            by_op = {}
            for op in NB201_OPS[1:]:  # "none" adds nothing
                chosen = [a for a in range(self.size) if ops[a][e] == op]
                if chosen:
                    by_op[op] = None if len(chosen) == self.size else torch.tensor(chosen, device=device)
            self.members.append(by_op)
        # relu_readers[i][a]: the ReLU modules reading node i of architecture a (its convolution out-edges)
        self.relu_readers = [[sum(ops[a][e] in CONV_OPS for e, (source, _) in enumerate(EDGE_NODES) if source == node)
                              for a in range(self.size)] for node in range(3)]


class _CodeAgreements:
    """NWOT's kernels [A, B, B] of a pass's A architectures, accumulated state by state.

    A state read by k ReLUs adds k (2 c c^T + D - s_i - s_j) to its architecture's kernel: c its 0/1 codes
    [B, D], s_i = c_i . c_i (the same count as c c^T + (1 - c)(1 - c)^T). The products c c^T are summed exactly,
    and the kernel is formed once at the end: on a CPU each is an int8 product accumulated in int32
    (torch._int_mm, exact for D < 2^31, half the time of float32's), summed in int64; elsewhere a float32
    product (exact for D < 2^24, else float64) summed in float64.
    """

    def __init__(self, size: int, batch: int, device: torch.device):
        self.int8 = device.type == "cpu"
        self.products = torch.zeros(size, batch, batch, dtype=torch.int64 if self.int8 else torch.float64,
                                    device=device)
        self.units = [0] * size

    def add(self, active: torch.Tensor, architecture: int, count: int) -> None:
        """Count `count` times the codes of a ReLU's output `active` [B, ...] (nonzero = code 1)."""
        if active.dim() == 4 and active.is_contiguous(memory_format=torch.channels_last):
            active = active.permute(0, 2, 3, 1)  # the units in memory order, so that flattening them is a view
        # relu(x) != 0 is x > 0 (for every x but NaN, which score_nb201 keeps out), and on a CPU a cast costs
        # less than a comparison
        codes, units = active.bool().flatten(1), active[0].numel()
        if self.int8 and 2 <= units < 2 ** 31:  # torch._int_mm miscounts an inner size of 1
            codes = codes.view(torch.int8)
            products = torch._int_mm(codes, codes.t())
        else:
            codes = codes.to(torch.float32 if units < NWOT_EXACT_UNITS else torch.float64)
            products = (codes @ codes.t()).to(self.products.dtype)  # exact integers either way
        self.products[architecture].add_(products, alpha=count)
        self.units[architecture] += count * units

    def kernels(self) -> torch.Tensor:
        """[A, B, B] float64: on how many units (each counted once per ReLU reading it) two images agree."""
        products = self.products.double()
        sums = products.diagonal(dim1=1, dim2=2)
        units = torch.tensor(self.units, dtype=torch.float64, device=products.device)[:, None, None]
        return 2 * products + units - sums[:, :, None] - sums[:, None, :]


def _select(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return x if index is None else x.index_select(1, index)


class _NodeSum:
    """The sum of a node's parts, each holding the architectures `index` (None: all) of a tensor shaped `like`.

    Adds in place once the sum is a tensor of its own: an out-of-place index_add copies the whole sum each
    time (a fifth of a batched synflow pass). The same additions in the same order as out of place.
    """

    def __init__(self, like: torch.Tensor):
        self.like, self.total, self.owned = like, None, False

    def add(self, part: torch.Tensor, index: torch.Tensor | None) -> None:
        if index is None:
            if self.total is None:
                self.total = part
            elif self.owned:
                self.total.add_(part)
            else:
                self.total, self.owned = self.total + part, True
            return
        if self.total is None:
            self.total, self.owned = torch.zeros_like(self.like), True
        elif not self.owned:  # the first part itself (a state, a layer's output): never written to
            self.total, self.owned = self.total.clone(), True
        self.total.index_add_(1, index, part)

    def value(self) -> torch.Tensor:
        return torch.zeros_like(self.like) if self.total is None else self.total


class _Pass:
    """One forward of a group through the shared weights, on inputs [B, A, C_in, H, W].

    synflow: float64 (value, tangent) pairs in the batch dimension (B = 2), |weights|, no BatchNorm, no ReLU.
    Otherwise train mode: `record` keeps (module, input, output, index) of every Conv2d / Linear call, `nwot`
    accumulates the NWOT kernels (`self.codes`).
    """

    def __init__(self, shared: SharedNB201, group: _Group, synflow: bool = False, record: bool = False,
                 nwot: bool = False):
        self.shared, self.group, self.synflow, self.record = shared, group, synflow, record
        self.layers: list[tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        self.nwot = nwot
        self.codes: _CodeAgreements | None = None
        # fastnas's choice: a pass of one architecture (the data proxies' 64 images on a CPU) runs channels-last,
        # where oneDNN's convolutions and BatchNorm need no layout conversions. Several architectures stay NCHW:
        # their convolutions want them in the batch dimension, BatchNorm in the channel one, and only NCHW
        # holds both as views.
        self.channels_last = not synflow and group.size == 1 and shared.base.stem[0].weight.device.type == "cpu"

    # --- the pieces of a network, on [B, m, C, H, W] tensors of m architectures
    def conv(self, x: torch.Tensor, conv: nn.Conv2d, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.synflow:
            x = torch.cat([x[:1], x[:1] + x[1:]])  # (v, u) -> (v, u + v): W maps them to (W v, W (u + v))
        x4 = x.flatten(0, 1)
        if self.channels_last:  # a no-op but at the stem: every later state is channels-last already
            x4 = x4.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x4, conv.weight.detach(), None, conv.stride, conv.padding, conv.dilation)
        y = y.unflatten(0, x.shape[:2])
        if self.record:
            self.layers.append((conv, x, y, index))
        return y

    def linear(self, x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
        if self.synflow:  # the bias is no layer weight: it adds to the value, not to the tangent
            x = torch.cat([x[:1], x[:1] + x[1:]])
            y = F.linear(x, linear.weight.detach())
            return torch.cat([y[:1] + linear.bias.detach(), y[1:]])
        if torch.is_grad_enabled() and not x.requires_grad:
            # every cell ignores the images: the logits still have a gradient, which fisher reads
            x = x.detach().requires_grad_()
        y = F.linear(x, linear.weight.detach(), linear.bias.detach())
        if self.record:
            self.layers.append((linear, x, y, None))
        return y

    def bn(self, x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
        """Train-mode BatchNorm with each architecture's own statistics: its channels are the (a, c) pairs."""
        if self.synflow:
            return x
        m = x.shape[1]
        # [m * C]: each architecture's copy; a view, not a copy, for one architecture
        weight, bias = (None if p is None else p.detach().expand(m, -1).reshape(-1) for p in (bn.weight, bn.bias))
        y = F.batch_norm(x.flatten(1, 2), None, None, weight, bias, training=True, eps=bn.eps)
        return y.view_as(x)

    def relu(self, x: torch.Tensor, readers: list[int] | None = None) -> torch.Tensor:
        """relu(x) of every architecture; NWOT counts x's codes `readers[a]` times (None: once each)."""
        if self.synflow:
            return x
        y = F.relu(x)
        if self.nwot:
            if self.codes is None:
                self.codes = _CodeAgreements(y.shape[1], y.shape[0], y.device)
            for a in range(y.shape[1]):
                count = 1 if readers is None else readers[a]
                if count:
                    self.codes.add(y[:, a], a, count)
        return y

    def pool(self, x: torch.Tensor, pool: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return pool(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    # --- the network
    def reduction(self, x: torch.Tensor, block: nn.Module) -> torch.Tensor:
        """ResNetBasicblock: ReLU-Conv-BN (stride 2), ReLU-Conv-BN, plus pool + 1x1 conv of the input."""
        a = self.bn(self.conv(self.relu(x), block.conv_a[1]), block.conv_a[2])
        b = self.bn(self.conv(self.relu(a), block.conv_b[1]), block.conv_b[2])
        return b + self.conv(self.pool(x, block.downsample[0]), block.downsample[1])

    def cell(self, x: torch.Tensor, edge_ops: nn.ModuleList) -> torch.Tensor:
        states, relus = [x], {}
        for target in range(1, 4):
            total = _NodeSum(x)
            for e, (source, node) in enumerate(EDGE_NODES):
                if node != target:
                    continue
                for op, index in self.group.members[e].items():
                    if op in CONV_OPS:
                        if source not in relus:  # one ReLU of the state for all its convolution edges
                            relus[source] = self.relu(states[source], self.group.relu_readers[source])
                        module = edge_ops[e][op]
                        part = self.bn(self.conv(_select(relus[source], index), module[1], index), module[2])
                    elif op == "avg_pool_3x3":  # the edge's AvgPool2d(3, 1, 1, count_include_pad=False)
                        part = self.pool(_select(states[source], index), avg_pool_3x3)
                    else:  # skip_connect
                        part = _select(states[source], index)
                    total.add(part, index)
            states.append(total.value())
        return states[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, A, classes] of inputs [B, A, C_in, H, W] (synflow: B = 2, value and tangent)."""
        base = self.shared.base
        out = self.bn(self.conv(x, base.stem[0]), base.stem[1])
        for stage in range(STAGES):
            blocks = list(base.stages[stage])
            if stage > 0:
                out = self.reduction(out, blocks[0])
            for k in range(self.shared.N):
                out = self.cell(out, self.shared.edge_ops[stage][k])
        out = self.relu(self.bn(out, base.lastact[0]))
        return self.linear(out.mean(dim=(3, 4)), base.classifier)


def _weight_gradients(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d loss / d weight [m, *weight.shape] of each of the m architectures of one layer call.

    x: the layer's input [B, m, ...], grad: d loss / d output [B, m, ...]. A convolution's are one grouped
    convolution backward with the architectures as the groups.
    """
    if isinstance(module, nn.Linear):
        return torch.einsum("bao,bai->aoi", grad, x)
    batch, m = x.shape[:2]
    weight = module.weight.detach()
    # aten.convolution_backward(grad, input, weight, bias_sizes, stride, padding, dilation, transposed,
    #                           output_padding, groups, output_mask)
    _, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad.flatten(1, 2).contiguous(), x.flatten(1, 2), weight.repeat(m, 1, 1, 1), None, list(module.stride),
        list(module.padding), list(module.dilation), False, [0, 0], m, [False, True, False])
    return grad_weight.unflatten(0, (m, weight.shape[0]))


def _data_scores(names: Sequence[str], shared: SharedNB201, group: _Group, images: torch.Tensor,
                 labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """{proxy: [A] float64} of the data proxies in `names` from one train-mode forward of the group."""
    layer_proxies = [name for name in names if name in ("snip", "grad_norm", "fisher")]
    jacov = "jacov" in names
    run = _Pass(shared, group, record=bool(layer_proxies), nwot="nwot" in names)
    batch, size = images.shape[0], group.size
    x = images[:, None].expand(batch, size, *images.shape[1:]).contiguous()
    needs_backward = bool(layer_proxies) or jacov
    with torch.set_grad_enabled(needs_backward):
        x.requires_grad_(needs_backward)
        logits = run.forward(x)
    scores = {}
    if layer_proxies:
        totals = {name: torch.zeros(size, dtype=torch.float64, device=images.device) for name in layer_proxies}
        # each architecture's mean cross-entropy over its B images, summed over the architectures
        loss = F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(size), reduction="sum") / batch
        # A layer whose output is constant (it reads a node that is zero) or that no loss reads (it feeds a node
        # without a path out) has zero weight gradients and zero fisher terms: left out.
        layers = [layer for layer in run.layers if layer[2].requires_grad]
        grads = torch.autograd.grad(loss, [y for _, _, y, _ in layers], retain_graph=jacov, allow_unused=True)
        for (module, layer_input, output, index), grad in zip(layers, grads):
            if grad is None:
                continue
            values = {}
            weight_grads = _weight_gradients(module, layer_input.detach(), grad).flatten(1)
            if "snip" in totals:
                values["snip"] = (module.weight.detach().flatten()[None] * weight_grads).abs().sum(1)
            if "grad_norm" in totals:
                values["grad_norm"] = weight_grads.norm(dim=1)
            if "fisher" in totals:  # fan_in * 0.5 * sum over channels of mean over images of (sum_hw z dL/dz)^2
                act_times_grad = output.detach() * grad
                per_channel = act_times_grad.flatten(3).sum(3) if output.dim() > 3 else act_times_grad
                values["fisher"] = 0.5 * per_channel.pow(2).mean(0).sum(1) * module.weight[0].numel()
            for name, value in values.items():
                if index is None:
                    totals[name] += value.double()
                else:
                    totals[name].index_add_(0, index, value.double())
        scores.update(totals)
    if jacov:
        (jacobians,) = torch.autograd.grad(logits.sum(), x, allow_unused=True)
        if jacobians is None:  # every cell ignores the images: zero Jacobians, as the one network's
            jacobians = torch.zeros_like(x)
        scores["jacov"] = torch.stack([jacov_of_jacobians(jacobians[:, a]).to(images.device) for a in range(size)])
    if run.nwot:
        scores["nwot"] = torch.linalg.slogdet(run.codes.kernels()).logabsdet
    return scores


def _synflow_scores(flow: SharedNB201, group: _Group, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """synflow [A] of the group on the |weights| (float64) copy `flow`."""
    inputs = torch.zeros(2, group.size, *image_shape, dtype=torch.float64, device=flow.base.stem[0].weight.device)
    inputs[0] = 1.0  # value: the all-ones image; tangent: zero
    with torch.no_grad():
        logits = _Pass(flow, group, synflow=True).forward(inputs)
    return logits[1].sum(1)


def _synflow_copy(shared: SharedNB201) -> SharedNB201:
    flow = copy.deepcopy(shared).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.abs_()
    return flow


def score_nb201(names: Sequence[str], archs: Sequence[str], shared: SharedNB201,
                batch: tuple[torch.Tensor, torch.Tensor] | None = None, image_size: int | None = None,
                teacher: nn.Module | NetworkOutputs | None = None,
                archs_per_pass: int | None = None) -> dict[str, torch.Tensor]:
    """{proxy: scores [len(archs)] float64} of NAS-Bench-201 `archs` with `shared`'s weights.

    Equal to ``score_many(names, shared.network(arch), batch, teacher)`` for each arch (see the module
    docstring). `batch` = (images [B, C_in, H, W], labels [B]) is needed by every proxy but params, flops and
    synflow, which score an all-ones image of side `image_size` (default: the batch's). `archs_per_pass`:
    architectures per batched pass (default SYNFLOW_ARCHS_PER_PASS for synflow, IMAGES_PER_PASS // B for the
    data proxies, each for `shared`'s device type).
    """
    proxies = [get_proxy(name).name for name in names]  # ValueError naming the registered ones
    cells = [parse_arch(arch) for arch in archs]
    device = shared.base.stem[0].weight.device
    needing_batch = [name for name in proxies if name not in DATA_FREE]
    if needing_batch and batch is None:
        raise ValueError(f"batch: proxies {needing_batch} read a batch of images; pass batch=(images, labels)")
    if batch is not None:
        images, labels = (t.to(device) for t in _check_batch(batch))
        if images.shape[1] != shared.in_channels or images.shape[2] != images.shape[3]:
            raise ValueError(f"batch: expected square images with {shared.in_channels} channels, got "
                             f"{tuple(images.shape)}")
        if not torch.isfinite(images).all():  # a NaN pixel has no ReLU code (nwot reads codes off relu(x) != 0)
            raise ValueError("batch: images must be finite; got NaN or infinite pixels")
        if image_size is not None and image_size != images.shape[-1]:
            raise ValueError(f"image_size: {image_size} differs from the batch's images ({images.shape[-1]})")
        if int(labels.max()) >= shared.num_classes or int(labels.min()) < 0:
            raise ValueError(f"batch: labels must lie in [0, {shared.num_classes}), got {int(labels.min())}.."
                             f"{int(labels.max())}")
        image_size = images.shape[-1]
    if image_size is None or not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size: expected an integer >= 4 (two stride-2 reductions), got {image_size!r}")
    if archs_per_pass is not None and (not isinstance(archs_per_pass, int) or archs_per_pass < 1):
        raise ValueError(f"archs_per_pass: expected a positive integer, got {archs_per_pass!r}")
    count = len(cells)
    scores = {name: torch.empty(count, dtype=torch.float64) for name in proxies}
    if "params" in scores or "flops" in scores:
        costs = torch.tensor([count_cost(cell, shared.C, shared.N, shared.num_classes, shared.in_channels,
                                         image_size) for cell in cells], dtype=torch.float64).reshape(count, 2)
        for column, name in enumerate(("params", "flops")):
            if name in scores:
                scores[name] = costs[:, column].clone()
    # Architectures in the space's order (sorted by their operations), so that a pass's architectures share more edges.
    index = [cell_index(cell) for cell in cells]
    order = sorted(range(count), key=index.__getitem__)

    def passes(size: int):
        for start in range(0, count, size):
            chosen = order[start:start + size]
            yield torch.tensor(chosen), _Group([cells[a] for a in chosen], device)

    kind = "cpu" if device.type == "cpu" else "gpu"
    if "synflow" in scores:
        flow = _synflow_copy(shared)
        dense = kind == "cpu" and count > 0 and count > (index[order[-1]] - index[order[0]] + 1) // 2
        for chosen, group in passes(archs_per_pass or SYNFLOW_ARCHS_PER_PASS["cpu-dense" if dense else kind]):
            scores["synflow"][chosen] = _synflow_scores(flow, group, (shared.in_channels, image_size,
                                                                      image_size)).cpu()
    data = [name for name in proxies if name in DATA_PROXIES]
    if data:
        for chosen, group in passes(archs_per_pass or max(1, IMAGES_PER_PASS[kind] // images.shape[0])):
            for name, values in _data_scores(data, shared, group, images, labels).items():
                scores[name][chosen] = values.detach().double().cpu()
    unbatched = [name for name in proxies if name not in BATCHED]
    if unbatched:
        for a, arch in enumerate(archs):
            for name, value in score_many(unbatched, shared.network(arch), (images, labels), teacher).items():
                scores[name][a] = value
    return scores
