"""SD-DARTS (Zhu et al., 2023): DARTS whose super-network is distilled from its own previous steps.

Plain DARTS is the same search with ``sd_lambda = 0``. Bi-level optimization as
in DARTS (quark0/darts): the training half of the data updates the network
weights (SGD, momentum 0.9, weight decay 3e-4, cosine lr 0.025 -> 0.001,
gradients clipped at 5), the validation half updates the alphas (Adam, betas
(0.5, 0.999), weight decay 1e-3). ``order=1`` uses the gradient of the
validation loss at the current weights; ``order=2`` the unrolled gradient at
w' = w - lr * (momentum buffer + grad + wd * w), whose second-order term is a
finite-difference Hessian-vector product, as architect.py computes it.

Self-distillation (the paper): the teacher is the super-network of the previous
time step; with voting, the K previous super-networks, whose output
probabilities are averaged. After ``warm_up`` epochs both losses (weights and
alphas: the paper updates "architecture and network parameters using the
combined loss") add ``sd_lambda * KL(teacher || student)``. Here
(``teacher_source="snapshot"``, the default) a teacher is a frozen copy of the
whole super-network (weights, alphas, BatchNorm buffers: SnapshotTeachers),
taken before each update, so at step t the teachers are the networks of steps
t-1 .. t-K; they run without gradients on the current batch. With order 2 they
hold the real weights, never the virtual w'. Cost: K copies of the network and
2K extra forward passes per step (a training and a validation batch).

``teacher_source="cache"`` keeps fastnas's earlier teacher, which is NOT the
paper's method (temporal ensembling): a ring of per-sample softened predictions
recorded in the K previous epochs (VotedTeacher), no extra forward pass.

Choices where the paper is silent (fastnas's choices, each a config field):
- a snapshot is refreshed every step (``teacher_refresh = 1``; every N steps
  with N > 1), "time step" read as an optimization step;
- the teachers run in train mode (batch statistics of the current batch, as
  the super-network computes during the search, the function the student's
  loss and the sharpness measure use) and their forward changes no BatchNorm
  buffer, neither theirs nor the student's;
- until K snapshots exist (the first K steps) the vote is over those there are;
  before the first, the KL term is 0;
- temperature 1 (the paper distills "output probabilities"; fastnas's
  earlier default was T = 2, without a T^2 factor); lambda = 1.0 is the paper's;
- warm-up = the first 20% of the epochs (the paper stresses a "sufficient"
  warm-up but its text gives no number);
- K = 2 (the paper compares K = 1 with voted K = 2);
- sharpness: the largest (algebraic) eigenvalue lambda_max of the Hessian of
  the validation cross-entropy w.r.t. the alphas on a fixed validation subset
  (the quantity SD-DARTS and Zela et al. plot), by Lanczos with full
  reorthogonalization and exact double-backward Hessian-vector products, from a
  random start drawn from (seed, epoch); the smallest eigenvalue and the one of
  largest magnitude are logged beside it (fastnas's earlier power iteration
  returned the largest magnitude, whose sign flips where lambda_min dominates);
- digits/synthetic preset (like DNAD's): C = 8, 5 cells, 10 epochs and alpha
  lr 3e-2: Adam moves an alpha by at most ~lr per step, and a digits search has
  100 steps where a CIFAR one has 19,550, so the DARTS lr 3e-4 would leave the
  alphas uniform (lr x steps: 3 here, 5.9 on CIFAR); batch 64 as DARTS. Other
  data: the DARTS CIFAR settings (C = 16, 8 cells, 50 epochs, alpha lr 3e-4).
"""

from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import ImageData, batches, num_batches, split
from ..distributed import Distributed
from ..evaluators import evaluate
from ..nn.darts_ops import DARTS_PRIMITIVES, check_primitives
from ..ops import clip_grad_norm_
from ..runs import RunFolder
from ..search_spaces.darts import SuperNetwork
from .base import Search, at_least_float32, check_amp
from .dnad import is_small


# ---------------------------------------------------------------------- the loss and the teachers


