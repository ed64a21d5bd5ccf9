"""fastnas.distill: the distillation losses, the frozen teacher and the teacher loaders."""

import logging
import math
import sys
import types
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastnas.distill import (ATLoss, FeatureMSELoss, KDLoss, Teacher, TeacherResNet, check_teacher_matches,
                             load_teacher, make_kd_loss, save_teacher_checkpoint, train_builtin_teacher)
from fastnas.data import Dataset, ImageData
from fastnas.distill import teachers as teachers_module
from fastnas.ops import _reference

SMALL_WIDTHS = (4, 8, 16)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- a tiny learnable dataset

def split_dataset(train=256, test=64, size=8, name="synth"):
    """Two classes a small ResNet learns in a few steps: the bright half of an 8x8 image (top or bottom)."""
    def make(n, seed):
        labels = torch.arange(n) % 2
        images = 0.3 * randn(n, 1, size, size, seed=seed, dtype=torch.float32)
        rows = torch.arange(size)[None, :] < size // 2
        bright = torch.where(labels[:, None] == 0, rows, ~rows)
        images += bright[:, None, :, None].float()
        return ImageData(images, labels)
    return Dataset(name, 2, 1, size, make(train, 1), make(test, 2), augment=False)


# --------------------------------------------------------------------------- ATLoss

def test_at_loss_hand_computed():
    # Student map |x|^2 = [9, 16] -> [9, 16] / sqrt(337); teacher [1, 1] -> [1, 1] / sqrt(2).
    student = torch.tensor([[[[3.0, -4.0]]]], dtype=torch.float64)
    teacher = torch.tensor([[[[1.0, 1.0]]]], dtype=torch.float64)
    a_s = [9 / math.sqrt(337), 16 / math.sqrt(337)]
    a_t = [1 / math.sqrt(2), 1 / math.sqrt(2)]
    expected = 1000.0 / 2 * sum((s - t) ** 2 for s, t in zip(a_s, a_t)) / 2
    assert ATLoss(beta=1000.0)([student], [teacher]).item() == pytest.approx(expected, rel=1e-12)


def test_at_loss_is_half_beta_times_reference_and_teacher_gets_no_grad():
    shapes = [(3, 4, 6, 8, 8), (3, 8, 12, 4, 4), (3, 16, 24, 2, 2)]  # (B, Cs, Ct, H, W)
    student = [randn(b, cs, h, w, seed=i).requires_grad_() for i, (b, cs, _, h, w) in enumerate(shapes)]
    teacher = [randn(b, ct, h, w, seed=10 + i).requires_grad_() for i, (b, _, ct, h, w) in enumerate(shapes)]
    loss = ATLoss(p=2.0, beta=300.0)(student, teacher)
    expected = 150.0 * _reference.at_loss(student, teacher, 2.0)
    torch.testing.assert_close(loss, expected)
    got = torch.autograd.grad(loss, student)
    want = torch.autograd.grad(expected, student)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    ATLoss()(student, teacher).backward()
    assert all(t.grad is None for t in teacher)


def test_at_loss_mean_is_the_dnad_authors_scale():
    # NADD Distillator.py: (AT(s0, t0) + AT(s1, t1) + AT(s2, t2)) / 3 with AT = beta * mse(map(s), map(t)),
    # map(x) = sum_c |x|^2 / (||sum_c |x|^2||_HW + 1e-6), transcribed here.
    def authors_map(x):
        am = x.abs().pow(2).sum(1, keepdim=True)
        return am / (torch.linalg.vector_norm(am, dim=(2, 3), keepdim=True) + 1e-6)

    shapes = [(3, 4, 6, 8, 8), (3, 8, 12, 4, 4), (3, 16, 24, 2, 2)]  # (B, Cs, Ct, H, W)
    student = [randn(b, cs, h, w, seed=i) for i, (b, cs, _, h, w) in enumerate(shapes)]
    teacher = [randn(b, ct, h, w, seed=10 + i) for i, (b, _, ct, h, w) in enumerate(shapes)]
    authors = sum(1000.0 * F.mse_loss(authors_map(s), authors_map(t)) for s, t in zip(student, teacher)) / 3
    mean = ATLoss(beta=1000.0, reduction="mean")(student, teacher)
    torch.testing.assert_close(mean, authors, rtol=1e-4, atol=0)  # the maps differ only by the authors' eps
    torch.testing.assert_close(ATLoss(beta=1000.0)(student, teacher), 1.5 * mean)  # half-sum, 3 stages
    with pytest.raises(ValueError, match="reduction: expected one of half-sum, mean, got 'sum'"):
        ATLoss(reduction="sum")


