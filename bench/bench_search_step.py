"""One whole search step: the reference code's eager MixedOp against fastnas, time, memory and op counts.

Four steps (see SearchStep): first-order DARTS (an architecture update on a
validation batch, then a weight update on a training batch) on the standard
super-network (8 cells, 8 operators, 4 nodes), the same with SD-DARTS's KL to
voted teachers given as stored predictions ("sddarts") or computed by K = 2
snapshot copies of the super-network on each batch, the paper's teachers
("sddarts-snapshot": 2K extra forward passes and a refresh per step; each
method's step time is also given against DARTS's, "vs_darts"), and DNAD's
single-level step with the AT loss from a frozen teacher. Every variant runs the very same
modules and parameters; they differ in how a node runs and combines its candidates
(and, for DNAD, in the AT loss: eager reference vs fused op):

- eager: what quark0/darts model_search.py does. Every edge is a MixedOp
  ``sum(w * op(x) for w, op in zip(weights, ops))`` with a softmax per edge, and
  every convolution operator applies its own ReLU to the edge input (the operators
  are fastnas's modules, so on the CPU they use its depthwise / pointwise
  formulations of fastnas.nn.darts_ops too);
- fused: every candidate on its own, one `fastnas.ops.mixed_node` call per node, one
  ReLU per edge shared by the convolution operators, operator and depthwise
  outputs rebuilt in backward instead of saved (SuperNetwork.set_recompute):
  grouping off (SuperNetwork.set_grouping(False)), the node path before horizontal
  fusion (the code before it is commit 62e61aa^: docs/fusion.md has its aten counts);
- fused-no-recompute: the same, saving those outputs;
- grouped: horizontal fusion, fastnas's default: the same operation on the edges of a
  node (one stride) as one call over the concatenated inputs (fastnas.nn.grouped), the
  chunks weighed by one `fastnas.ops.chunk_sum` call per node, recompute on;
- grouped-no-recompute: the same, saving the outputs;
- grouped-fused-optim: grouped, with the optimizers' fused kernels (torch.optim's
  fused=True, one kernel for all parameters instead of ~25 aten calls each on the CPU;
  DNAD's Adam is fastnas.nn.optim.SharedStepAdam, one step counter for all parameters)
  and the gradient clip's norm from one foreach_reduce (fastnas.ops.clip_grad_norm_):
  what the strategies' steps become with those two settings;
- grouped-fused-optim-no-recompute: the same, saving the outputs: the strategies' step on
  digits/synthetic, where recompute is off by default;
- compiled: fused, with the loss (forward, and through AOTAutograd the backward)
  under `torch.compile` (Inductor); the optimizer steps stay eager (a node traced by
  torch.compile runs every candidate on its own);
- graphed (CUDA only): grouped, the whole step (both backward passes and optimizer
  steps) captured once as a CUDA graph and replayed; static batches, so a search
  recaptures only after a pruning event changes the network.

The digits default of `fastnas dnad`/`make demo` is --methods dnad --size 8 --batch 32 (C 16,
8 cells; the bench's images have 3 channels where digits has 1: only the stem differs).

`pytest bench/bench_search_step.py` times both (CI: --benchmark-disable, where
each still checks that the two give the same loss and gradients). Running the
file writes the full comparison, with saved-tensor bytes and profiler op
counts, as JSON:

    python bench/bench_search_step.py [--methods darts,sddarts,dnad] [--variants eager,fused,compiled]
                                      [--batch 32] [--size 16] [--C 16] [--steps 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from typing import Callable, Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastnas
from fastnas.distill import ATLoss, Teacher, TeacherResNet, losses
from fastnas.nn import MixedNode
from fastnas.nn.cost import count_saved_bytes
from fastnas.nn.darts_ops import DilConv, SepConv
from fastnas.nn.optim import SharedStepAdam
from fastnas.ops import _reference
from fastnas.search_spaces import DARTS_PRIMITIVES, SuperNetwork
from fastnas.strategies.dnad import AUTHORS_CIFAR_OPS
from fastnas.strategies.sddarts import SnapshotTeachers, self_distillation_kl
from fastnas.strategies.snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy


def reference_node_forward(node: MixedNode, inputs, alpha: torch.Tensor, mask=None, weights=None) -> torch.Tensor:
    """DARTS's Cell + MixedOp for one node: a Python sum over edges of sum(w * op(x)), one ReLU per operator.

    The weights are the node's mode of them (softmax per edge for DARTS, relu_norm per node for DNAD),
    given by the cell when it computed them for all its nodes at once (as the reference Network does).
    """
    weights = node.weights(alpha) if weights is None else weights
    total = 0
    for edge, op in node.live:
        module = node.candidates[f"{edge}_{op}"]
        x = inputs[edge]
        x = F.relu(x) if getattr(module, "relu_input", False) else x
        # the reference's operators: a plain chain of modules, every intermediate saved for backward
        out = nn.Sequential.forward(module, x) if isinstance(module, (SepConv, DilConv)) else module(x)
        total = total + weights[edge, op] * out
    return total


@contextlib.contextmanager
def reference_mixed_ops() -> Iterator[None]:
    """Inside the block every MixedNode computes like the DARTS reference code, and AT losses are eager."""
    fused = MixedNode.forward, losses.ops.at_loss
    MixedNode.forward, losses.ops.at_loss = reference_node_forward, _reference.at_loss
    try:
        yield
    finally:
        MixedNode.forward, losses.ops.at_loss = fused


class SearchStep:
    """One search step on fixed batches; `run()` does one, `gradients()` the training loss and its gradients.

    method "darts": first-order DARTS, an architecture step on the validation batch (Adam 3e-4)
    then a weight step on the training batch (SGD 0.025, momentum 0.9, clip 5).
    method "sddarts": the DARTS step with SD-DARTS's loss, CE + KL(voted teacher || student) at T = 2 on
    both levels; the voted teacher is the mean of K = 2 stored softened predictions per sample.
    method "sddarts-snapshot": the same loss at T = 1 with the paper's teachers, K = 2 frozen copies of the
    super-network run on each batch; each step first refreshes the oldest copy (SnapshotTeachers).
    method "dnad": DNAD's single-level step on its 3 CIFAR operators: (CE + AT from a frozen teacher)
    * (1 + gamma S) + gamma mu S on one batch, Adam on the weights and SGD on the per-cell alphas
    (relu_norm weights).
    """

    def __init__(self, method: str = "darts", C: int = 16, layers: int = 8, batch: int = 32, size: int = 16,
                 seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32, capturable: bool = False,
                 grouping: bool = True, fused_optimizer: bool = False):
        torch.manual_seed(seed)
        self.method, self.fused_optimizer = method, fused_optimizer
        dnad = method == "dnad"
        self.net = SuperNetwork(C, 10, layers, 4, AUTHORS_CIFAR_OPS if dnad else DARTS_PRIMITIVES, in_channels=3,
                                mode="relu_norm" if dnad else "softmax", alpha_per_cell=dnad,
                                alpha_init=2.0 if dnad else None).to(device, dtype)
        self.net.set_grouping(grouping)
        fused = {"fused": True} if fused_optimizer else {}  # torch.optim's one-kernel step (CPU and CUDA)
        if dnad:
            self.teacher = Teacher(TeacherResNet(3, 10).to(device, dtype), (3, size, size))
            self.at_loss, self.shrinking = ATLoss(), ProgressiveShrinking(SNPSConfig())
            # the strategy's Adam (torch's fused kernel, one step counter for all parameters) with fused_optimizer
            adam = SharedStepAdam if fused_optimizer else torch.optim.Adam
            self.weight_optimizer = adam(self.net.weight_parameters(), 5e-4, betas=(0.5, 0.999), weight_decay=3e-4,
                                         capturable=capturable, **fused)
            self.arch_optimizer = torch.optim.SGD(self.net.arch_parameters(), 0.2, **fused)
        else:
            self.weight_optimizer = torch.optim.SGD(self.net.weight_parameters(), 0.025, momentum=0.9,
                                                    weight_decay=3e-4, **fused)
            self.arch_optimizer = torch.optim.Adam(self.net.arch_parameters(), 3e-4, betas=(0.5, 0.999),
                                                   weight_decay=1e-3, capturable=capturable, **fused)
        self.teachers, self.teacher_bytes = None, 0
        if method == "sddarts-snapshot":
            self.teachers = SnapshotTeachers(window=2, refresh=1, temperature=1.0)
            for step in range(2):
                self.teachers.take(self.net, step)
            self.teacher_bytes = self.teachers.nbytes()
        generator = torch.Generator().manual_seed(seed + 1)
        # (images, labels, voted teacher probabilities: the mean of K = 2 stored softened predictions)
        self.train_batch, self.val_batch = [
            (torch.randn(batch, 3, size, size, generator=generator, dtype=dtype).to(device),
             torch.randint(0, 10, (batch,), generator=generator).to(device),
             F.softmax(torch.randn(2, batch, 10, generator=generator, dtype=dtype) / 2, dim=-1).mean(0).to(device))
            for _ in range(2)]

    def loss(self, batch) -> torch.Tensor:
        images, labels, voted_teacher = batch
        logits, features = self.net(images)
        loss = F.cross_entropy(logits, labels)
        if self.method == "sddarts":
            loss = loss + self_distillation_kl(logits, voted_teacher, temperature=2.0)
        if self.method == "sddarts-snapshot":
            loss = loss + self_distillation_kl(logits, self.teachers.voted_probs(images), temperature=1.0)
        if self.method == "dnad":
            loss = loss + self.at_loss(features, self.teacher(images)[1])
            loss = self.shrinking.loss(loss, sparsity_entropy(self.net.node_weights()), warm_up=False)
        return loss

    def run(self) -> None:
        if self.teachers is not None:  # the network before this update replaces the oldest snapshot
            self.teachers.take(self.net, 0)
        self.weight_optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        if self.method != "dnad":  # bi-level; the alphas' gradient only, as the strategy's autograd.grad(loss, alphas)
            self.loss(self.val_batch).backward(inputs=self.net.arch_parameters())
            self.arch_optimizer.step()
        self.loss(self.train_batch).backward()
        clip = fastnas.ops.clip_grad_norm_ if self.fused_optimizer else torch.nn.utils.clip_grad_norm_
        clip(self.net.weight_parameters(), 5.0)
        self.weight_optimizer.step()
        if self.method == "dnad":
            self.arch_optimizer.step()

    def gradients(self) -> tuple[float, dict[str, torch.Tensor]]:
        """The training loss and d loss / d every parameter (weights and alphas), no update."""
        self.net.zero_grad(set_to_none=True)
        loss = self.loss(self.train_batch)
        loss.backward()
        return loss.item(), {name: p.grad.clone() for name, p in self.net.named_parameters()}


# variant -> SearchStep settings (recompute: SuperNetwork.set_recompute)
VARIANTS = {
    "eager": dict(grouping=True),  # MixedNode.forward replaced by the reference (the cell still computes the weights)
    "fused": dict(grouping=False),
    "fused-no-recompute": dict(grouping=False, recompute=False),
    "grouped": dict(grouping=True),
    "grouped-no-recompute": dict(grouping=True, recompute=False),
    "grouped-fused-optim": dict(grouping=True, fused_optimizer=True),
    "grouped-fused-optim-no-recompute": dict(grouping=True, fused_optimizer=True, recompute=False),
    "compiled": dict(grouping=False),
    "graphed": dict(grouping=True),
}
DEFAULT_VARIANTS = "eager,fused,grouped,grouped-fused-optim"


def implementation(name: str) -> contextlib.AbstractContextManager:
    return reference_mixed_ops() if name == "eager" else contextlib.nullcontext()


def make_step(name: str, method: str, **shapes) -> SearchStep:
    """The SearchStep of variant `name` (see VARIANTS)."""
    settings = dict(VARIANTS[name])
    recompute = settings.pop("recompute", True)
    step = SearchStep(method, **shapes, capturable=name == "graphed", **settings)
    step.net.set_recompute(recompute)
    return step


def capture_cuda_graph(run: Callable[[], None], warm_up: int = 3) -> Callable[[], None]:
    """`run` (one whole step on static tensors) captured as a CUDA graph; returns its replay.

    Warm-up on a side stream first, as torch.cuda.graph requires: it creates the optimizer
    state and the .grad tensors and lets cuDNN pick its algorithms. The Adam optimizers must
    be capturable (their step counts live on the GPU).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warm_up):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


