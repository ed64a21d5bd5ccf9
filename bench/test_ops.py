"""Op benchmarks (pytest-benchmark): fused vs eager vs torch.compile over fastnas.benchmarks.grid.

`make bench` times them and prints the ratios; CI runs this file with
--benchmark-disable, where every case still checks fused against eager once.
"""

import pytest
import torch

from fastnas import benchmarks

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and benchmarks.ops.build_info()["with_cuda"] else [])
CASES = benchmarks.grid(DEVICES)


@pytest.mark.parametrize("impl", ["fused", "eager", "compiled"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_op(benchmark, case, impl):
    if impl == "compiled" and benchmark.disabled:
        pytest.skip("torch.compile is timed only when benchmarking (compiling takes minutes on a CPU)")
    impls, check = case.build()
    if impl not in impls:
        pytest.skip(f"{case.op} has no {impl} implementation")
    if impl == "fused":
        check()
    benchmark.group = case.name
    benchmark.extra_info.update(case.info(), impl=impl)
    if case.device.startswith("cuda"):
        fn = impls[impl]

        def step():
            fn()
            torch.cuda.synchronize()
        benchmark(step)
    else:
        benchmark(impls[impl])
