"""Inception statistics for evaluation: FID, Inception Score, precision/recall, rFID (Sec. 4.1, App. B).

The four metrics the paper reports, FID [23], Inception Score [26], precision and recall [17], on the features of
the FID Inception (inception.py: pytorch-fid's port of the TF graph of 2015-12-05, strict loading of
`pt_inception-2015-12-05-6726825d.pth`), with no evaluation package. The DC-AE protocol (App. B): gFID of 50,000
samples against the statistics of the whole ImageNet train split (ADM center crop at the model's resolution);
rFID of the 50,000 val reconstructions against the val images (eval_ae.py).

Inputs (SAMPLES and REF): a folder of images (recursive, any size), an `.npz` whose `arr_0` is uint8
(N, H, W, 3) (ADM's evaluator format, written by write_npz and read without loading it into memory), or a
statistics `.npz` with `mu` and `sigma` (REF only; precision/recall then are skipped: they need features).

    # reference statistics of the ImageNet train split at 512 px (once; 8 GPUs)
    torchrun --nproc_per_node=8 fid.py /data/imagenet/train --resolution 512 --save-stats in512_train.npz
    # gFID, IS, precision, recall of 50K samples written by sample.py
    torchrun --nproc_per_node=8 fid.py out/samples.npz in512_train.npz
    # smoke test on a machine without the weights (numbers are meaningless)
    python fid.py a/ b/ --inception-weights random

Library use (e.g. eval_ae.py on reconstructions, streamed):
    model = load_inception(weights, device)
    stats = InceptionStats(); features_from_images(model, x_uint8, 50, device, stats=stats, keep=False)
    stats.all_reduce(); mu, sigma = stats.mu_sigma(); fid = frechet_distance(mu, sigma, *load_stats(ref))
"""
import os
import sys
import warnings
import zipfile

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch
import torch.distributed as dist
from tqdm import tqdm

import cli
import fsdp  # the process group (torchrun: one shard per rank) and one-line errors
from data import IMG_EXTENSIONS, FolderImages, list_images
from inception import DIMS, NUM_CLASSES, load_inception  # noqa: F401  (load_inception: the library API)


