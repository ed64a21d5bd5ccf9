"""`fastnas train`: train a genotype or a student-space architecture from scratch."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from .common import add_common, add_preset_options, apply_preset, format_config, space_options

RECIPE_FLAGS = ("epochs", "batch_size", "lr", "lr_min", "schedule", "lr_gamma", "lr_decay_period", "warmup_epochs",
                "momentum", "weight_decay", "grad_clip", "label_smoothing", "auxiliary_weight", "cutout",
                "autoaugment", "kd", "kd_rate", "ce_rate", "seed", "workers", "channels_last", "amp",
                "checkpoint_every", "eval_every")


def genotype_operations(genotype, layers: int) -> int:
    """Operations (``(op, input)`` pairs) of the network `genotype` builds with `layers` cells."""
    from ..search_spaces.darts import reduction_layers

    reductions = reduction_layers(layers)
    return sum(len(node) for i in range(layers) for node in genotype.cell(i, i in reductions))


# The input side each evaluation network is built for (quark0/darts cnn/train.py and train_imagenet.py)
NETWORK_IMAGE_SIZE = {"cifar": 32, "imagenet": 224}


def build_genotype_network(genotype, C: int, layers: int, num_classes: int, in_channels: int = 3,
                           network: str = "cifar", auxiliary: bool = False):
    """The evaluation network of `genotype`: `network` "cifar" (quark0/darts NetworkCIFAR) or "imagenet"
    (NetworkImageNet), with its auxiliary head if `auxiliary`."""
    from ..search_spaces import NetworkCIFAR, NetworkImageNet

    cls = {"cifar": NetworkCIFAR, "imagenet": NetworkImageNet}[network]
    return cls(genotype, C, num_classes, layers=layers, auxiliary=auxiliary, in_channels=in_channels)


def _train_config(args: argparse.Namespace, genotype, layers: int | None):
    """The TrainConfig of the flags; DNAD's drop-path schedule raises the final probability by the op count."""
    from ..evaluators import TrainConfig
    from ..evaluators.trainer import dnad_drop_path

    drop_path = args.drop_path
    if args.drop_path_schedule == "dnad" and drop_path > 0:
        if genotype is None:
            raise ValueError("drop_path_schedule: 'dnad' counts the operations of a --genotype")
        drop_path = dnad_drop_path(args.drop_path, genotype_operations(genotype, layers), layers)
    return TrainConfig(drop_path=drop_path, **{name: getattr(args, name) for name in RECIPE_FLAGS})


def _genotype_width(args: argparse.Namespace, genotype) -> tuple[int, int]:
    """(C, cells) of the network: the flags or preset, else the genotype's search values, else 16 and 8.

    Records in args.sources where each comes from when neither a flag nor the preset gave it."""
    if args.C is None:
        args.sources["C"] = "the search's C (genotype meta)" if "C" in genotype.meta else "fastnas default"
    if genotype.cells is not None:
        args.sources["layers"] = "the genotype's: one entry per cell (DNAD)"
        layers = len(genotype.cells)  # DiscreteNetwork refuses another --layers
    else:
        if args.layers is None:
            args.sources["layers"] = ("the search's layers (genotype meta)" if "layers" in genotype.meta
                                      else "fastnas default")
        layers = args.layers or genotype.meta.get("layers", 8)
    return args.C or genotype.meta.get("C", 16), layers


def _train(args: argparse.Namespace) -> int:
    from ..data import load_data
    from ..distill import load_teacher, save_teacher_checkpoint
    from ..evaluators import train_network
    from ..nn.cost import count_flops, count_params
    from ..runs import RunFolder
    from ..search_spaces import get_space, load_genotype, reference_param_count

    apply_preset(args)
    if (args.genotype is None) == (args.space is None) or (args.space is None) != (args.arch is None):
        raise ValueError("train: give either --genotype JSON or --space NAME with --arch STRING")
    if args.space is not None and args.preset != "digits":
        raise ValueError(f"preset: {args.preset} is a DARTS-space retraining protocol; a --space architecture "
                         "trains with the digits preset and the flags you give")
    genotype = load_genotype(args.genotype) if args.genotype is not None else None
    if genotype is not None and (args.N is not None or args.patch_size is not None):
        raise ValueError("train: --N and --patch-size are student-space options; use them with --space")
    C, layers = _genotype_width(args, genotype) if genotype is not None else (args.C, None)
    config = _train_config(args, genotype, layers)
    shown = {**asdict(config), "drop_path_schedule": args.drop_path_schedule, "drop_path_base": args.drop_path,
             "C": C, "layers": layers, "network": args.network, "image_size": args.image_size}
    sources = {**args.sources, "drop_path_base": args.sources.get("drop_path", "fastnas default")}
    if args.drop_path_schedule == "dnad":
        sources["drop_path"] = "drop_path_base + 0.15/112 * (operations - 8 * cells) (NADD train_eval_cifar.py)"
    if args.show_config:
        print(format_config(shown, sources, "train", args.preset))
        return 0

    dataset = load_data(args.data, image_size=args.image_size)
    if genotype is not None:
        model = build_genotype_network(genotype, C, layers, dataset.num_classes, dataset.in_channels, args.network,
                                       auxiliary=config.auxiliary_weight > 0)
        described = {"genotype": str(args.genotype)}
    else:
        space = get_space(args.space)
        arch = space.validate(args.arch)
        model = space.build(arch, dataset.num_classes, dataset.in_channels, image_size=dataset.image_size,
                            **space.check_options(space_options(args)))
        described = {"space": space.name, "arch": arch}
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)
    # the papers' count leaves the auxiliary head out (quark0/darts utils.count_parameters_in_MB)
    params, flops = reference_param_count(model), count_flops(model, input_shape)
    costs = {"params": params, "params_with_auxiliary": count_params(model), "flops": flops}
    teacher = None if args.kd == "none" else load_teacher(args.teacher, dataset, args.device, progress=not args.quiet)
    facts = {**costs, **({"teacher": teacher.summary()} if teacher is not None else {})}
    run = RunFolder(args.out, resume=args.resume) if args.out else None
    if run is not None and not args.resume:
        settings = {key: value for key, value in vars(args).items()
                    if key not in ("run", "sources", "preset_flag_defaults", "show_config")}
        run.write_config({**settings, "config": shown, "sources": sources, **facts})
    result = train_network(model, dataset, config, teacher, args.device, run, progress=not args.quiet)
    result.update(**facts, **described, data=args.data, kd=args.kd, preset=args.preset)
    if run is not None:
        run.write_json("result.json", result)
        if genotype is not None:  # the retrained network, loadable as --teacher checkpoint:PATH
            save_teacher_checkpoint(model, run.path / "network.pt", test_accuracy=result["test_accuracy"],
                                    data=args.data, genotype=str(args.genotype))
    print(f"test accuracy {100 * result['test_accuracy']:.2f}% | {params:,} params | {flops:,} FLOPs | "
          f"{result['seconds']:.0f}s training")
    return 0


