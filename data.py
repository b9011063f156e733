"""Datasets, loaders and image grids for train_ae.py, train_diffusion.py, eval_ae.py, fid.py,
sample.py and toy.py.

Two datasets, one contract: `dataset[i] -> (x, y, bad)` with `x` a float32 image (3, H, W) in
[-1, 1], `y` the int class label and `bad` = 1 when the file at index i was unreadable and another
sample stood in for it (always 0 for the toy data). The default collate turns a batch into
`x (N, 3, H, W)`, `y (N,)`, `bad (N,)`; the trainer sums `bad` to count skipped files, which works
unchanged with DataLoader worker processes (no shared counters).

- `ImageFolder`: ImageNet-style class subfolders (sorted names -> ids 0..K-1, empty ones included),
  ADM center crop (the preprocessing of the paper's ImageNet 256/512 experiments, Sec. 4.1).
- `ToyShapes` (toydata.py): a procedural, class-conditional stand-in for ImageNet; `--data toy`.
- `Batches`: endless training batches that resume exactly where a checkpoint left them
  (epoch, position).
The latent cache that train_diffusion.py trains on (the dataset encoded once by the frozen AE) is
latents.py.

    python data.py --out /tmp/toy_grid.png                  # 8 samples of each toy class as a grid
    python data.py --data /path/to/imagenet/train --resolution 256 --out /tmp/grid.png
"""

import atexit
import math
import multiprocessing
import multiprocessing.util  # noqa: F401  (its exit handler registers before end_workers_at_exit)
import os
import signal
import sys

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import cli
from toydata import ToyShapes

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff",
                  ".ppm", ".pgm", ".gif")

# -------------------------------------------------------------------------------------------------
# Pixels <-> tensors
# -------------------------------------------------------------------------------------------------


