"""The `fastnas` command line, one module per command (or pair of related commands).

``main(argv)`` raises on bad input, for callers and tests; ``run(argv)``, the
console entry point, turns bad input into one line, ``fastnas <cmd>: error: ...``,
and exit status 2 (``--debug`` anywhere on the line shows the traceback instead).
A malformed command line (argparse's own errors) is one such line too, from
either function.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from .. import default_threads
from ..runs import RunWarning
from . import autodas, bench, bench_gt, dnad, nasbench, proxies, sddarts, train

# Errors that mean "the input is wrong", each raised with a message naming the argument (FloatingPointError: a
# training that diverged, e.g. "train: the test loss is NaN; lower --lr"). Anything else is a bug in fastnas and
# keeps its traceback.
USER_ERRORS = (ValueError, OSError, LookupError, FloatingPointError)


class Parser(argparse.ArgumentParser):
    """argparse, with a malformed command line reported in one line (the usage is what --help is for)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastnas", description="Neural architecture search with knowledge "
                    "distillation on a fused C++/CUDA core (DNAD, SD-DARTS, Auto-DAS).")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error "
                        "(accepted anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True)  # sub-parsers are Parser too (argparse's default)
    for module in (dnad, train, bench_gt, sddarts, bench, autodas, proxies, nasbench):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command; bad input raises (ValueError, OSError...) with a message naming the argument."""
    args = build_parser().parse_args(argv)
    default_threads()  # one CPU thread unless OMP_NUM_THREADS is set: see fastnas.default_threads
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


def command_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the (sub-)command `argv` names, e.g. that of "autodas search-proxy"; the top one if none."""
    parser = build_parser()
    for word in (arg for arg in argv if not arg.startswith("-")):
        commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if word not in commands:
            break
        parser = commands[word]
    return parser


def run(argv: list[str] | None = None) -> int:
    """The console entry point: main(), with bad input reported in one line and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    command = command_parser(argv)
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_run_warnings(command.prog, warnings.showwarning)
        try:
            return main(argv)
        except SystemExit as exit_:  # argparse, having printed --help (0) or a malformed command line (2)
            return exit_.code or 0
        except USER_ERRORS as error:
            if debug:
                raise
            print(f"{command.prog}: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, always
            return 2
        except KeyboardInterrupt:
            resumable = "--resume" in command._option_string_actions
            hint = "; the same command with --resume continues from the last checkpoint" if resumable else ""
            print(f"{command.prog}: interrupted{hint}", file=sys.stderr)
            return 130  # 128 + SIGINT, as shells report it


def _one_line_run_warnings(prog: str, show_other):
    """A warnings.showwarning that prints a RunWarning as `fastnas <cmd>: warning: ...` (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, RunWarning):
            print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            show_other(message, category, filename, lineno, file, line)

    return show
