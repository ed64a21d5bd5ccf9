"""One retraining step of DARTS_V2 at the CIFAR-10 protocol's size, to estimate a 600-epoch run.

The step is `fastnas train`'s own (fastnas.evaluators.trainer.train_step): forward of the CIFAR
evaluation network with its auxiliary head and drop-path, cross-entropy plus 0.4 times the auxiliary
loss, backward, gradient clipping at 5, SGD with momentum. Sizes: C = 36, 20 cells, batch 96, 32 x 32
images (quark0/darts cnn/train.py), drop-path probability 0.1 (the ramp's value half-way through).

Variants, each timed in the same run and given as a ratio of the fp32 one: fp32 (NCHW),
channels-last, bf16 autocast, bf16 + channels-last. A CIFAR-10 epoch is 50000 // 96 = 520 steps (drop
last); the JSON gives ``epoch_s`` and ``run_600_epochs_h`` from the median step, for the data loading
and evaluation that it leaves out are small beside the steps on a GPU (not measured here).

`pytest bench/bench_train_step.py` times the fp32 step (CI: --benchmark-disable, a tiny network:
the checks only). Running the file writes the comparison as JSON:

    python bench/bench_train_step.py [--device cuda] [--variants fp32,channels-last,bf16,bf16-channels-last]
                                     [--C 36] [--layers 20] [--batch 96] [--steps 20] [--out FILE]
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

import fastnas
from fastnas.cli.train import build_genotype_network
from fastnas.distill import make_kd_loss
from fastnas.evaluators import TrainConfig
from fastnas.evaluators.trainer import train_step
from fastnas.search_spaces.genotypes import load_genotype

CIFAR10_TRAIN_IMAGES = 50000
VARIANTS = {"fp32": dict(), "channels-last": dict(channels_last=True), "bf16": dict(amp="bf16"),
            "bf16-channels-last": dict(amp="bf16", channels_last=True)}


class TrainStep:
    """A DARTS_V2 evaluation network, its SGD optimizer and one random batch; `run()` is one training step."""

    def __init__(self, C: int = 36, layers: int = 20, batch: int = 96, size: int = 32, device: str = "cpu",
                 variant: str = "fp32", seed: int = 0):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.config = TrainConfig(lr=0.025, auxiliary_weight=0.4, **VARIANTS[variant])
        self.net = build_genotype_network(load_genotype("DARTS_V2"), C, layers, 10, 3, "cifar", auxiliary=True)
        self.net.to(self.device).train()
        if self.config.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.net.drop_path_prob = 0.1
        self.kd_loss = make_kd_loss("none").to(self.device)
        self.params = list(self.net.parameters())
        self.optimizer = torch.optim.SGD(self.params, 0.025, momentum=0.9, weight_decay=3e-4)
        self.images = torch.randn(batch, 3, size, size, device=self.device)
        self.labels = torch.randint(0, 10, (batch,), device=self.device)

    def run(self) -> torch.Tensor:
        sums = train_step(self.net, self.kd_loss, None, self.optimizer, self.params, self.images, self.labels,
                          self.config, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return sums


def measure(C: int, layers: int, batch: int, device: str, steps: int, variants: tuple[str, ...]) -> dict:
    """Median seconds per step of each variant, interleaved (one step of each per round) after 3 warm-up steps."""
    prepared = {name: TrainStep(C, layers, batch, device=device, variant=name) for name in variants}
    for step in prepared.values():
        for _ in range(3):
            step.run()
    times = {name: [] for name in variants}
    for _ in range(steps):
        for name, step in prepared.items():
            started = time.perf_counter()
            step.run()
            times[name].append(time.perf_counter() - started)
    steps_per_epoch = CIFAR10_TRAIN_IMAGES // batch
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_step_s": median, "step_s": values, "epoch_s": median * steps_per_epoch,
                         "run_600_epochs_h": median * steps_per_epoch * 600 / 3600}
    baseline = results[variants[0]]["median_step_s"]
    return {"shapes": dict(C=C, layers=layers, batch=batch, size=32), "device": device,
            "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.machine(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "torch": torch.__version__,
            "build": fastnas.build_info(), "steps_per_epoch": steps_per_epoch, **results,
            "ratios_to_" + variants[0]: {name: r["median_step_s"] / baseline for name, r in results.items()}}


# ------------------------------------------------------------------ pytest-benchmark

BENCH_SHAPES = dict(C=36, layers=20, batch=96)
TEST_SHAPES = dict(C=4, layers=5, batch=4)  # CI (--benchmark-disable): the checks only


def test_train_step_runs_every_part():
    """A step trains the auxiliary head and moves every weight; drop-path draws from the global RNG."""
    step = TrainStep(**TEST_SHAPES)
    before = {name: p.detach().clone() for name, p in step.net.named_parameters()}
    loss, _, _, seen = step.run().tolist()
    assert seen == TEST_SHAPES["batch"] and loss > 0
    moved = {name for name, p in step.net.named_parameters() if not torch.equal(p, before[name])}
    assert any("auxiliary" in name for name in moved) and len(moved) == len(before)


@pytest.mark.parametrize("variant", ["fp32", "channels-last"])
def test_train_step(benchmark, variant):
    shapes = TEST_SHAPES if benchmark.disabled else BENCH_SHAPES
    step = TrainStep(**shapes, variant=variant)
    benchmark.group = "train-step-darts-v2"
    benchmark.extra_info.update(shapes, variant=variant)
    benchmark(step.run)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--C", type=int, default=36)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default=None,
                        help=f"from {','.join(VARIANTS)}; the first is the baseline of the ratios. Default: "
                        "fp32,channels-last on a CPU (bf16 is slow without native support), all four on CUDA")
    parser.add_argument("--out", default=None, help="JSON file (default: print only)")
    args = parser.parse_args()
    variants = args.variants or (",".join(VARIANTS) if args.device.startswith("cuda") else "fp32,channels-last")
    unknown = set(variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; expected names from {', '.join(VARIANTS)}")
    text = json.dumps(measure(args.C, args.layers, args.batch, args.device, args.steps, tuple(variants.split(","))),
                      indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
