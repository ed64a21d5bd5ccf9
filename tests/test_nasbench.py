"""NAS-Bench-201 as ground truth: the compact table, the NATS-Bench files, the benchmark's cost counts, the
ImageNet16-120 reader and `fastnas proxies --benchmark` / `fastnas nasbench export` on fixtures in the real layouts.

The real benchmark files are not on the test machine; the NATS-Bench fixtures are written with the nats_bench
package's own classes and pickle_save, in the layout its loaders read (the fast-mode folder and the single file).
"""

import json
import math
import platform
import pickle
import random
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from fastnas.cli import main, run
from fastnas.data import batches, load_data
from fastnas.evaluators.proxy_table import correlation_table, read_scores
from fastnas.nasbench import (DATASETS, PUBLISHED_SPEARMAN, BenchmarkTable, benchmark_cost, rank_block, read_nats,
                              read_table, sample_indices, write_table)
from fastnas.proxies import batched
from fastnas.proxies.batched import SharedNB201, score_nb201
from fastnas.search_spaces import nb201

try:
    import nats_bench  # in requirements.txt; without it only the NATS-Bench tests skip
except ImportError:
    nats_bench = None
needs_nats = pytest.mark.skipif(nats_bench is None, reason="needs the nats_bench package")

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def random_table(n: int, seed: int = 0) -> BenchmarkTable:
    rng = random.Random(seed)
    archs = nb201.all_archs()
    archs = [archs[i] for i in sorted(rng.sample(range(len(archs)), n))]
    accuracy = {name: torch.tensor([rng.uniform(10, 95) for _ in archs], dtype=torch.float64) for name in DATASETS}
    return BenchmarkTable(archs, accuracy, ["a test table"])


# --- the compact table ---------------------------------------------------------------------------------------

def test_table_round_trip_and_canonical_archs(tmp_path):
    table = random_table(20)
    write_table(tmp_path / "t.csv", table)
    back = read_table(tmp_path / "t.csv")
    assert back.archs == table.archs and back.comment == ["a test table"]
    for name in DATASETS:
        assert torch.equal(back.column(name), table.accuracy[name])  # repr() keeps every digit
    # edges of a node in another order name the same cell; a table may hold some of the datasets only
    (tmp_path / "u.csv").write_text("# from hand\narch,cifar100\n|nor_conv_3x3~0|+|none~1|skip_connect~0|+"
                                    "|none~2|none~1|nor_conv_1x1~0|,71.5\n")
    hand = read_table(tmp_path / "u.csv")
    assert hand.archs == ["|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"]
    assert hand.column("cifar100").tolist() == [71.5]
    with pytest.raises(ValueError, match=r"dataset: expected one of the table's columns \['cifar100'\]"):
        hand.column("cifar10")


