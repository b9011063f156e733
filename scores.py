"""The numbers of the ADM evaluator, from Inception features (Sec. 4.1, App. B): the running
statistics (mu, Sigma), the Frechet distance (FID on pool_3, sFID on the spatial features), the
Inception Score with ADM's splits and with torch-fidelity's (DC-Gen's), and improved precision and
recall (ADM's ManifoldEstimator). Pure functions of feature arrays; fid.py extracts the features,
gathers them over ranks and reports.

    python -c "import numpy as np, scores; print(scores.inception_score(np.eye(10) * 50))"  # 10
"""
import contextlib
import warnings

import numpy as np
import scipy.linalg
import scipy.linalg.lapack
import torch
import torch.distributed as dist

from inception import DIMS

IS_SPLIT_SIZE = 5000  # ADM's compute_inception_score(split_size=5000)
PR_BATCH = 10_000  # ADM's ManifoldEstimator: row_batch_size = col_batch_size = 10,000


@contextlib.contextmanager
def fp32(device):
    """fp32 whatever the caller set up: no bf16 autocast from a training loop, no TF32 convolutions
    or matmuls (cuDNN's default, sample.py's setting; 10-bit mantissas), so that GPU features and
    distances match the fp32 reference."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(torch.device(device).type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


class InceptionStats:
    """Running sums of features in float64: sum x, sum x x^T and N. Streams (no feature matrix
    kept) and all-reduces across ranks; mu and Sigma at the end equal np.mean / np.cov of all
    features."""

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
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.s, self.S, self.n):
                dist.all_reduce(t)

    def reduced(self):
        """A copy summed over ranks; this rank's sums stay its own (metrics() may run again)."""
        out = InceptionStats(self.s.shape[0], self.s.device)
        for mine, copy in zip((self.s, self.S, self.n), (out.s, out.S, out.n)):
            copy.copy_(mine)
        out.all_reduce()
        return out

    def mu_sigma(self):
        """(mu (D,), Sigma (D, D)) as float64 numpy; Sigma unbiased (N - 1), as np.cov."""
        n, d = int(self.n.item()), self.s.shape[0]
        if n < 2:
            raise ValueError(f"statistics need at least 2 images, got {n}")
        if n < d:
            warnings.warn(f"only {n} images for {d}-d features: Sigma is singular, FID is biased "
                          f"upwards (50,000 is the standard)")
        mu = self.s / n
        sigma = (self.S - n * torch.outer(mu, mu)) / (n - 1)
        return mu.cpu().numpy(), sigma.cpu().numpy()


# Frechet Inception Distance [23]: FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
def frechet_distance(mu1, sigma1, mu2, sigma2):
    """FID from eigenvalues, float64. With any factor S1 = A A^T, S1 S2 = A (A^T S2) has the
    nonzero eigenvalues of A^T S2 A, which is symmetric PSD: tr (S1 S2)^(1/2) is the sum of the
    square roots of its eigenvalues. A comes from a pivoted Cholesky factorization, which also
    finds the rank r of S1 (r = N - 1 < D with few images): A is (D, r) and the eigenproblem only
    r x r. Replaces scipy's sqrtm, which ADM calls (deprecated `disp`, complex round-off, ~10x
    slower)."""
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


# Inception Score [26]: exp E_x KL(p(y|x) || p(y)) per split, then the mean and std over splits.
def split_scores(parts):
    """(mean, std) over the splits `parts` (logits (n, K) each) of
    exp(mean_x KL(p(y|x) || p(y)))."""
    scores = []
    for part in parts:
        log_p = torch.log_softmax(part.double(), dim=1)  # (n, K)
        p = log_p.exp()
        p_y = p.mean(dim=0, keepdim=True)  # (1, K): the split's marginal
        # xlogy: 0 log 0 = 0 for classes no image of the split predicts (ADM's np.log gives NaN).
        kl = (p * log_p - torch.xlogy(p, p_y)).sum(dim=1)  # (n,)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits, split_size=IS_SPLIT_SIZE):
    """ADM's IS: logits (N, K) in sample order -> (mean, std) over contiguous splits of
    `split_size` (50,000 samples: 10 splits; the last one partial when N is not a multiple)."""
    logits = torch.as_tensor(logits)
    if logits.shape[0] == 0:
        raise ValueError("inception_score needs at least one image for its splits")
    return split_scores(logits.split(split_size))


def inception_score_torch_fidelity(logits, splits=10, seed=2020):
    """DC-Gen's IS (torch-fidelity's isc_features_to_metric): the samples shuffled by
    np.random.RandomState(seed).permutation, then `splits` splits [i N / splits,
    (i + 1) N / splits)."""
    logits = torch.as_tensor(logits)
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"inception_score needs at least splits={splits} images, got {n}")
    logits = logits[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    return split_scores([logits[i * n // splits:(i + 1) * n // splits] for i in range(splits)])


# Improved precision and recall [17]: k-NN balls around each feature vector estimate the manifold.
def pairwise_sq_dist(a, b):
    """|a_i - b_j|^2, (N, M), as ADM's DistanceBlock: the expansion, clamped at 0 (it can round
    below), in the inputs' precision (here fp32; ADM: fp16 first)."""
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return d.clamp_min_(0)


def manifold_radii(features, k=3, batch_size=PR_BATCH):
    """Squared distance of each point to its k-th nearest neighbour, itself counted as the 0-th
    (ADM     takes column k of np.partition), in row batches against all columns."""
    radii = []
    for a in features.split(batch_size):
        d = torch.cat([pairwise_sq_dist(a, b) for b in features.split(batch_size)], 1)  # (B, N)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)  # (N,)


def precision_recall(real_feats, fake_feats, k=3, batch_size=PR_BATCH, device="cpu"):
    """ADM's compute_prec_recall(ref, samples): precision = the share of samples inside some
    reference k-NN ball, recall = the share of reference images inside some sample k-NN ball;
    squared distances, `<=`, fp32 (no TF32)."""
    with fp32(device):
        real = torch.as_tensor(real_feats, dtype=torch.float32, device=device)
        fake = torch.as_tensor(fake_feats, dtype=torch.float32, device=device)
        if real.shape[0] <= k or fake.shape[0] <= k:
            raise ValueError(f"precision/recall with k={k} need more than {k} images per set, "
                             f"got {real.shape[0]} real and {fake.shape[0]} fake")
        r_real, r_fake = manifold_radii(real, k, batch_size), manifold_radii(fake, k, batch_size)
        fake_in = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)
        real_in = torch.zeros(real.shape[0], dtype=torch.bool, device=device)
        for i in range(0, fake.shape[0], batch_size):  # one pass over the cross distances: both
            for j in range(0, real.shape[0], batch_size):
                d = pairwise_sq_dist(fake[i:i + batch_size], real[j:j + batch_size])  # (B_f, B_r)
                fake_in[i:i + batch_size] |= (d <= r_real[None, j:j + batch_size]).any(dim=1)
                real_in[j:j + batch_size] |= (d <= r_fake[i:i + batch_size, None]).any(dim=0)
    return fake_in.double().mean().item(), real_in.double().mean().item()  # as ADM: float64
