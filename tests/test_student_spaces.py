"""Student spaces (NAS-Bench-201, ResNet, PiT): architecture strings, sampling, shapes, parameter counts."""

import random

import pytest
import torch
import torch.nn as nn

from fastnas.nn.cost import count_flops, count_params
from fastnas.search_spaces import SPACES, get_space, nb201, resnet

ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_registry_and_unknown_space():
    assert sorted(SPACES) == ["nb201", "pit", "resnet"]
    assert get_space("nb201").name == "nb201"
    with pytest.raises(ValueError, match="space: expected one of nb201, resnet, pit, got 'vgg'"):
        get_space("vgg")


@pytest.mark.parametrize("name", sorted(SPACES))
def test_samples_round_trip_and_are_deterministic(name):
    space = get_space(name)
    rng, again = random.Random(3), random.Random(3)
    first = [space.sample(rng) for _ in range(20)]
    assert first == [space.sample(again) for _ in range(20)]
    assert len(set(first)) > 15  # successive draws differ
    assert first[0] != space.sample(random.Random(4))
    for arch in first:
        assert space.validate(arch) == arch


def test_nb201_canonical_order_and_full_enumeration():
    space = get_space("nb201")
    shuffled = "|skip_connect~0|+|none~1|nor_conv_1x1~0|+|avg_pool_3x3~2|nor_conv_3x3~0|none~1|"
    canonical = "|skip_connect~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|"
    assert space.validate(shuffled) == canonical
    archs = nb201.all_archs()
    assert len(archs) == 5 ** 6 == len(set(archs))
    assert ALL_NONE in archs and ALL_CONV in archs


