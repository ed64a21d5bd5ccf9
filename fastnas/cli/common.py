"""Options that several commands share."""

from __future__ import annotations

import argparse

import torch


def add_common(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    parser.add_argument("--data", default="digits",
                        help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH | synthetic[:N]")
    parser.add_argument("--out", required=out_required, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after an interruption")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_step_options(parser: argparse.ArgumentParser) -> None:
    """How a super-network search computes its steps (not what it computes)."""
    parser.add_argument("--amp", choices=["off", "bf16"], default="off",
                        help="bf16: bfloat16 autocast of the training steps (fused ops accumulate in float32); "
                        "meant for CUDA GPUs, also runs on CPUs (slowly without native bfloat16)")
    parser.add_argument("--no-recompute", dest="recompute", action="store_false",
                        help="keep operator and depthwise outputs for backward instead of rebuilding them: "
                        "about 1.4x the activation memory, a few percent faster")



def space_options(args: argparse.Namespace) -> dict:
    """The student-space options given on the command line (--C, --N, --patch-size)."""
    given = {"C": args.C, "N": args.N, "patch_size": args.patch_size}
    return {name: value for name, value in given.items() if value is not None}
