"""The command line's CPU threads (fastnas.default_threads) and the phase times `fastnas dnad` prints at its end."""

import re

import pytest
import torch

import fastnas
from fastnas.cli import main as cli_main


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_one_thread_unless_omp_num_threads_is_set(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fastnas.default_threads() == 2  # the user's setting stands
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert fastnas.default_threads() == 1 and torch.get_num_threads() == 1


def test_dnad_prints_the_wall_time_of_each_phase(tmp_path, capsys, monkeypatch, restore_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli_main(["dnad", "--out", str(tmp_path / "run"), "--data", "synthetic:48", "--kd", "none",
                     "--ops", "skip_connect,sep_conv_3x3", "--C", "2", "--layers", "3", "--nodes", "2",
                     "--epochs", "1", "--batch-size", "16", "--quiet"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"wall time \(1 CPU thread\(s\)\): teacher and set-up ([\d.]+) s, search ([\d.]+) s, "
                         r"plots and costs ([\d.]+) s", last)
    assert match, last
