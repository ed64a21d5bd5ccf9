"""DARTS vs SD-DARTS (K = 1) vs SD-DARTS (voted, K = 2) on digits, over seeds.

For each (method, seed): a search with the digits defaults, then `fastnas train`
of its genotype (plain cross-entropy, 30 epochs). Writes one JSON line per run to
bench/results/sddarts_digits.jsonl (resumable: finished runs are skipped, an
interrupted search or training resumes from its checkpoint) and prints a
markdown table of mean ± standard deviation. `--shard i/n` runs every n-th job
only, so that two single-threaded processes can share the work. `--recheck-sharpness`
measures the final sharpness of each finished search again with a larger sample
and more power iterations (bench/results/sddarts_digits_sharpness.jsonl):

    OMP_NUM_THREADS=1 .venv/bin/python bench/sddarts_table.py --shard 0/2 &
    OMP_NUM_THREADS=1 .venv/bin/python bench/sddarts_table.py --shard 1/2 &
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fastnas.cli import main as fastnas
from fastnas.runs import RunFolder
from fastnas.strategies import SDDARTSConfig, SDDARTSSearch

RESULTS = Path(__file__).parent / "results" / "sddarts_digits.jsonl"
SHARPNESS = Path(__file__).parent / "results" / "sddarts_digits_sharpness.jsonl"
RECHECK = {"sharpness_samples": 256, "sharpness_iterations": 30}
METHODS = {"darts": ["darts"], "sd-k1": ["sddarts", "--teachers", "1"], "sd-voted": ["sddarts", "--teachers", "2"]}
LABELS = {"darts": "DARTS", "sd-k1": "SD-DARTS (K = 1)", "sd-voted": "SD-DARTS (voted, K = 2)"}


def run_one(method: str, seed: int, out: Path) -> dict:
    search_dir, train_dir = out / f"{method}-{seed}" / "search", out / f"{method}-{seed}" / "train"
    started = time.time()
    resume = ["--resume"] if (search_dir / "checkpoint.pt").exists() else []
    if not (search_dir / "result.json").exists():
        fastnas([*METHODS[method], "--data", "digits", "--seed", str(seed), "--out", str(search_dir), "--quiet",
                 *resume])
    wall_seconds = time.time() - started
    resume = ["--resume"] if (train_dir / "checkpoint.pt").exists() else []
    fastnas(["train", "--genotype", str(search_dir / "genotype.json"), "--data", "digits", "--seed", str(seed),
             "--out", str(train_dir), "--quiet", *resume])
    search = json.loads((search_dir / "result.json").read_text())
    trained = json.loads((train_dir / "result.json").read_text())
    return {"method": method, "seed": seed, "val_accuracy": search["val_accuracy"], "sharpness": search["sharpness"],
            "search_seconds": search["search_seconds"], "search_wall_seconds": wall_seconds,
            "test_accuracy": trained["test_accuracy"], "params": trained["params"],
            "train_seconds": trained["seconds"], "genotype": search["genotype"]}


def recheck_sharpness(method: str, seed: int, out: Path) -> dict:
    """The final checkpoint's dominant Hessian eigenvalue with RECHECK's sample size and iterations."""
    search_dir = out / f"{method}-{seed}" / "search"
    settings = json.loads((search_dir / "config.json").read_text())
    settings.pop("versions")
    config = SDDARTSConfig(**{**settings, **RECHECK})
    search = SDDARTSSearch(config, RunFolder(search_dir, resume=True), progress=False, log=lambda _: None)
    search.run()  # finished: only restores the final state
    return {"method": method, "seed": seed, **RECHECK, "sharpness": search.measure_sharpness()}


def load_done(path: Path = RESULTS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def table(done: list[dict], methods: list[str]) -> str:
    def cell(values: list[float], digits: int) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"

    rechecked = load_done(SHARPNESS)
    lines = ["| search | supernet val acc (%) | sharpness, 32 samples x 8 iterations | sharpness, "
             f"{RECHECK['sharpness_samples']} samples x {RECHECK['sharpness_iterations']} iterations "
             "| retrained test acc (%) | search time (s) | seeds |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        rows = [r for r in done if r["method"] == method]
        recheck = [r["sharpness"] for r in rechecked if r["method"] == method]
        if rows:
            lines.append(f"| {LABELS[method]} | {cell([100 * r['val_accuracy'] for r in rows], 2)} | "
                         f"{cell([r['sharpness'] for r in rows], 4)} | "
                         f"{cell(recheck, 4) if recheck else '-'} | "
                         f"{cell([100 * r['test_accuracy'] for r in rows], 2)} | "
                         f"{cell([r['search_seconds'] for r in rows], 0)} | {len(rows)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("runs/sddarts-table"))
    parser.add_argument("--shard", default="0/1", help="i/n: run the jobs whose index is i modulo n")
    parser.add_argument("--recheck-sharpness", action="store_true",
                        help="re-measure the final sharpness of finished searches (no new searches)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shard, shards = (int(v) for v in args.shard.split("/"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(method, seed) for seed in args.seeds for method in args.methods]  # seed-major: early rows compare
    for index, (method, seed) in enumerate(jobs):
        target = SHARPNESS if args.recheck_sharpness else RESULTS
        if index % shards != shard or any(r["method"] == method and r["seed"] == seed for r in load_done(target)):
            continue
        measure = recheck_sharpness if args.recheck_sharpness else run_one
        record = measure(method, seed, args.out)
        with open(target, "a") as f:  # one short line per append: safe with two shards
            f.write(json.dumps(record) + "\n")
    print(table(load_done(), args.methods))


if __name__ == "__main__":
    main()