@pytest.mark.parametrize("text,message", [
    ("arch,cifar10,svhn\n", "expected the header arch,<one or more of cifar10, cifar100, ImageNet16-120>"),
    ("cifar10,arch\n", "expected the header arch"),
    ("arch,cifar10\n", "holds a header but no architecture"),
    ("# only a comment\n", "holds no header line"),
    (f"arch,cifar10\n{ALL_NONE},10.0,3\n", "line 2: expected 2 fields, got 3"),
    (f"arch,cifar10\n{ALL_NONE},ten\n", "line 2: could not convert string to float"),
    ("arch,cifar10\n|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|,10\n", "line 2: arch: unknown operation 'conv'"),
    (f"arch,cifar10\n{ALL_NONE},10\n\n|none~0|+|none~1|none~0|+|none~0|none~1|none~2|,11\n",
     r"line 4: \|none~0\|.* is already on line 2"),
])
def test_malformed_table(tmp_path, text, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_table(tmp_path / "t.csv")


def test_missing_table(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark: .*nowhere.csv does not exist"):
        read_table(tmp_path / "nowhere.csv")


def test_the_whole_space_reads_in_under_100_mb(tmp_path):
    table = random_table(15625)
    write_table(tmp_path / "all.csv", table)
    tracemalloc.start()
    back = read_table(tmp_path / "all.csv")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(back) == 15625 and back.archs == nb201.all_archs()
    assert peak < 100 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"


def test_sample_indices():
    assert sample_indices(5, "all") == [0, 1, 2, 3, 4]
    small, large = sample_indices(100, 10, seed=3), sample_indices(100, "40", seed=3)
    assert len(set(small)) == 10 and set(small) <= set(large) and large == sorted(large)
    assert sample_indices(100, 10, seed=4) != small
    for bad in (0, 101, "some", -1):
        with pytest.raises(ValueError, match=r"sample: expected 'all' or a number of cells in 1\.\.100"):
            sample_indices(100, bad)


# --- the benchmark's own counts --------------------------------------------------------------------------------

def test_rank_blocks_are_contiguous_runs_of_the_space():
    space = nb201.all_archs()
    assert rank_block(list(reversed(space)), 0, 2) == space[:7812] and rank_block(space, 1, 2) == space[7812:]
    cells = random_table(50, seed=3).archs[::-1]
    blocks = [rank_block(cells, rank, 3) for rank in range(3)]
    assert [len(block) for block in blocks] == [16, 17, 17]
    assert sum(blocks, []) == sorted(cells, key=space.index)
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world_size = 2, got 2"):
        rank_block(cells, 2, 2)


def test_keep_freed_memory_respects_the_users_glibc_settings(monkeypatch):
    # In a child process: the thresholds, once set, would hold for the rest of this test session.
    def applied() -> bool:
        code = "from fastnas.cli.common import keep_freed_memory; print(keep_freed_memory())"
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return child.stdout.strip() == "True"

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert applied() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert applied() is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_benchmark_cost_by_hand():
    """AutoDL-Projects' counting, by hand. All-none cell, CIFAR-10: stem 3*16*9 + BN 32 = 464; reduction 16->32:
    9*16*32 + 64 + 9*32*32 + 64 + 16*32 = 14464; reduction 32->64: 57600; last BN 128; classifier 64*10 + 10.
    MACs: stem 432 * 32^2, reductions 14336 * 16^2 and 57344 * 8^2, classifier 640, plus its 10 bias additions."""
    assert benchmark_cost(ALL_NONE, "cifar10") == pytest.approx({"params": 0.073306, "flops": 7.78305})
    # all 3x3: 6 ReLU-Conv-BN (9 w^2 + 2 w weights, 9 w^2 side^2 MACs) in each of 5 cells of 3 stages
    params = 73306 + 30 * (9 * 16 ** 2 + 32) + 30 * (9 * 32 ** 2 + 64) + 30 * (9 * 64 ** 2 + 128)
    macs = 7783040 + 30 * 9 * (16 ** 2 * 32 ** 2 + 32 ** 2 * 16 ** 2 + 64 ** 2 * 8 ** 2)
    assert benchmark_cost(ALL_3X3, "cifar10") == pytest.approx({"params": params / 1e6, "flops": (macs + 10) / 1e6})
    assert params == 1531546
    # ImageNet16-120: 16x16 images, 120 classes (classifier 64*120 + 120)
    assert benchmark_cost(ALL_NONE, "ImageNet16-120") == pytest.approx(
        {"params": (464 + 14464 + 57600 + 128 + 7800) / 1e6,
         "flops": (432 * 16 ** 2 + 14336 * 8 ** 2 + 57344 * 4 ** 2 + 7680 + 120) / 1e6})
    with pytest.raises(ValueError, match="dataset: expected one of"):
        benchmark_cost(ALL_NONE, "svhn")


# --- ImageNet16-120 -------------------------------------------------------------------------------------------

def fake_imagenet16(root, per_batch: int = 6, n_val: int = 8):
    """The ImageNet16 folder: train_data_batch_1..10 and val_data, Python-3 pickles of uint8 rows and 1-based
    labels over 1000 classes. Returns the raw rows and labels of (train, val) that ImageNet16-120 keeps."""
    rng = np.random.default_rng(0)
    folder = root / "ImageNet16"
    folder.mkdir(parents=True)
    kept = {"train": ([], []), "val": ([], [])}
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        count = n_val if name == "val_data" else per_batch
        data = rng.integers(0, 256, (count, 768), dtype=np.uint8)
        labels = [int(x) for x in rng.choice([1, 2, 60, 119, 120, 121, 500, 1000], count)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "mean": np.zeros(768)}, f)
        rows, targets = kept["val" if name == "val_data" else "train"]
        for row, label in zip(data, labels):
            if label <= 120:
                rows.append(row)
                targets.append(label - 1)
    return kept


def test_imagenet16_keeps_the_120_classes(tmp_path):
    kept = fake_imagenet16(tmp_path)
    data = load_data(f"imagenet16:{tmp_path}")
    assert (data.name, data.num_classes, data.in_channels, data.image_size) == ("imagenet16", 120, 3, 16)
    assert data.train.labels.tolist() == kept["train"][1] and data.test.labels.tolist() == kept["val"][1]
    raw = torch.from_numpy(np.stack(kept["train"][0])).float().reshape(-1, 3, 16, 16) / 255
    mean, std = raw.mean(dim=(0, 2, 3), keepdim=True), raw.std(dim=(0, 2, 3), keepdim=True, correction=0)
    torch.testing.assert_close(data.train.images, (raw - mean) / std, atol=1e-5, rtol=0)
    assert load_data(f"imagenet16:{tmp_path / 'ImageNet16'}").train.labels.tolist() == kept["train"][1]
    (tmp_path / "ImageNet16" / "train_data_batch_7").unlink()
    with pytest.raises(FileNotFoundError, match="lacks train_data_batch_7"):
        load_data(f"imagenet16:{tmp_path}")


# --- the NATS-Bench topology files ------------------------------------------------------------------------------

NATS_ARCHS = [ALL_3X3, "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|",
              ALL_NONE]
# The evaluation sets NATS-Bench holds per dataset (nats_bench api_utils.py ArchResults.get_metrics).
NATS_SETS = {"cifar10-valid": ("x-valid", "ori-test"), "cifar10": ("ori-test",),
             "cifar100": ("x-valid", "x-test", "ori-test"), "ImageNet16-120": ("x-valid", "x-test", "ori-test")}
NATS_SEEDS = {"200": (777, 888), "12": (111,)}


def nats_accuracy(index: int, dataset: str, setname: str, seed: int, hp: str) -> float:
    """The fixture's final-epoch accuracy: every choice moves it by a distinct amount."""
    return (10.0 * index + {"cifar10-valid": 1, "cifar10": 2, "cifar100": 3, "ImageNet16-120": 4}[dataset]
            + {"x-valid": 0.1, "x-test": 0.2, "ori-test": 0.3}[setname] + seed / 1000 + (hp == "200") * 50)


def nats_results(index: int, arch: str) -> dict:
    """{hp: ArchResults state dict} of one cell, built with nats_bench's classes as the benchmark's files hold it."""
    by_hp = {}
    for hp, seeds in NATS_SEEDS.items():
        epochs = int(hp)
        results = nats_bench.ArchResults(index, arch)
        for dataset, sets in NATS_SETS.items():
            for seed in seeds:
                count = nats_bench.ResultsCount(dataset, None, {e: 1.0 for e in range(epochs)},
                                                {e: 2.0 for e in range(epochs)}, 0.5, 40.0,
                                                {"arch_str": arch, "channel": 16, "num_cells": 5}, seed, epochs, [0.01])
                accs, losses, times = {}, {}, {}
                for setname in sets:
                    for epoch in range(epochs):
                        last = epoch == epochs - 1
                        accs[f"{setname}@{epoch}"] = nats_accuracy(index, dataset, setname, seed, hp) if last else 0.0
                        losses[f"{setname}@{epoch}"], times[f"{setname}@{epoch}"] = 1.0, 0.1
                count.update_eval(accs, losses, times)
                results.update(dataset, seed, count)
        by_hp[hp] = results.state_dict()
    return by_hp


@pytest.fixture(scope="module")
def nats_files(tmp_path_factory):
    """Both forms: the fast-mode folder (meta + one file per cell) and the single file."""
    root = tmp_path_factory.mktemp("nats")
    folder = root / "NATS-tss-v1_0-3ffb9-simple"
    folder.mkdir()
    nats_bench.pickle_save({"meta_archs": NATS_ARCHS}, str(folder / "meta.pickle"))
    infos = {}
    for index, arch in enumerate(NATS_ARCHS):
        infos[index] = nats_results(index, arch)
        nats_bench.pickle_save(infos[index], str(folder / f"{index:06d}.pickle"))
    single = root / "NATS-tss-v1_0-3ffb9.pickle"
    nats_bench.pickle_save({"meta_archs": NATS_ARCHS, "arch2infos": infos,
                            "evaluated_indexes": list(range(len(NATS_ARCHS)))}, str(single))
    return folder, root / "NATS-tss-v1_0-3ffb9.pickle.pbz2"


def expected_column(dataset: str, setname: str, seeds, hp: str) -> list[float]:
    return [sum(nats_accuracy(i, dataset, setname, s, hp) for s in seeds) / len(seeds) for i in range(3)]


@needs_nats
@pytest.mark.parametrize("form", [0, 1], ids=["folder", "file"])
def test_read_nats_every_choice(nats_files, form):
    path = nats_files[form]
    table = read_nats(path)  # hp 200, test accuracy, mean over seeds, cifar10 from cifar10-valid
    assert table.archs == NATS_ARCHS
    seeds = NATS_SEEDS["200"]
    assert table.column("cifar10").tolist() == pytest.approx(expected_column("cifar10-valid", "ori-test", seeds, "200"))
    assert table.column("cifar100").tolist() == pytest.approx(expected_column("cifar100", "x-test", seeds, "200"))
    assert table.column("ImageNet16-120").tolist() == pytest.approx(
        expected_column("ImageNet16-120", "x-test", seeds, "200"))
    valid = read_nats(path, metric="valid")
    assert valid.column("cifar10").tolist() == pytest.approx(expected_column("cifar10-valid", "x-valid", seeds, "200"))
    assert valid.column("cifar100").tolist() == pytest.approx(expected_column("cifar100", "x-valid", seeds, "200"))
    one_seed = read_nats(path, seed=888, datasets=["cifar100"])
    assert one_seed.column("cifar100").tolist() == pytest.approx(expected_column("cifar100", "x-test", [888], "200"))
    short = read_nats(path, hp="12", cifar10="cifar10")
    assert short.column("cifar10").tolist() == pytest.approx(expected_column("cifar10", "ori-test", [111], "12"))
    assert "test accuracy (%) after the 12-epoch schedule, the mean over the trials; cifar10 = NATS-Bench's " \
           "cifar10" in short.comment[0]


@needs_nats
def test_read_nats_bad_choices(nats_files, tmp_path):
    folder = nats_files[0]
    with pytest.raises(ValueError, match="nats: cell 0 has no cifar10-valid results for hp=200, seed=5"):
        read_nats(folder, seed=5)
    with pytest.raises(ValueError, match="metric: NATS-Bench's cifar10 .* has no validation accuracy"):
        read_nats(folder, metric="valid", cifar10="cifar10")
    with pytest.raises(ValueError, match=r"hp: expected one of \('12', '200'\)"):
        read_nats(folder, hp="90")
    with pytest.raises(ValueError, match="metric: expected one of"):
        read_nats(folder, metric="train")
    with pytest.raises(ValueError, match="cifar10: expected cifar10-valid or cifar10"):
        read_nats(folder, cifar10="cifar10-test")
    with pytest.raises(FileNotFoundError, match="nats: .*missing does not exist"):
        read_nats(tmp_path / "missing")


@needs_nats
def test_export_writes_the_table_once(nats_files, tmp_path, capsys):
    out = tmp_path / "nb201.csv"
    assert main(["nasbench", "export", "--nats", str(nats_files[0]), "--out", str(out), "--seed", "777"]) == 0
    assert "wrote 3 cells to" in capsys.readouterr().out
    table = read_table(out)
    direct = read_nats(nats_files[0], seed=777)
    assert table.archs == direct.archs and table.comment == direct.comment
    for name in DATASETS:
        assert torch.equal(table.column(name), direct.column(name))
    assert run(["nasbench", "export", "--nats", str(nats_files[0]), "--out", str(out), "--seed", "x"]) == 2
    assert "fastnas nasbench export: error: seed: expected 'mean' or a trial's integer seed" in capsys.readouterr().err


# --- fastnas proxies --benchmark ----------------------------------------------------------------------------------

def benchmark_args(table, out, *extra):
    return ["proxies", "--benchmark", f"nb201:{table}", "--dataset", "ImageNet16-120", "--C", "4", "--N", "1",
            "--bootstrap", "50", "--out", str(out), "--quiet", "--device", "cpu", *extra]


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "nb201.csv"
    write_table(path, random_table(24, seed=1))
    return path


def test_benchmark_correlations_equal_a_direct_computation(table_file, tmp_path, capsys):
    names = ["synflow", "params", "flops", "snip", "nwot"]
    out = tmp_path / "run"
    assert main(benchmark_args(table_file, out, "--proxies", ",".join(names), "--sample", "16", "--seed", "2",
                               "--data", "synthetic", "--batch-size", "16")) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "correlations.json").read_text())
    assert report["architectures"] == 16 and report["dataset"] == "ImageNet16-120" and set(report["proxies"]) == \
        set(names)
    # the same cells, weights and batch by hand
    table = read_table(table_file)
    rows = sample_indices(len(table), 16, seed=2)
    dataset = load_data("synthetic")
    batch = next(batches(dataset.train, 16, shuffle=True, seed=2, drop_last=True))
    torch.manual_seed(2)
    shared = SharedNB201(4, 1, 120, 3)
    scores = score_nb201(names, [table.archs[i] for i in rows], shared, batch)
    want = correlation_table(names, torch.stack([scores[n] for n in names]), table.column("ImageNet16-120")[rows])
    for row in want:
        got = report["proxies"][row["proxy"]]
        assert got["spearman"] == pytest.approx(row["spearman"]) and got["kendall"] == pytest.approx(row["kendall"])
        assert got["n"] == 16 and got["spearman_ci"][0] <= got["spearman"] <= got["spearman_ci"][1]
        assert (out / f"scatter-{row['proxy']}.png").stat().st_size > 0
    assert report["proxies"]["synflow"]["published_spearman"] == PUBLISHED_SPEARMAN["ImageNet16-120"]["synflow"]
    assert report["proxies"]["params"]["published_spearman"] is None
    assert "| synflow |" in printed and "0.751" in printed
    assert len(read_scores([out / "scores.jsonl"])) == 16 * len(names)