def add_parsers(sub) -> None:
    from ..evaluators.trainer import AMP_MODES, DROP_PATH_SCHEDULES, SCHEDULES

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
    train.add_argument("--layers", type=int, default=None,
                       help="cells (DARTS genotypes only; default: the search's; a DNAD genotype has its own)")
    train.add_argument("--image-size", type=int, default=None,
                       help="resize the images to this side (bilinear) when reading them (default: their own; "
                       "imagefolder: 32)")
    train.add_argument("--network", choices=list(NETWORK_IMAGE_SIZE), default="cifar",
                       help="the evaluation network of a genotype: DARTS's CIFAR network (one 3x3 stem) or its "
                       "ImageNet network (two stride-2 stems, for 224 x 224 images)")

    recipe = train.add_argument_group("recipe (--show-config lists every value and its source)")
    recipe.add_argument("--epochs", type=int, default=30)
    recipe.add_argument("--batch-size", type=int, default=64)
    recipe.add_argument("--lr", type=float, default=0.05, help="initial SGD learning rate")
    recipe.add_argument("--lr-min", type=float, default=0.0, help="floor of the cosine schedules")
    recipe.add_argument("--schedule", choices=SCHEDULES, default="cosine-steps",
                        help="cosine-steps: cosine over every step (fastnas's choice for small data); cosine: "
                        "once per epoch (DARTS); step: lr * lr_gamma ** (epoch // lr_decay_period) (DARTS "
                        "ImageNet); linear: PC-DARTS's ImageNet decay (DNAD ImageNet)")
    recipe.add_argument("--lr-gamma", type=float, default=0.97, help="decay factor of --schedule step")
    recipe.add_argument("--lr-decay-period", type=int, default=1, help="epochs between decays of --schedule step")
    recipe.add_argument("--warmup-epochs", type=int, default=0,
                        help="linear warm-up: the lr times (epoch + 1) / N in the first N epochs (PC-DARTS ImageNet)")
    recipe.add_argument("--momentum", type=float, default=0.9)
    recipe.add_argument("--weight-decay", type=float, default=3e-4)
    recipe.add_argument("--grad-clip", type=float, default=5.0, help="maximum global gradient norm")
    recipe.add_argument("--label-smoothing", type=float, default=0.0, help="as CrossEntropyLabelSmooth (ImageNet 0.1)")
    recipe.add_argument("--auxiliary-weight", type=float, default=0.0,
                        help="weight of the auxiliary head's loss (DARTS 0.4; 0: no auxiliary head)")
    recipe.add_argument("--drop-path", type=float, default=0.0,
                        help="final drop-path probability, reached linearly: p * epoch / epochs (DARTS 0.2); "
                        "with --drop-path-schedule dnad the base DNAD's code raises by the network's size")
    recipe.add_argument("--drop-path-schedule", choices=DROP_PATH_SCHEDULES, default="linear",
                        help="linear: DARTS's; dnad: final p = base + 0.15/112 * (operations - 8 * cells) "
                        "(RaoXuan-1998/NADD train_eval_cifar.py)")
    recipe.add_argument("--cutout", type=int, default=0, help="side of the square cut out of each image (0: none)")
    recipe.add_argument("--autoaugment", action=argparse.BooleanOptionalAction, default=False,
                        help="torchvision AutoAugment, CIFAR10 policy (needs torchvision)")

    engine = train.add_argument_group("how the steps run")
    engine.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes making the batches, pinned memory on CUDA (0: in this "
                        "process, from the data in memory)")
    engine.add_argument("--channels-last", action="store_true", help="NHWC layout of the network and its inputs")
    engine.add_argument("--amp", choices=AMP_MODES, default="off",
                        help="bf16: bfloat16 autocast of the forward pass and losses (meant for CUDA GPUs)")
    engine.add_argument("--checkpoint-every", type=int, default=0,
                        help="steps between mid-epoch checkpoints (0: at each epoch's end only)")
    engine.add_argument("--eval-every", type=int, default=0,
                        help="epochs between test-set evaluations logged in metrics.jsonl (0: only at the end)")
    add_preset_options(train, "train")
    train.set_defaults(run=_train)
