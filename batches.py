"""ADM's sample and reference batches: the images fid.py reads and the .npz files it reads and
writes, streamed, never all in memory (Sec. 4.1: 50,000 samples for FID; at 512 px they are 39 GB).

The ADM evaluator (guided-diffusion `evaluations/evaluator.py`) reads two kinds of .npz:
- a sample batch: `arr_0` uint8 (N, H, W, 3) (from sample.py also `arr_1`, the labels (N,));
- a reference batch (`VIRTUAL_imagenet512.npz`): `arr_0` (10,000 images) and the statistics `mu`,
  `sigma` (pool_3, 2048-d) and `mu_s`, `sigma_s` (spatial, 2023-d); fid.py --save-stats writes one.
fid.py also reads image folders (recursive, unreadable files skipped and counted) and in-memory
images (a training loop's samples). On reading, `arr_0` is memory-mapped (a stored member) or
streamed (a deflated one); on writing, streamed chunk by chunk, atomically (run.atomic_write).

    python -c "import batches; a = batches.NpzArray('out/samples.npz'); print(a.shape)"
"""
import dataclasses
import os
import zipfile

import numpy as np
import torch
from torch.utils.data import DataLoader

import run
from data import IMG_EXTENSIONS, ignore_stop_signals, list_images, max_pixels, read_image
from inception import DIMS, SPATIAL_DIMS

REFERENCE_SIZE = 10_000  # ADM's reference batches hold 10,000 images
SUBSET_SEED = 0  # which images of a larger source form its reference batch


#################################################################################
#                 ADM's .npz files, read and written streamed                   #
#################################################################################

class NpzArray:
    """One array of an .npz, not loaded into memory (ADM's 50K x 512^2 samples are 39 GB). np.load
    ignores mmap_mode for .npz, so: a stored (np.savez) member is np.memmap'ed at its offset in the
    zip; a compressed (np.savez_compressed) member cannot be mapped and is streamed (forward
    reads)."""

    def __init__(self, path, key="arr_0"):
        self.path = path
        with zipfile.ZipFile(path) as zf:
            self.info = zf.getinfo(key + ".npy")
            with zf.open(self.info) as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[version]
                self.shape, fortran, self.dtype = read_header(f)
                self.data_start = f.tell()  # offset of the data within the member
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.mmap, self.stream = None, None
        if fortran:
            raise ValueError(f"{path}: {key} is stored in Fortran order; write it with "
                             f"np.savez(path, x)")
        if self.info.compress_type == zipfile.ZIP_STORED:
            # The local header's name/extra lengths can differ from the central directory's.
            with open(path, "rb") as raw:
                raw.seek(self.info.header_offset + 26)
                name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
            offset = (self.info.header_offset + 30 + int(name_len) + int(extra_len)
                      + self.data_start)
            self.mmap = np.memmap(path, dtype=self.dtype, mode="r", offset=offset,
                                  shape=self.shape)

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop):
        if self.mmap is not None:
            return np.array(self.mmap[start:stop])
        if self.stream is None:
            self.stream = zipfile.ZipFile(self.path).open(self.info)
        # Cheap forwards; backwards, the member is inflated again from its start.
        self.stream.seek(self.data_start + start * self.row_bytes)
        buf = bytearray(self.stream.read((stop - start) * self.row_bytes))  # writable, for torch
        return np.frombuffer(buf, dtype=self.dtype).reshape(stop - start, *self.shape[1:])


def write_images(zf, chunks, shape):
    """arr_0.npy = uint8 `shape` (N, H, W, 3) into the open zip `zf`, from `chunks`, an iterable of
    uint8 (n, H, W, 3) arrays that add up to N, one chunk in memory at a time."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": tuple(shape)}
    # The size is unknown to zipfile when it writes the member's header: ask for zip64 up front.
    with zf.open("arr_0.npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        n = 0
        for images in chunks:
            if images.dtype != np.uint8 or images.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"a chunk of {images.dtype} {images.shape} does not fit {shape}")
            f.write(np.ascontiguousarray(images).data)
            n += len(images)
        if n != shape[0]:
            raise ValueError(f"the chunks hold {n} images, expected {shape[0]}")


def write_npz(path, chunks, shape):
    """Write ADM's sample format streamed: an uncompressed .npz with arr_0 uint8 `shape` =
    (N, H, W, 3) and arr_1 the labels, from `chunks`, an iterable of (images (n, H, W, 3) uint8,
    labels (n,)): 50K x 512^2 x 3 is 39 GB, never held in memory. Stored, not deflated, so that
    NpzArray memory-maps arr_0. Atomic: a partial file (a full disk, a signal) is removed."""
    labels = []

    def images():
        for x, y in chunks:
            labels.append(y)
            yield x

    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            write_images(zf, images(), shape)
            with zf.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, np.concatenate(labels).astype(np.int64))
    run.atomic_write(path, write)


def write_reference(path, stats, images=None, shape=None):
    """ADM's reference batch, atomically: the arrays of `stats` (mu, sigma, mu_s, sigma_s) and,
    with `images` (an iterable of uint8 (n, H, W, 3) chunks) and `shape` = (M, H, W, 3), arr_0
    streamed. Stored, not deflated: NpzArray memory-maps its arr_0; ADM's evaluator reads both."""
    def write(fh):
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in stats.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(value))
            if images is not None:
                write_images(zf, images, shape)
    run.atomic_write(path, write)


