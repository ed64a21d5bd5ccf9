"""Super-Network Progressive Shrinking (SNPS), the search engine of DNAD.

The paper gives the mechanism; the formulas and defaults below follow the
authors' public code (RaoXuan-1998/NADD: model_search.Architecture / Pruner and
train_search_cifar.py):

- attention weights per node: w = relu(alpha) / sum of relu(alpha) over the node;
- sparsity-entropy term S = sum over nodes and operators of log(1 + 50 * w);
- loss after warm-up: (CE + kd_rate * KD) * (1 + gamma * S) + gamma * mu * S;
- every step, an operator whose weight falls below eps is pruned for good;
- adaptive coefficients from an EMA p of the number pruned per step:
  p < n_max: gamma *= phi; while gamma >= gamma_max count steps, and after
  tqu_max such steps save a Pareto architecture, mu *= rho, n_max *= xi;
  otherwise gamma *= k (and the count restarts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import torch


@dataclass
class SNPSConfig:
    """Coefficients of SNPS; defaults are the authors' CIFAR settings."""

    gamma: float = 1e-4      # initial sparsity coefficient (ImageNet: 1e-6)
    gamma_max: float = 0.1   # (ImageNet: 1e-3)
    mu: float = 0.1          # weight of the pure sparsity term
    n_max: float = 0.005     # target EMA of operators pruned per step (ImageNet: 5e-4)
    tau: float = 0.9         # EMA factor of the pruning count
    phi: float = 1.01        # gamma growth while pruning is slow
    k: float = 0.99          # gamma decay while pruning is fast
    rho: float = 1.5         # mu growth at each Pareto point
    xi: float = 1.0          # n_max factor at each Pareto point
    tqu_max: int = 50        # steps at gamma >= gamma_max before a Pareto point
    eps: float = 0.01        # pruning threshold on the attention weight
    scale: float = 50.0      # the 50 of log(1 + 50 w)

    def __post_init__(self):
        for name in ("gamma", "gamma_max", "n_max", "phi", "k", "rho", "xi", "scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if not 0 <= self.tau < 1:
            raise ValueError(f"tau: expected 0 <= tau < 1, got {self.tau}")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps: expected 0 < eps < 1, got {self.eps}")
        if self.mu < 0:
            raise ValueError(f"mu: expected >= 0, got {self.mu}")
        if self.tqu_max < 1:
            raise ValueError(f"tqu_max: expected >= 1, got {self.tqu_max}")


def sparsity_entropy(weights: Iterable[torch.Tensor], scale: float = 50.0) -> torch.Tensor:
    """S = sum over every weight tensor of sum log(1 + scale * w); pruned weights (0) add nothing."""
    return torch.stack([torch.log1p(scale * w).sum() for w in weights]).sum()


class ProgressiveShrinking:
    """The adaptive coefficients of SNPS. `step` is called once per pruning step."""

    def __init__(self, config: SNPSConfig):
        self.config = config
        self.gamma, self.mu, self.n_max = config.gamma, config.mu, config.n_max
        self.pruned_ema = 0.0
        self.steps_at_max = 0

    def loss(self, task_loss: torch.Tensor, sparsity: torch.Tensor, warm_up: bool) -> torch.Tensor:
        """The SNPS objective; during warm-up the task loss alone (CE + kd_rate * KD)."""
        if warm_up:
            return task_loss
        return task_loss * (1 + self.gamma * sparsity) + self.gamma * self.mu * sparsity

    def step(self, n_pruned: int) -> bool:
        """Updates gamma, mu and n_max after `n_pruned` operators were pruned; True = save a Pareto point."""
        c = self.config
        self.pruned_ema = c.tau * self.pruned_ema + (1 - c.tau) * n_pruned
        if self.pruned_ema >= self.n_max:
            self.gamma *= c.k
            self.steps_at_max = 0
            return False
        at_max = self.gamma >= c.gamma_max
        self.gamma *= c.phi
        if not at_max:
            self.steps_at_max = 0
            return False
        self.steps_at_max += 1
        if self.steps_at_max < c.tqu_max:
            return False
        self.mu *= c.rho
        self.n_max *= c.xi
        self.steps_at_max = 0
        return True

    def state_dict(self) -> dict:
        return {"gamma": self.gamma, "mu": self.mu, "n_max": self.n_max, "pruned_ema": self.pruned_ema,
                "steps_at_max": self.steps_at_max, "config": asdict(self.config)}

    def load_state_dict(self, state: dict) -> None:
        self.config = SNPSConfig(**state["config"])
        for key in ("gamma", "mu", "n_max", "pruned_ema", "steps_at_max"):
            setattr(self, key, state[key])
