"""Ground truth for proxy search (`fastnas bench-gt`): distill a seeded sample of students, one JSON line each.

Auto-DAS fits its proxies to the ranking of students by their accuracy after
distillation (DisWOT's KD benchmark). This module produces that ranking for any
student space: it samples ``n`` distinct architectures (deterministic in the
seed), trains each one from the same seed with soft-target KD from a teacher,
and appends one line per architecture to ``OUT/gt.jsonl``:

    {"index", "arch", "space", "params", "flops", "accuracy_kd", ["accuracy"], "seed", "epochs", "seconds"}

``index`` is the architecture's position in the sample list, ``seed`` the training
seed (``train_seed``, by default the sampling seed), ``accuracy_kd`` the
test accuracy in [0, 1] after KD, ``accuracy`` the test accuracy of plain training
(only with ``no_kd_too``), ``seconds`` the wall-clock time of that line (building, training, testing).

Crash safety: each line is appended, flushed and fsynced on its own, so a killed
run loses at most the architecture in flight; a torn last line is ignored by
readers and cut off when the run resumes. Re-running on the same folder (same settings) skips the
architectures already there. Sharding: shard ``rank`` of ``world`` trains the
sample indices ``i % world == rank`` into ``gt.shard-RANK-of-WORLD.jsonl``;
``merge_shards`` joins the shard files into ``gt.jsonl``.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data import load_data
from ..distill import load_teacher
from ..nn.cost import count_flops, count_params
from ..runs import atomic_write_bytes, atomic_write_json, make_folder
from ..search_spaces import get_space
from .trainer import TrainConfig, train_network

GT_FILE = "gt.jsonl"
CONFIG_FILE = "gt-config.json"
SHARD_FILE = re.compile(r"gt\.shard-(\d+)-of-(\d+)\.jsonl")
# Epochs per student when none is given. Digits (1346 images 8x8) with the NAS-Bench-201 network
# (C=16, N=5): 60 students took 16 minutes on one CPU thread (mean 16 s each) and their KD accuracies
# spread from 55% (cells without a direct edge 0 -> 3, slow to train) to 99.8% (plus chance for cells
# without a path); a probe with N=1 and 10 epochs had every student at 98.7-99.6% (no ranking left).
DEFAULT_EPOCHS = {"digits": 6, "synthetic": 6}
DEFAULT_EPOCHS_OTHER = 30
# Draws in a row without a new architecture before concluding the space holds fewer than n.
SAMPLE_PATIENCE = 10_000


@dataclass
class GroundTruthConfig:
    """Settings of one ground truth; a folder holds one (re-runs must match, except for a larger n).

    The KD objective is DisWOT's benchmark KD: 0.1 * CE + 0.9 * T^2 KL(teacher || student) with
    T = 4 (KDLoss's default), SGD with cosine decay (TrainConfig's optimizer).
    """

    space: str
    data: str = "digits"
    n: int = 60
    seed: int = 0  # draws the sample (and trains it, unless train_seed is given)
    train_seed: int | None = None  # initial weights and batch order; None: seed
    teacher: str = "builtin"
    epochs: int | None = None  # None: DEFAULT_EPOCHS by data kind
    batch_size: int = 64
    lr: float = 0.05
    ce_rate: float = 0.1
    kd_rate: float = 0.9
    no_kd_too: bool = False  # also train each student without KD ("accuracy")
    options: dict = field(default_factory=dict)  # space options for build (C, N for nb201...)

    def __post_init__(self):
        self.options = get_space(self.space).check_options(self.options)
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n: expected at least 1 architecture, got {self.n!r}")
        if self.train_seed is None:
            self.train_seed = self.seed
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS.get(self.data.partition(":")[0], DEFAULT_EPOCHS_OTHER)
        self.train_config(kd=True)  # validates epochs, batch_size, lr and the rates

    def train_config(self, kd: bool) -> TrainConfig:
        """The training settings of one student, with KD or plain (cross-entropy only)."""
        if kd:
            return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, kd="soft",
                               kd_rate=self.kd_rate, ce_rate=self.ce_rate, seed=self.train_seed)
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.train_seed)


def parse_shard(spec: str) -> tuple[int, int]:
    """(rank, world) of a shard spec "i/n" with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if match is None or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"shard: expected 'i/n' with integers 0 <= i < n, got {spec!r}")
    return int(match.group(1)), int(match.group(2))


def shard_indices(count: int, rank: int, world: int) -> list[int]:
    """The sample indices shard `rank` of `world` trains: those with index % world == rank."""
    if not (isinstance(world, int) and world >= 1 and 0 <= rank < world):
        raise ValueError(f"shard: expected 0 <= rank < world, got rank {rank} of world {world}")
    return list(range(rank, count, world))


def output_name(rank: int, world: int) -> str:
    return GT_FILE if world == 1 else f"gt.shard-{rank}-of-{world}.jsonl"


def sample_architectures(space: str, n: int, seed: int) -> list[str]:
    """`n` distinct architectures of `space`, in sampling order, deterministic in `seed`.

    A list for a larger n starts with the list for a smaller one (same seed).
    """
    student_space, rng = get_space(space), random.Random(seed)
    archs: dict[str, None] = {}  # insertion-ordered set
    misses = 0
    while len(archs) < n:
        arch = student_space.sample(rng)
        misses = misses + 1 if arch in archs else 0
        if misses == SAMPLE_PATIENCE:
            raise ValueError(f"n: found only {len(archs)} distinct {space} architectures ({SAMPLE_PATIENCE} draws "
                             f"in a row gave no new one), fewer than the {n} asked for")
        archs.setdefault(arch)
    return list(archs)


