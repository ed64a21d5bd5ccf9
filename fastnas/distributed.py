"""Data-parallel search under torchrun: one process per device, the global batch split between them.

`torchrun --nproc_per_node N -m fastnas dnad ...` starts N processes with
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR set; `Distributed.from_env` joins them
(NCCL on GPUs, gloo on CPUs). Every rank draws the same global batch (batches
depend on (seed, epoch) only), keeps its contiguous share of it, and after the
backward the gradients of the network weights *and* of the architecture
parameters are averaged in one all-reduce. All ranks then apply the same update
to the same values, so weights, alphas and every decision taken from them
(DNAD's pruning, the stop rule, the genotype) stay identical on every rank
without further messages. Only rank 0 writes the run folder.

Why not DistributedDataParallel: DNAD removes operators (and their parameters)
from the network while it trains, which DDP's fixed buckets do not allow; one
flat all-reduce per step is what DDP would do for these small networks anyway.

BatchNorm statistics are per rank (as with DDP without SyncBatchNorm): one
step with N ranks equals a single process that averages the losses of the N
shards, each normalized with its own batch statistics. Running statistics are
taken from rank 0 (`broadcast_buffers`) before evaluating or saving.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn


PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class Distributed:
    """This process's place among the data-parallel ranks (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device: str | torch.device) -> "Distributed":
        """Joins the process group torchrun describes in the environment, if any.

        On CUDA each rank uses GPU ``LOCAL_RANK`` (the caller should move its work to `device_for`).
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            # Ranks wait for each other at barriers after uneven work (rank 0 training the built-in
            # teacher; bench-gt shards that distill students of different sizes): NCCL's default
            # 10-minute timeout would abort them, so allow PROCESS_GROUP_TIMEOUT.
            if torch.device(device).type == "cuda":
                torch.cuda.set_device(local_rank)
                # device_id binds the group to this rank's GPU (else NCCL guesses it at the first barrier)
                dist.init_process_group("nccl", timeout=PROCESS_GROUP_TIMEOUT,
                                        device_id=torch.device("cuda", local_rank))
            else:
                dist.init_process_group("gloo", timeout=PROCESS_GROUP_TIMEOUT)
        return cls(rank, world_size, local_rank)

    def device_for(self, device: str | torch.device) -> torch.device:
        """`device` with this rank's GPU index on CUDA (one GPU per local rank)."""
        device = torch.device(device)
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.enabled else device

    def shard(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous share (along dim 0) of tensors holding the global batch."""
        if not self.enabled:
            return tensors
        batch = tensors[0].shape[0]
        if batch < self.world_size:
            raise ValueError(f"batch_size: a global batch of {batch} cannot be split over {self.world_size} ranks")
        return tuple(t.tensor_split(self.world_size)[self.rank] for t in tensors)

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replaces each tensor in place by its mean over the ranks (one flat all-reduce for the list)."""
        if not self.enabled or not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        for t, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(chunk.view_as(t))

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Replaces each parameter's .grad by its mean over the ranks.

        A parameter without a gradient on this rank counts as zero, so every rank ends with a gradient
        for every parameter and the optimizers stay in step.
        """
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        self.average([p.grad for p in params])

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The rows of every rank's `tensor` (its share of the global batch), concatenated in rank order.

        Tensor collectives (no pickling): the shares of a tensor_split differ by at most one row, so
        each is padded to the largest for one all_gather, after one all_gather of the row counts.
        """
        if not self.enabled:
            return tensor
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        local = tensor.detach().to(device)
        counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world_size)]
        dist.all_gather(counts, torch.tensor([local.shape[0]], device=device))
        rows = [int(count) for count in counts]
        padded = local.new_zeros((max(rows), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, rows)]).to(tensor.device)

    def average_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean of each (rank-local) scalar metric over the ranks."""
        if not self.enabled:
            return metrics
        values = torch.tensor(list(metrics.values()), dtype=torch.float64)
        if dist.get_backend() == "nccl":
            values = values.cuda()
        dist.all_reduce(values)
        return dict(zip(metrics, (values / self.world_size).tolist()))

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Copies rank 0's buffers (BatchNorm running statistics) to every rank."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def main_first(self, work):
        """Runs `work()` on rank 0 first, then on the others (e.g. training and caching the built-in teacher once)."""
        if not self.is_main:
            self.barrier()
        result = work()
        if self.is_main:
            self.barrier()
        return result
