"""The ADM evaluator in PyTorch: Inception Score, FID, sFID, precision and recall (Sec. 4.1,
App. B).

OpenAI's ADM evaluator (guided-diffusion `evaluations/evaluator.py`) is the field's protocol.
fid.py computes its five numbers, named and printed as it prints them, on the FID Inception
(inception.py: pytorch-fid's port of the TF graph of 2015-12-05, the released weights
`pt_inception-2015-12-05-6726825d.pth`), without TensorFlow:
- FID [23]: pool_3 features (2048-d), |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
- sFID: the same distance on the graph's `mixed_6/conv` (Mixed_6d.branch1x1), first 7 channels,
  17 x 17 x 7 = 2023-d, flattened in TF's (H, W, C) order: ADM's `mu_s`, `sigma_s` apply.
- Inception Score [26]: softmax of pool_3 @ fc.weight (no bias), contiguous splits of 5,000
  samples (the last one partial), the mean over the splits (the std is reported too).
  `--is-protocol torch-fidelity`: DC-Gen's IS, the paper's: torch-fidelity's `inception-v3-compat`
  input (TF1-style resize of the uint8 image, (x - 128) / 128), its logits without bias, 10 splits
  after a shuffle by np.random.RandomState(2020). A second forward pass over the samples.
- Precision and recall [17]: ADM's ManifoldEstimator: k = 3 (the 3rd nearest neighbour, itself
  the 0th), squared Euclidean distances, `<=`, the reference batch's pool_3 features as the real
  manifold against the samples', in row batches of 10,000.
Differences from ADM: the input pipeline is pytorch-fid's (F.interpolate bilinear,
align_corners=False, then 2x - 1: DC-Gen's FID, the paper's) where ADM's TF graph resizes
TF1-style, so numbers can differ slightly from ADM's; distances in fp32 where ADM computes them in
fp16 (fp32 only where fp16 overflows), so a near-tie at a radius can fall the other way.

The DC-AE protocol (App. B): gFID of 50,000 samples against the whole ImageNet train split (ADM
center crop at the model's resolution); rFID of the 50,000 val reconstructions against the val
images (eval_ae.py). The field also compares with ADM's reference batches
(VIRTUAL_imagenet512.npz).

SAMPLES: an image folder (recursive, any size) or an .npz whose `arr_0` is uint8 (N, H, W, 3).
REF: the same, or a reference batch, `arr_0` with the statistics `mu`, `sigma` (and `mu_s`,
`sigma_s`): as ADM, the file's statistics are used when present and its images serve
precision/recall. A statistics-only .npz works too; sFID then needs `mu_s`/`sigma_s`,
precision/recall need images, and the output says what it skipped. A REF of more than 10,000
images (ADM's reference size) gives statistics of all of them and precision/recall against 10,000
drawn with a fixed seed: the images --save-stats writes into `arr_0` (7.9 GB at 512 px; with
--no-pr it writes the statistics only).

    # reference batch of the ImageNet train split at 512 px, ADM's layout (once; 8 GPUs)
    torchrun --nproc_per_node=8 fid.py /data/imagenet/train --resolution 512 --save-stats in512.npz
    # Inception Score, FID, sFID, Precision, Recall of 50K samples written by sample.py
    torchrun --nproc_per_node=8 fid.py out/samples.npz in512.npz
    torchrun --nproc_per_node=8 fid.py out/samples.npz VIRTUAL_imagenet512.npz \
        --is-protocol torch-fidelity
    # smoke test on a machine without the weights (numbers are meaningless)
    python fid.py a/ b/ --inception-weights random

Library use, streamed (no images held): a reference loaded once, then any number of evaluations.
Under torchrun every rank feeds its chunks with their global sample indices; metrics() is
collective and gathers the features in index order:
    model = load_inception(weights, device)
    ref = load_reference("in512.npz", model, batch_size=50, device=device)
    feats = Features(model, device, batch_size=50)
    for k in range(rank, num_chunks, world):
        feats.update(images_k, index=range(k * B, k * B + len(images_k)))  # uint8 (n, 3, H, W)
    m = metrics(feats, ref)  # {"fid", "sfid", "is_mean", "is_std", "precision", "recall", ...}
"""
import dataclasses
import errno
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import batches
import cli
import fsdp  # the process group (torchrun: one shard per rank) and one-line errors
import run
from batches import (REFERENCE_SIZE, Folder, NpzImages, local_batches, open_input,
                     reference_subset)