def dist_info():
    """(rank, world size) under torchrun, (0, 1) in one process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


#################################################################################
#                       Metrics: FID, IS, precision/recall                      #
#################################################################################

class InceptionStats:
    """Running sums of features in float64: sum x, sum x x^T and N. Streams (no feature matrix kept)
    and all-reduces across ranks; mu and Sigma at the end equal np.mean / np.cov of all features."""

    def __init__(self, dims=DIMS, device="cpu"):
        self.s = torch.zeros(dims, dtype=torch.float64, device=device)  # sum x
        self.S = torch.zeros(dims, dims, dtype=torch.float64, device=device)  # sum x x^T
        self.n = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, features):
        x = features.to(self.S.device, torch.float64)  # (N, D)
        self.s += x.sum(dim=0)
        self.S.addmm_(x.T, x)  # (D, D)
        self.n += x.shape[0]

    def all_reduce(self):
        """Sum over ranks (a no-op in one process). Call once, after every rank's last update."""
        if dist_info()[1] > 1:
            for t in (self.s, self.S, self.n):
                dist.all_reduce(t)

    def mu_sigma(self):
        """(mu (D,), Sigma (D, D)) as float64 numpy; Sigma unbiased (N - 1), as np.cov."""
        n, d = int(self.n.item()), self.s.shape[0]
        if n < 2:
            raise ValueError(f"statistics need at least 2 images, got {n}")
        if n < d:
            warnings.warn(f"only {n} images for {d}-d features: Sigma is singular, FID is biased upwards "
                          f"(50,000 is the standard)")
        mu = self.s / n
        sigma = (self.S - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()


def save_stats(path, mu, sigma):
    np.savez(path, mu=mu, sigma=sigma)


def load_stats(path):
    """(mu, sigma) from a statistics .npz (keys `mu`, `sigma`, as pytorch-fid and ADM write them)."""
    with np.load(path) as f:
        if "mu" not in f.files or "sigma" not in f.files:
            raise ValueError(f"{path}: a statistics .npz needs keys 'mu' and 'sigma', found {f.files}")
        mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu or sigma holds NaN or inf values: not usable statistics")
    return mu, sigma


# Frechet Inception Distance [23]: FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """FID from eigenvalues, float64. With any factor S1 = A A^T, S1 S2 = A (A^T S2) has the nonzero
    eigenvalues of A^T S2 A, which is symmetric PSD: tr (S1 S2)^(1/2) is the sum of the square roots
    of its eigenvalues. A comes from a pivoted Cholesky factorization, which also finds the rank r of
    S1 (r = N - 1 < D with few images): A is (D, r) and the eigenproblem only r x r. Replaces scipy's
    sqrtm (deprecated `disp`, complex round-off, ~10x slower)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"feature dimensions differ: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {sigma1.shape} vs {sigma2.shape}")
    # LAPACK ?pstrf: S1[piv][:, piv] = L L^T, L lower triangular, columns past the rank r are junk.
    L, piv, r, _ = scipy.linalg.lapack.dpstrf(sigma1, lower=1)
    A = np.zeros((sigma1.shape[0], r))
    A[piv - 1] = np.tril(L)[:, :r]  # (D, r): undo the pivoting (piv is 1-based), S1 = A A^T
    M = A.T @ sigma2 @ A  # (r, r)
    # One BLAS/LAPACK (numpy's) for all steps: alternating with torch's thread pool was slower.
    ev = scipy.linalg.eigvalsh(M, driver="evd") if r > 0 else np.zeros(1)
    # Zero the round-off eigenvalues of a singular M (S2 of rank < r): their square roots (~1e-8
    # each) would add up and make FID slightly asymmetric.
    tr_covmean = np.sqrt(np.where(ev > ev.max() * r * np.finfo(np.float64).eps, ev, 0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


# Inception Score [26]: exp E_x KL(p(y|x) || p(y)), mean and std over 10 splits.
def inception_score(logits, splits=10):
    """logits (N, K) -> (mean, std) of IS over `splits` contiguous splits (ADM: 5,000 per split of 50K)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.shape[0] < splits:
        raise ValueError(f"inception_score needs at least splits={splits} images, got {logits.shape[0]}")
    scores = []
    for part in torch.tensor_split(logits, splits):  # (N / splits, K)
        log_p = torch.log_softmax(part, dim=1)
        p = log_p.exp()
        p_y = p.mean(dim=0, keepdim=True)  # (1, K) marginal
        # xlogy: 0 log 0 = 0 for classes no image of the split predicts.
        kl = (p * log_p - torch.xlogy(p, p_y)).sum(dim=1)  # (N / splits,)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


# Improved precision and recall [17]: k-NN balls around each feature vector estimate the manifold.
def _pairwise_sq_dist(a, b):
    """|a_i - b_j|^2 in float32, (N, M). Clamped at 0: the expansion can round below it."""
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return d.clamp_min_(0)


def manifold_radii(features, k=3, batch_size=10000):
    """Squared distance of each point to its k-th nearest neighbour (itself counted as the 0-th, as ADM)."""
    radii = []
    for a in features.split(batch_size):
        d = torch.cat([_pairwise_sq_dist(a, b) for b in features.split(batch_size)], dim=1)  # (B, N)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)  # (N,)


def precision_recall(real_feats, fake_feats, k=3, batch_size=10000, device="cpu"):
    """Precision: share of fakes inside some real k-NN ball; recall: share of reals inside some fake
    k-NN ball. ADM's convention: pool3 features, k = 3, squared distances, `<=`."""
    real = torch.as_tensor(real_feats, dtype=torch.float32, device=device)
    fake = torch.as_tensor(fake_feats, dtype=torch.float32, device=device)
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} images per set, "
                         f"got {real.shape[0]} real and {fake.shape[0]} fake")
    r_real, r_fake = manifold_radii(real, k, batch_size), manifold_radii(fake, k, batch_size)
    fake_in = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)
    real_in = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
    for i in range(0, fake.shape[0], batch_size):  # one pass over the cross distances serves both
        for j in range(0, real.shape[0], batch_size):
            d = _pairwise_sq_dist(fake[i:i + batch_size], real[j:j + batch_size])  # (B_fake, B_real)
            fake_in[i:i + batch_size] |= (d <= r_real[None, j:j + batch_size]).any(dim=1)
            real_in[j:j + batch_size] |= (d <= r_fake[i:i + batch_size, None]).any(dim=0)
    return fake_in.float().mean().item(), real_in.float().mean().item()


#################################################################################
#          Inputs: image folders, ADM sample .npz (read and write), statistics    #
#################################################################################