def load_stats(path):
    """The statistics of an .npz: {"mu", "sigma"} and, when present, {"mu_s", "sigma_s"}, float64,
    checked (shapes, finite values): as ADM's reference batches and pytorch-fid's files hold
    them."""
    with np.load(path) as f:
        if "mu" not in f.files or "sigma" not in f.files:
            raise ValueError(f"{path}: a statistics .npz needs keys 'mu' and 'sigma', found "
                             f"{f.files}")
        if ("mu_s" in f.files) != ("sigma_s" in f.files):
            raise ValueError(f"{path}: holds one of 'mu_s' and 'sigma_s' without the other")
        stats = {k: f[k].astype(np.float64) for k in ("mu", "sigma", "mu_s", "sigma_s")
                 if k in f.files}
    for mu, sigma, dims in (("mu", "sigma", DIMS), ("mu_s", "sigma_s", SPATIAL_DIMS)):
        if mu not in stats:
            continue
        m, s = stats[mu], stats[sigma]
        if m.ndim != 1 or s.shape != (m.shape[0], m.shape[0]):
            raise ValueError(f"{path}: {mu} {m.shape} and {sigma} {s.shape} are not (D,) and "
                             f"(D, D)")
        if not (np.isfinite(m).all() and np.isfinite(s).all()):
            raise ValueError(f"{path}: {mu} or {sigma} holds NaN or inf values: not usable "
                             f"statistics")
        if m.shape[0] != dims:
            raise ValueError(f"{path}: {mu} of {m.shape[0]}-d features; the FID Inception gives "
                             f"{dims}-d")
    return stats


#################################################################################
#          The images of an evaluation: folders, arr_0 .npz, in memory          #
#################################################################################

def collate(items):
    """[(index, (3, H, W) uint8 or None)] -> (index (n,), images, skipped): images (n, 3, H, W),
    or a list of (3, H, W) when their sizes differ (each is resized to 299 alone)."""
    good = [(i, x) for i, x in items if x is not None]
    index = torch.tensor([i for i, _ in good], dtype=torch.int64)
    images = [x for _, x in good]
    if images and all(x.shape == images[0].shape for x in images):
        images = torch.stack(images)  # (n, 3, H, W)
    return index, images, len(items) - len(good)


class Folder:
    """The image files of a folder (sorted, recursive), ADM center-cropped to `resolution` if
    given, read by DataLoader workers. Unreadable files are skipped and counted, never replaced."""

    def __init__(self, path, files, resolution=None, num_workers=4):
        self.path, self.files, self.resolution = path, files, resolution
        self.num_workers = num_workers
        max_pixels()  # a bad $DCAE_MAX_IMAGE_PIXELS: one line here, not in a DataLoader worker

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        x = read_image(self.files[i], self.resolution)  # (H, W, 3) uint8 or None
        return i, None if x is None else torch.from_numpy(np.array(x)).permute(2, 0, 1)  # 3, H, W

    def batches(self, start, stop, batch_size):
        """(index, images, skipped) batches of the files [start, stop)."""
        chunks = [list(range(i, min(i + batch_size, stop)))
                  for i in range(start, stop, batch_size)]
        # Workers ignore Ctrl-C and SIGTERM: the main process stops and ends them.
        yield from DataLoader(self, batch_sampler=chunks, num_workers=self.num_workers,
                              collate_fn=collate, worker_init_fn=ignore_stop_signals)

    def read(self, index, batch_size=64):
        """The images `index` again: uint8 (n, H, W, 3) chunks, in that order (for arr_0)."""
        chunks = [index[i:i + batch_size].tolist() for i in range(0, len(index), batch_size)]
        for got, x, skipped in DataLoader(self, batch_sampler=chunks, num_workers=self.num_workers,
                                          collate_fn=collate, worker_init_fn=ignore_stop_signals):
            if skipped or isinstance(x, list):
                raise ValueError(f"{self.path}: an image changed since it was read (now "
                                 f"unreadable or of another size), among indices {got.tolist()}")
            yield x.permute(0, 2, 3, 1).numpy()  # (n, H, W, 3)