from batches import NpzArray, load_stats, write_npz  # noqa: F401  (sample.py, tests: fid.*)
from inception import DIMS, SPATIAL_DIMS, load_inception  # noqa: F401  (the library API)
from scores import (IS_SPLIT_SIZE, InceptionStats, fp32, frechet_distance, inception_score,
                    inception_score_torch_fidelity, precision_recall)

IS_PROTOCOLS = ("adm", "torch-fidelity")


def dist_info():
    """(rank, world size) under torchrun, (0, 1) in one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


#################################################################################
#                 Features, streamed; the reference; the metrics                 #
#################################################################################

def check_range(x):
    if x.is_floating_point() and (x.min() < -1e-4 or x.max() > 1 + 1e-4):
        raise ValueError(f"float images must be in [0, 1], got [{x.min().item():.3g}, "
                         f"{x.max().item():.3g}]; pass (x + 1) / 2 or uint8")


@torch.no_grad()
def features_from_images(model, images, batch_size=50, device="cpu", stats=None, keep=True,
                         progress=False):
    """pool_3 features and IS logits of `images` (as local_batches takes them), in one process or
    on this rank's shard: updates `stats` (InceptionStats) with the pool features (no all-reduce).
    Returns (pool (N, 2048), logits (N, 1008)) on CPU, or empty ones with keep=False (eval_ae.py's
    rFID streams through `stats` only). For the ADM metrics use Features."""
    total = len(images) if hasattr(images, "__len__") else None
    pools, logits = [], []
    with fp32(device), tqdm(total=total, unit="img",
                            disable=not progress or dist_info()[0] != 0 or None) as bar:
        for x in local_batches(images, batch_size):
            x = x.to(device, non_blocking=True)
            check_range(x)
            pool, logit, _ = model(x)  # (N, 2048), (N, 1008)
            if stats is not None:
                stats.update(pool)
            if keep:
                pools.append(pool.cpu())
                logits.append(logit.cpu())
            bar.update(x.shape[0])
    if not keep or not pools:
        return torch.empty(0, DIMS), torch.empty(0, model.fc.weight.shape[0])
    return torch.cat(pools), torch.cat(logits)


def all_gather_rows(x, device="cpu"):
    """Concatenate every rank's (N_r, ...) tensor in rank order (shards may differ in length)."""
    if dist_info()[1] == 1:
        return x
    x = x.to(device)
    n = torch.tensor([x.shape[0]], device=device)
    counts = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, n)
    padded = torch.zeros(int(max(counts).item()), *x.shape[1:], dtype=x.dtype, device=device)
    padded[:x.shape[0]] = x
    parts = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(parts, padded)  # all_gather needs equal shapes: pad, then trim
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)]).cpu()


