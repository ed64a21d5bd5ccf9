"""DNAD: super-network progressive shrinking with distillation from a pre-trained teacher.

One-level optimization on the same batch: network weights with Adam (lr 5e-4,
betas (0.5, 0.999), weight decay 3e-4), alphas with SGD (lr 0.2, no momentum),
gradients clipped at 5, separately for the weights, the alphas and the KD
adapters (the feature loss's 1x1 convs), as the authors' train_search_cifar.py
clips network, architecture and distillator. The loss and the pruning schedule
are those of fastnas.strategies.snps. Distillation: attention transfer at the
three stage ends by default (`kd="at"`), or the authors' feature-MSE variant,
soft targets, or none.

Stop test, as the authors' code (RaoXuan-1998/NADD train_search_cifar.py: after
each step's ``pruner.prune``, ``finish = pruner.sparsity_list[-1] < Flops_min``,
and ``main`` breaks after the epoch whose last step set it; ``Pruner.prune``
appends the sparsity computed after pruning): at the end of an epoch, S after the
last step's pruning below `stop_sparsity` ends the search (never mid-epoch).

AT scale (`at_scale`): "mean", beta times the mean over the stage pairs, is the
authors' Distillator.py and the default; "half-sum", beta / 2 times their sum
(the AT paper's Eq. 2, fastnas's earlier default) is 1.5 times it with 3 stages.
The DNAD paper gives AT's formula without its scale.

Choices where the paper is silent (each a config field):
- stop floor: `stop_sparsity` defaults to the authors' CIFAR floor of 250 for
  8 cells x 4 nodes, scaled by the number of nodes; fastnas also stops at an
  epoch end when at most `target_ops` operators are live, and after `epochs`;
- Pareto points are scored by the super-network's accuracy on a validation
  split held out of the training data (`val_fraction`), as the search never
  looks at the test split;
- the run checkpoints at the end of every epoch; a resumed run redoes the
  interrupted epoch exactly (batches depend on (seed, epoch) only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import batches, num_batches, split
from ..distill import load_teacher, make_kd_loss
from ..distill.losses import AT_REDUCTIONS
from ..distill.teachers import check_teacher_matches
from ..distributed import Distributed
from ..evaluators import evaluate
from ..nn.cost import PrunedFlops, count_flops, count_params
from ..nn.darts_ops import check_primitives
from ..nn.optim import SharedStepAdam
from ..ops import clip_grad_norm_
from ..pareto import mark_front
from ..runs import RunFolder
from ..search_spaces.darts import Genotype, SuperNetwork
from ..search_spaces.darts_eval import DiscreteNetwork
from .base import Search, at_least_float32, check_amp
from .snps import ProgressiveShrinking, SNPSConfig, sparsity_entropy

AUTHORS_CIFAR_OPS = ("sep_conv_3x3", "skip_connect", "dil_conv_5x5")
# The authors stop CIFAR searches at S < 250 with 8 cells of 4 nodes.
STOP_SPARSITY_PER_NODE = 250 / 32


def is_small(data: str) -> bool:
    return data == "digits" or data.startswith("synthetic")


def snps_preset(data: str) -> SNPSConfig:
    """The authors' CIFAR coefficients; on the small embedded/synthetic data a faster schedule.

    Our choice: a digits search has ~1,000 steps where a CIFAR one has ~47,000,
    so gamma starts at 1e-2 instead of 1e-4, the target pruning rate n_max is
    0.5 operators per step instead of 0.005, and a Pareto point needs 20 steps at
    gamma_max instead of 50 (with batch 32 and alpha lr 1.0, see DNADConfig).
    """
    if is_small(data):
        return SNPSConfig(gamma=1e-2, n_max=0.5, tqu_max=20)
    return SNPSConfig()


@dataclass
class DNADConfig:
    data: str = "digits"
    teacher: str = "builtin"
    kd: str = "at"                 # at | feature | soft | none
    kd_rate: float = 1.0
    at_beta: float = 1000.0
    at_scale: str = "mean"         # mean: beta * mean over stages (authors' code) | half-sum: beta / 2 * sum (AT paper)
    ops: tuple[str, ...] = AUTHORS_CIFAR_OPS
    C: int = 16
    layers: int = 8
    nodes: int = 4
    alpha_init: float = 2.0
    batch_size: int | None = None  # None: 64 (authors), 32 on digits/synthetic (more steps per epoch)
    epochs: int = 40
    warm_up: int = 0               # epochs of plain CE + KD before shrinking (ImageNet: 5)
    lr: float = 5e-4
    weight_decay: float = 3e-4
    arch_lr: float | None = None   # None: 0.2 (authors), 1.0 on digits/synthetic (a 50x shorter search)
    grad_clip: float = 5.0
    val_fraction: float = 0.2
    stop_sparsity: float | None = None
    target_ops: int | None = None
    seed: int = 0
    device: str = "cpu"
    amp: str = "off"               # off | bf16: bfloat16 autocast of the training steps (Search.autocast)
    recompute: bool | None = None  # SuperNetwork.set_recompute; None: on, off on digits/synthetic (fastnas's)
    snps: SNPSConfig | dict | None = None  # None: the preset for `data`; a dict: overrides of that preset

    def __post_init__(self):
        self.ops = check_primitives(list(self.ops))
        check_amp(self.amp)
        small = is_small(self.data)
        if self.batch_size is None:
            self.batch_size = 32 if small else 64
        if self.arch_lr is None:
            self.arch_lr = 1.0 if small else 0.2
        if self.recompute is None:  # recompute saves memory small data does not need, for 12-17% of a step
            self.recompute = not small
        if not isinstance(self.snps, SNPSConfig):
            self.snps = replace(snps_preset(self.data), **(self.snps or {}))
        for name in ("C", "layers", "nodes", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction: expected 0 < val_fraction < 1, got {self.val_fraction}")
        if self.kd_rate < 0:
            raise ValueError(f"kd_rate: expected >= 0, got {self.kd_rate}")
        if self.at_scale not in AT_REDUCTIONS:
            raise ValueError(f"at_scale: expected one of {', '.join(AT_REDUCTIONS)}, got {self.at_scale!r}")
        if self.stop_sparsity is None:
            self.stop_sparsity = STOP_SPARSITY_PER_NODE * self.layers * self.nodes


def _keep_live_params(optimizer: torch.optim.Optimizer, live: set[int]) -> None:
    """Drops the parameters of pruned operators (and their optimizer state) from `optimizer`."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in live:
                optimizer.state.pop(p, None)
        group["params"] = [p for p in group["params"] if id(p) in live]