class NpzImages:
    """The uint8 (N, H, W, 3) images of an .npz's arr_0 (ADM's format), mapped or streamed."""

    def __init__(self, path):
        self.path, self.array = path, NpzArray(path)
        shape, dtype = self.array.shape, self.array.dtype
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3) images, got {dtype} "
                             f"{shape}")
        if shape[0] < 2:
            raise ValueError(f"{path}: arr_0 holds {shape[0]} images; need at least 2")

    def __len__(self):
        return len(self.array)

    def batches(self, start, stop, batch_size):
        for i in range(start, stop, batch_size):
            j = min(i + batch_size, stop)
            x = torch.from_numpy(self.array.read(i, j)).permute(0, 3, 1, 2)  # (n, 3, H, W)
            yield torch.arange(i, j), x, 0

    def read(self, index, batch_size=64):
        for i in range(0, len(index), batch_size):
            yield np.stack([self.array.read(k, k + 1)[0] for k in index[i:i + batch_size]])


@dataclasses.dataclass
class Input:
    """A SAMPLES or REF input, checked before any compute: its statistics (a dict, or None) and its
    images (Folder, NpzImages, in-memory images, or None)."""
    name: str
    stats: dict = None
    images: object = None


def open_input(x, resolution=None, num_workers=4):
    """Check a SAMPLES/REF input before any compute -> Input. x: a folder, an .npz (arr_0 images,
    statistics, or both: ADM's reference batch), a (mu, sigma) tuple, or in-memory images (a tensor
    (N, 3, H, W), a uint8 array (N, H, W, 3) or an iterable of tensor batches; under torchrun each
    rank passes its own shard, rank 0's images first)."""
    if isinstance(x, Input):
        return x
    if isinstance(x, tuple):
        return Input("statistics", {"mu": np.asarray(x[0], np.float64),
                                    "sigma": np.asarray(x[1], np.float64)})
    if not isinstance(x, (str, os.PathLike)):
        local_batches(x, 1)  # a tensor's or an array's shape is checked here
        return Input("images in memory", images=x)
    path = str(x)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    if os.path.isdir(path):
        files = list_images(path)
        if len(files) < 2:
            raise ValueError(f"{path}: found {len(files)} images ({', '.join(IMG_EXTENSIONS)}); "
                             f"need at least 2")
        return Input(path, images=Folder(path, files, resolution, num_workers))
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: expected a folder of images or an .npz (arr_0 images and/or "
                         f"mu/sigma statistics)")
    try:
        with zipfile.ZipFile(path) as zf:  # an .npz is a zip of .npy members
            keys = [name[:-4] for name in zf.namelist() if name.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from e
    if "arr_0" not in keys and "mu" not in keys and "sigma" not in keys:
        raise ValueError(f"{path}: an .npz needs 'arr_0' (uint8 samples (N, H, W, 3)) or 'mu' and "
                         f"'sigma'; found {keys}")
    stats = load_stats(path) if "mu" in keys or "sigma" in keys else None
    return Input(path, stats, NpzImages(path) if "arr_0" in keys else None)


def reference_subset(n, size=REFERENCE_SIZE, seed=SUBSET_SEED):
    """Indices of the images of an n-image source that form its reference batch (ADM: 10,000
    images, arr_0): all of them up to `size`, else `size` drawn with a fixed seed, so spread over
    the whole source (a class-sorted folder too), in index order."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.RandomState(seed).choice(n, size, replace=False))


def local_batches(images, batch_size):
    """In-memory images as tensor batches (n, 3, H, W): a tensor (N, 3, H, W), a uint8 array
    (N, H, W, 3) (the .npz layout) or an iterable of tensor batches (a DataLoader)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be (N, 3, H, W), got {tuple(images.shape)}")
        return images.split(batch_size)
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (N, H, W, 3), got {images.dtype} "
                             f"{images.shape}")
        return (torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2)  # (n, 3, H, W)
                for i in range(0, images.shape[0], batch_size))
    return images
