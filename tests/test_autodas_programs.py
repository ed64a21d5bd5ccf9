"""The authors' released Auto-DAS programs, Eq. 4 / Eq. 5 and DisWOT against hand transcriptions of their code.

Each transcription below follows the authors' code line by line (lliai/Auto-DAS: LinearInstinct, ParaInteraction,
primitives/; lliai/DisWOT-CVPR2023: the NB201 rank script, distiller_zoo ICKD and SP) on a fixed small network,
with plain torch calls and no fastnas op.
"""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fastnas.proxies as proxies
from fastnas.distill.teachers import Teacher, TeacherResNet
from fastnas.proxies.baselines import gaussian_init_, normalized_outer_distance
from fastnas.proxies.program import Program, part_scores
from fastnas.proxies.released import RELEASED


class TinyConvNet(nn.Module):
    """conv-BN-ReLU-conv-ReLU, global pooling, linear classifier; returns (logits, [stage map])."""

    def __init__(self, width: int = 6, classes: int = 5):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(width, classes)

    def forward(self, x):
        stage = self.body(x)
        return self.classifier(stage.mean((2, 3))), [stage]


@pytest.fixture(scope="module")
def setting():
    """Float64 networks and images: the tiny KL distances of near-uniform softmaxes lose digits in float32."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(12, 1, 6, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (12,), generator=gen)
    torch.manual_seed(0)
    return TinyConvNet(6).double(), TinyConvNet(9).double().eval(), images, labels


# --- the authors' primitives, transcribed -------------------------------------------------------------
def conv_grads(model, images, labels, virtual=False):
    """zc_inputs.py compute_gradient / compute_virtual_grad: Conv2d weight gradients, last layer first."""
    net = copy.deepcopy(model).train()
    if virtual:
        net(torch.ones(list(images.shape), dtype=images.dtype))[0].sum().backward()
    else:
        F.cross_entropy(net(images)[0], labels).backward()
    return [m.weight.grad.detach() for m in net.modules() if isinstance(m, nn.Conv2d)][::-1]


UNARY = {  # unary_ops.py
    "no_op": lambda a: a,
    "logsoftmax": lambda a: F.log_softmax(a, dim=0),
    "tanh": torch.tanh,
    "l1_norm": lambda a: torch.sum(torch.abs(a)) / (a.numel() + 1e-9),
    "frobenius_norm": lambda a: torch.norm(a, p="fro"),
    "normalized_sum": lambda a: torch.sum(a) / (a.numel() + 1e-9),
    "abslog": lambda a: torch.log(torch.abs(torch.where(a == 0, torch.ones_like(a), a))),
    "sigmoid": torch.sigmoid,
    "invert": lambda a: 1 / (a + 1e-9),
    "abs": torch.abs,
    "to_sum": torch.sum,
}


def linear_instinct(tensors, ops, across=sum):
    """LinearInstinct.forward_linear + convert_to_numpy: the ops on every layer, each layer's mean, summed."""
    for op in ops:
        tensors = [UNARY[op](a) for a in tensors]
    return across([torch.mean(a) for a in tensors])


def fixed_keep(shape, keep):
    """fastnas's fixed pattern for the authors' random mask / dropout (generator seeded 0)."""
    return (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < keep).double()


TRANSFORMS = {  # transform.py (mask and drop with fastnas's fixed pattern)
    "mish": lambda f: f * torch.tanh(F.softplus(f)),
    "pow2": lambda f: torch.pow(f, 2),
    "softmax_N": lambda f: F.softmax(f, dim=0),
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "abs": torch.abs,
    "multi_scale_r4": lambda f: f,  # unchanged unless 4-d
    "drop": lambda f: f * fixed_keep(f.shape, 0.9) / 0.9,
    "mask": lambda f: f if f.dim() < 4 else f * fixed_keep((f.shape[0], 1, *f.shape[2:]), 0.35),
}


def kl(temperature):
    return lambda s, t: F.kl_div(F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1),
                                 reduction="batchmean") * temperature * temperature


