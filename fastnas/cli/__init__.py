"""The `fastnas` command line, one module per command (or pair of related commands).

``main(argv)`` raises on bad input, for callers and tests; ``run(argv)``, the
console entry point, turns bad input into one line, ``fastnas <cmd>: error: ...``,
and exit status 2 (``--debug`` anywhere on the line shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import autodas, bench, bench_gt, dnad, proxies, sddarts, train

# Errors that mean "the input is wrong", each raised with a message naming the argument. Anything
# else is a bug in fastnas and keeps its traceback.
USER_ERRORS = (ValueError, OSError, LookupError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnas", description="Neural architecture search with knowledge "
                                     "distillation on a fused C++/CUDA core (DNAD, SD-DARTS, Auto-DAS).")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error "
                        "(accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (dnad, train, bench_gt, sddarts, bench, autodas, proxies):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; bad input raises (ValueError, OSError...) with a message naming the argument."""
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


def run(argv: list[str] | None = None) -> int:
    """The console entry point: main(), with bad input reported in one line and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    words = [arg for arg in argv if not arg.startswith("-")]
    command = " ".join(words[:2] if words[:1] == ["autodas"] else words[:1])
    try:
        return main(argv)
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"{f'fastnas {command}'.strip()}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastnas: interrupted; a search continues with the same command and --resume", file=sys.stderr)
        return 130