class DNADSearch(Search):
    """A DNAD search writing into a RunFolder; `run()` executes it (resuming if the folder has a checkpoint).

    Under torchrun pass `dist` (fastnas.distributed): each rank trains on its share of the global batch,
    gradients are averaged, and only rank 0 logs and writes (give the other ranks RunFolder(writer=False)).
    """

    def __init__(self, config: DNADConfig, run: RunFolder, progress: bool = True,
                 log: Callable[[str], None] = print, dist: Distributed = Distributed()):
        super().__init__(config, run, progress, log, dist)
        c = config
        self.train_data, self.val_data = split(self.dataset.train, 1 - c.val_fraction, seed=c.seed)
        if num_batches(self.train_data, c.batch_size, drop_last=True) == 0:
            raise ValueError(f"batch_size: expected at most {len(self.train_data)} (the search's training split "
                             f"of {c.data}), got {c.batch_size}")
        self.input_shape = (self.dataset.in_channels, self.dataset.image_size, self.dataset.image_size)
        self.net = SuperNetwork(c.C, self.dataset.num_classes, c.layers, c.nodes, c.ops, self.dataset.in_channels,
                                mode="relu_norm", alpha_per_cell=True, alpha_init=c.alpha_init,
                                recompute=c.recompute).to(self.device)
        self.teacher = None
        teacher_channels: list[int] = []
        if c.kd != "none":
            # rank 0 trains and caches the built-in teacher; the others then load it from the cache
            self.teacher = dist.main_first(
                lambda: load_teacher(c.teacher, self.dataset, device=self.device, progress=self.progress))
            student_shapes = [tuple(f.shape[1:]) for f in self._probe_features()]
            check_teacher_matches(self.teacher, student_shapes)
            teacher_channels = self.teacher.stage_channels
        kd_options = {"beta": c.at_beta, "reduction": c.at_scale} if c.kd == "at" else {}
        self.kd_loss = make_kd_loss(c.kd, self.net.stage_channels, teacher_channels, **kd_options).to(self.device)
        self.shrinking = ProgressiveShrinking(c.snps)
        # torch's fused Adam (one kernel, not ~10 aten calls per tensor) with one step counter for all
        # parameters instead of one increment each (same values: fastnas.nn.optim)
        self.optimizer = SharedStepAdam(self.net.weight_parameters() + list(self.kd_loss.parameters()), c.lr,
                                        betas=(0.5, 0.999), weight_decay=c.weight_decay)
        self.arch_optimizer = torch.optim.SGD(self.net.arch_parameters(), c.arch_lr, momentum=0.0, fused=True)
        self.epoch, self.step = 0, 0
        self.pareto: list[dict] = []
        self.finished = False

    def _probe_features(self) -> list[torch.Tensor]:
        self.net.eval()
        with torch.no_grad():
            features = self.net(torch.zeros(2, *self.input_shape, device=self.device))[1]
        self.net.train()
        return features

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict:
        return {"net": self.net.state_dict(), "masks": [[m.clone() for m in cell] for cell in self.net.node_masks()],
                "kd_loss": self.kd_loss.state_dict(), "optimizer": self.optimizer.state_dict(),
                "arch_optimizer": self.arch_optimizer.state_dict(), "shrinking": self.shrinking.state_dict(),
                "epoch": self.epoch, "step": self.step, "pareto": self.pareto, "finished": self.finished,
                "rng": torch.get_rng_state(), "config": asdict(self.config)}

    def _restore(self, state: dict) -> None:
        self.net.load_masks(state["masks"])
        self.net.load_state_dict(state["net"])
        self.kd_loss.load_state_dict(state["kd_loss"])
        self._drop_pruned_params()
        self.optimizer.load_state_dict(state["optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        self.shrinking.load_state_dict(state["shrinking"])
        self.epoch, self.step, self.pareto = state["epoch"], state["step"], state["pareto"]
        self.finished = state["finished"]
        torch.set_rng_state(state["rng"])
        self.run_folder.truncate_metrics(self.step)

    # ------------------------------------------------------------------ the search

    def _costs(self, genotype: Genotype) -> dict:
        net = DiscreteNetwork(genotype, self.config.C, self.dataset.num_classes, in_channels=self.dataset.in_channels)
        return {"params": count_params(net), "flops": count_flops(net, self.input_shape)}

    def _save_point(self, kind: str) -> dict:
        genotype = self.net.genotype(top_k=None)
        genotype.meta.update(data=self.config.data, step=self.step)
        name = f"genotypes/{kind}_{len(self.pareto):03d}.json" if kind == "pareto" else "genotype.json"
        if self.run_folder.writer:
            (self.run_folder.path / "genotypes").mkdir(exist_ok=True)
            genotype.save(self.run_folder.path / name)
        self.dist.broadcast_buffers(self.net)
        val_accuracy, _ = evaluate(self.net, self.val_data, device=self.device)
        point = {"kind": kind, "step": self.step, "epoch": self.epoch, "live_ops": self.net.num_live_ops(),
                 "val_accuracy": val_accuracy, "genotype": name, **self._costs(genotype)}
        self.pareto.append(point)
        self.log(f"{kind} architecture at step {self.step}: {point['live_ops']} live ops, "
                 f"{point['params']:,} params, {point['flops']:,} FLOPs, val acc {val_accuracy:.3f}")
        return point

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, warm_up: bool) -> dict:
        c = self.config
        # shard first: each rank uploads only its share of the global batch
        images, labels = (t.to(self.device) for t in self.dist.shard(images, labels))
        with self.autocast():
            logits, features = self.net(images)
            logits = at_least_float32(logits)
            ce = F.cross_entropy(logits, labels)
            kd = torch.zeros((), device=self.device)
            if self.teacher is not None:
                teacher_logits, teacher_features = self.teacher(images)
                kd = at_least_float32(self.kd_loss(logits, features, at_least_float32(teacher_logits),
                                                   teacher_features))
        sparsity = sparsity_entropy(self.net.node_weights(), c.snps.scale)
        loss = self.shrinking.loss(ce + c.kd_rate * kd, sparsity, warm_up)
        self.optimizer.zero_grad(set_to_none=True)
        self.arch_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(self.net.arch_parameters() + self.net.weight_parameters()
                                    + list(self.kd_loss.parameters()))
        # Three separate clips, as the authors clip network, architecture and distillator
        clip_grad_norm_(self.net.weight_parameters(), c.grad_clip)
        clip_grad_norm_(self.net.arch_parameters(), c.grad_clip)
        adapters = list(self.kd_loss.parameters())  # the feature loss's 1x1 convs; none for the other kinds
        if adapters:
            clip_grad_norm_(adapters, c.grad_clip)
        self.optimizer.step()
        self.arch_optimizer.step()
        local = {"ce": ce.item(), "kd": kd.item(), "loss": loss.item(),
                 "accuracy": (logits.argmax(1) == labels).float().mean().item()}
        # the sparsity is a function of the alphas, identical on every rank
        return {**self.dist.average_metrics(local), "sparsity": sparsity.item()}

    def _drop_pruned_params(self) -> None:
        live = {id(p) for p in self.net.weight_parameters()} | {id(p) for p in self.kd_loss.parameters()}
        _keep_live_params(self.optimizer, live)

    def _prune(self) -> tuple[int, bool]:
        pruned = self.net.prune_below(self.config.snps.eps)
        if pruned:
            self._drop_pruned_params()
        return len(pruned), self.shrinking.step(len(pruned))

    def _sparsity(self) -> float:
        """S of the network as it is now (after a step's pruning: the value the authors' stop test reads)."""
        with torch.no_grad():
            return sparsity_entropy(self.net.node_weights(), self.config.snps.scale).item()

    def _should_stop(self, pruned_sparsity: float) -> bool:
        """The test at an epoch end: S after the last step's pruning below the floor, or target_ops reached."""
        c = self.config
        return (pruned_sparsity < c.stop_sparsity
                or (c.target_ops is not None and self.net.num_live_ops() <= c.target_ops))

    def run(self, stop_after_epochs: int | None = None) -> list[dict]:
        """Runs (or resumes) the search; returns the Pareto set. `stop_after_epochs` simulates an interruption."""
        c = self.config
        self.resume_or_start()
        steps_per_epoch = num_batches(self.train_data, c.batch_size, drop_last=True)
        bar = tqdm(total=c.epochs * steps_per_epoch, initial=self.step, desc="dnad", unit="step",
                   disable=not self.progress)
        network_flops = PrunedFlops(self.net, self.input_shape)  # a forward pass per pruning event cost ~5% of a search
        params, flops = count_params(self.net), network_flops()
        epochs_run = 0
        while not self.finished and self.epoch < c.epochs:
            if stop_after_epochs is not None and epochs_run >= stop_after_epochs:
                break
            started = time.time()
            warm_up = self.epoch < c.warm_up
            for images, labels in batches(self.train_data, c.batch_size, shuffle=True, seed=c.seed, epoch=self.epoch,
                                          augment=self.dataset.augment, drop_last=True):
                metrics = self._train_step(images, labels, warm_up)
                self.step += 1
                n_pruned, pareto = (0, False) if warm_up else self._prune()
                if n_pruned:
                    params, flops = count_params(self.net), network_flops()
                pruned_sparsity = self._sparsity()
                self.run_folder.log({"step": self.step, "epoch": self.epoch, **metrics,
                                     "pruned_sparsity": pruned_sparsity, "pruned": n_pruned,
                                     "live_ops": self.net.num_live_ops(), "params": params, "flops": flops,
                                     "gamma": self.shrinking.gamma, "mu": self.shrinking.mu,
                                     "n_max": self.shrinking.n_max})
                bar.update(1)
                bar.set_postfix(ops=self.net.num_live_ops(), S=f"{metrics['sparsity']:.0f}",
                                gamma=f"{self.shrinking.gamma:.1e}", acc=f"{metrics['accuracy']:.2f}")
                if pareto:
                    self._save_point("pareto")
            self.epoch += 1
            epochs_run += 1
            pruned_sparsity = self._sparsity()  # after the last step's pruning
            if not warm_up and self._should_stop(pruned_sparsity):
                self.finished = True
            if self.finished or self.epoch == c.epochs:
                self.finished = True
                self._save_point("final")
            self.dist.broadcast_buffers(self.net)
            self.run_folder.save_checkpoint(self._state())
            self.log(f"epoch {self.epoch}: {self.net.num_live_ops()} live ops, S {pruned_sparsity:.1f} after "
                     f"pruning, {time.time() - started:.1f}s")
        bar.close()
        if self.finished:
            self.run_folder.write_json("pareto.json", mark_front(self.pareto))  # marks the non-dominated points
        return self.pareto