@pytest.mark.parametrize("name, arch, message", [
    ("nb201", "|nor_conv_3x3~0|+|none~0|none~1|", "expected 3 nodes"),
    ("nb201", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv' in node 1"),
    ("nb201", "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "node 2 takes node 0 twice"),
    ("nb201", "|none~0|+|none~0|+|none~0|none~1|none~2|",
     r"node 2 needs one edge from each of nodes 0..1, missing \[1\]"),
    ("nb201", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 can only take nodes 0..0"),
    ("nb201", "|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~input'"),
    ("nb201", "none~0+|none~0|none~1|+|none~0|none~1|none~2|", "node 1 must be written"),
    ("nb201", 42, "expected a NAS-Bench-201 string"),
    ("resnet", "3x16-3x32", "expected 3 stages"),
    ("resnet", "3x16-3x32-4x64", r"stage 3 depth must be one of \(1, 3, 5, 7\), got 4"),
    ("resnet", "3x16-3x33-3x64", "stage 2 width must be one of"),
    ("resnet", "3-16-3x32-3x64", "expected 3 stages"),
    ("resnet", "3by16-3x32-3x64", "stage 1 must be 'DEPTHxWIDTH'"),
    ("pit", "d2e32h2r2-d2e64h4r2", "expected 3 stages"),
    ("pit", "d2e32h2r2-d2e64h3r2-d2e128h4r4", r"stage 2 heads must be one of \(1, 2, 4\), got 3"),
    ("pit", "d2e32h2-d2e64h4r2-d2e128h4r4", "stage 1 must be 'd<depth>e<width>h<heads>r<mlp ratio>'"),
    ("pit", "d2e32h2r2-d2e64h4r2-d9e128h4r4", "stage 3 depth"),
])
def test_malformed_architectures_are_named(name, arch, message):
    with pytest.raises(ValueError, match=message):
        get_space(name).validate(arch)


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 3, 32, 32)])
@pytest.mark.parametrize("name", sorted(SPACES))
def test_output_and_stage_feature_shapes(name, shape):
    space = get_space(name)
    arch = space.sample(random.Random(1))
    options = {"C": 8, "N": 1} if name == "nb201" else {}
    torch.manual_seed(0)
    model = space.build(arch, num_classes=7, in_channels=shape[1], image_size=shape[-1], **options)
    x = torch.randn(*shape)
    captured = {}
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    classifier.register_forward_hook(lambda _m, _inputs, output: captured.setdefault("out", output))
    logits, features = model(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(captured["out"], logits)  # the classifier is the last nn.Linear
    assert len(features) == 3
    sizes = [f.shape[-1] for f in features]
    assert all(f.dim() == 4 and f.shape[0] == 2 and f.shape[-2] == f.shape[-1] for f in features)
    assert sizes[1] == -(-sizes[0] // 2) and sizes[2] == -(-sizes[1] // 2)  # each stage halves the grid
    if name == "nb201":
        assert [f.shape[1] for f in features] == [8, 16, 32] and sizes[0] == shape[-1]
    elif name == "resnet":
        assert [f.shape[1] for f in features] == [width for _, width in resnet.parse_arch(arch)]
    else:
        assert sizes[0] == {8: 4, 32: 8}[shape[-1]]  # patch 2 on 8x8, patch 4 on 32x32
    cost = space.cost(arch, shape[1:], 7, **options)
    assert cost == {"params": count_params(model), "flops": count_flops(model, shape[1:])}


def _nb201_params_by_hand(convs_3x3: int, C: int = 16, N: int = 5, classes: int = 10) -> int:
    """Parameters of a NAS-Bench-201 network whose cell has `convs_3x3` nor_conv_3x3 edges, the rest free."""
    stem = 3 * C * 9 + 2 * C  # conv 3 -> C (no bias) + BN

    def reduction(c_in, c_out):  # ResNetBasicblock: ReLUConvBN 3x3 twice + avg pool + 1x1 conv shortcut
        return c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9 + 2 * c_out + c_in * c_out

    cells = sum(N * convs_3x3 * (c * c * 9 + 2 * c) for c in (C, 2 * C, 4 * C))
    head = 2 * 4 * C + 4 * C * classes + classes  # final BN + linear
    return stem + reduction(C, 2 * C) + reduction(2 * C, 4 * C) + cells + head


def test_nb201_parameter_counts_match_the_benchmark():
    space = get_space("nb201")
    # NAS-Bench-201 reports 0.073306 MB (empty cell) to 1.531546 MB (all 3x3 convs), 7.78 to 220.11 MFLOPs
    # on CIFAR-10; the formula above gives the same counts.
    assert _nb201_params_by_hand(0) == 73306 and _nb201_params_by_hand(6) == 1531546
    assert space.cost(ALL_NONE, (3, 32, 32), 10) == {"params": 73306, "flops": 7783040}
    assert space.cost(ALL_CONV, (3, 32, 32), 10) == {"params": 1531546, "flops": 220119680}
    mixed = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    assert space.cost(mixed, (3, 32, 32), 10)["params"] == _nb201_params_by_hand(3)
    # A 1x1 conv edge: C*C weights + 2C BN per cell.
    one_by_one = "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert space.cost(one_by_one, (3, 32, 32), 10)["params"] == 73306 + 5 * sum(c * c + 2 * c for c in (16, 32, 64))


def test_nb201_none_edges():
    space = get_space("nb201")
    model = space.build(ALL_NONE, in_channels=1, C=4, N=2).eval()
    x = torch.randn(3, 1, 8, 8)
    logits, features = model(x)
    assert torch.count_nonzero(features[0]) == 0  # every cell outputs zero
    torch.testing.assert_close(logits, logits[:1].expand(3, -1))  # so the prediction ignores the input
    # A cell whose only live path is node 0 -> skip -> node 3 is the identity.
    skip_only = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    cell = nb201.InferCell(nb201.parse_arch(skip_only), 4)
    y = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(cell(y), y)
    # Node 2 is zero but still summed into node 3 next to a live conv: gradients flow through the conv only.
    cell = nb201.InferCell(nb201.parse_arch("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|none~2|"), 4)
    assert torch.isfinite(cell(y)).all()


def test_resnet_parameter_count_by_hand():
    model = get_space("resnet").build("1x8-1x16-1x32", num_classes=10, in_channels=3)

    def block(c_in, c_out, shortcut):  # two 3x3 convs + BNs, 1x1 conv + BN shortcut where the shape changes
        return c_in * c_out * 9 + c_out * c_out * 9 + 4 * c_out + (c_in * c_out + 2 * c_out if shortcut else 0)

    expected = 3 * 8 * 9 + 16 + block(8, 8, False) + block(8, 16, True) + block(16, 32, True) + 32 * 10 + 10
    assert count_params(model) == expected


def test_pit_pooling_is_pits_depthwise_conv_when_widths_double():
    model = get_space("pit").build("d1e32h2r2-d1e64h4r2-d1e96h4r1", in_channels=3, image_size=32)
    assert model.pools[0].groups == 32 and model.pools[0].kernel_size == (3, 3) and model.pools[0].stride == (2, 2)
    assert model.pools[1].groups == 32  # gcd(64, 96)
    # Another input size than the position embedding's: interpolated, not an error.
    logits, features = model(torch.randn(1, 3, 16, 16))
    assert features[0].shape == (1, 32, 4, 4)


def test_space_options_are_checked():
    with pytest.raises(ValueError, match=r"patch_size: the nb201 space takes only the options \['C', 'N'\]"):
        get_space("nb201").check_options({"patch_size": 2})
    with pytest.raises(ValueError, match="C: the resnet space takes only the options none"):
        get_space("resnet").check_options({"C": 8})
    with pytest.raises(TypeError):
        get_space("resnet").build("1x8-1x16-1x32", C=8)
    with pytest.raises(ValueError, match="N: expected a positive integer, got 0"):
        get_space("nb201").build(ALL_NONE, N=0)
    with pytest.raises(ValueError, match="patch_size: 64 is larger than image_size 32"):
        get_space("pit").build("d1e32h2r2-d1e64h4r2-d1e96h4r1", patch_size=64)
