"""What every super-network search sets up first: where it writes, how it reports, its rank, seed, device, data."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable

import torch

from ..data import load_data
from ..distributed import Distributed
from ..runs import RunFolder

AMP_MODES = ("off", "bf16")
# Settings a resumed search may change: where and how its steps run, and how precisely SD-DARTS measures
# sharpness (bench/sddarts_table.py rechecks a finished search's), not what the search computes.
RESUMABLE_CHANGES = ("device", "amp", "recompute", "sharpness_samples", "sharpness_iterations")


def check_amp(amp: str) -> None:
    """Validates a search config's `amp`: "off" (float32) or "bf16" (bfloat16 autocast of the training steps)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp: expected one of {', '.join(AMP_MODES)}, got {amp!r}")


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 if it is float16/bfloat16 (logits under autocast, before a softmax-based loss: CPU
    autocast leaves log_softmax in bfloat16), else unchanged (float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class Search:
    """Base of DNADSearch and SDDARTSSearch.

    `config` is a dataclass with `seed`, `device` and `data`; subclasses restore their `epoch`, `step`
    and the rest in `_restore(checkpoint)`. Under torchrun pass `dist` (fastnas.distributed):
    only rank 0 shows progress and logs (give the other ranks RunFolder(writer=False)).
    """

    def __init__(self, config: Any, run: RunFolder, progress: bool = True, log: Callable[[str], None] = print,
                 dist: Distributed = Distributed()):
        self.config, self.run_folder, self.dist = config, run, dist
        self.progress = progress and dist.is_main
        self.log = log if dist.is_main else (lambda _: None)
        torch.manual_seed(config.seed)
        self.device = dist.device_for(config.device)
        self.dataset = load_data(config.data)

    def autocast(self, enabled: bool = True) -> torch.autocast:
        """The context of a training step's forward pass and losses: bfloat16 autocast when config.amp is
        "bf16" and `enabled`. Convolutions and linears then run in bfloat16; the fused ops take their
        bfloat16 inputs and accumulate in float32; softmax/cross-entropy stay float32 (autocast's lists).
        No loss scaling: bfloat16 has float32's exponent range."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled and self.config.amp == "bf16")

    def resume_or_start(self) -> None:
        """Continues from the run folder's checkpoint, or records the config of a new run."""
        if self.run_folder.checkpoint_path.exists():
            self._check_resumed_config()
            self._restore(self.run_folder.load_checkpoint())
            self.log(f"resumed at epoch {self.epoch}, step {self.step}")
        else:
            self.run_folder.write_config(asdict(self.config))

    def _check_resumed_config(self) -> None:
        """Refuses to resume a run folder made with other settings (another method, size or schedule)."""
        path = self.run_folder.path / "config.json"
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        now = json.loads(json.dumps(asdict(self.config)))  # tuples as lists, as config.json holds them
        differ = [f"{key}={saved.get(key)!r} there, {value!r} now" for key, value in now.items()
                  if key not in RESUMABLE_CHANGES and saved.get(key) != value]
        if differ:
            raise ValueError(f"resume: {self.run_folder.path} holds a run made with "
                             f"other settings ({'; '.join(differ)}); resume it with its own settings or choose "
                             "another --out")
