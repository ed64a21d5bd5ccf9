"""NAS-Bench-201 scoring speed: batched (fastnas.proxies.batched) against the one-network-at-a-time loop.

The loop is what `fastnas proxies --gt` does for every architecture: seed, build the NB201Network, score it with
the registry (`score_many`: a private deep copy, hooks, its own passes). The batched path scores the same cells
with `score_nb201` on one SharedNB201, built once and counted in the time. Cases (the issue's targets in
brackets):

* ``data-free``: synflow + params + flops of one all-ones image (>= 10x), and the all-cells time of the 15,625
  cells with them (<= 10 minutes on the 2-core CPU; <= 1 minute on a GPU);
* ``jacov``, ``nwot``, ``snip``, ``grad_norm``: each alone on a 64-image batch (>= 5x). Each row also gives the
  arithmetic both paths must do (the cells' convolution and classifier MACs x images x sweeps: 1 forward for
  nwot, + 1 backward to the inputs for jacov, + 1 to the weights for snip and grad_norm) at the fastest float32
  rate measured in the same run (matrix products and the network's own convolutions, `dense_flops_per_s`): about
  the least time any batching of that arithmetic could take on the device, and so about the most it could gain
  over the loop (``compute_bound_speedup``).

Networks at the benchmark's size: C = 16, N = 5, 32x32 images (CIFAR-10's shape, random pixels: the time does not
depend on them), 10 classes.

`pytest bench/bench_nb201_scoring.py` times every case (pytest-benchmark, impl "fused" = batched, "eager" = loop,
so `python -m fastnas.benchmarks RESULTS.json` prints loop / batched); with --benchmark-disable (CI) each runs once
on a tiny setting and the batched scores are checked against the loop's on the shared weights.
`python bench/bench_nb201_scoring.py [--device cuda] [--all-cells]` measures the ratios and the all-cells time and
writes bench/results/nb201-scoring-<host>.json, after every case (``"complete": false`` until the end, so a run cut
short by a time cap keeps what it measured). On the CPU both paths run with glibc's mmap and trim thresholds
raised, as `fastnas proxies --benchmark` runs (fastnas.cli.common.keep_freed_memory; --glibc-defaults: not).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastnas.cli.common import keep_freed_memory
from fastnas.proxies import score_many
from fastnas.proxies.batched import SharedNB201, score_nb201
from fastnas.runs import atomic_write_json
from fastnas.search_spaces import nb201

RESULTS = Path(__file__).parent / "results"
# Passes over the network's MACs a data proxy makes: forward; backward to the inputs; backward to the weights.
SWEEPS = {"nwot": 1, "jacov": 2, "snip": 3, "grad_norm": 3}
CASES = {"data-free": ["synflow", "params", "flops"], "jacov": ["jacov"], "nwot": ["nwot"], "snip": ["snip"],
         "grad_norm": ["grad_norm"]}


@dataclass
class Setting:
    """The cells, network size and batch of one measurement."""

    cells: int
    C: int = 16
    N: int = 5
    side: int = 32
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0
    archs_per_pass: int | None = None  # None: score_nb201's defaults

    def archs(self) -> list[str]:
        rng = random.Random(self.seed)
        return [nb201.all_archs()[i] for i in rng.sample(range(15625), self.cells)]

    def batch(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """64 images for the data proxies; the one image the data-free ones read its shape from."""
        size = 1 if set(names) <= {"synflow", "params", "flops"} else self.batch_size
        gen = torch.Generator().manual_seed(self.seed)
        images = torch.randn(size, 3, self.side, self.side, generator=gen)
        return images.to(self.device), torch.randint(0, 10, (size,), generator=gen).to(self.device)


def loop(names: list[str], setting: Setting, archs: list[str]) -> dict[str, list[float]]:
    """Today's path: per architecture seed, build, score_many."""
    batch = setting.batch(names)
    scores = {name: [] for name in names}
    for arch in archs:
        torch.manual_seed(setting.seed)
        net = nb201.build(arch, setting.C, setting.N).to(setting.device)
        for name, value in score_many(names, net, batch).items():
            scores[name].append(value)
    return scores


def batched(names: list[str], setting: Setting, archs: list[str]) -> dict[str, torch.Tensor]:
    torch.manual_seed(setting.seed)
    shared = SharedNB201(setting.C, setting.N).to(setting.device)
    batch = None if names == CASES["data-free"] else setting.batch(names)
    return score_nb201(names, archs, shared, batch, image_size=setting.side, archs_per_pass=setting.archs_per_pass)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(function, device: str, repeats: int = 1) -> float:
    """Best of `repeats` wall-clock times of function()."""
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


