"""Benchmark grid of the fused ops: implementation x shape x dtype x device.

Each `Case` builds its inputs once and returns zero-argument callables, one per
implementation: ``fused`` (fastnas.ops), ``eager`` (the plain PyTorch reference,
or for rank_corr a Python loop of scipy calls, as proxy-search code does it) and
``compiled`` (torch.compile of the reference). The same grid feeds bench/
(pytest-benchmark) and ``fastnas bench`` (no repository needed).

``python -m fastnas.benchmarks RESULTS.json`` prints the eager/fused ratios of a
pytest-benchmark JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import ops
from .ops import _reference

Impls = dict[str, Callable[[], object]]


@dataclass(frozen=True)
class Case:
    """One benchmark: an op at one shape, dtype and device."""

    op: str
    label: str
    dtype: torch.dtype
    device: str
    make: Callable[["Case"], tuple[Impls, Callable[[], None]]] = field(compare=False, repr=False)
    shape: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return f"{self.op}[{self.label}|{str(self.dtype).removeprefix('torch.')}|{self.device}]"

    def build(self) -> tuple[Impls, Callable[[], None]]:
        """(implementations, check): check() asserts that fused and eager agree."""
        return self.make(self)

    def info(self) -> dict:
        """Facts recorded beside each timing: shapes, dtype, device name, versions."""
        device_name = (torch.cuda.get_device_name(self.device) if self.device.startswith("cuda")
                       else "cpu")
        return {"op": self.op, "label": self.label, "shape": self.shape,
                "dtype": str(self.dtype), "device": self.device, "device_name": device_name,
                **ops.build_info()}


def _randn(*shape: int, case: Case, grad: bool = False, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen).to(case.device, case.dtype)
    return x.requires_grad_(grad)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    tol = 1e-3 if a.dtype == torch.float32 else 2e-2
    torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol, equal_nan=True)


def _fwd_bwd(forward: Callable[[], torch.Tensor], inputs: list[torch.Tensor],
             grad: torch.Tensor | None = None) -> Callable[[], object]:
    """A step that runs forward and backward (gradients w.r.t. inputs, nothing accumulated)."""
    def step():
        return torch.autograd.grad(forward(), inputs, grad)
    return step


def _with_compiled(impls: Impls, compiled_forward: Callable[[], Callable[[], object]]) -> Impls:
    """Adds 'compiled': built lazily, since compiling costs tens of seconds on a CPU."""
    cache: dict[str, Callable[[], object]] = {}

    def compiled():
        if "fn" not in cache:
            cache["fn"] = compiled_forward()
        return cache["fn"]()

    return {**impls, "compiled": compiled}


# ------------------------------------------------------------------ mixed_node

def _darts_mixed_node(outs, alpha):
    """The DARTS reference style: softmax per edge, then a Python sum of w * op(x)."""
    weights = torch.softmax(alpha, dim=-1).flatten()
    return sum(w * o for w, o in zip(weights, outs))


def _make_mixed_node(case: Case):
    s = case.shape
    edges, cand = s["edges"], s["ops"]
    alpha = _randn(edges, cand, case=case, grad=True)
    mask = torch.ones(edges, cand, dtype=torch.bool)
    outs = [_randn(s["batch"], s["channels"], s["size"], s["size"], case=case, grad=True, seed=i + 1)
            for i in range(edges * cand)]
    grad = _randn(*outs[0].shape, case=case, seed=99)
    inputs = [alpha, *outs]
    impls = {
        "fused": _fwd_bwd(lambda: ops.mixed_node(outs, alpha, mask), inputs, grad),
        "eager": _fwd_bwd(lambda: _darts_mixed_node(outs, alpha), inputs, grad),
    }

    def compiled():
        forward = torch.compile(_darts_mixed_node)
        return _fwd_bwd(lambda: forward(outs, alpha), inputs, grad)

    def check():
        for got, want in zip(impls["fused"](), impls["eager"]()):
            _close(got, want)
    return _with_compiled(impls, compiled), check


# ------------------------------------------------------------------ at_loss

def _make_at_loss(case: Case):
    s = case.shape
    students = [_randn(s["batch"], c, size, size, case=case, grad=True, seed=i)
                for i, (c, size) in enumerate(zip(s["student_channels"], s["sizes"]))]
    teachers = [_randn(s["batch"], c, size, size, case=case, seed=10 + i)
                for i, (c, size) in enumerate(zip(s["teacher_channels"], s["sizes"]))]
    impls = {
        "fused": _fwd_bwd(lambda: ops.at_loss(students, teachers), students),
        "eager": _fwd_bwd(lambda: _reference.at_loss(students, teachers), students),
    }

    def compiled():
        forward = torch.compile(_reference.at_loss)
        return _fwd_bwd(lambda: forward(students, teachers), students)

    def check():
        _close(ops.at_loss(students, teachers), _reference.at_loss(students, teachers))
        for got, want in zip(impls["fused"](), impls["eager"]()):
            _close(got, want)
    return _with_compiled(impls, compiled), check


# ------------------------------------------------------------------ rank_corr

def _make_rank_corr(case: Case):
    import numpy as np
    from scipy import stats

    s = case.shape
    scores = _randn(s["rows"], s["n"], case=case)
    target = _randn(s["n"], case=case, seed=1)
    method = s["method"]
    scipy_fn = stats.kendalltau if method == "kendall" else stats.spearmanr
    scores_np, target_np = scores.cpu().double().numpy(), target.cpu().double().numpy()

    def scipy_loop():
        return np.array([scipy_fn(row, target_np).statistic for row in scores_np])

    impls = {"fused": lambda: ops.rank_corr(scores, target, method), "eager": scipy_loop}

    def check():
        _close(impls["fused"]().cpu(), torch.from_numpy(scipy_loop()).to(case.dtype))
    return impls, check


# ------------------------------------------------------------------ foreach_reduce

# Per-layer weights (or their gradients) of a NAS-Bench-201-size network, C = 16/32/64:
# what instinct proxies reduce, one value per layer.
_LAYER_SHAPES = [(16, 16, 3, 3), (16,), (16, 16, 1, 1), (32, 32, 3, 3), (32,), (32, 32, 1, 1),
                 (64, 64, 3, 3), (64,), (64, 64, 1, 1), (10, 64)]


def _make_foreach_reduce(case: Case):
    s = case.shape
    tensors = [_randn(*_LAYER_SHAPES[i % len(_LAYER_SHAPES)], case=case, seed=i) for i in range(s["tensors"])]
    transform, reduction = s["transform"], s["reduction"]
    impls = {
        "fused": lambda: ops.foreach_reduce(tensors, transform, reduction),
        "eager": lambda: _reference.foreach_reduce(tensors, transform, reduction),
    }

    def check():
        _close(impls["fused"](), impls["eager"]())
    return impls, check


# ------------------------------------------------------------------ pair / gram distance

def _make_pair_distance(case: Case):
    s = case.shape
    student = _randn(s["batch"], s["dim"], case=case)
    teacher = _randn(s["batch"], s["dim"], case=case, seed=1)
    metric = s["metric"]
    impls = {
        "fused": lambda: ops.pair_distance(student, teacher, metric),
        "eager": lambda: _reference.pair_distance(student, teacher, metric),
    }

    def check():
        _close(impls["fused"](), impls["eager"]())
    return impls, check


def _make_gram_distance(case: Case):
    s = case.shape
    student = _randn(s["batch"], s["student_dim"], case=case)
    teacher = _randn(s["batch"], s["teacher_dim"], case=case, seed=1)
    impls = {
        "fused": lambda: ops.gram_distance(student, teacher),
        "eager": lambda: _reference.gram_distance(student, teacher),
    }

    def check():
        _close(impls["fused"](), impls["eager"]())
    return impls, check


# ------------------------------------------------------------------ the grid

def grid(devices: list[str], quick: bool = False) -> list[Case]:
    """All cases for the given devices. `quick` keeps one small case per op family."""
    batch = 16 if quick else 64
    mixed = [(16, 32, 2), (16, 32, 5), (64, 16, 5)][: 1 if quick else 3]
    cases: list[Case] = []
    for device in devices:
        dtypes = [torch.float32] + ([torch.bfloat16] if device.startswith("cuda") and not quick else [])
        for dtype in dtypes:
            for channels, size, edges in mixed:
                shape = dict(batch=batch, channels=channels, size=size, edges=edges, ops=8)
                cases.append(Case("mixed_node", f"B{batch} C{channels} {size}x{size} E{edges}xK8", dtype,
                                  device, _make_mixed_node, shape))
            at_shape = dict(batch=batch, student_channels=[16, 32, 64], teacher_channels=[64, 128, 256],
                            sizes=[32, 16, 8])
            cases.append(Case("at_loss", f"B{batch} 3 pairs 32/16/8", dtype, device, _make_at_loss, at_shape))
            cases.append(Case("pair_distance", f"B{batch * 2} D512 kl", dtype, device, _make_pair_distance,
                              dict(batch=batch * 2, dim=512, metric="kl")))
            cases.append(Case("gram_distance", f"B{batch * 2} D256/512", dtype, device, _make_gram_distance,
                              dict(batch=batch * 2, student_dim=256, teacher_dim=512)))
        rows = 100 if quick else 1000
        for method in ["kendall"] if quick else ["kendall", "spearman"]:
            cases.append(Case("rank_corr", f"P{rows} N50 {method}", torch.float64, device, _make_rank_corr,
                              dict(rows=rows, n=50, method=method)))
        for transform, reduction in [("abs", "sum")] if quick else [("abs", "sum"), ("log_abs", "mean")]:
            cases.append(Case("foreach_reduce", f"100 NB201 weights {transform}/{reduction}", torch.float32, device,
                              _make_foreach_reduce, dict(tensors=100, transform=transform, reduction=reduction)))
    return cases


def time_call(fn: Callable[[], object], min_time: float) -> float:
    """Median seconds per call (torch.utils.benchmark synchronizes CUDA)."""
    from torch.utils.benchmark import Timer

    fn()  # warm-up: first-call costs (allocation, compilation) are not what we compare
    return Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_time).median


def format_table(rows: list[dict]) -> str:
    """Text table of timings with the eager/fused and compiled/fused ratios."""
    lines = [f"{'op':<15} {'case':<28} {'dtype':<9} {'device':<6} {'fused ms':>9} {'eager ms':>9} "
             f"{'compiled ms':>11} {'eager/fused':>11} {'compiled/fused':>14}"]
    for r in rows:
        fused, eager, compiled = r.get("fused"), r.get("eager"), r.get("compiled")

        def ms(t):
            return f"{t * 1e3:.3f}" if t else "-"

        def ratio(t):
            return f"{t / fused:.2f}x" if t and fused else "-"
        lines.append(f"{r['op']:<15} {r['label']:<28} {r['dtype']:<9} {r['device']:<6} {ms(fused):>9} "
                     f"{ms(eager):>9} {ms(compiled):>11} {ratio(eager):>11} {ratio(compiled):>14}")
    return "\n".join(lines)


def run(devices: list[str], quick: bool, with_compiled: bool, min_time: float,
        progress: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Times every case of the grid; one row per case with seconds per implementation."""
    rows = []
    for case in grid(devices, quick):
        progress(case.name)
        impls, check = case.build()
        check()
        row = {"op": case.op, "label": case.label, "dtype": str(case.dtype).removeprefix("torch."),
               "device": case.device, "info": case.info()}
        for impl, fn in impls.items():
            if impl != "compiled" or with_compiled:
                row[impl] = time_call(fn, min_time)
        rows.append(row)
    return rows


def rows_from_pytest_benchmark(path: str) -> list[dict]:
    """Collects a pytest-benchmark JSON (bench/) into rows of the same shape as `run`."""
    with open(path) as f:
        data = json.load(f)
    rows: dict[tuple, dict] = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["op"], info["label"], info["dtype"], info["device"])
        row = rows.setdefault(key, {"op": info["op"], "label": info["label"],
                                    "dtype": info["dtype"].removeprefix("torch."), "device": info["device"]})
        row[info["impl"]] = bench["stats"]["median"]
    return list(rows.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print eager/fused ratios of a pytest-benchmark JSON file")
    parser.add_argument("results", help="JSON written by pytest --benchmark-json")
    args = parser.parse_args(argv)
    print(format_table(rows_from_pytest_benchmark(args.results)))


if __name__ == "__main__":
    sys.exit(main())
