"""Options that several commands share."""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

import torch

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The environment variables by which a user sets those thresholds; keep_freed_memory leaves them alone.
GLIBC_THRESHOLD_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Lets glibc keep freed buffers below 1 GB for reuse instead of unmapping them (fastnas's choice, on Linux).

    Batched NB201 scoring frees and reallocates the same large buffers at every pass; by default glibc maps
    each afresh and returns it on free, and the kernel zeroes the pages again: `fastnas proxies --benchmark`
    over all 15,625 cells (synflow, params, flops, 2 threads, 2-core AMD EPYC) took 344 s, 170 s of it in the
    kernel, and 233 s with these thresholds, 2 s in the kernel; peak memory 1.34 vs 1.26 GB
    (bench/bench_nb201_cli.py, bench/results/nb201-cli-all-cells-cpu.json). Skipped where the user sets glibc's
    MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ or the C library is not glibc. True when applied.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in GLIBC_THRESHOLD_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def device_option(text: str) -> str:
    """The type of --device: cpu, cuda or cuda:N, a CUDA one only where torch sees that GPU."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text} needs a visible CUDA GPU and torch sees none "
                                         "(torch.cuda.is_available() is False); use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: torch sees {torch.cuda.device_count()} CUDA GPU(s), "
                                         f"numbered from 0")
    return text


def seed_option(text: str) -> int:
    """The type of --seed: an integer torch.manual_seed takes, 0 <= seed < 2**63."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed < 2 ** 63:
        raise argparse.ArgumentTypeError(f"expected 0 <= seed < 2**63, got {seed}")
    return seed


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=device_option, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu, cuda or cuda:N; the default is cuda where torch sees a GPU, else cpu")


def add_common(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    parser.add_argument("--data", default="digits",
                        help="digits | cifar10:PATH | cifar100:PATH | imagefolder:PATH | synthetic[:N]")
    parser.add_argument("--out", required=out_required, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after an interruption")
    parser.add_argument("--seed", type=seed_option, default=0)
    add_device(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_step_options(parser: argparse.ArgumentParser) -> None:
    """How a super-network search computes its steps (not what it computes)."""
    parser.add_argument("--amp", choices=["off", "bf16"], default="off",
                        help="bf16: bfloat16 autocast of the training steps (fused ops accumulate in float32); "
                        "meant for CUDA GPUs, also runs on CPUs (slowly without native bfloat16)")
    parser.add_argument("--recompute", action=argparse.BooleanOptionalAction, default=None,
                        help="rebuild operator and depthwise outputs in backward instead of keeping them: about "
                        "0.55-0.6x the saved activations for 12-17%% more step time (fastnas's choice, default: "
                        "on; off on digits/synthetic, where a step saves about 0.1-0.2 GB)")



def space_options(args: argparse.Namespace) -> dict:
    """The student-space options given on the command line (--C, --N, --patch-size)."""
    given = {"C": args.C, "N": args.N, "patch_size": args.patch_size}
    return {name: value for name, value in given.items() if value is not None}


def add_preset_options(parser: argparse.ArgumentParser, command: str) -> None:
    """--preset and --show-config for `command`; call it after every other option of the command is added.

    Every option loses its argparse default (argparse.SUPPRESS), so an option given on the command line
    can be told apart from one left out; `apply_preset` then fills the rest from the preset or the
    option's own default. The help of each option states its default and the presets' values.
    """
    from ..presets import DEFAULT_PRESET, PRESETS

    presets = PRESETS[command]
    flag_defaults = {}
    for action in parser._actions:
        if not action.option_strings or action.default == argparse.SUPPRESS:
            continue  # positionals, --help
        values = {name: settings[action.dest].value for name, settings in presets.items()
                  if action.dest in settings}
        flag_defaults[action.dest] = action.default
        notes = ([] if action.default is None else [f"default: {action.default}"]) + \
            ([f"--preset {', '.join(f'{name}: {value}' for name, value in values.items())}"] if values else [])
        if notes:
            action.help = f"{action.help or ''} ({'; '.join(notes)})".lstrip()
        action.default = argparse.SUPPRESS
    parser.add_argument("--preset", choices=list(presets), default=DEFAULT_PRESET,
                        help="hyper-parameters of a paper's protocol (each value's source: --show-config); "
                        f"flags given here override them; {DEFAULT_PRESET}: fastnas's defaults for small data")
    parser.add_argument("--show-config", action="store_true",
                        help="print every setting with where it comes from (flag, preset and its source, "
                        "fastnas default) and exit")
    parser.set_defaults(preset_command=command, preset_flag_defaults=flag_defaults)


def apply_preset(args: argparse.Namespace) -> dict:
    """Fills the options `add_preset_options` left unset: the preset's value, else the option's default.

    Sets ``args.sources`` (option or config field -> where its value comes from) and returns the preset's
    settings that no option of the command takes (config fields such as the momentum), to pass to the config.
    """
    from ..presets import preset_settings

    settings = preset_settings(args.preset_command, args.preset)
    sources = {}  # options left at their default are not listed: format_config calls them fastnas defaults
    for dest, default in args.preset_flag_defaults.items():
        if hasattr(args, dest):
            sources[dest] = "flag"
        elif dest in settings:
            setattr(args, dest, settings[dest].value)
            sources[dest] = f"preset {args.preset}: {settings[dest].source}"
        else:
            setattr(args, dest, default)
    extras = {name: s.value for name, s in settings.items() if name not in args.preset_flag_defaults}
    sources.update({name: f"preset {args.preset}: {settings[name].source}" for name in extras})
    args.sources = sources
    return extras


def format_config(config: dict, sources: dict, command: str, preset: str) -> str:
    """Every setting of `config` (nested dicts flattened as ``outer.inner``) with its source, one a line."""
    from ..presets import NOT_APPLIED

    flat = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{inner}": v for inner, v in value.items()})
        else:
            flat[name] = value
    width = max(len(name) for name in flat)
    lines = [f"fastnas {command} --preset {preset}: every setting and where it comes from "
             "(flag: given on the command line; fastnas default: neither a flag nor the preset sets it)"]
    for name, value in flat.items():
        source = sources.get(name, sources.get(name.rpartition(".")[2], "fastnas default"))
        lines.append(f"  {name:<{width}}  {value!s:<12} {source}")
    for note in NOT_APPLIED.get((command, preset), []):
        lines.append(f"  not applied: {note}")
    return "\n".join(lines)