# --- pytest-benchmark ------------------------------------------------------------------------------------------
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def check_against_the_loop(names: list[str], setting: Setting, archs: list[str]) -> None:
    """Batched scores equal the registry's on the networks holding the shared weights."""
    torch.manual_seed(setting.seed)
    shared = SharedNB201(setting.C, setting.N).to(setting.device)
    batch = setting.batch(names)
    got = score_nb201(names, archs, shared, None if names == CASES["data-free"] else batch,
                      image_size=setting.side)
    for i, arch in enumerate(archs):
        want = score_many(names, shared.network(arch), batch)
        for name in names:
            assert got[name][i].item() == pytest.approx(want[name], rel=1e-4, abs=1e-6, nan_ok=True), (arch, name)


@pytest.mark.parametrize("impl", ["fused", "eager"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_nb201_scoring(benchmark, case, impl, device):
    names = CASES[case]
    if benchmark.disabled:
        setting = Setting(cells=4, C=4, N=1, side=16, batch_size=8, device=device)
    else:
        setting = Setting(cells=32 if case == "data-free" else 8, device=device)
    archs = setting.archs()
    benchmark.group = f"nb201 scoring {case}"
    benchmark.extra_info.update(op="nb201_scoring", label=f"{case} {setting.cells} cells C{setting.C} N{setting.N}",
                                dtype="float32", device=device, impl=impl)
    if impl == "fused":
        if benchmark.disabled:
            check_against_the_loop(names, setting, archs)
        benchmark.pedantic(lambda: (batched(names, setting, archs), synchronize(device)), rounds=1 if
                           benchmark.disabled else 3, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)
    else:
        benchmark.pedantic(lambda: (loop(names, setting, archs), synchronize(device)), rounds=1, iterations=1)


def test_a_run_cut_short_keeps_what_it_measured(tmp_path, monkeypatch):
    whole_loop = loop

    def loop_cut_at_jacov(names, setting, archs):
        if names == CASES["jacov"]:
            raise TimeoutError("the cap")
        return whole_loop(names, setting, archs)

    monkeypatch.setitem(globals(), "loop", loop_cut_at_jacov)
    out = tmp_path / "nb201-scoring.json"
    with pytest.raises(TimeoutError):
        main(["--quick", "--glibc-defaults", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["complete"] is False and list(saved["rows"]) == ["data-free"]
    assert saved["rows"]["data-free"]["loop_s"] > 0 and "all_cells" not in saved
    assert [path.name for path in tmp_path.iterdir()] == [out.name]  # no partial file left


def dense_flops_per_s(device: str, setting: Setting, repeats: int = 10) -> tuple[float, str]:
    """The fastest float32 arithmetic measured on the device (FLOP/s, best of `repeats` each), and where.

    Square matrix products of three sizes and the network's own 3x3 convolutions (each stage's width and side,
    the setting's batch, channels-last): on a shared 2-core VM neither is steady, and oneDNN's convolutions have
    run faster than its 1024-square product, so the best of them all is the rate no batching is expected to beat.
    """
    def rate(flop: float, run) -> float:
        run()  # warm-up
        return flop / seconds(run, device, repeats)

    rates = {}
    for size in (512, 1024, 2048):
        a, b = (torch.randn(size, size, device=device) for _ in range(2))
        rates[f"mm {size}"] = rate(2 * size ** 3, lambda: torch.mm(a, b))
    for stage in range(nb201.STAGES):
        width, side = setting.C * 2 ** stage, setting.side // 2 ** stage
        x = torch.randn(setting.batch_size, width, side, side, device=device).to(memory_format=torch.channels_last)
        w = torch.randn(width, width, 3, 3, device=device).to(memory_format=torch.channels_last)
        rates[f"conv3x3 {width}x{side}x{side}"] = rate(2 * setting.batch_size * width * width * 9 * side * side,
                                                       lambda: torch.nn.functional.conv2d(x, w, padding=1))
    source = max(rates, key=rates.get)
    return rates[source], source


def data_proxy_work(names: list[str], setting: Setting, archs: list[str]) -> float:
    """FLOPs (2 x MACs) the data proxies `names` must compute on `archs` and the setting's batch."""
    macs = sum(nb201.count_cost(nb201.parse_arch(arch), setting.C, setting.N, image_size=setting.side)[1]
               for arch in archs)
    return 2.0 * macs * setting.batch_size * max(SWEEPS[name] for name in names)


# --- ratios and the all-cells time for bench/results --------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, default=64, help="cells of the data-free comparison")
    parser.add_argument("--data-cells", type=int, default=16, help="cells of each data-proxy comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--archs-per-pass", type=int, default=None, help="cells per batched pass (default: "
                        "score_nb201's)")
    parser.add_argument("--quick", action="store_true",
                        help="plumbing only: 4 cells at C=4, N=1, 16x16, 8 images (the ratios mean nothing)")
    parser.add_argument("--all-cells", action="store_true",
                        help="also time synflow + params + flops of all 15,625 cells batched (else an estimate)")
    parser.add_argument("--runs", type=int, default=1, help="measurements of each case, the two paths "
                        "alternating (the row: medians, and every run's ratio)")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="leave glibc's mmap and trim thresholds alone (default: raise them, as `fastnas "
                        "proxies --benchmark` does on the CPU, for the loop and the batched path alike)")
    parser.add_argument("--out", default=str(RESULTS / f"nb201-scoring-{platform.node() or 'host'}.json"))
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs: expected a positive number of measurements, got {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    kept = not args.glibc_defaults and args.device == "cpu" and keep_freed_memory()
    rows = {}
    size = {"C": 4, "N": 1, "side": 16, "batch_size": 8} if args.quick else {}
    peak, peak_source = dense_flops_per_s(args.device, Setting(cells=0, device=args.device, **size))
    print(f"fastest float32 arithmetic measured: {peak / 1e9:.1f} GFLOP/s ({peak_source})", flush=True)
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor()
    result = {"what": "loop = per cell: seed, build NB201Network, score_many; batched = score_nb201 on one "
                      "SharedNB201 (built inside the timing). Per run: loop timed once, batched best of 2 after a "
                      "warm-up; runs alternate the paths.",
              "setting": "--quick: C=4, N=1, 16x16, 8 images (plumbing only)" if args.quick else
                         "C=16, N=5, 32x32 random images, 10 classes; data proxies on 64 images",
              "device": args.device, "device_name": device_name, "threads": torch.get_num_threads(),
              "archs_per_pass": args.archs_per_pass, "runs": args.runs, "keep_freed_memory": kept,
              "peak_gflop_per_s": peak / 1e9, "peak_from": peak_source,
              "torch": torch.__version__, "complete": False, "rows": rows}
    for case, names in CASES.items():
        cells = 4 if args.quick else args.cells if case == "data-free" else args.data_cells
        setting = Setting(cells=cells, device=args.device, archs_per_pass=args.archs_per_pass, **size)
        archs = setting.archs()
        batched(names, setting, archs[:2])  # warm-up: first-call allocations
        # runs alternate the two paths, so that a slow spell of the machine falls on both; the row gives their
        # medians and each run's ratio
        fasts, slows = [], []
        for _ in range(args.runs):
            fasts.append(seconds(lambda: batched(names, setting, archs), args.device, repeats=2))
            slows.append(seconds(lambda: loop(names, setting, archs), args.device))
        fast, slow = statistics.median(fasts), statistics.median(slows)
        ratios = sorted(s / f for s, f in zip(slows, fasts))
        rows[case] = {"proxies": names, "cells": setting.cells, "batch_images": len(setting.batch(names)[1]),
                      "batched_s": fast, "loop_s": slow, "speedup": slow / fast, "batched_s_runs": fasts,
                      "loop_s_runs": slows, "speedup_runs": ratios}
        if case in SWEEPS:
            work = data_proxy_work(names, setting, archs)
            rows[case].update(gflop=work / 1e9, batched_gflop_per_s=work / fast / 1e9,
                              compute_bound_s=work / peak, compute_bound_speedup=slow * peak / work)
        print(f"{case:>10}: {setting.cells} cells, loop {slow:.2f} s, batched {fast:.2f} s, {slow / fast:.1f}x"
              + (f" (runs {ratios[0]:.1f}x to {ratios[-1]:.1f}x)" if args.runs > 1 else "")
              + (f"; at the fastest rate {rows[case]['compute_bound_s']:.2f} s, at most "
                 f"{rows[case]['compute_bound_speedup']:.1f}x" if case in SWEEPS else ""), flush=True)
        atomic_write_json(Path(args.out), result)  # what is measured so far survives a run cut short (a time cap)
    per_cell = rows["data-free"]["batched_s"] / rows["data-free"]["cells"]
    # The loop costs the same per cell however many there are; a batched pass amortizes more when its
    # cells share more operations, as the whole space sorted by operations does.
    loop_all = rows["data-free"]["loop_s"] / rows["data-free"]["cells"] * 15625
    all_cells = result["all_cells"] = {
        "estimate_s": per_cell * 15625, "loop_estimate_s": loop_all,
        "estimate_from": f"{rows['data-free']['cells']} cells x 15625 / {rows['data-free']['cells']}"}
    if args.all_cells:
        atomic_write_json(Path(args.out), result)
        setting = Setting(cells=15625, device=args.device, archs_per_pass=args.archs_per_pass, **size)
        all_cells["measured_s"] = seconds(lambda: batched(CASES["data-free"], setting, nb201.all_archs()),
                                          args.device)
        all_cells["loop_estimate_over_measured"] = loop_all / all_cells["measured_s"]
    print(f"all 15,625 cells with synflow + params + flops: estimated {all_cells['estimate_s']:.0f} s"
          + (f", measured {all_cells['measured_s']:.0f} s" if "measured_s" in all_cells else "")
          + f" (the loop: estimated {loop_all:.0f} s)")
    result["complete"] = True
    atomic_write_json(Path(args.out), result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
