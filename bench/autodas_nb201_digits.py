"""Auto-DAS and the zero-cost proxies on the NB201 / digits ground truth, with intervals, over seeds and teachers.

Three tables, every correlation with its 95% bootstrap interval (fastnas.evaluators.statistics,
resampling architectures) and every comparison a paired difference on the same resamples:

1. `fastnas proxies` with every registered proxy on the whole ground truth, one run per seed (the
   seed draws the proxy batch and every student's initialization), with the trained built-in teacher;
2. the teacher ablation: the proxies that read a teacher, scored again with a randomly initialized
   teacher of the built-in architecture (`checkpoint:` of an untrained TeacherResNet), paired with (1);
3. `fastnas autodas search-proxy` per seed (the paper's EA settings; the seed draws the 4:3 split, the
   batch, the initializations and the EA), the searched program against every proxy on the held-out
   architectures of its split (the scores of (1) for the same seed: the same batch and weights).

Writes bench/results/autodas-nb201-digits.json and prints the markdown tables. Resumable: finished
searches and cached proxy scores are reused. On one CPU thread the full run takes about an hour.

    OMP_NUM_THREADS=1 python bench/autodas_nb201_digits.py [--gt bench/results/gt-nb201-digits-150.jsonl]
        [--seeds 0 1 2] [--out runs/autodas-nb201-150]
    python bench/autodas_nb201_digits.py --smoke --out /tmp/smoke   # the plumbing on 8 tiny students
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from fastnas.cli import main as fastnas
from fastnas.data import load_data
from fastnas.distill.teachers import BUILTIN_RECIPE, TeacherResNet, save_teacher_checkpoint
from fastnas.evaluators.proxy_table import load_ground_truth, nan_as_lowest, read_scores
from fastnas.evaluators.statistics import CORRELATIONS, correlation_summaries, excludes_zero, paired_difference
from fastnas.proxies import available_proxies, get_proxy
from fastnas.search_spaces import get_space

RESULTS = Path(__file__).parent / "results" / "autodas-nb201-digits.json"
GT = Path(__file__).parent / "results" / "gt-nb201-digits-150.jsonl"


def random_teacher(out: Path, data: str) -> str:
    """checkpoint:PATH of the built-in teacher's architecture with random weights (torch seed 0), made once."""
    path = out / "random-teacher.pt"
    if not path.exists():
        dataset = load_data(data)
        torch.manual_seed(0)
        model = TeacherResNet(dataset.in_channels, dataset.num_classes, widths=BUILTIN_RECIPE["widths"],
                              blocks=BUILTIN_RECIPE["blocks"]).eval()
        with torch.no_grad():
            accuracy = (model(dataset.test.images)[0].argmax(1) == dataset.test.labels).double().mean().item()
        out.mkdir(parents=True, exist_ok=True)
        save_teacher_checkpoint(model, path, test_accuracy=accuracy)
    return f"checkpoint:{path}"


def proxy_scores(gt: Path, names: list[str], teacher: str, seed: int, out: Path, batch_size: int) -> dict:
    """`fastnas proxies` (resumable through its score cache); {(arch, proxy): score}."""
    fastnas(["proxies", "--gt", str(gt), "--proxies", ",".join(names), "--teacher", teacher, "--out", str(out),
             "--seed", str(seed), "--batch-size", str(batch_size), "--device", "cpu", "--quiet"])
    return read_scores([out / "scores.jsonl"])


def rows_of(scores: dict, names: list[str], archs: list[str]) -> torch.Tensor:
    return torch.tensor([[scores[(arch, name)] for arch in archs] for name in names], dtype=torch.float64)


