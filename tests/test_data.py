"""Tests for data.py: toy data determinism and class structure, the ImageNet-style folder (class
ids from the sorted folder names, empty and unreadable class folders, ADM crop, corrupt files,
every PIL image mode, the pixel limit), rank sharding, workers at exit, grids. CPU, a few
seconds."""

import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import data as data_lib
from batches import Folder
from data import (Batches, ImageFolder, build_dataset, center_crop_arr, class_change, class_names,
                  make_loader, read_image, save_grid, shard_order, to_tensor, to_uint8)
from toydata import ToyShapes

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
    # labels depend on the index only
    assert [a[i][1] for i in range(5)] == [c[i][1] for i in range(5)]


def test_toy_class_names_and_bad_input():
    ds = ToyShapes(10, 32)
    assert ds.classes[:3] == ["red circle", "green square", "blue triangle"]
    # (shape, colour) pairs all distinct
    assert len(set(ToyShapes(10, 32, num_classes=100).classes)) == 100
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


def test_folder_labels_crop_and_corrupt(folder, capsys):
    ds = ImageFolder(folder, 16)
    assert ds.classes == ["a_cats", "b_dogs", "empty_dir"] and ds.num_classes == 3
    assert len(ds) == 5 and "class folder 'empty_dir' (id 2) holds no" in capsys.readouterr().err
    items = [ds[i] for i in range(len(ds))]
    for x, y, _ in items:
        assert (x.shape == (3, 16, 16) and x.dtype == torch.float32
                and -1 <= x.min() and x.max() <= 1)
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


def err_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_an_empty_class_folder_keeps_its_id_and_is_said_in_one_line(tmp_path, capsys):
    """a_cls, b_empty, c_cls: c_cls is class 2, as torchvision's find_classes and ADM number the
    sorted folders (ImageNet's wnid order); dropping the empty folder would make it class 1 and
    shift every id after it, silently."""
    root = tmp_path / "train"
    write_image(str(root / "a_cls" / "0.png"), (8, 8), (255, 0, 0))
    (root / "b_empty").mkdir()
    (root / "b_empty" / "notes.txt").write_text("no image")
    write_image(str(root / "c_cls" / "0.png"), (8, 8), (0, 0, 255))
    write_image(str(root / ".cache" / "0.png"), (8, 8))  # hidden: not a class
    ds = ImageFolder(str(root), 8)
    assert ds.classes == ["a_cls", "b_empty", "c_cls"] and ds.num_classes == 3
    assert [y for _, y in ds.samples] == [0, 2] and [ds[i][1] for i in range(2)] == [0, 2]
    assert err_lines(capsys) == ["data.py: class folder 'b_empty' (id 1) holds no images; it "
                                 "keeps its id, so the ids after it still follow the sorted "
                                 "folder names"]
    # The names a cache and a checkpoint record, without listing the files.
    assert class_names(str(root)) == ds.classes
    # data.py's grid shows the empty class as a black row.
    data_lib.main(data_lib.parse_args(["--data", str(root), "--resolution", "8", "--nrow", "2",
                                       "--out", str(tmp_path / "grid.png")]))
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[0] == 3 * 10 + 2


def test_an_unreadable_class_folder_keeps_its_id_and_is_said_in_one_line(tmp_path, capsys,
                                                                         monkeypatch):
    """A class folder (or a subfolder of one) that cannot be listed: its id is kept, the line
    names it. The tests run as root here, where chmod 000 is no obstacle, so os.scandir refuses
    the two folders instead."""
    root = tmp_path / "train"
    write_image(str(root / "a_cls" / "0.png"), (8, 8))
    write_image(str(root / "a_cls" / "deep" / "1.png"), (8, 8))
    write_image(str(root / "b_locked" / "0.png"), (8, 8))
    write_image(str(root / "c_cls" / "0.png"), (8, 8))
    locked = {str(root / "b_locked"), str(root / "a_cls" / "deep")}
    scandir = os.scandir

    def refuse(path="."):
        if os.fspath(path) in locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", refuse)
    ds = ImageFolder(str(root), 8)
    assert ds.classes == ["a_cls", "b_locked", "c_cls"] and [y for _, y in ds.samples] == [0, 2]
    assert err_lines(capsys) == [
        f"data.py: class folder 'a_cls' (id 0): 1 subfolder(s) cannot be read (Permission "
        f"denied: {root}/a_cls/deep); their images are left out",
        f"data.py: class folder 'b_locked' (id 1) cannot be read (Permission denied: "
        f"{root}/b_locked); it keeps its id, with no images"]


