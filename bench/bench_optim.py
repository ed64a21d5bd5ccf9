"""DNAD's weight optimizer step alone: torch.optim.Adam(fused=True) against fastnas.nn.optim.SharedStepAdam.

The parameters are those of the DNAD super-network the search trains (8 cells, C = 16, the authors'
three CIFAR operators: ~730 tensors), with fixed random gradients; both optimizers have the search's
settings (lr 5e-4, betas (0.5, 0.999), weight decay 3e-4). One run alternates the two, --rounds times
--steps steps each, and reports each one's median step time, their ratio and the aten calls per step
(profiler). `pytest bench/bench_optim.py` checks the values agree (CI: --benchmark-disable). Run the
file for the JSON:

    OMP_NUM_THREADS=1 python bench/bench_optim.py [--threads 1] [--rounds 5] [--steps 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import pytest
import torch

from fastnas.nn.optim import SharedStepAdam
from fastnas.search_spaces import SuperNetwork
from fastnas.strategies.dnad import AUTHORS_CIFAR_OPS

OPTIMIZERS = {"torch-fused-adam": lambda params: torch.optim.Adam(params, 5e-4, betas=(0.5, 0.999),
                                                                  weight_decay=3e-4, fused=True),
              "shared-step-adam": lambda params: SharedStepAdam(params, 5e-4, betas=(0.5, 0.999),
                                                                weight_decay=3e-4)}


def dnad_parameters(C: int = 16, layers: int = 8, seed: int = 0) -> list[torch.Tensor]:
    """The DNAD super-network's weight parameters, each with a fixed random gradient."""
    torch.manual_seed(seed)
    net = SuperNetwork(C, 10, layers, 4, AUTHORS_CIFAR_OPS, in_channels=3, mode="relu_norm", alpha_per_cell=True,
                       alpha_init=2.0)
    params = net.weight_parameters()
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def aten_calls(optimizer: torch.optim.Optimizer) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        optimizer.step()
    return sum(e.name.startswith("aten::") for e in prof.events())


def measure(rounds: int, steps: int) -> dict:
    params = {name: dnad_parameters() for name in OPTIMIZERS}
    optimizers = {name: make(params[name]) for name, make in OPTIMIZERS.items()}
    times: dict[str, list[float]] = {name: [] for name in OPTIMIZERS}
    for optimizer in optimizers.values():  # state created outside the timing
        optimizer.step()
    for _ in range(rounds):
        for name, optimizer in optimizers.items():
            for _ in range(steps):
                start = time.perf_counter()
                optimizer.step()
                times[name].append(time.perf_counter() - start)
    difference = max((a - b).abs().max().item() for a, b in zip(*params.values()))
    rows = {name: {"median_step_ms": statistics.median(t) * 1e3, "aten_calls": aten_calls(optimizers[name])}
            for name, t in times.items()}
    baseline, ours = rows["torch-fused-adam"], rows["shared-step-adam"]
    return {"tensors": len(params["torch-fused-adam"]),
            "elements": sum(p.numel() for p in params["torch-fused-adam"]), "rows": rows,
            "speedup": baseline["median_step_ms"] / ours["median_step_ms"],
            "calls_ratio": ours["aten_calls"] / baseline["aten_calls"], "max_abs_difference": difference}


def test_same_parameters_after_steps():
    result = measure(rounds=1, steps=3)
    assert result["max_abs_difference"] == 0.0
    assert result["rows"]["shared-step-adam"]["aten_calls"] < result["rows"]["torch-fused-adam"]["aten_calls"]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_step(benchmark, name):
    optimizer = OPTIMIZERS[name](dnad_parameters())
    benchmark(optimizer.step)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"threads": args.threads, "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "load_average": list(os.getloadavg()), **measure(args.rounds, args.steps)}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
