"""`fastnas train`: train a genotype or a student-space architecture from scratch."""

from __future__ import annotations

import argparse

import torch

from .common import add_common, space_options


def _train(args: argparse.Namespace) -> int:
    from ..data import load_data
    from ..distill import load_teacher
    from ..evaluators import TrainConfig, train_network
    from ..nn.cost import count_flops, count_params
    from ..runs import RunFolder
    from ..search_spaces import DiscreteNetwork, Genotype, get_space

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
                            **space.check_options(space_options(args)))
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



def add_parsers(sub) -> None:
    train = sub.add_parser("train", help="train a genotype or a space architecture from scratch; report test accuracy",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common(train, out_required=False)
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
