"""fastnas.data: the specs of load_data on real and fabricated files, split, batches and augmentation."""

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fastnas.data import (Augmentation, EpochBatches, ImageData, batch_seed, batches, crop_and_flip, cutout,
                          cutout_mask, load_data, num_batches, split)

# sklearn's digits per class (0..9), counted by hand from load_digits().target
DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
# 25% of each class, rounded half up: 44.5->45, 45.5->46, 44.25->44, 45.75->46, 45.25->45, ...
DIGIT_TEST_COUNTS = [45, 46, 44, 46, 45, 46, 45, 45, 44, 45]


def toy(n_per_class=(10, 7, 3), seed=0) -> ImageData:
    """Labelled random images [N, 2, 6, 6], the classes interleaved; image i has i in pixel (0, 0, 0)."""
    labels = torch.tensor([c for i in range(max(n_per_class)) for c, n in enumerate(n_per_class) if i < n])
    images = torch.randn(len(labels), 2, 6, 6, generator=torch.Generator().manual_seed(seed))
    images[:, 0, 0, 0] = torch.arange(len(labels)).float()
    return ImageData(images, labels)


def assert_normalized(data: ImageData) -> None:
    mean = data.images.mean(dim=(0, 2, 3))
    std = data.images.std(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-4, rtol=0)


# --- digits ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_digits_sizes_and_classes(digits):
    assert sum(DIGIT_COUNTS) == 1797
    assert (digits.name, digits.num_classes, digits.in_channels, digits.image_size) == ("digits", 10, 1, 8)
    assert digits.augment is False
    assert len(digits.test) == sum(DIGIT_TEST_COUNTS) == 451
    assert len(digits.train) == 1797 - 451 == 1346
    assert torch.bincount(digits.test.labels).tolist() == DIGIT_TEST_COUNTS
    assert torch.bincount(digits.train.labels).tolist() == [a - b for a, b in zip(DIGIT_COUNTS, DIGIT_TEST_COUNTS)]
    assert digits.train.images.shape == (1346, 1, 8, 8) and digits.train.images.dtype == torch.float32
    assert digits.test.labels.dtype == torch.int64


