"""`fastnas dnad` and `fastnas demo` (DNAD on the embedded digits data)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from .common import add_common, add_preset_options, add_step_options, apply_preset, format_config

SNPS_FLAGS = ("gamma", "gamma_max", "mu", "n_max", "tau", "phi", "k", "rho", "xi", "tqu_max", "eps")
SNPS_DEFAULT_HELP = {"gamma": "1e-2 on digits/synthetic, else 1e-4", "gamma_max": 0.1, "mu": 0.1,
                     "n_max": "0.5 on digits/synthetic, else 0.005",
                     "tau": 0.9, "phi": 1.01, "k": 0.99, "rho": 1.5, "xi": 1.0,
                     "tqu_max": "20 on digits/synthetic, else 50", "eps": 0.01}


def _dnad_config(args: argparse.Namespace, extras: dict):
    from ..strategies import DNADConfig

    snps = {name: getattr(args, name) for name in SNPS_FLAGS if getattr(args, name) is not None}
    return DNADConfig(data=args.data, teacher=args.teacher, kd=args.kd, kd_rate=args.kd_rate, at_beta=args.at_beta,
                      at_scale=args.at_scale,
                      ops=tuple(args.ops.split(",")), C=args.C, layers=args.layers, nodes=args.nodes,
                      batch_size=args.batch_size, epochs=args.epochs, warm_up=args.warm_up, lr=args.lr,
                      arch_lr=args.arch_lr, stop_sparsity=args.stop_sparsity, target_ops=args.target_ops,
                      seed=args.seed, device=args.device, amp=args.amp, recompute=args.recompute, snps=snps,
                      **extras)


def _write_dnad_results(run, search) -> None:
    from ..plots import plot_cells, plot_pareto_front, plot_search_curves
    from ..search_spaces import Genotype

    plot_search_curves(run.metrics(), run.path / "search.png")
    plot_pareto_front(search.pareto, run.path / "pareto.png")
    plot_cells(Genotype.load(run.path / "genotype.json"), run.path / "cells.png")


def add_retrain_costs(points: list[dict], run, preset: str, num_classes: int) -> str | None:
    """Adds to each point ``retrain``: params (auxiliary head excluded, as the reference counts them) and FLOPs
    of the network `fastnas train --preset R` builds from its genotype, R the retraining preset of the search
    preset `preset` (dnad-cifar10: C = 36, 32 x 32; dnad-imagenet: C = 48, the ImageNet network at 224 x 224),
    the genotype keeping its cells. Returns R, or None for a preset without one (digits: the search's width)."""
    from ..nn.cost import count_flops, count_params
    from ..presets import RETRAIN_PRESET, preset_settings
    from ..search_spaces import Genotype
    from .train import NETWORK_IMAGE_SIZE, build_genotype_network

    retrain = RETRAIN_PRESET.get(("dnad", preset))
    if retrain is None:
        return None
    settings = preset_settings("train", retrain)
    C, network = settings["C"].value, settings["network"].value
    side = NETWORK_IMAGE_SIZE[network]
    for point in points:
        genotype = Genotype.load(run.path / point["genotype"])
        net = build_genotype_network(genotype, C, len(genotype.cells), num_classes, 3, network)
        point["retrain"] = {"preset": retrain, "C": C, "layers": len(genotype.cells), "image_size": side,
                            "params": count_params(net), "flops": count_flops(net, (3, side, side))}
    return retrain


def _print_pareto(points: list[dict]) -> None:
    retrain = "retrain" in points[0] if points else False
    header = f"{'kind':<7} {'step':>6} {'live ops':>8} {'params':>10} {'FLOPs':>12} {'val acc':>8}"
    if retrain:
        header += f" {'retrain params':>14} {'retrain FLOPs':>14}"
    print(header + "  genotype")
    for p in points:
        line = (f"{p['kind']:<7} {p['step']:>6} {p['live_ops']:>8} {p['params']:>10,} {p['flops']:>12,} "
                f"{p['val_accuracy']:>8.3f}")
        if retrain:
            line += f" {p['retrain']['params']:>14,} {p['retrain']['flops']:>14,}"
        print(f"{line}  {p['genotype']}")


def _dnad(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..distributed import Distributed
    from ..runs import RunFolder
    from ..strategies import DNADSearch

    config = _dnad_config(args, apply_preset(args))
    if args.show_config:
        print(format_config(asdict(config), args.sources, "dnad", args.preset))
        return 0
    dist = Distributed.from_env(config.device)
    run = RunFolder(args.out, resume=args.resume, writer=dist.is_main)
    run.config_notes = {"preset": args.preset, "sources": args.sources}
    log = (lambda _: None) if args.quiet else tqdm.write
    clock = time.perf_counter()
    search = DNADSearch(config, run, progress=not args.quiet, log=log, dist=dist)  # trains or loads the teacher
    phases = {"teacher and set-up": time.perf_counter() - clock}
    clock = time.perf_counter()
    search.run()
    phases["search"] = time.perf_counter() - clock
    if not dist.is_main:
        return 0
    clock = time.perf_counter()
    _write_dnad_results(run, search)
    retrain = add_retrain_costs(search.pareto, run, args.preset, search.dataset.num_classes)
    if retrain is not None:
        run.write_json("pareto.json", search.pareto)
    print(f"DNAD search done: {run.path} (pareto.json, genotypes/, metrics.jsonl, search.png, pareto.png, "
          "cells.png)")
    if retrain is not None:
        C = search.pareto[0]["retrain"]["C"] if search.pareto else "?"
        print(f"retrain params and FLOPs: the networks of `fastnas train --preset {retrain}` (C = {C}, auxiliary "
              "head excluded)")
    phases["plots and costs"] = time.perf_counter() - clock
    _print_pareto(search.pareto)
    print(f"wall time ({torch.get_num_threads()} CPU thread(s)): "
          + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in phases.items()))
    return 0


def _demo(args: argparse.Namespace) -> int:
    """DNAD on the embedded digits data with the defaults; prints the Pareto set."""
    from . import build_parser

    parser = build_parser()
    argv = ["dnad", "--data", "digits", "--out", args.out] + (["--quiet"] if args.quiet else [])
    if (Path(args.out) / "checkpoint.pt").exists():
        argv.append("--resume")
    return _dnad(parser.parse_args(argv))


def add_parsers(sub) -> None:
    demo = sub.add_parser("demo", help="DNAD search on the embedded digits data (the main job)")
    demo.add_argument("--out", default="runs/demo-dnad", help="run folder (resumed if it holds a checkpoint)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    dnad = sub.add_parser("dnad", help="DNAD: progressive shrinking with distillation from a teacher",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(dnad)
    add_step_options(dnad)
    dnad.add_argument("--teacher", default="builtin",
                      help="builtin | checkpoint:PATH | torchscript:PATH | torchvision:NAME:WEIGHTS.pt")
    dnad.add_argument("--kd", choices=["at", "feature", "soft", "none"], default="at")
    dnad.add_argument("--kd-rate", type=float, default=1.0)
    dnad.add_argument("--at-beta", type=float, default=1000.0, help="AT loss weight beta (the AT paper's 1e3)")
    dnad.add_argument("--at-scale", choices=["mean", "half-sum"], default="mean",
                      help="mean: beta * mean over the 3 stage pairs (the DNAD authors' code); half-sum: beta / 2 * "
                      "their sum (the AT paper's Eq. 2, 1.5x mean; fastnas's earlier default)")
    dnad.add_argument("--ops", default="sep_conv_3x3,skip_connect,dil_conv_5x5", help="candidate operations")
    dnad.add_argument("--C", type=int, default=16)
    dnad.add_argument("--layers", type=int, default=8)
    dnad.add_argument("--nodes", type=int, default=4)
    dnad.add_argument("--batch-size", type=int, default=None, help="default 64; 32 on digits/synthetic")
    dnad.add_argument("--epochs", type=int, default=40, help="upper bound; the search stops earlier on its floor")
    dnad.add_argument("--warm-up", type=int, default=0, help="epochs without shrinking (ImageNet: 5)")
    dnad.add_argument("--lr", type=float, default=5e-4)
    dnad.add_argument("--arch-lr", type=float, default=None, help="alpha SGD lr; default 0.2, 1.0 on digits/synthetic")
    dnad.add_argument("--stop-sparsity", type=float, default=None,
                      help="stop at the first epoch end where S after pruning is below this, as the authors' code "
                      "(default 250 per 32 nodes, their CIFAR floor)")
    dnad.add_argument("--target-ops", type=int, default=None,
                      help="stop at the first epoch end where at most this many operators live (fastnas's)")
    for name in SNPS_FLAGS:
        dnad.add_argument(f"--{name.replace('_', '-')}", type=int if name == "tqu_max" else float, default=None,
                          help=f"SNPS {name} (default: {SNPS_DEFAULT_HELP[name]})")
    add_preset_options(dnad, "dnad")
    dnad.set_defaults(run=_dnad)
