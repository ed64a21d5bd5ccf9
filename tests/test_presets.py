"""Presets: the papers' values, where each comes from, flags over presets, and every preset end to end on a
CIFAR-format fixture (a tiny cifar-10-batches-py folder of pickles, read by the real loader), sizes overridden."""

import dataclasses
import json
import math

import pytest

from fastnas.cli import build_parser, main
from fastnas.evaluators import TrainConfig
from fastnas.presets import PRESETS, RETRAIN_PRESET, preset_settings
from fastnas.strategies import DNADConfig, SDDARTSConfig
from fastnas.strategies.snps import SNPSConfig
from test_data import fake_cifar

CONFIGS = {"train": TrainConfig, "darts": SDDARTSConfig, "sddarts": SDDARTSConfig, "dnad": DNADConfig}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cifar")
    fake_cifar(root, "cifar10", n_train=40, n_test=10)
    return f"cifar10:{root}"


def command_parser(command):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command]


@pytest.mark.parametrize("command", list(PRESETS))
def test_every_preset_value_is_an_option_or_a_config_field(command):
    options = {a.dest for a in command_parser(command)._actions}
    fields = {f.name for f in dataclasses.fields(CONFIGS[command])} | {f.name for f in dataclasses.fields(SNPSConfig)}
    for preset, settings in PRESETS[command].items():
        assert set(settings) <= options | fields, (preset, set(settings) - options - fields)
        assert all(s.source for s in settings.values())


def test_the_issue_values():
    """Issue 13 item 4, from DARTS's paper and code: search 50 epochs, batch 64, C 16, 8 cells; retrain 600 epochs,
    batch 96, C 36, 20 cells, cutout 16, auxiliary 0.4, drop-path 0.2."""
    search = {k: s.value for k, s in preset_settings("darts", "cifar10").items()}
    assert (search["epochs"], search["batch_size"], search["C"], search["layers"]) == (50, 64, 16, 8)
    assert (search["lr"], search["lr_min"], search["arch_lr"], search["arch_weight_decay"]) == \
        (0.025, 0.001, 3e-4, 1e-3)
    train = {k: s.value for k, s in preset_settings("train", "cifar10").items()}
    assert (train["epochs"], train["batch_size"], train["C"], train["layers"]) == (600, 96, 36, 20)
    assert (train["cutout"], train["auxiliary_weight"], train["drop_path"], train["schedule"]) == \
        (16, 0.4, 0.2, "cosine")
    imagenet = {k: s.value for k, s in preset_settings("train", "imagenet").items()}
    assert (imagenet["label_smoothing"], imagenet["schedule"], imagenet["lr_gamma"], imagenet["C"]) == \
        (0.1, "step", 0.97, 48)
    dnad = {k: s.value for k, s in preset_settings("dnad", "cifar10").items()}
    assert (dnad["batch_size"], dnad["lr"], dnad["arch_lr"], dnad["stop_sparsity"]) == (128, 5e-4, 0.2, 250.0)
    assert preset_settings("train", "dnad-cifar10")["drop_path_schedule"].value == "dnad"
    assert preset_settings("sddarts", "cifar10")["sd_lambda"].value == 1.0
    assert all(preset in PRESETS["train"] for preset in RETRAIN_PRESET.values())


