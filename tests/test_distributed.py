"""Data-parallel search on 2 gloo processes (CPU): ranks stay identical and match the single-process math."""

import json
import math
import os
import random
import socket
import subprocess
import sys

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from fastnas.distill import TeacherResNet, save_teacher_checkpoint
from fastnas.distributed import Distributed
from fastnas.evaluators.ground_truth import read_records
from fastnas.evaluators.proxy_table import read_scores
from fastnas.runs import RunFolder
from fastnas.search_spaces import SuperNetwork, get_space
from fastnas.strategies import DNADSearch, SDDARTSConfig, SDDARTSSearch

from test_dnad import tiny_config
from test_proxies import write_gt
from test_sddarts import TINY as SDDARTS_TINY

WORLD = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_group(rank: int, port: int) -> Distributed:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return Distributed.from_env("cpu")


def tiny_supernet() -> SuperNetwork:
    torch.manual_seed(0)
    return SuperNetwork(C=4, num_classes=10, layers=3, nodes=2, primitives=["sep_conv_3x3", "skip_connect"],
                        in_channels=3).double()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(6, 3, 8, 8, generator=generator, dtype=torch.float64),
            torch.randint(0, 10, (6,), generator=generator))


def one_step_worker(rank: int, port: int, out: str) -> None:
    dist = join_group(rank, port)
    net = tiny_supernet()
    images, labels = dist.shard(*global_batch())
    F.cross_entropy(net(images)[0], labels).backward()
    dist.average_gradients(net.parameters())
    torch.save({name: p.grad for name, p in net.named_parameters()}, f"{out}/grads{rank}.pt")
    torch.distributed.destroy_process_group()


def gather_worker(rank: int, port: int, out: str) -> None:
    dist = join_group(rank, port)
    index, logits = dist.shard(torch.arange(5), torch.arange(15.0).view(5, 3))  # uneven: 3 rows and 2 rows
    torch.save((dist.gather(index), dist.gather(logits)), f"{out}/gathered{rank}.pt")
    torch.distributed.destroy_process_group()


def test_gather_returns_the_global_batch_on_every_rank(tmp_path):
    mp.spawn(gather_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    for rank in range(WORLD):
        index, logits = torch.load(tmp_path / f"gathered{rank}.pt")
        assert index.tolist() == list(range(5))
        torch.testing.assert_close(logits, torch.arange(15.0).view(5, 3))


def test_averaged_gradients_equal_the_mean_of_the_shard_losses(tmp_path):
    mp.spawn(one_step_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    net = tiny_supernet()
    images, labels = global_batch()
    # a single process: each half of the batch normalized on its own (per-rank BatchNorm), losses averaged
    loss = sum(F.cross_entropy(net(x)[0], y) for x, y in zip(images.tensor_split(WORLD), labels.tensor_split(WORLD)))
    (loss / WORLD).backward()
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        for name, p in net.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-9, atol=1e-12, msg=name)
    assert any(name.startswith("alpha") for name in grads)  # the architecture gradient is averaged too


def dnad_worker(rank: int, port: int, out: str) -> None:
    dist = join_group(rank, port)
    config = tiny_config(data="synthetic:64", epochs=3)

    def search(folder: str, resume: bool = False) -> DNADSearch:
        run = RunFolder(f"{out}/{folder}", resume=resume, writer=dist.is_main)
        return DNADSearch(config, run, progress=False, log=lambda _: None, dist=dist)

    full = search("full")
    full.run()
    search("cut").run(stop_after_epochs=1)
    dist.barrier()  # rank 0's checkpoint is on disk before anyone resumes
    resumed = search("cut", resume=True)
    resumed.run()
    torch.save({"full": full.net.state_dict(), "resumed": resumed.net.state_dict(),
                "masks": full.net.node_masks(), "pareto": full.pareto}, f"{out}/state{rank}.pt")
    torch.distributed.destroy_process_group()


def test_dnad_ranks_stay_identical_and_resume(tmp_path):
    mp.spawn(dnad_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    states = [torch.load(tmp_path / f"state{rank}.pt", weights_only=False) for rank in range(WORLD)]
    for key in ("full", "resumed"):
        for name, value in states[0][key].items():
            torch.testing.assert_close(states[1][key][name], value, rtol=0, atol=1e-6, msg=f"{key}: {name}")
    for name, value in states[0]["full"].items():  # resuming after a kill changes nothing
        torch.testing.assert_close(states[0]["resumed"][name], value, rtol=0, atol=1e-6, msg=name)
    # identical pruning decisions, and the search did prune
    assert all(torch.equal(a, b) for cell0, cell1 in zip(states[0]["masks"], states[1]["masks"])
               for a, b in zip(cell0, cell1))
    assert not all(m.all() for cell in states[0]["masks"] for m in cell)
    assert states[0]["pareto"] == states[1]["pareto"]
    # only rank 0 wrote: one metrics line per step
    metrics = RunFolder(tmp_path / "full", resume=True).metrics()
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))
    assert json.loads((tmp_path / "full" / "pareto.json").read_text()) == states[0]["pareto"]


def sddarts_worker(rank: int, port: int, out: str) -> None:
    dist = join_group(rank, port)
    states = {}
    for order, source in ((1, "cache"), (2, "snapshot")):
        config = SDDARTSConfig(**{**SDDARTS_TINY, "order": order, "teacher_source": source})
        run = RunFolder(f"{out}/order{order}", writer=dist.is_main)
        search = SDDARTSSearch(config, run, progress=False, log=lambda _: None, dist=dist)
        search.run()
        teacher = (search.cache["train"].state_dict() if source == "cache" else
                   [dict(net.named_parameters()) for net in search.snapshots.nets])
        states[order] = {"net": search.net.state_dict(), "teacher": teacher, "sharpness": search.sharpness}
    torch.save(states, f"{out}/sddarts{rank}.pt")
    torch.distributed.destroy_process_group()