class NpzArray:
    """One array of an .npz, not loaded into memory (ADM's 50K x 512^2 samples are 39 GB). np.load
    ignores mmap_mode for .npz, so: a stored (np.savez) member is np.memmap'ed at its offset in the
    zip; a compressed (np.savez_compressed) member cannot be mapped and is streamed (forward reads)."""

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
            raise ValueError(f"{path}: {key} is stored in Fortran order; write it with np.savez(path, x)")
        if self.info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as raw:  # the local header's name/extra lengths can differ from the directory's
                raw.seek(self.info.header_offset + 26)
                name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
            offset = self.info.header_offset + 30 + int(name_len) + int(extra_len) + self.data_start
            self.mmap = np.memmap(path, dtype=self.dtype, mode="r", offset=offset, shape=self.shape)

    def __len__(self):
        return self.shape[0]

    def read(self, start, stop):
        if self.mmap is not None:
            return np.array(self.mmap[start:stop])
        if self.stream is None:
            self.stream = zipfile.ZipFile(self.path).open(self.info)
        self.stream.seek(self.data_start + start * self.row_bytes)  # cheap forwards, re-inflates backwards
        buf = bytearray(self.stream.read((stop - start) * self.row_bytes))  # writable, for torch
        return np.frombuffer(buf, dtype=self.dtype).reshape(stop - start, *self.shape[1:])


class NpzImages:
    """This rank's contiguous shard of an ADM-format sample .npz as batches (N, 3, H, W) uint8."""

    def __init__(self, path, batch_size=50, rank=0, world=1):
        self.array = NpzArray(path)
        shape, dtype = self.array.shape, self.array.dtype
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3) images, got {dtype} {shape}")
        if shape[0] < 2:
            raise ValueError(f"{path}: arr_0 holds {shape[0]} images; need at least 2")
        self.start, self.stop = shape[0] * rank // world, shape[0] * (rank + 1) // world
        self.batch_size, self.skipped = batch_size, 0

    def __len__(self):
        return self.stop - self.start

    def __iter__(self):
        for i in range(self.start, self.stop, self.batch_size):
            x = self.array.read(i, min(i + self.batch_size, self.stop))  # (N, H, W, 3)
            yield torch.from_numpy(x).permute(0, 3, 1, 2)  # (N, 3, H, W)


def write_npz(path, chunks, shape):
    """Write ADM's sample format streamed: an uncompressed .npz with arr_0 uint8 `shape` = (N, H, W, 3) and arr_1 the
    labels, from `chunks`, an iterable of (images (n, H, W, 3) uint8, labels (n,)) - 50K x 512^2 x 3 is 39 GB, never
    held in memory. Stored, not deflated, so that NpzArray memory-maps arr_0. Atomic: a temp file and a rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    labels = []
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:  # size unknown to zipfile: say zip64 up front
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                     "fortran_order": False, "shape": tuple(shape)})
            n = 0
            for images, y in chunks:
                if images.dtype != np.uint8 or images.shape[1:] != tuple(shape[1:]):
                    raise ValueError(f"a chunk of {images.dtype} {images.shape} does not fit {shape}")
                f.write(np.ascontiguousarray(images).data)
                labels.append(y)
                n += len(images)
            if n != shape[0]:
                raise ValueError(f"the chunks hold {n} images, expected {shape[0]}")
        with zf.open("arr_1.npy", "w") as f:
            np.lib.format.write_array(f, np.concatenate(labels).astype(np.int64))
    os.replace(tmp, path)


def open_input(path, resolution=None, batch_size=50, num_workers=4):
    """Validate a SAMPLES/REF path before any compute -> ("stats", (mu, sigma)) or ("images", source)."""
    rank, world = dist_info()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    if os.path.isdir(path):
        files = list_images(path)
        if len(files) < 2:
            raise ValueError(f"{path}: found {len(files)} images ({', '.join(IMG_EXTENSIONS)}); need at least 2")
        return "images", FolderImages(files, resolution, batch_size, num_workers, rank, world)
    if not path.endswith(".npz"):
        raise ValueError(f"{path}: expected a folder of images or an .npz (arr_0 samples or mu/sigma statistics)")
    try:
        with zipfile.ZipFile(path) as zf:  # an .npz is a zip of .npy members
            keys = [name[:-4] for name in zf.namelist() if name.endswith(".npy")]
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz ({e})") from e
    if "mu" in keys and "sigma" in keys:
        mu, sigma = load_stats(path)
        if mu.shape[0] != DIMS:
            raise ValueError(f"{path}: statistics of {mu.shape[0]}-d features; the FID Inception gives {DIMS}-d")
        return "stats", (mu, sigma)
    if "arr_0" not in keys:
        raise ValueError(f"{path}: an .npz needs 'arr_0' (uint8 samples (N, H, W, 3)) or 'mu' and 'sigma'; "
                         f"found {keys}")
    return "images", NpzImages(path, batch_size, rank, world)


#################################################################################
#                       Feature extraction and the metrics                      #
#################################################################################

@torch.inference_mode()
def features_from_images(model, images, batch_size=50, device="cpu", stats=None, keep=True, progress=False):
    """Inception features of `images`: a tensor (N, 3, H, W) uint8 or float in [0, 1], a uint8 numpy
    array (N, H, W, 3) (the .npz layout), or an iterable of such tensor batches (FolderImages,
    NpzImages, a DataLoader). Updates `stats` with the pool features (no all-reduce: the caller's
    images are its own shard). Returns (pool (N, 2048), logits (N, 1008)) on CPU, or empty ones with
    keep=False (reference statistics of 1.28M images stream through `stats` only)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be (N, 3, H, W), got {tuple(images.shape)}")
        batches, total = images.split(batch_size), images.shape[0]
    elif isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        batches = (torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2)  # (N, 3, H, W)
                   for i in range(0, images.shape[0], batch_size))
        total = images.shape[0]
    else:
        batches, total = images, (len(images) if hasattr(images, "__len__") else None)
    device = torch.device(device)
    pools, logits = [], []
    # fp32 features whatever the caller set up: no bf16 autocast from a training loop, and no TF32
    # convolutions (cuDNN's default; 10-bit mantissas) so that GPU features match the fp32 reference.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False), \
                tqdm(total=total, unit="img", disable=not progress or dist_info()[0] != 0 or None) as bar:
            for x in batches:
                x = x.to(device, non_blocking=True)
                if x.is_floating_point() and (x.min() < -1e-4 or x.max() > 1 + 1e-4):
                    raise ValueError(f"float images must be in [0, 1], got [{x.min().item():.3g}, "
                                     f"{x.max().item():.3g}]; pass (x + 1) / 2 or uint8")
                pool, logit = model(x)  # (N, 2048), (N, 1008)
                if stats is not None:
                    stats.update(pool)
                if keep:
                    pools.append(pool.cpu())
                    logits.append(logit.cpu())
                bar.update(x.shape[0])
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if not keep or not pools:
        return torch.empty(0, DIMS), torch.empty(0, NUM_CLASSES)
    return torch.cat(pools), torch.cat(logits)


