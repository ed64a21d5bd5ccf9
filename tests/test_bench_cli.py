"""`fastnas bench`: runs from an installed package (no bench/ folder, any working directory) and prints ratios."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastnas
from fastnas import benchmarks, cli

REPO = Path(__file__).resolve().parent.parent
QUICK_OPS = {"mixed_node", "at_loss", "pair_distance", "gram_distance", "rank_corr", "foreach_reduce"}


def test_quick_bench_from_outside_the_repository(tmp_path):
    # Only the package is on the path (as after pip install) and cwd is a temporary folder: nothing of the
    # repository's bench/ or tests/ is reachable.
    site = tmp_path / "site"
    site.mkdir()
    (site / "fastnas").symlink_to(REPO / "fastnas", target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "fastnas", "bench", "--quick", "--quiet", "--device", "cpu",
                             "--json", "timings.json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 60, f"fastnas bench --quick took {seconds:.0f} s; the issue asks for under a minute"
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line.split()[0] in QUICK_OPS]
    assert {row[0] for row in rows} == QUICK_OPS
    for row in rows:
        assert re.fullmatch(r"\d+\.\d\dx", row[-2]), row  # eager/fused ratio
        assert row[-1] == "-", row  # --quick skips torch.compile
    saved = json.loads((tmp_path / "timings.json").read_text())
    assert saved["build"]["fastnas"] == fastnas.__version__ == saved["rows"][0]["info"]["fastnas"]
    assert all(r["fused"] > 0 and r["eager"] > 0 and "compiled" not in r for r in saved["rows"])


def test_table_ratios_are_eager_and_compiled_over_fused():
    row = {"op": "mixed_node", "label": "case", "dtype": "float32", "device": "cpu",
           "fused": 0.002, "eager": 0.005, "compiled": 0.001}
    line = benchmarks.format_table([row]).splitlines()[1].split()
    assert line[-5:] == ["2.000", "5.000", "1.000", "2.50x", "0.50x"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert cli.run(["bench", "--device", "cuda", "--quick", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("fastnas bench: error: device: cuda needs a visible GPU")
