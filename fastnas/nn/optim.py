"""SharedStepAdam: torch.optim.Adam(fused=True) with one step counter per group of parameters that step together.

torch keeps a step tensor per parameter and increments each one before its fused
kernel runs. On the CPU, `_foreach_add_` has no fused kernel: every increment is
its own `add_` (five aten calls with the scalar's conversion), ~3.6k calls per
DNAD step for a super-network's ~730 parameters, a sixth of the whole step. The
parameters of a search all step together, so here they share one step tensor and
one `add_` counts for all. The update itself is torch's `_fused_adam_` kernel,
so the values are torch's to the bit (tests/test_optim.py).
"""

from __future__ import annotations

from typing import Callable

import torch


class SharedStepAdam(torch.optim.Adam):
    """torch.optim.Adam with `fused=True`, whose parameters at the same step share one step tensor.

    Same arguments, state_dict layout and values as torch.optim.Adam(fused=True),
    an AMP GradScaler's `grad_scale` / `found_inf` and a tensor `lr` included.
    Sharing: the parameters of a group initialized at the same step on one device
    get one step tensor; after `load_state_dict`, those whose steps are equal get one
    again. Parameters without a gradient are skipped as torch skips them: their
    count stays behind (one sharing a counter with parameters that step gets a copy).
    """

    def __init__(self, params, lr: float | torch.Tensor = 1e-3, **options) -> None:
        if not options.setdefault("fused", True):
            raise ValueError("fused: SharedStepAdam runs torch's fused kernel; expected fused=True or unset")
        super().__init__(params, lr, **options)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._fused_step(group)
        return loss

    def _fused_step(self, group: dict) -> None:
        fresh = [p for p in group["params"] if p.grad is not None and not self.state[p]]
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps = [], [], [], [], [], []
        self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
        first_on = {}
        for p in fresh:  # all at step 0: one counter per device
            self.state[p]["step"] = first_on.setdefault(p.device, self.state[p]["step"])
        self._unshare_skipped(group)
        steps = [self.state[p]["step"] for p in params]
        unique_steps = list({id(s): s for s in steps}.values())
        torch._foreach_add_(unique_steps, 1)
        kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        beta1, beta2 = group["betas"]
        by_kind: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):  # the kernel takes one device and dtype per call
            by_kind.setdefault((p.device, p.dtype), []).append(i)
        for (device, _), index in by_kind.items():
            on_device = [self._on(getattr(self, name, None), device) for name in ("grad_scale", "found_inf")]
            lr = group["lr"]
            if torch.is_tensor(lr) and lr.device.type != "cpu":
                lr = lr.to(device)
            kernel(*([tensors[i] for i in index] for tensors in (params, grads, exp_avgs, exp_avg_sqs)),
                   [max_exp_avg_sqs[i] for i in index] if group["amsgrad"] else [], [steps[i] for i in index],
                   amsgrad=group["amsgrad"], lr=lr, beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                   eps=group["eps"], maximize=group["maximize"], grad_scale=on_device[0], found_inf=on_device[1])
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None:  # a skipped step does not count, as in torch
            torch._foreach_sub_(unique_steps, [self._on(found_inf, s.device) for s in unique_steps])

    @staticmethod
    def _on(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(device, non_blocking=True)

    def _unshare_skipped(self, group: dict) -> None:
        """A parameter without a gradient keeps its count: it gets its own copy of a counter that moves on."""
        stepping = {id(self.state[p]["step"]) for p in group["params"] if p.grad is not None}
        for p in group["params"]:
            state = self.state.get(p)  # not self.state[p]: that would add an empty entry to the state_dict
            if p.grad is None and state and id(state["step"]) in stepping:
                state["step"] = state["step"].clone()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # torch copies each step tensor: share equal ones again
            by_value: dict[tuple, torch.Tensor] = {}
            for p in group["params"]:
                state = self.state.get(p)
                if state:
                    key = (state["step"].device, state["step"].item())
                    state["step"] = by_value.setdefault(key, state["step"])
