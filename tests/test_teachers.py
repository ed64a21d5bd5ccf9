"""Teachers at CIFAR scale: torchvision feature layers on 32x32 images, retrained DARTS networks as teachers,
the test accuracy a teacher carries, and checkpoints that are not teacher checkpoints."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from fastnas.data import Dataset, ImageData
from fastnas.distill import ATLoss, Teacher, TeacherResNet, load_teacher, save_teacher_checkpoint
from fastnas.distill import teachers as teachers_module
from fastnas.runs import RunFolder
from fastnas.search_spaces import NetworkCIFAR, NetworkImageNet, load_genotype


def cifar_like(size=32, classes=10, n=4, channels=3):
    """A dataset in the layout of fastnas.data's CIFAR-10 (3 x 32 x 32 images, 10 classes)."""
    generator = torch.Generator().manual_seed(0)
    def split():
        return ImageData(torch.randn(n, channels, size, size, generator=generator), torch.arange(n) % classes)
    return Dataset("cifar-like", classes, channels, size, split(), split(), augment=False)


# --------------------------------------------------------------------------- torchvision at 32x32

def test_torchvision_resnet_on_32x32_gives_every_at_term_non_zero(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10)
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pt")
    dataset = cifar_like()
    teacher = load_teacher(f"torchvision:resnet18:{tmp_path / 'resnet18.pt'}", dataset)
    # layer4 is 1x1 at 32x32; layer1..3 give 8x8, 4x4, 2x2
    assert teacher.info["feature_layers"] == ["layer1", "layer2", "layer3"]
    assert teacher.stage_shapes == [(64, 8, 8), (128, 4, 4), (256, 2, 2)]

    student = NetworkCIFAR(load_genotype("DARTS_V2"), C=4, num_classes=10, layers=5)
    x = dataset.train.images
    _, student_features = student(x)
    _, teacher_features = teacher(x)
    terms = [ATLoss()([s], [t]).item() for s, t in zip(student_features, teacher_features)]
    assert all(term > 0 for term in terms), terms

    # the layers fastnas read before (layer2..4): the last pair is compared at 1x1, where AT is always 0
    with torch.no_grad():
        layer4 = resnet.layer4(teacher_features[2])
    assert layer4.shape[-2:] == (1, 1)
    with pytest.raises(ValueError, match=r"student_feats\[2\]: stage 3 is compared at 1x1 .* always 0"):
        ATLoss()(student_features, [*teacher_features[1:], layer4])


# --------------------------------------------------------------------------- retrained networks as teachers

@pytest.mark.parametrize("network", ["cifar", "imagenet"])
def test_a_retrained_darts_network_loads_as_a_teacher_with_its_accuracy(tmp_path, network):
    genotype = load_genotype("PC_DARTS")
    if network == "cifar":
        model, dataset = NetworkCIFAR(genotype, C=4, layers=5, auxiliary=True), cifar_like()
    else:
        model, dataset = NetworkImageNet(genotype, C=8, num_classes=10, layers=5, auxiliary=True), cifar_like(64)
    with torch.no_grad():
        for buffer in model.buffers():  # non-default BatchNorm statistics: a lost buffer would show
            buffer.add_(1)
    save_teacher_checkpoint(model, tmp_path / "model.pt", test_accuracy=0.875, epochs=3)
    teacher = load_teacher(f"checkpoint:{tmp_path / 'model.pt'}", dataset)
    assert teacher.test_accuracy == 0.875
    assert teacher.summary()["arch"] == type(model).__name__
    assert teacher.summary()["spec"] == f"checkpoint:{tmp_path / 'model.pt'}"
    x = dataset.test.images
    torch.testing.assert_close(teacher(x), Teacher(model, (3, dataset.image_size, dataset.image_size))(x))