def test_benchmark_data_free_proxies_need_no_data(table_file, tmp_path):
    out = tmp_path / "run"
    main(benchmark_args(table_file, out, "--dataset", "cifar10", "--sample", "6"))
    report = json.loads((out / "correlations.json").read_text())
    assert sorted(report["proxies"]) == ["flops", "params", "synflow"]  # the default without --data
    scores = read_scores([out / "scores.jsonl"])
    arch = next(iter(scores))[0]
    assert scores[(arch, "params")] == nb201.count_cost(nb201.parse_arch(arch), 4, 1, 10, 3, 32)[0]


def test_a_killed_benchmark_run_continues(table_file, tmp_path, monkeypatch):
    args = benchmark_args(table_file, tmp_path / "run", "--proxies", "synflow,params")
    main(args)
    first = json.loads((tmp_path / "run" / "correlations.json").read_text())["proxies"]
    scores = tmp_path / "run" / "scores.jsonl"
    lines = scores.read_text().splitlines(keepends=True)
    scores.write_text("".join(lines[:5]) + lines[5][:20])  # killed while appending the 6th line
    scored = []
    real = batched.score_nb201
    monkeypatch.setattr(batched, "score_nb201", lambda names, archs, *a, **k: scored.extend(archs) or real(
        names, archs, *a, **k))
    main(args)
    assert len(scored) == 24 - 5
    again = json.loads((tmp_path / "run" / "correlations.json").read_text())["proxies"]
    assert again == first
    main(args + ["--proxies", "synflow,params,flops"])  # one more proxy: only it is computed, for every cell
    assert len(scored) == 24 - 5 + 24


