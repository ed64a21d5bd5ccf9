"""The command line as a new user meets it: bad input is one line, `fastnas <cmd>: error: ...`, and exit status 2.

Every command has a case here (test_every_command_has_a_bad_input_case fails for a new command without one);
--debug shows the traceback instead; damaged and foreign checkpoints on --resume are named, one line each.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastnas.cli
from fastnas.cli import build_parser, run

# command -> (argv with {tmp} for a fresh folder, the text the one line must hold: the argument it names)
BAD_INPUT = {
    "demo": (["demo", "--out"], "argument --out: expected one argument"),
    "dnad": (["dnad", "--data", "cifar10:{tmp}/missing", "--out", "{tmp}/run"], "data: cifar10 folder"),
    "train": (["train", "--genotype", "{tmp}/missing.json"], "genotype: no file"),
    "bench-gt": (["bench-gt", "--space", "nb201", "--out", "{tmp}/gt", "--shard", "x"], "shard: expected 'i/n'"),
    "sddarts": (["sddarts", "--data", "synthetic:96", "--out", "{tmp}/run", "--epochs", "x"],
                "argument --epochs: invalid int value: 'x'"),
    "darts": (["darts", "--data", "synthetic:96", "--out", "{tmp}/run", "--order", "3"], "order: expected 1"),
    "bench": (["bench", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    "autodas search-proxy": (["autodas", "search-proxy", "--gt", "{tmp}/gt.jsonl", "--out", "{tmp}/run"],
                             "gt: {tmp}/gt.jsonl does not exist"),
    "autodas search-student": (["autodas", "search-student", "--proxy", "{tmp}/proxy.json", "--out", "{tmp}/run"],
                               "proxy: {tmp}/proxy.json does not exist"),
    "proxies": (["proxies", "--gt", "{tmp}/gt.jsonl", "--proxies", "synflow,no_such_proxy"],
                "proxy: unknown name 'no_such_proxy'"),
    "nasbench export": (["nasbench", "export", "--nats", "{tmp}/missing", "--out", "{tmp}/table.csv"],
                        "nats: {tmp}/missing does not exist"),
}


def every_command(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """The leaf commands of the parser: 'dnad', ..., 'autodas search-proxy'."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += every_command(sub, f"{prefix}{name} ") or [f"{prefix}{name}"]
    return found


def test_every_command_has_a_bad_input_case():
    assert sorted(every_command(build_parser())) == sorted(BAD_INPUT)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_argument_and_exit_status_2(command, tmp_path, capsys):
    argv, named = BAD_INPUT[command]
    assert run([arg.format(tmp=tmp_path) for arg in argv]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"fastnas {command}: error: ")
    assert named.format(tmp=tmp_path) in line


DEVICE_COMMANDS = [["dnad"], ["sddarts"], ["darts"], ["train"], ["bench-gt"], ["autodas", "search-proxy"],
                   ["autodas", "search-student"], ["proxies"]]


