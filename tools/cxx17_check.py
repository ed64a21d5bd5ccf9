"""Syntax-only compile of every csrc translation unit at -std=c++17 against the oldest supported torch's headers.

torch 2.14's extension builder compiles at C++20 and torch 2.11's at C++17 (setup.py passes no -std), so a
C++20-only construct (std::bit_cast, <span>, designated initialisers' relatives...) builds here on 2.14 and
breaks the build on a machine with 2.11. This check makes it fail here: the .cpp files through the host
compiler with -fsyntax-only, the .cu files through nvcc's front ends (--cuda, device code stopped after
its syntax check) and then the host compiler with -fsyntax-only on what nvcc hands it. Flags, macros and
sources come from setup.py; the headers from torch's wheel (tools/torch_headers.py, cached).

Exit status: 0 when every file compiles, or with a SKIPPED line when there is no network to fetch the
headers (and no --include); 1 when a file does not compile; 2 when the headers cannot be fetched otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import torch_headers  # noqa: E402

OLDEST_TORCH = "2.11.0"  # setup.py: install_requires torch>=2.11
CHECK_ARCH = "sm_90"  # any one architecture will do for a syntax check
# What torch's extension builder adds for every extension (torch/utils/cpp_extension.py, 2.11 and 2.14).
TORCH_EXTENSION_MACROS = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", "-D_GLIBCXX_USE_CXX11_ABI=1"]


def load_setup_py():
    spec = importlib.util.spec_from_file_location("fastnas_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() runs only as __main__
    return module


def header_flags(include: Path, extra: list[str]) -> list[str]:
    folders = [include, include / "torch" / "csrc" / "api" / "include", Path(sysconfig.get_paths()["include"])]
    return [f"-I{folder}" for folder in folders] + [f"-I{folder}" for folder in extra]


def macro_flags(macros: list[tuple[str, str]]) -> list[str]:
    return TORCH_EXTENSION_MACROS + [f"-D{name}={value}" for name, value in macros]


def host_command(cxx: str, source: str, flags: list[str], cxx_flags: list[str]) -> list[str]:
    return [cxx, "-std=c++17", "-fsyntax-only", *cxx_flags, *flags, source]


def cuda_commands(nvcc: str, cxx: str, source: str, flags: list[str], nvcc_flags: list[str],
                  scratch: Path) -> list[list[str]]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    host_code = scratch / (Path(source).name + ".cpp.ii")
    return [[nvcc, "-std=c++17", "--cuda", "-fdevice-syntax-only", f"-arch={CHECK_ARCH}", *COMMON_NVCC_FLAGS,
             *nvcc_flags, *flags, source, "-o", str(host_code)],
            [cxx, "-std=c++17", "-fsyntax-only", "-x", "c++", str(host_code)]]


def run_all(commands: list[list[str]]) -> tuple[bool, str]:
    """Runs the commands in order until one fails: (all passed, the failing one's output)."""
    for command in commands:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            return False, f"$ {' '.join(command)}\n{done.stdout}{done.stderr}"
    return True, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default=OLDEST_TORCH, help=f"torch release whose headers to use ({OLDEST_TORCH})")
    parser.add_argument("--include", type=Path, help="an existing torch include/ folder instead of fetching one")
    parser.add_argument("--jobs", type=int, default=1, help="files compiled at once (1)")
    parser.add_argument("--no-cuda", action="store_true", help="leave out the .cu files")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive count, got {args.jobs}")

    include = args.include
    if include is None:
        try:
            include = torch_headers.fetch_headers(args.torch)
        except torch_headers.NoNetwork as error:
            print(f"cxx17-check: SKIPPED (no network: {error}): csrc was not compiled at C++17 against torch "
                  f"{args.torch}'s headers")
            return 0
        except Exception as error:  # anything else must fail loudly: a wrong URL, a broken transfer...
            print(f"cxx17-check: error: cannot fetch torch {args.torch}'s headers: {error}", file=sys.stderr)
            return 2
    if not (include / "torch" / "extension.h").is_file():
        print(f"cxx17-check: error: --include: expected a torch include/ folder (with torch/extension.h), "
              f"got {include}", file=sys.stderr)
        return 2

    setup_py = load_setup_py()
    cxx = shutil.which("c++") or shutil.which("g++")
    cuda_home = None if args.no_cuda else setup_py.find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # before torch.utils.cpp_extension is imported (it reads it once)
    arch_list = "9.0" if cuda_home else None  # the macros of a CUDA build, so module.cpp's CUDA branch is read too
    flags = macro_flags(setup_py.define_macros(arch_list)) + header_flags(
        include, setup_py.wheel_cuda_includes() if cuda_home else [])
    with tempfile.TemporaryDirectory(prefix="fastnas-cxx17-") as scratch:
        jobs = {source: [host_command(cxx, source, flags, setup_py.CXX_FLAGS)] for source in setup_py.cpp_sources()}
        if cuda_home:
            nvcc = str(Path(cuda_home) / "bin" / "nvcc")
            for source in setup_py.cuda_sources():
                jobs[source] = cuda_commands(nvcc, cxx, source, flags, setup_py.NVCC_FLAGS, Path(scratch))
        with ThreadPoolExecutor(args.jobs) as pool:
            results = dict(zip(jobs, pool.map(run_all, jobs.values())))
    failed = [source for source, (ok, _) in results.items() if not ok]
    for source, (ok, output) in results.items():
        print(f"cxx17-check: {'ok' if ok else 'FAILED'} {source}")
        if not ok:
            print(output[-6000:])
    where = f"against torch {args.torch}'s headers ({include})"
    if not cuda_home:
        print("cxx17-check: no CUDA toolkit found (or --no-cuda): the .cu files were not checked")
    if failed:
        print(f"cxx17-check: FAILED: {len(failed)} of {len(results)} files do not compile at -std=c++17 {where}")
        return 1
    print(f"cxx17-check: all {len(results)} files compile at -std=c++17 {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