@pytest.mark.parametrize("extra,message", [
    (["--proxies", "synflow,jacov"], r"data: proxies \['jacov'\] read a batch of images"),
    (["--sample", "25"], r"sample: expected 'all' or a number of cells in 1\.\.24"),
    (["--proxies", "synflow,zen"], "proxy: unknown name 'zen'"),
    (["--bootstrap", "0"], "bootstrap: expected a number of resamples >= 1, got 0"),
    (["--batch-size", "0", "--data", "synthetic", "--proxies", "nwot"], "batch_size must be positive, got 0"),
    (["--C", "0"], "C: expected a positive integer, got 0"),
])
def test_benchmark_bad_input(table_file, tmp_path, capsys, extra, message):
    assert run(benchmark_args(table_file, tmp_path / "run", *extra)) == 2
    error = capsys.readouterr().err
    assert re.search(message, error), error


@pytest.mark.parametrize("kind,dataset,held", [("cifar10", "ImageNet16-120", "10 classes of 3x32x32"),
                                                ("cifar100", "cifar10", "100 classes of 3x32x32")])
def test_benchmark_refuses_data_of_another_shape(table_file, tmp_path, capsys, kind, dataset, held):
    from test_data import fake_cifar

    fake_cifar(tmp_path / "data", kind)
    assert run(benchmark_args(table_file, tmp_path / "run", "--data", f"{kind}:{tmp_path / 'data'}",
                              "--dataset", dataset, "--proxies", "nwot")) == 2
    side = 16 if dataset == "ImageNet16-120" else 32
    assert (f"data: {kind}:{tmp_path / 'data'} holds {held} images; NAS-Bench-201's {dataset} networks take "
            f"3x{side}x{side} images") in capsys.readouterr().err


