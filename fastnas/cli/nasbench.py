"""`fastnas nasbench export`: the compact NAS-Bench-201 CSV from the official NATS-Bench topology files, once."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> int:
    from ..nasbench import read_nats, write_table

    seed = None if args.seed == "mean" else _seed(args.seed)
    table = read_nats(args.nats, hp=args.hp, metric=args.metric, seed=seed, cifar10=args.cifar10)
    write_table(args.out, table)
    print(f"wrote {len(table)} cells to {args.out}: {table.comment[0]}")
    return 0


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"seed: expected 'mean' or a trial's integer seed, got {text!r}") from None


def add_parsers(sub) -> None:
    nasbench = sub.add_parser("nasbench", help="NAS-Bench-201 as ground truth")
    commands = nasbench.add_subparsers(dest="nasbench_command", required=True)
    export = commands.add_parser("export", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                 help="write the compact CSV (arch, cifar10, cifar100, ImageNet16-120 accuracies "
                                 "in %%) from the NATS-Bench topology files, through the optional nats_bench package")
    export.add_argument("--nats", required=True, help="the NATS-tss-v1_0-3ffb9-simple folder (read in fast mode, a "
                        "file per cell) or a NATS-tss .pickle.pbz2 file")
    export.add_argument("--out", required=True, help="the CSV to write")
    export.add_argument("--hp", choices=["200", "12"], default="200",
                        help="training schedule in epochs (200: the benchmark's accuracies)")
    export.add_argument("--metric", choices=["test", "valid"], default="test", help="which accuracy")
    export.add_argument("--seed", default="mean", help="'mean' over a cell's trials, or one trial's seed")
    export.add_argument("--cifar10", choices=["cifar10-valid", "cifar10"], default="cifar10-valid",
                        help="the NATS-Bench dataset of the cifar10 column: cifar10-valid (trained on 25,000 "
                        "images; the published zero-cost correlations use its test accuracy) or cifar10 (trained "
                        "on 50,000, test accuracy only)")
    export.set_defaults(run=_export)
