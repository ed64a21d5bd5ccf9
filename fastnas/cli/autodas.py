"""`fastnas autodas search-proxy` and `fastnas autodas search-student`."""

from __future__ import annotations

import argparse
from dataclasses import replace

from .common import add_common


def _autodas_search_proxy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..proxies.program import TREE_SPACE, ProgramSpace
    from ..strategies.autodas import (AUTHORS_CROSSOVER_PROB, AUTHORS_MUTATION_PROB, ProxySearchConfig,
                                      search_proxy)

    base = ProgramSpace() if args.instinct == "linear" else TREE_SPACE
    space = replace(base, layers=args.layers or base.layers, signs=_signs(args.signs) if args.signs else base.signs,
                    scale=(False, True) if args.scale_parts else base.scale)
    probabilities = {"crossover_prob": AUTHORS_CROSSOVER_PROB, "mutation_prob": AUTHORS_MUTATION_PROB} \
        if args.crossover else {}
    config = ProxySearchConfig(population=args.population, iterations=args.iterations, ratio=args.ratio,
                               elite=args.elite, seed=args.seed, space=space, fitness=args.fitness, **probabilities)
    result = search_proxy(args.gt, args.out, config, data=args.data, teacher=args.teacher,
                          train_fraction=args.train_fraction, batch_size=args.batch_size, device=args.device,
                          resume=args.resume, progress=not args.quiet,
                          log=(lambda _: None) if args.quiet else tqdm.write)
    print(f"Auto-DAS proxy: {result['formula']}")
    print(f"fitness ({args.fitness}) {result['fit_' + args.fitness]:.3f} on {result['fit_architectures']} "
          f"fitting architectures; held out ({result['held_out_architectures']}), 95% bootstrap intervals:")
    print(format_held_out(result["held_out_statistics"]))
    print(f"wrote {args.out}/proxy.json, proxy.txt, fitness.png, metrics.jsonl, result.json")
    return 0


def _signs(text: str) -> tuple[int, ...]:
    signs = {"+": 1, "-": -1}
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(part not in signs for part in parts):
        raise ValueError(f"signs: expected '+', '-' or '+,-', got {text!r}")
    return tuple(dict.fromkeys(signs[part] for part in parts))


def format_held_out(statistics: dict) -> str:
    """The held-out lines of search-proxy: the program, the best baseline, their paired difference."""
    def interval(entry: dict) -> str:
        return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"

    def line(name: str, summary: dict) -> str:
        return (f"  {name:<24} Kendall {interval(summary['kendall'])} (p {summary['kendall']['p_value']:.3g}), "
                f"Spearman {interval(summary['spearman'])}")

    lines = [line("searched program", statistics["program"])]
    best = statistics["best_baseline"]
    if best is not None:
        lines.append(line(best + " (best baseline)", statistics["baselines"][best]))
        difference = statistics["vs_best_baseline"]["kendall"]
        verdict = "resolved" if difference["low"] > 0 or difference["high"] < 0 else "within noise"
        lines.append(f"  program - {best}: Kendall {interval(difference)}, {verdict}")
    return "\n".join(lines)


def _autodas_search_student(args: argparse.Namespace) -> int:
    from ..strategies.autodas import parse_count, search_student

    top = search_student(args.proxy, args.space, args.out, n=args.n,
                         max_params=None if args.max_params is None else parse_count(args.max_params),
                         top_k=args.top_k, data=args.data, teacher=args.teacher, batch_size=args.batch_size,
                         seed=args.seed, device=args.device, resume=args.resume, progress=not args.quiet)
    print(f"{'rank':>4} {'score':>12} {'params':>9}  arch")
    for row in top:
        print(f"{row['rank']:>4} {row['score']:>12.5g} {row['params']:>9,}  {row['arch']}")
    print(f"wrote {args.out}/ranking.csv and top_k.json; train the best with "
          f"`fastnas train --space {args.space} --arch '{top[0]['arch']}' --kd soft`")
    return 0


def add_parsers(sub) -> None:
    autodas = sub.add_parser("autodas", help="Auto-DAS: evolve a training-free distillation proxy, rank students")
    commands = autodas.add_subparsers(dest="autodas_command", required=True)
    proxy = commands.add_parser("search-proxy", help="Algorithm 1: evolve a proxy against a ground truth",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(proxy)
    proxy.add_argument("--gt", required=True, help="gt.jsonl of `fastnas bench-gt` (arch, accuracy_kd per line)")
    proxy.add_argument("--teacher", default="builtin", help="teacher spec (as for dnad), or none")
    proxy.add_argument("--population", type=int, default=20, help="P (paper)")
    proxy.add_argument("--iterations", type=int, default=100, help="T (paper)")
    proxy.add_argument("--ratio", type=float, default=0.9, help="r: fraction of the population drawn (paper)")
    proxy.add_argument("--elite", type=int, default=5, help="k: elite size (paper)")
    proxy.add_argument("--train-fraction", type=float, default=4 / 7,
                       help="fraction of the ground truth fitted, the rest held out (paper's 4:3)")
    proxy.add_argument("--batch-size", type=int, default=128, help="images of the one proxy batch")
    proxy.add_argument("--fitness", choices=("kendall", "spearman"), default="kendall",
                       help="rank correlation fitted (paper's Eq. 3: Kendall; the authors' code: Spearman)")
    proxy.add_argument("--crossover", action="store_true",
                       help="the authors' code's offspring: crossover of two elite programs at p=0.5, then mutation "
                       "at p=0.1 (default: the paper's Algorithm 1, mutation always)")
    proxy.add_argument("--instinct", choices=("linear", "tree"), default="linear",
                       help="instinct structure: linear (the authors': one input, 4 unary ops, mean per layer, sum "
                       "over layers) or tree (fastnas's: two branches of 2 ops and a binary op)")
    proxy.add_argument("--layers", choices=("conv", "all"), default=None,
                       help="layers the instinct reads: conv (the authors', default for linear) or all (Conv2d and "
                       "Linear, default for tree)")
    proxy.add_argument("--signs", default=None,
                       help="interaction signs the search may choose: '+' (the authors' code adds the distance), "
                       "'-' or '+,-' (fastnas's default for linear; tree: '-')")
    proxy.add_argument("--scale-parts", action="store_true",
                       help="let programs min-max scale their parts over the architectures (the authors' --scale)")
    proxy.set_defaults(run=_autodas_search_proxy)

    student = commands.add_parser("search-student", help="rank sampled students training-free with a proxy",
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(student)
    student.add_argument("--proxy", required=True, help="proxy.json of search-proxy, or name:NAME (registry)")
    student.add_argument("--space", default="nb201", help="student space: nb201 | resnet | pit")
    student.add_argument("--teacher", default="builtin", help="teacher spec (as for dnad), or none")
    student.add_argument("--n", "--num-archs", dest="n", type=int, default=1000,
                         help="candidates sampled (--num-archs under torchrun, which takes --n for its own)")
    student.add_argument("--max-params", default=None, help="parameter budget, e.g. 0.5M (default: none)")
    student.add_argument("--top-k", type=int, default=10)
    student.add_argument("--batch-size", type=int, default=128, help="images of the one proxy batch")
    student.set_defaults(run=_autodas_search_student)
