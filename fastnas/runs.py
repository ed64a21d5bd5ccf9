"""The run folder every command writes: config.json, metrics.jsonl, checkpoint.pt and results.

Checkpoints are written atomically (temporary file in the same folder, fsync,
rename), so a run killed at any moment leaves either the previous or the new
checkpoint, never a torn one; `--resume` continues from it.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Calls write(file) on a temporary file beside `path`, then renames it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1, default=str).encode()))


class RunFolder:
    """One run's output folder.

    Args:
        path: the folder (created if missing).
        resume: continue a run already there; without it a folder holding a
            checkpoint is refused rather than overwritten.
        writer: False for the ranks > 0 of a data-parallel run: they read the
            checkpoint on resume but every write is rank 0's (a no-op here).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, writer: bool = True):
        self.path, self.writer = Path(path), writer
        if resume and not self.checkpoint_path.exists():
            raise FileNotFoundError(f"resume: no checkpoint.pt in {self.path} to resume from")
        if writer and not resume and self.checkpoint_path.exists():
            raise FileExistsError(f"out: {self.path} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        if writer:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_config(self, config: dict) -> None:
        if not self.writer:
            return
        from . import ops

        atomic_write_json(self.path / "config.json", {**config, "versions": {
            **ops.build_info(), "python": platform.python_version()}})

    def log(self, record: dict) -> None:
        """Appends one line to metrics.jsonl."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_metrics(self, keep: int) -> None:
        """Keeps the first `keep` lines of metrics.jsonl: lines written after the checkpoint are redone on resume."""
        if not self.writer:
            return
        path = self.path / "metrics.jsonl"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)[:keep]
            atomic_write_bytes(path, lambda f: f.write("".join(lines).encode()))

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def save_checkpoint(self, state: dict) -> None:
        if not self.writer:
            return
        atomic_write_bytes(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self) -> dict:
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        if self.writer:
            atomic_write_json(path, data)
        return path
