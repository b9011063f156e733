"""Tests for data.py: toy data determinism and class structure, the ImageNet-style folder (ADM crop,
corrupt files), rank sharding, grids. CPU, a few seconds."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from data import (Batches, ImageFolder, ToyShapes, build_dataset, center_crop_arr, make_loader, save_grid, shard_order,
                  to_tensor, to_uint8)  # fmt: skip

# -------------------------------------------------------------------------------------------------
# ToyShapes
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [16, 24, 64, 512])
def test_toy_shape_dtype_range(resolution):
    ds = ToyShapes(20, resolution, num_classes=10, seed=0)
    for i in (0, 7, 19):
        x, y, bad = ds[i]
        assert x.shape == (3, resolution, resolution) and x.dtype == torch.float32
        assert -1 <= x.min() and x.max() <= 1 and x.std() > 0.1
        assert isinstance(y, int) and 0 <= y < 10 and bad == 0


def test_toy_deterministic_by_seed_and_index():
    a, b = ToyShapes(50, 32, seed=3), ToyShapes(50, 32, seed=3)
    later = [b[i][0] for i in (9, 4, 0)]  # another instance, another order
    for i, x in zip((9, 4, 0), later):
        assert torch.equal(a[i][0], x)
    assert not torch.equal(a[4][0], a[14][0])  # same class, different sample
    c = ToyShapes(50, 32, seed=4)
    assert all(not torch.equal(a[i][0], c[i][0]) for i in range(5))
    assert [a[i][1] for i in range(5)] == [c[i][1] for i in range(5)]  # labels depend on the index only


def test_toy_class_names_and_bad_input():
    ds = ToyShapes(10, 32)
    assert ds.classes[:3] == ["red circle", "green square", "blue triangle"]
    assert len(set(ToyShapes(10, 32, num_classes=100).classes)) == 100  # (shape, colour) pairs all distinct
    for kwargs in ({"n": 0}, {"num_classes": 101}, {"resolution": 4}):
        with pytest.raises(ValueError):
            ToyShapes(**{"n": 10, "resolution": 32, **kwargs})


def test_toy_is_class_conditional():
    # Nearest class mean on 8x8 thumbnails, fit on one seed and scored on another: chance is 10%,
    # measured 43% (the random backgrounds and positions dominate pixel distances).
    def thumbs(seed):
        ds = ToyShapes(400, 32, num_classes=10, seed=seed)
        x = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 3, 32, 32)
        y = torch.tensor([ds[i][1] for i in range(len(ds))])
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1), y  # (N, 192)

    x_train, y_train = thumbs(0)
    x_test, y_test = thumbs(1)
    means = torch.stack([x_train[y_train == k].mean(0) for k in range(10)])  # (10, 192)
    accuracy = (torch.cdist(x_test, means).argmin(1) == y_test).float().mean().item()
    assert accuracy > 0.3, accuracy


# -------------------------------------------------------------------------------------------------
# ImageFolder
# -------------------------------------------------------------------------------------------------


def write_image(path, size, colour=(200, 30, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "train"
    write_image(str(root / "b_dogs" / "1.png"), (50, 30), (0, 0, 255))
    write_image(str(root / "b_dogs" / "nested" / "2.JPEG"), (17, 90), (0, 0, 255))
    write_image(str(root / "a_cats" / "1.jpg"), (300, 200), (255, 0, 0))
    (root / "a_cats" / "2.jpg").write_bytes(b"this is not a jpeg" * 10)  # corrupt
    write_image(str(root / "a_cats" / "3.bmp"), (64, 64), (255, 0, 0))
    (root / "a_cats" / "notes.txt").write_text("ignored")
    os.makedirs(root / "empty_dir")
    return str(root)


def test_folder_labels_crop_and_corrupt(folder):
    ds = ImageFolder(folder, 16)
    assert ds.classes == ["a_cats", "b_dogs"] and ds.num_classes == 2 and len(ds) == 5
    items = [ds[i] for i in range(len(ds))]
    for x, y, _ in items:
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    names = [os.path.basename(p) for p, _ in ds.samples]
    assert names == ["1.jpg", "2.jpg", "3.bmp", "1.png", "2.JPEG"]
    assert [y for _, y, _ in items] == [0, 0, 0, 1, 1]
    assert [bad for _, _, bad in items] == [0, 1, 0, 0, 0]  # the corrupt file, counted once
    assert torch.equal(items[1][0], items[2][0])  # replaced by the next readable index
    assert items[0][0][0].mean() > 0.9 and items[3][0][2].mean() > 0.9  # red cats, blue dogs


def test_folder_flat_and_bad_input(tmp_path, folder):
    flat = tmp_path / "flat"
    write_image(str(flat / "a.webp"), (40, 20))
    write_image(str(flat / "b.png"), (20, 40))
    ds = ImageFolder(str(flat), 8)
    assert len(ds) == 2 and ds.num_classes == 1 and [ds[i][1] for i in range(2)] == [0, 0]
    with pytest.raises(ValueError, match="does_not_exist"):
        ImageFolder(str(tmp_path / "does_not_exist"), 8)
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(os.path.join(folder, "empty_dir"), 8)
    broken = tmp_path / "broken"
    os.makedirs(broken)
    (broken / "x.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="none of its 1 image files can be read"):
        ImageFolder(str(broken), 8)  # found when the folder is opened, before any training
    classes_without_images = tmp_path / "classes"
    os.makedirs(classes_without_images / "a")
    (classes_without_images / "a" / "notes.txt").write_text("no image")
    with pytest.raises(ValueError, match="no images .* in its 1 subfolders"):
        ImageFolder(str(classes_without_images), 8)


# -------------------------------------------------------------------------------------------------
# ADM center crop, pixels <-> tensors
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(300, 100), (100, 300), (600, 520), (40, 20)])
def test_center_crop_arr(size):
    # A white square in the middle of a black canvas: the crop keeps the middle, drops the sides.
    W, H = size
    s = min(W, H)
    arr = np.zeros((H, W, 3), np.uint8)
    arr[(H - s) // 2 : (H - s) // 2 + s, (W - s) // 2 : (W - s) // 2 + s] = 255
    out = center_crop_arr(Image.fromarray(arr), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert out[2:-2, 2:-2].min() > 200  # bicubic may ring at the very border
    # The whole image squeezed to 32 px would be half black: it must be a crop, not a resize.
    assert out.mean() > 230


def test_center_crop_matches_box_then_bicubic():
    # 600x520 at 64: BOX halvings while the short side >= 128: 300x260, 150x130, 75x65; bicubic to
    # round(75 * 64/65) = 74 x 64; crop columns (74 - 64) // 2 = 5 .. 69.
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (520, 600, 3), dtype=np.uint8))
    ref = img
    for size in [(300, 260), (150, 130), (75, 65)]:
        ref = ref.resize(size, Image.BOX)
    ref = ref.resize((74, 64), Image.BICUBIC)
    assert np.array_equal(center_crop_arr(img, 64), np.asarray(ref)[:, 5:69])


def test_uint8_round_trip():
    a = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(1, 16, 16, 3).numpy()
    x = to_tensor(a[0])[None]  # (1, 3, 16, 16)
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(to_uint8(x).numpy(), a)
    assert to_uint8(torch.full((1, 3, 2, 2), 5.0)).unique().tolist() == [255]
    assert to_uint8(torch.zeros(1, 3, 1, 1)).flatten().tolist() == [128] * 3  # clamp(127.5 x + 128), not + 127.5


# -------------------------------------------------------------------------------------------------
# Builders, loaders, grids
# -------------------------------------------------------------------------------------------------


def test_build_dataset(folder, tmp_path):
    assert isinstance(build_dataset("toy", 32, toy_size=7), ToyShapes) and len(build_dataset("toy", 32, toy_size=7)) == 7
    assert isinstance(build_dataset(folder, 16), ImageFolder)
    with pytest.raises(ValueError, match="nowhere"):
        build_dataset(str(tmp_path / "nowhere"), 32)


class Indices(torch.utils.data.Dataset):
    def __len__(self):
        return 23

    def __getitem__(self, i):
        return i


@pytest.mark.parametrize("shuffle", [True, False])
def test_shard_order_covers_the_data_in_equal_shards(shuffle):
    shards = [shard_order(23, rank, 2, epoch=0, seed=0, shuffle=shuffle) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12  # 23 padded to 24
    assert set(shards[0]) | set(shards[1]) == set(range(23))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the one padding repeat may overlap
    loader = make_loader(Indices(), 5, 1, 2, num_workers=0)  # one pass, in order, the last batch partial
    assert torch.cat(list(loader)).tolist() == shard_order(23, 1, 2, shuffle=False)
    with pytest.raises(ValueError):
        make_loader(Indices(), 4, rank=2, world_size=2)


def test_batches_reshuffle_each_epoch_and_resume_mid_epoch():
    batches = Batches(Indices(), 8, seed=0)  # 23 // 8 = 2 full batches per epoch
    epochs = [torch.cat([next(batches) for _ in range(2)]).tolist() for _ in range(3)]
    assert epochs[0] != epochs[1] and all(len(e) == 16 and len(set(e)) == 16 for e in epochs)
    stream = Batches(Indices(), 8, seed=0)
    taken = [next(stream) for _ in range(3)]  # epoch 1, position 1
    assert stream.state() == {"epoch": 1, "position": 1}
    resumed = Batches(Indices(), 8, seed=0, state=stream.state())
    assert torch.equal(next(resumed), next(stream)) and torch.equal(next(resumed), next(stream))
    assert torch.cat(taken[:2]).tolist() == epochs[0]
    with pytest.raises(ValueError, match="fewer than one micro-batch of 24"):
        Batches(Indices(), 24)


def test_batches_with_workers_give_the_same_toy_data():
    ds = ToyShapes(12, 16, seed=1)
    x, y, bad = next(iter(make_loader(ds, 12, 0, 1, num_workers=2)))
    assert x.shape == (12, 3, 16, 16) and y.tolist() == [i % 10 for i in range(12)] and bad.sum() == 0
    assert torch.equal(x, torch.stack([ds[i][0] for i in range(12)]))
    a, b = Batches(ds, 4, seed=3, num_workers=2), Batches(ds, 4, seed=3, num_workers=0)
    for _ in range(4):
        assert torch.equal(next(a)[0], next(b)[0])


def test_save_grid(tmp_path):
    path = str(tmp_path / "sub" / "grid.png")
    x = torch.rand(10, 3, 16, 12) * 2 - 1
    save_grid(x, path, nrow=4)
    im = Image.open(path)
    assert im.format == "PNG" and im.mode == "RGB" and im.size == (4 * 14 + 2, 3 * 18 + 2)  # (W, H)
    grid = np.asarray(im)
    assert np.array_equal(grid[2:18, 2:14], to_uint8(x[:1]).numpy()[0])  # first image, top left
    with pytest.raises(ValueError):
        save_grid(torch.zeros(2, 1, 8, 8), path)
