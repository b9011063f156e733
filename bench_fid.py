"""Benchmark of fid.py against pytorch-fid (feature extraction) and the sqrtm formula (FID).

Both Inceptions get the same random weights (the released ones cannot be downloaded everywhere), so
the run also checks that the two networks give the same features. pytorch-fid is optional and never
a dependency of this project: install it into a scratch environment to compare, e.g.
    python -m venv /tmp/scratchfid && /tmp/scratchfid/bin/pip install torch torchvision pytorch-fid tqdm
    /tmp/scratchfid/bin/python bench_fid.py --num-images 100 --batch-size 50
Without pytorch-fid only fid.py's timings and the FID comparison run.
"""
import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image

import fid

try:
    import pytorch_fid.fid_score
    import pytorch_fid.inception
except ImportError:
    pytorch_fid = None


def make_images(folder, n, size, seed=0):
    """Smooth random RGB images (upsampled noise) saved as PNG."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, 8, 8)).astype(np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 255)  # (N, 3, H, W)
    for i, a in enumerate(x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):  # (N, H, W, 3)
        Image.fromarray(a).save(os.path.join(folder, f"{i:05d}.png"))
    return fid.list_images(folder)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_of(fn, repeats):
    """Minimum wall time of `repeats` calls (the one least disturbed by other load), and the result."""
    runs = [timed(fn) for _ in range(repeats)]
    return min(r[0] for r in runs), runs[-1][1]


def bench_features(args):
    """fid.py's and pytorch-fid's feature extraction on the same PNG folder, same random weights."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = fid.load_inception("random").state_dict()
    ours = fid.load_inception(state)
    with tempfile.TemporaryDirectory() as folder:
        files = make_images(folder, args.num_images, args.image_size)

        def run_ours():
            source = fid.FolderImages(files, batch_size=args.batch_size, num_workers=args.num_workers)
            return fid.features_from_images(ours, source, args.batch_size)[0].numpy()

        def run_theirs():
            return pytorch_fid.fid_score.get_activations(files, theirs, args.batch_size, 2048, "cpu",
                                                         args.num_workers)

        run_ours()  # warm-up: oneDNN builds its kernels for each new shape
        if pytorch_fid is not None:
            pytorch_fid.inception.load_state_dict_from_url = lambda *a, **k: state  # same weights, offline
            theirs = pytorch_fid.inception.InceptionV3([3], use_fid_inception=True).eval()
            run_theirs()
        t_ours, t_theirs, f_ours, f_theirs = [], [], None, None
        for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
            t, f_ours = timed(run_ours)
            t_ours.append(t)
            if pytorch_fid is not None:
                t, f_theirs = timed(run_theirs)
                t_theirs.append(t)
        print(f"features  fid.py:      {min(t_ours):7.2f} s  ({min(t_ours) / args.num_images * 1e3:.0f} ms/image)")
        if pytorch_fid is None:
            print("features  pytorch-fid: not installed (see the docstring), skipped")
        else:
            print(f"features  pytorch-fid: {min(t_theirs):7.2f} s  -> fid.py is {min(t_theirs) / min(t_ours):.2f}x "
                  f"as fast; max |feature difference| {np.abs(f_ours - f_theirs).max():.2e}")


def bench_fid(args):
    """FID at D = 2048 from two Gaussians' statistics: eigenvalues (fid.py) against sqrtm."""
    rng = np.random.default_rng(0)
    stats = []
    for shift in (0.0, 0.5):
        a = rng.standard_normal((args.fid_samples, 2048)) @ rng.standard_normal((2048, 2048)) / 45 + shift
        stats += [a.mean(0), np.cov(a, rowvar=False)]
    t_eig, f_eig = best_of(lambda: fid.frechet_distance(*stats), args.repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_sqrtm, f_sqrtm = best_of(lambda: fid.frechet_distance_sqrtm(*stats), args.repeats)
    print(f"FID d=2048 eigenvalues: {t_eig:6.2f} s, sqrtm: {t_sqrtm:6.2f} s -> {t_sqrtm / t_eig:.1f}x faster; "
          f"FID {f_eig:.6f} vs {f_sqrtm:.6f} (relative difference {abs(f_eig - f_sqrtm) / f_sqrtm:.1e})")


def main(args):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch size {args.batch_size}, "
          f"{args.num_images} images of {args.image_size}^2, {args.num_workers} workers, best of {args.repeats}")
    if not args.skip_features:
        bench_features(args)
    bench_fid(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fid-samples", type=int, default=5000, help="features per Gaussian for the FID timing")
    parser.add_argument("--skip-features", action="store_true", help="only the FID timing")
    main(parser.parse_args())