def center_crop_arr(pil_image, resolution):
    """ADM (guided-diffusion) center crop: PIL image -> uint8 array (resolution, resolution, 3)."""
    # Halve with a BOX filter while the short side stays >= 2*resolution: cheap and alias-free,
    # and it is what the FID reference statistics of the ADM/DiT/DC-AE lineage were computed with.
    while min(pil_image.size) >= 2 * resolution:
        pil_image = pil_image.resize(tuple(s // 2 for s in pil_image.size), resample=Image.BOX)
    scale = resolution / min(pil_image.size)
    pil_image = pil_image.resize(tuple(round(s * scale) for s in pil_image.size),
                                 resample=Image.BICUBIC)
    arr = np.array(pil_image)  # (H', W', 3), short side == resolution
    top = (arr.shape[0] - resolution) // 2
    left = (arr.shape[1] - resolution) // 2
    return arr[top : top + resolution, left : left + resolution]


def to_tensor(arr):
    """uint8 (H, W, 3) -> float32 x (3, H, W) in [-1, 1]."""
    # (3, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 127.5 - 1.0


def to_uint8(x):
    """x (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3) by clamp(127.5 x + 128, 0, 255)
    (ADM/DiT convention).

    The +128 (not +127.5) makes the truncating cast round to nearest; to_uint8(to_tensor(a)) == a.
    """
    x = torch.clamp(127.5 * x.detach().float() + 128.0, 0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()  # (N, H, W, 3)


def save_grid(x, path, nrow=8, padding=2, col_labels=None, row_labels=None):
    """Save x (N, 3, H, W) in [-1, 1] as one PNG: nrow images per row, `padding` black pixels
    between, with optional labels above the columns (one per column) and left of the rows (one per
    row; consecutive equal labels name a group of rows, written once and set off by a line; "\n"
    breaks a label), so a picture says what it shows."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"save_grid expects (N, 3, H, W), got {tuple(x.shape)}")
    a = to_uint8(x).numpy()  # (N, H, W, 3)
    N, H, W, _ = a.shape
    ncol = min(nrow, N)
    nrows = math.ceil(N / ncol)
    if (col_labels is not None and len(col_labels) != ncol
            or row_labels is not None and len(row_labels) != nrows):
        raise ValueError(f"{ncol} columns and {nrows} rows, "
                         f"got {len(col_labels or [])} column and "
                         f"{len(row_labels or [])} row labels")
    grid = np.zeros((nrows * (H + padding) + padding, ncol * (W + padding) + padding, 3), np.uint8)
    for k in range(N):
        top, left = padding + (k // ncol) * (H + padding), padding + (k % ncol) * (W + padding)
        grid[top : top + H, left : left + W] = a[k]
    image = Image.fromarray(grid)
    if col_labels or row_labels:
        image = label_grid(image, H, W, padding, col_labels, row_labels)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path)


def label_grid(grid, H, W, padding, col_labels, row_labels):
    """The grid image with a band of column labels on top and a band of row labels on the left,
    white on black."""
    from PIL import ImageDraw, ImageFont
    # scalable (Pillow >= 10.1): legible at 32-512 px
    font = ImageFont.load_default(size=min(max(H // 5, 11), 28))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # (width, height)
    size = lambda text: measure.multiline_textbbox((0, 0), text, font=font)[2:]  # noqa: E731
    top = max(size(t)[1] for t in col_labels) + 8 if col_labels else 0
    left = max(size(t)[0] for t in row_labels) + 12 if row_labels else 0
    canvas = Image.new("RGB", (left + grid.width, top + grid.height))
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(col_labels or []):
        x = left + padding + k * (W + padding) + W / 2
        draw.multiline_text((x, top / 2), text,
                            fill="white", font=font, anchor="mm", align="center")
    groups = []  # [label, first row, last row] of runs of equal labels
    for r, text in enumerate(row_labels or []):
        if groups and groups[-1][0] == text:
            groups[-1][2] = r
        else:
            groups.append([text, r, r])
    for g, (text, first, last) in enumerate(groups):
        y0, y1 = top + padding + first * (H + padding), top + (last + 1) * (H + padding)
        draw.multiline_text((left - 6, (y0 + y1) / 2), text,
                            fill="white", font=font, anchor="rm", align="right")
        # a line between groups of several rows
        if g and last > first or g and groups[g - 1][2] > groups[g - 1][1]:
            draw.line([(0, y0 - padding), (canvas.width, y0 - padding)],
                      fill=(160, 160, 160), width=1)
    return canvas


# -------------------------------------------------------------------------------------------------
# ImageNet-style folder
# -------------------------------------------------------------------------------------------------


def list_images(folder, errors=None):
    """All image files under folder (recursive, symlinks followed), sorted so every rank
    sees one order. Each real file is listed once: a folder reached twice (a symlink loop,
    or two links to one folder) is walked once, and a file reached by two paths keeps the
    first in sorted order. Folders that cannot be read are appended to `errors` (a list of
    OSError) when given; os.walk skips them."""
    files, seen_dirs = [], set()
    onerror = errors.append if errors is not None else None
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=onerror):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a loop or a second link to a folder walked already
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in filenames
                  if f.lower().endswith(IMG_EXTENSIONS)]
    unique, seen_files = [], set()
    for f in sorted(files):
        real = os.path.realpath(f)
        if real not in seen_files:
            seen_files.add(real)
            unique.append(f)
    return unique


def has_images(folder):
    """Whether any image file lies under folder;
    stops at the first one (cheap on ImageNet's folders)."""
    for _, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(f.lower().endswith(IMG_EXTENSIONS) for f in filenames):
            return True
    return False


def class_folders(root):
    """The class subfolders of an image folder, in id order, from folder names only (nothing is
    decoded): every sorted subfolder, an empty one included, as torchvision's find_classes and
    ADM's loader number them, so that ImageNet's sorted wnids are ids 0..999 whatever a folder
    holds. Hidden folders (".cache") are not classes. [] when no subfolder holds an image: a flat
    folder of images, one class."""
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    return subdirs if any(has_images(os.path.join(root, d)) for d in subdirs) else []


def class_names(data, num_classes=10):
    """--data -> the class names of its dataset in id order, without building it
    (ImageFolder.classes, ToyShapes.classes): what a latent cache and a diffusion checkpoint record
    (latents.check_classes, run.start_run). Toy class names depend on num_classes."""
    if data == "toy":
        return ToyShapes(1, 8, num_classes).classes
    if not os.path.isdir(data):
        raise ValueError(f"--data must be 'toy' or an image folder; {data!r} is neither")
    return class_folders(data) or [os.path.basename(os.path.normpath(data))]


def class_change(old, new):
    """None when two class lists are equal, else what differs, short enough for one line (ImageNet
    has 1000 names)."""
    if old == new:
        return None
    i = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    name = lambda names: repr(names[i]) if i < len(names) else "none"  # noqa: E731
    return f"{len(old)} classes then, {len(new)} now; class {i} was {name(old)}, now {name(new)}"


def to_rgb(img):
    """A PIL image of any mode -> RGB, 8 bits per channel. High-bit-depth greyscale (16-bit PNG and
    TIFF: modes I;16*, and I) is scaled to 8 bits (v * 255 / 65535), where PIL's convert("RGB")
    would clip it to 255 (white). EXIF orientation is ignored, as the FID literature's readers do
    (pytorch-fid, ADM, torchvision's loader): rotated pixels would not match the reference
    statistics (README: the data)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        v = np.asarray(img, dtype=np.float64).clip(0, 65535)  # (H, W) in 16-bit steps
        img = Image.fromarray(np.round(v * (255 / 65535)).astype(np.uint8), "L")
    elif img.mode == "F":  # 32-bit float greyscale: taken as [0, 1]
        img = Image.fromarray(np.round(np.asarray(img).clip(0, 1) * 255).astype(np.uint8), "L")
    return img.convert("RGB")


# PIL refuses an image over 2 x Image.MAX_IMAGE_PIXELS (178,956,970 pixels) as a possible
# decompression bomb, with an error that names neither the file nor the limit. read_image applies
# that limit itself, before decoding, names both, and lets the environment move it:
# MAX_PIXELS_VARIABLE=N reads images of up to N pixels (0: any size). PIL's own check is switched
# off in this process, as that one limit replaces it (DataLoader workers inherit the variable).
MAX_PIXELS_VARIABLE = "DCAE_MAX_IMAGE_PIXELS"
PIL_PIXEL_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
Image.MAX_IMAGE_PIXELS = None


def max_pixels():
    """The largest image read_image decodes, in pixels (None: any size): PIL's limit, or
    $DCAE_MAX_IMAGE_PIXELS. A value that is not a whole number >= 0 raises ValueError (the datasets
    check it when they are made)."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return PIL_PIXEL_LIMIT
    if not text.strip().isdigit():
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={text!r} is not a number of pixels "
                         f"(a whole number >= 0; 0: no limit)")
    return int(text) or None


def read_image(path, resolution=None, say=True):
    """uint8 (H, W, 3) of an image file (to_rgb), ADM center-cropped to `resolution` (None:
    as stored), or None when the file cannot be decoded or is larger than max_pixels();
    either case is said on stderr (if `say`) in one line naming the file and the cause. The
    one reader of the trainers, the latent cache, eval_ae.py and fid.py. PIL signals broken
    files with OSError (incl. UnidentifiedImageError and truncation), ValueError or
    SyntaxError depending on the format plugin."""
    limit = max_pixels()
    try:
        # Image.open reads the header only: the size is known before any pixel is decoded.
        with Image.open(path) as img:
            w, h = img.size
            if limit is not None and w * h > limit:
                if not say:
                    return None
                whose = MAX_PIXELS_VARIABLE if MAX_PIXELS_VARIABLE in os.environ else "PIL"
                print(f"data.py: skipping {path}: {w}x{h} = {w * h:,} pixels is over {whose}'s "
                      f"limit of {limit:,} (a guard against decompression bombs); to read it, "
                      f"set {MAX_PIXELS_VARIABLE}={w * h} (or 0: no limit)", file=sys.stderr)
                return None
            img = to_rgb(img)
            return center_crop_arr(img, resolution) if resolution else np.asarray(img)
    except (OSError, ValueError, SyntaxError) as e:
        if say:
            cause = f"{type(e).__name__}: {str(e).strip()[:200]}"
            print(f"data.py: skipping unreadable image {path} ({cause})", file=sys.stderr)
        return None


class ImageFolder(Dataset):
    """root/<class>/**/*.jpg -> (x, y, bad). Sorted class folder names give ids (ImageNet: wnids ->
    0..999), an empty or unreadable class folder included (class_folders), said in one line with
    its id.

    A flat folder (images but no class subfolders) gives label 0 for every image; when class
    subfolders exist, images lying directly in root are ignored. Only file names are listed up
    front (no decoding: ImageNet has 1.28M files), and the first readable one is looked for, so
    that a folder of broken files fails here; a file that fails to decode later is replaced by the
    next readable index, deterministically, and reported with bad = 1. No random flips: train_ae.py
    flips whole batches with the training RNG, so a resumed run sees the same flips.
    """

    def __init__(self, root, resolution):
        if not os.path.isdir(root):
            raise ValueError(f"data folder {root!r} does not exist or is not a directory")
        if resolution < 1:
            raise ValueError(f"resolution must be positive, got {resolution}")
        max_pixels()  # a bad $DCAE_MAX_IMAGE_PIXELS: one line here, not in a DataLoader worker
        self.root, self.resolution = root, resolution
        folders = class_folders(root)
        self.classes = class_names(root)  # the folders, or the root's own name for a flat folder
        self.num_classes = len(self.classes)
        self.samples = []
        if not folders:  # flat: one class
            self.samples = [(f, 0) for f in list_images(root)]
        else:
            files = [e.name for e in os.scandir(root) if e.is_file()]  # next to the class folders
            if any(f.lower().endswith(IMG_EXTENSIONS) for f in files):
                print(f"data.py: {root!r} has class subfolders; ignoring the images directly "
                      f"inside it", file=sys.stderr)
            for y, name in enumerate(self.classes):
                errors = []
                files = list_images(os.path.join(root, name), errors)
                self.samples += [(f, y) for f in files]
                # An empty class keeps its id: dropping it would shift every id after it
                # (ImageNet's wnid order).
                said = f"data.py: class folder {name!r} (id {y})"
                cause = f"{errors[0].strerror}: {errors[0].filename}" if errors else ""
                if errors and not files:
                    print(f"{said} cannot be read ({cause}); it keeps its id, with no images",
                          file=sys.stderr)
                elif errors:
                    print(f"{said}: {len(errors)} subfolder(s) cannot be read ({cause}); their "
                          f"images are left out", file=sys.stderr)
                elif not files:
                    print(f"{said} holds no images; it keeps its id, so the ids after it still "
                          f"follow the sorted folder names", file=sys.stderr)
        if not self.samples:
            subdirs = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
            raise ValueError(f"data folder {root!r} has no images with extensions "
                             f"{', '.join(IMG_EXTENSIONS)}"
                             + (f" in its {len(subdirs)} subfolders" if subdirs else ""))
        # A folder of broken files fails here, in one line; training says each file it meets.
        if not any(read_image(f, resolution, say=False) is not None for f, _ in self.samples):
            raise ValueError(f"data folder {root!r}: none of its {len(self.samples)} image files "
                             f"can be read")
        self.known_bad = set()  # per process (each worker has its own copy): avoids re-decoding

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        # Walk forward to the next readable file. bad counts only file i itself, so summing bad
        # over an epoch counts each broken file once even when neighbours are broken too.
        for k in range(len(self)):
            j = (i + k) % len(self)
            path = self.samples[j][0]
            arr = None if j in self.known_bad else read_image(path, self.resolution)  # says why
            if arr is not None:
                return to_tensor(arr), self.samples[j][1], int(k > 0)
            self.known_bad.add(j)
        raise RuntimeError(f"no readable image in {self.root!r} ({len(self)} files tried)")


# -------------------------------------------------------------------------------------------------
# Builders and loaders
# -------------------------------------------------------------------------------------------------


def build_dataset(data="toy", resolution=256, num_classes=10, toy_size=50_000, seed=0):
    """CLI string -> dataset: "toy" -> ToyShapes, else an image folder."""
    if data == "toy":
        return ToyShapes(toy_size, resolution, num_classes, seed)
    if not os.path.isdir(data):
        raise ValueError(f"--data must be 'toy' or an image folder; {data!r} is neither")
    return ImageFolder(data, resolution)


def shard_order(n, rank, world_size, epoch=0, seed=0, shuffle=True):
    """DistributedSampler's order: a permutation seeded by seed + epoch, padded by repeating from
    the start to a multiple of world_size, then every world_size-th index from `rank`. Equal shards
    that cover the dataset."""
    order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)) if shuffle
             else torch.arange(n))
    order = torch.cat([order, order[:(-n) % world_size]])  # (world_size * ceil(n / world_size),)
    return order[rank::world_size].tolist()


