"""`fastnas proxies`: rank correlation of training-free proxies with a ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _proxies(args: argparse.Namespace) -> int:
    from ..data import batches, load_data
    from ..distill import load_teacher
    from ..distributed import Distributed
    from ..evaluators.proxy_table import (RANK_SCORES, ScoreCache, correlation_table, format_markdown,
                                         load_ground_truth, merge_rank_scores, nan_as_lowest, score_architectures,
                                         score_matrix, write_tables)
    from ..plots import plot_proxy_scatter
    from ..proxies import available_proxies, get_proxy, network_outputs
    from ..runs import atomic_write_json
    from ..search_spaces import get_space

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


def add_parsers(sub) -> None:
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