CUDA_LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                     "cudaGraphLaunch")


def op_counts(step: SearchStep) -> dict[str, int]:
    """Operator calls in one step as the profiler records them (every aten:: call, nested ones included)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step.run()
    events = prof.events()
    counts = {"aten_ops": sum(e.name.startswith("aten::") for e in events),
              "fastnas_ops": sum(e.name.startswith("fastnas::") for e in events)}
    if torch.cuda.is_available():
        counts["cuda_kernels"] = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events)
        # what the host launches: one cudaGraphLaunch replaces every kernel launch of a graphed step
        counts["cuda_launch_calls"] = sum(e.name in CUDA_LAUNCH_CALLS for e in events)
    return counts


def measure(method: str, C: int, layers: int, batch: int, size: int, device: str, steps: int,
            variants: tuple[str, ...] = ("eager", "fused")) -> dict:
    """One method's comparison as written by `python bench/bench_search_step.py`; ratios are eager / variant."""
    shapes = dict(C=C, layers=layers, batch=batch, size=size, device=device)
    if "eager" not in variants:
        raise ValueError(f"variants: expected 'eager' among them (the baseline of every ratio), got {list(variants)}")
    results, prepared = {}, {}
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"variants: expected names from {', '.join(VARIANTS)}, got {name!r}")
        if name == "graphed" and not device.startswith("cuda"):
            raise ValueError("variants: 'graphed' captures a CUDA graph and needs --device cuda")
        with implementation(name):
            step = make_step(name, method, **shapes)
            started = time.perf_counter()
            if name == "compiled":
                step.loss = torch.compile(step.loss)
            loss, grads = step.gradients()  # compiled: compiles here
            first_call_s = time.perf_counter() - started
            # The compiled graph's saved tensors are the partitioner's choice; counting them would recompile.
            saved = None if name == "compiled" else count_saved_bytes(lambda: step.loss(step.train_batch))
            if name == "graphed":
                step.run = capture_cuda_graph(step.run)
            step.run()  # warm-up
            counts = op_counts(step)
            peak = None
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
                step.run()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
        prepared[name] = step
        results[name] = {"loss": loss, "grads": grads, "step_times_s": [], "first_call_s": first_call_s,
                         "saved_tensor_bytes": saved, "peak_memory_bytes": peak, **counts}
    # Rounds of one step per variant: a load change on a shared machine hits every variant alike.
    for _ in range(steps):
        for name, step in prepared.items():
            with implementation(name):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                step.run()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                results[name]["step_times_s"].append(time.perf_counter() - started)
    for r in results.values():
        r["median_step_s"] = statistics.median(r["step_times_s"])
    eager = results["eager"]
    comparison = {}
    for name, r in results.items():
        if name == "eager":
            continue
        comparison[name] = {
            "loss_diff": abs(eager["loss"] - r["loss"]),
            "max_grad_diff": max((eager["grads"][k] - r["grads"][k]).abs().max().item() for k in eager["grads"]),
            "speedup": eager["median_step_s"] / r["median_step_s"],
            "saved_bytes": r["saved_tensor_bytes"] / eager["saved_tensor_bytes"] if r["saved_tensor_bytes"] else None,
            "peak_memory": r["peak_memory_bytes"] / eager["peak_memory_bytes"] if r["peak_memory_bytes"] else None,
            "aten_ops": r["aten_ops"] / eager["aten_ops"],
            **({"cuda_launch_calls": r["cuda_launch_calls"] / eager["cuda_launch_calls"]}
               if "cuda_launch_calls" in r else {})}
    for r in results.values():
        del r["grads"]
    return {"method": method, "shapes": shapes, "teacher_bytes": prepared["eager"].teacher_bytes,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "build": fastnas.build_info(),
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine(),
            **results, "ratios": comparison}


