"""DNAD on digits over seeds: SNPS alone vs SNPS + AT vs SNPS + soft-target KD, as the authors' code stops.

For each (kd, seed): a search with the digits defaults (the stop test reads S after pruning at an
epoch end, the KD adapters are clipped, AT at the authors' scale beta x mean over stages), then
`fastnas train` of its final architecture (plain cross-entropy, 30 epochs) on the digits test split.
"at-half-sum" (not run by default) is AT at the AT paper's scale, beta / 2 x sum (1.5x).

One JSON line per (kd, seed) in bench/results/dnad_digits_kd_authors.jsonl, resumable (see
table_runs); prints a markdown table of mean ± sd over the seeds. Two single-threaded processes on a
machine left alone:

    OMP_NUM_THREADS=1 .venv/bin/python bench/dnad_kd_table.py --shard 0/2 &
    OMP_NUM_THREADS=1 .venv/bin/python bench/dnad_kd_table.py --shard 1/2 &

`--smoke` runs the same plumbing on a tiny synthetic configuration (seconds; its own folder and file).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fastnas.evaluators.ground_truth import read_records
from fastnas.runs import RunFolder
from table_runs import mean_sd, run_fastnas, run_jobs

RESULTS = Path(__file__).parent / "results" / "dnad_digits_kd_authors.jsonl"
KD = {"none": ["--kd", "none"], "at": ["--kd", "at"], "soft": ["--kd", "soft"],
      "at-half-sum": ["--kd", "at", "--at-scale", "half-sum"]}
LABELS = {"none": "SNPS alone", "at": "SNPS + AT (beta x mean over stages)", "soft": "SNPS + soft KD",
          "at-half-sum": "SNPS + AT (beta / 2 x sum over stages)"}
SEARCH = ["--data", "digits"]
TRAIN = ["--data", "digits", "--epochs", "30"]
SMOKE_SEARCH = ["--data", "synthetic:96", "--C", "4", "--layers", "3", "--nodes", "2", "--batch-size", "16",
                "--epochs", "2", "--ops", "sep_conv_3x3,skip_connect", "--gamma", "0.5", "--gamma-max", "1.0"]
SMOKE_TRAIN = ["--data", "synthetic:96", "--epochs", "1", "--batch-size", "16"]


def run_one(kd: str, seed: int, out: Path, search_args: list[str], train_args: list[str]) -> dict:
    search_dir, train_dir = out / f"{kd}-{seed}" / "search", out / f"{kd}-{seed}" / "train"
    started = time.time()
    if not (search_dir / "pareto.json").exists():
        run_fastnas(["dnad", *KD[kd], *search_args, "--seed", str(seed)], search_dir)
    search_seconds = time.time() - started
    run_fastnas(["train", "--genotype", str(search_dir / "genotype.json"), *train_args, "--seed", str(seed)],
                train_dir)
    result = json.loads((train_dir / "result.json").read_text())
    pareto = json.loads((search_dir / "pareto.json").read_text())
    steps = RunFolder(search_dir, resume=True).metrics()
    return {"kd": kd, "seed": seed, "test_accuracy": result["test_accuracy"], "params": result["params"],
            "flops": result["flops"], "pareto_points": len(pareto), "search_epochs": steps[-1]["epoch"] + 1,
            "search_steps": len(steps), "final_live_ops": steps[-1]["live_ops"],
            "final_sparsity": steps[-1]["pruned_sparsity"], "search_seconds": search_seconds,
            "train_seconds": result["seconds"]}


def table(done: list[dict], kds: list[str]) -> str:
    lines = ["| search | retrained test acc (%) | params | search epochs | S at the stop | search time (s) | runs |",
             "|---|---|---|---|---|---|---|"]
    for kd in kds:
        rows = [r for r in done if r["kd"] == kd]
        if rows:
            lines.append(f"| {LABELS[kd]} | {mean_sd([100 * r['test_accuracy'] for r in rows], 2)} | "
                         f"{mean_sd([r['params'] for r in rows], 0)} | "
                         f"{mean_sd([r['search_epochs'] for r in rows], 1)} | "
                         f"{mean_sd([r['final_sparsity'] for r in rows], 1)} | "
                         f"{mean_sd([r['search_seconds'] for r in rows], 0)} | {len(rows)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kd", nargs="+", default=["none", "at", "soft"], choices=list(KD))
    parser.add_argument("--out", type=Path, default=None, help="run folders (default runs/dnad-kd-table)")
    parser.add_argument("--results", type=Path, default=None, help=f"JSONL file (default {RESULTS})")
    parser.add_argument("--shard", default="0/1", help="i/n: run the jobs whose index is i modulo n")
    parser.add_argument("--smoke", action="store_true", help="a tiny synthetic configuration, to check the plumbing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or Path("runs/dnad-kd-table" + ("-smoke" if args.smoke else ""))
    results = args.results or (out / "results.jsonl" if args.smoke else RESULTS)
    search_args, train_args = (SMOKE_SEARCH, SMOKE_TRAIN) if args.smoke else (SEARCH, TRAIN)
    jobs = [(kd, seed, out) for seed in args.seeds for kd in args.kd]  # seed-major: early rows compare
    run_jobs(jobs, lambda *job: run_one(*job, search_args, train_args), results, args.shard,
             lambda record, job: (record["kd"], record["seed"]) == job[:2])
    print(table(read_records(results), args.kd))


if __name__ == "__main__":
    main()
