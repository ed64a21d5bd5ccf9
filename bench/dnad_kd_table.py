"""DNAD on digits: SNPS alone vs SNPS + AT vs SNPS + soft-target KD, over seeds.

For each (kd, seed): a search with the defaults, then `fastnas train` of its final
architecture (plain cross-entropy, 30 epochs). Writes one JSON line per run to
bench/results/dnad_digits_kd.jsonl (resumable: finished runs are skipped) and
prints a markdown table of mean and standard deviation.

    .venv/bin/python bench/dnad_kd_table.py [--seeds 0 1 2] [--out runs/kd-table]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from fastnas.cli import main as fastnas

RESULTS = Path(__file__).parent / "results" / "dnad_digits_kd.jsonl"


def run_one(kd: str, seed: int, out: Path) -> dict:
    search_dir, train_dir = out / f"{kd}-{seed}" / "search", out / f"{kd}-{seed}" / "train"
    started = time.time()
    resume = ["--resume"] if (search_dir / "checkpoint.pt").exists() else []
    fastnas(["dnad", "--data", "digits", "--kd", kd, "--seed", str(seed), "--out", str(search_dir), "--quiet",
             *resume])
    search_seconds = time.time() - started
    resume = ["--resume"] if (train_dir / "checkpoint.pt").exists() else []
    fastnas(["train", "--genotype", str(search_dir / "genotype.json"), "--data", "digits", "--seed", str(seed),
             "--out", str(train_dir), "--quiet", *resume])
    result = json.loads((train_dir / "result.json").read_text())
    pareto = json.loads((search_dir / "pareto.json").read_text())
    return {"kd": kd, "seed": seed, "test_accuracy": result["test_accuracy"], "params": result["params"],
            "flops": result["flops"], "pareto_points": len(pareto), "search_seconds": search_seconds,
            "train_seconds": result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kd", nargs="+", default=["none", "at", "soft"])
    parser.add_argument("--out", type=Path, default=Path("runs/kd-table"))
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    for kd in args.kd:
        for seed in args.seeds:
            if any(r["kd"] == kd and r["seed"] == seed for r in done):
                continue
            record = run_one(kd, seed, args.out)
            done.append(record)
            with open(RESULTS, "a") as f:
                f.write(json.dumps(record) + "\n")
    print("| search | retrained test accuracy (%) | params | search time (s) | runs |")
    print("|---|---|---|---|---|")
    for kd in args.kd:
        rows = [r for r in done if r["kd"] == kd]
        acc = [100 * r["test_accuracy"] for r in rows]
        params = [r["params"] for r in rows]
        spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        label = {"none": "SNPS alone", "at": "SNPS + AT", "soft": "SNPS + soft KD"}.get(kd, kd)
        print(f"| {label} | {statistics.mean(acc):.2f} ± {spread(acc):.2f} | {statistics.mean(params):,.0f} ± "
              f"{spread(params):,.0f} | {statistics.mean(r['search_seconds'] for r in rows):.0f} | {len(rows)} |")


if __name__ == "__main__":
    main()