DISTANCES = {"multiply": lambda s, t: (s * t).mean(), "kl_T8": kl(8), "kl_T1": kl(1), "l1_loss": F.l1_loss}


def w100_teacher_student(f, t, s):
    n = t.shape[0]
    return f * 100 * F.cosine_similarity(t.view(n, -1), s.view(n, -1), dim=0).mean()


WEIGHTS = {"w1_teacher": lambda f, t, s: f, "w100_teacher_student": w100_teacher_student}


def interaction(student, teacher, images, key, transforms, distance, weight):
    """ParaInteraction.__call__ with k1 = last stage map, k2 = pooled embedding, k3 = logits; the teacher's
    channels truncated to the student's (the authors' inter_fd)."""
    net = copy.deepcopy(student).train()
    s_logits, (s_map,) = net(images)
    with torch.no_grad():
        t_logits, (t_map,) = teacher(images)
    s = {"k1": s_map, "k2": s_map.mean((2, 3)), "k3": s_logits}[key].detach()
    t = {"k1": t_map, "k2": t_map.mean((2, 3)), "k3": t_logits}[key]
    width = s.shape[1]
    t = t[:, :width]
    for op in transforms:
        t, s = TRANSFORMS[op](t), TRANSFORMS[op](s)
    out = DISTANCES[distance](s, t)
    return WEIGHTS[weight](out, t, s)


def transcription(name, student, teacher, images, labels):
    """(instinct, interaction) of the program `name`."""
    grads = conv_grads(student, images, labels)
    if name == "autodas_nb201":
        return (linear_instinct(grads, ["logsoftmax", "no_op", "tanh", "l1_norm"]),
                interaction(student, teacher, images, "k2", ["mish", "pow2", "softmax_N"], "multiply",
                            "w100_teacher_student"))
    if name == "autodas_resnet":
        return (linear_instinct(grads, ["logsoftmax", "no_op", "frobenius_norm", "normalized_sum"]),
                interaction(student, teacher, images, "k2", ["relu", "sigmoid", "abs"], "kl_T8",
                            "w100_teacher_student"))
    if name == "autodas_nb101":
        virtual = conv_grads(student, images, labels, virtual=True)
        return (linear_instinct(virtual, ["abslog", "sigmoid", "normalized_sum", "invert"]),
                interaction(student, teacher, images, "k3", ["drop", "multi_scale_r4", "pow2"], "l1_loss",
                            "w100_teacher_student"))
    if name == "autodas_vit":
        return (linear_instinct(grads, ["sigmoid", "logsoftmax", "abslog", "no_op"]),
                interaction(student, teacher, images, "k3", ["sigmoid", "mask", "softmax_N"], "kl_T1",
                            "w1_teacher"))
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    if name == "autodas_eq4":  # D_KL(sigmoid([F_S, F_T])) + 1/M sum ||logsoftmax(dL/dW)||_F
        return (mean([torch.norm(F.log_softmax(g, dim=0), p="fro") for g in grads]),
                interaction(student, teacher, images, "k1", ["sigmoid"], "kl_T1", "w1_teacher"))
    if name == "autodas_eq5":  # D_KL(mask([F_S, F_T])) + M / sum sigmoid(|log|dL/dW||)
        return (mean([1 / (torch.sigmoid(torch.log(g.abs()).abs()).sum() + 1e-9) for g in grads]),
                interaction(student, teacher, images, "k1", ["mask"], "kl_T1", "w1_teacher"))
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_program_equals_its_transcription(name, setting):
    student, teacher, images, labels = setting
    instinct, interaction_part = (v.item() for v in transcription(name, student, teacher, images, labels))
    assert math.isfinite(instinct) and math.isfinite(interaction_part) and interaction_part != 0
    expected = instinct + interaction_part
    assert proxies.score(name, student, (images, labels), teacher) == pytest.approx(expected, rel=1e-7)
    # rel 1e-7: the authors divide by numel + 1e-9 where fastnas takes the mean. Each part on its own (an
    # interaction far smaller than the instinct would hide in the sum):
    program = RELEASED[name][0]
    inputs = proxies.collect(copy.deepcopy(student).train(), images, labels, proxies.network_outputs(teacher, images),
                             layer_inputs=["weights", "grads", "virtual_grads"])
    got = part_scores(program, inputs)
    assert got == pytest.approx((instinct, interaction_part), rel=1e-7)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_program_parses_and_prints(name):
    program, source = RELEASED[name]
    assert Program.from_json(program.to_json()) == program
    assert proxies.get_proxy(name).source.endswith(source) and proxies.get_proxy(name).needs_teacher
    assert program.formula().count("(") == program.formula().count(")")


