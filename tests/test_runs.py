"""Run folders: checkpoints kept in pairs (latest and previous), damaged or foreign files named, resume exact."""

import os
import pickle

import pytest
import torch

from fastnas.runs import CHECKPOINT_MARK, RunFolder, RunWarning, read_checkpoint
from test_dnad import tiny_config  # a few steps per epoch, operators pruned every epoch
from fastnas.strategies import DNADSearch


def saved(run: RunFolder, step: int) -> dict:
    state = {"step": step, "weights": torch.full((50,), float(step))}
    run.save_checkpoint(state)
    return state


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and a["step"] == b["step"] and torch.equal(a["weights"], b["weights"])


def cut(path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def test_the_previous_checkpoint_stays_beside_the_latest(tmp_path):
    run = RunFolder(tmp_path / "run")
    first = saved(run, 1)
    assert not run.previous_checkpoint_path.exists()
    assert same(run.load_checkpoint(), first)
    assert CHECKPOINT_MARK not in first  # the caller's dict is left alone; the mark is only in the file
    second = saved(run, 2)
    assert same(read_checkpoint(run.checkpoint_path), second)
    assert same(read_checkpoint(run.previous_checkpoint_path), first)
    third = saved(run, 3)
    assert same(read_checkpoint(run.checkpoint_path), third)
    assert same(read_checkpoint(run.previous_checkpoint_path), second)
    # no temporary file is left behind
    assert {p.name for p in run.path.iterdir()} == {"checkpoint.pt", "checkpoint.prev.pt"}


def test_the_previous_checkpoint_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "run")
    first = saved(run, 1)

    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    second = saved(run, 2)
    assert same(read_checkpoint(run.previous_checkpoint_path), first)
    assert same(read_checkpoint(run.checkpoint_path), second)