def test_at_loss_casts_a_float32_teacher_to_a_bfloat16_student():
    # Under autocast a scripted teacher may return float32 maps while the student's are bfloat16.
    student = [randn(2, 4, 6, 6, seed=1).bfloat16().requires_grad_()]
    teacher = [randn(2, 8, 6, 6, seed=2)]
    loss = ATLoss()(student, teacher)
    expected = 500.0 * _reference.at_loss([student[0].detach().float()], [teacher[0].bfloat16().float()], 2.0)
    torch.testing.assert_close(loss.float(), expected, rtol=2e-2, atol=0)


@pytest.mark.parametrize("student_size, teacher_size", [(8, 4), (4, 8), (8, 2)])
def test_at_loss_pools_the_larger_map(student_size, teacher_size):
    student = randn(2, 3, student_size, student_size, seed=1)
    teacher = randn(2, 5, teacher_size, teacher_size, seed=2)
    size = min(student_size, teacher_size)
    pooled_s, pooled_t = F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)
    expected = 500.0 * _reference.at_loss([pooled_s], [pooled_t])
    torch.testing.assert_close(ATLoss()([student], [teacher]), expected)


def test_at_loss_rejects_unpaired_features():
    with pytest.raises(ValueError, match="compared pairwise"):
        ATLoss()([randn(2, 3, 4, 4)], [randn(2, 3, 4, 4), randn(2, 3, 2, 2)])
    with pytest.raises(ValueError, match="batch 2 differs"):
        ATLoss()([randn(2, 3, 4, 4)], [randn(3, 3, 4, 4)])


# --------------------------------------------------------------------------- KDLoss

def test_kd_loss_matches_formula_and_leaves_teacher_alone():
    student, teacher = randn(5, 7, seed=3).requires_grad_(), randn(5, 7, seed=4).requires_grad_()
    T = 3.0
    p_t = torch.softmax(teacher / T, 1)
    expected = (p_t * (torch.log(p_t) - torch.log_softmax(student / T, 1))).sum() / 5 * T * T
    loss = KDLoss(T)(student, teacher)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and teacher.grad is None


def test_kd_loss_is_zero_for_identical_logits():
    logits = randn(4, 10, seed=5)
    assert KDLoss()(logits, logits.clone()).abs().item() < 1e-12


# --------------------------------------------------------------------------- FeatureMSELoss

def test_feature_loss_matches_formula_and_trains_only_the_adapters():
    student = [randn(4, 3, 16, 16, seed=6, dtype=torch.float32).requires_grad_(),
               randn(4, 5, 4, 4, seed=7, dtype=torch.float32).requires_grad_(),
               randn(4, 7, 2, 2, seed=8, dtype=torch.float32).requires_grad_()]
    teacher = [randn(4, 6, 8, 8, seed=9, dtype=torch.float32).requires_grad_(),
               randn(4, 10, 4, 4, seed=10, dtype=torch.float32).requires_grad_(),
               randn(4, 12, 2, 2, seed=11, dtype=torch.float32).requires_grad_()]
    loss_fn = FeatureMSELoss([3, 5, 7], [6, 10, 12])
    loss = loss_fn(student, teacher)

    def batch_norm(x):
        return F.batch_norm(x, None, None, training=True)
    expected = 0
    for w, adapter, s, t in zip((0.2, 0.3, 0.5), loss_fn.adapters, student, teacher):
        s = F.adaptive_avg_pool2d(s, t.shape[-2:])
        expected = expected + w * F.mse_loss(batch_norm(adapter[0](s)), batch_norm(t))
    torch.testing.assert_close(loss, expected)

    loss.backward()
    assert loss.shape == ()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss_fn.parameters())
    assert len(list(loss_fn.parameters())) == 6  # weight and bias of the three 1x1 convs
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)


