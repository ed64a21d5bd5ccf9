"""Training-free proxies: hand-checked values, plain-PyTorch recomputations, the registry and `fastnas proxies`."""

import copy
import json
import math
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import stats

import fastnas.proxies as proxies
from fastnas.cli import main
from fastnas.proxies import registry
from fastnas.search_spaces import get_space


class TinyConvNet(nn.Module):
    """conv-BN-ReLU-conv-ReLU, global pooling, linear classifier; returns (logits, [stage map])."""

    def __init__(self, width: int = 6, classes: int = 5, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(width, classes)

    def forward(self, x):
        stage = self.body(x)
        return self.classifier(stage.mean((2, 3))), [stage]


def tiny_batch(batch: int = 12, classes: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 6, 6, generator=gen), torch.randint(0, classes, (batch,), generator=gen)


def linear_net(weight: torch.Tensor) -> nn.Module:
    """Flatten + one bias-free Linear with the given weight [classes, features]."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight.data.copy_(weight)
    return nn.Sequential(nn.Flatten(), layer)


# --------------------------------------------------------------------------- hand-checked values

def test_synflow_of_a_two_layer_linear_net_by_hand():
    # R = 1^T |W2| |W1| 1 = 1^T |W2| [3.5, 4] = 11 + 5.75 = 16.75; each layer contributes sum |W * dR/dW| = R.
    first = nn.Linear(3, 2, bias=False)
    first.weight.data = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    second = nn.Linear(2, 2, bias=False)
    second.weight.data = torch.tensor([[2.0, -1.0], [0.5, 1.0]])
    norm = nn.BatchNorm1d(2)
    norm.running_var.fill_(4.0)  # would halve R if synflow kept BatchNorm
    model = nn.Sequential(nn.Flatten(), first, norm, second)
    images, labels = torch.randn(4, 1, 1, 3), torch.tensor([0, 1, 0, 1])
    assert proxies.score("synflow", model, (images, labels)) == pytest.approx(2 * 16.75, rel=1e-12)


def test_snip_grad_norm_params_flops_of_one_linear_layer_by_hand():
    weight = torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.25, 1.0, -1.0, 2.0], [0.0, 0.5, 1.5, -0.5]])
    images = torch.tensor([[1.0, 0.0, -1.0, 2.0], [0.5, 1.0, 0.0, -1.0]]).view(2, 1, 1, 4)
    labels = torch.tensor([2, 0])
    # dCE/dW of logits z = W x, mean over the batch: (softmax(z) - onehot(y))^T x / B.
    x = images.flatten(1)
    error = torch.softmax(x @ weight.T, dim=1) - F.one_hot(labels, 3)
    gradient = error.T @ x / 2
    scores = proxies.score_many(["snip", "grad_norm", "params", "flops"], linear_net(weight), (images, labels))
    assert scores["snip"] == pytest.approx((weight * gradient).abs().sum().item(), rel=1e-6)
    assert scores["grad_norm"] == pytest.approx(gradient.norm().item(), rel=1e-6)
    assert scores["params"] == 12
    assert scores["flops"] == 12


def test_nwot_of_hand_built_binary_codes():
    # ReLU codes of the three images: [1,1,0], [1,0,0], [0,0,0]; K[i, j] = positions where codes agree:
    # [[3,2,1],[2,3,2],[1,2,3]], det = 3*5 - 2*4 + 1*1 = 8.
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(3, 2))
    images = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, -3.0], [-1.0, -1.0, -0.5]]).view(3, 1, 1, 3)
    assert proxies.score("nwot", model, (images, torch.tensor([0, 1, 0]))) == pytest.approx(math.log(8), rel=1e-12)


# --------------------------------------------------------------------------- plain-PyTorch recomputations

def test_fisher_equals_a_direct_recomputation():
    torch.manual_seed(0)
    model = TinyConvNet()
    images, labels = tiny_batch()
    reference = copy.deepcopy(model).train()
    outputs = []

    def keep(layer, _inputs, output):
        output.retain_grad()
        outputs.append((layer, output))

    hooks = [m.register_forward_hook(keep) for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    F.cross_entropy(reference(images)[0], labels).backward()
    for hook in hooks:
        hook.remove()
    expected = 0.0
    for layer, output in outputs:
        act_times_grad = output * output.grad
        per_channel = act_times_grad.sum((2, 3)) if output.dim() == 4 else act_times_grad
        fan_in = layer.weight[0].numel()
        expected += (0.5 * per_channel.pow(2).mean(0)).sum().item() * fan_in
    assert proxies.score("fisher", model, (images, labels)) == pytest.approx(expected, rel=1e-5)


def test_jacov_equals_a_direct_recomputation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(64, 3))  # no BN: images independent
    images, labels = torch.randn(5, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1])
    rows = []
    for image in images:
        x = image[None].clone().requires_grad_(True)
        model(x).sum().backward()
        rows.append(x.grad.flatten().double().numpy())
    eigenvalues = np.linalg.eig(np.corrcoef(np.stack(rows)))[0].real
    expected = -np.sum(np.log(eigenvalues + 1e-5) + 1.0 / (eigenvalues + 1e-5))
    assert proxies.score("jacov", model, (images, labels)) == pytest.approx(expected, rel=1e-6)


def test_grasp_equals_a_direct_recomputation():
    torch.manual_seed(0)
    model = TinyConvNet()
    images, labels = tiny_batch()
    reference = copy.deepcopy(model).train()
    weights = [m.weight for m in reference.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first = torch.autograd.grad(F.cross_entropy(reference(images)[0], labels), weights)
    second = torch.autograd.grad(F.cross_entropy(reference(images)[0], labels), weights, create_graph=True)
    hessian_times_gradient = torch.autograd.grad(sum((a * b).sum() for a, b in zip(first, second)), weights)
    expected = -sum((w * hg).sum() for w, hg in zip(weights, hessian_times_gradient)).item()
    assert proxies.score("grasp", model, (images, labels)) == pytest.approx(expected, rel=1e-4)


def class_weight_gradient(model, images, labels):
    logits = model(images)[0]
    return torch.autograd.grad(F.cross_entropy(logits, labels), model.classifier.weight)[0]


def gram(features):
    return F.normalize(features @ features.T, dim=1)


def test_diswot_fastnas_equals_the_direct_formula():
    torch.manual_seed(0)
    student, teacher = TinyConvNet(width=6), TinyConvNet(width=9).eval()
    images, labels = tiny_batch()
    reference = copy.deepcopy(student).train()
    relation_s = reference(images)[1][-1].flatten(1)
    with torch.no_grad():
        relation_t = teacher(images)[1][-1].flatten(1)
    relation = (gram(relation_t) - gram(relation_s)).pow(2).sum() / images.shape[0] ** 2
    semantic_s = class_weight_gradient(copy.deepcopy(student).train(), images, labels)
    semantic_t = class_weight_gradient(teacher, images, labels)
    semantic = (gram(semantic_t) - gram(semantic_s)).pow(2).sum() / semantic_s.shape[0] ** 2
    expected = -(semantic + relation).item()
    assert proxies.score("diswot_fastnas", student, (images, labels), teacher) == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- registry

def test_score_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    images, labels = tiny_batch()
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 0.5)
    model.body[0].weight.requires_grad_(False)
    before = copy.deepcopy(model.state_dict())
    scores = proxies.score_many(proxies.available_proxies(), model, (images, labels), TinyConvNet(width=4).eval())
    assert set(scores) == set(proxies.available_proxies())
    assert not model.training
    assert not model.body[0].weight.requires_grad
    for name, value in model.state_dict().items():  # weights and BN running statistics
        assert torch.equal(value, before[name]), name
    for parameter in model.parameters():
        assert torch.equal(parameter.grad, torch.full_like(parameter, 0.5))


def test_score_many_shares_one_forward_among_the_inputs_proxies():
    model, batch = TinyConvNet(), tiny_batch()
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))  # the private copy keeps the hook
    teacher = proxies.network_outputs(TinyConvNet().eval(), batch[0])
    proxies.score_many(["snip", "grad_norm", "diswot_fastnas", "autodas_nb201", "autodas_resnet"], model, batch,
                       teacher)
    assert len(forwards) == 1
    proxies.score_many(["snip", "fisher"], model, batch)
    assert len(forwards) == 3  # fisher runs its own pass


def test_a_registered_proxy_shares_the_inputs_and_scores():
    name = "test_sum_of_logits"
    proxies.register_proxy(name, source="test")(lambda inputs: inputs.student.logits.sum())
    try:
        torch.manual_seed(0)
        model = TinyConvNet()
        images, labels = tiny_batch()
        expected = copy.deepcopy(model).train()(images)[0].sum().item()
        assert proxies.score(name, model, (images, labels)) == pytest.approx(expected, rel=1e-5)
        with pytest.raises(ValueError, match="already registered"):
            proxies.register_proxy(name)(lambda inputs: 0.0)
    finally:
        registry._PROXIES.pop(name)


def test_errors():
    model, batch = TinyConvNet(), tiny_batch()
    with pytest.raises(ValueError, match="unknown name 'zen'.*synflow"):
        proxies.score("zen", model, batch)
    with pytest.raises(ValueError, match=r"teacher: proxies \['diswot'\]"):
        proxies.score("diswot", model, batch)
    small_teacher_batch = proxies.network_outputs(TinyConvNet().eval(), batch[0][:5])
    with pytest.raises(ValueError, match="teacher: outputs are for a batch of 5"):
        proxies.score("autodas_nb201", model, batch, small_teacher_batch)
    with pytest.raises(ValueError, match="batch: expected labels"):
        proxies.score("snip", model, (batch[0], batch[1][:3]))
    with pytest.raises(ValueError, match="batch: expected images"):
        proxies.score("snip", model, (batch[0][0], batch[1]))
    with pytest.raises(ValueError, match="model: nwot reads the codes of nn.ReLU"):
        proxies.score("nwot", nn.Sequential(nn.Flatten(), nn.Linear(36, 5)), batch)
    with pytest.raises(ValueError, match="reads: expected one of"):
        proxies.register_proxy("x", reads="weights")


# --------------------------------------------------------------------------- fastnas proxies

def test_correlation_table_ranks_a_nan_score_last_and_matches_scipy():
    from fastnas.evaluators.proxy_table import correlation_table

    accuracy = [0.5, 0.1, 0.6, 0.9, 0.3]
    scores = torch.tensor([[1.0, float("nan"), 3.0, 4.0, 0.5], [2.0, 1.0, 5.0, 3.0, 0.0]], dtype=torch.float64)
    rows = correlation_table(["jacov", "snip"], scores, torch.tensor(accuracy, dtype=torch.float64))
    nan_as_lowest = [1.0, -math.inf, 3.0, 4.0, 0.5]
    assert rows[0]["kendall"] == pytest.approx(stats.kendalltau(nan_as_lowest, accuracy)[0])
    assert rows[0]["spearman"] == pytest.approx(stats.spearmanr(nan_as_lowest, accuracy)[0])
    assert rows[0]["pearson"] == pytest.approx(stats.pearsonr([1, 3, 4, 0.5], [0.5, 0.6, 0.9, 0.3])[0])
    assert rows[0]["nan_scores"] == 1 and rows[1]["nan_scores"] == 0
    for method, reference in (("kendall", stats.kendalltau), ("spearman", stats.spearmanr),
                              ("pearson", stats.pearsonr)):
        assert rows[1][method] == pytest.approx(reference(scores[1].tolist(), accuracy)[0])


def test_correlation_table_statistics_match_the_statistics_module():
    from fastnas.evaluators import statistics
    from fastnas.evaluators.proxy_table import correlation_table, format_markdown

    gen = torch.Generator().manual_seed(0)
    accuracy = torch.rand(30, generator=gen, dtype=torch.float64)
    scores = torch.stack([accuracy + noise * torch.randn(30, generator=gen, dtype=torch.float64)
                          for noise in (0.05, 1.0)])
    rows = correlation_table(["snip", "synflow"], scores, accuracy, n_boot=200, n_perm=200, seed=3)
    for i, row in enumerate(rows):
        for method in ("kendall", "spearman"):
            interval = statistics.correlation_interval(scores[i], accuracy, method, n_boot=200, seed=3)
            assert (row[f"{method}_low"], row[f"{method}_high"]) == pytest.approx((interval["low"], interval["high"]))
            assert row[f"{method}_p"] == pytest.approx(statistics.permutation_p_value(scores[i], accuracy, method,
                                                                                      n_perm=200, seed=3))
        other = 1 - i
        assert row["best_other"] == ["snip", "synflow"][other]
        difference = statistics.paired_difference(scores[i], scores[other], accuracy, "kendall", n_boot=200, seed=3)
        assert (row["kendall_diff"], row["kendall_diff_low"], row["kendall_diff_high"]) == pytest.approx(
            (difference["value"], difference["low"], difference["high"]))
    assert rows[0]["within_noise"] is False and rows[0]["kendall_diff_low"] > 0  # noise 0.05 beats noise 1
    table = format_markdown(rows)
    assert "resolved" in table and "| snip |" in table
    bare = correlation_table(["snip"], scores[:1], accuracy, n_boot=0)
    assert "kendall_low" not in bare[0] and format_markdown(bare).startswith("| proxy | Kendall tau |")


def write_gt(path, archs, accuracies):
    with open(path, "w") as f:
        for arch, accuracy in zip(archs, accuracies):
            f.write(json.dumps({"arch": arch, "space": "nb201", "params": 0, "flops": 0, "accuracy_kd": accuracy,
                                "seed": 0, "epochs": 1, "seconds": 1.0}) + "\n")


def test_fastnas_proxies_end_to_end(tmp_path, capsys):
    space, rng = get_space("nb201"), random.Random(0)
    archs = [space.sample(rng) for _ in range(4)]
    accuracies = [0.5, 0.7, 0.6, 0.9]
    gt = tmp_path / "gt.jsonl"
    write_gt(gt, archs, accuracies)
    with open(gt, "a") as f:
        f.write('{"arch": "|nor_conv_3x3~0|+|no')  # a line bench-gt is still writing: skipped
    (tmp_path / "gt-config.json").write_text(json.dumps({"space": "nb201", "data": "digits",
                                                         "options": {"C": 4, "N": 1}}))
    out = tmp_path / "out"
    argv = ["proxies", "--gt", str(gt), "--proxies", "params,snip", "--out", str(out), "--batch-size", "16",
            "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    table = json.loads((out / "proxy_table.json").read_text())
    assert table["architectures"] == 4 and [row["proxy"] for row in table["rows"]] == ["params", "snip"]
    params = [json.loads(line)["scores"]["params"] for line in (out / "scores.jsonl").read_text().splitlines()]
    assert params == [space.cost(a, (1, 8, 8), C=4, N=1)["params"] for a in archs]  # gt-config's options
    params_row = table["rows"][0]
    assert params_row["kendall"] == pytest.approx(stats.kendalltau(params, accuracies)[0])
    assert params_row["spearman"] == pytest.approx(stats.spearmanr(params, accuracies)[0])
    assert params_row["pearson"] == pytest.approx(stats.pearsonr(params, accuracies)[0])
    assert (out / "proxy_table.md").read_text().startswith("| proxy |")
    assert (out / "proxy_scatter.png").stat().st_size > 0
    assert "params" in capsys.readouterr().out

    # A rerun with one more proxy computes only that proxy; the cached scores are kept.
    assert main(argv[:4] + ["params,snip,grad_norm"] + argv[5:]) == 0
    lines = (out / "scores.jsonl").read_text().splitlines()
    assert len(lines) == 8 and set(json.loads(lines[-1])["scores"]) == {"grad_norm"}
    with pytest.raises(ValueError, match="out: .* holds scores for"):
        main(argv + ["--seed", "1"])


def test_fastnas_proxies_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="gt: .* does not exist"):
        main(["proxies", "--gt", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")])
    gt = tmp_path / "gt.jsonl"
    gt.write_text('{"arch": "x", "space": "nb201"}\n')
    with pytest.raises(ValueError, match="gt: line 1 .* accuracy_kd"):
        main(["proxies", "--gt", str(gt), "--out", str(tmp_path / "out")])
    write_gt(gt, ["|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"] * 2, [0.1, 0.2])
    with pytest.raises(ValueError, match="holds 1 architecture"):
        main(["proxies", "--gt", str(gt), "--out", str(tmp_path / "out")])
    with pytest.raises(ValueError, match="unknown name 'zen'"):
        main(["proxies", "--gt", str(gt), "--proxies", "snip,zen", "--out", str(tmp_path / "out")])
    write_gt(gt, ["|skip_connect~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
                  "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"], [0.1, 0.2])
    (tmp_path / "gt-config.json").write_text(json.dumps({"space": "nb201", "data": "synthetic", "options": {}}))
    with pytest.raises(ValueError, match="data: the ground truth .* was measured on 'synthetic'"):
        main(["proxies", "--gt", str(gt), "--out", str(tmp_path / "out")])