def ignore_stop_signals(worker_id):
    """DataLoader workers leave stopping to the main process. A signal to the whole process group
    (Ctrl-C, Slurm's scancel or preemption, `timeout`) reaches them too, and a worker killed by it
    makes the main process fail ("DataLoader worker ... is killed by signal") before it can save;
    the main process ends them when it is done (its loader's shutdown, or end_workers_at_exit)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@atexit.register  # after multiprocessing.util's exit handler (imported above): runs before it
def end_workers_at_exit():
    """At exit, multiprocessing ends the daemonic children still running (DataLoader workers whose
    loader was never shut down: a run that ends by an exception keeps its loader alive in the
    traceback) with SIGTERM, then waits for each. Ours ignore SIGTERM (ignore_stop_signals), so
    that wait would never end: the process would hang after its error instead of exiting. SIGKILL
    ends them first; they hold nothing to save."""
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join()


def make_loader(dataset, batch_size, rank=0, world_size=1, num_workers=4, pin_memory=False):
    """One pass over this rank's shard in dataset order, last batch partial
    (encoding a cache, evaluation)."""
    if batch_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size; "
                         f"got {batch_size}, {rank}, {world_size}")
    order = shard_order(len(dataset), rank, world_size, shuffle=False)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return DataLoader(dataset, batch_sampler=batches,
                      num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=ignore_stop_signals,
                      generator=torch.Generator())  # not the global RNG


class Batches:
    """Endless training batches of this rank's shard, reshuffled each epoch (shard_order), full
    batches only, and resumable exactly: state() = {"epoch", "position"} (batches taken in that
    epoch) continues where it stopped.

    The loader holds no randomness (its workers only decode; its base seed comes from a generator
    of its own), so data loading never moves the global RNG streams that the training step draws
    from.
    """

    def __init__(self, dataset, batch_size, rank=0, world_size=1, seed=0,
                 num_workers=0, pin_memory=False, state=None):
        self.dataset, self.batch_size, self.rank, self.world_size, self.seed = (
            dataset, batch_size, rank, world_size, seed)
        self.loader_args = dict(num_workers=num_workers, pin_memory=pin_memory)
        self.per_epoch = -(-len(dataset) // world_size) // batch_size
        if self.per_epoch < 1:
            raise ValueError(f"the data have {len(dataset)} images: fewer than one micro-batch of "
                             f"{batch_size} per rank ({world_size} ranks); lower --batch-size")
        self.epoch, self.position = (state["epoch"], state["position"]) if state else (0, 0)
        self.it = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.position == self.per_epoch:
            self.epoch, self.position, self.it = self.epoch + 1, 0, None
        if self.it is None:
            order = shard_order(len(self.dataset), self.rank, self.world_size,
                                self.epoch, self.seed)
            batches = [order[i * self.batch_size:(i + 1) * self.batch_size]
                       for i in range(self.per_epoch)]
            self.it = iter(DataLoader(self.dataset, batch_sampler=batches[self.position:],
                                      generator=torch.Generator(),
                                      worker_init_fn=ignore_stop_signals, **self.loader_args))
        self.position += 1
        return next(self.it)

    def state(self):
        return {"epoch": self.epoch, "position": self.position}


def main(args):
    dataset = build_dataset(args.data, args.resolution, args.num_classes, seed=args.seed)
    # Labels without decoding anything: ImageNet lists ~1300 files per class, in class order.
    if isinstance(dataset, ImageFolder):
        labels = [y for _, y in dataset.samples]
    else:
        labels = [i % dataset.num_classes for i in range(len(dataset))]
    rows, names = [], []
    for y in range(min(dataset.num_classes, args.max_rows)):
        idx = [i for i, label in enumerate(labels) if label == y][: args.nrow]  # []: empty class
        x = torch.stack([dataset[i][0] for i in idx]) if idx else \
            torch.empty(0, 3, args.resolution, args.resolution)  # (<= nrow, 3, H, W)
        # (nrow, 3, H, W), black pad
        rows.append(torch.cat([x, -torch.ones(args.nrow - len(x), *x.shape[1:])]))
        names.append(f"{y}: {dataset.classes[y]}")
    save_grid(torch.cat(rows), args.out, args.nrow, row_labels=names)
    print(f"{len(dataset)} images, {dataset.num_classes} classes -> {args.out}")


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="toy", help="'toy' or an ImageNet-style folder")
    parser.add_argument("--resolution", type=int, default=32, help="image side (ADM center crop)")
    parser.add_argument("--num-classes", type=int, default=10, help="classes of the toy data")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy data")
    parser.add_argument("--nrow", type=int, default=8, help="images per row (per class)")
    parser.add_argument("--max-rows", type=int, default=10, help="classes shown, one row each")
    parser.add_argument("--out", default="grid.png", help="the PNG to write")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