def summarize(names: list[str], scores: torch.Tensor, target: torch.Tensor, n_boot: int, seed: int) -> dict:
    """{name: {kendall: {value, low, high, p_value}, spearman: ..., vs_best: {proxy, kendall, spearman}}}."""
    summaries = correlation_summaries(nan_as_lowest(scores), target, n_boot=n_boot, n_perm=n_boot, seed=seed)
    out = {}
    for name, summary in zip(names, summaries):
        best = summary["vs_best"]
        out[name] = {m: summary[m] for m in CORRELATIONS}
        out[name]["vs_best"] = None if best is None else {"proxy": names[best["row"]],
                                                          **{m: best[m] for m in CORRELATIONS}}
    return out


def search(gt: Path, seed: int, out: Path, search_args: list[str]) -> dict:
    folder = out / f"search-seed{seed}"
    if not (folder / "proxy.json").exists():
        resume = ["--resume"] if (folder / "checkpoint.pt").exists() else []
        fastnas(["autodas", "search-proxy", "--gt", str(gt), "--out", str(folder), "--seed", str(seed),
                 "--device", "cpu", "--quiet", *search_args, *resume])
    return json.loads((folder / "proxy.json").read_text())


def interval(entry: dict) -> str:
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def verdict(entry: dict) -> str:
    return "resolved" if excludes_zero(entry) else "within noise"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", type=Path, default=GT)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teachers", nargs="+", default=["builtin", "random"], choices=["builtin", "random"])
    parser.add_argument("--out", type=Path, default=Path("runs/autodas-nb201-150"))
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples and permutations of every interval")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="8 tiny students, one seed, a 2-iteration search")
    args = parser.parse_args(argv)
    search_args, batch_size, data = [], 128, "digits"
    if args.smoke:
        args.gt = smoke_ground_truth(args.out)
        args.seeds, args.teachers, args.bootstrap, batch_size = args.seeds[:1], ["random"], 50, 16
        args.results = args.out / "autodas-nb201-digits.json"
        search_args = ["--population", "4", "--elite", "2", "--iterations", "2", "--batch-size", str(batch_size)]
    torch.set_num_threads(1)
    truth = load_ground_truth(args.gt)
    names = available_proxies()
    teacher_names = [n for n in names if get_proxy(n).needs_teacher]
    teacher_specs = {"builtin": "builtin", "random": random_teacher(args.out, data) if "random" in args.teachers
                     else None}
    report: dict = {"gt": str(args.gt), "architectures": len(truth.archs), "seeds": args.seeds,
                    "bootstrap": args.bootstrap, "whole": {}, "teacher_ablation": {}, "held_out": {}}
    for seed in args.seeds:
        scores = {}
        for teacher in args.teachers:
            wanted = names if teacher == args.teachers[0] else teacher_names
            scores[teacher] = proxy_scores(args.gt, wanted, teacher_specs[teacher], seed,
                                           args.out / f"proxies-{teacher}-seed{seed}", batch_size)
        main_teacher = args.teachers[0]
        rows = rows_of(scores[main_teacher], names, truth.archs)
        report["whole"][seed] = summarize(names, rows, truth.accuracy, args.bootstrap, seed)
        if len(args.teachers) > 1:
            trained, untrained = (rows_of(scores[t], teacher_names, truth.archs) for t in args.teachers)
            report["teacher_ablation"][seed] = {
                name: {"trained": summarize([name], trained[i:i + 1], truth.accuracy, args.bootstrap, seed)[name],
                       "random": summarize([name], untrained[i:i + 1], truth.accuracy, args.bootstrap, seed)[name],
                       "trained_minus_random": paired_difference(nan_as_lowest(trained[i]), nan_as_lowest(untrained[i]),
                                                                 truth.accuracy, "kendall", args.bootstrap, seed)}
                for i, name in enumerate(teacher_names)}
        result = search(args.gt, seed, args.out, search_args)
        held = result["held_out_archs"]
        index = {arch: i for i, arch in enumerate(truth.archs)}
        target = truth.accuracy[[index[a] for a in held]]
        held_rows = torch.cat([torch.tensor([result["held_out_scores"]], dtype=torch.float64),
                               rows_of(scores[main_teacher], names, held)])
        summary = summarize(["searched"] + names, held_rows, target, args.bootstrap, seed)
        report["held_out"][seed] = {"formula": result["formula"], "architectures": len(held),
                                    "fit": result[f"fit_{result['fitness']}"], "proxies": summary}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=1))
    print_tables(report, names, teacher_names)
    print(f"wrote {args.results}")
    return report


