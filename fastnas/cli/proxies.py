"""`fastnas proxies`: rank correlation of training-free proxies with a ground truth.

Two ground truths: ``--gt gt.jsonl`` (the distilled students of ``fastnas bench-gt``, scored one network at a
time) or ``--benchmark nb201:TABLE.csv`` (NAS-Bench-201's trained accuracies, scored with
fastnas.proxies.batched, many cells per pass). Both cache every score in ``OUT/scores.jsonl`` as it is
computed, so a rerun (after a kill, with more proxies or cells) computes only what is missing. Under torchrun
each rank scores every world_size-th architecture of --gt, and a contiguous block of the benchmark's cells in
the space's order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

# Architectures scored between two appends to the score cache in --benchmark runs (fastnas's choice: a kill loses
# at most one chunk, and a chunk holds several batched passes).
BENCHMARK_CHUNK = 256
GT_BATCH_SIZE, BENCHMARK_BATCH_SIZE = 128, 64  # the benchmark's: zero-cost-nas nasbench2_pred.py --batch_size 64


def _check_settings(out: Path, settings: dict) -> None:
    """The cached scores hold for these settings only: a folder made with others is refused."""
    config_path = out / "config.json"
    if config_path.exists():
        previous = {key: json.loads(config_path.read_text()).get(key) for key in settings}
        if previous != settings:
            raise ValueError(f"out: {out} holds scores for {previous}, not {settings}; choose another --out")


def _proxy_names(args: argparse.Namespace, default: list[str]) -> list[str]:
    from ..proxies import get_proxy

    names = [name.strip() for name in args.proxies.split(",")] if args.proxies else default
    for name in names:
        get_proxy(name)  # ValueError listing the names for an unknown one
    return names


def _first_batch(dataset, batch_size: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import batches

    if len(dataset.train) < batch_size:
        raise ValueError(f"batch_size: {batch_size} is more than the {len(dataset.train)} training images")
    images, labels = next(batches(dataset.train, batch_size, shuffle=True, seed=seed, drop_last=True))
    return images.to(device), labels.to(device)


def _teacher_outputs(proxies: list[str], teacher: str, dataset, images, dist, device, quiet: bool):
    """The teacher's outputs on the batch when a proxy compares with one (rank 0 trains a built-in one first)."""
    from ..distill import load_teacher
    from ..proxies import get_proxy, network_outputs

    if not any(get_proxy(name).needs_teacher for name in proxies):
        return None
    return network_outputs(dist.main_first(
        lambda: load_teacher(teacher, dataset, device, progress=not quiet and dist.is_main)), images)


def _proxies(args: argparse.Namespace) -> int:
    return _benchmark(args) if args.benchmark else _ground_truth(args)


def _ground_truth(args: argparse.Namespace) -> int:
    from ..data import load_data
    from ..distributed import Distributed
    from ..evaluators.proxy_table import (RANK_SCORES, ScoreCache, correlation_table, format_markdown,
                                         load_ground_truth, merge_rank_scores, nan_as_lowest, score_architectures,
                                         score_matrix, write_tables)
    from ..plots import plot_proxy_scatter
    from ..proxies import available_proxies
    from ..runs import atomic_write_json, make_folder
    from ..search_spaces import get_space

    data = args.data or "digits"
    batch_size = GT_BATCH_SIZE if args.batch_size is None else args.batch_size
    names = _proxy_names(args, available_proxies())
    gt = load_ground_truth(args.gt)
    if gt.data is not None and gt.data != data:
        raise ValueError(f"data: the ground truth {args.gt} was measured on {gt.data!r}, not {data!r}")
    space = get_space(gt.space)
    out = Path(args.out)
    settings = {"data": data, "teacher": args.teacher, "batch_size": batch_size, "seed": args.seed,
                "space": gt.space, "options": gt.options}
    _check_settings(out, settings)
    dist = Distributed.from_env(args.device)
    device = dist.device_for(args.device)
    make_folder(out)
    if dist.is_main:
        atomic_write_json(out / "config.json", {**settings, "gt": str(args.gt), "proxies": names})

    dataset = load_data(data)
    images, labels = _first_batch(dataset, batch_size, args.seed, device)
    teacher = _teacher_outputs(names, args.teacher, dataset, images, dist, device, args.quiet)

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


