"""Presets: the papers' hyper-parameters for each command, every value with where it comes from.

``fastnas <cmd> --preset P`` starts from the values below; flags given on the command line override
them; what a preset leaves out keeps fastnas's default (the config dataclass's, or the flag's).
``digits`` is fastnas's own small-data defaults (no entries): a preset only ever names a value
that a paper or the authors' code fixes, and says which.

The keys are the names of the command's options as `args` holds them (``--batch-size`` ->
``batch_size``) or, for settings without a flag, the field of the command's config dataclass.
Sources, as cited below:

- DARTS: Liu et al., ICLR 2019, App. A (the paper) and quark0/darts cnn/train_search.py,
  cnn/train.py, cnn/train_imagenet.py and README.md (the code);
- DNAD: RaoXuan-1998/NADD train_search_cifar.py, train_search_imagenet.py, train_eval_cifar.py,
  train_eval_imagenet.py (the paper's text at hand gives no hyper-parameters);
- SD-DARTS: Zhu et al., arXiv:2302.05629 (lambda 1.0; K = 1 vs voted K = 2), built
  on DARTS's search, whose settings it keeps;
- PC-DARTS: yuhuixu1993/PC-DARTS train_imagenet.py (the ImageNet warm-up DNAD's code copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_PRESET = "digits"


@dataclass(frozen=True)
class Setting:
    """One preset value and its source (paper section or file and flag of the authors' code)."""

    value: Any
    source: str


def _cite(source: str, **values: Any) -> dict[str, Setting]:
    return {name: Setting(value, source) for name, value in values.items()}


DARTS_SEARCH = "quark0/darts cnn/train_search.py"
DARTS_TRAIN = "DARTS paper App. A.2; quark0/darts cnn/train.py"
DARTS_IMAGENET = "DARTS paper App. A.3; quark0/darts cnn/train_imagenet.py"
NADD = "RaoXuan-1998/NADD "

# DARTS's search on CIFAR-10 (also SD-DARTS's, which changes only the loss).
_DARTS_CIFAR_SEARCH = {
    **_cite(DARTS_SEARCH + " --epochs 50", epochs=50),
    **_cite(DARTS_SEARCH + " --batch_size 64", batch_size=64),
    **_cite(DARTS_SEARCH + " --init_channels 16", C=16),
    **_cite(DARTS_SEARCH + " --layers 8", layers=8),
    **_cite("quark0/darts cnn/model_search.py Network(steps=4)", nodes=4),
    **_cite(DARTS_SEARCH + " --learning_rate 0.025 (SGD)", lr=0.025),
    **_cite(DARTS_SEARCH + " --learning_rate_min 0.001 (cosine, per epoch)", lr_min=0.001),
    **_cite(DARTS_SEARCH + " --momentum 0.9", momentum=0.9),
    **_cite(DARTS_SEARCH + " --weight_decay 3e-4", weight_decay=3e-4),
    **_cite(DARTS_SEARCH + " --grad_clip 5", grad_clip=5.0),
    **_cite(DARTS_SEARCH + " --train_portion 0.5", train_fraction=0.5),
    **_cite(DARTS_SEARCH + " --arch_learning_rate 3e-4 (Adam, betas 0.5, 0.999)", arch_lr=3e-4),
    **_cite(DARTS_SEARCH + " --arch_weight_decay 1e-3", arch_weight_decay=1e-3),
    **_cite("quark0/darts cnn/architect.py: R = 0.01 / ||dw'||", fd_radius=0.01),
}

# DARTS's retraining protocol, which SD-DARTS, PC-DARTS and P-DARTS also use.
_DARTS_CIFAR_TRAIN = {
    **_cite(DARTS_TRAIN + " --epochs 600", epochs=600),
    **_cite(DARTS_TRAIN + " --batch_size 96", batch_size=96),
    **_cite(DARTS_TRAIN + " --learning_rate 0.025 (SGD)", lr=0.025),
    **_cite(DARTS_TRAIN + ": CosineAnnealingLR(T_max=epochs), stepped once per epoch", schedule="cosine"),
    **_cite(DARTS_TRAIN + ": CosineAnnealingLR's eta_min left at 0", lr_min=0.0),
    **_cite(DARTS_TRAIN + " --momentum 0.9", momentum=0.9),
    **_cite(DARTS_TRAIN + " --weight_decay 3e-4", weight_decay=3e-4),
    **_cite(DARTS_TRAIN + " --grad_clip 5", grad_clip=5.0),
    **_cite(DARTS_TRAIN + ": nn.CrossEntropyLoss", label_smoothing=0.0),
    **_cite(DARTS_TRAIN + ": no warm-up", warmup_epochs=0),
    **_cite(DARTS_TRAIN + " --init_channels 36", C=36),
    **_cite(DARTS_TRAIN + " --layers 20", layers=20),
    **_cite("quark0/darts cnn/model.py NetworkCIFAR", network="cifar"),
    **_cite(DARTS_TRAIN + " --auxiliary --auxiliary_weight 0.4 (README: train.py --auxiliary --cutout)",
            auxiliary_weight=0.4),
    **_cite(DARTS_TRAIN + " --cutout --cutout_length 16", cutout=16),
    **_cite(DARTS_TRAIN + " --drop_path_prob 0.2", drop_path=0.2),
    **_cite(DARTS_TRAIN + ": drop_path_prob * epoch / epochs, never on an Identity",
            drop_path_schedule="linear"),
    **_cite(DARTS_TRAIN + ": crop, flip, cutout; no AutoAugment", autoaugment=False),
}

_DARTS_IMAGENET_TRAIN = {
    **_cite("DARTS paper App. A.3: 250 epochs", epochs=250),
    **_cite(DARTS_IMAGENET + " --batch_size 128", batch_size=128),
    **_cite(DARTS_IMAGENET + " --learning_rate 0.1 (SGD)", lr=0.1),
    **_cite(DARTS_IMAGENET + ": StepLR(decay_period 1, gamma 0.97), stepped once per epoch", schedule="step"),
    **_cite(DARTS_IMAGENET + " --gamma 0.97", lr_gamma=0.97),
    **_cite(DARTS_IMAGENET + " --decay_period 1", lr_decay_period=1),
    **_cite(DARTS_IMAGENET + ": no warm-up (PC-DARTS warms up 5 epochs when batch > 256)", warmup_epochs=0),
    **_cite(DARTS_IMAGENET + " --momentum 0.9", momentum=0.9),
    **_cite(DARTS_IMAGENET + " --weight_decay 3e-5", weight_decay=3e-5),
    **_cite(DARTS_IMAGENET + " --grad_clip 5", grad_clip=5.0),
    **_cite(DARTS_IMAGENET + " --label_smooth 0.1 (CrossEntropyLabelSmooth)", label_smoothing=0.1),
    **_cite("DARTS paper App. A.3: 48 initial channels (the code's default is 50)", C=48),
    **_cite(DARTS_IMAGENET + " --layers 14", layers=14),
    **_cite("quark0/darts cnn/model.py NetworkImageNet (two stride-2 stems, 224 x 224 inputs)", network="imagenet"),
    **_cite(DARTS_IMAGENET + ": RandomResizedCrop(224), CenterCrop(224) for the test images", image_size=224),
    **_cite(DARTS_IMAGENET + " --auxiliary --auxiliary_weight 0.4", auxiliary_weight=0.4),
    **_cite(DARTS_IMAGENET + ": no cutout", cutout=0),
    **_cite(DARTS_IMAGENET + " --drop_path_prob 0", drop_path=0.0),
    **_cite(DARTS_IMAGENET + ": drop_path_prob * epoch / epochs", drop_path_schedule="linear"),
    **_cite(DARTS_IMAGENET + ": no AutoAugment", autoaugment=False),
}

_NADD_CIFAR_TRAIN = NADD + "train_eval_cifar.py"
_NADD_IMAGENET_TRAIN = NADD + "train_eval_imagenet.py"

_DNAD_CIFAR_TRAIN = {
    **_cite(_NADD_CIFAR_TRAIN + " --epoches 600", epochs=600),
    **_cite(_NADD_CIFAR_TRAIN + " --batch_size 96", batch_size=96),
    **_cite(_NADD_CIFAR_TRAIN + " --learning_rate_network 0.025 (SGD)", lr=0.025),
    **_cite(_NADD_CIFAR_TRAIN + ": CosineAnnealingLR(T_max=epochs), stepped after each epoch", schedule="cosine"),
    **_cite(_NADD_CIFAR_TRAIN + " --learning_rate_network_min 0 (not passed to the scheduler: eta_min 0)",
            lr_min=0.0),
    **_cite(_NADD_CIFAR_TRAIN + " --momentum 0.9", momentum=0.9),
    **_cite(_NADD_CIFAR_TRAIN + " --weight_decay_network 3e-4", weight_decay=3e-4),
    **_cite(_NADD_CIFAR_TRAIN + " --grad_clip 5", grad_clip=5.0),
    **_cite(_NADD_CIFAR_TRAIN + ": nn.CrossEntropyLoss", label_smoothing=0.0),
    **_cite(_NADD_CIFAR_TRAIN + ": no warm-up", warmup_epochs=0),
    **_cite(_NADD_CIFAR_TRAIN + " --channels 36", C=36),
    **_cite(NADD + "model_eval.py Network_Cifar", network="cifar"),
    **_cite(_NADD_CIFAR_TRAIN + " --auxiliary True --auxiliary_rate 0.4", auxiliary_weight=0.4),
    **_cite(_NADD_CIFAR_TRAIN + " --cutout True --cutout_length 16", cutout=16),
    **_cite(_NADD_CIFAR_TRAIN + " --drop_prob 0.3 (the base of the schedule)", drop_path=0.3),
    **_cite(_NADD_CIFAR_TRAIN + ": (drop_prob + 0.15/112 * (operators - 8 * cells)) * epoch / epochs",
            drop_path_schedule="dnad"),
    **_cite(_NADD_CIFAR_TRAIN + " --auto_augment False", autoaugment=False),
}

_DNAD_IMAGENET_TRAIN = {
    **_cite(_NADD_IMAGENET_TRAIN + " --epochs 250", epochs=250),
    **_cite(_NADD_IMAGENET_TRAIN + " --batch_size 512", batch_size=512),
    **_cite(_NADD_IMAGENET_TRAIN + " --learning_rate_network 0.25 (SGD)", lr=0.25),
    **_cite(_NADD_IMAGENET_TRAIN + " --lr_scheduler linear (adjust_lr, as PC-DARTS)", schedule="linear"),
    **_cite(_NADD_IMAGENET_TRAIN + ": 5 warm-up epochs when batch > 256 (as PC-DARTS train_imagenet.py)",
            warmup_epochs=5),
    **_cite(_NADD_IMAGENET_TRAIN + " --momentum 0.9", momentum=0.9),
    **_cite(_NADD_IMAGENET_TRAIN + " --weight_decay_network 3e-5", weight_decay=3e-5),
    **_cite(_NADD_IMAGENET_TRAIN + " --grad_clip 5", grad_clip=5.0),
    **_cite(_NADD_IMAGENET_TRAIN + " --label_smooth 0.1 (CrossEntropyLabelSmooth)", label_smoothing=0.1),
    **_cite(_NADD_IMAGENET_TRAIN + " --channels 48", C=48),
    **_cite(NADD + "model_eval.py Network_Imagenet", network="imagenet"),
    **_cite(_NADD_IMAGENET_TRAIN + ": RandomResizedCrop(224), CenterCrop(224) for the test images", image_size=224),
    **_cite(_NADD_IMAGENET_TRAIN + " --auxiliary True --auxiliary_weight 0.4", auxiliary_weight=0.4),
    **_cite(_NADD_IMAGENET_TRAIN + ": no cutout", cutout=0),
    **_cite(_NADD_IMAGENET_TRAIN + " --drop_prob 0.0", drop_path=0.0),
    **_cite(_NADD_IMAGENET_TRAIN + ": drop path left at 0", drop_path_schedule="linear"),
    **_cite(_NADD_IMAGENET_TRAIN + ": no AutoAugment", autoaugment=False),
}

_NADD_CIFAR_SEARCH = NADD + "train_search_cifar.py"
_NADD_IMAGENET_SEARCH = NADD + "train_search_imagenet.py"

# fastnas's SNPS names -> the keys of the authors' --pruner_dict
_PRUNER_KEYS = {"gamma": "gamma_0", "gamma_max": "gamma_max", "phi": "varphi", "k": "k", "n_max": "n_max",
                "tqu_max": "tqu_max", "tau": "tau", "mu": "miu_0", "rho": "rou", "xi": "xi"}


def _pruner(script: str, **values: float) -> dict[str, Setting]:
    return {name: Setting(value, f"{script} --pruner_dict {_PRUNER_KEYS[name]}: {value}")
            for name, value in values.items()}


# DNAD's distillation (both datasets): attention transfer, as the paper's main method and the authors' code
_DNAD_AT = {
    **_cite("DNAD paper: attention transfer (its Table IV: AT beats soft targets)", kd="at"),
    **_cite(NADD + "Distillator.py AT(p=2, beta=1000)", at_beta=1000.0),
    **_cite(NADD + "Distillator.py: the three stages' AT losses summed and divided by 3", at_scale="mean"),
}

_DNAD_CIFAR_SEARCH = {
    **_DNAD_AT,
    **_cite(_NADD_CIFAR_SEARCH + " --batch_size 128", batch_size=128),
    **_cite(_NADD_CIFAR_SEARCH + " --epochs 120 (an upper bound: the search stops at S < 250)", epochs=120),
    **_cite(_NADD_CIFAR_SEARCH + " --channel 16", C=16),
    **_cite(_NADD_CIFAR_SEARCH + " --cell_num 8", layers=8),
    **_cite(_NADD_CIFAR_SEARCH + " --computing_node_num 4", nodes=4),
    **_cite(_NADD_CIFAR_SEARCH + " --learning_rate_network 5e-4 (Adam; cosine to the same 5e-4: constant)",
            lr=5e-4),
    **_cite(_NADD_CIFAR_SEARCH + " --weight_decay_network 3e-4", weight_decay=3e-4),
    **_cite(_NADD_CIFAR_SEARCH + " --learning_rate_arch 0.20 (SGD, --momentum 0.0)", arch_lr=0.2),
    **_cite(_NADD_CIFAR_SEARCH + " --grad_clip 5", grad_clip=5.0),
    **_cite(_NADD_CIFAR_SEARCH + " --knowledge_rate 1.0", kd_rate=1.0),
    **_cite(_NADD_CIFAR_SEARCH + " --warm_up 0", warm_up=0),
    **_cite(_NADD_CIFAR_SEARCH + " --Flops_min 250 (8 cells of 4 nodes)", stop_sparsity=250.0),
    **_cite(NADD + "genotypes.py PRIMITIVES", ops="sep_conv_3x3,skip_connect,dil_conv_5x5"),
    **_pruner(_NADD_CIFAR_SEARCH, gamma=1e-4, gamma_max=0.1, phi=1.01, k=0.99, n_max=0.005, tqu_max=50, tau=0.9,
              mu=0.1, rho=1.5, xi=1.0),
    **_cite(_NADD_CIFAR_SEARCH + " --baseline 0.01 (the pruning threshold)", eps=0.01),
}

_DNAD_IMAGENET_SEARCH = {
    **_DNAD_AT,
    **_cite(_NADD_IMAGENET_SEARCH + " --batch_size 256", batch_size=256),
    **_cite(_NADD_IMAGENET_SEARCH + " --epoches 30 (an upper bound: the search stops at S < 250)", epochs=30),
    **_cite(_NADD_IMAGENET_SEARCH + " --channel 20", C=20),
    **_cite(_NADD_IMAGENET_SEARCH + " --cell_num 14", layers=14),
    **_cite(_NADD_IMAGENET_SEARCH + " --computing_node_num 4", nodes=4),
    **_cite(_NADD_IMAGENET_SEARCH + " --learning_rate_network 3e-4 (Adam; cosine to the same 3e-4: constant)",
            lr=3e-4),
    **_cite(_NADD_IMAGENET_SEARCH + " --weight_decay_network 3e-4", weight_decay=3e-4),
    **_cite(_NADD_IMAGENET_SEARCH + " --learning_rate_arch 0.20 (SGD; the code's --momentum 0.9 is not applied "
            "here: fastnas's alpha SGD has no momentum)", arch_lr=0.2),
    **_cite(_NADD_IMAGENET_SEARCH + " --grad_clip 5", grad_clip=5.0),
    **_cite(_NADD_IMAGENET_SEARCH + " --knowledge_rate 1.0", kd_rate=1.0),
    **_cite(_NADD_IMAGENET_SEARCH + " --warm_up 5", warm_up=5),
    **_cite(_NADD_IMAGENET_SEARCH + " --Flops_min 250 (14 cells of 4 nodes)", stop_sparsity=250.0),
    **_cite(NADD + "genotypes.py PRIMITIVES", ops="sep_conv_3x3,skip_connect,dil_conv_5x5"),
    **_pruner(_NADD_IMAGENET_SEARCH, gamma=1e-6, gamma_max=1e-3, phi=1.01, k=0.99, n_max=5e-4, tqu_max=300,
              tau=0.99, mu=0.1, rho=1.5, xi=1.0),
    **_cite(_NADD_IMAGENET_SEARCH + " --baseline 0.01 (the pruning threshold)", eps=0.01),
}

SD_DARTS_PAPER = "SD-DARTS paper"

PRESETS: dict[str, dict[str, dict[str, Setting]]] = {
    "train": {
        DEFAULT_PRESET: {},
        "cifar10": _DARTS_CIFAR_TRAIN,
        "imagenet": _DARTS_IMAGENET_TRAIN,
        "dnad-cifar10": _DNAD_CIFAR_TRAIN,
        "dnad-imagenet": _DNAD_IMAGENET_TRAIN,
    },
    "darts": {
        DEFAULT_PRESET: {},
        "cifar10": {
            **_DARTS_CIFAR_SEARCH,
            **_cite("quark0/darts README.md: train_search.py --unrolled (2nd order, the DARTS_V2 cell)", order=2),
        },
    },
    "sddarts": {
        DEFAULT_PRESET: {},
        "cifar10": {
            **_DARTS_CIFAR_SEARCH,
            **_cite(SD_DARTS_PAPER + ": lambda = 1.0", sd_lambda=1.0),
        },
    },
    "dnad": {
        DEFAULT_PRESET: {},
        "cifar10": _DNAD_CIFAR_SEARCH,
        "imagenet": _DNAD_IMAGENET_SEARCH,
    },
}

# What each search preset is retrained with: `fastnas train --preset <this>`.
RETRAIN_PRESET = {("dnad", "cifar10"): "dnad-cifar10", ("dnad", "imagenet"): "dnad-imagenet",
                  ("darts", "cifar10"): "cifar10", ("sddarts", "cifar10"): "cifar10"}

# Settings of the authors' code that a preset cannot apply, said where the preset is shown.
NOT_APPLIED = {
    ("dnad", "cifar10"): [
        "AutoAugment during the search (train_search_cifar.py --auto_augment True): fastnas's DNAD search "
        "augments with crop and flip only",
        "the teacher: a DARTS network retrained at C = 36 (--teacher_path); give it with --teacher",
    ],
    ("dnad", "imagenet"): [
        "the alpha SGD's momentum 0.9 (train_search_imagenet.py --momentum): fastnas's has none",
        "the teacher: EfficientNet-B0 (--pretrained_model efficientnet-b0); give one with --teacher",
        "the ImageNet stems of the search network (model_search.Network_ImageNet): fastnas searches with the "
        "CIFAR stem",
    ],
    ("train", "imagenet"): [
        "RandomResizedCrop(224) and ColorJitter(0.4, 0.4, 0.4, 0.2): fastnas holds the images in memory at one "
        "size and augments with crop and flip",
    ],
    ("train", "dnad-imagenet"): [
        "RandomResizedCrop(224) and ColorJitter(0.4, 0.4, 0.4, 0.2): fastnas holds the images in memory at one "
        "size and augments with crop and flip",
    ],
}


def preset_names(command: str) -> list[str]:
    """The presets `command` knows, the default first."""
    return list(PRESETS[command])


def preset_settings(command: str, preset: str) -> dict[str, Setting]:
    """The values preset `preset` sets for `command`; ValueError naming the known presets otherwise."""
    if command not in PRESETS:
        raise ValueError(f"preset: the {command} command has no presets")
    known = PRESETS[command]
    if preset not in known:
        raise ValueError(f"preset: expected one of {', '.join(known)} for {command}, got {preset!r}")
    return known[preset]
