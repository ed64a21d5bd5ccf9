"""`fastnas proxies --benchmark` over NAS-Bench-201's cells, end to end: with and without keep_freed_memory.

The command a user runs (synflow, params, flops; score cache, bootstrap, plots), each run in a fresh process so
that glibc's allocator starts as a user's would. "default" is the command as shipped (on Linux with glibc,
fastnas.cli.common.keep_freed_memory raises glibc's mmap and trim thresholds before scoring); "glibc defaults"
runs the same command with that call made a no-op. The table is the compact CSV of the cells with random
accuracies (the time does not depend on them).

`python bench/bench_nb201_cli.py [--cells N] [--threads T]` writes bench/results/nb201-cli-<host>.json with the
wall time, user and system CPU seconds and the peak resident memory of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fastnas.cli.common import GLIBC_THRESHOLD_VARIABLES
from fastnas.nasbench import BenchmarkTable, write_table
from fastnas.search_spaces import nb201

RESULTS = Path(__file__).parent / "results"
# The child: optionally disable keep_freed_memory, run the CLI, report its own resource use as JSON.
CHILD = """
import json, resource, sys
import fastnas.cli.common
if sys.argv[1] == "glibc defaults":
    fastnas.cli.common.keep_freed_memory = lambda: False
from fastnas.cli import main
main(sys.argv[2:])
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"user_s": use.ru_utime, "system_s": use.ru_stime, "peak_rss_mb": use.ru_maxrss / 1024}))
"""
VARIANTS = ("glibc defaults", "default")


def run(variant: str, table: Path, out: Path, threads: int) -> dict:
    command = ["proxies", "--benchmark", f"nb201:{table}", "--proxies", "synflow,params,flops", "--sample", "all",
               "--device", "cpu", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in GLIBC_THRESHOLD_VARIABLES:
        env.pop(name, None)
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, variant, *command], env=env, check=True,
                           capture_output=True, text=True)
    wall = time.perf_counter() - started
    usage = json.loads(child.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **usage}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=15625, help="the first N cells of the space (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--out", default=str(RESULTS / f"nb201-cli-{platform.node() or 'host'}.json"))
    args = parser.parse_args(argv)
    if not 1 <= args.cells <= 15625:
        parser.error(f"--cells: expected 1..15625, got {args.cells}")
    archs = nb201.all_archs()[:args.cells]
    accuracy = torch.rand(len(archs), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 100
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / "nb201.csv"
        write_table(table, BenchmarkTable(archs, {"cifar10": accuracy}))
        for variant in VARIANTS:
            runs[variant] = run(variant, table, Path(folder) / variant.replace(" ", "-"), args.threads)
            print(f"{variant:>14}: {runs[variant]['wall_s']:.1f} s wall, {runs[variant]['system_s']:.1f} s system, "
                  f"peak {runs[variant]['peak_rss_mb']:.0f} MB", flush=True)
    result = {"what": "fastnas proxies --benchmark nb201:TABLE.csv --proxies synflow,params,flops --sample all, "
                      "one fresh process per run; 'glibc defaults' = keep_freed_memory disabled",
              "cells": args.cells, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "runs": runs,
              "glibc_defaults_over_default": runs["glibc defaults"]["wall_s"] / runs["default"]["wall_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


def test_cli_bench_runs_both_variants(tmp_path):
    """Plumbing on 4 cells (CI): both variants run the command and report their resources."""
    out = tmp_path / "result.json"
    main(["--cells", "4", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["runs"]) == set(VARIANTS) and result["cells"] == 4
    for usage in result["runs"].values():
        assert usage["wall_s"] > 0 and usage["peak_rss_mb"] > 0


if __name__ == "__main__":
    main()