def _benchmark(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data import load_data
    from ..distributed import Distributed
    from ..evaluators.proxy_table import RANK_SCORES, ScoreCache, merge_rank_scores, nan_as_lowest, score_matrix
    from ..nasbench import (NETWORK, PUBLISHED_SOURCE, correlation_report, format_report, rank_block, read_table,
                            sample_indices)
    from ..plots import plot_proxy_scatter
    from ..proxies.batched import BATCHED, DATA_FREE, SharedNB201, score_nb201
    from ..runs import atomic_write_json, make_folder
    from .common import keep_freed_memory

    kind, _, path = args.benchmark.partition(":")
    if kind != "nb201" or not path:
        raise ValueError(f"benchmark: expected nb201:TABLE.csv (the compact NAS-Bench-201 table), "
                         f"got {args.benchmark!r}")
    table = read_table(path)
    accuracy = table.column(args.dataset)
    names = _proxy_names(args, list(BATCHED if args.data else DATA_FREE))
    needing_data = [name for name in names if name not in DATA_FREE]
    if needing_data and not args.data:
        raise ValueError(f"data: proxies {needing_data} read a batch of images; pass --data cifar10:PATH, "
                         "cifar100:PATH, imagenet16:PATH (or synthetic), or only params, flops and synflow")
    if args.bootstrap < 1:
        raise ValueError(f"bootstrap: expected a number of resamples >= 1, got {args.bootstrap}")
    rows = sample_indices(len(table), args.sample, args.seed)
    archs = [table.archs[i] for i in rows]
    classes, side = NETWORK[args.dataset]
    batch_size = BENCHMARK_BATCH_SIZE if args.batch_size is None else args.batch_size
    out = Path(args.out)
    settings = {"benchmark_dataset": args.dataset, "data": args.data, "batch_size": batch_size if args.data else None,
                "seed": args.seed, "C": args.C, "N": args.N,
                "teacher": args.teacher if needing_data else None}
    _check_settings(out, settings)
    dist = Distributed.from_env(args.device)
    device = dist.device_for(args.device)
    if device.type == "cpu":
        keep_freed_memory()
    make_folder(out)
    if dist.is_main:
        atomic_write_json(out / "config.json", {**settings, "benchmark": str(path), "proxies": names})

    batch = teacher = None
    synthetic = bool(args.data) and args.data.partition(":")[0] == "synthetic"
    if args.data:
        # synthetic images (random, for smoke tests) are drawn at the benchmark's side; a real dataset keeps its
        # own, so that a mismatch is refused instead of resized
        dataset = load_data(args.data, image_size=side if synthetic else None)
        if (dataset.in_channels, dataset.image_size) != (3, side) or dataset.num_classes > classes:
            raise ValueError(f"data: {args.data} holds {dataset.num_classes} classes of {dataset.in_channels}x"
                             f"{dataset.image_size}x{dataset.image_size} images; NAS-Bench-201's {args.dataset} "
                             f"networks take 3x{side}x{side} images into {classes} classes")
        batch = _first_batch(dataset, batch_size, args.seed, device)
        teacher = _teacher_outputs(names, args.teacher, dataset, batch[0], dist, device, args.quiet)
    torch.manual_seed(args.seed)  # the shared weights: the same on every rank and every rerun
    shared = SharedNB201(args.C, args.N, classes, 3).to(device)

    own = out / (RANK_SCORES.format(dist.rank) if dist.enabled else "scores.jsonl")
    cache = ScoreCache(own, also_read=[out / "scores.jsonl"] if dist.enabled else [])
    todo: dict[tuple[str, ...], list[str]] = {}  # the missing proxies -> the architectures missing them
    for arch in rank_block(archs, dist.rank, dist.world_size):
        missing = tuple(cache.missing(arch, names))
        if missing:
            todo.setdefault(missing, []).append(arch)
    with tqdm(total=sum(map(len, todo.values())), disable=args.quiet or not dist.is_main, desc="proxies",
              unit="arch") as bar:
        for missing, pending in todo.items():
            for start in range(0, len(pending), BENCHMARK_CHUNK):
                chunk = pending[start:start + BENCHMARK_CHUNK]
                scores = score_nb201(missing, chunk, shared, batch, image_size=side, teacher=teacher,
                                     archs_per_pass=args.archs_per_pass)
                cache.add_many({arch: {name: scores[name][i].item() for name in missing}
                                for i, arch in enumerate(chunk)})
                bar.update(len(chunk))
    dist.barrier()
    if not dist.is_main:
        return 0
    scores = score_matrix(merge_rank_scores(out) if dist.enabled else cache, names, archs)
    target = accuracy[rows]
    report = correlation_report(names, scores, target, args.dataset, n_boot=args.bootstrap, seed=args.seed)
    atomic_write_json(out / "correlations.json", {
        "benchmark": str(path), "dataset": args.dataset, "architectures": len(archs), "settings": settings,
        "target": f"{args.dataset} column of the table ({table.metric_name}, %)", "metric": table.metric,
        "table_comment": table.comment, "bootstrap": args.bootstrap,
        "published_source": PUBLISHED_SOURCE, "proxies": report})
    ranked = nan_as_lowest(scores)
    for i, name in enumerate(names):
        plot_proxy_scatter([{"proxy": name, "kendall": report[name]["kendall"]}], ranked[i:i + 1], target / 100,
                           out / f"scatter-{name}.png", ylabel=f"{args.dataset} {table.metric_name} (%)")
    print(f"{len(archs)} NAS-Bench-201 cells of {path} (C={args.C}, N={args.N}), correlation with the "
          f"{args.dataset} {table.metric_name}; published (of the test accuracy): {PUBLISHED_SOURCE}")
    print(format_report(report))
    if needing_data and synthetic:
        print(f"note: {needing_data} scored random synthetic images: their correlations check the mechanics, "
              "not a result to compare with the published ones")
    print(f"wrote {out / 'correlations.json'}, scatter-<proxy>.png and the scores in scores.jsonl")
    return 0


def add_parsers(sub) -> None:
    from ..nasbench import BENCHMARK_C, BENCHMARK_N, DATASETS
    from .common import add_device, seed_option

    proxies = sub.add_parser("proxies", help="rank correlation of training-free proxies with a ground truth",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    truth = proxies.add_mutually_exclusive_group(required=True)
    truth.add_argument("--gt", help="gt.jsonl written by fastnas bench-gt")
    truth.add_argument("--benchmark", help="nb201:TABLE.csv, NAS-Bench-201's accuracies as the compact CSV "
                       "(fastnas nasbench export writes it); its cells are scored many per pass")
    proxies.add_argument("--dataset", choices=DATASETS, default="cifar10",
                         help="--benchmark: the table's column to correlate with (and the network's classes and "
                         "image size: 10 / 100 classes on 32x32, 120 on 16x16)")
    proxies.add_argument("--sample", default="all",
                         help="--benchmark: 'all' cells of the table or a number of them drawn with --seed")
    proxies.add_argument("--C", type=int, default=BENCHMARK_C,
                         help="--benchmark: channels of the first stage (the benchmark trained C=16; another value "
                         "scores a narrower network, fastnas's choice for quick runs)")
    proxies.add_argument("--N", type=int, default=BENCHMARK_N, help="--benchmark: cells per stage (the benchmark's: 5)")
    proxies.add_argument("--archs-per-pass", type=int, default=None,
                         help="--benchmark: cells per batched pass (fastnas's choice; default on a CPU: 16 for synflow, "
                         "64 where the cells fill more than half the part of the space they span, 64 images' worth "
                         "for the data proxies; on a GPU 64 and 256 images' worth, more on a large GPU)")
    proxies.add_argument("--bootstrap", type=int, default=1000,
                         help="--benchmark: resamples of the cells for the 95%% intervals")
    proxies.add_argument("--data", default=None,
                         help="dataset of the proxy batch: that of the ground truth (--gt; default digits), or for "
                         "--benchmark cifar10:PATH, cifar100:PATH, imagenet16:PATH or synthetic (random images at "
                         "the benchmark's side, for smoke tests; without --data: only the data-free params, flops "
                         "and synflow)")
    proxies.add_argument("--teacher", default="builtin", help="teacher of the distillation-aware proxies")
    proxies.add_argument("--proxies", default=None,
                         help="comma-separated names (default: every registered proxy with --gt; with --benchmark "
                         "the batched ones, params,flops,synflow without --data)")
    proxies.add_argument("--out", default="runs/proxies", help="folder of the tables and the score cache")
    proxies.add_argument("--batch-size", type=int, default=None,
                         help=f"images of the one proxy batch (default {GT_BATCH_SIZE} with --gt; "
                         f"{BENCHMARK_BATCH_SIZE} with --benchmark, as zero-cost-nas)")
    proxies.add_argument("--seed", type=seed_option, default=0, help="batch draw, the sample and the networks' weights")
    add_device(proxies)
    proxies.add_argument("--quiet", action="store_true", help="no progress bar")
    proxies.set_defaults(run=_proxies)
