"""Auto-DAS on the NB201 / digits ground truth: the searched proxy against DisWOT and synflow, held out.

For each seed: `fastnas autodas search-proxy` (the paper's EA settings; the seed draws the 4:3
split, the batch, the initializations and the EA), then `fastnas proxies` scores DisWOT, synflow
and the paper's own NB201 program (registry `autodas_nb201`) on the same batch and initializations,
and all are correlated with the distilled accuracy on the held-out architectures of that split.
Writes bench/results/autodas-nb201-digits.json and prints a markdown table. Resumable: finished
searches and cached proxy scores are reused.

    OMP_NUM_THREADS=1 python bench/autodas_nb201_digits.py --gt runs/gt-nb201/gt.jsonl [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from fastnas.cli import main as fastnas
from fastnas.evaluators.proxy_table import load_ground_truth
from fastnas.ops import rank_corr

RESULTS = Path(__file__).parent / "results" / "autodas-nb201-digits.json"
BASELINES = ("diswot", "synflow", "autodas_nb201")


def held_out_correlations(scores: dict[str, list[float]], accuracy: list[float]) -> dict[str, dict[str, float]]:
    target = torch.tensor(accuracy, dtype=torch.float64)
    rows = torch.tensor([scores[name] for name in scores], dtype=torch.float64)
    return {name: {method: float(rank_corr(rows, target, method)[i]) for method in ("kendall", "spearman")}
            for i, name in enumerate(scores)}


def run_seed(gt: Path, seed: int, out: Path, iterations: int) -> dict:
    search_dir, proxies_dir = out / f"search-seed{seed}", out / f"proxies-seed{seed}"
    if not (search_dir / "proxy.json").exists():
        resume = ["--resume"] if (search_dir / "checkpoint.pt").exists() else []
        fastnas(["autodas", "search-proxy", "--gt", str(gt), "--out", str(search_dir), "--seed", str(seed),
                 "--iterations", str(iterations), "--device", "cpu", "--quiet", *resume])
    result = json.loads((search_dir / "proxy.json").read_text())
    fastnas(["proxies", "--gt", str(gt), "--proxies", ",".join(BASELINES), "--out", str(proxies_dir),
             "--seed", str(seed), "--batch-size", str(result["batch_size"]), "--device", "cpu", "--quiet"])
    cached = {}
    for line in (proxies_dir / "scores.jsonl").read_text().splitlines():
        record = json.loads(line)
        cached.setdefault(record["arch"], {}).update(record["scores"])
    truth = load_ground_truth(gt)
    accuracy = dict(zip(truth.archs, truth.accuracy.tolist()))
    held = result["held_out_archs"]
    baselines = held_out_correlations({name: [cached[a][name] for a in held] for name in BASELINES},
                                      [accuracy[a] for a in held])
    return {"seed": seed, "formula": result["formula"], "fit_kendall": result["fit_kendall"],
            "held_out": {"autodas_searched": result["held_out"], **baselines},
            "fit_architectures": result["fit_architectures"], "held_out_architectures": len(held),
            "search_seconds": result["search_seconds"], "collect_seconds": result["collect_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gt", type=Path, default=Path("runs/gt-nb201/gt.jsonl"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/autodas-nb201"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [run_seed(args.gt, seed, args.out, args.iterations) for seed in args.seeds]
    names = list(runs[0]["held_out"])
    summary = {name: {method: [r["held_out"][name][method] for r in runs] for method in ("kendall", "spearman")}
               for name in names}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"gt": str(args.gt), "architectures": len(load_ground_truth(args.gt).archs),
                                   "iterations": args.iterations, "runs": runs, "held_out": summary}, indent=1))
    print("| proxy | held-out Kendall tau | held-out Spearman rho |")
    print("|---|---|---|")
    for name in names:
        cells = []
        for method in ("kendall", "spearman"):
            values = summary[name][method]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