def test_class_names_without_building_the_dataset_and_their_changes(tmp_path, folder):
    toy = ToyShapes(5, 32, num_classes=3).classes
    assert class_names("toy", 3) == toy == ["red circle", "green square", "blue triangle"]
    assert class_names(folder) == ImageFolder(folder, 8).classes
    flat = tmp_path / "flat_images"
    write_image(str(flat / "a.png"), (8, 8))
    (flat / "empty_sub").mkdir()  # a subfolder without images does not make classes
    assert class_names(str(flat)) == ImageFolder(str(flat), 8).classes == ["flat_images"]
    with pytest.raises(ValueError, match="neither"):
        class_names(str(tmp_path / "missing"))
    assert class_change(["a", "b"], ["a", "b"]) is None
    assert class_change(["a", "b_empty", "c"], ["a", "c"]) == ("3 classes then, 2 now; class 1 "
                                                               "was 'b_empty', now 'c'")
    assert class_change(["a"], ["a", "b"]) == "1 classes then, 2 now; class 1 was none, now 'b'"


def test_unicode_folder_and_file_names(tmp_path):
    root = tmp_path / "données"
    colours = {"Zebra": (250, 0, 0), "café": (0, 250, 0), "日本": (0, 0, 250)}
    for name, colour in colours.items():
        write_image(str(root / name / f"ü_{name}.png"), (12, 9), colour)
    ds = ImageFolder(str(root), 8)
    # Code point order, as sorted() gives.
    assert ds.classes == ["Zebra", "café", "日本"] == class_names(str(root))
    for i, name in enumerate(ds.classes):
        x, y, bad = ds[i]
        assert y == i and bad == 0 and to_uint8(x[None])[0, 4, 4].tolist() == list(colours[name])


def test_one_image_folders(tmp_path):
    for root in (tmp_path / "flat", tmp_path / "classes" / "only"):
        write_image(str(root / "0.png"), (10, 14), (10, 200, 30))
    for root, classes in ((tmp_path / "flat", ["flat"]), (tmp_path / "classes", ["only"])):
        ds = ImageFolder(str(root), 8)
        assert len(ds) == 1 and ds.classes == classes
        batches = Batches(ds, 1, seed=0)
        for _ in range(3):  # every epoch is that one image
            x, y, bad = next(batches)
            assert x.shape == (1, 3, 8, 8) and y.tolist() == [0] and bad.tolist() == [0]
        with pytest.raises(ValueError, match="have 1 images: fewer than one micro-batch of 2"):
            Batches(ds, 2)


