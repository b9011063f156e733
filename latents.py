"""The latent cache (paper Sec. 4.1: "latents precomputed" once by the frozen AE, from center
crops, no flips) that train_diffusion.py trains on: memory-mapped parts, one per rank, and a
meta.json written last that records who made them (the AE, its weights' fingerprint, the data, the
resolution, the precision), their lengths and shape, the class names in id order, and the latent
std that gives the scaling factor of a self-trained AE. A cache made by anything else (or on
another class list: check_classes) is refused; a damaged one is found from its files' headers and
sizes before training and rebuilt.

    python train_diffusion.py \
        --cache runs/latents  # builds it once; later runs with the same AE reuse it
"""
import hashlib
import json
import os
import signal
import sys

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

import ae as ae_lib
import fsdp
import run
from data import make_loader


@torch.no_grad()
def build_cache(ae, dataset, folder, identity, rank, world_size, device,
                batch_size=64, num_workers=2, bf16=False):
    """Encode `dataset` once (each rank a shard, fp32 unless bf16) into folder/part-RRRR.npy (fp16
    latents, unscaled) + labels-RRRR.npy, then meta.json: `identity` plus the parts, their lengths
    and the latent shape (open_cache checks the files against them), the latent std
    (ae.estimate_scaling_factor over all ranks), the number of skipped files and the class names in
    id order (check_classes). meta.json is removed first and written last, atomically: a cache
    without it is incomplete and is rebuilt. The space of each part is reserved before encoding, so
    a full disk fails at once, with one line. Returns meta."""
    loader = make_loader(dataset, batch_size, rank, world_size, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    n = sum(len(b) for b in loader.batch_sampler)
    x0 = dataset[0][0]
    h, w = x0.shape[1] // ae.f, x0.shape[2] // ae.f
    path, error = os.path.join(folder, f"part-{rank:04d}.npy"), None
    try:
        os.makedirs(folder, exist_ok=True)
        if rank == 0 and os.path.exists(os.path.join(folder, "meta.json")):
            os.remove(os.path.join(folder, "meta.json"))  # the old cache is gone from here on
        z_out = np.lib.format.open_memmap(path, "w+", np.float16, (n, ae.c, h, w))
        # a memory map on a full disk dies of SIGBUS later; reserving fails now
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
    except OSError as e:
        error = run.write_error(path, e, 2 * n * ae.c * h * w)
    fsdp.stop_if(error, rank, code=4)
    y_out = np.zeros(n, np.int64)
    skipped, i = 0, 0
    # SIGTERM / SIGINT (to the whole group: scancel, Ctrl-C) while encoding: noted by the handler,
    # acted on between batches (a batch being received from a DataLoader worker is not cut, which
    # would make the worker print a traceback); then one line and exit status 128 + the signal. The
    # cache has no meta.json and the same command encodes it again. A second Ctrl-C stops at once.
    signals = []

    def note(signum, frame):
        if signals and signum == signal.SIGINT:
            raise KeyboardInterrupt
        signals.append(signum)

    def latents():  # written to the part as they stream through the std estimate
        nonlocal skipped, i
        for x, y, bad in tqdm(loader, desc="encoding latents", disable=rank != 0 or None):
            if signals:
                raise SystemExit(128 + signals[0])
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                z = ae.encode(x.to(device)).float()  # (N, c, h, w), unscaled
            z_out[i:i + len(z)] = z.cpu().numpy().astype(np.float16)
            y_out[i:i + len(z)] = y.numpy()
            i, skipped = i + len(z), skipped + int(bad.sum())
            yield z
    before = {sig: signal.signal(sig, note) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scale = ae_lib.estimate_scaling_factor(latents(), reduce=fsdp.all_sum)
    except SystemExit as e:
        if rank == 0:
            name = signal.Signals(e.code - 128).name
            print(f"stopped by {name} while encoding the latent cache {folder} ({i} of {n} "
                  f"images): it is incomplete (no meta.json); run the same command to encode it "
                  f"again", file=sys.stderr, flush=True)
        raise
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    z_out.flush()
    np.save(os.path.join(folder, f"labels-{rank:04d}.npy"), y_out)
    meta = dict(identity, parts=world_size, lengths=fsdp.gather(n), latent_shape=[ae.c, h, w],
                latent_std=1 / scale, skipped=fsdp.all_sum(skipped),
                num_classes=len(dataset.classes), classes=list(dataset.classes))
    fsdp.barrier()
    if rank == 0:
        run.atomic_write(os.path.join(folder, "meta.json"),
                         lambda fh: fh.write(json.dumps(meta, indent=2).encode()))
    fsdp.barrier()
    if signals:  # noted while the last batch was encoded: the cache is complete, the run stops
        if rank == 0:
            print(f"stopped by {signal.Signals(signals[0]).name} after encoding the latent cache "
                  f"{folder} (complete); run the same command to train", file=sys.stderr,
                  flush=True)
        raise SystemExit(128 + signals[0])
    return meta


def open_cache(folder):
    """-> (meta.json's dict, None) for a complete cache, (None, None) for no cache, (None, what is
    wrong) for a damaged one: meta.json unreadable, a part or label file missing, truncated or of
    another shape than meta.json records. All checked before training, from the files' headers and
    sizes (nothing is read); train_diffusion.py rebuilds it."""
    path = os.path.join(folder, "meta.json")
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path) as fh:
            meta = json.load(fh)
        parts, lengths, shape = meta["parts"], meta.get("lengths"), meta.get("latent_shape")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{path} is unreadable ({type(e).__name__}: {e})"
    for r in range(parts):
        for name in (f"part-{r:04d}.npy", f"labels-{r:04d}.npy"):
            file = os.path.join(folder, name)
            try:
                a = np.load(file, mmap_mode="r")  # reads the header; a short file cannot be mapped
            except FileNotFoundError:
                return None, f"{file} is missing"
            except (OSError, ValueError) as e:
                return None, f"{file} is truncated or unreadable ({e})"
            want = (((lengths[r], *shape) if name.startswith("part") else (lengths[r],))
                    if lengths and shape else None)
            if want is not None and tuple(a.shape) != tuple(want):
                return None, f"{file} holds {tuple(a.shape)}, meta.json records {tuple(want)}"
    return meta, None


def check_classes(folder, meta, classes):
    """Refuse (ValueError, one line) a cache whose labels number another class list than `classes`
    (data.class_names of this run's --data): its ids would name other classes (run.classes_changed;
    a cache from before meta.json recorded its classes is judged by their number)."""
    change = run.classes_changed(meta, classes)
    if change:
        raise ValueError(f"latent cache {folder} was built on another class list ({change}): its "
                         f"labels would name other classes; pass another --cache, or the --data "
                         f"it was built from")


def fingerprint(ae):
    """A short hash of the AE's weights next to the latent:
    a cache made by another AE is told apart."""
    h = hashlib.sha256()
    for t in (ae.encoder.conv_out.weight, ae.encoder.conv_out.bias, ae.decoder.conv_in.weight):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class LatentCache(Dataset):
    """All parts of a latent cache, memory-mapped (ranks on a node share the page cache):
    -> (z, y, 0)."""

    def __init__(self, folder, parts):
        self.z = [np.load(os.path.join(folder, f"part-{r:04d}.npy"), mmap_mode="r")
                  for r in range(parts)]
        self.y = [np.load(os.path.join(folder, f"labels-{r:04d}.npy")) for r in range(parts)]
        self.offsets = np.cumsum([0] + [len(y) for y in self.y])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, i):
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - self.offsets[part]
        return (torch.from_numpy(np.array(self.z[part][j], dtype=np.float32)),
                int(self.y[part][j]), 0)
