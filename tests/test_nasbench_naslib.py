"""NASLib's zero-cost benchmark file as NAS-Bench-201 ground truth, and fastnas against real benchmark cells.

tests/fixtures/zc_nasbench201_subset.json holds real cells of NASLib's zc_nasbench201.json in that file's layout
(its "_source" says which: 174 cifar100 cells, the first 163 of them also for cifar10): their NB201 parameter
counts (and cifar100 FLOPs), NASLib's synflow and val_accuracy. On them fastnas's counts, its synflow and
`fastnas proxies --benchmark` meet real values.
"""

import ast
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from fastnas.cli import main, run
from fastnas.evaluators.proxy_table import read_scores
from fastnas.nasbench import PUBLISHED_SPEARMAN, benchmark_cost, naslib_arch, read_naslib, read_table

REAL = Path(__file__).parent / "fixtures" / "zc_nasbench201_subset.json"


def real_cells(dataset: str) -> dict[str, dict]:
    """{NB201 string: NASLib's entry} of the fixture's cells of `dataset`."""
    cells = json.loads(REAL.read_text())["nasbench201"][dataset]
    return {naslib_arch(ast.literal_eval(key)): entry for key, entry in cells.items()}


def test_naslib_arch_by_hand():
    """NASLib's convert_op_indices_to_str: op i of its EDGE_LIST (1,2) (1,3) (1,4) (2,3) (2,4) (3,4), ops
    skip_connect, none, nor_conv_3x3, nor_conv_1x1, avg_pool_3x3; written node by node."""
    assert naslib_arch((4, 3, 3, 3, 2, 3)) == \
        "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert naslib_arch((0, 1, 2, 3, 4, 0)) == \
        "|skip_connect~0|+|none~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|skip_connect~2|"
    for bad in [(0, 1, 2, 3, 4), (0, 1, 2, 3, 4, 5), (0, 1, 2, 3, 4, 1.0)]:
        with pytest.raises(ValueError, match="expected six NASLib op indices in 0..4"):
            naslib_arch(bad)


def write_naslib(path, by_dataset):
    path.write_text(json.dumps({"nasbench201": by_dataset}))
    return path


def test_read_naslib_keeps_the_cells_every_column_holds(tmp_path):
    entry = lambda acc: {"val_accuracy": acc, "synflow": 1.0}  # noqa: E731
    path = write_naslib(tmp_path / "zc.json", {
        "cifar100": {"(2, 2, 2, 2, 2, 2)": entry(70.5), "(1, 1, 1, 1, 1, 1)": entry(1.0), "(0, 0, 0, 0, 0, 0)":
                     entry(30.0)},
        "cifar10": {"(0, 0, 0, 0, 0, 0)": entry(40.0), "(2, 2, 2, 2, 2, 2)": entry(93.0)}})
    table = read_naslib(path)
    assert sorted(table.accuracy) == ["cifar10", "cifar100"]
    assert table.archs == [naslib_arch((0,) * 6), naslib_arch((2,) * 6)]  # cifar10's order (DATASETS' first)
    assert table.column("cifar10").tolist() == [40.0, 93.0] and table.column("cifar100").tolist() == [30.0, 70.5]
    only = read_naslib(path, datasets=["cifar100"])
    assert len(only) == 3 and only.column("cifar100").tolist() == [70.5, 1.0, 30.0]
    with pytest.raises(ValueError, match=r"datasets: expected some of \['cifar10', 'cifar100'\]"):
        read_naslib(path, datasets=["ImageNet16-120"])
    with pytest.raises(FileNotFoundError, match="naslib: .*missing.json does not exist"):
        read_naslib(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"nasbench101": {}}')
    with pytest.raises(ValueError, match="not NASLib's zero-cost benchmark file"):
        read_naslib(tmp_path / "other.json")
    bad = write_naslib(tmp_path / "bad.json", {"cifar10": {"(0, 0, 0, 0, 0, 9)": entry(1.0)}})
    with pytest.raises(ValueError, match=r"cell \(0, 0, 0, 0, 0, 9\).*six NASLib op indices"):
        read_naslib(bad)
    disjoint = write_naslib(tmp_path / "disjoint.json", {"cifar10": {"(0, 0, 0, 0, 0, 0)": entry(1.0)},
                                                         "cifar100": {"(1, 1, 1, 1, 1, 1)": entry(1.0)}})
    with pytest.raises(ValueError, match="holds no cell that every one of"):
        read_naslib(disjoint)


