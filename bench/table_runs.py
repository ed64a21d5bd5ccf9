"""What the table scripts of bench/ share: jobs over seeds that resume, one JSON line per finished job.

A job is one search (and the training of what it found) in its own run folders; a job whose line is
already in the results file is skipped, and an interrupted one continues from its checkpoints. `--shard
i/n` runs every n-th job only, so that single-threaded processes can share the work and the file
(each line is one append, forced to disk; a torn last line is left out when reading: ground_truth's
read_records and append_record).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Sequence

from fastnas.cli import main as fastnas
from fastnas.evaluators.ground_truth import append_record, read_records


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        shard, shards = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard: expected i/n (e.g. 0/2), got {text!r}") from None
    if not 0 <= shard < shards:
        raise ValueError(f"shard: expected 0 <= i < n, got {text!r}")
    return shard, shards


def run_fastnas(argv: Sequence[str], out: Path) -> None:
    """`fastnas <argv> --out <out> --quiet`, continuing the run in `out` if it holds a checkpoint."""
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    fastnas([*argv, "--out", str(out), "--quiet", *resume])


def run_jobs(jobs: Sequence[tuple], measure: Callable[..., dict], results: Path, shard: str,
             done: Callable[[dict, tuple], bool]) -> None:
    """measure(*job) for each job of this shard not yet in `results` (done(record, job)); appends each record."""
    index_of_shard, shards = parse_shard(shard)
    results.parent.mkdir(parents=True, exist_ok=True)
    for index, job in enumerate(jobs):
        # A lone process cuts a torn last line (a killed write) off the file; with shards that line may be
        # another shard's append in progress, so it is only left out.
        records = read_records(results, repair=shards == 1)
        if index % shards != index_of_shard or any(done(r, job) for r in records):
            continue
        append_record(results, measure(*job))


def mean_sd(values: Sequence[float], digits: int) -> str:
    """'mean ± sample standard deviation' ('-' for no values; the spread of one value is 0)."""
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"
