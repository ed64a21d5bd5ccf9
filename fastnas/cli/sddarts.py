"""`fastnas sddarts` and `fastnas darts`."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from .common import add_common, add_preset_options, add_step_options, apply_preset, format_config


def _sddarts(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..distributed import Distributed
    from ..plots import plot_alpha_evolution, plot_cells, plot_sharpness
    from ..runs import RunFolder
    from ..search_spaces import Genotype
    from ..strategies import SDDARTSConfig, SDDARTSSearch

    extras = apply_preset(args)  # the preset's settings that have no flag (momentum, ...)
    darts = args.command == "darts"  # the same search without the KL term, so without teachers
    distillation = dict(sd_lambda=0.0, teachers=1, warm_up=0) if darts else dict(
        sd_lambda=args.sd_lambda, teachers=args.teachers, teacher_source=args.teacher_source,
        teacher_refresh=args.teacher_refresh, temperature=args.temperature, warm_up=args.warm_up)
    config = SDDARTSConfig(
        data=args.data, ops=tuple(args.ops.split(",")), C=args.C, layers=args.layers, nodes=args.nodes,
        batch_size=args.batch_size, epochs=args.epochs, order=args.order, lr=args.lr, arch_lr=args.arch_lr,
        **distillation,
        sharpness_every=args.sharpness_every, seed=args.seed, device=args.device, amp=args.amp,
        recompute=args.recompute, **extras)
    if darts:
        args.sources.update(dict.fromkeys(distillation, "darts: no self-distillation"))
    if args.show_config:
        print(format_config(asdict(config), args.sources, args.command, args.preset))
        return 0
    dist = Distributed.from_env(config.device)
    run = RunFolder(args.out, resume=args.resume, writer=dist.is_main)
    run.config_notes = {"preset": args.preset, "sources": args.sources}
    log = (lambda _: None) if args.quiet else tqdm.write
    result = SDDARTSSearch(config, run, progress=not args.quiet, log=log, dist=dist).run()
    if not dist.is_main:
        return 0
    metrics = run.metrics()
    plot_alpha_evolution(metrics, list(config.ops), run.path / "alphas.png")
    plot_sharpness(metrics, run.path / "sharpness.png")
    plot_cells(Genotype.load(run.path / "genotype.json"), run.path / "cells.png")
    print(f"{config.method.upper()} search done: {run.path} (genotype.json, result.json, genotypes/, metrics.jsonl, "
          "alphas.png, sharpness.png, cells.png)")
    print(f"supernet val accuracy {100 * result['val_accuracy']:.2f}% | sharpness {result['sharpness']:.4f} | "
          f"{result['search_seconds']:.0f}s search")
    return 0


def add_parsers(sub) -> None:
    """`fastnas sddarts` and `fastnas darts` (the same search without self-distillation)."""
    from ..search_spaces import DARTS_PRIMITIVES

    for name, help_text in (("sddarts", "SD-DARTS: bi-level DARTS distilled from its own previous steps"),
                            ("darts", "DARTS: bi-level search of the DARTS cell space (first or second order)")):
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_common(p)
        add_step_options(p)
        p.add_argument("--ops", default=",".join(DARTS_PRIMITIVES), help="candidate operations")
        p.add_argument("--C", type=int, default=None, help="initial channels; default 16, 8 on digits/synthetic")
        p.add_argument("--layers", type=int, default=None, help="cells; default 8, 5 on digits/synthetic")
        p.add_argument("--nodes", type=int, default=4)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--epochs", type=int, default=None, help="default 50, 10 on digits/synthetic")
        p.add_argument("--order", type=int, default=1, help="1: first-order, 2: unrolled second-order gradient")
        p.add_argument("--lr", type=float, default=0.025, help="weight SGD lr (cosine to 0.001)")
        p.add_argument("--arch-lr", type=float, default=None,
                       help="alpha Adam lr; default 3e-4, 3e-2 on digits/synthetic")
        p.add_argument("--sharpness-every", type=int, default=5,
                       help="epochs between sharpness measurements (and at the end): the largest eigenvalue of "
                       "the Hessian of the validation loss w.r.t. alpha, by Lanczos")
        if name == "sddarts":
            p.add_argument("--lambda", dest="sd_lambda", type=float, default=1.0,
                           help="weight of the KL term (the paper's 1.0)")
            p.add_argument("--teachers", "-K", type=int, default=2,
                           help="voting window K: the super-networks of the K previous snapshots vote "
                           "(1 = plain SD); 2 is fastnas's choice, the paper compares K = 1 and K = 2")
            p.add_argument("--teacher-source", choices=["snapshot", "cache"], default="snapshot",
                           help="snapshot: the paper's teachers, frozen copies of the super-network from the "
                           "previous steps run on the current batch (K extra forwards per batch); cache: "
                           "fastnas's earlier per-sample predictions of the K previous epochs, NOT the paper's "
                           "method (no extra forward)")
            p.add_argument("--teacher-refresh", type=int, default=1,
                           help="steps between snapshots (fastnas's choice: every step, the paper's 'previous "
                           "time step'); snapshot teachers only")
            p.add_argument("--temperature", type=float, default=1.0,
                           help="softens teacher and student predictions, no T^2 factor; 1 is fastnas's reading "
                           "of the paper's 'output probabilities' (the paper gives no T)")
            p.add_argument("--warm-up", type=int, default=None,
                           help="epochs before distillation starts; default 20%% of --epochs (fastnas's choice; "
                           "the paper asks for a sufficient warm-up, no number)")
        add_preset_options(p, name)
        p.set_defaults(run=_sddarts)
