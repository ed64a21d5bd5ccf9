"""A search step alone and beside a competing process: how much slower sharing the cores makes it.

Each measurement runs in a fresh process (OpenMP reads OMP_NUM_THREADS when it loads): the step
(bench_search_step.SearchStep, a variant of its VARIANTS) with T intra-op threads, alone, then while a
competitor runs the same step in a loop with its own threads (2 by default: torch's default on a
2-core machine, like a second search started with the defaults). Reported per T: the median step
time alone and shared and their ratio (shared / alone, the slowdown), with the load average and
the competitor's thread count (/proc/PID/status) as seen at the time.

Why a step can collapse there (docs/troubleshooting.md): every OpenMP parallel region ends in a
barrier that waits for all T threads; a dispatch-bound step opens thousands of them (a DNAD step on
the digits default: ~10,000 before horizontal fusion, ~4,400 after, counted by wrapping
GOMP_parallel), and with a competitor one of them is often descheduled, so the others wait for it,
spinning, at every barrier. With T = 1 there is no parallel region at all.

    python bench/bench_shared_cores.py [--method dnad] [--variant grouped] [--threads 1,2]
        [--competitor-threads 2] [--steps 10] [--size 8] [--out bench/results/shared-cores.json]

Run it on an otherwise idle machine: the "alone" runs must be alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


FULL = dict(C=16, layers=8, batch=32)  # the digits default of `fastnas dnad`
QUICK = dict(C=4, layers=3, batch=4)   # --quick: the plumbing only


def worker(method: str, variant: str, size: int, steps: int, forever: bool = False, quick: bool = False) -> dict:
    """Runs the step in this process: `steps` timed steps after one warm-up (forever: until killed)."""
    import torch

    sys.path.insert(0, str(HERE))
    from bench_search_step import implementation, make_step

    with implementation(variant):
        step = make_step(variant, method, **(QUICK if quick else FULL), size=size)
        step.run()
        print("ready", flush=True)
        times = []
        while forever or len(times) < steps:
            started = time.perf_counter()
            step.run()
            times.append(time.perf_counter() - started)
    return {"threads": torch.get_num_threads(), "step_times_s": times, "median_step_s": statistics.median(times),
            "load_average": os.getloadavg()}


def _run_worker(args: argparse.Namespace, threads: int, forever: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", "--method", args.method, "--variant", args.variant,
               "--size", str(args.size), "--steps", str(args.steps)] + (["--forever"] if forever else []) + (
                   ["--quick"] if args.quick else [])
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def _wait_ready(process: subprocess.Popen) -> None:
    for line in process.stdout:
        if line.strip() == "ready":
            return
    raise RuntimeError(f"worker: exited with status {process.wait()} before its first step")


def _result(process: subprocess.Popen) -> dict:
    _wait_ready(process)
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"worker: exited with status {process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _threads_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def measure(args: argparse.Namespace) -> dict:
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        alone = _result(_run_worker(args, threads))
        competitor = _run_worker(args, args.competitor_threads, forever=True)
        try:
            _wait_ready(competitor)
            competitor_threads = _threads_of(competitor.pid)
            shared = _result(_run_worker(args, threads))
        finally:
            competitor.kill()
            competitor.wait()
        rows.append({"threads": threads, "alone": alone, "shared": shared, "competitor_threads_os": competitor_threads,
                     "slowdown": shared["median_step_s"] / alone["median_step_s"]})
    return {"method": args.method, "variant": args.variant, "size": args.size, "steps": args.steps,
            "shapes": QUICK if args.quick else FULL,
            "competitor_omp_threads": args.competitor_threads, "cpu_count": os.cpu_count(), "runs": rows}


def test_worker_smoke():
    """CI: one tiny run of the worker in this process (the timing itself is the lead's, on an idle machine)."""
    result = worker("dnad", "grouped", size=8, steps=1, quick=True)
    assert len(result["step_times_s"]) == 1 and result["median_step_s"] > 0 and result["threads"] >= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="dnad")
    parser.add_argument("--variant", default="grouped", help="a variant of bench_search_step.VARIANTS")
    parser.add_argument("--threads", default="1,2", help="intra-op thread counts of the measured step")
    parser.add_argument("--competitor-threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=8, help="image side (8: the digits default)")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    parser.add_argument("--quick", action="store_true", help="a tiny network: checks the plumbing, times nothing")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forever", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.method, args.variant, args.size, args.steps, args.forever, args.quick)),
              flush=True)
        return
    text = json.dumps(measure(args), indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