def make_modes(folder):
    """One file per PIL mode the loaders meet, left half colour A and right half colour B
    -> {file: (A, B)} as RGB."""
    def halves(mode, a, b, size=(8, 6)):
        img = Image.new(mode, size, a)
        img.paste(Image.new(mode, (size[0] // 2, size[1]), b), (size[0] // 2, 0))
        return img
    os.makedirs(folder, exist_ok=True)
    files = {}
    halves("L", 30, 200).save(folder / "grey.png")
    files["grey.png"] = ((30,) * 3, (200,) * 3)
    halves("1", 0, 1).save(folder / "bits.png")
    files["bits.png"] = ((0,) * 3, (255,) * 3)
    palette = halves("P", 0, 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.save(folder / "palette.png")
    files["palette.png"] = ((255, 0, 0), (0, 0, 255))
    # Alpha is dropped, not composited (torchvision's and ADM's convert("RGB") do the same).
    halves("RGBA", (10, 20, 30, 0), (40, 50, 60, 128)).save(folder / "alpha.png")
    files["alpha.png"] = ((10, 20, 30), (40, 50, 60))
    halves("LA", (70, 255), (90, 0)).save(folder / "grey_alpha.png")
    files["grey_alpha.png"] = ((70,) * 3, (90,) * 3)
    halves("CMYK", (0, 255, 255, 0), (255, 255, 0, 0)).save(folder / "cmyk.tif")
    files["cmyk.tif"] = ((255, 0, 0), (0, 0, 255))  # PIL's CMYK -> RGB: red, blue
    frames = [halves("P", 0, 1), Image.new("P", (8, 6), 2)]
    for f in frames:
        f.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)
    files["animated.gif"] = ((255, 0, 0), (0, 0, 255))  # the first frame
    return files


def test_every_image_mode_reads_as_8_bit_rgb(tmp_path, capsys):
    """Palette, RGBA, LA, CMYK, greyscale, 1-bit and animated GIF (first frame) -> uint8 (H, W, 3)
    with the colours a viewer shows; the same files through ImageFolder's crop, none skipped."""
    files = make_modes(tmp_path / "modes")
    for name, (a, b) in files.items():
        rgb = read_image(str(tmp_path / "modes" / name))
        assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3), name
        assert (rgb[:, :4] == a).all() and (rgb[:, 4:] == b).all(), (name, rgb[0, 0], rgb[0, -1])
    assert Image.open(tmp_path / "modes" / "animated.gif").n_frames == 2
    ds = ImageFolder(str(tmp_path / "modes"), 4)
    assert [ds[i][2] for i in range(len(ds))] == [0] * len(files) and not capsys.readouterr().err


def png_1bit(path, w, h):
    """A valid 1-bit greyscale PNG of w x h white pixels, written without holding w x h bytes (a
    20000 x 20000 file is 76 KB): signature, IHDR, one zlib stream of the rows, IEND."""
    def chunk(kind, payload):
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc
    row = b"\x00" + b"\xff" * ((w + 7) // 8)  # filter type 0, then the packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) +
                     chunk(b"IEND", b""))


def test_an_image_over_the_pixel_limit_is_named_with_the_limit_and_how_to_raise_it(tmp_path,
                                                                                    capsys,
                                                                                    monkeypatch):
    """A valid 20000 x 20000 PNG is over PIL's decompression-bomb limit: skipped with one line
    naming the file, its size, PIL's limit and DCAE_MAX_IMAGE_PIXELS, which moves the limit
    (0: none); a bad value is refused up front."""
    monkeypatch.delenv("DCAE_MAX_IMAGE_PIXELS", raising=False)
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    png_1bit(big, 20000, 20000)
    png_1bit(small, 30, 20)
    assert read_image(str(big)) is None
    assert err_lines(capsys) == [f"data.py: skipping {big}: 20000x20000 = 400,000,000 pixels is "
                                 f"over PIL's limit of 178,956,970 (a guard against decompression "
                                 f"bombs); to read it, set DCAE_MAX_IMAGE_PIXELS=400000000 (or 0: "
                                 f"no limit)"]
    # fid.py's reader: the file is counted and named.
    images = Folder(str(tmp_path), [str(big), str(small)], num_workers=0)
    [(index, x, skipped)] = images.batches(0, 2, 2)
    assert index.tolist() == [1] and x.shape == (1, 3, 20, 30) and skipped == 1
    assert str(big) in capsys.readouterr().err
    monkeypatch.setenv("DCAE_MAX_IMAGE_PIXELS", "599")
    assert read_image(str(small)) is None
    assert err_lines(capsys) == [f"data.py: skipping {small}: 30x20 = 600 pixels is over "
                                 f"DCAE_MAX_IMAGE_PIXELS's limit of 599 (a guard against "
                                 f"decompression bombs); to read it, set "
                                 f"DCAE_MAX_IMAGE_PIXELS=600 (or 0: no limit)"]
    for value in ("600", "0"):
        monkeypatch.setenv("DCAE_MAX_IMAGE_PIXELS", value)
        assert read_image(str(small)).shape == (20, 30, 3) and not capsys.readouterr().err
    monkeypatch.setenv("DCAE_MAX_IMAGE_PIXELS", "1e9")
    message = (r"^DCAE_MAX_IMAGE_PIXELS='1e9' is not a number of pixels \(a whole number >= 0; 0: "
               r"no limit\)$")
    for make in (lambda: ImageFolder(str(tmp_path), 8),
                 lambda: Folder(str(tmp_path), [str(small)])):
        with pytest.raises(ValueError, match=message):
            make()


def mixed_size_files(folder):
    g = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(24, 24), (40, 30), (17, 33)]):
        coarse = torch.from_numpy(g.uniform(0, 255, (1, 3, 4, 4)).astype(np.float32))
        arr = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")  # (1, 3, h, w)
        files.append(str(folder / f"{i}.png"))
        arr = arr[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)  # (h, w, 3)
        Image.fromarray(arr).save(files[-1])
    return files


class Stop(Exception):
    pass


def test_mixed_sizes_give_the_same_network_input_at_every_batch_size(tmp_path):
    """fid.py's folders (batches.Folder): a batch of mixed sizes comes as a list, which the
    Inception resizes to 299 image by image, as it resizes a batch of one size, so each image
    reaches the first convolution as the same 299 x 299 tensor whatever its batch neighbours; the
    convolutions are per image. The Inception's own forward makes the input (its weights on the
    meta device: nothing is computed past the capture); test_mixed_sizes_give_the_same_features_*
    runs it all (slow)."""
    import inception
    files = mixed_size_files(tmp_path)
    with torch.device("meta"):
        model = inception.InceptionV3()
    inputs = []

    def capture(module, args):
        inputs.append(args[0])
        raise Stop
    model.Conv2d_1a_3x3.register_forward_pre_hook(capture)
    per_batch_size = []
    for b in (1, 3):
        inputs.clear()
        for _, x, _ in Folder(str(tmp_path), files, num_workers=0).batches(0, 3, b):
            with pytest.raises(Stop):
                model(x)
        per_batch_size.append(torch.cat(inputs))  # (3, 3, 299, 299) in [-1, 1]
    assert per_batch_size[0].shape == (3, 3, 299, 299)
    assert torch.equal(per_batch_size[0], per_batch_size[1])


