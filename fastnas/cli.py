"""The `fastnas` command line: `fastnas demo`, `fastnas bench`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch


def _bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import benchmarks

    if args.device == "cuda" and not (torch.cuda.is_available() and benchmarks.ops.build_info()["with_cuda"]):
        print("fastnas bench: --device cuda needs a visible GPU and a CUDA build of fastnas "
              f"(build: {benchmarks.ops.build_info()})", file=sys.stderr)
        return 2
    cases = benchmarks.grid([args.device], args.quick)
    bar = tqdm(total=len(cases), disable=args.quiet, desc="benchmarks", unit="case")

    def progress(name: str) -> None:
        bar.set_postfix_str(name)
        bar.update(1)

    rows = benchmarks.run([args.device], args.quick, with_compiled=args.compile,
                          min_time=0.1 if args.quick else 0.5, progress=progress)
    bar.close()
    print(benchmarks.format_table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"build": benchmarks.ops.build_info(), "rows": rows}, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _dnad_config(args: argparse.Namespace):
    from .strategies import DNADConfig

    snps = {name: getattr(args, name) for name in SNPS_FLAGS if getattr(args, name) is not None}
    return DNADConfig(data=args.data, teacher=args.teacher, kd=args.kd, kd_rate=args.kd_rate, at_beta=args.at_beta,
                      ops=tuple(args.ops.split(",")), C=args.C, layers=args.layers, nodes=args.nodes,
                      batch_size=args.batch_size, epochs=args.epochs, warm_up=args.warm_up, lr=args.lr,
                      arch_lr=args.arch_lr, stop_sparsity=args.stop_sparsity, target_ops=args.target_ops,
                      seed=args.seed, device=args.device, snps=snps)


def _write_dnad_results(run, search) -> None:
    from .plots import plot_cells, plot_pareto_front, plot_search_curves
    from .search_spaces import Genotype

    plot_search_curves(run.metrics(), run.path / "search.png")
    plot_pareto_front(search.pareto, run.path / "pareto.png")
    plot_cells(Genotype.load(run.path / "genotype.json"), run.path / "cells.png")


def _print_pareto(points: list[dict]) -> None:
    print(f"{'kind':<7} {'step':>6} {'live ops':>8} {'params':>10} {'FLOPs':>12} {'val acc':>8}  genotype")
    for p in points:
        print(f"{p['kind']:<7} {p['step']:>6} {p['live_ops']:>8} {p['params']:>10,} {p['flops']:>12,} "
              f"{p['val_accuracy']:>8.3f}  {p['genotype']}")


def _dnad(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runs import RunFolder
    from .strategies import DNADSearch

    config = _dnad_config(args)
    run = RunFolder(args.out, resume=args.resume)
    log = (lambda _: None) if args.quiet else tqdm.write
    search = DNADSearch(config, run, progress=not args.quiet, log=log)
    search.run()
    _write_dnad_results(run, search)
    print(f"DNAD search done: {run.path} (pareto.json, genotypes/, metrics.jsonl, search.png, pareto.png, "
          "cells.png)")
    _print_pareto(search.pareto)
    return 0


def _sddarts(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .plots import plot_alpha_evolution, plot_cells, plot_sharpness
    from .runs import RunFolder
    from .search_spaces import Genotype
    from .strategies import SDDARTSConfig, SDDARTSSearch

    darts = args.command == "darts"
    config = SDDARTSConfig(
        data=args.data, ops=tuple(args.ops.split(",")), C=args.C, layers=args.layers, nodes=args.nodes,
        batch_size=args.batch_size, epochs=args.epochs, order=args.order, lr=args.lr, arch_lr=args.arch_lr,
        sd_lambda=0.0 if darts else args.sd_lambda, teachers=1 if darts else args.teachers,
        temperature=2.0 if darts else args.temperature, warm_up=0 if darts else args.warm_up,
        sharpness_every=args.sharpness_every, seed=args.seed, device=args.device)
    run = RunFolder(args.out, resume=args.resume)
    log = (lambda _: None) if args.quiet else tqdm.write
    result = SDDARTSSearch(config, run, progress=not args.quiet, log=log).run()
    metrics = run.metrics()
    plot_alpha_evolution(metrics, list(config.ops), run.path / "alphas.png")
    plot_sharpness(metrics, run.path / "sharpness.png")
    plot_cells(Genotype.load(run.path / "genotype.json"), run.path / "cells.png")
    print(f"{config.method.upper()} search done: {run.path} (genotype.json, result.json, genotypes/, metrics.jsonl, "
          "alphas.png, sharpness.png, cells.png)")
    print(f"supernet val accuracy {100 * result['val_accuracy']:.2f}% | sharpness {result['sharpness']:.4f} | "
          f"{result['search_seconds']:.0f}s search")
    return 0


def _add_sddarts_parsers(sub) -> None:
    """`fastnas sddarts` and `fastnas darts` (the same search without self-distillation)."""
    from .search_spaces import DARTS_PRIMITIVES

    for name, help_text in (("sddarts", "SD-DARTS: bi-level DARTS distilled from its own previous epochs"),
                            ("darts", "DARTS: bi-level search of the DARTS cell space (first or second order)")):
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_common(p)
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
                       help="epochs between Hessian eigenvalue measurements (and at the end)")
        if name == "sddarts":
            p.add_argument("--lambda", dest="sd_lambda", type=float, default=1.0, help="weight of the KL term")
            p.add_argument("--teachers", "-K", type=int, default=2,
                           help="voting window K: previous epochs whose predictions vote (1 = plain SD)")
            p.add_argument("--temperature", type=float, default=2.0, help="softens teacher and student predictions")
            p.add_argument("--warm-up", type=int, default=None,
                           help="epochs before distillation starts; default 20%% of --epochs")
        p.set_defaults(run=_sddarts)


def _train(args: argparse.Namespace) -> int:
    from .data import load_data
    from .distill import load_teacher
    from .evaluators import TrainConfig, train_network
    from .nn.cost import count_flops, count_params
    from .runs import RunFolder
    from .search_spaces import DiscreteNetwork, Genotype

    genotype = Genotype.load(args.genotype)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, kd=args.kd,
                         kd_rate=args.kd_rate, seed=args.seed)
    dataset = load_data(args.data)
    torch.manual_seed(args.seed)
    C = args.C or genotype.meta.get("C", 16)
    model = DiscreteNetwork(genotype, C, dataset.num_classes, layers=args.layers, in_channels=dataset.in_channels)
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    params, flops = count_params(model), count_flops(model, input_shape)
    teacher = None if args.kd == "none" else load_teacher(args.teacher, dataset, args.device, progress=not args.quiet)
    run = RunFolder(args.out, resume=args.resume) if args.out else None
    if run is not None and not args.resume:
        settings = {key: value for key, value in vars(args).items() if key != "run"}
        run.write_config({**settings, "params": params, "flops": flops})
    result = train_network(model, dataset, config, teacher, args.device, run, progress=not args.quiet)
    result.update(params=params, flops=flops, genotype=str(args.genotype), data=args.data, kd=args.kd)
    if run is not None:
        run.write_json("result.json", result)
    print(f"test accuracy {100 * result['test_accuracy']:.2f}% | {params:,} params | {flops:,} FLOPs | "
          f"{result['seconds']:.0f}s training")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """DNAD on the embedded digits data with the defaults; prints the Pareto set."""
    parser = build_parser()
    argv = ["dnad", "--data", "digits", "--out", args.out] + (["--quiet"] if args.quiet else [])
    if (Path(args.out) / "checkpoint.pt").exists():
        argv.append("--resume")
    return _dnad(parser.parse_args(argv))


SNPS_FLAGS = ("gamma", "gamma_max", "mu", "n_max", "tau", "phi", "k", "rho", "xi", "tqu_max", "eps")
SNPS_DEFAULT_HELP = {"gamma": "1e-2 on digits/synthetic, else 1e-4", "gamma_max": 0.1, "mu": 0.1,
                     "n_max": "0.5 on digits/synthetic, else 0.005",
                     "tau": 0.9, "phi": 1.01, "k": 0.99, "rho": 1.5, "xi": 1.0,
                     "tqu_max": "20 on digits/synthetic, else 50", "eps": 0.01}


def _add_common(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    parser.add_argument("--data", default="digits",
                        help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH | synthetic[:N]")
    parser.add_argument("--out", required=out_required, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after an interruption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnas", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="DNAD search on the embedded digits data (the main job)")
    demo.add_argument("--out", default="runs/demo-dnad", help="run folder (resumed if it holds a checkpoint)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)

    dnad = sub.add_parser("dnad", help="DNAD: progressive shrinking with distillation from a teacher",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(dnad)
    dnad.add_argument("--teacher", default="builtin",
                      help="builtin | checkpoint:PATH | torchscript:PATH | torchvision:NAME:WEIGHTS.pt")
    dnad.add_argument("--kd", choices=["at", "feature", "soft", "none"], default="at")
    dnad.add_argument("--kd-rate", type=float, default=1.0)
    dnad.add_argument("--at-beta", type=float, default=1000.0, help="AT loss scale (beta/2 * sum of pair losses)")
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
                      help="stop when S falls below this (default 250 per 32 nodes, the authors' CIFAR floor)")
    dnad.add_argument("--target-ops", type=int, default=None, help="stop when at most this many operators live")
    for name in SNPS_FLAGS:
        dnad.add_argument(f"--{name.replace('_', '-')}", type=int if name == "tqu_max" else float, default=None,
                          help=f"SNPS {name} (default: {SNPS_DEFAULT_HELP[name]})")
    dnad.set_defaults(run=_dnad)

    train = sub.add_parser("train", help="retrain a genotype from scratch and report test accuracy",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(train, out_required=False)
    train.add_argument("--genotype", required=True, help="genotype JSON written by a search")
    train.add_argument("--teacher", default="builtin")
    train.add_argument("--kd", choices=["at", "feature", "soft", "none"], default="none")
    train.add_argument("--kd-rate", type=float, default=1.0)
    train.add_argument("--C", type=int, default=None, help="initial channels (default: the search's)")
    train.add_argument("--layers", type=int, default=None, help="cells (DARTS genotypes only)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--lr", type=float, default=0.05)
    train.set_defaults(run=_train)

    _add_sddarts_parsers(sub)

    bench = sub.add_parser("bench", help="time the fused ops against eager PyTorch and torch.compile")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--quick", action="store_true", help="one small case per op (under a minute on a CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="also time torch.compile of the reference (default: on, off with --quick)")
    bench.add_argument("--json", metavar="PATH", help="write the timings and build facts as JSON")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "compile", False) is None:
        args.compile = not args.quick
    return args.run(args)
