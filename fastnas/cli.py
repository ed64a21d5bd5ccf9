"""The `fastnas` command line: `fastnas demo`, `fastnas bench`, `fastnas bench-gt`."""

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
                      seed=args.seed, device=args.device, amp=args.amp, recompute=args.recompute, snps=snps)


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

    from .distributed import Distributed
    from .runs import RunFolder
    from .strategies import DNADSearch

    config = _dnad_config(args)
    dist = Distributed.from_env(config.device)
    run = RunFolder(args.out, resume=args.resume, writer=dist.is_main)
    log = (lambda _: None) if args.quiet else tqdm.write
    search = DNADSearch(config, run, progress=not args.quiet, log=log, dist=dist)
    search.run()
    if not dist.is_main:
        return 0
    _write_dnad_results(run, search)
    print(f"DNAD search done: {run.path} (pareto.json, genotypes/, metrics.jsonl, search.png, pareto.png, "
          "cells.png)")
    _print_pareto(search.pareto)
    return 0


def _space_options(args: argparse.Namespace) -> dict:
    """The student-space options given on the command line (--C, --N, --patch-size)."""
    given = {"C": args.C, "N": args.N, "patch_size": args.patch_size}
    return {name: value for name, value in given.items() if value is not None}


def _sddarts(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .distributed import Distributed
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
        sharpness_every=args.sharpness_every, seed=args.seed, device=args.device, amp=args.amp,
        recompute=args.recompute)
    dist = Distributed.from_env(config.device)
    run = RunFolder(args.out, resume=args.resume, writer=dist.is_main)
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


def _add_sddarts_parsers(sub) -> None:
    """`fastnas sddarts` and `fastnas darts` (the same search without self-distillation)."""
    from .search_spaces import DARTS_PRIMITIVES

    for name, help_text in (("sddarts", "SD-DARTS: bi-level DARTS distilled from its own previous epochs"),
                            ("darts", "DARTS: bi-level search of the DARTS cell space (first or second order)")):
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_common(p)
        _add_step_options(p)
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
    from .search_spaces import DiscreteNetwork, Genotype, get_space

    if (args.genotype is None) == (args.space is None) or (args.space is None) != (args.arch is None):
        raise ValueError("train: give either --genotype JSON or --space NAME with --arch STRING")
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, kd=args.kd,
                         kd_rate=args.kd_rate, ce_rate=args.ce_rate, seed=args.seed)
    dataset = load_data(args.data)
    torch.manual_seed(args.seed)
    if args.genotype is not None:
        if args.N is not None or args.patch_size is not None:
            raise ValueError("train: --N and --patch-size are student-space options; use them with --space")
        genotype = Genotype.load(args.genotype)
        C = args.C or genotype.meta.get("C", 16)
        model = DiscreteNetwork(genotype, C, dataset.num_classes, layers=args.layers, in_channels=dataset.in_channels)
        described = {"genotype": str(args.genotype)}
    else:
        space = get_space(args.space)
        arch = space.validate(args.arch)
        model = space.build(arch, dataset.num_classes, dataset.in_channels, image_size=dataset.image_size,
                            **space.check_options(_space_options(args)))
        described = {"space": space.name, "arch": arch}
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    params, flops = count_params(model), count_flops(model, input_shape)
    teacher = None if args.kd == "none" else load_teacher(args.teacher, dataset, args.device, progress=not args.quiet)
    run = RunFolder(args.out, resume=args.resume) if args.out else None
    if run is not None and not args.resume:
        settings = {key: value for key, value in vars(args).items() if key != "run"}
        run.write_config({**settings, "params": params, "flops": flops})
    result = train_network(model, dataset, config, teacher, args.device, run, progress=not args.quiet)
    result.update(params=params, flops=flops, **described, data=args.data, kd=args.kd)
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


def _autodas_search_proxy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .strategies.autodas import ProxySearchConfig, search_proxy

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
    from .strategies.autodas import parse_count, search_student

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