def test_digits_normalized_with_train_statistics(digits):
    from sklearn.datasets import load_digits

    assert_normalized(digits.train)
    # the test split is split(all, 0.25, seed=0) of the raw /16 images; both parts use the train statistics
    raw = load_digits()
    raw_test, raw_train = split(ImageData(torch.from_numpy(raw.images).float().div(16).unsqueeze(1),
                                          torch.from_numpy(raw.target).long()), 0.25, seed=0)
    mean, std = raw_train.images.mean(), raw_train.images.std(correction=0)
    torch.testing.assert_close(digits.train.images, (raw_train.images - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(digits.test.images, (raw_test.images - mean) / std, atol=1e-5, rtol=0)
    assert torch.equal(digits.test.labels, raw_test.labels)


def test_digits_test_split_is_fixed(digits):
    again = load_data("digits")
    assert torch.equal(again.test.labels, digits.test.labels)
    assert torch.equal(again.test.images, digits.test.images)
    torch.manual_seed(1234)  # the global RNG plays no part
    third = load_data("digits")
    assert torch.equal(third.train.images, digits.train.images)


def test_digits_resize():
    data = load_data("digits", image_size=16)
    assert data.image_size == 16 and data.train.images.shape == (1346, 1, 16, 16)
    assert data.test.images.shape == (451, 1, 16, 16)
    assert_normalized(data.train)


# --- synthetic ---------------------------------------------------------------------------------------


def test_synthetic():
    data = load_data("synthetic")
    assert (data.name, data.num_classes, data.in_channels, data.image_size, data.augment) == \
        ("synthetic", 10, 3, 16, False)
    # 512 = 2 classes of 52 + 8 of 51; 25% of both rounds to 13
    assert (len(data.train), len(data.test)) == (382, 130)
    assert torch.bincount(data.test.labels).tolist() == [13] * 10
    assert_normalized(data.train)
    assert torch.equal(load_data("synthetic").train.images, data.train.images)
    small = load_data("synthetic:40")
    assert len(small.train) + len(small.test) == 40 and torch.bincount(small.test.labels).tolist() == [1] * 10
    # learnable: nearest class mean of the train split classifies the test split well
    means = torch.stack([data.train.images[data.train.labels == c].mean(0) for c in range(10)])
    dist = torch.cdist(data.test.images.flatten(1), means.flatten(1))
    assert (dist.argmin(1) == data.test.labels).float().mean() > 0.9


@pytest.mark.parametrize("spec", ["synthetic:5", "synthetic:x", "synthetic:-40"])
def test_synthetic_bad_count(spec):
    with pytest.raises(ValueError, match="synthetic:N"):
        load_data(spec)


# --- CIFAR -------------------------------------------------------------------------------------------


def write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def fake_cifar(root, kind, n_train=20, n_test=10):
    """A tiny CIFAR tree under `root` in the standard layout; returns (batch folder, train, test) raw arrays."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    classes = 10 if kind == "cifar10" else 100
    train_labels = [int(i) for i in rng.integers(0, classes, n_train)]
    test_labels = [int(i) for i in rng.integers(0, classes, n_test)]
    if kind == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for b, rows in enumerate(np.array_split(np.arange(n_train), 5)):
            write_pickle(folder / f"data_batch_{b + 1}",
                         {b"batch_label": b"x", b"data": train[rows], b"labels": [train_labels[i] for i in rows]})
        write_pickle(folder / "test_batch", {b"data": test, b"labels": test_labels})
        write_pickle(folder / "batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        write_pickle(folder / "train", {b"data": train, b"fine_labels": train_labels, b"coarse_labels": [0] * n_train})
        write_pickle(folder / "test", {b"data": test, b"fine_labels": test_labels, b"coarse_labels": [0] * n_test})
    return folder, (train, train_labels), (test, test_labels)


@pytest.mark.parametrize("kind,classes", [("cifar10", 10), ("cifar100", 100)])
@pytest.mark.parametrize("form", ["parent", "folder"])
def test_cifar(tmp_path, kind, classes, form):
    folder, (train, train_labels), (test, test_labels) = fake_cifar(tmp_path, kind)
    data = load_data(f"{kind}:{tmp_path if form == 'parent' else folder}")
    assert (data.name, data.num_classes, data.in_channels, data.image_size, data.augment) == \
        (kind, classes, 3, 32, True)
    assert data.train.images.shape == (20, 3, 32, 32) and data.test.images.shape == (10, 3, 32, 32)
    assert data.train.labels.tolist() == train_labels and data.test.labels.tolist() == test_labels
    assert_normalized(data.train)
    # the images are the raw rows (channel-major 3x32x32) under the train split's per-channel affine map
    raw_train = torch.from_numpy(train).float().reshape(20, 3, 32, 32) / 255
    mean, std = raw_train.mean(dim=(0, 2, 3), keepdim=True), raw_train.std(dim=(0, 2, 3), keepdim=True, correction=0)
    raw_test = torch.from_numpy(test).float().reshape(10, 3, 32, 32) / 255
    torch.testing.assert_close(data.train.images, (raw_train - mean) / std, atol=1e-5, rtol=0)
    torch.testing.assert_close(data.test.images, (raw_test - mean) / std, atol=1e-5, rtol=0)


def test_cifar_resize(tmp_path):
    fake_cifar(tmp_path, "cifar10")
    data = load_data(f"cifar10:{tmp_path}", image_size=16)
    assert data.image_size == 16 and data.train.images.shape == (20, 3, 16, 16)


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data: cifar10 .*nowhere.*data_batch_1.*test_batch"):
        load_data(f"cifar10:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("kind,remove,expected", [
    ("cifar10", "data_batch_3", r"lacks data_batch_3 .*data_batch_1, data_batch_2.*test_batch"),
    ("cifar100", "test", r"lacks test .*train, test"),
])
def test_cifar_missing_files(tmp_path, kind, remove, expected):
    folder, _, _ = fake_cifar(tmp_path, kind)
    os.remove(folder / remove)
    with pytest.raises(FileNotFoundError, match=f"data: {kind} .*{expected}"):
        load_data(f"{kind}:{tmp_path}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"data: {kind} folder .*empty"):
        load_data(f"{kind}:{empty}")


# --- imagefolder -------------------------------------------------------------------------------------


def fake_imagefolder(root, test_name="test"):
    """root/{train,test_name}/{ant,bee,cat}/ with a few solid-colour images of mixed sizes and formats."""
    colours = {"ant": (255, 0, 0), "bee": (0, 255, 0), "cat": (0, 0, 255)}
    for part, count in (("train", 3), (test_name, 1)):
        for name, colour in colours.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                ext = ["png", "jpg", "bmp"][i % 3]
                mode = "L" if (name == "cat" and i == 0) else "RGB"  # grey images become RGB
                Image.new(mode, (10 + i, 20), colour if mode == "RGB" else 128).save(folder / f"{i}.{ext}")
            (folder / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_imagefolder(tmp_path, test_name):
    fake_imagefolder(tmp_path, test_name)
    data = load_data(f"imagefolder:{tmp_path}")
    assert (data.name, data.num_classes, data.in_channels, data.image_size, data.augment) == \
        ("imagefolder", 3, 3, 32, True)
    assert data.train.images.shape == (9, 3, 32, 32) and data.test.images.shape == (3, 3, 32, 32)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted class names: ant, bee, cat
    assert data.test.labels.tolist() == [0, 1, 2]
    assert_normalized(data.train)
    # solid colours stay solid: the red ant images are brightest in the red channel
    ant = data.train.images[0]
    assert torch.allclose(ant, ant[:, :1, :1].expand_as(ant), atol=1e-5)
    assert ant[0, 0, 0] > ant[1, 0, 0] and ant[0, 0, 0] > ant[2, 0, 0]
    assert load_data(f"imagefolder:{tmp_path}", image_size=12).train.images.shape == (9, 3, 12, 12)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data: imagefolder .*does not exist"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "train" / "ant").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"needs a train/ and a test/ \(or val/\)"):
        load_data(f"imagefolder:{tmp_path}")
    (tmp_path / "test" / "ant").mkdir(parents=True)
    (tmp_path / "train" / "ant" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="data: no images .*train"):
        load_data(f"imagefolder:{tmp_path}")


def test_imagefolder_unknown_test_class(tmp_path):
    fake_imagefolder(tmp_path)
    (tmp_path / "test" / "dog").mkdir()
    with pytest.raises(ValueError, match=r"class folders \['dog'\]"):
        load_data(f"imagefolder:{tmp_path}")


# --- specs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["mnist", "", "cifar10", "cifar10:", "imagefolder", "digits:3", "Digits"])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match=r"data: expected digits, cifar10:PATH, cifar100:PATH, imagenet16:PATH, "
                                         r"imagefolder:PATH or synthetic\[:N\], got"):
        load_data(spec)


@pytest.mark.parametrize("size", [0, -3, 2.5])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        load_data("synthetic", image_size=size)


# --- split -------------------------------------------------------------------------------------------


def test_split_stratified_and_deterministic():
    data = toy((10, 7, 3))
    first, second = split(data, 0.5, seed=3)
    # 10 -> 5, 7 -> 3.5 -> 4, 3 -> 1.5 -> 2
    assert torch.bincount(first.labels).tolist() == [5, 4, 2]
    assert torch.bincount(second.labels).tolist() == [5, 3, 1]
    ids_first, ids_second = first.images[:, 0, 0, 0].long(), second.images[:, 0, 0, 0].long()
    assert sorted(torch.cat([ids_first, ids_second]).tolist()) == list(range(20))  # a partition
    assert ids_first.tolist() == sorted(ids_first.tolist())  # original order kept
    torch.testing.assert_close(data.labels[ids_first], first.labels)  # images travel with their labels
    again, _ = split(data, 0.5, seed=3)
    assert torch.equal(again.images, first.images)
    other = [split(data, 0.5, seed=s)[0].images[:, 0, 0, 0].tolist() for s in range(4, 8)]
    assert any(ids != ids_first.tolist() for ids in other)


def test_split_edges():
    data = toy()
    all_, none = split(data, 1.0)
    assert len(all_) == 20 and len(none) == 0 and none.images.shape == (0, 2, 6, 6)
    assert len(split(data, 0.0)[0]) == 0
    empty = ImageData(torch.zeros(0, 2, 6, 6), torch.zeros(0, dtype=torch.int64))
    assert [len(part) for part in split(empty, 0.5)] == [0, 0]
    with pytest.raises(ValueError, match="fraction"):
        split(data, 1.5)


# --- batches -----------------------------------------------------------------------------------------


def ids(batch_images: torch.Tensor) -> list[int]:
    return batch_images[:, 0, 0, 0].long().tolist()


def test_batches_cover_every_sample_once():
    data = toy()  # 20 samples
    got = list(batches(data, 6, shuffle=True, seed=1))
    assert [len(y) for _, y in got] == [6, 6, 6, 2] and num_batches(data, 6) == 4
    seen = [i for x, _ in got for i in ids(x)]
    assert sorted(seen) == list(range(20)) and seen != list(range(20))
    for x, y in got:
        assert torch.equal(y, data.labels[ids(x)])
    in_order = [i for x, _ in batches(data, 6, shuffle=False) for i in ids(x)]
    assert in_order == list(range(20))


def test_batches_drop_last():
    data = toy()
    got = list(batches(data, 6, shuffle=True, drop_last=True))
    assert [len(y) for _, y in got] == [6, 6, 6] and num_batches(data, 6, drop_last=True) == 3
    assert len(list(batches(data, 5, shuffle=False, drop_last=True))) == num_batches(data, 5, True) == 4
    assert num_batches(data, 64) == 1 and num_batches(data, 64, drop_last=True) == 0
    with pytest.raises(ValueError, match="batch_size"):
        num_batches(data, 0)


def test_batches_deterministic_in_seed_and_epoch():
    data = toy()

    def order(seed, epoch, augment=False):
        return [(x, y) for x, y in batches(data, 4, shuffle=True, seed=seed, epoch=epoch, augment=augment)]

    def same(a, b):
        return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))

    assert same(order(2, 5), order(2, 5)) and same(order(2, 5, True), order(2, 5, True))
    assert not same(order(2, 5), order(2, 6))
    assert not same(order(2, 5), order(3, 5))
    # the permutation is the documented one: randperm from a generator seeded seed * 100003 + epoch
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(2 * 100003 + 5)).tolist()
    assert [i for x, _ in order(2, 5) for i in ids(x)] == expected


def reference_augment(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """One image [C, H, W] cropped at (dy, dx) of its 4-pixel zero padding, then flipped left-right."""
    h, w = image.shape[1:]
    crop = F.pad(image, (4, 4, 4, 4))[:, dy:dy + h, dx:dx + w]
    return crop.flip(-1) if flip else crop


def test_augment_is_crop_and_flip():
    data = ImageData(torch.arange(1, 1 + 8 * 3 * 10 * 10, dtype=torch.float32).reshape(8, 3, 10, 10),
                     torch.zeros(8, dtype=torch.int64))
    (plain, _), = batches(data, 8, shuffle=False)
    (augmented, labels), = batches(data, 8, shuffle=False, augment=True, seed=7)
    assert augmented.shape == plain.shape and augmented.dtype == plain.dtype and labels.shape == (8,)
    assert not torch.equal(augmented, plain)
    candidates = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)]
    found = []
    for image, out in zip(plain, augmented):
        matches = [c for c in candidates if torch.equal(reference_augment(image, *c), out)]
        assert len(matches) == 1  # every output is exactly one crop+flip of its input
        found.append(matches[0])
    assert len(set(found)) > 1 and any(f for _, _, f in found) and not all(f for _, _, f in found)


def test_augment_on_natural_images_changes_pixels_keeps_shapes(tmp_path):
    fake_cifar(tmp_path, "cifar10")
    data = load_data(f"cifar10:{tmp_path}")
    for (x, y), (xa, ya) in zip(batches(data.train, 8, shuffle=True, seed=1),
                                batches(data.train, 8, shuffle=True, seed=1, augment=data.augment)):
        assert xa.shape == x.shape and torch.equal(ya, y)
        assert not torch.equal(xa, x)


def test_normalization_statistics_are_kept(tmp_path):
    _, (train, _), _ = fake_cifar(tmp_path, "cifar10")
    data = load_data(f"cifar10:{tmp_path}")
    raw = torch.from_numpy(train.reshape(-1, 3, 32, 32)).double() / 255
    assert data.mean == pytest.approx(raw.mean((0, 2, 3)).tolist(), abs=1e-6)
    assert data.std == pytest.approx(raw.std((0, 2, 3), correction=0).tolist(), abs=1e-6)


def test_batches_resume_at_a_batch_and_workers_make_the_same_batches(tmp_path):
    fake_cifar(tmp_path, "cifar10", n_train=30)
    data = load_data(f"cifar10:{tmp_path}")
    augment = Augmentation(cutout=8, mean=data.mean, std=data.std)
    whole = list(batches(data.train, 7, shuffle=True, seed=3, epoch=2, augment=augment))
    tail = list(batches(data.train, 7, shuffle=True, seed=3, epoch=2, augment=augment, start=3))
    in_workers = list(batches(data.train, 7, shuffle=True, seed=3, epoch=2, augment=augment, start=1, workers=2))
    assert len(whole) == 5 and len(tail) == 2 and len(in_workers) == 4
    for (x, y), (xt, yt) in zip(whole[3:] + whole[1:], tail + in_workers):
        assert torch.equal(x, xt) and torch.equal(y, yt)
    # batch b's augmentation comes from its own generator
    epoch = EpochBatches(data.train, 7, shuffle=True, seed=3, epoch=2)
    images, labels = epoch[4]
    expected = augment(images, torch.Generator().manual_seed(batch_seed(3, 2, 4)))
    assert torch.equal(whole[4][0], expected) and torch.equal(whole[4][1], labels)
    with pytest.raises(ValueError, match="workers: expected >= 0"):
        next(batches(data.train, 7, shuffle=True, workers=-1))


# --- cutout, crop padding, AutoAugment --------------------------------------------------------------------


def square(y0: int, y1: int, x0: int, x1: int, size: int = 32) -> torch.Tensor:
    """The mask of a 0-square in rows y0..y1-1 and columns x0..x1-1 of a size x size image, 1 elsewhere."""
    mask = torch.ones(size, size)
    mask[y0:y1, x0:x1] = 0
    return mask


def test_cutout_mask_is_the_reference_square():
    # quark0/darts utils.Cutout(16): rows clip(y - 8, 0, 32) .. clip(y + 8, 0, 32) (end excluded), same for columns
    masks = cutout_mask(torch.tensor([10, 0, 31, 5]), torch.tensor([20, 0, 31, 30]), 16, 32, 32)
    assert torch.equal(masks[0], square(2, 18, 12, 28))     # inside: 16 x 16 = 256 pixels
    assert torch.equal(masks[1], square(0, 8, 0, 8))        # corner: clipped to 8 x 8
    assert torch.equal(masks[2], square(23, 32, 23, 32))    # far corner: 9 x 9 (y + 8 = 39 clips to 32)
    assert torch.equal(masks[3], square(0, 13, 22, 32))     # 13 rows x 10 columns
    assert [int((m == 0).sum()) for m in masks] == [256, 64, 81, 130]
    # an odd length is cut like the reference's: length // 2 on each side, so 2 * (length // 2) wide
    assert int((cutout_mask(torch.tensor([16]), torch.tensor([16]), 7, 32, 32) == 0).sum()) == 36


def test_cutout_zeroes_the_square_of_the_drawn_centres():
    images = torch.randn(6, 3, 32, 32) + 5.0  # no pixel is 0 before cutout
    out = cutout(images, 16, torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(4)
    ys, xs = torch.randint(0, 32, (6,), generator=gen), torch.randint(0, 32, (6,), generator=gen)
    for image, result, y, x in zip(images, out, ys.tolist(), xs.tolist()):
        mask = square(max(y - 8, 0), min(y + 8, 32), max(x - 8, 0), min(x + 8, 32))
        assert torch.equal(result, image * mask)  # every channel, the same square
    assert len({(y, x) for y, x in zip(ys.tolist(), xs.tolist())}) > 1


def test_crop_pads_with_black_pixels_when_the_statistics_are_known():
    mean, std = (0.5, 0.25, 0.75), (0.2, 0.4, 0.1)
    images = torch.full((40, 3, 6, 6), 9.0)
    out = Augmentation(mean=mean, std=std)(images, torch.Generator().manual_seed(0))
    black = torch.tensor([-0.5 / 0.2, -0.25 / 0.4, -0.75 / 0.1])
    padded = out != 9.0
    assert padded.any() and (~padded).any()
    for c in range(3):
        assert torch.allclose(out[:, c][padded[:, c]], black[c])
    # without statistics the padding is 0, the channel mean (the searches' crop)
    plain = crop_and_flip(images, torch.Generator().manual_seed(0))
    assert set(plain.unique().tolist()) <= {0.0, 9.0} and torch.equal(plain == 0, padded)


def test_augmentation_errors():
    with pytest.raises(ValueError, match="cutout: expected a square side >= 0"):
        Augmentation(cutout=-1)
    with pytest.raises(ValueError, match="autoaugment: needs the normalization statistics"):
        Augmentation(autoaugment=True)


def test_autoaugment_is_torchvisions_cifar10_policy_per_image():
    transforms = pytest.importorskip("torchvision.transforms")
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    pixels = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    images = (pixels / 255.0 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    augment = Augmentation(crop_flip=False, autoaugment=True, mean=mean, std=std)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    out = augment(images, torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is left untouched
    # by hand: the seed drawn from the batch generator, then torchvision's AutoAugment image by image
    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(9))))
    policy = transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
    expected = torch.stack([policy(p) for p in pixels]).float() / 255.0
    expected = (expected - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(9)))


def test_autoaugment_without_torchvision_says_so(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", None)
    with pytest.raises(ValueError, match="autoaugment: needs torchvision, which is not installed"):
        Augmentation(autoaugment=True, mean=(0.5,), std=(0.5,))
    from fastnas.cli import run

    assert run(["train", "--genotype", "DARTS_V2", "--autoaugment"]) == 2  # one line, before any data is read
