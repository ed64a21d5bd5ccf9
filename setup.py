"""Build of fastnas and its compiled core fastnas._C.

CPU kernels are always built. CUDA kernels are built when FASTNAS_CUDA=1, or
with FASTNAS_CUDA=auto (the default) when torch is a CUDA build and a CUDA
toolkit is found: $CUDA_HOME, else the toolkit behind the `nvcc` on PATH (asked
with `nvcc --dryrun`, since nvcc may be a wrapper script outside the toolkit).
The CUDA architectures are TORCH_CUDA_ARCH_LIST, else those of the visible GPUs
(as torch's extension builder derives them), else DEFAULT_ARCH_LIST; the list
compiled is recorded in the build (fastnas.build_info()["cuda_arch_list"]).
No -std flag is passed: torch's builder picks it (C++17 up to torch 2.13's,
C++20 from 2.14's), so csrc must compile at both (`make cxx17-check`).
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

VERSION = "0.1.0"
# Without a visible GPU: machine code for the A100 (8.0) and the H100/H200 (9.0), and 9.0's PTX, which
# the driver compiles at load time for any newer GPU (fastnas's choice; torch's own default is the
# visible GPUs' architectures, which a GPU-less machine does not have).
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
# at::parallel_for is a header template whose `omp parallel` is compiled into our
# code: without -fopenmp every parallel loop of the CPU kernels runs on one thread.
CXX_FLAGS = ["-O3", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--expt-relaxed-constexpr"]


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME if it holds bin/nvcc, else where `nvcc` really lives."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return home
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        dryrun = subprocess.run([nvcc, "--dryrun", "-c", "probe.cu"], capture_output=True, text=True,
                                timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    top = re.search(r"^#\$ TOP=(.+)$", dryrun, re.MULTILINE)
    home = os.path.realpath(top.group(1).strip()) if top else os.path.dirname(os.path.dirname(nvcc))
    return home if os.path.exists(os.path.join(home, "bin", "nvcc")) else None


def want_cuda() -> bool:
    import torch

    choice = os.environ.get("FASTNAS_CUDA", "auto").lower()
    if choice not in ("0", "1", "auto"):
        raise SystemExit(f"FASTNAS_CUDA: expected 0, 1 or auto, got {choice!r}")
    if choice == "0":
        return False
    home = find_cuda_home()
    if choice == "1" and (home is None or torch.version.cuda is None):
        raise SystemExit("FASTNAS_CUDA=1 but " + ("no CUDA toolkit was found (set CUDA_HOME)"
                         if home is None else f"torch {torch.__version__} is a CPU-only build"))
    if home is None or torch.version.cuda is None:
        return False
    # torch.utils.cpp_extension reads CUDA_HOME once, at import: set it first.
    os.environ["CUDA_HOME"] = home
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
    return True


def compiled_arch_list() -> str:
    """The architectures torch's extension builder compiles for, as a TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX").

    Read back from the -gencode flags it makes (from TORCH_CUDA_ARCH_LIST, or with none set from the
    visible GPUs, torch/utils/cpp_extension.py::_get_cuda_arch_flags), so named lists ("Hopper") and
    derived ones are recorded as what was really compiled: "X.Y" machine code, "+PTX" PTX of X.Y.
    """
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    machine_code, ptx = set(), set()
    for kind, digits, suffix in re.findall(r"code=(sm|compute)_(\d+)([a-z]?)", " ".join(_get_cuda_arch_flags())):
        (machine_code if kind == "sm" else ptx).add((int(digits[:-1]), int(digits[-1]), suffix))
    return ";".join(f"{major}.{minor}{suffix}" + ("+PTX" if (major, minor, suffix) in ptx else "")
                    for major, minor, suffix in sorted(machine_code | ptx))


def wheel_cuda_includes() -> list[str]:
    """Header folders of the CUDA libraries that torch's wheels ship (cuSPARSE, cuBLAS...).

    ATen's CUDA headers include them, and a toolkit holding only the compiler lacks them.
    """
    import torch

    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "include"))
                  if os.path.exists(os.path.join(d, "cusparse.h")))


def extensions():
    with_cuda = want_cuda()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    sources = cpp_sources()
    if not with_cuda:
        return [CppExtension("fastnas._C", sources, define_macros=define_macros(None),
                             extra_compile_args={"cxx": CXX_FLAGS}, extra_link_args=LINK_FLAGS)]
    arch_list = compiled_arch_list()
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list  # the same flags again when torch builds, and in the log
    print(f"fastnas: CUDA kernels for TORCH_CUDA_ARCH_LIST={arch_list}", file=sys.stderr)
    return [CUDAExtension("fastnas._C", sources + cuda_sources(), define_macros=define_macros(arch_list),
                          include_dirs=wheel_cuda_includes(),
                          extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS}, extra_link_args=LINK_FLAGS)]


def cpp_sources() -> list[str]:
    return sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))


def cuda_sources() -> list[str]:
    return sorted(glob.glob("csrc/cuda/*.cu"))


def define_macros(arch_list: str | None) -> list[tuple[str, str]]:
    """The -D macros of the build; arch_list is None for a CPU-only build."""
    macros = [("FASTNAS_VERSION", f'"{VERSION}"')]
    if arch_list is not None:
        macros += [("FASTNAS_WITH_CUDA", "1"), ("FASTNAS_CUDA_ARCH_LIST", f'"{arch_list}"')]
    return macros


def main():
    ext_modules = extensions()  # first: it sets CUDA_HOME, which cpp_extension reads on import
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="fastnas",
        version=VERSION,
        description="Fused C++/CUDA core and methods for NAS with knowledge distillation",
        packages=find_packages(include=["fastnas", "fastnas.*"]),
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension},
        python_requires=">=3.10",
        install_requires=["torch>=2.11", "numpy", "scipy", "tqdm", "matplotlib", "scikit-learn"],
        # NAS-Bench-201 from the official NATS-Bench files (fastnas.nasbench.read_nats, fastnas nasbench export)
        extras_require={"nasbench": ["nats_bench"]},
        entry_points={"console_scripts": ["fastnas=fastnas.cli:run"]},
    )


if __name__ == "__main__":
    main()