def _add_autodas_parsers(sub) -> None:
    autodas = sub.add_parser("autodas", help="Auto-DAS: evolve a training-free distillation proxy, rank students")
    commands = autodas.add_subparsers(dest="autodas_command", required=True)
    proxy = commands.add_parser("search-proxy", help="Algorithm 1: evolve a proxy against a ground truth",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(proxy)
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
    _add_common(student)
    student.add_argument("--proxy", required=True, help="proxy.json of search-proxy, or name:NAME (registry)")
    student.add_argument("--space", default="nb201", help="student space: nb201 | resnet | pit")
    student.add_argument("--teacher", default="builtin", help="teacher spec (as for dnad), or none")
    student.add_argument("--n", "--num-archs", dest="n", type=int, default=1000,
                         help="candidates sampled (--num-archs under torchrun, which takes --n for its own)")
    student.add_argument("--max-params", default=None, help="parameter budget, e.g. 0.5M (default: none)")
    student.add_argument("--top-k", type=int, default=10)
    student.add_argument("--batch-size", type=int, default=128, help="images of the one proxy batch")
    student.set_defaults(run=_autodas_search_student)


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


def _add_step_options(parser: argparse.ArgumentParser) -> None:
    """How a super-network search computes its steps (not what it computes)."""
    parser.add_argument("--amp", choices=["off", "bf16"], default="off",
                        help="bf16: bfloat16 autocast of the training steps (fused ops accumulate in float32); "
                        "meant for CUDA GPUs, also runs on CPUs (slowly without native bfloat16)")
    parser.add_argument("--no-recompute", dest="recompute", action="store_false",
                        help="keep operator and depthwise outputs for backward instead of rebuilding them: "
                        "about 1.4x the activation memory, a few percent faster")


def _proxies(args: argparse.Namespace) -> int:
    from .data import batches, load_data
    from .distill import load_teacher
    from .distributed import Distributed
    from .evaluators.proxy_table import (RANK_SCORES, ScoreCache, correlation_table, format_markdown,
                                         load_ground_truth, merge_rank_scores, nan_as_lowest, score_architectures,
                                         score_matrix, write_tables)
    from .plots import plot_proxy_scatter
    from .proxies import available_proxies, get_proxy, network_outputs
    from .runs import atomic_write_json
    from .search_spaces import get_space

    names = [name.strip() for name in args.proxies.split(",")] if args.proxies else available_proxies()
    proxies = [get_proxy(name) for name in names]  # ValueError listing the names for an unknown one
    gt = load_ground_truth(args.gt)
    if gt.data is not None and gt.data != args.data:
        raise ValueError(f"data: the ground truth {args.gt} was measured on {gt.data!r}, not {args.data!r}")
    space = get_space(gt.space)
    out = Path(args.out)
    # The cached scores hold for this batch and teacher only: a folder made with others is refused.
    settings = {"data": args.data, "teacher": args.teacher, "batch_size": args.batch_size, "seed": args.seed,
                "space": gt.space, "options": gt.options}
    config_path = out / "config.json"
    if config_path.exists():
        previous = {key: json.loads(config_path.read_text()).get(key) for key in settings}
        if previous != settings:
            raise ValueError(f"out: {out} holds scores for {previous}, not {settings}; choose another --out")
    dist = Distributed.from_env(args.device)
    device = dist.device_for(args.device)
    out.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        atomic_write_json(config_path, {**settings, "gt": str(args.gt), "proxies": names})

    dataset = load_data(args.data)
    images, labels = next(batches(dataset.train, args.batch_size, shuffle=True, seed=args.seed, drop_last=True))
    images, labels = images.to(device), labels.to(device)
    teacher = None
    if any(p.needs_teacher for p in proxies):  # rank 0 first: it trains and caches a built-in teacher once
        teacher = network_outputs(dist.main_first(
            lambda: load_teacher(args.teacher, dataset, device, progress=not args.quiet and dist.is_main)), images)

    def build(arch: str):
        return space.build(arch, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                           image_size=dataset.image_size, **gt.options).to(device)

    # Each rank scores every world_size-th architecture; cached scores of any earlier run count.
    own = out / (RANK_SCORES.format(dist.rank) if dist.enabled else "scores.jsonl")
    cache = ScoreCache(own, also_read=[out / "scores.jsonl"] if dist.enabled else [])
    score_architectures(gt.archs[dist.rank::dist.world_size], names, build, (images, labels), teacher, cache,
                        seed=args.seed, progress=not args.quiet and dist.is_main)
    dist.barrier()
    if not dist.is_main:
        return 0
    scores = score_matrix(merge_rank_scores(out) if dist.enabled else cache, names, gt.archs)
    rows = correlation_table(names, scores, gt.accuracy)
    write_tables(out, rows, {**settings, "gt": str(args.gt), "architectures": len(gt.archs)})
    plot_proxy_scatter(rows, nan_as_lowest(scores), gt.accuracy, out / "proxy_scatter.png")
    print(f"{len(gt.archs)} {gt.space} architectures of {args.gt}, correlation with accuracy_kd:")
    print(format_markdown(rows))
    print(f"wrote {out / 'proxy_table.json'} (.csv, .md), proxy_scatter.png and the scores in scores.jsonl")
    return 0


def _add_proxies_parsers(sub) -> None:
    proxies = sub.add_parser("proxies", help="rank correlation of training-free proxies with a ground truth",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    proxies.add_argument("--gt", required=True, help="gt.jsonl written by fastnas bench-gt")
    proxies.add_argument("--data", default="digits", help="dataset of the proxy batch (that of the ground truth)")
    proxies.add_argument("--teacher", default="builtin", help="teacher of the distillation-aware proxies")
    proxies.add_argument("--proxies", default=None, help="comma-separated names (default: every registered proxy)")
    proxies.add_argument("--out", default="runs/proxies", help="folder of the tables and the score cache")
    proxies.add_argument("--batch-size", type=int, default=128, help="images of the one proxy batch")
    proxies.add_argument("--seed", type=int, default=0, help="batch draw and every student's initialization")
    proxies.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    proxies.add_argument("--quiet", action="store_true", help="no progress bar")
    proxies.set_defaults(run=_proxies)


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
    _add_step_options(dnad)
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

    train = sub.add_parser("train", help="train a genotype or a space architecture from scratch; report test accuracy",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(train, out_required=False)
    train.add_argument("--genotype", help="genotype JSON written by a search (or --space with --arch)")
    train.add_argument("--space", help="student space: nb201 | resnet | pit (with --arch)")
    train.add_argument("--arch", help="architecture string of --space, e.g. '|nor_conv_3x3~0|+|...|'")
    train.add_argument("--teacher", default="builtin")
    train.add_argument("--kd", choices=["at", "feature", "soft", "none"], default="none")
    train.add_argument("--kd-rate", type=float, default=1.0)
    train.add_argument("--ce-rate", type=float, default=1.0, help="weight of the cross-entropy")
    train.add_argument("--C", type=int, default=None, help="initial channels (default: the search's; nb201: 16)")
    train.add_argument("--N", type=int, default=None, help="cells per stage (nb201 only; default 5)")
    train.add_argument("--patch-size", type=int, default=None, help="patch size (pit only; default by image size)")
    train.add_argument("--layers", type=int, default=None, help="cells (DARTS genotypes only)")
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--lr", type=float, default=0.05)
    train.set_defaults(run=_train)

    _add_bench_gt_parsers(sub)
    _add_sddarts_parsers(sub)

    bench = sub.add_parser("bench", help="time the fused ops against eager PyTorch and torch.compile")
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--quick", action="store_true", help="one small case per op (under a minute on a CPU)")
    bench.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="also time torch.compile of the reference (default: on, off with --quick)")
    bench.add_argument("--json", metavar="PATH", help="write the timings and build facts as JSON")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    bench.set_defaults(run=_bench)
    _add_autodas_parsers(sub)
    _add_proxies_parsers(sub)
    return parser


def _bench_gt(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from .data import load_data
    from .distill import load_teacher
    from .distributed import Distributed
    from .evaluators import GroundTruthConfig, build_ground_truth, merge_shards, parse_shard
    from .evaluators.ground_truth import CONFIG_FILE, read_records

    if args.merge:
        path, count = merge_shards(args.merge)
        print(f"merged {count} architectures into {path}")
        return 0
    if args.space is None or args.out is None:
        raise ValueError("bench-gt: give --space and --out (or --merge OUT to join shard files)")
    if args.resume and not (Path(args.out) / CONFIG_FILE).exists():
        raise FileNotFoundError(f"resume: no {CONFIG_FILE} in {args.out} to resume from")
    config = GroundTruthConfig(space=args.space, data=args.data, n=args.n, seed=args.seed,
                               train_seed=args.train_seed, teacher=args.teacher,
                               epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, ce_rate=args.ce_rate,
                               kd_rate=args.kd_rate, no_kd_too=args.no_kd_too, options=_space_options(args))
    dist = Distributed.from_env(args.device)
    if dist.enabled and args.shard is not None:
        raise ValueError("shard: under torchrun every rank takes its shard itself; drop --shard")
    rank, world = parse_shard(args.shard) if args.shard is not None else (dist.rank, dist.world_size)
    device = dist.device_for(args.device)
    if dist.enabled:  # rank 0 trains and caches a built-in teacher once; the others then read the cache
        dist.main_first(lambda: load_teacher(config.teacher, load_data(config.data), device, progress=False))
    started = time.time()
    quiet = args.quiet or not dist.is_main
    path = build_ground_truth(config, args.out, rank, world, device, progress=not quiet,
                              log=(lambda _: None) if quiet else tqdm.write)
    if dist.enabled:
        dist.barrier()  # every shard file is complete
        if not dist.is_main:
            return 0
        path, _ = merge_shards(args.out)
    records = read_records(path)
    accuracies = [r["accuracy_kd"] for r in records]
    print(f"{path}: {len(records)} architectures, KD accuracy {min(accuracies, default=0):.4f} to "
          f"{max(accuracies, default=0):.4f}, {time.time() - started:.0f}s in this run")
    return 0


def _add_bench_gt_parsers(sub) -> None:
    gt = sub.add_parser("bench-gt", help="ground truth for proxy search: distill n sampled students of a space",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_common(gt, out_required=False)
    gt.add_argument("--space", help="student space: nb201 | resnet | pit")
    gt.add_argument("--n", "--num-archs", dest="n", type=int, default=60,
                    help="distinct architectures to sample (seeded by --seed); --num-archs under torchrun, "
                    "whose own options take --n")
    gt.add_argument("--train-seed", type=int, default=None, help="seed of the students' initial weights and "
                    "batch order (default: --seed); another value retrains the same sample")
    gt.add_argument("--teacher", default="builtin", help="builtin | checkpoint:PATH | torchscript:PATH | "
                    "torchvision:NAME:WEIGHTS.pt")
    gt.add_argument("--epochs", type=int, default=None, help="per student; default 6 on digits/synthetic, else 30")
    gt.add_argument("--batch-size", type=int, default=64)
    gt.add_argument("--lr", type=float, default=0.05)
    gt.add_argument("--ce-rate", type=float, default=0.1, help="weight of the cross-entropy (DisWOT: 0.1)")
    gt.add_argument("--kd-rate", type=float, default=0.9, help="weight of the soft-target KD loss (DisWOT: 0.9)")
    gt.add_argument("--no-kd-too", action="store_true", help="also train each student without KD ('accuracy')")
    gt.add_argument("--C", type=int, default=None, help="nb201 only: initial channels (default 16)")
    gt.add_argument("--N", type=int, default=None, help="nb201 only: cells per stage (default 5)")
    gt.add_argument("--patch-size", type=int, default=None, help="pit only: patch size (default by image size)")
    gt.add_argument("--shard", metavar="I/N", help="train only the architectures with index %% N == I into "
                    "gt.shard-I-of-N.jsonl")
    gt.add_argument("--merge", metavar="OUT", help="merge OUT/gt.shard-*.jsonl into OUT/gt.jsonl and exit")
    gt.set_defaults(run=_bench_gt)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "compile", False) is None:
        args.compile = not args.quick
    status = args.run(args)
    if torch.distributed.is_initialized():
        # Under torchrun the ranks leave together (rank 0 writes last): a rank exiting while the process
        # group's threads still run aborts ("terminate called without an active exception"). On an error
        # the exception propagates instead and torchrun stops the other ranks.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return status