class Features:
    """Inception features of images fed chunk by chunk (update), for metrics() and load_reference:
    running float64 sums of the pool_3 and the spatial features (summed over ranks at the end),
    and the rows metrics() needs in sample order, kept with their global sample indices: pool_3
    (ADM's IS, precision/recall) and, for the torch-fidelity IS, the logits of its own input
    pipeline (a second forward pass). keep: the global indices whose rows are kept (None: all)."""

    def __init__(self, model, device="cpu", batch_size=50, is_protocol="adm", keep=None):
        if is_protocol not in IS_PROTOCOLS:
            raise ValueError(f"is_protocol must be one of {IS_PROTOCOLS}, got {is_protocol!r}")
        self.model, self.device, self.batch_size = model, torch.device(device), batch_size
        self.is_protocol, self.keep = is_protocol, keep
        self.pool_stats = InceptionStats(DIMS, device)
        self.spatial_stats = InceptionStats(SPATIAL_DIMS, device)
        self.index, self.pool, self.logits = [], [], []  # kept rows, on CPU
        self.count, self.skipped, self.sizes = 0, 0, set()  # images fed; unreadable; (H, W) seen
        self.local = None  # indices given (False) or this rank's arrival order (True)

    @torch.no_grad()
    def update(self, images, index=None):
        """images: uint8 (N, 3, H, W) (or float in [0, 1]), or a list of N (3, H, W) images of
        different sizes. index: their global sample indices (N,); None: this rank's arrival order,
        with ranks in order (rank 0's images first), as compute_metrics feeds in-memory shards."""
        n = len(images)
        if n == 0:
            return
        if self.local is not None and self.local != (index is None):
            raise ValueError("Features.update: give every chunk its global sample indices, "
                             "or none")
        self.local = index is None
        index = torch.arange(self.count, self.count + n) if index is None else \
            torch.as_tensor(index, dtype=torch.int64).flatten().cpu()  # (n,), kept on the host
        if index.shape[0] != n:
            raise ValueError(f"Features.update: {n} images but {index.shape[0]} indices")
        self.count += n
        with fp32(self.device):
            for s in range(0, n, self.batch_size):
                x, i = images[s:s + self.batch_size], index[s:s + self.batch_size]
                if isinstance(x, list):
                    x = [image.to(self.device) for image in x]
                    self.sizes.update(tuple(image.shape[-2:]) for image in x)
                else:
                    x = x.to(self.device, non_blocking=True)
                    self.sizes.add(tuple(x.shape[-2:]))
                for image in (x if isinstance(x, list) else [x]):
                    check_range(image)
                pool, _, spatial = self.model(x)  # (n, 2048), (n, 1008), (n, 7, 17, 17)
                self.pool_stats.update(pool)
                # (n, 17 * 17 * 7), flattened in TF's (H, W, C) order, as ADM's mu_s, sigma_s are.
                self.spatial_stats.update(spatial.permute(0, 2, 3, 1).flatten(1))
                kept = torch.ones(len(i), dtype=torch.bool) if self.keep is None else \
                    torch.from_numpy(np.isin(i.numpy(), self.keep))
                if not kept.any():
                    continue
                self.index.append(i[kept])
                self.pool.append(pool[kept.to(pool.device)].cpu())
                if self.is_protocol == "torch-fidelity":
                    logits = self.model(x, pipeline="torch-fidelity")[1]  # (n, 1008)
                    self.logits.append(logits[kept.to(logits.device)].cpu())

    def gathered(self):
        """(index (M,), pool (M, 2048), logits (M, 1008) or None): the kept rows of every rank, in
        global index order, on every rank (collective under torchrun)."""
        rank, world = dist_info()
        index = torch.cat(self.index) if self.index else torch.zeros(0, dtype=torch.int64)
        pool = torch.cat(self.pool) if self.pool else torch.zeros(0, DIMS)
        counts = fsdp.gather(self.count)
        if self.local:  # this rank's arrival order: ranks follow each other
            index = index + sum(counts[:rank])
        gather_device = self.device if world > 1 else "cpu"
        index, pool = all_gather_rows(index, gather_device), all_gather_rows(pool, gather_device)
        logits = None
        if self.is_protocol == "torch-fidelity":
            logits = torch.cat(self.logits) if self.logits else \
                torch.zeros(0, self.model.fc.weight.shape[0])
            logits = all_gather_rows(logits, gather_device)
        order = torch.argsort(index)
        index = index[order]
        if (index[1:] == index[:-1]).any():
            raise ValueError(f"sample index {int(index[1:][index[1:] == index[:-1]][0])} was fed "
                             f"twice")
        return index, pool[order], None if logits is None else logits[order]


def feed(features, images, progress=False, desc=None):
    """Every image of a source into `features`, this rank's contiguous shard of a Folder or an
    NpzImages (with their global indices), or this rank's in-memory images (arrival order)."""
    rank, world = dist_info()
    if isinstance(images, (Folder, NpzImages)):
        n = len(images)
        start, stop = n * rank // world, n * (rank + 1) // world
        chunks, total = images.batches(start, stop, features.batch_size), stop - start
    else:
        chunks = ((None, x, 0) for x in local_batches(images, features.batch_size))
        total = len(images) if hasattr(images, "__len__") else None
    with tqdm(total=total, unit="img", desc=desc,
              disable=not progress or rank != 0 or None) as bar:
        for index, x, skipped in chunks:
            features.update(x, index)
            features.skipped += skipped
            bar.update(len(x) + skipped)


