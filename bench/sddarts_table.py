"""DARTS vs SD-DARTS on digits over seeds: the paper's snapshot teachers (K = 1, voted K = 2) and the old cache.

For each (method, seed): a search with the digits defaults, its sharpness (the largest Hessian
eigenvalue of the validation loss w.r.t. alpha) measured after every epoch (`--sharpness-every 1`:
the trajectory; the measurement changes nothing else in the search), then `fastnas train` of its
genotype (plain cross-entropy, 30 epochs) on the digits test split. The methods differ only in their
flags (METHODS); "sd-cache" is fastnas's earlier per-sample prediction cache (`--teacher-source cache`,
not the paper's teacher) at the same temperature, so that its row isolates the teacher.

One JSON line per (method, seed) in bench/results/sddarts_digits_snapshot.jsonl, resumable (see
table_runs). Prints the final results (mean ± sd over the seeds) and the sharpness trajectory (mean ±
sd per epoch). `--recheck-sharpness` measures the final sharpness of each finished search again with
more samples and Lanczos steps (bench/results/sddarts_digits_snapshot_sharpness.jsonl). Two
single-threaded processes, then the recheck, on a machine left alone:

    OMP_NUM_THREADS=1 .venv/bin/python bench/sddarts_table.py --shard 0/2 &
    OMP_NUM_THREADS=1 .venv/bin/python bench/sddarts_table.py --shard 1/2 &
    wait; OMP_NUM_THREADS=1 .venv/bin/python bench/sddarts_table.py --recheck-sharpness

`--smoke` runs the same plumbing on a tiny synthetic configuration (seconds; its own folder and files).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fastnas.evaluators.ground_truth import read_records
from fastnas.runs import RunFolder
from fastnas.strategies import SDDARTSConfig, SDDARTSSearch
from table_runs import mean_sd, run_fastnas, run_jobs

RESULTS = Path(__file__).parent / "results" / "sddarts_digits_snapshot.jsonl"
RECHECK = {"sharpness_samples": 256, "sharpness_iterations": 30}
METHODS = {"darts": ["darts"],
           "sd-k1": ["sddarts", "--teachers", "1"],
           "sd-voted": ["sddarts", "--teachers", "2"],
           "sd-cache": ["sddarts", "--teachers", "2", "--teacher-source", "cache"]}
LABELS = {"darts": "DARTS", "sd-k1": "SD-DARTS, snapshot teacher (K = 1)",
          "sd-voted": "SD-DARTS, voted snapshot teachers (K = 2)",
          "sd-cache": "SD-DARTS, per-sample cache of 2 epochs (not the paper's)"}
SEARCH = ["--data", "digits", "--sharpness-every", "1"]
TRAIN = ["--data", "digits", "--epochs", "30"]
SMOKE_SEARCH = ["--data", "synthetic:64", "--sharpness-every", "1", "--C", "2", "--layers", "3", "--nodes", "2",
                "--epochs", "2", "--batch-size", "8", "--ops", "skip_connect,sep_conv_3x3"]  # 2 steps per epoch
SMOKE_TRAIN = ["--data", "synthetic:64", "--epochs", "1", "--batch-size", "16"]
SMOKE_RECHECK = {"sharpness_samples": 8, "sharpness_iterations": 2}


def run_one(method: str, seed: int, out: Path, search_args: list[str], train_args: list[str]) -> dict:
    search_dir, train_dir = out / f"{method}-{seed}" / "search", out / f"{method}-{seed}" / "train"
    started = time.time()
    if not (search_dir / "result.json").exists():
        run_fastnas([*METHODS[method], *search_args, "--seed", str(seed)], search_dir)
    wall_seconds = time.time() - started
    run_fastnas(["train", "--genotype", str(search_dir / "genotype.json"), *train_args, "--seed", str(seed)],
                train_dir)
    search = json.loads((search_dir / "result.json").read_text())
    trained = json.loads((train_dir / "result.json").read_text())
    epochs = [m for m in RunFolder(search_dir, resume=True).metrics() if m["kind"] == "epoch"]
    return {"method": method, "seed": seed, "val_accuracy": search["val_accuracy"], "sharpness": search["sharpness"],
            "sharpness_min": search.get("sharpness_min"),
            "trajectory": [[m["epoch"], m["sharpness"]] for m in epochs if m["sharpness"] is not None],
            "teacher_bytes": search["teacher_bytes"], "search_seconds": search["search_seconds"],
            "search_wall_seconds": wall_seconds, "test_accuracy": trained["test_accuracy"],
            "params": trained["params"], "train_seconds": trained["seconds"], "genotype": search["genotype"]}


def recheck_sharpness(method: str, seed: int, out: Path, recheck: dict) -> dict:
    """The final checkpoint's sharpness (lambda_max; lambda_min beside it) with `recheck`'s sample size and
    Lanczos steps."""
    run = RunFolder(out / f"{method}-{seed}" / "search", resume=True)
    config = SDDARTSConfig(**{**run.load_checkpoint()["config"], **recheck})  # the search's exact settings
    search = SDDARTSSearch(config, run, progress=False, log=lambda _: None)
    search.run()  # finished: only restores the final state
    spectrum = search.measure_sharpness()
    return {"method": method, "seed": seed, **recheck, "sharpness": spectrum.lambda_max,
            "sharpness_min": spectrum.lambda_min, "sharpness_residual": spectrum.residual_max}


def tables(done: list[dict], rechecked: list[dict], methods: list[str], recheck: dict) -> str:
    """The results table and the sharpness-trajectory table, in markdown."""
    lines = ["| search | supernet val acc (%) | final sharpness, 32 samples x 8 Lanczos steps | final sharpness, "
             f"{recheck['sharpness_samples']} samples x {recheck['sharpness_iterations']} Lanczos steps "
             "| retrained test acc (%) | teacher memory (KB) | search time (s) | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for method in methods:
        rows = [r for r in done if r["method"] == method]
        if rows:
            again = [r["sharpness"] for r in rechecked if r["method"] == method]
            lines.append(f"| {LABELS[method]} | {mean_sd([100 * r['val_accuracy'] for r in rows], 2)} | "
                         f"{mean_sd([r['sharpness'] for r in rows], 4)} | {mean_sd(again, 4)} | "
                         f"{mean_sd([100 * r['test_accuracy'] for r in rows], 2)} | "
                         f"{rows[0]['teacher_bytes'] / 1024:.1f} | "
                         f"{mean_sd([r['search_seconds'] for r in rows], 0)} | {len(rows)} |")
    epochs = sorted({epoch for r in done for epoch, _ in r["trajectory"]})
    lines += ["", "| sharpness after epoch | " + " | ".join(str(e) for e in epochs) + " |",
              "|---|" + "---|" * len(epochs)]
    for method in methods:
        rows = [dict(r["trajectory"]) for r in done if r["method"] == method]
        if rows:
            cells = [mean_sd([row[e] for row in rows if e in row], 3) for e in epochs]
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=None, help="run folders (default runs/sddarts-snapshot-table)")
    parser.add_argument("--results", type=Path, default=None, help=f"JSONL file (default {RESULTS})")
    parser.add_argument("--shard", default="0/1", help="i/n: run the jobs whose index is i modulo n")
    parser.add_argument("--recheck-sharpness", action="store_true",
                        help="re-measure the final sharpness of finished searches (no new searches)")
    parser.add_argument("--smoke", action="store_true", help="a tiny synthetic configuration, to check the plumbing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or Path("runs/sddarts-snapshot-table" + ("-smoke" if args.smoke else ""))
    results = args.results or (out / "results.jsonl" if args.smoke else RESULTS)
    rechecks = results.with_name(results.stem + "_sharpness.jsonl")
    recheck = SMOKE_RECHECK if args.smoke else RECHECK
    jobs = [(method, seed, out) for seed in args.seeds for method in args.methods]  # seed-major: early rows compare
    if args.recheck_sharpness:
        finished = {(r["method"], r["seed"]) for r in read_records(results)}
        run_jobs([job for job in jobs if job[:2] in finished], lambda *job: recheck_sharpness(*job, recheck),
                 rechecks, args.shard, lambda record, job: (record["method"], record["seed"]) == job[:2])
    else:
        search_args, train_args = (SMOKE_SEARCH, SMOKE_TRAIN) if args.smoke else (SEARCH, TRAIN)
        run_jobs(jobs, lambda *job: run_one(*job, search_args, train_args), results, args.shard,
                 lambda record, job: (record["method"], record["seed"]) == job[:2])
    print(tables(read_records(results), read_records(rechecks), args.methods, recheck))


if __name__ == "__main__":
    main()