@pytest.mark.parametrize("keep", ["empty", "header", "half", "all but the end"])
def test_a_truncated_latest_resumes_from_the_previous(tmp_path, keep):
    run = RunFolder(tmp_path / "run")
    first = saved(run, 1)
    saved(run, 2)
    size = run.checkpoint_path.stat().st_size
    cut(run.checkpoint_path, {"empty": 0, "header": 10, "half": size // 2, "all but the end": size - 10}[keep])
    resumed = RunFolder(tmp_path / "run", resume=True)
    with pytest.warns(RunWarning) as caught:
        state = resumed.load_checkpoint()
    assert same(state, first)
    [warning] = caught
    message = str(warning.message)
    assert str(run.checkpoint_path) in message and str(run.previous_checkpoint_path) in message
    assert "not a readable fastnas checkpoint" in message and "interval is redone" in message
    # The damaged latest must not become the previous checkpoint: after the next save the good one is still there.
    third = saved(resumed, 3)
    assert same(read_checkpoint(resumed.checkpoint_path), third)
    assert same(read_checkpoint(resumed.previous_checkpoint_path), first)
    saved(resumed, 4)  # from now on the pair rotates as usual
    assert same(read_checkpoint(resumed.previous_checkpoint_path), third)


def foreign_files():
    """Files a user might pass as a run's checkpoint.pt: none of them was written by RunFolder."""
    yield "text", lambda path: path.write_text("not a checkpoint\n" * 20)
    yield "tensor", lambda path: torch.save(torch.ones(3), path)
    yield "model state_dict", lambda path: torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    yield "plain pickle", lambda path: path.write_bytes(pickle.dumps({"step": 1}))


@pytest.mark.parametrize("name,write", list(foreign_files()), ids=[name for name, _ in foreign_files()])
def test_a_foreign_checkpoint_is_named_with_what_to_do(tmp_path, name, write):
    (tmp_path / "run").mkdir()
    write(tmp_path / "run" / "checkpoint.pt")
    run = RunFolder(tmp_path / "run", resume=True)
    with pytest.raises(ValueError) as error:
        run.load_checkpoint()
    message = str(error.value)
    assert message.startswith(f"resume: {run.checkpoint_path} is not a")
    assert "fastnas checkpoint" in message
    assert "no checkpoint.prev.pt" in message and "run without --resume" in message
    assert "\n" not in message


def test_both_checkpoints_damaged(tmp_path):
    run = RunFolder(tmp_path / "run")
    saved(run, 1)
    saved(run, 2)
    cut(run.checkpoint_path, 100)
    cut(run.previous_checkpoint_path, 0)
    with pytest.raises(ValueError, match="checkpoint.pt is not a readable.*and .*checkpoint.prev.pt is not a readable"):
        RunFolder(tmp_path / "run", resume=True).load_checkpoint()


def test_a_fresh_run_does_not_take_what_a_run_without_checkpoint_left(tmp_path):
    # a run killed before its first checkpoint leaves metrics.jsonl; starting over must not append to it
    run = RunFolder(tmp_path / "run")
    run.log({"step": 1})
    run.log({"step": 2})
    again = RunFolder(tmp_path / "run")
    again.log({"step": 1})
    assert again.metrics() == [{"step": 1}]
    # a run started over after deleting a damaged checkpoint.pt: the old checkpoint.prev.pt must not stand in
    # for the new run's first checkpoint
    saved(again, 1)
    saved(again, 2)
    again.checkpoint_path.unlink()
    new = RunFolder(tmp_path / "run")
    saved(new, 10)
    cut(new.checkpoint_path, 100)
    with pytest.raises(ValueError, match="no checkpoint.prev.pt beside it"):
        RunFolder(tmp_path / "run", resume=True).load_checkpoint()


def test_a_folder_holding_a_run_is_refused_without_resume(tmp_path):
    saved(RunFolder(tmp_path / "run"), 1)
    with pytest.raises(FileExistsError, match="out: .* already holds a run; pass --resume"):
        RunFolder(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint.pt in"):
        RunFolder(tmp_path / "empty", resume=True)


# ---------------------------------------------------------------- a real search resumed from the previous checkpoint

def dnad(path, resume=False, stop_after_epochs=None) -> tuple[DNADSearch, list[dict]]:
    search = DNADSearch(tiny_config(), RunFolder(path, resume=resume), progress=False, log=lambda _: None)
    return search, search.run(stop_after_epochs=stop_after_epochs)


def test_a_dnad_search_with_a_damaged_latest_checkpoint_redoes_one_epoch_and_ends_as_the_whole_run(tmp_path):
    _, whole = dnad(tmp_path / "whole")
    whole_metrics = RunFolder(tmp_path / "whole", resume=True).metrics()
    interrupted, _ = dnad(tmp_path / "cut", stop_after_epochs=3)
    steps_at_epoch_3 = interrupted.step
    steps_per_epoch = steps_at_epoch_3 // 3
    folder = tmp_path / "cut"
    assert len(RunFolder(folder, resume=True).metrics()) == steps_at_epoch_3
    cut(folder / "checkpoint.pt", (folder / "checkpoint.pt").stat().st_size // 2)

    with pytest.warns(RunWarning, match="checkpoint.prev.pt: the last checkpoint interval is redone"):
        resumed = DNADSearch(tiny_config(), RunFolder(folder, resume=True), progress=False, log=lambda _: None)
        resumed.resume_or_start()
    # restored from the end of epoch 2, and metrics.jsonl cut to that checkpoint's step, not the damaged one's
    assert (resumed.epoch, resumed.step) == (2, 2 * steps_per_epoch)
    assert len(RunFolder(folder, resume=True).metrics()) == 2 * steps_per_epoch

    with pytest.warns(RunWarning):
        _, pareto = dnad(folder, resume=True)
    assert pareto == whole
    assert RunFolder(folder, resume=True).metrics() == whole_metrics


def test_training_with_a_damaged_latest_checkpoint_redoes_one_epoch_and_ends_as_the_whole_run(tmp_path):
    from fastnas.data import load_data
    from fastnas.evaluators import TrainConfig, train_network
    from fastnas.search_spaces import nb201

    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    dataset = load_data("synthetic:40")

    def train(folder, resume=False):
        torch.manual_seed(0)
        model = nb201.build(arch, C=4, N=1, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
        config = TrainConfig(epochs=3, batch_size=8, seed=0)
        return train_network(model, dataset, config, run=RunFolder(folder, resume=resume), progress=False)

    folder = tmp_path / "run"
    whole = train(folder)
    whole_metrics = RunFolder(folder, resume=True).metrics()
    cut(folder / "checkpoint.pt", 100)  # the checkpoint of epoch 3; that of epoch 2 is checkpoint.prev.pt
    with pytest.warns(RunWarning):
        resumed = train(folder, resume=True)
    assert resumed["epochs"] == 3 and resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["test_loss"] == whole["test_loss"]
    # the warning says the epoch-2 checkpoint was loaded; metrics.jsonl was cut to its 2 lines and epoch 3 redone
    assert RunFolder(folder, resume=True).metrics() == whole_metrics and len(whole_metrics) == 3
