"""`fastnas autodas search-proxy` and `fastnas autodas search-student`."""

from __future__ import annotations

import argparse

from .common import add_common


def _autodas_search_proxy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..strategies.autodas import ProxySearchConfig, search_proxy

    config = ProxySearchConfig(population=args.population, iterations=args.iterations, ratio=args.ratio,
                               elite=args.elite, seed=args.seed)
    result = search_proxy(args.gt, args.out, config, data=args.data, teacher=args.teacher,
                          train_fraction=args.train_fraction, batch_size=args.batch_size, device=args.device,
                          resume=args.resume, progress=not args.quiet,
                          log=(lambda _: None) if args.quiet else tqdm.write)
    held = result["held_out"]
    print(f"Auto-DAS proxy: {result['formula']}")
    print(f"Kendall tau: {result['fit_kendall']:.3f} on {result['fit_architectures']} fitting architectures, "
          f"{held['kendall']:.3f} held out ({result['held_out_architectures']}); held-out Spearman "
          f"{held['spearman']:.3f}. Wrote {args.out}/proxy.json, proxy.txt, fitness.png, metrics.jsonl")
    return 0


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
