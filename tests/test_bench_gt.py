"""bench-gt: seeded sampling, crash-safe resume, shards and merge, the train --space path, bad input."""

import json
import shutil

import pytest

from fastnas.cli import main as cli_main
from fastnas.distill import TeacherResNet, save_teacher_checkpoint
from fastnas.evaluators import GroundTruthConfig, build_ground_truth, merge_shards, parse_shard, shard_indices
from fastnas.evaluators.ground_truth import read_records, sample_architectures

N = 4


@pytest.fixture(scope="module")
def teacher_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_teacher_checkpoint(TeacherResNet(3, 10, widths=(8, 16, 32), blocks=1), path)
    return f"checkpoint:{path}"


def tiny(teacher_spec, **overrides):
    settings = dict(space="nb201", data="synthetic:40", n=N, teacher=teacher_spec, epochs=1, batch_size=8,
                    options={"C": 2, "N": 1})
    settings.update(overrides)
    return GroundTruthConfig(**settings)


def run(config, out, rank=0, world=1):
    return build_ground_truth(config, out, rank, world, progress=False, log=lambda _: None)


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def full_run(teacher_spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return read_records(run(tiny(teacher_spec), out))


def test_full_run_records(full_run, teacher_spec):
    archs = sample_architectures("nb201", N, 0)
    assert [r["arch"] for r in full_run] == archs and len(set(archs)) == N
    for index, record in enumerate(full_run):
        assert set(record) == {"index", "arch", "space", "params", "flops", "accuracy_kd", "seed", "epochs",
                               "seconds"}
        assert record["index"] == index and record["space"] == "nb201" and record["epochs"] == 1
        assert 0.0 <= record["accuracy_kd"] <= 1.0 and record["params"] > 0 and record["flops"] > 0
    # A larger n extends the same seeded list.
    assert sample_architectures("nb201", N + 3, 0)[:N] == archs


def test_resume_after_a_kill_mid_line_equals_the_uninterrupted_run(full_run, teacher_spec, tmp_path):
    out = tmp_path / "cut"
    path = run(tiny(teacher_spec, n=2), out)  # "killed" after two architectures...
    half_line = json.dumps(full_run[2])[:25]
    with open(path, "a") as f:
        f.write(half_line)  # ... while writing the third
    assert len(read_records(path)) == 2 and path.read_text().endswith(half_line)  # readers leave the file alone
    resumed = read_records(run(tiny(teacher_spec), out))
    assert without_time(resumed) == without_time(full_run)
    assert path.read_text().count("\n") == N and path.read_text().endswith("}\n")


def test_train_seed_retrains_the_same_sample(full_run, teacher_spec, tmp_path):
    records = read_records(run(tiny(teacher_spec, n=2, train_seed=5), tmp_path / "seed5"))
    assert [r["arch"] for r in records] == [r["arch"] for r in full_run[:2]]
    assert [r["seed"] for r in records] == [5, 5] and [r["seed"] for r in full_run] == [0] * N


def test_rerun_of_a_finished_folder_trains_nothing(full_run, teacher_spec, tmp_path):
    out = tmp_path / "again"
    path = run(tiny(teacher_spec, n=1), out)
    before = path.read_text()
    run(tiny(teacher_spec, n=1), out)
    assert path.read_text() == before


def test_shards_merge_to_the_unsharded_run(full_run, teacher_spec, tmp_path):
    assert shard_indices(5, 1, 2) == [1, 3] and shard_indices(5, 0, 2) == [0, 2, 4]
    out = tmp_path / "sharded"
    for rank in (1, 0):
        path = run(tiny(teacher_spec), out, rank, 2)
        assert path.name == f"gt.shard-{rank}-of-2.jsonl"
    assert [r["index"] for r in read_records(out / "gt.shard-1-of-2.jsonl")] == [1, 3]
    assert cli_main(["bench-gt", "--merge", str(out)]) == 0
    merged = read_records(out / "gt.jsonl")
    assert without_time(merged) == without_time(full_run)
    # Merging again (or with a gt.jsonl already there) adds no duplicates.
    assert merge_shards(out)[1] == N


def test_cli_bench_gt_and_resume_flag(teacher_spec, tmp_path):
    out = tmp_path / "cli"
    common = ["bench-gt", "--space", "resnet", "--data", "synthetic:40", "--n", "1", "--out", str(out),
              "--batch-size", "8", "--teacher", teacher_spec, "--no-kd-too", "--quiet"]
    argv = common + ["--epochs", "1"]
    with pytest.raises(FileNotFoundError, match="resume: no gt-config.json"):
        cli_main(argv + ["--resume"])
    assert cli_main(argv) == 0
    [record] = read_records(out / "gt.jsonl")
    assert 0.0 <= record["accuracy"] <= 1.0 and record["space"] == "resnet"
    assert cli_main(argv + ["--resume"]) == 0
    assert len(read_records(out / "gt.jsonl")) == 1
    with pytest.raises(ValueError, match=r"other settings \(epochs=1 there, 2 now\)"):
        cli_main(common + ["--epochs", "2"])


@pytest.mark.parametrize("overrides, message", [
    (dict(space="vgg"), "space: expected one of nb201, resnet, pit, got 'vgg'"),
    (dict(n=0), "n: expected at least 1 architecture, got 0"),
    (dict(epochs=0), "epochs: expected >= 1, got 0"),
    (dict(kd_rate=-1.0), "kd_rate: expected >= 0"),
    (dict(options={"patch_size": 2}), "patch_size: the nb201 space takes only the options"),
])
def test_bad_settings(teacher_spec, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(teacher_spec, **overrides)


@pytest.mark.parametrize("spec", ["2/2", "a/b", "1-2", "", "-1/2"])
def test_malformed_shard_spec(spec):
    with pytest.raises(ValueError, match="shard: expected 'i/n'"):
        parse_shard(spec)


def test_bad_files_and_commands(tmp_path, teacher_spec):
    assert parse_shard("1/3") == (1, 3)
    with pytest.raises(ValueError, match="n: found only 4096 distinct resnet architectures"):
        sample_architectures("resnet", 5000, 0)  # the space has 4096
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"arch": "a"}\nnot json\n{"arch": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_records(broken)
    with pytest.raises(FileNotFoundError, match="merge: no gt.shard-I-of-N.jsonl files"):
        merge_shards(tmp_path)
    with pytest.raises(ValueError, match="bench-gt: give --space and --out"):
        cli_main(["bench-gt", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="train: give either --genotype JSON or --space NAME with --arch"):
        cli_main(["train", "--space", "nb201", "--data", "synthetic:40"])


def test_train_a_space_architecture(teacher_spec, tmp_path, capsys):
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
    argv = ["train", "--space", "nb201", "--arch", arch, "--data", "synthetic:40", "--kd", "soft", "--teacher",
            teacher_spec, "--epochs", "1", "--batch-size", "8", "--C", "2", "--N", "1", "--quiet",
            "--out", str(tmp_path / "train")]
    assert cli_main(argv) == 0
    result = json.loads((tmp_path / "train" / "result.json").read_text())
    assert result["arch"] == arch and result["space"] == "nb201" and result["kd"] == "soft"
    assert "test accuracy" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "train")
    with pytest.raises(ValueError, match="arch: unknown operation 'conv'"):
        cli_main(argv[:4] + ["|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"] + argv[5:])