@pytest.mark.slow
def test_mixed_sizes_give_the_same_features_at_every_batch_size(tmp_path):
    """The same through the whole random-weight Inception (25 s on a loaded 2-core CPU)."""
    import inception
    files = mixed_size_files(tmp_path)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = inception.load_inception("random")
    pools = [torch.cat([model(x)[0] for _, x, _ in
                        Folder(str(tmp_path), files, num_workers=0).batches(0, 3, b)])
             for b in (1, 3)]
    assert pools[0].shape == (3, 2048)
    assert (pools[0][0] - pools[0][1]).abs().max() > 1e-3  # the images differ
    torch.testing.assert_close(pools[0], pools[1], rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------------------
# ADM center crop, pixels <-> tensors
# -------------------------------------------------------------------------------------------------


# (W, H); the last two are smaller than the crop: upscaled, then cropped
@pytest.mark.parametrize("size", [(300, 100), (100, 300), (600, 520), (40, 20), (9, 7)])
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
    # clamp(127.5 x + 128), not + 127.5
    assert to_uint8(torch.zeros(1, 3, 1, 1)).flatten().tolist() == [128] * 3


# -------------------------------------------------------------------------------------------------
# Builders, loaders, grids
# -------------------------------------------------------------------------------------------------


def test_build_dataset(folder, tmp_path):
    assert (isinstance(build_dataset("toy", 32, toy_size=7), ToyShapes)
            and len(build_dataset("toy", 32, toy_size=7)) == 7)
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
    # one pass, in order, the last batch partial
    loader = make_loader(Indices(), 5, 1, 2, num_workers=0)
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
    assert (x.shape == (12, 3, 16, 16) and y.tolist() == [i % 10 for i in range(12)]
            and bad.sum() == 0)
    assert torch.equal(x, torch.stack([ds[i][0] for i in range(12)]))
    a, b = Batches(ds, 4, seed=3, num_workers=2), Batches(ds, 4, seed=3, num_workers=0)
    for _ in range(4):
        assert torch.equal(next(a)[0], next(b)[0])


def test_workers_that_ignore_sigterm_end_at_exit():
    """Workers ignore SIGTERM (a group signal is the main process's to handle), so
    multiprocessing's exit handler (SIGTERM, then wait) would wait for them forever:
    data.end_workers_at_exit, run at exit before it, kills them. test_a_run_that_fails_with_
    workers_running_exits checks the exit itself, in a subprocess (slow)."""
    import multiprocessing
    batches = Batches(ToyShapes(16, 8), 4, num_workers=2)
    next(batches), next(batches)  # one batch from each worker: both have run their init
    workers = [p for p in multiprocessing.active_children() if p.daemon]
    try:
        assert len(workers) == 2
        for p in workers:
            os.kill(p.pid, 15)
        time.sleep(0.2)
        assert all(p.is_alive() for p in workers)  # SIGTERM is ignored
        data_lib.end_workers_at_exit()
        assert not any(p.is_alive() for p in workers) and not multiprocessing.active_children()
    finally:  # should the test fail, this pytest must not hang at exit
        for p in workers:
            p.kill()


@pytest.mark.slow
def test_a_run_that_fails_with_workers_running_exits(tmp_path):
    """An exception while DataLoader workers run (the loader stays alive in its traceback): the
    process exits with the traceback and status 1, it does not hang at exit."""
    import subprocess
    import sys
    script = ("import data, toydata\n"
              "batches = data.Batches(toydata.ToyShapes(16, 8), 4, num_workers=2)\n"
              "next(batches)\n"
              "raise RuntimeError('boom')\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONPATH=repo))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().endswith("RuntimeError: boom"), proc.stderr[-2000:]


def test_save_grid(tmp_path):
    path = str(tmp_path / "sub" / "grid.png")
    x = torch.rand(10, 3, 16, 12) * 2 - 1
    save_grid(x, path, nrow=4)
    im = Image.open(path)
    assert (im.format == "PNG" and im.mode == "RGB"
            and im.size == (4 * 14 + 2, 3 * 18 + 2))  # (W, H)
    grid = np.asarray(im)
    assert np.array_equal(grid[2:18, 2:14], to_uint8(x[:1]).numpy()[0])  # first image, top left
    with pytest.raises(ValueError):
        save_grid(torch.zeros(2, 1, 8, 8), path)