def test_sddarts_ranks_stay_identical(tmp_path):
    """First order with cached teachers, second order with snapshot teachers: weights, alphas, the teachers
    (cached records, snapshot parameters) and the sharpness agree."""
    mp.spawn(sddarts_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD)
    states = [torch.load(tmp_path / f"sddarts{rank}.pt", weights_only=False) for rank in range(WORLD)]
    for order in (1, 2):
        first, second = states[0][order], states[1][order]
        for name, value in first["net"].items():
            torch.testing.assert_close(second["net"][name], value, rtol=0, atol=1e-6, msg=f"order {order}: {name}")
        if order == 2:  # snapshots: copies of the same network on every rank
            assert len(first["teacher"]) == SDDARTS_TINY["teachers"]
            for mine, theirs in zip(first["teacher"], second["teacher"]):
                for name, value in mine.items():
                    torch.testing.assert_close(theirs[name], value, rtol=0, atol=1e-6, msg=name)
        else:
            torch.testing.assert_close(second["teacher"]["probs"], first["teacher"]["probs"], rtol=0, atol=1e-6)
            assert torch.equal(second["teacher"]["written_in"], first["teacher"]["written_in"])
        assert math.isclose(first["sharpness"], second["sharpness"], rel_tol=1e-5, abs_tol=1e-7)
        lines = RunFolder(tmp_path / f"order{order}", resume=True).metrics()
        steps = [m for m in lines if m["kind"] == "step"]
        assert [m["step"] for m in steps] == list(range(1, len(steps) + 1))  # rank 0 alone writes
        if order == 1:  # every prediction of the last epoch's global batches is cached, not only this rank's half
            last_epoch = SDDARTS_TINY["epochs"] - 1
            seen = sum(m["epoch"] == last_epoch for m in steps) * SDDARTS_TINY["batch_size"]
            assert (first["teacher"]["written_in"] == last_epoch).sum() == seen


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), "-m", "fastnas", *args, "--quiet", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_torchrun_runs_the_dnad_command(tmp_path):
    out = tmp_path / "run"
    result = torchrun(WORLD, "dnad", "--data", "synthetic:64", "--kd", "none", "--C", "4", "--layers", "3",
                      "--nodes", "2", "--batch-size", "16", "--epochs", "1", "--ops", "sep_conv_3x3,skip_connect",
                      "--out", str(out))
    assert result.stdout.count("DNAD search done") == 1  # rank 0 reports, rank 1 stays silent
    steps = [m["step"] for m in RunFolder(out, resume=True).metrics()]
    assert steps == list(range(1, len(steps) + 1)) and steps
    assert (out / "genotype.json").exists() and (out / "pareto.json").exists()


def test_torchrun_bench_gt_equals_one_process(tmp_path):
    teacher = tmp_path / "teacher.pt"
    save_teacher_checkpoint(TeacherResNet(3, 10, widths=(8, 16, 32), blocks=1), teacher)
    args = ["bench-gt", "--space", "nb201", "--data", "synthetic:40", "--num-archs", "4",
            "--teacher", f"checkpoint:{teacher}", "--epochs", "1", "--batch-size", "8", "--C", "2", "--N", "1"]
    torchrun(1, *args, "--out", str(tmp_path / "one"))
    torchrun(WORLD, *args, "--out", str(tmp_path / "two"))
    one, two = (read_records(tmp_path / name / "gt.jsonl") for name in ("one", "two"))

    def comparable(records):
        return sorted((r["arch"], r["accuracy_kd"], r["params"], r["flops"]) for r in records)
    assert len(one) == 4 and comparable(one) == comparable(two)


def test_torchrun_runs_the_sddarts_command(tmp_path):
    out = tmp_path / "run"
    result = torchrun(WORLD, "sddarts", "--data", "synthetic:64", "--C", "2", "--layers", "3", "--nodes", "2",
                      "--batch-size", "8", "--epochs", "2", "--ops", "none,skip_connect,sep_conv_3x3",
                      "--out", str(out))
    assert result.stdout.count("SDDARTS search done") == 1
    assert (out / "genotype.json").exists() and (out / "result.json").exists() and (out / "alphas.png").exists()


def test_torchrun_proxy_scores_equal_one_process(tmp_path):
    space, rng = get_space("nb201"), random.Random(0)
    archs = [space.sample(rng) for _ in range(5)]
    write_gt(tmp_path / "gt.jsonl", archs, [0.5, 0.7, 0.6, 0.9, 0.8])
    (tmp_path / "gt-config.json").write_text(json.dumps({"space": "nb201", "data": "digits",
                                                         "options": {"C": 2, "N": 1}}))
    args = ["proxies", "--gt", str(tmp_path / "gt.jsonl"), "--proxies", "params,snip,synflow", "--batch-size", "16"]
    torchrun(1, *args, "--out", str(tmp_path / "one"))
    torchrun(WORLD, *args, "--out", str(tmp_path / "two"))
    one, two = (read_scores([tmp_path / name / "scores.jsonl"]) for name in ("one", "two"))
    assert len(one) == 5 * 3 and two == one  # every (arch, proxy) once, the same values
    assert not list((tmp_path / "two").glob("scores.rank-*"))  # the ranks' files are merged away
    tables = [json.loads((tmp_path / name / "proxy_table.json").read_text())["rows"] for name in ("one", "two")]
    assert tables[0] == tables[1]
