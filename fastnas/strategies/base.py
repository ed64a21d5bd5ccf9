"""What every super-network search sets up first: where it writes, how it reports, its rank, seed, device, data."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..data import load_data
from ..distributed import Distributed
from ..runs import RunFolder


class Search:
    """Base of DNADSearch and SDDARTSSearch.

    `config` needs `seed`, `device` and `data`. Under torchrun pass `dist` (fastnas.distributed):
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
