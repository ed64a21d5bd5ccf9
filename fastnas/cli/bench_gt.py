"""`fastnas bench-gt`: the distilled-student ground truth of proxy search."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_common, space_options


def _bench_gt(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from ..data import load_data
    from ..distill import load_teacher
    from ..distributed import Distributed
    from ..evaluators import GroundTruthConfig, build_ground_truth, merge_shards, parse_shard
    from ..evaluators.ground_truth import CONFIG_FILE, read_records

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
                               kd_rate=args.kd_rate, no_kd_too=args.no_kd_too, options=space_options(args))
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


def add_parsers(sub) -> None:
    gt = sub.add_parser("bench-gt", help="ground truth for proxy search: distill n sampled students of a space",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(gt, out_required=False)
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
