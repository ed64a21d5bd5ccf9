"""`fastnas bench`: the fused ops timed against eager PyTorch and torch.compile."""

from __future__ import annotations

import argparse
import json
import os

import torch


def _bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import benchmarks

    if args.device == "cuda" and not (torch.cuda.is_available() and benchmarks.ops.build_info()["with_cuda"]):
        raise ValueError("device: cuda needs a visible GPU and a CUDA build of fastnas (GPU visible: "
                         f"{torch.cuda.is_available()}, build: {benchmarks.ops.build_info()})")
    cases = benchmarks.grid([args.device], args.quick)
    bar = tqdm(total=len(cases), disable=args.quiet, desc="benchmarks", unit="case")

    def progress(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    rows = benchmarks.run([args.device], args.quick, with_compiled=args.compile,
                          min_time=0.1 if args.quick else 0.5, progress=progress)
    bar.close()
    print(benchmarks.format_table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"build": benchmarks.ops.build_info(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0



def add_parsers(sub) -> None:
    bench = sub.add_parser("bench", help="time the fused ops against eager PyTorch and torch.compile")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--quick", action="store_true", help="one small case per op (under a minute on a CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="also time torch.compile of the reference (default: on, off with --quick)")
    bench.add_argument("--json", metavar="PATH", help="write the timings and build facts as JSON")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=_bench)