# ------------------------------------------------------------------ pytest-benchmark

METHODS = ["darts", "sddarts", "sddarts-snapshot", "dnad"]
BENCH_SHAPES = dict(C=16, layers=8, batch=32, size=16)
TEST_SHAPES = dict(C=4, layers=3, batch=4, size=8)  # CI (--benchmark-disable): the checks only


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ["fused", "grouped"])
def test_same_loss_and_gradients(method, variant):
    """The eager reference and each fused step give the same loss and gradients (float64, small super-network).
    The compiled variant compiles for minutes here: tests/test_compile.py checks a tinier super-network under
    compile; tests/test_horizontal_fusion.py checks whole grouped steps with pruning."""
    results = {}
    for name in ("eager", variant):
        with implementation(name):
            results[name] = make_step(name, method, **TEST_SHAPES, dtype=torch.float64).gradients()
    (eager_loss, eager_grads), (loss, grads) = results["eager"], results[variant]
    assert abs(eager_loss - loss) < 1e-10
    for key in eager_grads:
        torch.testing.assert_close(grads[key], eager_grads[key], rtol=1e-7, atol=1e-10, msg=key)


@pytest.mark.skipif(not (torch.cuda.is_available() and fastnas.build_info()["with_cuda"]),
                    reason="needs a CUDA GPU and a CUDA build of fastnas")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_graph_replay_equals_eager_steps(method):
    """Replaying the captured step updates the network exactly as running the fused step does."""
    shapes = {**TEST_SHAPES, "device": "cuda"}
    steps = [SearchStep(method, **shapes, capturable=True) for _ in range(2)]
    for _ in range(3):  # capture_cuda_graph's warm-up steps (capturing records the step, it does not run it)
        steps[0].run()
    replay = capture_cuda_graph(steps[1].run, warm_up=3)
    for _ in range(2):
        steps[0].run()
        replay()
    for (name, a), b in zip(steps[0].net.named_parameters(), steps[1].net.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("impl", ["eager", "fused", "grouped"])
@pytest.mark.parametrize("method", METHODS)
def test_search_step(benchmark, method, impl):
    shapes = TEST_SHAPES if benchmark.disabled else BENCH_SHAPES
    with implementation(impl):
        step = make_step(impl, method, **shapes)
        benchmark.group = f"{method}-search-step"
        benchmark.extra_info.update(shapes, method=method, impl=impl)
        benchmark(step.run)


@pytest.mark.parametrize("method", METHODS)
def test_fused_saves_less_for_backward(method):
    """Shared ReLUs and recomputed operator outputs (the byte counts at real sizes are in the JSON)."""
    saved = {}
    for name in ("eager", "fused", "grouped"):
        with implementation(name):
            step = make_step(name, method, **TEST_SHAPES)
            saved[name] = count_saved_bytes(lambda: step.loss(step.train_batch))
    assert saved["fused"] < 0.8 * saved["eager"] and saved["grouped"] < 0.8 * saved["eager"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=None,
                        help=f"from {','.join(VARIANTS)}; default {DEFAULT_VARIANTS} (and graphed on CUDA). "
                        "compiled takes minutes to compile a full super-network")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    variants = args.variants or (DEFAULT_VARIANTS + (",graphed" if args.device.startswith("cuda") else ""))
    result = [measure(method, args.C, args.layers, args.batch, args.size, args.device, args.steps,
                      tuple(variants.split(","))) for method in args.methods.split(",")]
    darts = next((r for r in result if r["method"] == "darts"), None)
    if darts is not None:  # each method's step against DARTS's in the same variant (measured one after the other)
        for r in result:
            r["vs_darts"] = {name: r[name]["median_step_s"] / darts[name]["median_step_s"]
                             for name in variants.split(",") if name in r and name in darts}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
