"""The registry of published genotypes and the parameter counts of their evaluation networks."""

import pytest

from fastnas.search_spaces import (GENOTYPES, Genotype, NetworkCIFAR, NetworkImageNet, load_genotype,
                                   reference_param_count)
from fastnas.search_spaces.genotypes import from_reference


# --------------------------------------------------------------------------- the reference's count, by hand

def op_params(name: str, C: int, stride: int) -> int:
    """Parameters of one operation of quark0/darts operations.py with affine BatchNorm (2 C each)."""
    if name.startswith("sep_conv"):  # two (depthwise k x k, pointwise, BN) blocks
        k = int(name[-1])
        return 2 * (C * k * k + C * C + 2 * C)
    if name.startswith("dil_conv"):  # one (depthwise k x k, pointwise, BN) block
        k = int(name[-1])
        return C * k * k + C * C + 2 * C
    if name == "skip_connect":  # Identity, or FactorizedReduce: two 1x1 convs C -> C/2 and a BN
        return 0 if stride == 1 else C * C + 2 * C
    return 0  # pooling


def reference_count(genotype: Genotype, C: int, layers: int, classes: int, imagenet: bool) -> int:
    """count_parameters_in_MB * 1e6 of quark0/darts cnn/model.py NetworkCIFAR / NetworkImageNet (no auxiliary
    head), from its layer shapes: the stem(s), per cell preprocess0 (ReLUConvBN or FactorizedReduce: both
    C_pp * C + 2 C), preprocess1 and the operations, the classifier."""
    if imagenet:
        total = (3 * (C // 2) * 9 + C) + ((C // 2) * C * 9 + 2 * C) + (C * C * 9 + 2 * C)
        C_pp, C_p, C_cur = C, C, C
    else:
        total = 3 * (3 * C) * 9 + 2 * (3 * C)
        C_pp, C_p, C_cur = 3 * C, 3 * C, C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        C_cur *= 2 if reduction else 1
        total += (C_pp * C_cur + 2 * C_cur) + (C_p * C_cur + 2 * C_cur)
        for node in genotype.reduce if reduction else genotype.normal:
            total += sum(op_params(name, C_cur, 2 if reduction and index < 2 else 1) for name, index in node)
        C_pp, C_p = C_p, 4 * C_cur
    return total + C_p * classes + classes


CIFAR = dict(C=36, layers=20, classes=10)  # quark0/darts cnn/train.py
IMAGENET = dict(C=48, layers=14, classes=1000)  # quark0/darts cnn/train_imagenet.py


def cifar_network(name, **kwargs):
    return NetworkCIFAR(load_genotype(name), CIFAR["C"], CIFAR["classes"], CIFAR["layers"], **kwargs)


def imagenet_network(name, **kwargs):
    return NetworkImageNet(load_genotype(name), IMAGENET["C"], IMAGENET["classes"], IMAGENET["layers"], **kwargs)


@pytest.mark.parametrize("name", list(GENOTYPES))
def test_counts_equal_the_reference_structure(name):
    genotype = load_genotype(name)
    assert reference_param_count(cifar_network(name)) == reference_count(genotype, **CIFAR, imagenet=False)
    assert reference_param_count(imagenet_network(name)) == reference_count(genotype, **IMAGENET, imagenet=True)
    # with the auxiliary head, the reference count leaves it out
    assert reference_param_count(cifar_network(name, auxiliary=True)) == reference_param_count(cifar_network(name))


def test_darts_v2_has_the_reference_count():
    # the hand count of the reference structure above, pinned; a copy of quark0/darts cnn/train.py annotated
    # with its log (found in the code corpus) shows "param size = 3.349342MB" for DARTS_V2 (the paper's 3.3M)
    assert reference_param_count(cifar_network("DARTS_V2")) == 3_349_342


@pytest.mark.parametrize("name", [n for n, cell in GENOTYPES.items() if cell.cifar10_params_m and n != "DARTS_V1"])
def test_cifar_counts_round_to_the_papers(name):
    # the papers give millions rounded to 0.1M
    assert round(reference_param_count(cifar_network(name)) / 1e6, 1) == GENOTYPES[name].cifar10_params_m


def test_darts_v1_is_3_2m_though_the_paper_lists_3_3m():
    # DARTS Table 1 gives 3.3M for first-order DARTS; the DARTS_V1 cell of the authors' genotypes.py builds
    # 3.17M as their code counts it. Recorded, not hidden: this test fails if the registry's cell changes.
    assert GENOTYPES["DARTS_V1"].cifar10_params_m == 3.3
    assert reference_param_count(cifar_network("DARTS_V1")) == 3_169_414


@pytest.mark.parametrize("name", [n for n, cell in GENOTYPES.items() if cell.imagenet_params_m])
def test_imagenet_counts_round_to_the_papers(name):
    assert round(reference_param_count(imagenet_network(name)) / 1e6, 1) == GENOTYPES[name].imagenet_params_m


# --------------------------------------------------------------------------- the registry

def test_the_reference_format_maps_two_pairs_per_node():
    genotype = load_genotype("DARTS_V2")
    # quark0/darts DARTS_V2.normal, pairs 2j and 2j + 1 for node j (inputs: 0, 1 the cell inputs, 2 + j node j)
    assert genotype.normal == [[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)], [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
                               [("sep_conv_3x3", 1), ("skip_connect", 0)], [("skip_connect", 0), ("dil_conv_3x3", 2)]]
    assert genotype.reduce[3] == [("skip_connect", 2), ("max_pool_3x3", 1)]
    assert genotype.meta["source"].startswith("quark0/darts cnn/genotypes.py")
    with pytest.raises(ValueError, match=r"normal: expected 8 \(op, input\) pairs"):
        from_reference(genotype.reduce[0], [pair for node in genotype.reduce for pair in node])
    with pytest.raises(ValueError, match=r"reduce: .* concat \[4, 5, 6\]"):
        from_reference([("skip_connect", 0)] * 8, [("skip_connect", 0)] * 8, reduce_concat=[4, 5, 6])


def test_every_entry_cites_its_source_and_paper():
    for cell in GENOTYPES.values():
        assert "genotypes.py" in cell.source and "arXiv" in cell.paper
        assert cell.genotype.normal is not None and all(len(node) == 2 for node in cell.genotype.normal)


def test_load_genotype_by_name_or_path(tmp_path):
    assert load_genotype("pc-darts") == load_genotype("PC_DARTS")
    first = load_genotype("PDARTS")
    first.meta["C"] = 1
    assert "C" not in load_genotype("PDARTS").meta  # a fresh copy each time
    path = tmp_path / "g.json"
    load_genotype("DARTS_V1").save(path)
    assert load_genotype(path) == load_genotype("DARTS_V1") == load_genotype(str(path))


def test_load_genotype_errors(tmp_path):
    with pytest.raises(ValueError, match=r"genotype: 'DARTS_V3' is neither a registered genotype "
                                         r"\(DARTS_V1, DARTS_V2, PC_DARTS, PC_DARTS_IMAGENET, PDARTS\)"):
        load_genotype("DARTS_V3")
    with pytest.raises(FileNotFoundError, match="genotype: no file"):
        load_genotype(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a fastnas genotype file"):
        load_genotype(tmp_path / "bad.json")
