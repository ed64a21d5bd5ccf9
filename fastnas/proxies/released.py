"""The Auto-DAS programs the authors released, and the paper's Eq. 4 and Eq. 5, as fastnas programs.

Each is registered as a proxy under its name (`fastnas.proxies.score("autodas_nb201", ...)`) and
is a `Program` (`RELEASED[name]` is the program and where it comes from), so it prints as a formula
and can seed or be compared with a search. The authors' programs are strings of their code, lliai/Auto-DAS (LinearInstinct genotype
``INPUT:(input)UNARY:|op|op|op|op|`` and ParaInteraction alleles ``in / trans / weig / dist``, where
k1, k2, k3 are the last feature map, the pooled embedding and the logits); none of them is printed
in the paper. Their instinct reads Conv2d layers only, reduces each layer by its mean and sums the
layers; their interaction adds the weighted distance.

Eq. 4 and Eq. 5 are the paper's formulas (Sec. 3.4) in fastnas's reading, which the paper leaves
open in places: D_KL as the authors' kl_T1 (softmax over channels), "1/M sum" as the mean over the
Conv2d layers, Eq. 5's "max" (an OCR reading of the printed formula; the text names mask operations)
as the mask transform and "M / sum" as the mean over layers of 1 / sum.
"""

from __future__ import annotations

from .program import Interaction, LinearInstinct, Program, score
from .registry import register_proxy

AUTO_DAS = "Sun et al. 2024, Auto-DAS (ECCV)"

RELEASED: dict[str, tuple[Program, str]] = {
    # INPUT:(grad)UNARY:|logsoftmax|no_op|tanh|l1_norm| + in k2, trans mish, pow2, softmax_N, w100_teacher_student,
    # multiply.
    "autodas_nb201": (Program(
        instinct=LinearInstinct("grads", ("logsoftmax", "no_op", "tanh", "l1_norm")),
        interaction=Interaction("embedding", ("mish", "pow2", "softmax_N"), "multiply", "w100_teacher_student", 1)),
        "lliai/Auto-DAS exps/rank/nb201/eval_rank_jointly.py (the NB201 evaluation script's program)"),
    # INPUT:(grad)UNARY:|logsoftmax|no_op|frobenius_norm|normalized_sum| + in k2, trans relu, sigmoid, abs,
    # w100_teacher_student, kl_T8 ("s0 0.9096": the ResNet space).
    "autodas_resnet": (Program(
        instinct=LinearInstinct("grads", ("logsoftmax", "no_op", "frobenius_norm", "normalized_sum")),
        interaction=Interaction("embedding", ("relu", "sigmoid", "abs"), "kl_T8", "w100_teacher_student", 1)),
        "lliai/Auto-DAS exps/rank/s0/eval_rank_jointly.py and exps/search_model/s0 (the ResNet space's program)"),
    # INPUT:(virtual_grad)UNARY:|abslog|sigmoid|normalized_sum|invert| + in k3, trans drop, multi_scale_r4, pow2,
    # w100_teacher_student, l1_loss.
    "autodas_nb101": (Program(
        instinct=LinearInstinct("virtual_grads", ("abslog", "sigmoid", "normalized_sum", "invert")),
        interaction=Interaction("logits", ("drop", "multi_scale_r4", "pow2"), "l1_loss", "w100_teacher_student", 1)),
        "lliai/Auto-DAS exps/rank/nb101/eval_rank_jointly.py (also exps/search_model/vit/rnd_search_model.py)"),
    # INPUT:(grad)UNARY:|sigmoid|logsoftmax|abslog|no_op| + in k3, trans sigmoid, mask, softmax_N, w1_teacher, kl_T1.
    "autodas_vit": (Program(
        instinct=LinearInstinct("grads", ("sigmoid", "logsoftmax", "abslog", "no_op")),
        interaction=Interaction("logits", ("sigmoid", "mask", "softmax_N"), "kl_T1", "w1_teacher", 1)),
        "lliai/Auto-DAS exps/rank/vit/eval_rank_jointly.py (the ViT evaluation script's program)"),
    # rho_CNN = D_KL(sigmoid([F_S, F_T])) + 1/M sum ||logsoftmax(dL/dW)||_F
    "autodas_eq4": (Program(
        instinct=LinearInstinct("grads", ("logsoftmax", "frobenius_norm"), reduction="mean"),
        interaction=Interaction("feature", ("sigmoid",), "kl_T1", "w1_teacher", 1)),
        "Eq. 4 of the paper (rho_CNN), fastnas's reading"),
    # rho_ViT = D_KL(mask([F_S, F_T])) + M / sum sigmoid(|log|dL/dW||)
    "autodas_eq5": (Program(
        instinct=LinearInstinct("grads", ("abslog", "abs", "sigmoid", "to_sum", "invert"), reduction="mean"),
        interaction=Interaction("feature", ("mask",), "kl_T1", "w1_teacher", 1)),
        "Eq. 5 of the paper (rho_ViT), fastnas's reading"),
}


def _register(name: str, program: Program, where: str) -> None:
    register_proxy(name, needs_teacher=program.needs_teacher, source=f"{AUTO_DAS}: {where}",
                   layer_inputs=sorted(program.layer_inputs()))(lambda inputs: score(program, inputs))


for _name, (_program, _where) in RELEASED.items():
    _register(_name, _program, _where)