def all_gather_rows(x, device="cpu"):
    """Concatenate every rank's (N_r, D) tensor in rank order (shards may differ in length)."""
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


def statistics(source, model, batch_size=50, device="cpu", keep=True, progress=False):
    """-> (stats, pool, logits, skipped) summed over ranks; pool/logits gathered to every rank if keep."""
    stats = InceptionStats(device=device)
    pool, logits = features_from_images(model, source, batch_size, device, stats, keep, progress)
    stats.all_reduce()
    skipped = torch.tensor(float(getattr(source, "skipped", 0)), device=device)
    if dist_info()[1] > 1:
        dist.all_reduce(skipped)
    if skipped.item() > 0 and dist_info()[0] == 0:
        print(f"fid.py: skipped {int(skipped.item())} unreadable image files", file=sys.stderr)
    if keep:
        pool, logits = all_gather_rows(pool, device), all_gather_rows(logits, device)
    return stats, pool, logits, int(skipped.item())


def compute_metrics(samples, ref, model=None, weights=None, batch_size=50, device="cpu", resolution=None,
                    num_workers=4, save_ref_stats=None, pr=True, progress=True):
    """FID, IS (of the samples), precision and recall of `samples` against `ref`.

    samples: a path (folder or arr_0 .npz) or in-memory images (a tensor or array as
    features_from_images takes; under torchrun each rank passes its own shard). ref: the same, a
    statistics .npz, or a (mu, sigma) tuple. `resolution` (ADM center crop) applies to folders.
    Precision/recall need features of both sets: None when ref is statistics or pr=False."""
    inputs = []
    for x in (samples, ref):  # validate both before any compute
        if isinstance(x, str):
            inputs.append(open_input(x, resolution, batch_size, num_workers))
        elif isinstance(x, tuple):
            inputs.append(("stats", x))
        else:
            inputs.append(("images", x))
    if inputs[0][0] == "stats":
        raise ValueError(f"SAMPLES must be images (a folder or an arr_0 .npz), got statistics: {samples}")
    model = model if model is not None else load_inception(weights, device)
    stats1, pool1, logits1, skipped1 = statistics(inputs[0][1], model, batch_size, device, True, progress)
    mu1, sigma1 = stats1.mu_sigma()
    pr = pr and inputs[1][0] == "images"
    if inputs[1][0] == "stats":
        (mu2, sigma2), n_ref, skipped2 = inputs[1][1], None, 0
    else:
        stats2, pool2, _, skipped2 = statistics(inputs[1][1], model, batch_size, device, pr, progress)
        (mu2, sigma2), n_ref = stats2.mu_sigma(), int(stats2.n.item())
        if save_ref_stats and dist_info()[0] == 0:
            save_stats(save_ref_stats, mu2, sigma2)
    is_mean, is_std = inception_score(logits1) if logits1.shape[0] >= 10 else (float("nan"), float("nan"))
    precision, recall = precision_recall(pool2, pool1, device=device) if pr else (None, None)
    return {"fid": frechet_distance(mu1, sigma1, mu2, sigma2), "is_mean": is_mean, "is_std": is_std,
            "precision": precision, "recall": recall, "n_samples": pool1.shape[0], "n_ref": n_ref,
            "skipped_samples": skipped1, "skipped_ref": skipped2}


