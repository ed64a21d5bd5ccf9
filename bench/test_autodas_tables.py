"""bench/autodas_nb201_digits.py on its --smoke configuration: the tables' plumbing and their statistics."""

import json

import pytest
import torch

import autodas_nb201_digits
from fastnas.evaluators.proxy_table import load_ground_truth, nan_as_lowest, read_scores
from fastnas.evaluators.statistics import correlation_interval
from fastnas.proxies import available_proxies


def test_autodas_table_smoke(tmp_path, capsys):
    report = autodas_nb201_digits.main(["--smoke", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "autodas-nb201-digits.json").read_text())
    assert saved["architectures"] == 8 and set(saved["whole"]["0"]) == set(available_proxies())
    # the whole-table interval of a proxy is the statistics module's on the cached scores
    truth = load_ground_truth(tmp_path / "gt" / "gt.jsonl")
    cached = read_scores([tmp_path / "proxies-random-seed0" / "scores.jsonl"])
    snip = nan_as_lowest(torch.tensor([cached[(a, "snip")] for a in truth.archs], dtype=torch.float64))
    expected = correlation_interval(snip, truth.accuracy, "kendall", n_boot=50, seed=0)
    assert report["whole"][0]["snip"]["kendall"]["low"] == pytest.approx(expected["low"])
    held = report["held_out"][0]
    assert held["architectures"] == 3  # split_indices(8, 4 / 7): 5 fitted, 3 held out
    assert "searched" in held["proxies"] and held["proxies"]["searched"]["vs_best"]["proxy"] in available_proxies()
    printed = capsys.readouterr().out
    assert "| proxy | Kendall tau |" in printed and "Held out" in printed
    autodas_nb201_digits.main(["--smoke", "--out", str(tmp_path)])  # resumes: the cached scores and the search