@dataclasses.dataclass
class Reference:
    """What metrics() compares samples with, loaded once (load_reference) and reused: the pool_3
    statistics mu, sigma; the spatial ones mu_s, sigma_s (None when unknown: no sFID); the pool_3
    features of its reference batch for precision/recall (None without images: no precision/recall)
    and their indices in the source; where it all came from, for the report and --save-stats."""
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray = None
    sigma_s: np.ndarray = None
    pool: torch.Tensor = None  # (M, 2048) on CPU, M <= 10,000 (ADM: arr_0)
    index: torch.Tensor = None  # (M,): which images of the source those are
    n: int = None  # images read (None: statistics only)
    skipped: int = 0  # unreadable image files
    name: str = None
    from_file: tuple = ()  # the statistics read from the file, e.g. ("mu", "sigma")
    source: object = None  # Folder or NpzImages: re-read by save_reference for arr_0
    image_size: tuple = None  # (H, W) when all images have one size (else arr_0 cannot hold them)


def load_reference(ref, model, batch_size=50, device="cpu", resolution=None, num_workers=4,
                   pr=True, progress=False, size=REFERENCE_SIZE):
    """A Reference from `ref` (a path, an Input, a (mu, sigma) tuple or in-memory images; see
    open_input). As ADM: a file's statistics are used when present (mu_s/sigma_s only when it holds
    them), else computed from its images; its images' pool_3 features serve precision/recall, at
    most `size` of them (reference_subset). pr=False skips the images when the file has statistics.
    Collective under torchrun (every rank reads its shard)."""
    ref = open_input(ref, resolution, num_workers)
    stats = ref.stats or {}
    if ref.images is None or (stats and not pr):
        return Reference(stats["mu"], stats["sigma"], stats.get("mu_s"), stats.get("sigma_s"),
                         name=ref.name, from_file=tuple(stats))
    on_disk = isinstance(ref.images, (Folder, NpzImages))
    keep = reference_subset(len(ref.images), size) if on_disk else None
    features = Features(model, device, batch_size, "adm", keep)
    feed(features, ref.images, progress, desc="reference")
    index, pool, _ = features.gathered()
    if not on_disk and len(index) > size:  # in memory: the count is known only now
        chosen = torch.from_numpy(reference_subset(len(index), size))
        index, pool = index[chosen], pool[chosen]
    pool_stats, spatial_stats = features.pool_stats.reduced(), features.spatial_stats.reduced()
    if not stats:
        stats = dict(zip(("mu", "sigma"), pool_stats.mu_sigma()))
        stats.update(zip(("mu_s", "sigma_s"), spatial_stats.mu_sigma()))
        read = ()
    else:
        read = tuple(stats)
    sizes = set().union(*fsdp.gather(features.sizes))
    return Reference(stats["mu"], stats["sigma"], stats.get("mu_s"), stats.get("sigma_s"), pool,
                     index, int(pool_stats.n.item()), int(fsdp.all_sum(features.skipped)),
                     ref.name, read, ref.images if on_disk else None,
                     sizes.pop() if len(sizes) == 1 else None)


def save_reference(path, reference, arr_0=True):
    """Write `reference` as an ADM reference batch (call on one rank): mu, sigma, mu_s, sigma_s
    and, with arr_0, its reference images (up to 10,000; 7.9 GB at 512 px), re-read from the
    source, streamed; atomic. -> None, or why arr_0 was left out (then the statistics only)."""
    stats = {k: v for k, v in (("mu", reference.mu), ("sigma", reference.sigma),
                               ("mu_s", reference.mu_s), ("sigma_s", reference.sigma_s))
             if v is not None}
    why = None
    if not arr_0:
        why = "not asked for (--no-pr)"
    elif reference.index is None:
        why = "REF holds no images"
    elif reference.source is None:
        why = "the reference images are in memory, not in a file to read them again from"
    elif reference.image_size is None:
        why = "its images differ in size (--resolution center-crops them to one)"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if why is None:
        index = reference.index.numpy()
        shape = (len(index), *reference.image_size, 3)
        try:
            batches.write_reference(path, stats, reference.source.read(index), shape)
            return None
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            why = f"no space for its {np.prod(shape) / 2**30:.1f} GiB on the device"
    batches.write_reference(path, stats)
    return why