def read_records(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The JSON lines of `path` ([] if it does not exist; blank lines skipped); a malformed complete line is an error.

    A torn last line (no final newline: a write killed midway, or one in progress in another
    process) is left out; with `repair` (only the process that appends to the file) it is also
    cut off the file, so the next append starts on a fresh line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if repair and len(complete) != len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
            f.flush()
            os.fsync(f.fileno())
    records = []
    for number, line in enumerate(complete.decode().splitlines(), start=1):
        if not line.strip():
            continue  # not a record (e.g. a blank line left by hand)
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not JSON ({error}); fix or remove it") from None
    return records


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Appends one JSON line and forces it to disk before returning (see the module docstring)."""
    append_records(path, [record])


def append_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Appends one JSON line per record with one write and one fsync (a kill may tear only the last line)."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(record) + "\n" for record in records))
        f.flush()
        os.fsync(f.fileno())


def _check_config(out: Path, config: GroundTruthConfig) -> None:
    """Writes the folder's config on first use; afterwards the settings must match (n may grow)."""
    saved_path = out / CONFIG_FILE
    current = asdict(config)
    if saved_path.exists():
        saved = json.loads(saved_path.read_text())
        differs = sorted(k for k in current if k != "n" and saved.get(k) != current[k])
        if differs:
            details = ", ".join(f"{k}={saved.get(k)!r} there, {current[k]!r} now" for k in differs)
            raise ValueError(f"out: {out} holds a ground truth made with other settings ({details}); "
                             "use another --out or the same settings")
        current["n"] = max(current["n"], saved.get("n", 0))
    atomic_write_json(saved_path, current)


def train_student(arch: str, config: GroundTruthConfig, dataset, teacher, device: torch.device | str = "cpu",
                  index: int | None = None) -> dict:
    """Distills one architecture (and trains it plainly with no_kd_too); returns its gt.jsonl record.

    Every model is built after ``torch.manual_seed(config.train_seed)``, so a student gets the same
    initial weights whatever ran before it (resumed and sharded runs reproduce unsharded ones).
    """
    started = time.time()
    space = get_space(config.space)
    input_shape = (dataset.in_channels, dataset.image_size, dataset.image_size)

    def fresh_model():
        torch.manual_seed(config.train_seed)
        return space.build(arch, dataset.num_classes, dataset.in_channels, image_size=dataset.image_size,
                           **config.options)

    model = fresh_model()
    record = {"index": index, "arch": arch, "space": config.space, "params": count_params(model),
              "flops": count_flops(model, input_shape)}
    result = train_network(model, dataset, config.train_config(kd=True), teacher, device, progress=False)
    record["accuracy_kd"] = result["test_accuracy"]
    if config.no_kd_too:
        result = train_network(fresh_model(), dataset, config.train_config(kd=False), None, device, progress=False)
        record["accuracy"] = result["test_accuracy"]
    record.update(seed=config.train_seed, epochs=config.epochs, seconds=round(time.time() - started, 3))
    return record


def build_ground_truth(config: GroundTruthConfig, out: str | os.PathLike, rank: int = 0, world: int = 1,
                       device: torch.device | str = "cpu", progress: bool = True,
                       log: Callable[[str], None] = print) -> Path:
    """Trains shard `rank` of `world` of the seeded sample into OUT/gt.jsonl (or its shard file).

    Architectures already in that file are skipped. Returns the file's path.
    """
    from tqdm import tqdm

    archs = sample_architectures(config.space, config.n, config.seed)
    todo = shard_indices(len(archs), rank, world)
    out = Path(out)
    make_folder(out)
    _check_config(out, config)
    path = out / output_name(rank, world)
    done = {record["arch"] for record in read_records(path, repair=True)}
    pending = [i for i in todo if archs[i] not in done]
    if pending:
        dataset = load_data(config.data)
        teacher = load_teacher(config.teacher, dataset, device, progress=progress)
    bar = tqdm(pending, desc=f"bench-gt {config.space}", unit="arch", disable=not progress,
               initial=len(todo) - len(pending), total=len(todo))
    for index in bar:
        record = train_student(archs[index], config, dataset, teacher, device, index)
        append_record(path, record)
        log(f"[{index}] {record['arch']}: KD accuracy {record['accuracy_kd']:.4f}, {record['params']:,} params, "
            f"{record['seconds']:.1f}s")
    return path


def merge_shards(out: str | os.PathLike) -> tuple[Path, int]:
    """Joins OUT/gt.shard-*-of-*.jsonl (and any existing gt.jsonl) into gt.jsonl, one line per
    architecture, in sample order. Returns (path, number of lines)."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"merge: {out} is not a folder")
    shards = sorted(p for p in out.iterdir() if SHARD_FILE.fullmatch(p.name))
    if not shards:
        raise FileNotFoundError(f"merge: no gt.shard-I-of-N.jsonl files in {out}")
    worlds = {SHARD_FILE.fullmatch(p.name).group(2) for p in shards}
    if len(worlds) > 1:
        raise ValueError(f"merge: {out} holds shards of different splits (of {sorted(worlds)}); "
                         "merge only files of one run")
    by_arch: dict[str, dict] = {}
    for path in [out / GT_FILE, *shards]:
        for record in read_records(path):
            by_arch.setdefault(record["arch"], record)
    records = sorted(by_arch.values(), key=lambda r: r["index"])
    path = out / GT_FILE
    atomic_write_bytes(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))
    return path, len(records)