def test_feature_loss_checks_its_stage_count():
    with pytest.raises(ValueError, match="per stage"):
        FeatureMSELoss([3, 5], [6, 10, 12])
    loss_fn = FeatureMSELoss([3], [6], weights=(1.0,))
    with pytest.raises(ValueError, match="expected 1 feature maps"):
        loss_fn([randn(2, 3, 4, 4)] * 2, [randn(2, 6, 4, 4)] * 2)


# --------------------------------------------------------------------------- make_kd_loss

def test_make_kd_loss_gives_every_kind_one_call():
    s_logits, t_logits = randn(4, 10, seed=12), randn(4, 10, seed=13)
    s_feats = [randn(4, 3, 8, 8, seed=14), randn(4, 5, 4, 4, seed=15), randn(4, 7, 2, 2, seed=16)]
    t_feats = [randn(4, 6, 8, 8, seed=17), randn(4, 10, 4, 4, seed=18), randn(4, 12, 2, 2, seed=19)]
    args = (s_logits, s_feats, t_logits, t_feats)
    channels = ([3, 5, 7], [6, 10, 12])

    torch.testing.assert_close(make_kd_loss("at", *channels, beta=10.0)(*args), ATLoss(beta=10.0)(s_feats, t_feats))
    torch.testing.assert_close(make_kd_loss("soft", *channels, T=2.0)(*args), KDLoss(2.0)(s_logits, t_logits))
    feature = make_kd_loss("feature", *channels).double()
    assert feature(*args).shape == () and len(list(feature.parameters())) == 6
    none = make_kd_loss("none")
    assert none(*args).item() == 0.0 and not list(none.parameters())


def test_make_kd_loss_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match=r"kd: expected one of at, feature, soft, none, got 'hint'"):
        make_kd_loss("hint", [1], [1])


# --------------------------------------------------------------------------- TeacherResNet and Teacher