def metrics(features, reference, pr=True):
    """The ADM evaluator's numbers of the samples in `features` against `reference`, on every rank
    (collective under torchrun; `features` stays as it is). -> dict: fid, sfid (None without
    spatial statistics), is_mean, is_std, precision, recall (None without reference images),
    n_samples, n_ref, skipped_samples, skipped_ref, is_protocol, protocol, not_computed (why)."""
    if features.keep is not None:
        raise ValueError("metrics() needs the features of every sample: Features(keep=None)")
    pool_stats, spatial_stats = features.pool_stats.reduced(), features.spatial_stats.reduced()
    n = int(pool_stats.n.item())
    index, pool, logits = features.gathered()
    why = {}
    fid = frechet_distance(*pool_stats.mu_sigma(), reference.mu, reference.sigma)
    sfid = None
    if reference.mu_s is None:
        why["sfid"] = f"REF {reference.name} has no spatial statistics (mu_s, sigma_s)"
    else:
        sfid = frechet_distance(*spatial_stats.mu_sigma(), reference.mu_s, reference.sigma_s)
    if features.is_protocol == "adm":
        with fp32(features.device):  # ADM: softmax(pool_3 @ W), W = the graph's logit weights
            logits = pool.to(features.device) @ features.model.fc.weight.T  # (N, 1008)
        is_mean, is_std = inception_score(logits.cpu(), IS_SPLIT_SIZE)
    elif n >= 10:
        is_mean, is_std = inception_score_torch_fidelity(logits)
    else:
        is_mean = is_std = float("nan")
        why["is"] = f"torch-fidelity's IS needs at least 10 samples (10 splits), got {n}"
    precision = recall = None
    if not pr:
        why["precision"] = why["recall"] = "not asked for (pr=False, --no-pr)"
    elif reference.pool is None:
        why["precision"] = why["recall"] = (f"REF {reference.name} holds no images (statistics "
                                            f"only): they compare reference images with samples")
    elif min(len(reference.pool), n) <= 3:
        why["precision"] = why["recall"] = (f"k=3 needs more than 3 images per set, got "
                                            f"{len(reference.pool)} reference images, {n} samples")
    else:
        precision, recall = precision_recall(reference.pool, pool, device=features.device)
    return {"fid": fid, "sfid": sfid, "is_mean": is_mean, "is_std": is_std, "precision": precision,
            "recall": recall, "n_samples": n, "n_ref": reference.n,
            "skipped_samples": int(fsdp.all_sum(features.skipped)),
            "skipped_ref": reference.skipped,
            "is_protocol": features.is_protocol, "protocol": protocol(features.is_protocol),
            "not_computed": why}


def compute_metrics(samples, ref, model=None, weights=None, batch_size=50, device="cpu",
                    resolution=None, num_workers=4, save_ref_stats=None, pr=True, progress=True,
                    is_protocol="adm"):
    """metrics() of `samples` against `ref`, each a path (folder, arr_0 .npz; REF also a reference
    batch or a statistics .npz), in-memory images (under torchrun each rank passes its own shard)
    or, REF only, a (mu, sigma) tuple. `resolution` (ADM center crop) applies to folders.
    save_ref_stats: also write REF as a reference batch there (save_reference, on rank 0)."""
    inputs = [open_input(x, resolution, num_workers) for x in (samples, ref)]  # checked first
    if inputs[0].images is None:
        raise ValueError(f"SAMPLES must be images (a folder or an arr_0 .npz), got statistics: "
                         f"{inputs[0].name}")
    if is_protocol not in IS_PROTOCOLS:
        raise ValueError(f"is_protocol must be one of {IS_PROTOCOLS}, got {is_protocol!r}")
    if save_ref_stats:  # the folder must be one we can make and write in
        run.check_out(os.path.dirname(os.path.abspath(save_ref_stats)), "save_ref_stats")
    model = model if model is not None else load_inception(weights, device)
    reference = load_reference(inputs[1], model, batch_size, device, pr=pr or bool(save_ref_stats),
                               progress=progress)
    if save_ref_stats and dist_info()[0] == 0:
        save_reference(save_ref_stats, reference)
    features = Features(model, device, batch_size, is_protocol)
    feed(features, inputs[0].images, progress, desc="samples")
    return metrics(features, reference, pr)


#################################################################################
#                                      CLI                                      #
#################################################################################