def test_synthetic_data_takes_the_benchmarks_shape(table_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(benchmark_args(table_file, out, "--data", "synthetic", "--dataset", "cifar10", "--proxies",
                               "nwot,params", "--sample", "6", "--batch-size", "8")) == 0
    report = json.loads((out / "correlations.json").read_text())
    assert report["dataset"] == "cifar10" and report["proxies"]["nwot"]["n"] == 6
    assert "note: ['nwot'] scored random synthetic images" in capsys.readouterr().out


def test_benchmark_bad_spec_and_folder(table_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["proxies", "--benchmark", str(table_file), "--out", str(out)]) == 2
    assert "benchmark: expected nb201:TABLE.csv" in capsys.readouterr().err
    assert run(["proxies", "--benchmark", f"nb201:{tmp_path / 'no.csv'}", "--out", str(out)]) == 2
    assert "benchmark: " in capsys.readouterr().err
    assert run(["proxies", "--benchmark", f"nb201:{table_file}", "--gt", "gt.jsonl", "--out", str(out)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    main(benchmark_args(table_file, out, "--sample", "3"))
    assert run(benchmark_args(table_file, out, "--sample", "3", "--seed", "1")) == 2
    assert "out: " in capsys.readouterr().err  # scores of another seed are not mixed in


def test_torchrun_benchmark_equals_one_process(table_file, tmp_path):
    from test_distributed import WORLD, torchrun

    args = ["proxies", "--benchmark", f"nb201:{table_file}", "--dataset", "ImageNet16-120", "--C", "4", "--N", "1",
            "--proxies", "synflow,params,snip", "--data", "synthetic", "--batch-size", "8", "--sample", "9",
            "--bootstrap", "20"]
    torchrun(1, *args, "--out", str(tmp_path / "one"))
    torchrun(WORLD, *args, "--out", str(tmp_path / "two"))
    one, two = (read_scores([tmp_path / name / "scores.jsonl"]) for name in ("one", "two"))
    assert len(one) == 9 * 3 and one.keys() == two.keys()
    for key, value in one.items():  # the ranks' passes group other cells: float rounding differs at most
        assert math.isclose(two[key], value, rel_tol=1e-5), key
    assert not list((tmp_path / "two").glob("scores.rank-*"))