#################################################################################
#                                      CLI                                      #
#################################################################################

def check_args(args):
    """Bad arguments and inputs, before the Inception is loaded: -> [(kind, source)] per path (ValueError if bad)."""
    if not 1 <= len(args.paths) <= 2 or (len(args.paths) == 1 and not args.save_stats):
        raise ValueError(f"expected SAMPLES REF, or IMAGES --save-stats OUT.npz; got {len(args.paths)} path(s)")
    if args.batch_size < 1 or args.num_workers < 0 or (args.resolution is not None and args.resolution < 1):
        raise ValueError(f"--batch-size {args.batch_size} and --resolution {args.resolution} must be positive, "
                         f"--num-workers {args.num_workers} >= 0")
    inputs = [open_input(p, args.resolution, args.batch_size, args.num_workers) for p in args.paths]
    if inputs[0][0] == "stats":
        raise ValueError(f"{args.paths[0]} holds statistics: " + ("SAMPLES must be images" if len(inputs) == 2 else
                                                                   "nothing to compute"))
    return inputs


def main(args):
    rank, _, device = fsdp.setup()
    error, inputs = None, None
    try:
        inputs = check_args(args)
    except (ValueError, FileNotFoundError) as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    try:
        model = load_inception(args.inception_weights, device)
    except (ValueError, FileNotFoundError) as e:
        fsdp.fail(str(e), rank)
    if len(inputs) == 1:  # reference statistics only
        stats, _, _, _ = statistics(inputs[0][1], model, args.batch_size, device, keep=False, progress=True)
        mu, sigma = stats.mu_sigma()
        if rank == 0:
            save_stats(args.save_stats, mu, sigma)
            print(f"wrote statistics of {args.paths[0]} to {args.save_stats}")
    else:
        m = compute_metrics(inputs[0][1], inputs[1][1], model=model, batch_size=args.batch_size, device=device,
                            save_ref_stats=args.save_stats, pr=not args.no_pr)  # the sources opened above
        if rank == 0:
            if args.inception_weights == "random":
                print("RANDOM Inception weights: these numbers are meaningless")
            print(f"samples: {m['n_samples']} images ({m['skipped_samples']} skipped); "
                  f"ref: {m['n_ref'] if m['n_ref'] is not None else 'statistics file'} "
                  f"({m['skipped_ref']} skipped)")
            print(f"FID: {m['fid']:.4f}")
            print(f"Inception Score: {m['is_mean']:.4f} +- {m['is_std']:.4f} (10 splits)")
            if m["precision"] is None:
                print("Precision/Recall: skipped (they need features of both sets: REF is a statistics file, "
                      "or --no-pr)")
            else:
                print(f"Precision: {m['precision']:.4f}\nRecall: {m['recall']:.4f}")
            if args.save_stats and m["n_ref"] is not None:
                print(f"wrote statistics of {args.paths[1]} to {args.save_stats}")
    fsdp.cleanup()


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__,
                                  usage="fid.py SAMPLES REF [options] | fid.py IMAGES --save-stats OUT.npz")
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="SAMPLES REF: an image folder, an arr_0 .npz or (REF only) a mu/sigma .npz; or one IMAGES path "
                        "with --save-stats")
    parser.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth (default: the torch "
                        "hub cache, downloaded when online); 'random' for smoke tests")
    parser.add_argument("--save-stats", default=None, help="write the statistics of REF (or of the one path) to this .npz (default: "
                        "none written)")
    parser.add_argument("--resolution", type=int, default=None, help="ADM center crop of image folders (default: none)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass, per rank")
    parser.add_argument("--num-workers", type=int, default=4, help="DataLoader workers reading image folders")
    parser.add_argument("--no-pr", action="store_true", help="skip precision/recall (keeps no features of REF)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
