"""The run folder every command writes: config.json, metrics.jsonl, checkpoint.pt and results.

Checkpoints are written atomically (temporary file in the same folder, fsync,
rename), so a run killed at any moment leaves either the previous or the new
checkpoint, never a torn one. The checkpoint before the latest stays beside it
as checkpoint.prev.pt: if the latest is damaged anyway (a full disk, a copy cut
short, another program's file), `--resume` continues from the previous one and
redoes at most one checkpoint interval.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

# Every checkpoint RunFolder writes carries this key, so that a foreign file is told apart from a damaged one.
CHECKPOINT_MARK = "fastnas_checkpoint"
CHECKPOINT_FORMAT = 1


class RunWarning(UserWarning):
    """Something about a run folder the user should know, though the run goes on (the CLI prints it in one line)."""


def make_folder(path: Path, argument: str = "out") -> None:
    """`mkdir -p path`; an error names the command-line `argument` the folder came from."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{argument}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file higher up, no permission, a read-only file system
        raise OSError(f"{argument}: cannot create the folder {path}: {error.strerror or error}") from error


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
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in `folder` durable (POSIX: the rename lives in the folder's own data)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(data, indent=1, default=str).encode()))


def read_checkpoint(path: Path) -> dict:
    """The state saved by RunFolder.save_checkpoint in `path`.

    Raises ValueError naming the file when it is not one: truncated, damaged, or written by another program.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load's error depends on where the file is cut: EOF, zip, pickle, OSError
        reason = str(error).split(". ")[0]  # miniz appends several sentences of advice
        raise ValueError(f"{path} is not a readable fastnas checkpoint (truncated or damaged: "
                         f"{type(error).__name__}: {reason})") from error
    if not isinstance(state, dict) or state.get(CHECKPOINT_MARK) != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a fastnas checkpoint ({type(state).__name__} without the "
                         f"{CHECKPOINT_MARK!r} mark of format {CHECKPOINT_FORMAT}: written by another program "
                         "or another fastnas version)")
    return {key: value for key, value in state.items() if key != CHECKPOINT_MARK}


class RunFolder:
    """One run's output folder.

    Args:
        path: the folder (created if missing).
        resume: continue a run already there; without it a folder holding a
            checkpoint is refused rather than overwritten, and the metrics.jsonl
            (emptied) and checkpoint.prev.pt (removed) of a run without a
            checkpoint.pt are not taken for this run's.
        writer: False for the ranks > 0 of a data-parallel run: they read the
            checkpoint on resume but every write is rank 0's (a no-op here).
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, writer: bool = True):
        self.path, self.writer = Path(path), writer
        # True after load_checkpoint fell back to checkpoint.prev.pt: the damaged latest must not become the
        # previous checkpoint at the next save.
        self._latest_damaged = False
        self.config_notes: dict = {}  # recorded in config.json beside the config (write_config)
        if resume and not self.checkpoint_path.exists():
            raise FileNotFoundError(f"resume: no checkpoint.pt in {self.path} to resume from")
        if writer and not resume and self.checkpoint_path.exists():
            raise FileExistsError(f"out: {self.path} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        if writer:
            make_folder(self.path)
        if writer and not resume:  # what a run left without a checkpoint.pt belongs to no run that can resume
            self.truncate_metrics(0)
            self.previous_checkpoint_path.unlink(missing_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def previous_checkpoint_path(self) -> Path:
        return self.path / "checkpoint.prev.pt"

    def write_config(self, config: dict) -> None:
        """Writes config.json: `config`, then the `config_notes` a caller set (the CLI: where each value of
        the config comes from), then the versions of fastnas, torch and Python."""
        if not self.writer:
            return
        from . import ops

        atomic_write_json(self.path / "config.json", {**config, **self.config_notes, "versions": {
            **ops.build_info(), "python": platform.python_version()}})

    def log(self, record: dict) -> None:
        """Appends one line to metrics.jsonl."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def truncate_metrics(self, keep: int) -> None:
        """Keeps the first `keep` lines of metrics.jsonl: lines written after the checkpoint are redone on resume.

        Callers pass a count taken from the checkpoint load_checkpoint returned, so after a fall-back to
        checkpoint.prev.pt the lines of the lost interval go too.
        """
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
        """Writes `state` as checkpoint.pt; the checkpoint it replaces becomes checkpoint.prev.pt.

        At every moment checkpoint.pt is a complete file: checkpoint.prev.pt is first made a second name
        (a hard link, or a copy where the file system has none) of the current checkpoint.pt, then the new
        file is renamed over checkpoint.pt.
        """
        if not self.writer:
            return
        if self.checkpoint_path.exists() and not self._latest_damaged:
            self._keep_as_previous(self.checkpoint_path)
        atomic_write_bytes(self.checkpoint_path, lambda f: torch.save(
            {**state, CHECKPOINT_MARK: CHECKPOINT_FORMAT}, f))
        self._latest_damaged = False

    def _keep_as_previous(self, latest: Path) -> None:
        link = self.path / f".{self.previous_checkpoint_path.name}.{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        try:
            os.link(latest, link)
        except OSError:  # no hard links here (some network and FUSE file systems)
            with open(latest, "rb") as source:
                atomic_write_bytes(self.previous_checkpoint_path, lambda f: shutil.copyfileobj(source, f))
            return
        os.replace(link, self.previous_checkpoint_path)

    def load_checkpoint(self) -> dict:
        """The latest checkpoint's state; if checkpoint.pt is damaged, that of checkpoint.prev.pt, with a RunWarning.

        Raises ValueError naming the file, and what to do, when neither can be read.
        """
        try:
            return read_checkpoint(self.checkpoint_path)
        except ValueError as error:
            latest_error = error
        if not self.previous_checkpoint_path.exists():
            raise ValueError(f"resume: {latest_error}; there is no checkpoint.prev.pt beside it to fall back to. "
                             f"To start the run over, delete {self.checkpoint_path} and run without --resume, "
                             "or choose another --out")
        try:
            state = read_checkpoint(self.previous_checkpoint_path)
        except ValueError as previous_error:
            raise ValueError(f"resume: {latest_error}, and {previous_error}. To start the run over, delete "
                             "both and run without --resume, or choose another --out") from previous_error
        self._latest_damaged = True
        if self.writer:
            warnings.warn(f"resume: {latest_error}; resuming from the checkpoint before it, "
                          f"{self.previous_checkpoint_path}: the last checkpoint interval is redone", RunWarning,
                          stacklevel=2)
        return state

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        if self.writer:
            atomic_write_json(path, data)
        return path