def protocol(is_protocol):
    """The protocol in one line, for the output and the result of metrics()."""
    inception_score = {
        "adm": "IS as ADM (softmax of pool_3 @ fc.weight, no bias; splits of 5,000)",
        "torch-fidelity": "IS as DC-Gen / torch-fidelity, the paper's (its TF1-style resize, "
                          "(x - 128) / 128, logits without bias, 10 splits after a shuffle with "
                          "seed 2020)"}[is_protocol]
    return ("protocol: the ADM evaluator (guided-diffusion evaluations/evaluator.py) in PyTorch: "
            "FID on pool_3; sFID on mixed_6/conv[:7] (Mixed_6d.branch1x1, 2023-d); "
            "precision/recall k=3 against the reference batch, fp32 distances (ADM: fp16); "
            f"{inception_score}; "
            "images resized as pytorch-fid (bilinear, align_corners=False), where ADM's TF graph "
            "resizes TF1-style: numbers can differ slightly from ADM's")


def stats_path(path):
    """The file --save-stats writes: `path`, '.npz' appended when missing (as np.savez does)."""
    return path if path.endswith(".npz") else path + ".npz"


def check_args(args):
    """Bad arguments, inputs and output path, before the Inception is loaded or any image read:
    -> ([Input per path], the --save-stats file or None). Raises ValueError / FileNotFoundError."""
    if not 1 <= len(args.paths) <= 2 or (len(args.paths) == 1 and not args.save_stats):
        raise ValueError(f"expected SAMPLES REF, or IMAGES --save-stats OUT.npz; got "
                         f"{len(args.paths)} path(s)")
    if args.batch_size < 1 or args.num_workers < 0 or (args.resolution is not None
                                                       and args.resolution < 1):
        raise ValueError(f"--batch-size {args.batch_size} and --resolution {args.resolution} must "
                         f"be positive, --num-workers {args.num_workers} >= 0")
    inputs = [open_input(p, args.resolution, args.num_workers) for p in args.paths]
    if inputs[0].images is None:
        raise ValueError(f"{args.paths[0]} holds statistics: " + (
            "SAMPLES must be images" if len(inputs) == 2 else "nothing to compute"))
    out = None
    if args.save_stats:
        out = stats_path(args.save_stats)
        if inputs[-1].images is None:
            raise ValueError(f"--save-stats: REF {args.paths[-1]} holds statistics only: nothing "
                             f"to compute and save")
        for path in {args.save_stats, out}:
            if os.path.isdir(path):
                raise ValueError(f"--save-stats {path} is a folder; name the .npz file to write")
        if any(os.path.realpath(out) == os.path.realpath(p) for p in args.paths):
            raise ValueError(f"--save-stats {out} is one of the inputs; name another file")
        run.check_out(os.path.dirname(os.path.abspath(out)), "--save-stats")  # parent: made later
    return inputs, out


class Stopped(SystemExit):
    """Ctrl-C / SIGTERM: leave through SystemExit(128 + signal); a file being written is
    removed (run.atomic_write)."""

    def __init__(self, signum):
        super().__init__(128 + signum)
        self.signum = signum


def stop(signum, frame):
    raise Stopped(signum)


def describe(reference):
    """One line on where the reference's numbers come from."""
    if reference.n is None:
        return f"{reference.name}: statistics ({', '.join(reference.from_file)}) from the file"
    text = f"{reference.name}: {reference.n} images ({reference.skipped} unreadable skipped)"
    if reference.from_file:
        text += f", statistics ({', '.join(reference.from_file)}) from the file"
    return text + f"; precision/recall against {len(reference.pool)} of the images"


def report(m, reference, args):
    """The result as ADM prints it (Inception Score, FID, sFID, Precision, Recall), with its
    protocol and inputs before, and a reason for each number that could not be computed."""
    why = m["not_computed"]
    print(f"samples: {args.paths[0]}: {m['n_samples']} images ({m['skipped_samples']} unreadable "
          f"skipped)")
    print(f"reference: {describe(reference)}")
    splits = ("10 splits after a shuffle" if m["is_protocol"] == "torch-fidelity" else
              f"{-(-m['n_samples'] // IS_SPLIT_SIZE)} splits of up to {IS_SPLIT_SIZE:,}")
    print(f"Inception Score: {m['is_mean']}" + (f" (not computed: {why['is']})" if "is" in why
                                                else f"\nInception Score std: {m['is_std']} "
                                                f"({splits})"))
    print(f"FID: {m['fid']}")
    for key, name in (("sfid", "sFID"), ("precision", "Precision"), ("recall", "Recall")):
        print(f"{name}: " + (f"skipped: {why[key]}" if m[key] is None else f"{m[key]}"))