def test_formulas_by_hand():
    assert RELEASED["autodas_nb201"][0].formula() == (
        "sum_l[conv] mean(l1_norm(tanh(logsoftmax(G_l)))) + 100 cos_b(T, S) * "
        "multiply(softmax_N(pow2(mish(E_S))), softmax_N(pow2(mish(E_T))))")
    assert RELEASED["autodas_eq4"][0].formula() == (
        "mean_l[conv] mean(frobenius_norm(logsoftmax(G_l))) + kl_T1(sigmoid(F_S), sigmoid(F_T))")
    assert RELEASED["autodas_eq5"][0].formula() == (
        "mean_l[conv] mean(invert(to_sum(sigmoid(abs(abslog(G_l)))))) + kl_T1(mask(F_S), mask(F_T))")


# --- DisWOT as its code computes it ---------------------------------------------------------------------
def network_weight_gaussian_init(net):
    """DisWOT predictor/pruners/measures/diswot.py."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight)
                if hasattr(m, "bias") and m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight)
                if hasattr(m, "bias") and m.bias is not None:
                    nn.init.zeros_(m.bias)
    return net


def ickd_batch_loss(f_s, f_t):
    """distiller_zoo/ICKD.py ICKDLoss.batch_loss."""
    bsz, ch = f_s.shape[0], f_s.shape[1]
    f_s, f_t = f_s.view(bsz, ch, -1), f_t.view(bsz, ch, -1)
    emd_s = F.normalize(torch.bmm(f_s, f_s.permute(0, 2, 1)), dim=2)
    emd_t = F.normalize(torch.bmm(f_t, f_t.permute(0, 2, 1)), dim=2)
    g_diff = emd_s - emd_t
    return (g_diff * g_diff).view(bsz, -1).sum() / (ch * bsz)


def similarity(g_s, g_t):
    """RepDistiller's Similarity (DisWOT's distiller_zoo SP): forward zips its two arguments."""
    def similarity_loss(f_s, f_t):
        bsz = f_s.shape[0]
        f_s, f_t = f_s.view(bsz, -1), f_t.view(bsz, -1)
        g_s, g_t = F.normalize(torch.mm(f_s, f_s.t())), F.normalize(torch.mm(f_t, f_t.t()))
        g_diff = g_t - g_s
        return (g_diff * g_diff).view(-1, 1).sum(0) / (bsz * bsz)
    return [similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]


def diswot_transcription(student, teacher, images, labels, seed):
    """compute_diswot_procedure for one student: both networks re-initialized N(0, 1), CE backward of each,
    -SP(teacher pooled embedding, student pooled embedding)[0] - ICKD(classifier gradients)."""
    torch.manual_seed(seed)
    tnet = copy.deepcopy(teacher).train()
    snet = copy.deepcopy(student).train()
    state = torch.get_rng_state()
    torch.manual_seed(seed)  # fastnas: the teacher from a generator seeded torch.initial_seed() ...
    network_weight_gaussian_init(tnet)
    torch.set_rng_state(state)  # ... the student from the global RNG as it was
    network_weight_gaussian_init(snet)
    t_logits, (t_map,) = tnet(images)
    s_logits, (s_map,) = snet(images)
    F.cross_entropy(t_logits, labels).backward()
    F.cross_entropy(s_logits, labels).backward()
    t_compressed = tnet.classifier.weight.grad.unsqueeze(-1).unsqueeze(-1)
    s_compressed = snet.classifier.weight.grad.unsqueeze(-1).unsqueeze(-1)
    width = s_map.shape[1]  # fastnas: the wider teacher truncated to the student's width
    score_sp = -1 * similarity(t_map.mean((2, 3))[:, :width], s_map.mean((2, 3)))[0]
    score_ickd = -1 * ickd_batch_loss(t_compressed[:, :width], s_compressed)
    return (score_sp + score_ickd).item()


@pytest.mark.parametrize("teacher_width", [6, 9])
def test_diswot_equals_its_code(setting, teacher_width):
    student, _, images, labels = setting
    torch.manual_seed(3)
    teacher = TinyConvNet(teacher_width).double().eval()
    expected = diswot_transcription(student, teacher, images, labels, seed=11)
    torch.manual_seed(11)
    assert proxies.score("diswot", student, (images, labels), teacher) == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(11)
    outputs = proxies.network_outputs(teacher, images)  # the outputs keep the network
    assert proxies.score("diswot", student, (images, labels), outputs) == pytest.approx(expected, rel=1e-5)


def test_diswot_reinitializes_a_frozen_teacher_in_train_mode(setting):
    _, _, images, labels = setting
    torch.manual_seed(0)
    inner = TeacherResNet(1, 5, widths=(4, 6, 8), blocks=1).double()
    wrapped = Teacher(copy.deepcopy(inner), (1, 6, 6))
    student = TinyConvNet(8).double()
    torch.manual_seed(5)
    from_wrapped = proxies.score("diswot", student, (images, labels), wrapped)
    torch.manual_seed(5)
    assert proxies.score("diswot", student, (images, labels), inner.train()) == pytest.approx(from_wrapped, rel=1e-6)
    before = copy.deepcopy(wrapped.state_dict())
    proxies.score("diswot", student, (images, labels), wrapped)
    assert all(torch.equal(v, before[k]) for k, v in wrapped.state_dict().items())


def test_diswot_needs_the_teacher_network(setting):
    student, teacher, images, labels = setting
    outputs = proxies.network_outputs(teacher, images)
    bare = proxies.NetworkOutputs(outputs.logits, outputs.embedding, outputs.features)
    with pytest.raises(ValueError, match=r"teacher: proxies \['diswot'\] run the teacher network"):
        proxies.score("diswot", student, (images, labels), bare)


def test_normalized_outer_distance_equals_the_matrices():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 7, generator=gen, dtype=torch.float64), torch.randn(4, 7, generator=gen, dtype=torch.float64)
    a[0, 2] = 0.0  # a zero entry: its row of N(a a^T) is 0
    expected = [(F.normalize(torch.outer(x, x), dim=1) - F.normalize(torch.outer(y, y), dim=1)).square().sum()
                for x, y in zip(a, b)]
    torch.testing.assert_close(normalized_outer_distance(a, b), torch.stack(expected))


def test_gaussian_init_matches_the_authors_order():
    torch.manual_seed(0)
    net = TinyConvNet()
    ours, theirs = copy.deepcopy(net), copy.deepcopy(net)
    torch.manual_seed(1)
    gaussian_init_(ours)
    torch.manual_seed(1)
    network_weight_gaussian_init(theirs)
    for (name, x), y in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(x, y), name


# --- size controls ------------------------------------------------------------------------------------
def test_size_controls_by_hand(setting):
    student, _, images, labels = setting
    scores = proxies.score_many(["conv_count", "conv_sqrt_numel_log_c"], student, (images, labels))
    assert scores["conv_count"] == 2  # the classifier is Linear
    assert scores["conv_sqrt_numel_log_c"] == pytest.approx(math.sqrt(6 * 9) * math.log(6)
                                                            + math.sqrt(6 * 6 * 9) * math.log(6))