def test_export_from_naslib(tmp_path, capsys):
    out = tmp_path / "nb201.csv"
    assert main(["nasbench", "export", "--naslib", str(REAL), "--out", str(out)]) == 0
    assert "wrote 163 cells to" in capsys.readouterr().out  # the cells both cifar10 and cifar100 hold
    table, direct = read_table(out), read_naslib(REAL)
    assert table.archs == direct.archs == list(real_cells("cifar10")) and table.comment == direct.comment
    for name in ("cifar10", "cifar100"):
        assert table.column(name).tolist() == direct.column(name).tolist()
        assert table.column(name).tolist() == [real_cells(name)[arch]["val_accuracy"] for arch in table.archs]
    assert run(["nasbench", "export", "--naslib", str(REAL), "--out", str(out), "--hp", "12"]) == 2
    assert "naslib: --hp choose among the NATS-Bench files' results" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nasbench", "export", "--naslib", str(REAL), "--nats", str(REAL), "--out", str(out)])
    assert "not allowed with argument" in capsys.readouterr().err


def scores_of(out) -> set[str]:
    return {arch for arch, _ in read_scores([out / "scores.jsonl"])}


def test_counts_equal_the_benchmark_on_real_cells():
    """Parameters equal NB201's for every real cell. NASLib's FLOPs are the same Conv2d and Linear MACs plus what
    its counter adds: each avg_pool_3x3 edge (C H W 3^2 per cell: 1.29024 M over the 5 cells of 3 stages at C=16,
    32x32), 3 elementwise operations per output of each ReLU-Conv-BN edge (0.43008 M), and 0.160732 M for the
    fixed skeleton (the stem's BN, the reductions' pools and BNs, the global pool)."""
    for arch, entry in real_cells("cifar10").items():
        assert benchmark_cost(arch, "cifar10")["params"] == pytest.approx(entry["params"], abs=1e-9), arch
    cells = real_cells("cifar100")
    assert len(cells) == 174 and len(read_naslib(REAL, datasets=["cifar100"])) == 174
    ops = {"avg_pool_3x3": 1.29024, "nor_conv_3x3": 0.43008, "nor_conv_1x1": 0.43008}
    for arch, entry in cells.items():
        cost = benchmark_cost(arch, "cifar100")
        assert cost["params"] == pytest.approx(entry["params"], abs=1e-9), arch
        added = 0.160732 + sum(ops.get(part.split("~")[0], 0.0) for part in arch.strip("|").replace("+", "").split("|")
                               if part)
        assert cost["flops"] + added == pytest.approx(entry["flops"], abs=1e-6), arch


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_benchmark_run_on_real_cells(dataset, tmp_path, capsys):
    """The README's workflow on the real cells: synflow's Spearman with the accuracy holds the published value
    (0.737 / 0.763 over all 15,625 cells) in its interval, and ranks the cells as NASLib's synflow does."""
    table = tmp_path / "nb201.csv"
    assert main(["nasbench", "export", "--naslib", str(REAL), "--out", str(table)]) == 0
    out = tmp_path / "run"
    assert main(["proxies", "--benchmark", f"nb201:{table}", "--dataset", dataset, "--proxies",
                 "synflow,params", "--sample", "all", "--bootstrap", "300", "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    report = json.loads((out / "correlations.json").read_text())["proxies"]
    synflow = report["synflow"]
    assert synflow["n"] == 163 and synflow["nan_scores"] == 0
    assert synflow["spearman_ci"][0] <= PUBLISHED_SPEARMAN[dataset]["synflow"] <= synflow["spearman_ci"][1]
    assert synflow["spearman"] > 0.65
    cells = {arch: entry for arch, entry in real_cells(dataset).items() if arch in scores_of(out)}
    scores = read_scores([out / "scores.jsonl"])
    archs = sorted(cells)
    assert len(archs) == 163
    ours = [math.log(scores[(arch, "synflow")]) for arch in archs]
    theirs = [cells[arch]["synflow"] for arch in archs]  # NASLib stores log synflow
    assert stats.spearmanr(ours, theirs)[0] > 0.99
    accuracy = [cells[arch]["val_accuracy"] for arch in archs]
    assert report["params"]["spearman"] == pytest.approx(stats.spearmanr(
        [cells[arch]["params"] for arch in archs], accuracy)[0], abs=1e-9)