def main(args):
    rank, _, device = fsdp.setup()
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    written = []
    try:
        evaluate(args, rank, device, written)
    except Stopped as e:
        if rank == 0:
            done = f"{written[0]} was written before" if written else "nothing was written"
            print(f"fid.py: stopped by {signal.Signals(e.signum).name}; {done}", file=sys.stderr,
                  flush=True)
        raise
    finally:
        for sig, handler in handlers.items():  # main() may run again in this process (tests)
            signal.signal(sig, handler)
    fsdp.cleanup()


def evaluate(args, rank, device, written):
    """main() between its signal handlers: check, load, compute, write, report."""
    error, inputs, out = None, None, None
    try:
        inputs, out = check_args(args)
    except (ValueError, FileNotFoundError) as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    try:
        model = load_inception(args.inception_weights, device)
    except (ValueError, FileNotFoundError) as e:
        fsdp.fail(str(e), rank)
    if rank == 0:
        print(protocol(args.is_protocol))
        if args.inception_weights == "random":
            print("RANDOM Inception weights: these numbers are meaningless")
        then = f", then {args.paths[0]}" if len(inputs) == 2 else ""
        print(f"reading {args.paths[-1]}{then}", flush=True)
    reference = load_reference(inputs[-1], model, args.batch_size, device, pr=not args.no_pr,
                               progress=True)
    if out is not None:
        error, why = None, None
        if rank == 0:
            try:
                why = save_reference(out, reference, arr_0=not args.no_pr)
                written.append(out)
            except (OSError, ValueError) as e:
                error = run.write_error(out, e) if isinstance(e, OSError) else str(e)
        fsdp.stop_if(error, rank, code=4)  # all ranks wait here for rank 0's file
        if rank == 0:
            keys = [k for k in ("mu", "sigma", "mu_s", "sigma_s")
                    if getattr(reference, k) is not None]
            keys.append(f"arr_0 left out: {why}" if why else
                        f"arr_0: {len(reference.index)} of its images")
            print(f"wrote {args.paths[-1]} as a reference batch ({', '.join(keys)}) to {out}",
                  flush=True)
    if len(inputs) == 2:
        features = Features(model, device, args.batch_size, args.is_protocol)
        feed(features, inputs[0].images, progress=True, desc="samples")
        m = metrics(features, reference, pr=not args.no_pr)
        if rank == 0:
            report(m, reference, args)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__, usage="fid.py SAMPLES REF [options] | "
                                                           "fid.py IMAGES --save-stats OUT.npz")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="SAMPLES REF: an image folder or an arr_0 .npz; REF also a reference "
                        "batch (arr_0 + mu, sigma, mu_s, sigma_s) or a statistics .npz. Or one "
                        "IMAGES path with --save-stats")
    parser.add_argument("--inception-weights", default=None,
                        help="pt_inception-2015-12-05-6726825d.pth (default: the torch hub cache, "
                        "downloaded when online); 'random' for smoke tests")
    parser.add_argument("--save-stats", default=None, metavar="OUT.npz",
                        help="write REF (or the one path) as an ADM reference batch: mu, sigma, "
                        "mu_s, sigma_s and arr_0 = up to 10,000 of its images; '.npz' is appended "
                        "when missing (default: none written)")
    parser.add_argument("--is-protocol", choices=IS_PROTOCOLS, default="adm",
                        help="adm: ADM's IS (splits of 5,000); torch-fidelity: DC-Gen's, the "
                        "paper's (10 shuffled splits; a second forward pass)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="ADM center crop of image folders (default: none)")
    parser.add_argument("--batch-size", type=int, default=50,
                        help="images per forward pass, per rank")
    parser.add_argument("--num-workers", type=int, default=4,
                        help="DataLoader workers reading image folders")
    parser.add_argument("--no-pr", action="store_true",
                        help="skip precision/recall: REF's images are then read only when REF has "
                        "no statistics, and --save-stats writes no arr_0")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
