"""The table scripts' plumbing on their --smoke configurations: records, resumption, the printed tables."""

import pytest

import dnad_kd_table
import sddarts_table
from fastnas.evaluators.ground_truth import read_records
from table_runs import mean_sd, parse_shard


def test_sddarts_table_smoke(tmp_path, capsys):
    argv = ["--smoke", "--seeds", "0", "--out", str(tmp_path)]
    sddarts_table.main(argv)
    records = {r["method"]: r for r in read_records(tmp_path / "results.jsonl")}
    assert sorted(records) == sorted(sddarts_table.METHODS)
    assert all([epoch for epoch, _ in r["trajectory"]] == [1, 2] for r in records.values())  # every epoch
    assert all(r["trajectory"][-1][1] == r["sharpness"] for r in records.values())
    # memory: no teacher for DARTS, one network copy per snapshot teacher
    assert records["darts"]["teacher_bytes"] == 0
    assert records["sd-voted"]["teacher_bytes"] == 2 * records["sd-k1"]["teacher_bytes"] > 0
    sddarts_table.main(argv)  # everything done: nothing runs again
    assert len(read_records(tmp_path / "results.jsonl")) == len(sddarts_table.METHODS)
    sddarts_table.main(argv + ["--recheck-sharpness", "--methods", "sd-k1"])
    assert [r["method"] for r in read_records(tmp_path / "results_sharpness.jsonl")] == ["sd-k1"]
    printed = capsys.readouterr().out
    assert all(label in printed for label in sddarts_table.LABELS.values())
    assert "| sharpness after epoch | 1 | 2 |" in printed


def test_dnad_kd_table_smoke(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTNAS_CACHE", str(tmp_path / "cache"))  # the built-in teacher is trained here
    dnad_kd_table.main(["--smoke", "--seeds", "0", "--kd", "none", "at", "--out", str(tmp_path)])
    records = read_records(tmp_path / "results.jsonl")
    assert [r["kd"] for r in records] == ["none", "at"]
    for r in records:  # the smoke search never reaches its floor: both of its epochs, whole
        assert r["search_epochs"] == 2 and r["search_steps"] % 2 == 0 and r["pareto_points"] >= 1
    assert "SNPS + AT (beta x mean over stages)" in capsys.readouterr().out


def test_shard_and_cells():
    assert parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "1", "a/b"):
        with pytest.raises(ValueError, match="shard: expected"):
            parse_shard(bad)
    assert mean_sd([1.0, 3.0], 2) == "2.00 ± 1.41" and mean_sd([5.0], 1) == "5.0 ± 0.0" and mean_sd([], 1) == "-"