def test_unknown_preset_is_refused(capsys):
    with pytest.raises(ValueError, match="preset: expected one of digits, cifar10 for sddarts, got 'imagenet'"):
        preset_settings("sddarts", "imagenet")
    with pytest.raises(SystemExit):
        main(["darts", "--preset", "imagenet", "--out", "x"])
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_show_config_lists_every_value_with_its_source(capsys):
    assert main(["darts", "--preset", "cifar10", "--show-config", "--out", "unused", "--epochs", "3"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {f.name for f in dataclasses.fields(SDDARTSConfig)}
    assert lines["epochs"].split()[1:] == ["3", "flag"]  # the flag beats the preset's 50
    assert "preset cifar10: quark0/darts cnn/train_search.py --batch_size 64" in lines["batch_size"]
    assert "quark0/darts cnn/train_search.py --learning_rate_min 0.001" in lines["lr_min"]  # a field with no flag
    assert lines["order"].split()[1] == "2" and lines["seed"].split()[1:] == ["0", "fastnas", "default"]


def test_digits_keeps_its_defaults(capsys):
    assert main(["dnad", "--show-config", "--out", "unused"]) == 0
    lines = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert (lines["batch_size"], lines["arch_lr"], lines["snps.gamma"], lines["snps.tqu_max"]) == \
        ("32", "1.0", "0.01", "20")  # the digits schedule of strategies.dnad.snps_preset


# --------------------------------------------------------------------------- end to end, small


def search_flags(cifar, out):
    return ["--data", cifar, "--out", str(out), "--C", "2", "--layers", "3", "--nodes", "2", "--epochs", "1",
            "--batch-size", "8", "--quiet"]


@pytest.mark.parametrize("command", ["darts", "sddarts"])
def test_darts_and_sddarts_presets_end_to_end(cifar, tmp_path, command):
    out = tmp_path / command
    ops = "skip_connect,sep_conv_3x3"
    assert main([command, "--preset", "cifar10", "--ops", ops, *search_flags(cifar, out), "--sharpness-every", "1",
                 "--order", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "cifar10"
    # the preset's values where no flag was given, each with its source; the flags where given
    assert (config["lr_min"], config["arch_lr"], config["train_fraction"], config["C"]) == (0.001, 3e-4, 0.5, 2)
    assert config["sources"]["arch_lr"].startswith("preset cifar10: quark0/darts cnn/train_search.py")
    assert config["sources"]["C"] == "flag"
    assert (out / "genotype.json").exists()


@pytest.mark.parametrize("preset, retrain_C, side", [("cifar10", 36, 32), ("imagenet", 48, 224)])
def test_dnad_presets_end_to_end_with_the_pareto_set_at_the_retrain_width(cifar, tmp_path, capsys, preset,
                                                                          retrain_C, side):
    from fastnas.nn.cost import count_flops, count_params
    from fastnas.search_spaces import Genotype
    from fastnas.cli.train import build_genotype_network

    out = tmp_path / preset
    args = ["dnad", "--preset", preset, *search_flags(cifar, out), "--kd", "none", "--ops", "sep_conv_3x3,skip_connect",
            "--stop-sparsity", "0", "--warm-up", "0", "--epochs", "2", "--gamma", "0.05", "--n-max", "0.5",
            "--tqu-max", "2"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 8 and config["snps"]["gamma_max"] == {"cifar10": 0.1, "imagenet": 1e-3}[preset]
    assert config["sources"]["gamma_max"].startswith(f"preset {preset}: RaoXuan-1998/NADD train_search_")
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto
    for point in pareto:
        genotype = Genotype.load(out / point["genotype"])
        network = build_genotype_network(genotype, retrain_C, 3, 10, 3, {32: "cifar", 224: "imagenet"}[side])
        assert point["retrain"] == {"preset": f"dnad-{preset}", "C": retrain_C, "layers": 3, "image_size": side,
                                    "params": count_params(network), "flops": count_flops(network, (3, side, side))}
        assert point["retrain"]["params"] > point["params"]  # wider than the search's C = 2
    assert "retrain params" in capsys.readouterr().out


def darts_genotype(path):
    import torch
    from fastnas.search_spaces import SuperNetwork

    torch.manual_seed(0)
    SuperNetwork(C=2, layers=3, nodes=2, primitives=("skip_connect", "sep_conv_3x3")).genotype().save(path)
    return str(path)


def test_train_cifar10_preset_end_to_end(cifar, tmp_path):
    out = tmp_path / "train"
    assert main(["train", "--preset", "cifar10", "--data", cifar, "--genotype", darts_genotype(tmp_path / "g.json"),
                 "--C", "4", "--layers", "3", "--epochs", "2", "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    used = config["config"]
    assert (used["schedule"], used["cutout"], used["lr"], used["epochs"], used["C"]) == ("cosine", 16, 0.025, 2, 4)
    assert (used["auxiliary_weight"], used["drop_path"], used["network"]) == (0.4, 0.2, "cifar")
    assert config["sources"]["cutout"].startswith("preset cifar10: DARTS paper App. A.2; quark0/darts cnn/train.py")
    assert config["sources"]["epochs"] == "flag" and config["preset"] == "cifar10"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == pytest.approx([0.025, 0.025 * (1 + math.cos(math.pi / 2)) / 2])
    assert [m["drop_path"] for m in metrics] == pytest.approx([0.0, 0.1])
    result = json.loads((out / "result.json").read_text())
    assert result["preset"] == "cifar10" and result["params_with_auxiliary"] > result["params"]
    assert (out / "network.pt").exists()  # loadable as --teacher checkpoint:PATH


def test_train_imagenet_preset_end_to_end(cifar, tmp_path):
    out = tmp_path / "train"
    assert main(["train", "--preset", "imagenet", "--data", cifar, "--genotype", darts_genotype(tmp_path / "g.json"),
                 "--C", "4", "--layers", "3", "--epochs", "2", "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    used = json.loads((out / "config.json").read_text())["config"]
    assert (used["network"], used["image_size"], used["label_smoothing"], used["schedule"]) == \
        ("imagenet", 224, 0.1, "step")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["lr"] for m in metrics] == pytest.approx([0.1, 0.1 * 0.97])


def test_train_dnad_cifar10_preset_raises_drop_path_by_the_operations(cifar, tmp_path):
    import torch
    from fastnas.search_spaces import SuperNetwork

    torch.manual_seed(0)
    supernet = SuperNetwork(C=2, layers=3, nodes=2, primitives=("skip_connect", "sep_conv_3x3"), mode="relu_norm",
                            alpha_per_cell=True, alpha_init=2.0)
    genotype = supernet.genotype(top_k=None)  # every operation lives: 3 cells x (2 + 3 inputs) x 2 ops = 30
    genotype.save(tmp_path / "dnad.json")
    out = tmp_path / "train"
    assert main(["train", "--preset", "dnad-cifar10", "--data", cifar, "--genotype", str(tmp_path / "dnad.json"),
                 "--C", "4", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    used = json.loads((out / "config.json").read_text())["config"]
    assert sum(len(node) for cell in genotype.cells for node in cell) == 30
    assert used["drop_path"] == pytest.approx(0.3 + 0.15 / 112 * (30 - 8 * 3)) and used["drop_path_base"] == 0.3
    assert used["layers"] == 3


def test_a_space_architecture_refuses_a_darts_preset():
    with pytest.raises(ValueError, match="preset: cifar10 is a DARTS-space retraining protocol"):
        main(["train", "--preset", "cifar10", "--space", "nb201", "--arch", "x"])