@pytest.mark.parametrize("channels, size", [(1, 8), (3, 32)])
def test_teacher_resnet_stage_shapes(channels, size):
    logits, features = TeacherResNet(channels, 10)(torch.zeros(2, channels, size, size))
    assert logits.shape == (2, 10)
    assert [tuple(f.shape) for f in features] == [(2, 32, size, size), (2, 64, size // 2, size // 2),
                                                  (2, 128, size // 4, size // 4)]


def test_teacher_is_frozen_and_stays_in_eval():
    model = TeacherResNet(1, 3, SMALL_WIDTHS, blocks=1)
    teacher = Teacher(model, (1, 8, 8))
    assert teacher.stage_channels == list(SMALL_WIDTHS) and teacher.num_classes == 3
    assert teacher.stage_shapes == [(4, 8, 8), (8, 4, 4), (16, 2, 2)]
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    stats = [b.clone() for b in teacher.buffers()]
    logits, features = teacher(randn(4, 1, 8, 8, dtype=torch.float32).requires_grad_())
    assert not logits.requires_grad and not any(f.requires_grad for f in features)
    assert all(torch.equal(a, b) for a, b in zip(stats, teacher.buffers()))  # BN statistics untouched


def test_check_teacher_matches():
    teacher = Teacher(TeacherResNet(1, 3, SMALL_WIDTHS, blocks=1), (1, 8, 8))
    check_teacher_matches(teacher, [(2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)])
    check_teacher_matches(teacher, [(16, 16, 16), (32, 4, 4), (64, 1, 1)])  # integer multiples pool exactly
    with pytest.raises(ValueError, match="stage 2 features are 4x4 but the student's are 3x3"):
        check_teacher_matches(teacher, [(2, 16, 8, 8), (2, 32, 3, 3), (2, 64, 2, 2)])
    with pytest.raises(ValueError, match="gives 3 stage features, the student 2"):
        check_teacher_matches(teacher, [(2, 16, 8, 8), (2, 32, 4, 4)])


# --------------------------------------------------------------------------- built-in teacher and cache

def test_builtin_teacher_learns():
    model, accuracy = train_builtin_teacher(split_dataset(), epochs=8, progress=False)
    assert isinstance(model, TeacherResNet) and not model.training
    assert accuracy >= 0.9


def test_builtin_teacher_is_cached_atomically(monkeypatch, tmp_path, caplog):
    dataset = split_dataset(train=64, test=16)
    calls = []
    train = teachers_module.train_builtin_teacher

    def counting_train(*args, **kwargs):
        calls.append(kwargs["epochs"])
        return train(*args, **kwargs)
    monkeypatch.setattr(teachers_module, "train_builtin_teacher", counting_train)
    monkeypatch.setattr(teachers_module, "BUILTIN_EPOCHS", 2)
    monkeypatch.setenv("FASTNAS_CACHE", str(tmp_path))

    with caplog.at_level(logging.INFO, logger="fastnas.distill.teachers"):
        first = load_teacher("builtin", dataset, progress=False)
    files = list((tmp_path / "teachers").iterdir())
    assert calls == [2]
    assert len(files) == 1 and files[0].name.startswith("synth-") and files[0].suffix == ".pt"
    assert not list(tmp_path.rglob("*.tmp"))
    assert str(files[0]) in caplog.text

    second = load_teacher("builtin", dataset, cache_dir=tmp_path, progress=False)
    assert calls == [2]  # loaded from the cache, not retrained
    x = dataset.test.images
    torch.testing.assert_close(first(x), second(x))

    # Another recipe is another cache entry.
    monkeypatch.setattr(teachers_module, "BUILTIN_EPOCHS", 1)
    load_teacher("builtin", dataset, cache_dir=tmp_path, progress=False)
    assert calls == [2, 1] and len(list((tmp_path / "teachers").iterdir())) == 2


def test_failed_save_leaves_no_partial_file(monkeypatch, tmp_path):
    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(teachers_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_teacher_checkpoint(TeacherResNet(1, 2, SMALL_WIDTHS, blocks=1), tmp_path / "t.pt")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- checkpoint and torchscript

def test_checkpoint_round_trip(tmp_path):
    dataset = split_dataset(train=4, test=4)
    model = TeacherResNet(1, 2, SMALL_WIDTHS, blocks=1)
    for buffer in model.buffers():  # non-default BN statistics, so a lost buffer would show
        buffer.add_(1)
    save_teacher_checkpoint(model, tmp_path / "teacher.pt", test_accuracy=0.5)
    teacher = load_teacher(f"checkpoint:{tmp_path / 'teacher.pt'}", dataset)
    x = dataset.test.images
    torch.testing.assert_close(teacher(x), Teacher(model, (1, 8, 8))(x))


def test_checkpoint_must_fit_the_dataset(tmp_path):
    save_teacher_checkpoint(TeacherResNet(1, 5, SMALL_WIDTHS, blocks=1), tmp_path / "five.pt")
    with pytest.raises(ValueError, match="5 classes"):
        load_teacher(f"checkpoint:{tmp_path / 'five.pt'}", split_dataset(train=4, test=4))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fastnas teacher checkpoint"):
        load_teacher(f"checkpoint:{tmp_path / 'other.pt'}", split_dataset(train=4, test=4))


TORCHSCRIPT_DEPRECATED = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


@TORCHSCRIPT_DEPRECATED
def test_torchscript_round_trip(tmp_path):
    dataset = split_dataset(train=4, test=4)
    model = TeacherResNet(1, 2, SMALL_WIDTHS, blocks=1).eval()
    torch.jit.script(model).save(str(tmp_path / "teacher.ts"))
    teacher = load_teacher(f"torchscript:{tmp_path / 'teacher.ts'}", dataset)
    assert teacher.stage_channels == list(SMALL_WIDTHS)
    x = dataset.test.images
    torch.testing.assert_close(teacher(x), Teacher(model, (1, 8, 8))(x))


class LogitsOnly(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)).repeat(1, 2)


@TORCHSCRIPT_DEPRECATED
def test_torchscript_with_wrong_return_is_refused(tmp_path):
    torch.jit.script(LogitsOnly()).save(str(tmp_path / "logits.ts"))
    with pytest.raises(ValueError, match=r"must return \(logits .* got Tensor\[1, 2\]"):
        load_teacher(f"torchscript:{tmp_path / 'logits.ts'}", split_dataset(train=4, test=4))


# --------------------------------------------------------------------------- torchvision (faked: not installed here)

class TinyResNet(nn.Module):
    """Has a ResNet's conv1/layer1..layer4/fc: layer1 keeps the resolution, layer2..4 halve it."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.layer1 = nn.Conv2d(4, 5, 3, padding=1)
        self.layer2 = nn.Conv2d(5, 6, 3, stride=2, padding=1)
        self.layer3 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.layer4 = nn.Conv2d(8, 10, 3, stride=2, padding=1)
        self.fc = nn.Linear(10, num_classes)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def fake_torchvision(monkeypatch):
    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(tinyresnet=TinyResNet, mlp=lambda num_classes: nn.Linear(4, num_classes))
    monkeypatch.setitem(sys.modules, "torchvision", fake)


@pytest.mark.parametrize("size, layers, shapes", [
    (16, ["layer2", "layer3", "layer4"], [(6, 8, 8), (8, 4, 4), (10, 2, 2)]),
    # layer4 would be 1x1 on 8x8 images (a constant attention map): the three layers before it
    (8, ["layer1", "layer2", "layer3"], [(5, 8, 8), (6, 4, 4), (8, 2, 2)]),
])
def test_torchvision_features_are_the_deepest_layers_with_maps_of_2x2_or_more(fake_torchvision, tmp_path, size,
                                                                              layers, shapes):
    dataset = split_dataset(train=4, test=4, size=size)
    model = TinyResNet(num_classes=2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    teacher = load_teacher(f"torchvision:tinyresnet:{tmp_path / 'w.pt'}", dataset)
    assert teacher.stage_shapes == shapes
    assert teacher.summary()["feature_layers"] == layers and teacher.test_accuracy is None
    x = dataset.test.images
    logits, features = teacher(x)
    torch.testing.assert_close(logits, model(x))
    first = model.layer1(model.conv1(x))
    torch.testing.assert_close(features[0], first if size == 8 else model.layer2(first))


def test_torchvision_refuses_images_too_small_for_three_layers(fake_torchvision, tmp_path):
    torch.save(TinyResNet(num_classes=2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"for 4x4 images .* layer1 4x4, layer2 2x2, layer3 1x1, layer4 1x1; "
                                         r"distillation needs 3 consecutive layers with maps of at least 2x2"):
        load_teacher(f"torchvision:tinyresnet:{tmp_path / 'w.pt'}", split_dataset(train=4, test=4, size=4))


def test_torchvision_errors(fake_torchvision, monkeypatch, tmp_path):
    dataset = split_dataset(train=4, test=4)
    torch.save(TinyResNet(num_classes=2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="no model 'resnet9000'"):
        load_teacher(f"torchvision:resnet9000:{tmp_path / 'w.pt'}", dataset)
    with pytest.raises(ValueError, match="only ResNet-style models"):
        load_teacher(f"torchvision:mlp:{tmp_path / 'w.pt'}", dataset)
    with pytest.raises(ValueError, match="does not fit"):
        load_teacher(f"torchvision:tinyresnet:{tmp_path / 'w.pt'}", Dataset("ten", 10, 1, 8, dataset.train,
                                                                            dataset.test, False))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    with pytest.raises(ImportError, match="needs torchvision.*pip install torchvision"):
        load_teacher(f"torchvision:tinyresnet:{tmp_path / 'w.pt'}", dataset)


# --------------------------------------------------------------------------- spec errors

@pytest.mark.parametrize("kind", ["checkpoint:", "torchscript:", "torchvision:resnet18:"])
def test_missing_file(kind, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"teacher: .*missing\.pt does not exist"):
        load_teacher(kind + str(tmp_path / "missing.pt"), split_dataset(train=4, test=4))


@pytest.mark.parametrize("spec", ["resnet18", "checkpoint", "checkpoint:", "torchvision:weights.pt", ""])
def test_bad_spec(spec):
    with pytest.raises(ValueError, match="teacher: expected"):
        load_teacher(spec, split_dataset(train=4, test=4))