def test_the_loader_imports_the_module_that_defines_the_network(tmp_path):
    # a fresh interpreter that has imported fastnas.distill only: the checkpoint names fastnas.search_spaces.darts_eval
    save_teacher_checkpoint(NetworkCIFAR(load_genotype("DARTS_V2"), C=2, layers=3), tmp_path / "model.pt",
                            test_accuracy=0.5)
    code = ("import sys, torch\n"
            "from fastnas.data import Dataset, ImageData\n"
            "from fastnas.distill import load_teacher\n"
            "assert 'fastnas.search_spaces' not in sys.modules\n"
            "data = ImageData(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long))\n"
            f"spec = 'checkpoint:{tmp_path / 'model.pt'}'\n"
            "teacher = load_teacher(spec, Dataset('c', 10, 3, 32, data, data, False))\n"
            "print(teacher.test_accuracy, teacher.stage_channels)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.split("\n")[0] == "0.5 [8, 16, 32]"


def test_the_builtin_teacher_reports_its_accuracy(monkeypatch, tmp_path):
    monkeypatch.setattr(teachers_module, "BUILTIN_EPOCHS", 1)
    dataset = cifar_like(size=8, classes=2, n=16, channels=1)
    trained = load_teacher("builtin", dataset, cache_dir=tmp_path, progress=False)
    cached = load_teacher("builtin", dataset, cache_dir=tmp_path, progress=False)
    assert 0.0 <= trained.test_accuracy <= 1.0 and cached.test_accuracy == trained.test_accuracy
    expected = teachers_module._accuracy(cached.model, dataset.test.images, dataset.test.labels, torch.device("cpu"))
    assert cached.test_accuracy == expected


def test_legacy_teacher_resnet_checkpoints_still_load(tmp_path):
    model = TeacherResNet(3, 10, (4, 8, 16), blocks=1)
    torch.save({"format": teachers_module.LEGACY_CHECKPOINT_FORMAT, "config": model.config(),
                "state_dict": model.state_dict(), "test_accuracy": 0.25}, tmp_path / "old.pt")
    teacher = load_teacher(f"checkpoint:{tmp_path / 'old.pt'}", cifar_like())
    assert teacher.test_accuracy == 0.25 and teacher.summary()["arch"] == "TeacherResNet"


# --------------------------------------------------------------------------- files that are not teacher checkpoints

def write_truncated(path):
    save_teacher_checkpoint(TeacherResNet(3, 10, (4, 8, 16), blocks=1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_run_checkpoint(path):
    RunFolder(path.parent / "run").save_checkpoint({"model": {}, "epoch": 1})
    path.write_bytes((path.parent / "run" / "checkpoint.pt").read_bytes())


@pytest.mark.parametrize("write, why", [
    (lambda p: p.write_bytes(b""), "torch.load cannot read it"),
    (lambda p: p.write_text("not a checkpoint\n" * 10), "torch.load cannot read it"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), "torch.load cannot read it"),
    (write_truncated, "torch.load cannot read it"),
    (lambda p: torch.save([1, 2, 3], p), "found list"),
    (lambda p: torch.save({"weights": torch.zeros(1)}, p), "found a dict with format=None"),
    (write_run_checkpoint, r"found a run folder's training checkpoint \(checkpoint.pt\)"),
    (lambda p: torch.save({"format": teachers_module.CHECKPOINT_FORMAT, "arch": "TeacherResNet",
                           "config": TeacherResNet(3, 10, (4, 8, 16)).config(), "state_dict": {}}, p),
     "its weights do not fit"),
])
def test_a_file_that_is_not_a_teacher_checkpoint_is_named(tmp_path, write, why):
    path = tmp_path / "teacher.pt"
    write(path)
    with pytest.raises(ValueError, match=rf"teacher: {path} is not a fastnas teacher checkpoint \({why}.*\); give "
                                         r"a file written by fastnas.distill.save_teacher_checkpoint"):
        load_teacher(f"checkpoint:{path}", cifar_like())


def test_an_unknown_network_and_an_unregistered_model_are_refused(tmp_path):
    torch.save({"format": teachers_module.CHECKPOINT_FORMAT, "arch": "VisionTransformer", "module": "elsewhere",
                "config": {"in_channels": 3, "num_classes": 10}, "state_dict": {}}, tmp_path / "vit.pt")
    with pytest.raises(ValueError, match=r"holds a 'VisionTransformer' network; this fastnas knows TeacherResNet"):
        load_teacher(f"checkpoint:{tmp_path / 'vit.pt'}", cifar_like())
    with pytest.raises(ValueError, match=r"model: Linear is not a registered teacher network"):
        save_teacher_checkpoint(nn.Linear(2, 2), tmp_path / "linear.pt")
    assert not (tmp_path / "linear.pt").exists()
