"""Batched NAS-Bench-201 scoring (fastnas.proxies.batched) equals the registry's one-network scores."""

import random

import pytest
import torch

from conftest import DEVICES
from fastnas.nn.cost import count_flops, count_params
from fastnas.proxies import score, score_many
from fastnas.proxies.batched import BATCHED, DATA_FREE, SharedNB201, _CodeAgreements, score_nb201
from fastnas.search_spaces import nb201

# Cells that exercise the edge cases: no path to the output, zero nodes read by convolutions, only skips,
# only convolutions, and a node whose only way out is `none`.
SPECIAL = [
    "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|none~2|",
    "|none~0|+|none~0|nor_conv_3x3~1|+|nor_conv_1x1~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|avg_pool_3x3~2|",
]
# (rtol, atol) per proxy: float64 for synflow, float32 layers for the rest (summed in another order)
TOLERANCE = {"params": (0, 0), "flops": (0, 0), "synflow": (1e-12, 0), "snip": (1e-5, 1e-7),
             "grad_norm": (1e-5, 1e-7), "fisher": (1e-5, 1e-9), "jacov": (1e-5, 1e-6), "nwot": (1e-7, 1e-9)}


def archs(n_random: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return SPECIAL + [nb201.sample_arch(rng) for _ in range(n_random)]


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    shared = SharedNB201(C=4, N=2, num_classes=10, in_channels=3)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen))
    return shared, batch, archs(10)


def test_every_batched_proxy_is_registered_and_tolerated():
    assert set(BATCHED) == set(TOLERANCE) and set(DATA_FREE) < set(BATCHED)


@pytest.mark.parametrize("archs_per_pass", [1, 4])  # 1: channels-last passes on a CPU
@pytest.mark.parametrize("name", BATCHED)
def test_batched_value_equals_the_one_network_value(setting, name, archs_per_pass):
    shared, batch, cells = setting
    got = score_nb201([name], cells, shared, batch, archs_per_pass=archs_per_pass)[name]
    want = torch.tensor([score(name, shared.network(arch), batch) for arch in cells], dtype=torch.float64)
    rtol, atol = TOLERANCE[name]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)
    assert torch.isfinite(want[len(SPECIAL):]).all() or name == "nwot"  # random cells score normally


def test_all_proxies_of_one_pass_equal_their_separate_passes(setting):
    shared, batch, cells = setting
    together = score_nb201(list(BATCHED), cells, shared, batch)
    for name in BATCHED:
        alone = score_nb201([name], cells, shared, batch, archs_per_pass=1)[name]
        rtol, atol = TOLERANCE[name]
        torch.testing.assert_close(together[name], alone, rtol=rtol, atol=atol, equal_nan=True)


def test_unbatched_proxy_falls_back_to_the_network_with_the_shared_weights(setting):
    shared, batch, cells = setting
    got = score_nb201(["grasp", "synflow"], cells[:5], shared, batch)
    for i, arch in enumerate(cells[:5]):
        want = score_many(["grasp", "synflow"], shared.network(arch), batch)
        assert got["grasp"][i].item() == pytest.approx(want["grasp"], rel=1e-6, nan_ok=True)
        assert got["synflow"][i].item() == pytest.approx(want["synflow"], rel=1e-12)


def test_network_holds_the_shared_weights(setting):
    shared = setting[0]
    arch = SPECIAL[5]
    net = shared.network(arch)
    params = dict(net.named_parameters())
    torch.testing.assert_close(params["stem.0.weight"], shared.base.stem[0].weight, rtol=0, atol=0)
    torch.testing.assert_close(params["classifier.weight"], shared.base.classifier.weight, rtol=0, atol=0)
    # edge 1 of cell 0 of stage 2 (after the reduction block) is node 1 <- node 0's nor_conv_1x1
    torch.testing.assert_close(params["stages.2.1.edges.1.1.weight"],
                               shared.edge_ops[2][0][1]["nor_conv_1x1"][1].weight, rtol=0, atol=0)
    torch.testing.assert_close(params["stages.1.2.edges.2.2.weight"],
                               shared.edge_ops[1][1][2]["nor_conv_3x3"][2].weight, rtol=0, atol=0)
    assert count_params(net) == nb201.count_cost(nb201.parse_arch(arch), 4, 2)[0]