def self_distillation_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
                         has_teacher: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over samples of KL(teacher || softmax(student_logits / temperature)).

    student_logits: [B, classes]; teacher_probs: [B, classes] (already softened);
    has_teacher: bool [B] or None (all). Samples without a teacher are left out of
    the mean; with none at all the result is 0.
    """
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    per_sample = F.kl_div(log_student, teacher_probs, reduction="none").sum(1)  # xlogy: 0 where teacher is 0
    if has_teacher is None:
        return per_sample.mean()
    weights = has_teacher.to(per_sample.dtype)
    return (per_sample * weights).sum() / weights.sum().clamp(min=1.0)


@contextmanager
def frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Restores the buffers (BN running statistics) of `module` on exit: extra forward passes leave no trace."""
    saved = {name: b.clone() for name, b in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                b.copy_(saved[name])


def snapshot_bytes(module: nn.Module) -> int:
    """Bytes of the parameters and buffers of `module`: what one snapshot teacher holds."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


class SnapshotTeachers:
    """SD-DARTS's teachers: frozen copies of the super-network, the K most recent of those taken every
    `refresh` steps.

    A copy holds everything the network's forward reads (weights, alphas, BatchNorm buffers):
    copy.deepcopy for the first K, then the oldest copy is overwritten in place (load_state_dict), so a
    refresh copies the parameters once and allocates nothing. Memory: K x snapshot_bytes(network).
    """

    def __init__(self, window: int, refresh: int, temperature: float):
        self.window, self.refresh, self.temperature = window, refresh, temperature
        self.nets: list[nn.Module] = []  # oldest first
        self.taken_at: list[int] = []    # the step of each: the network as it was before update number `step`

    def take(self, net: nn.Module, step: int) -> None:
        """Snapshots `net` (before update `step`) when `step` is a multiple of `refresh`; keeps the last K."""
        if step % self.refresh:
            return
        if len(self.nets) < self.window:
            snapshot = _frozen_copy(net)
        else:
            snapshot = self.nets.pop(0)
            self.taken_at.pop(0)
            snapshot.load_state_dict(net.state_dict())
        self.nets.append(snapshot)
        self.taken_at.append(step)

    @torch.no_grad()
    def voted_probs(self, images: torch.Tensor) -> torch.Tensor | None:
        """Mean over the snapshots of softmax(logits / T) [B, classes] on `images` [B, C, H, W]; None before the
        first snapshot. Train mode (the current batch's statistics, fastnas's choice: the paper is silent), and
        the BatchNorm buffers stay as the snapshot took them."""
        if not self.nets:
            return None
        total = 0
        for net in self.nets:
            with frozen_buffers(net):
                total = total + F.softmax(at_least_float32(net(images)[0]) / self.temperature, dim=1)
        return total / len(self.nets)

    def nbytes(self) -> int:
        return sum(snapshot_bytes(net) for net in self.nets)

    def state_dict(self) -> dict:
        return {"nets": [net.state_dict() for net in self.nets], "taken_at": list(self.taken_at)}

    def load_state_dict(self, state: dict, like: nn.Module) -> None:
        """Restores the snapshots as copies of `like` (a network of the same structure) holding the saved states."""
        self.nets = []
        for saved in state["nets"]:
            snapshot = _frozen_copy(like)
            snapshot.load_state_dict(saved)
            self.nets.append(snapshot)
        self.taken_at = list(state["taken_at"])


def _frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of `net` (same device, dtype and values) whose parameters need and hold no gradient, in train mode."""
    snapshot = copy.deepcopy(net).train()
    for p in snapshot.parameters():
        p.requires_grad_(False)
        p.grad = None
    return snapshot


class VotedTeacher:
    """``teacher_source="cache"``, NOT the paper's teacher: the softened predictions of the K previous epochs
    for every sample of one split (temporal ensembling).

    A ring of K slots [K, N, classes]: the prediction made for sample i in epoch e
    goes to slot e % K, so slot e % K still holds epoch e - K for the samples not
    yet seen in epoch e. An entry counts as a teacher of epoch e if it was written
    in one of the epochs e - K .. e - 1.
    """

    def __init__(self, num_samples: int, num_classes: int, window: int, temperature: float):
        self.window, self.temperature = window, temperature
        self.probs = torch.zeros(window, num_samples, num_classes)
        self.written_in = torch.full((window, num_samples), -1, dtype=torch.long)

    def targets(self, index: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(voted probabilities [B, classes], has a teacher bool [B]) of the samples `index` [B]."""
        written = self.written_in[:, index]
        valid = ((written >= max(0, epoch - self.window)) & (written < epoch)).unsqueeze(-1)  # [K, B, 1]
        votes = valid.sum(0)
        voted = (self.probs[:, index] * valid).sum(0) / votes.clamp(min=1)
        return voted, votes.squeeze(-1) > 0

    def record(self, index: torch.Tensor, logits: torch.Tensor, epoch: int) -> None:
        """Stores softmax(logits / T) [B, classes] as epoch `epoch`'s prediction of the samples `index` [B]."""
        slot = epoch % self.window
        self.probs[slot, index] = F.softmax(logits.detach().float().cpu() / self.temperature, dim=1)
        self.written_in[slot, index] = epoch

    def state_dict(self) -> dict:
        return {"probs": self.probs, "written_in": self.written_in}

    def load_state_dict(self, state: dict) -> None:
        self.probs, self.written_in = state["probs"].clone(), state["written_in"].clone()


# ---------------------------------------------------------------------- second-order helpers


@contextmanager
def exact_float32_convolutions() -> Iterator[None]:
    """cuDNN float32 convolutions without TF32 inside the block (PyTorch allows TF32 for them by default,
    which rounds their inputs to 10 mantissa bits): a finite difference of two gradients that differ by
    O(r) needs the full float32 precision. No effect on the CPU."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False):
        yield


def finite_difference_jvp(grad_fn: Callable[[], list[torch.Tensor]], params: list[torch.Tensor],
                          vector: list[torch.Tensor], r: float = 1e-2) -> list[torch.Tensor]:
    """(grad_fn() at params + R v  -  grad_fn() at params - R v) / 2R with R = r / ||v|| (DARTS' choice).

    The derivative of grad_fn along v: with grad_fn the gradient of a loss w.r.t.
    some tensors A, this is the Hessian block d2 loss / dA dparams times v.
    `params` are modified in place and restored exactly.
    """
    norm = torch.sqrt(sum((v.double() ** 2).sum() for v in vector))
    R = r / max(norm.item(), 1e-12)
    originals = [p.detach().clone() for p in params]

    def shifted(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, p0, v in zip(params, originals, vector):
                p.copy_(p0 + sign * R * v)
        return grad_fn()

    with exact_float32_convolutions():
        plus, minus = shifted(1.0), shifted(-1.0)
    with torch.no_grad():
        for p, p0 in zip(params, originals):
            p.copy_(p0)
    return [(a - b) / (2 * R) for a, b in zip(plus, minus)]


@dataclass
class HessianSpectrum:
    """The extreme eigenvalues of a Hessian estimated by Lanczos (lanczos_extremes).

    lambda_max, lambda_min: the largest and smallest (algebraic) Ritz values; residual_max, residual_min:
    ||H y - lambda y|| of their unit Ritz vectors y, each a bound on the distance from that Ritz value to an
    eigenvalue of H; top_vector: lambda_max's Ritz vector [n] (float64); steps: Lanczos steps taken, one
    Hessian-vector product each (fewer than asked when the Krylov space became invariant: the values are
    then exact up to rounding).
    """

    lambda_max: float
    lambda_min: float
    residual_max: float
    residual_min: float
    top_vector: torch.Tensor
    steps: int

    @property
    def max_abs(self) -> float:
        """The eigenvalue of largest magnitude, with its sign (what power iteration converges to)."""
        return self.lambda_max if abs(self.lambda_max) >= abs(self.lambda_min) else self.lambda_min


def lanczos_extremes(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor,
                     steps: int) -> HessianSpectrum:
    """Lanczos with full reorthogonalization on the symmetric operator `matvec` ([n] -> [n]) from `start` [n].

    After m steps the basis Q [m, n] spans the Krylov space of `start`; the eigenvalues of the tridiagonal
    T = Q H Q^T (Ritz values) approximate H's from both ends of the spectrum at once, so one run gives the
    largest and the smallest eigenvalue. Every new vector is orthogonalized against the whole basis, twice
    (classical Gram-Schmidt "twice is enough"), so no spurious copies of converged Ritz values appear: cheap
    for the few hundred alphas of a DARTS space. The basis and T are float64 whatever matvec's dtype.
    """
    n = start.numel()
    steps = min(steps, n)  # the Krylov space has at most n dimensions
    basis = torch.zeros(steps, n, dtype=torch.float64, device=start.device)
    diagonal, off_diagonal = [], []
    scale = 0.0  # the largest |entry| of T so far
    q = start.detach().double().flatten()
    q = q / q.norm()
    for j in range(steps):
        basis[j] = q
        w = matvec(q).detach().double().flatten()
        diagonal.append(torch.dot(q, w))
        for _ in range(2):  # removes alpha_j q_j and beta_{j-1} q_{j-1} too: the three-term recurrence
            w = w - basis[:j + 1].T @ (basis[:j + 1] @ w)
        off_diagonal.append(w.norm())
        scale = max(scale, abs(diagonal[-1].item()), off_diagonal[-1].item())
        if j + 1 == steps or off_diagonal[-1] <= 1e-12 * scale:
            break  # the last step, or an invariant Krylov space: T's eigenvalues are H's
        q = w / off_diagonal[-1]
    m = len(diagonal)
    tridiagonal = torch.diag(torch.stack(diagonal))
    if m > 1:
        beta = torch.stack(off_diagonal[:-1])
        tridiagonal = tridiagonal + torch.diag(beta, 1) + torch.diag(beta, -1)
    ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal)
    # ||H y_i - theta_i y_i|| = beta_m |s_{m-1, i}| for the Ritz vector y_i = Q^T s_i
    residuals = off_diagonal[-1] * ritz_vectors[-1].abs()
    return HessianSpectrum(lambda_max=ritz_values[-1].item(), lambda_min=ritz_values[0].item(),
                           residual_max=residuals[-1].item(), residual_min=residuals[0].item(),
                           top_vector=basis[:m].T @ ritz_vectors[:, -1], steps=m)


def hessian_spectrum(loss_fns: list[Callable[[], torch.Tensor]], params: list[torch.Tensor], steps: int,
                     start: torch.Tensor) -> HessianSpectrum:
    """The extreme eigenvalues of the Hessian of sum(loss_fn() for loss_fn in loss_fns) w.r.t. `params`, by
    lanczos_extremes from `start` (flat [sum of numels]).

    Each Hessian-vector product is exact: double backward (the gradient with create_graph, then the
    gradient of its dot product with v), one loss's graph in memory at a time, so each product costs per
    loss a forward, a backward with graph and a double backward. Not a finite difference of gradients: a
    network of ReLUs and max-pools is only piecewise smooth in its alphas, and with many samples its kinks
    lie closer than DARTS' radius 0.01 (docs/sddarts.md), so such a difference measures something else.
    """
    def matvec(vector: torch.Tensor) -> torch.Tensor:
        directions = [piece.view_as(p).to(p.dtype) for piece, p in
                      zip(vector.split([p.numel() for p in params]), params)]
        product = [torch.zeros_like(p) for p in params]
        with exact_float32_convolutions():  # TF32 would round the convolutions' inputs to 10 mantissa bits
            for loss_fn in loss_fns:
                grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
                along = sum((g * d).sum() for g, d in zip(grads, directions))
                for total, part in zip(product, torch.autograd.grad(along, params)):
                    total += part
        return torch.cat([h.flatten() for h in product])

    return lanczos_extremes(matvec, start, steps)


def sharpness_fields(spectrum: HessianSpectrum | None) -> dict[str, float | None]:
    """The epoch record's sharpness columns: sharpness = lambda_max, beside lambda_min, the eigenvalue of
    largest magnitude and lambda_max's residual bound (all None on an epoch without a measurement)."""
    if spectrum is None:
        return dict.fromkeys(("sharpness", "sharpness_min", "sharpness_max_abs", "sharpness_residual"))
    return {"sharpness": spectrum.lambda_max, "sharpness_min": spectrum.lambda_min,
            "sharpness_max_abs": spectrum.max_abs, "sharpness_residual": spectrum.residual_max}


def alpha_entropy(alphas: list[torch.Tensor]) -> float:
    """Mean entropy (nats) of the softmax over the operators of each edge; log(K) at the start of a search."""
    probs = torch.cat([F.softmax(a.detach(), dim=-1) for a in alphas])
    return -(probs * torch.log(probs.clamp(min=1e-30))).sum(-1).mean().item()


# ---------------------------------------------------------------------- the search

TEACHER_SOURCES = ("snapshot", "cache")


@dataclass
class SDDARTSConfig:
    data: str = "digits"
    ops: tuple[str, ...] = DARTS_PRIMITIVES
    C: int | None = None              # None: 16 (DARTS), 8 on digits/synthetic
    layers: int | None = None         # None: 8 (DARTS), 5 on digits/synthetic
    nodes: int = 4
    batch_size: int = 64              # DARTS
    epochs: int | None = None         # None: 50 (DARTS), 10 on digits/synthetic
    order: int = 1                    # 1: first-order, 2: unrolled (DARTS' --unrolled)
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float | None = None      # None: 3e-4 (DARTS), 3e-2 on digits/synthetic
    arch_weight_decay: float = 1e-3
    train_fraction: float = 0.5       # DARTS: half of the training data trains weights, half alphas
    sd_lambda: float = 1.0            # 0: plain DARTS; 1.0 is the paper's
    teachers: int = 2                 # K, the voting window; 1 = plain SD. fastnas's choice (paper: K = 1 vs 2)
    teacher_source: str = "snapshot"  # snapshot: the paper's teachers | cache: fastnas's old per-sample cache
    teacher_refresh: int = 1          # steps between snapshots (fastnas's choice: every step)
    temperature: float = 1.0          # fastnas's reading of the paper's "output probabilities"; no T^2 factor
    warm_up: int | None = None        # None: the first 20% of the epochs (fastnas's choice; the paper gives none)
    sharpness_every: int = 5          # epochs between sharpness measurements (and always at the end)
    sharpness_samples: int = 32       # fastnas's choice (cost): the first 32 validation samples, fixed
    sharpness_iterations: int = 8     # Lanczos steps, one Hessian-vector product each (fastnas's choice: cost)
    fd_radius: float = 1e-2           # r / ||v|| of --order 2's finite-difference Hessian product (DARTS: 0.01)
    seed: int = 0
    device: str = "cpu"
    amp: str = "off"                  # off | bf16: bfloat16 autocast of the training steps (Search.autocast)
    recompute: bool | None = None     # SuperNetwork.set_recompute; None: on, off on digits/synthetic (fastnas's)

    def __post_init__(self):
        self.ops = check_primitives(list(self.ops))
        check_amp(self.amp)
        small = is_small(self.data)
        presets = dict(C=(8, 16), layers=(5, 8), epochs=(10, 50), arch_lr=(3e-2, 3e-4))
        for name, (small_value, default) in presets.items():
            if getattr(self, name) is None:
                setattr(self, name, small_value if small else default)
        if self.warm_up is None:
            self.warm_up = self.epochs // 5
        if self.recompute is None:  # recompute saves memory small data does not need, for 12-17% of a step
            self.recompute = not small
        for name in ("C", "layers", "nodes", "batch_size", "epochs", "teachers", "sharpness_every",
                     "sharpness_samples", "sharpness_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.order not in (1, 2):
            raise ValueError(f"order: expected 1 (first-order) or 2 (second-order, unrolled), got {self.order}")
        if self.sd_lambda < 0:
            raise ValueError(f"sd_lambda: expected >= 0 (0 = plain DARTS), got {self.sd_lambda}")
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if self.teacher_source not in TEACHER_SOURCES:
            raise ValueError(f"teacher_source: expected one of {', '.join(TEACHER_SOURCES)}, "
                             f"got {self.teacher_source!r}")
        if self.teacher_refresh < 1:
            raise ValueError(f"teacher_refresh: expected >= 1 steps, got {self.teacher_refresh}")
        if self.teacher_source == "cache" and self.teacher_refresh != 1:
            raise ValueError(f"teacher_refresh: applies to snapshot teachers only (the cache records every "
                             f"prediction), got {self.teacher_refresh} with teacher_source 'cache'")
        if self.warm_up < 0:
            raise ValueError(f"warm_up: expected >= 0 epochs, got {self.warm_up}")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction: expected 0 < train_fraction < 1, got {self.train_fraction}")
        for name in ("lr", "arch_lr", "fd_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")

    @property
    def method(self) -> str:
        return "darts" if self.sd_lambda == 0 else "sddarts"


def _indexed(data: ImageData) -> ImageData:
    """`data` with each label replaced by the sample's index: batches() then yields the indices."""
    return ImageData(data.images, torch.arange(len(data), device=data.labels.device))


class SDDARTSSearch(Search):
    """An SD-DARTS (or DARTS) search writing into a RunFolder; `run()` executes or resumes it.

    Under torchrun pass `dist` (fastnas.distributed): every rank takes its share of each training and
    validation batch, and every gradient (of the weights, of the alphas, and inside the unrolled
    second-order step) is averaged over the ranks before it is used, so all ranks hold the same
    network and alphas. Snapshot teachers run on each rank's share (they are copies of the same network
    on every rank); the cache records the predictions of the whole global batch on every rank. Only
    rank 0 logs and writes (give the other ranks RunFolder(writer=False)).
    """

    def __init__(self, config: SDDARTSConfig, run: RunFolder, progress: bool = True,
                 log: Callable[[str], None] = print, dist: Distributed = Distributed()):
        super().__init__(config, run, progress, log, dist)
        c = config
        self.train_data, self.val_data = split(self.dataset.train, c.train_fraction, seed=c.seed)
        # a step reads one batch of each split: a batch larger than either would end the search with no step
        smaller = min(len(self.train_data), len(self.val_data))
        if c.batch_size > smaller:
            raise ValueError(f"batch_size: expected at most {smaller} (the smaller of the search's training and "
                             f"validation splits of {c.data}), got {c.batch_size}")
        self.net = SuperNetwork(c.C, self.dataset.num_classes, c.layers, c.nodes, c.ops, self.dataset.in_channels,
                                mode="softmax", alpha_per_cell=False, recompute=c.recompute).to(self.device)
        self.weights, self.alphas = self.net.weight_parameters(), self.net.arch_parameters()
        # fused=True: one kernel for all parameters instead of ~10 aten calls per tensor (same values)
        self.optimizer = torch.optim.SGD(self.weights, c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                         fused=True)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, c.epochs, eta_min=c.lr_min)
        self.arch_optimizer = torch.optim.Adam(self.alphas, c.arch_lr, betas=(0.5, 0.999),
                                               weight_decay=c.arch_weight_decay, fused=True)
        # The teachers (none for plain DARTS): snapshots of the network, or the per-sample cache.
        self.snapshots: SnapshotTeachers | None = None
        self.cache: dict[str, VotedTeacher] | None = None
        if c.sd_lambda > 0 and c.teacher_source == "snapshot":
            self.snapshots = SnapshotTeachers(c.teachers, c.teacher_refresh, c.temperature)
        elif c.sd_lambda > 0:
            classes = self.dataset.num_classes
            self.cache = {"train": VotedTeacher(len(self.train_data), classes, c.teachers, c.temperature),
                          "val": VotedTeacher(len(self.val_data), classes, c.teachers, c.temperature)}
        self.epoch, self.step, self.seconds = 0, 0, 0.0
        self.sharpness: float | None = None
        self.finished = False

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "arch_optimizer": self.arch_optimizer.state_dict(),
                "snapshots": None if self.snapshots is None else self.snapshots.state_dict(),
                "cache": None if self.cache is None else {k: t.state_dict() for k, t in self.cache.items()},
                "epoch": self.epoch,
                "step": self.step, "seconds": self.seconds,
                "sharpness": self.sharpness, "finished": self.finished, "rng": torch.get_rng_state(),
                "config": asdict(self.config)}

    def _restore(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if self.snapshots is not None:
            self.snapshots.load_state_dict(state["snapshots"], like=self.net)
        for key, teacher in (self.cache or {}).items():
            teacher.load_state_dict(state["cache"][key])
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.sharpness = state["sharpness"]
        self.finished = state["finished"]
        torch.set_rng_state(state["rng"])
        # One line per step plus one per finished epoch precede the checkpoint.
        self.run_folder.truncate_metrics(self.step + self.epoch)

    # ------------------------------------------------------------------ losses and gradients

    def _teacher_targets(self, train_batch: tuple, val_batch: tuple) -> dict[str, tuple | None]:
        """The voted teachers' softened predictions of this step's batches, {"train": ..., "val": ...}: each
        (probabilities [B, classes], has a teacher bool [B] or None for all), or None where there is no KL
        term (plain DARTS, the warm-up, no teacher yet)."""
        c = self.config
        batches_ = {"train": train_batch, "val": val_batch}
        if c.sd_lambda == 0 or self.epoch < c.warm_up:
            return dict.fromkeys(batches_)
        if self.cache is not None:
            targets = {}
            for name, (_, index) in batches_.items():
                probs, has_teacher = self.cache[name].targets(index.cpu(), self.epoch)
                targets[name] = (probs.to(self.device), has_teacher.to(self.device))
            return targets
        with self.autocast():
            probs = {name: self.snapshots.voted_probs(images) for name, (images, _) in batches_.items()}
        return {name: None if p is None else (p, None) for name, p in probs.items()}

    def _loss(self, split_name: str, images: torch.Tensor, index: torch.Tensor, target: tuple | None = None,
              record: bool = False, amp: bool = True) -> tuple[torch.Tensor, dict]:
        """CE + lambda * KL(target || student) of one batch of split `split_name` (under bf16 autocast when
        config.amp is "bf16" and `amp`); `target` is one entry of _teacher_targets (None: CE alone).
        `record` stores the batch's predictions in the cache (teacher_source "cache")."""
        c = self.config
        index = index.cpu()  # a no-op in a search: batches keep their sample indices on the CPU
        labels = (self.train_data if split_name == "train" else self.val_data).labels[index].to(self.device)
        with self.autocast(amp):
            logits = at_least_float32(self.net(images)[0])
        ce = F.cross_entropy(logits, labels)
        kl = torch.zeros((), device=self.device)
        if target is not None:
            probs, has_teacher = target
            kl = self_distillation_kl(logits, probs, c.temperature, has_teacher)
        if record and self.cache is not None:  # every rank records the whole global batch
            self.cache[split_name].record(self.dist.gather(index), self.dist.gather(logits.detach()), self.epoch)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return ce + c.sd_lambda * kl, {"ce": ce, "kl": kl, "accuracy": accuracy}

    def _grad(self, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """d loss / d params (zeros where the loss does not reach), averaged over the ranks."""
        grads = [g if g is not None else torch.zeros_like(p)
                 for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]
        self.dist.average(grads)
        return grads

    def _alpha_gradient(self, train_batch: tuple, val_batch: tuple,
                        targets: dict[str, tuple | None] | None = None) -> tuple[list[torch.Tensor], dict]:
        """The architecture gradient (first order, or DARTS' unrolled second order) and the val metrics.
        `targets`: _teacher_targets of the two batches (None: no KL term)."""
        targets = targets or {"train": None, "val": None}
        if self.config.order == 1:
            loss, parts = self._loss("val", *val_batch, targets["val"], record=True)
            return self._grad(loss, self.alphas), parts
        return self._unrolled_alpha_gradient(train_batch, val_batch, targets)

    def _unrolled_alpha_gradient(self, train_batch: tuple, val_batch: tuple,
                                 targets: dict[str, tuple | None]) -> tuple[list[torch.Tensor], dict]:
        """dL_val(w', a)/da - lr * d2 L_train(w, a)/da dw . dL_val(w', a)/dw' with w' one SGD step ahead.
        The teachers' targets were computed before: they come from the real weights, not from w'."""
        c = self.config
        lr = self.scheduler.get_last_lr()[0]
        train_loss, _ = self._loss("train", *train_batch, targets["train"])
        weight_grads = self._grad(train_loss, self.weights)
        originals = [w.detach().clone() for w in self.weights]
        with torch.no_grad():  # w' = w - lr * (momentum * buffer + grad + wd * w), as the SGD step will do
            for w, g in zip(self.weights, weight_grads):
                buffer = self.optimizer.state.get(w, {}).get("momentum_buffer")
                step = g + c.weight_decay * w
                w.sub_(lr * (step if buffer is None else step + c.momentum * buffer))
        val_loss, parts = self._loss("val", *val_batch, targets["val"], record=True)
        grads = self._grad(val_loss, self.alphas + self.weights)
        alpha_grads, unrolled_weight_grads = grads[:len(self.alphas)], grads[len(self.alphas):]
        with torch.no_grad():
            for w, w0 in zip(self.weights, originals):
                w.copy_(w0)

        # float32 even under --amp bf16: the two gradients differ by O(fd_radius), which bfloat16's
        # rounding (2^-8 relative) of each would swamp.
        def train_alpha_grads() -> list[torch.Tensor]:
            return self._grad(self._loss("train", *train_batch, targets["train"], amp=False)[0], self.alphas)

        implicit = finite_difference_jvp(train_alpha_grads, self.weights, unrolled_weight_grads, c.fd_radius)
        return [g - lr * h for g, h in zip(alpha_grads, implicit)], parts

    def _train_step(self, train_batch: tuple, val_batch: tuple) -> dict:
        """One update (step number self.step): the alphas on the validation batch, then the weights on the
        training batch, both against the same teachers' predictions."""
        c = self.config
        targets = self._teacher_targets(train_batch, val_batch)
        if self.snapshots is not None:  # the network before this update: a teacher from the next step on
            self.snapshots.take(self.net, self.step)
        alpha_grads, val_parts = self._alpha_gradient(train_batch, val_batch, targets)
        for alpha, grad in zip(self.alphas, alpha_grads):
            alpha.grad = grad
        self.arch_optimizer.step()
        self.arch_optimizer.zero_grad(set_to_none=True)

        loss, parts = self._loss("train", *train_batch, targets["train"], record=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.weights)
        clip_grad_norm_(self.weights, c.grad_clip)
        self.optimizer.step()
        for alpha in self.alphas:  # the weight loss must not move the alphas
            alpha.grad = None
        local = {"loss": loss.item(), "ce": parts["ce"].item(), "kl": parts["kl"].item(),
                 "accuracy": parts["accuracy"].item(), "val_ce": val_parts["ce"].item(),
                 "val_kl": val_parts["kl"].item()}
        return {**self.dist.average_metrics(local), "lr": self.scheduler.get_last_lr()[0],
                "alpha_entropy": alpha_entropy(self.alphas)}

    def sharpness_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The fixed validation subset the sharpness is measured on: its first `sharpness_samples` samples, as
        (images, labels) batches of `batch_size` on the device (each batch gets its own BatchNorm statistics,
        as the search's validation batches do)."""
        c = self.config
        subset = self.val_data.subset(torch.arange(min(c.sharpness_samples, len(self.val_data))))
        return [(images.to(self.device), labels.to(self.device))
                for images, labels in zip(subset.images.split(c.batch_size), subset.labels.split(c.batch_size))]

    def measure_sharpness(self) -> HessianSpectrum:
        """The extreme eigenvalues of the Hessian w.r.t. the alphas of the mean validation cross-entropy over
        sharpness_batches() (train-mode BatchNorm, running statistics left as they were), by
        `sharpness_iterations` Lanczos steps from a random start drawn from (seed, epoch); sets
        self.sharpness to lambda_max."""
        c = self.config
        generator = torch.Generator().manual_seed(c.seed * 100003 + self.epoch)
        start = torch.randn(sum(a.numel() for a in self.alphas), generator=generator, dtype=torch.float64)
        batches = self.sharpness_batches()
        total = sum(len(labels) for _, labels in batches)
        loss_fns = [lambda x=images, y=labels: F.cross_entropy(self.net(x)[0], y, reduction="sum") / total
                    for images, labels in batches]
        with frozen_buffers(self.net):
            spectrum = hessian_spectrum(loss_fns, self.alphas, c.sharpness_iterations, start.to(self.device))
        self.sharpness = spectrum.lambda_max
        return spectrum

    # ------------------------------------------------------------------ the loop

    def _epoch_record(self, started: float) -> dict:
        c = self.config
        last = self.epoch == c.epochs
        self.dist.broadcast_buffers(self.net)  # rank 0's BatchNorm statistics everywhere: same evaluation
        spectrum = self.measure_sharpness() if last or self.epoch % c.sharpness_every == 0 else None
        val_accuracy, val_loss = evaluate(self.net, self.val_data, device=self.device)
        genotype = self.net.genotype(top_k=2)
        genotype.meta.update(data=c.data, epoch=self.epoch, method=c.method)
        if self.run_folder.writer:
            (self.run_folder.path / "genotypes").mkdir(exist_ok=True)
            genotype.save(self.run_folder.path / f"genotypes/epoch_{self.epoch:03d}.json")
        self.seconds += time.time() - started
        weights = {name: F.softmax(a.detach(), dim=-1).cpu().tolist() for name, a in zip(("normal", "reduce"),
                                                                                         self.alphas)}
        return {"kind": "epoch", "epoch": self.epoch, "step": self.step, "val_accuracy": val_accuracy,
                "val_loss": val_loss, **sharpness_fields(spectrum), "alpha_entropy": alpha_entropy(self.alphas),
                "seconds": self.seconds, "weights": weights}

    def run(self, stop_after_epochs: int | None = None) -> dict:
        """Runs (or resumes) the search; returns the final result. `stop_after_epochs` simulates an interruption."""
        c = self.config
        self.resume_or_start()
        steps_per_epoch = min(num_batches(self.train_data, c.batch_size, drop_last=True),
                              num_batches(self.val_data, c.batch_size, drop_last=True))
        bar = tqdm(total=c.epochs * steps_per_epoch, initial=self.step, desc=c.method, unit="step",
                   disable=not self.progress)
        epochs_run = 0
        while self.epoch < c.epochs and (stop_after_epochs is None or epochs_run < stop_after_epochs):
            started = time.time()
            self.net.train()
            train_batches = batches(_indexed(self.train_data), c.batch_size, shuffle=True, seed=c.seed,
                                    epoch=self.epoch, augment=self.dataset.augment, drop_last=True)
            # Another stream for the validation half (seed offset: a different order than the training half).
            val_batches = batches(_indexed(self.val_data), c.batch_size, shuffle=True, seed=c.seed + 1,
                                  epoch=self.epoch, augment=self.dataset.augment, drop_last=True)
            for (x_train, i_train), (x_val, i_val) in zip(train_batches, val_batches):
                x_train, i_train, x_val, i_val = self.dist.shard(x_train, i_train, x_val, i_val)
                # indices stay on the CPU, where the labels and the voted teachers are
                metrics = self._train_step((x_train.to(self.device), i_train), (x_val.to(self.device), i_val))
                self.step += 1
                self.run_folder.log({"kind": "step", "step": self.step, "epoch": self.epoch, **metrics})
                bar.update(1)
                bar.set_postfix(ce=f"{metrics['ce']:.3f}", kl=f"{metrics['kl']:.3f}",
                                H=f"{metrics['alpha_entropy']:.3f}")
            self.scheduler.step()
            self.epoch += 1
            epochs_run += 1
            record = self._epoch_record(started)
            self.run_folder.log(record)
            self.finished = self.epoch == c.epochs
            if self.finished:
                self._write_results(record)
            self.run_folder.save_checkpoint(self._state())
            sharpness = f", sharpness {record['sharpness']:.4f}" if record["sharpness"] is not None else ""
            self.log(f"epoch {self.epoch}: val acc {record['val_accuracy']:.3f}{sharpness}, "
                     f"{self.seconds:.0f}s")
        bar.close()
        return self.result()

    def _write_results(self, record: dict) -> None:
        genotype = self.net.genotype(top_k=2)
        genotype.meta.update(data=self.config.data, epoch=self.epoch, method=self.config.method)
        if self.run_folder.writer:
            genotype.save(self.run_folder.path / "genotype.json")
        self.run_folder.write_json("result.json", {
            "method": self.config.method, "val_accuracy": record["val_accuracy"], "val_loss": record["val_loss"],
            "sharpness": record["sharpness"], "sharpness_min": record["sharpness_min"],
            "sharpness_max_abs": record["sharpness_max_abs"], "alpha_entropy": record["alpha_entropy"],
            "search_seconds": self.seconds, "epochs": self.epoch, "steps": self.step,
            "teacher_bytes": self.teacher_bytes(), "genotype": genotype.to_json()})

    def teacher_bytes(self) -> int:
        """Memory the teachers hold: the K snapshots' parameters and buffers, or the cache's tensors (0: DARTS)."""
        if self.snapshots is not None:
            return self.snapshots.nbytes()
        return sum(t.probs.nbytes + t.written_in.nbytes for t in (self.cache or {}).values())

    def result(self) -> dict:
        """The final result (result.json) once the search has finished; {} before."""
        path = self.run_folder.path / "result.json"
        if not self.finished or not path.exists():
            return {}
        return json.loads(path.read_text())