@pytest.mark.parametrize("command", DEVICE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("device,named", [
    ("gpu", "argument --device: expected cpu, cuda or cuda:N, got 'gpu'"),
    ("mps", "argument --device: expected cpu, cuda or cuda:N, got 'mps'"),
    pytest.param("cuda", "argument --device: cuda needs a visible CUDA GPU and torch sees none",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")),
    pytest.param("cuda:1", "argument --device: cuda:1 needs a visible CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")),
])
def test_a_device_this_machine_lacks_is_one_line_before_any_work(command, device, named, capsys):
    assert run([*command, "--device", device]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"fastnas {' '.join(command)}: error: {named}"), line


def test_a_cuda_index_past_the_visible_gpus_is_refused(monkeypatch, capsys):
    from fastnas.cli import common

    monkeypatch.setattr(common.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(common.torch.cuda, "device_count", lambda: 2)
    assert common.device_option("cuda:1") == "cuda:1" and common.device_option("cuda") == "cuda"
    with pytest.raises(argparse.ArgumentTypeError, match=r"cuda:2: torch sees 2 CUDA GPU\(s\), numbered from 0"):
        common.device_option("cuda:2")
    assert common.device_option("cpu") == "cpu"


@pytest.mark.parametrize("argv", [["dnad", "--data", "synthetic:96"], ["bench-gt", "--space", "nb201", "--n", "2"],
                                  ["proxies", "--benchmark", "nb201:{tmp}/nb201.csv", "--sample", "2"]],
                         ids=lambda argv: argv[0])
@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_out_folder_that_cannot_be_made_is_one_line_naming_out(argv, where, tmp_path, capsys):
    from fastnas.nasbench import write_table
    from test_nasbench import random_table

    write_table(tmp_path / "nb201.csv", random_table(4, seed=0))
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    assert run([arg.format(tmp=tmp_path) for arg in argv] + ["--out", str(out), "--device", "cpu"]) == 2
    want = f"out: {out} is a file, not a folder" if where == "file" else f"out: cannot create the folder {out}: "
    assert want in one_error_line(capsys)


@pytest.mark.parametrize("command", ["sddarts", "darts"])
def test_a_search_batch_larger_than_a_split_is_refused_not_run_without_steps(command, tmp_path, capsys):
    # synthetic:96 keeps 70 training images; the search's stratified halves of them hold 30 and 40
    assert run([command, "--data", "synthetic:96", "--out", str(tmp_path / "run"), "--batch-size", "64",
                "--device", "cpu"]) == 2
    assert one_error_line(capsys) == (f"fastnas {command}: error: batch_size: expected at most 30 (the smaller of "
                                      "the search's training and validation splits of synthetic:96), got 64")


@pytest.mark.parametrize("command", DEVICE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("seed,named", [
    ("99999999999999999999", "expected 0 <= seed < 2**63, got 99999999999999999999"),
    ("-1", "expected 0 <= seed < 2**63, got -1"),
    ("x", "expected an integer, got 'x'")])
def test_a_seed_torch_cannot_take_is_one_line_before_any_work(command, seed, named, tmp_path, capsys):
    assert run([*command, f"--seed={seed}", "--out", str(tmp_path / "run")]) == 2
    assert one_error_line(capsys).startswith(f"fastnas {' '.join(command)}: error: argument --seed: {named}")
    assert not (tmp_path / "run").exists()  # nothing left behind to block the next run


def test_debug_shows_the_traceback_from_anywhere_on_the_line(tmp_path):
    missing = str(tmp_path / "missing.json")
    for argv in (["--debug", "train", "--genotype", missing], ["train", "--genotype", missing, "--debug"]):
        with pytest.raises(FileNotFoundError, match="genotype: no file"):
            run(argv)


def test_main_raises_and_a_malformed_command_line_is_one_line_there_too(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="genotype: no file"):
        fastnas.cli.main(["train", "--genotype", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit) as exit_:
        fastnas.cli.main(["dnad", "--out", str(tmp_path), "--epochs", "x"])
    assert exit_.value.code == 2
    assert one_error_line(capsys) == ("fastnas dnad: error: argument --epochs: invalid int value: 'x' "
                                      "(see fastnas dnad --help)")


def test_python_dash_m_fastnas_prints_one_line_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastnas", "train", "--genotype", str(tmp_path / "g.json")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 2
    assert done.stderr == f"fastnas train: error: genotype: no file {tmp_path / 'g.json'}\n"


@pytest.mark.parametrize("argv,message", [
    (["dnad", "--out", "x"], "fastnas dnad: interrupted; the same command with --resume continues from the last "
                             "checkpoint"),
    (["bench", "--quick"], "fastnas bench: interrupted"),
])
def test_ctrl_c_is_one_line_and_exit_status_130(monkeypatch, capsys, argv, message):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(fastnas.cli, "main", interrupted)
    assert run(argv) == 130
    assert one_error_line(capsys) == message


def test_a_message_on_several_lines_is_printed_on_one(monkeypatch, capsys):
    def raises(argv):
        raise ValueError("data: expected a folder,\n  got a file")

    monkeypatch.setattr(fastnas.cli, "main", raises)
    assert run(["train"]) == 2
    assert one_error_line(capsys) == "fastnas train: error: data: expected a folder, got a file"


# ---------------------------------------------------------------- damaged and foreign checkpoints on --resume

def train_argv(out: Path) -> list[str]:
    return ["train", "--space", "nb201", "--arch", "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|"
            "nor_conv_1x1~1|skip_connect~2|", "--C", "4", "--N", "1", "--data", "synthetic:40", "--epochs", "2",
            "--batch-size", "8", "--out", str(out), "--quiet"]


def test_a_truncated_checkpoint_resumes_from_the_previous_with_a_one_line_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(train_argv(out)) == 0
    capsys.readouterr()
    (out / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes()[:100])
    assert run(train_argv(out) + ["--resume"]) == 0
    line = one_error_line(capsys)
    assert line.startswith(f"fastnas train: warning: resume: {out / 'checkpoint.pt'} is not a readable fastnas "
                           "checkpoint (truncated or damaged: ")
    assert line.endswith(f"resuming from the checkpoint before it, {out / 'checkpoint.prev.pt'}: the last "
                         "checkpoint interval is redone")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # epoch 2 redone once, not appended


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_bad_checkpoint_without_a_previous_one_is_named_with_what_to_do(tmp_path, capsys, damage):
    out = tmp_path / "run"
    out.mkdir()
    if damage == "truncated":  # what a copy cut short leaves; torch says "OSError: [Errno 22] Invalid argument"
        torch.save({"epoch": 1, "model": torch.nn.Linear(40, 40).state_dict()}, out / "checkpoint.pt")
        data = (out / "checkpoint.pt").read_bytes()
        (out / "checkpoint.pt").write_bytes(data[:-10])
    else:  # another program's file under the name
        torch.save(torch.nn.Linear(2, 2).state_dict(), out / "checkpoint.pt")
    assert run(train_argv(out) + ["--resume"]) == 2
    line = one_error_line(capsys)
    kind = "not a readable fastnas checkpoint (truncated or damaged" if damage == "truncated" else \
        "not a fastnas checkpoint (OrderedDict without the 'fastnas_checkpoint' mark"
    assert line.startswith(f"fastnas train: error: resume: {out / 'checkpoint.pt'} is {kind}")
    assert line.endswith(f"there is no checkpoint.prev.pt beside it to fall back to. To start the run over, "
                         f"delete {out / 'checkpoint.pt'} and run without --resume, or choose another --out")


def test_resume_with_other_settings_or_into_another_methods_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data", "synthetic:96", "--epochs", "1", "--C", "4", "--layers", "3", "--batch-size", "16",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert run(["dnad", *argv]) == 0
    capsys.readouterr()
    assert run(["dnad", *argv, "--resume", "--C", "8"]) == 2  # was a traceback: size mismatch loading the weights
    assert one_error_line(capsys) == (f"fastnas dnad: error: resume: {out} holds a run made with other settings "
                                      "(C=4 there, 8 now); resume it with its own settings or choose another --out")
    assert run(["sddarts", *argv, "--resume"]) == 2
    assert one_error_line(capsys).startswith(f"fastnas sddarts: error: resume: {out} holds a run made with other "
                                             "settings (")
    assert run(["dnad", *argv, "--resume"]) == 0  # its own settings still resume
