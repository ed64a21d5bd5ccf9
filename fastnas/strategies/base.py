"""What every super-network search sets up first: where it writes, how it reports, its rank, seed, device, data."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

import torch

from ..data import load_data
from ..distributed import Distributed
from ..runs import RunFolder


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

    def resume_or_start(self) -> None:
        """Continues from the run folder's checkpoint, or records the config of a new run."""
        if self.run_folder.checkpoint_path.exists():
            self._restore(self.run_folder.load_checkpoint())
            self.log(f"resumed at epoch {self.epoch}, step {self.step}")
        else:
            self.run_folder.write_config(asdict(self.config))
