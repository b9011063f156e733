"""Tests of fid.py as the ADM evaluator (guided-diffusion evaluations/evaluator.py): the same
network everywhere, sFID's layer and layout, both IS protocols (torch-fidelity's against
torch-fidelity when installed), sFID / precision / recall against a numpy transcription of ADM's
code, reference batches (read whole, written by --save-stats), the streaming API at any batch size,
chunk order and on 2 ranks, output paths checked before compute, and Ctrl-C / SIGTERM.

Most tests run fid.py's pipeline on tests/fid_helper.py's TinyInception (the FID Inception's
interface, ~1000x cheaper), so that they can use enough images for non-trivial numbers; the tests
of the network itself use the real one with random weights."""
import glob
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import batches  # noqa: E402
import fid  # noqa: E402
import inception  # noqa: E402
from fid_helper import TinyInception, chunks_of, smooth_images  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def real_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return inception.load_inception("random")


@pytest.fixture
def tiny(monkeypatch):
    """fid.py's CLI on TinyInception: --inception-weights random builds it."""
    model = TinyInception()
    monkeypatch.setattr(fid, "load_inception", lambda weights=None, device="cpu": model)
    return model


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """samples.npz (60 images) and ref.npz (50 images) from one distribution, and collapsed.npz:
    30 samples near 3 of the reference images (a collapsed model: precision high, recall low)."""
    root = tmp_path_factory.mktemp("sets")
    samples, ref = smooth_images(60, 24, seed=1), smooth_images(50, 24, seed=2)
    noise = np.random.default_rng(3).integers(-4, 5, (30, 24, 24, 3))
    collapsed = np.clip(ref[np.arange(30) % 3].astype(int) + noise, 0, 255).astype(np.uint8)
    for name, arr in (("samples", samples), ("ref", ref), ("collapsed", collapsed)):
        np.savez(root / f"{name}.npz", arr)
    return root, samples, ref, collapsed


def run_main(argv, capsys):
    """fid.py in this process -> (stdout lines, stderr lines, exit status)."""
    code = 0
    try:
        fid.main(fid.parse_args([str(a) for a in argv] + ["--num-workers", "0"]))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return out.strip().splitlines(), err.strip().splitlines(), code


def printed(lines, name):
    """The value of ADM's line `name: value` (None when it says skipped)."""
    [line] = [line for line in lines if line.startswith(name + ": ")]
    value = line[len(name) + 2:]
    return None if value.startswith("skipped") else float(value)


# ----------------------------------------------------------------------------- the network