def test_synflow_at_the_benchmark_size():
    """C = 16, N = 5 on 32x32: the forward-mode synflow equals the registry's backward one in float64."""
    torch.manual_seed(3)
    shared = SharedNB201()
    cells = [SPECIAL[4], SPECIAL[5]]
    got = score_nb201(["synflow"], cells, shared, image_size=32)["synflow"]
    want = torch.tensor([score("synflow", shared.network(a), (torch.zeros(1, 3, 32, 32), torch.zeros(1)))
                         for a in cells], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("C,N,classes,channels,side", [(16, 5, 10, 3, 32), (16, 5, 120, 3, 16), (8, 2, 100, 1, 8)])
def test_params_and_flops_equal_the_built_network(C, N, classes, channels, side):
    cells = archs(4, seed=side)
    shared = SharedNB201(C, N, classes, channels)
    got = score_nb201(["params", "flops"], cells, shared, image_size=side)
    for i, arch in enumerate(cells):
        net = nb201.build(arch, C, N, classes, channels)
        assert got["params"][i].item() == count_params(net)
        assert got["flops"][i].item() == count_flops(net, (channels, side, side))


def test_bad_input(setting):
    shared, batch, cells = setting
    with pytest.raises(ValueError, match=r"batch: proxies \['snip'\] read a batch of images"):
        score_nb201(["synflow", "snip"], cells, shared, image_size=8)
    with pytest.raises(ValueError, match="proxy: unknown name 'synflo'"):
        score_nb201(["synflo"], cells, shared, batch)
    with pytest.raises(ValueError, match="arch: unknown operation 'conv'"):
        score_nb201(["params"], ["|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"], shared, image_size=8)
    with pytest.raises(ValueError, match="batch: expected square images with 3 channels"):
        score_nb201(["snip"], cells, shared, (torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"batch: labels must lie in \[0, 10\)"):
        score_nb201(["snip"], cells, shared, (torch.zeros(4, 3, 8, 8), torch.full((4,), 10)))
    with pytest.raises(ValueError, match=r"image_size: 16 differs from the batch's images \(8\)"):
        score_nb201(["flops"], cells, shared, batch, image_size=16)
    with pytest.raises(ValueError, match="image_size: expected an integer >= 4"):
        score_nb201(["flops"], cells, shared)
    with pytest.raises(ValueError, match="archs_per_pass: expected a positive integer, got 0"):
        score_nb201(["synflow"], cells, shared, image_size=8, archs_per_pass=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_scores_on_cuda_equal_cpu(setting):
    shared, batch, cells = setting
    on_cpu = score_nb201(list(BATCHED), cells, shared, batch)
    on_gpu = score_nb201(list(BATCHED), cells, shared.cuda(), batch)
    shared.cpu()
    for name in BATCHED:
        rtol, atol = TOLERANCE[name]
        torch.testing.assert_close(on_gpu[name], on_cpu[name], rtol=max(rtol, 1e-4), atol=max(atol, 1e-5),
                                   equal_nan=True, msg=name)


@pytest.mark.parametrize("name", ["synflow", "snip", "jacov"])
def test_a_node_summed_in_place_leaves_the_state_it_started_from_alone(setting, name):
    """Node 2 starts from state 0 (a skip of every architecture of the pass), then adds parts of some of them;
    node 3 reads state 0 again, so writing the sum into it would change node 3."""
    shared, batch, _ = setting
    cells = ["|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|",
             "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"]
    got = score_nb201([name], cells, shared, batch, archs_per_pass=2)[name]
    want = torch.tensor([score(name, shared.network(arch), batch) for arch in cells], dtype=torch.float64)
    rtol, atol = TOLERANCE[name]
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_cell_index_is_the_position_in_the_space_order():
    """The density rule's span and the CLI's shards read nb201.all_archs()'s order through cell_index."""
    space = nb201.all_archs()
    assert [nb201.cell_index(nb201.parse_arch(arch)) for arch in space] == list(range(len(space)))


@pytest.mark.parametrize("shape", [(5, 1), (5, 2), (6, 3, 4, 4), (64, 16, 8, 8)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("device", DEVICES)
def test_code_agreements_count_agreeing_codes(shape, layout, device):
    """Two architectures' kernels from three ReLU outputs each (counted 1, 2 and 0 times), exact."""
    states = [torch.randn(2, *shape, device=device).relu_() for _ in range(3)]
    states[1][0].zero_()  # a zero state: every code 0
    if layout == "channels_last":
        if len(shape) != 4:
            pytest.skip("channels-last needs 4 dimensions")
        states = [x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (2, shape[0]))
                  for x in states]
    codes = _CodeAgreements(2, shape[0], torch.device(device))
    want = torch.zeros(2, shape[0], shape[0], dtype=torch.float64, device=device)
    for x, count in zip(states, (1, 2, 0)):
        for a in range(2):
            if count:
                codes.add(x[a], a, count)
            c = (x[a] > 0).flatten(1).double()
            want[a] += count * (c @ c.T + (1 - c) @ (1 - c).T)  # NWOT's kernel as the reference writes it
    torch.testing.assert_close(codes.kernels(), want, rtol=0, atol=0)


def test_non_finite_images_are_refused():
    shared = SharedNB201(4, 1)
    images = torch.randn(3, 3, 8, 8)
    images[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="batch: images must be finite"):
        score_nb201(["nwot"], [nb201.all_archs()[5]], shared, (images, torch.zeros(3, dtype=torch.long)))