def print_tables(report: dict, names: list[str], teacher_names: list[str]) -> None:
    seeds = report["seeds"]
    first = seeds[0]
    whole = report["whole"]
    order = sorted(names, key=lambda n: -whole[first][n]["kendall"]["value"]
                   if whole[first][n]["kendall"]["value"] == whole[first][n]["kendall"]["value"] else 1e9)
    print(f"\n{report['architectures']} architectures, seed {first} (95% bootstrap intervals, permutation p):")
    print("| proxy | Kendall tau | p | Spearman rho | Kendall minus the best other | Kendall, seeds "
          + ", ".join(map(str, seeds)) + " |")
    print("|---|---|---:|---|---|---|")
    for name in order:
        entry = whole[first][name]
        best = entry["vs_best"]
        other = f"{interval(best['kendall'])} vs {best['proxy']} ({verdict(best['kendall'])})" if best else "-"
        per_seed = ", ".join(f"{whole[s][name]['kendall']['value']:.3f}" for s in seeds)
        print(f"| {name} | {interval(entry['kendall'])} | {entry['kendall']['p_value']:.3g} | "
              f"{interval(entry['spearman'])} | {other} | {per_seed} |")
    if report["teacher_ablation"]:
        print(f"\nTeacher ablation, seed {first}: trained built-in teacher vs the same architecture untrained")
        print("| proxy | Kendall, trained | Kendall, random | trained minus random |")
        print("|---|---|---|---|")
        for name in teacher_names:
            entry = report["teacher_ablation"][first][name]
            difference = entry["trained_minus_random"]
            print(f"| {name} | {interval(entry['trained']['kendall'])} | {interval(entry['random']['kendall'])} | "
                  f"{interval(difference)} ({verdict(difference)}) |")
    print("\nHeld out (the architectures each search did not fit), per seed:")
    print("| seed | searched program | its Kendall tau | best other proxy | its Kendall tau | searched minus it |")
    print("|---:|---|---|---|---|---|")
    for seed in seeds:
        held = report["held_out"][seed]
        searched = held["proxies"]["searched"]
        best = searched["vs_best"]
        print(f"| {seed} | `{held['formula']}` | {interval(searched['kendall'])} | {best['proxy']} | "
              f"{interval(held['proxies'][best['proxy']]['kendall'])} | {interval(best['kendall'])} "
              f"({verdict(best['kendall'])}) |")
    means = {n: statistics.mean(whole[s][n]["kendall"]["value"] for s in seeds) for n in names}
    print("\nMean Kendall tau over the seeds: " + ", ".join(f"{n} {means[n]:.3f}" for n in order))


def smoke_ground_truth(out: Path) -> Path:
    """8 NB201 students at C=4, N=1 with made-up accuracies, in the real gt.jsonl layout (plumbing only)."""
    space, rng = get_space("nb201"), random.Random(0)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(20)))[:8]
    folder = out / "gt"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gt-config.json").write_text(json.dumps({"space": "nb201", "data": "digits",
                                                       "options": {"C": 4, "N": 1}}))
    path = folder / "gt.jsonl"
    accuracies = [0.5 + a.count("conv") / 20 + i / 1000 for i, a in enumerate(archs)]
    path.write_text("".join(json.dumps({"arch": a, "space": "nb201", "accuracy_kd": accuracy, "seed": 0, "epochs": 1})
                            + "\n" for a, accuracy in zip(archs, accuracies)))
    return path


if __name__ == "__main__":
    main()