def test_random_inception_is_one_network_in_every_process_and_leaves_the_rng_alone():
    """The reported bug: --save-stats and a later comparison in another process used two networks
    (FID of a batch against its own statistics 1548); under torchrun each rank had its own."""
    def digest():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = inception.load_inception("random").state_dict()
        return hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    code = ("import sys, hashlib, warnings; sys.path.insert(0, sys.argv[1]); import inception; "
            "warnings.simplefilter('ignore'); "
            "s = inception.load_inception('random').state_dict(); "
            "print(hashlib.sha256(b''.join(v.numpy().tobytes() for v in s.values())).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 0, other.stderr[-2000:]
    torch.manual_seed(123)  # another process state than the subprocess's
    assert other.stdout.strip() == digest()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    digest()
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG did not move


def test_spatial_features_are_mixed_6d_branch1x1_first_7_channels_in_tf_order(real_model):
    """sFID reads ADM's mixed_6/conv:0[..., :7] = Mixed_6d.branch1x1's first 7 channels, flattened
    as TF's NHWC (N, 17, 17, 7), so that ADM's mu_s / sigma_s apply."""
    seen = {}
    hook = real_model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: seen.update(o=o))
    try:
        x = torch.from_numpy(smooth_images(2, 40, seed=4)).permute(0, 3, 1, 2)
        features = fid.Features(real_model, batch_size=2)
        features.update(x, index=[0, 1])
    finally:
        hook.remove()
    branch = seen["o"]  # (2, 192, 17, 17)
    assert branch.shape == (2, 192, 17, 17)
    nhwc = branch[:, :7].permute(0, 2, 3, 1).reshape(2, -1).double()  # (2, 2023), TF's order
    torch.testing.assert_close(features.spatial_stats.s, nhwc.sum(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(features.spatial_stats.S, nhwc.T @ nhwc, rtol=1e-6, atol=1e-6)
    _, _, spatial = real_model(x)
    assert torch.equal(spatial, branch[:, :7])


def test_tf1_input_pipeline_and_is_match_torch_fidelity(real_model, tmp_path):
    """DC-Gen's IS: torch-fidelity's inception-v3-compat on the same random-weight network
    (optional: torch-fidelity is not a dependency)."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3",
                             reason="torch-fidelity not installed (optional parity check)")
    from torch_fidelity.interpolate_compat_tensorflow import \
        interpolate_bilinear_2d_like_tensorflow1x
    from torch_fidelity.metric_isc import isc_features_to_metric
    for shape in ((2, 3, 32, 32), (1, 3, 512, 384), (1, 3, 299, 299), (1, 3, 600, 200)):
        x = torch.randint(0, 256, shape).float()
        expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299),
                                                             align_corners=False)
        assert torch.equal(inception.resize_tf1(x, 299), expected), shape  # bit-exact on CPU
    torch.save(real_model.state_dict(), tmp_path / "w.pth")
    theirs = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"],
                                            feature_extractor_weights_path=str(tmp_path / "w.pth"))
    images = torch.from_numpy(smooth_images(3, 40, seed=5)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        expected = theirs(images)[0]
        _, logits, _ = real_model(images, pipeline="torch-fidelity")
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    _, other, _ = real_model(images)  # pytorch-fid's pipeline: other logits
    assert (other - expected).abs().max() > 1e-3
    logits = torch.randn(53, 1008, dtype=torch.float64) * 2
    ref = isc_features_to_metric(logits)
    mean, std = fid.inception_score_torch_fidelity(logits)
    assert abs(mean - ref["inception_score_mean"]) < 1e-12 * mean
    assert abs(std - ref["inception_score_std"]) < 1e-9 * mean


# ----------------------------------------------------------------------------- IS protocols

def test_torch_fidelity_is_is_ten_splits_after_a_seeded_shuffle():
    """DC-Gen's IS written from torch-fidelity's isc_features_to_metric: permutation by
    np.random.RandomState(2020), split i = rows [i N / 10, (i + 1) N / 10), float64."""
    logits = np.random.default_rng(6).standard_normal((53, 30)) * 3
    x = logits[np.random.RandomState(2020).permutation(53)]
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(10):
        part = p[i * 53 // 10:(i + 1) * 53 // 10]
        scores.append(np.exp((part * (np.log(part) - np.log(part.mean(0)))).sum(1).mean()))
    mean, std = fid.inception_score_torch_fidelity(torch.from_numpy(logits))
    assert abs(mean - np.mean(scores)) < 1e-9 * mean and abs(std - np.std(scores)) < 1e-9 * mean
    adm_mean, _ = fid.inception_score(torch.from_numpy(logits), split_size=6)
    assert abs(adm_mean - mean) > 1e-3  # the two protocols differ on the same logits


# ----------------------------------------------------------------------------- against ADM's code

def adm_frechet(a, b):
    """ADM's FIDStatistics.frechet_distance of features a (N1, D), b (N2, D): mu = mean,
    sigma = np.cov, |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrtm(S1 S2). With S1 = A^T A,
    S2 = B^T B (A, B the centred features over sqrt(N - 1)), S1 S2 has the nonzero eigenvalues of
    (A B^T)(A B^T)^T: tr sqrtm(S1 S2) = the nuclear norm of A B^T (scipy's sqrtm takes a minute at
    D = 2023)."""
    A = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    B = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    diff = a.mean(0) - b.mean(0)
    nuclear = np.linalg.svd(A @ B.T, compute_uv=False).sum()
    return diff @ diff + (A * A).sum() + (B * B).sum() - 2 * nuclear


def adm_precision_recall(ref, samples, k=3):
    """ADM's ManifoldEstimator.evaluate_pr(ref, radii(ref), samples, radii(samples)): the radius
    is the k-th column of np.partition of the squared distances (itself the 0-th), a point is in a
    manifold when its squared distance to some centre is <= that centre's radius;
    -> (precision, recall)."""
    def sq_dist(u, v):
        return ((u[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    r_ref = np.partition(sq_dist(ref, ref), k, axis=1)[:, k]
    r_samples = np.partition(sq_dist(samples, samples), k, axis=1)[:, k]
    d = sq_dist(ref, samples)  # (N_ref, N_samples)
    return (d <= r_ref[:, None]).any(0).mean(), (d <= r_samples[None, :]).any(1).mean()


def test_a_point_on_a_radius_is_inside_the_manifold():
    """ADM's `distance <= radius`: on a line, the reference points 0, 1, 2, 3, 10 give 10 the
    squared radius 81 (its 3rd neighbour, 1); a sample at 19 lies exactly on it: inside."""
    real = np.zeros((5, 8), np.float32)
    real[:, 0] = [0, 1, 2, 3, 10]
    fake = np.zeros((4, 8), np.float32)
    fake[:, 0] = [19, 40, 41, 42]
    precision, recall = fid.precision_recall(real, fake)
    assert precision == 0.25 and recall == 1.0  # with `<`, precision would be 0


def tiny_features(model, images):
    """The test's own features of uint8 (N, H, W, 3): pool (N, 2048), spatial in TF's (H, W, C)
    order (N, 2023), ADM's IS probabilities (N, 1008), float64 numpy."""
    with torch.no_grad():
        pool, logits, spatial = model(torch.from_numpy(images).permute(0, 3, 1, 2))
    p = torch.softmax(logits.double(), 1).numpy()
    spatial = spatial.permute(0, 2, 3, 1).reshape(len(images), -1)  # (N, 17 * 17 * 7)
    return pool.double().numpy(), spatial.double().numpy(), p


def test_sfid_fid_is_precision_recall_equal_a_numpy_transcription_of_adm(sets):
    root, samples, ref, collapsed = sets
    model = TinyInception()
    rng = np.random.default_rng(7)  # the nuclear-norm identity against the textbook sqrtm first
    a, b = rng.standard_normal((90, 40)), rng.standard_normal((70, 40)) + 0.3  # full rank
    import scipy.linalg
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    textbook = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(
        scipy.linalg.sqrtm(s_a @ s_b).real)
    assert abs(adm_frechet(a, b) - textbook) < 1e-8 * textbook
    for name, images in (("samples", samples), ("collapsed", collapsed)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # singular Sigma: few images
            m = fid.compute_metrics(str(root / f"{name}.npz"), str(root / "ref.npz"), model=model,
                                    batch_size=7, num_workers=0, progress=False)
        pool, spatial, p = tiny_features(model, images)
        pool_r, spatial_r, _ = tiny_features(model, ref)
        assert abs(m["fid"] - adm_frechet(pool, pool_r)) < 1e-6 * m["fid"]
        assert abs(m["sfid"] - adm_frechet(spatial, spatial_r)) < 1e-6 * m["sfid"]
        precision, recall = adm_precision_recall(pool_r, pool)
        assert (m["precision"], m["recall"]) == (precision, recall), name
        kl = p * (np.log(p) - np.log(p.mean(0, keepdims=True)))  # ADM: one split below 5,000
        assert abs(m["is_mean"] - np.exp(kl.sum(1).mean())) < 1e-6 and m["is_std"] == 0
    # The collapsed samples sit near 3 reference images: all inside the reference manifold, and
    # only those 3 of the 50 reference images inside theirs. Swapped, the two would read 0.06, 1.0.
    assert m["precision"] == 1.0 and m["recall"] == 3 / 50
    assert m["sfid"] > 0 and m["fid"] > 0 and m["is_mean"] > 1.05
    # A reference batch as ADM writes it: its statistics from numpy, spatial in TF's (H, W, C)
    # order. fid.py uses them (FID is blind to a reordering of both sets' coordinates, not of one).
    stats = {"mu": pool_r.mean(0), "sigma": np.cov(pool_r, rowvar=False),
             "mu_s": spatial_r.mean(0), "sigma_s": np.cov(spatial_r, rowvar=False)}
    np.savez(root / "adm_ref.npz", arr_0=ref, **stats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = fid.compute_metrics(str(root / "samples.npz"), str(root / "adm_ref.npz"), model=model,
                                num_workers=0, progress=False)
    pool, spatial, _ = tiny_features(model, samples)
    assert abs(m["sfid"] - adm_frechet(spatial, spatial_r)) < 1e-6 * m["sfid"]
    assert abs(m["fid"] - adm_frechet(pool, pool_r)) < 1e-6 * m["fid"]


def test_cli_prints_adms_names_and_precision_is_samples_in_the_reference_manifold(sets, tiny,
                                                                                  capsys):
    """Issue 28's blind spot: precision and recall swapped. fid.py prints ADM's lines: the
    collapsed samples have precision 1 (each lies near a reference image), recall 3/50."""
    root, _, ref, collapsed = sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, err, code = run_main([root / "collapsed.npz", root / "ref.npz"], capsys)
    assert code == 0, err
    assert out[0].startswith("protocol: the ADM evaluator") and "TF1-style" in out[0]
    assert printed(out, "Precision") == 1.0 and printed(out, "Recall") == 3 / 50
    pool, spatial, _ = tiny_features(tiny, collapsed)
    pool_r, spatial_r, _ = tiny_features(tiny, ref)
    assert abs(printed(out, "FID") - adm_frechet(pool, pool_r)) < 1e-6 * printed(out, "FID")
    sfid = printed(out, "sFID")
    assert abs(sfid - adm_frechet(spatial, spatial_r)) < 1e-6 * sfid
    assert [line.split(": ")[0] for line in out[-6:]] == [
        "Inception Score", "Inception Score std", "FID", "sFID", "Precision", "Recall"]


# ----------------------------------------------------------------------------- the streaming API

def test_streamed_chunks_equal_the_npz_at_any_batch_size_and_order(sets, monkeypatch):
    """sample.py's evaluation feeds chunks of global indices (chunk k on rank k % world, in any
    order across ranks): every number equals the .npz read in index order, for both IS protocols
    (their splits depend on the sample order; ADM's splits of 5,000 made 7 here: 9 of them)."""
    root, samples, _, _ = sets
    model = TinyInception()
    monkeypatch.setattr(fid, "IS_SPLIT_SIZE", 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fid.load_reference(str(root / "ref.npz"), model, batch_size=4, num_workers=0)
        for protocol in fid.IS_PROTOCOLS:
            expected = fid.compute_metrics(str(root / "samples.npz"), str(root / "ref.npz"),
                                           model=model, batch_size=50, num_workers=0,
                                           progress=False, is_protocol=protocol)
            chunks = chunks_of(len(samples), 8)
            features = fid.Features(model, batch_size=3, is_protocol=protocol)
            for index in [chunks[k] for k in np.random.default_rng(8).permutation(len(chunks))]:
                features.update(torch.from_numpy(samples[index]).permute(0, 3, 1, 2), index)
            for _ in range(2):  # the reference and the features are reused as they are
                m = fid.metrics(features, ref)
                for key in ("fid", "sfid", "is_mean", "is_std"):
                    assert abs(m[key] - expected[key]) <= 1e-6 * abs(expected[key]), key
                assert (m["precision"], m["recall"], m["n_samples"]) == (
                    expected["precision"], expected["recall"], 60)
            assert m["is_std"] > 0
            shuffled = fid.Features(model, batch_size=60, is_protocol=protocol)
            order = np.random.default_rng(9).permutation(60)
            shuffled.update(torch.from_numpy(samples[order]).permute(0, 3, 1, 2))  # arrival order
            assert abs(fid.metrics(shuffled, ref)["is_mean"] - m["is_mean"]) > 1e-4  # it matters
    features = fid.Features(model, batch_size=4)
    x = torch.from_numpy(samples[:4]).permute(0, 3, 1, 2)
    features.update(x, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="indices, or none"):
        features.update(x)
    features.update(x, [3, 4, 5, 6])
    with pytest.raises(ValueError, match="sample index 3 was fed twice"):
        features.gathered()


def test_metrics_under_torchrun_equal_one_process(sets, tmp_path):
    """2 gloo ranks: chunk k on rank k % 2 with its global indices (uneven shares), one reference
    for two evaluations, metrics() twice each: the features gathered in index order and every
    number as in one process."""
    root, samples, _, _ = sets
    for name in ("samples", "ref"):
        os.symlink(root / f"{name}.npz", tmp_path / f"{name}.npz")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", os.path.join(REPO, "tests", "fid_helper.py"),
                          str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
                              "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "ranks.json") as fh:
        ranks = json.load(fh)
    assert ranks["world"] == 2
    model = TinyInception()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for protocol in fid.IS_PROTOCOLS:
            expected = fid.compute_metrics(str(root / "samples.npz"), str(root / "ref.npz"),
                                           model=model, num_workers=0, progress=False,
                                           is_protocol=protocol)
            gathered = ranks[protocol + " gathered"]
            assert gathered["index"] == list(range(60))
            pool = model(torch.from_numpy(samples).permute(0, 3, 1, 2))[0]
            np.testing.assert_allclose(gathered["pool_sum"], pool.sum(1).numpy(), rtol=1e-5)
            results = [ranks[protocol], ranks[protocol + " again"]]
            if protocol == "torch-fidelity":
                results += [ranks["compute_metrics"], ranks["in memory"]]
            for m in results:
                for key in ("fid", "sfid", "is_mean", "is_std"):
                    assert abs(m[key] - expected[key]) <= 1e-6 * abs(expected[key]), key
                for key in ("precision", "recall", "n_samples", "n_ref"):
                    assert m[key] == expected[key], (protocol, key)


# ----------------------------------------------------------------------------- reference batches

def adm_read(path):
    """A reference batch as ADM's evaluator reads it: np.load for mu, sigma, mu_s, sigma_s, and
    arr_0 through its streaming reader (the .npy header of the zip member, then the raw rows)."""
    import zipfile
    with np.load(path) as f:
        stats = {k: f[k] for k in ("mu", "sigma", "mu_s", "sigma_s")}
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as arr_f:
        assert np.lib.format.read_magic(arr_f) == (1, 0)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(arr_f)
        images = np.frombuffer(arr_f.read(), dtype=dtype).reshape(shape)
    return stats, images


def test_save_stats_writes_an_adm_reference_batch_that_gives_the_same_metrics(sets, tiny, tmp_path,
                                                                             capsys):
    """--save-stats REF: mu, sigma, mu_s, sigma_s and arr_0 (the images, <= 10,000 here), into a
    folder it creates, '.npz' appended as numpy would and the written path printed; read back as
    REF it gives the numbers REF gives (statistics from the file, precision/recall from arr_0)."""
    root, _, ref, _ = sets
    folder = tmp_path / "ref_png"
    os.makedirs(folder / "sub")
    for i, a in enumerate(ref):  # a folder of 50 PNGs; sorted, the ones in sub/ come last
        Image.fromarray(a).save(folder / ("sub" if i < 25 else "") / f"{i:03d}.png")
    out = tmp_path / "new" / "refstats"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lines, err, code = run_main([root / "samples.npz", folder, "--save-stats", out], capsys)
        again, err2, code2 = run_main([root / "samples.npz", f"{out}.npz"], capsys)
    assert code == 0 and code2 == 0, err + err2
    assert f"to {out}.npz" in [line for line in lines if line.startswith("wrote")][0]
    assert not os.path.exists(out)  # the name written is the name printed
    stats, images = adm_read(f"{out}.npz")
    assert np.array_equal(images, np.concatenate([ref[25:], ref[:25]]))  # the folder's order
    assert stats["mu"].shape == (2048,) and stats["sigma_s"].shape == (2023, 2023)
    for name in ("Inception Score", "FID", "sFID", "Precision", "Recall"):
        assert abs(printed(again, name) - printed(lines, name)) <= 1e-9 * abs(printed(lines, name))
    assert "statistics (mu, sigma, mu_s, sigma_s) from the file" in [
        line for line in again if line.startswith("reference:")][0]
    with warnings.catch_warnings():  # --no-pr: the statistics, not 10,000 images (7.9 GB at 512)
        warnings.simplefilter("ignore")
        lines, err, code = run_main([folder, "--save-stats", tmp_path / "s.npz", "--no-pr"],
                                    capsys)
    assert code == 0 and "arr_0 left out: not asked for (--no-pr)" in lines[-1], err
    with np.load(tmp_path / "s.npz") as f:
        assert sorted(f.files) == ["mu", "mu_s", "sigma", "sigma_s"]
        np.testing.assert_array_equal(f["sigma_s"], stats["sigma_s"])


def test_a_large_source_keeps_a_fixed_spread_subset_as_its_reference_batch(sets, tmp_path):
    """More images than the reference size: statistics from all, the reference batch (precision
    / recall, arr_0) a fixed-seed subset spread over the whole source; written and read back, the
    same numbers."""
    root, samples, ref, _ = sets
    model = TinyInception()
    subset = batches.reference_subset(50, 12)
    assert np.array_equal(subset, batches.reference_subset(50, 12)) and len(set(subset)) == 12
    assert np.all(np.diff(subset) > 0) and subset[-1] >= 25 and subset[0] < 25  # spread, in order
    assert np.array_equal(batches.reference_subset(7, 12), np.arange(7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = fid.load_reference(str(root / "ref.npz"), model, num_workers=0, size=12)
        assert np.array_equal(whole.index.numpy(), subset) and whole.n == 50
        all_pool = model(torch.from_numpy(ref).permute(0, 3, 1, 2))[0]
        torch.testing.assert_close(whole.pool, all_pool[torch.from_numpy(subset)])
        assert fid.save_reference(str(tmp_path / "r.npz"), whole) is None
        stats, images = adm_read(tmp_path / "r.npz")
        assert np.array_equal(images, ref[subset])
        back = fid.load_reference(str(tmp_path / "r.npz"), model, num_workers=0)
        features = fid.Features(model)
        fid.feed(features, samples)
        m1, m2 = fid.metrics(features, whole), fid.metrics(features, back)
    assert {k: m1[k] for k in ("fid", "sfid", "precision", "recall")} == {
        k: m2[k] for k in ("fid", "sfid", "precision", "recall")}


def test_a_folder_of_mixed_sizes_gets_statistics_only_in_one_line(tiny, tmp_path, capsys):
    folder = tmp_path / "mixed"
    os.makedirs(folder)
    for i, a in enumerate(smooth_images(6, 24, seed=10)):
        Image.fromarray(a[:24 - (i % 2) * 4]).save(folder / f"{i}.png")  # 24x24 and 20x24
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, err, code = run_main([folder, "--save-stats", tmp_path / "s.npz"], capsys)
    assert code == 0, err
    [line] = [line for line in out if line.startswith("wrote")]
    assert "(mu, sigma, mu_s, sigma_s, arr_0 left out: its images differ in size" in line
    with np.load(tmp_path / "s.npz") as f:
        assert sorted(f.files) == ["mu", "mu_s", "sigma", "sigma_s"]


def test_a_statistics_only_reference_says_what_it_skips_and_why(sets, tiny, tmp_path, capsys):
    root, _, ref, _ = sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = fid.load_reference(str(root / "ref.npz"), tiny, num_workers=0)
    np.savez(tmp_path / "pool_only.npz", mu=full.mu, sigma=full.sigma)
    np.savez(tmp_path / "both.npz", mu=full.mu, sigma=full.sigma, mu_s=full.mu_s,
             sigma_s=full.sigma_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        only, err, code = run_main([root / "samples.npz", tmp_path / "pool_only.npz"], capsys)
        both, err2, code2 = run_main([root / "samples.npz", tmp_path / "both.npz"], capsys)
        images, _, _ = run_main([root / "samples.npz", root / "ref.npz"], capsys)
    assert code == code2 == 0, err + err2
    assert printed(only, "FID") == printed(images, "FID")
    assert [line for line in only if line.startswith("sFID")][0].startswith(
        "sFID: skipped: REF") and "no spatial statistics (mu_s, sigma_s)" in only[-3]
    for lines in (only, both):
        assert "holds no images (statistics only)" in [line for line in lines
                                                       if line.startswith("Precision")][0]
        assert printed(lines, "Recall") is None
    assert printed(both, "sFID") == pytest.approx(printed(images, "sFID"), rel=1e-9)


# ----------------------------------------------------------------------------- paths and signals

def test_output_paths_are_checked_before_any_image_is_read(sets, tmp_path, capsys, monkeypatch):
    root = sets[0]
    monkeypatch.setattr(fid, "load_inception", lambda *a, **k: pytest.fail("compute started"))
    (tmp_path / "afile").write_text("x")
    os.makedirs(tmp_path / "adir")
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    cases = [([root / "ref.npz", "--save-stats", tmp_path / "afile" / "ref.npz"],
              "is a file, not a folder"),
             ([root / "ref.npz", "--save-stats", tmp_path / "adir"], "is a folder"),
             ([root / "ref.npz", "--save-stats", root / "ref"], "is one of the inputs"),
             ([root / "samples.npz", tmp_path / "stats.npz", "--save-stats", tmp_path / "o.npz"],
              "holds statistics only"),
             ([root / "samples.npz", root / "ref.npz", "--is-protocol", "tf"], "invalid choice")]
    for argv, message in cases:
        out, err, code = run_main(argv, capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        assert message in err[0], err
    assert not os.path.exists(tmp_path / "o.npz")


def wait_for_line(proc, prefix, timeout=600):
    """Read proc's stdout until a line starts with `prefix` (False: it ended or timed out)."""
    buffer, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return False
            buffer += chunk
            if any(line.startswith(prefix.encode()) for line in buffer.splitlines()):
                return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_stop_with_one_line_and_nothing_on_disk(sets, tmp_path, sig):
    """Issue 28: a KeyboardInterrupt traceback during the statistics. Now, statistics
    (--save-stats) or metrics: one line, exit status 128 + the signal, no output file, folder or
    temp file."""
    root = sets[0]
    out = tmp_path / "out" / "ref.npz"
    argv = [root / "samples.npz", "--save-stats", out] if sig == signal.SIGINT else \
        [root / "samples.npz", root / "ref.npz"]
    proc = subprocess.Popen([sys.executable, "-W", "ignore", os.path.join(REPO, "fid.py"),
                             *map(str, argv), "--inception-weights", "random",
                             "--batch-size", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    try:
        assert wait_for_line(proc, "reading"), "fid.py ended or hung before computing"
        time.sleep(0.5)  # inside the first forward passes
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig
    assert err.decode().strip().splitlines() == [f"fid.py: stopped by {name}; nothing was written"]
    assert not os.path.exists(tmp_path / "out") and not glob.glob(str(tmp_path / "**" / "*.tmp"))


def test_a_write_stopped_midway_or_out_of_space_leaves_no_partial_file(sets, tmp_path):
    root, _, ref, _ = sets
    model = TinyInception()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = fid.load_reference(str(root / "ref.npz"), model, num_workers=0)

    def stopped_read(index, batch_size=64):
        yield ref[index[:5]]
        raise fid.Stopped(signal.SIGTERM)
    reference.source.read = stopped_read
    with pytest.raises(fid.Stopped):
        fid.save_reference(str(tmp_path / "r.npz"), reference)
    assert os.listdir(tmp_path) == []

    def full_disk(index, batch_size=64):
        yield ref[index[:5]]
        raise OSError(28, "No space left on device")
    reference.source.read = full_disk
    why = fid.save_reference(str(tmp_path / "r.npz"), reference)
    assert why.startswith("no space for its") and os.listdir(tmp_path) == ["r.npz"]
    with np.load(tmp_path / "r.npz") as f:
        assert sorted(f.files) == ["mu", "mu_s", "sigma", "sigma_s"]
