"""Tests of fid.py and inception.py: the Inception port (keys, counts, strict loading), the metrics
against closed forms and brute force, the three input formats, the ADM .npz writer, bad inputs,
and sharded statistics under torchrun (gloo). Random Inception weights throughout (the real ones
cannot be downloaded here); few, small images."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import batches  # noqa: E402
import data  # noqa: E402
import fid  # noqa: E402
import inception  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-weight FID Inception saved as a .pth, as the released file would be."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = inception.load_inception("random")
    path = str(tmp_path_factory.mktemp("w") / "inception_random.pth")
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(weights):
    return inception.load_inception(weights)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 uint8 images (N, H, W, 3) as a folder of PNGs (in a subfolder too), a stored and a
    compressed arr_0 .npz. Smooth random images: pure noise gives near-identical features through
    random weights."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (4, 4, 4, 3)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(0, 3, 1, 2),
                                        size=(24, 24), mode="bilinear")
    arr = x.permute(0, 2, 3, 1).round().clamp(0, 255).numpy().astype(np.uint8)  # (4, 24, 24, 3)
    os.makedirs(root / "folder" / "sub")
    for i, a in enumerate(arr):
        Image.fromarray(a).save(root / "folder" / ("sub" if i % 2 else "") / f"{i:02d}.png")
    np.savez(root / "arr.npz", arr)
    np.savez_compressed(root / "arr_compressed.npz", arr)
    return arr, root


# ----------------------------------------------------------------------------- the network

def test_inception_counts_match_the_released_file():
    with torch.device("meta"):
        model = inception.InceptionV3()
    keys = model.state_dict().keys()
    assert sum(p.numel() for p in model.parameters()) == 23_850_960
    assert len(keys) == 566 and sum(k.endswith("num_batches_tracked") for k in keys) == 94
    assert model.fc.weight.shape == (1008, 2048) and "AuxLogits.fc.weight" not in keys
    assert model.Mixed_7c.pool == "max" and model.Mixed_7b.pool == "avg"


def test_pool_branches_are_the_tf_graphs():
    x = torch.ones(1, 2, 5, 5)
    # padding not counted: borders stay 1 (torchvision: 4/9)
    assert torch.equal(inception.pool_branch(x, "avg"), x)
    y = torch.randn(1, 2, 5, 5)
    assert torch.equal(inception.pool_branch(y, "max"), torch.nn.functional.max_pool2d(y, 3, 1, 1))


def test_state_dict_round_trips_strictly(weights, model, tmp_path):
    state = torch.load(weights, weights_only=True)
    fresh = inception.InceptionV3()
    fresh.load_state_dict(state, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # The released file has no num_batches_tracked: tolerated.
    no_nbt = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert torch.equal(inception.load_inception(no_nbt).fc.weight, state["fc.weight"])
    # Anything else missing, extra or misshapen is not the FID Inception.
    for bad in ({**state, "AuxLogits.fc.weight": torch.zeros(1)},
                {k: v for k, v in state.items() if k != "Mixed_7c.branch_pool.conv.weight"},
                {**state, "fc.weight": torch.zeros(1000, 2048)}):
        with pytest.raises(ValueError, match="not the FID Inception"):
            inception.load_inception(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        inception.load_inception(str(tmp_path / "missing.pth"))


def test_features_uint8_float_and_layouts_agree(model, images):
    arr, _ = images
    pool, logits = fid.features_from_images(model, arr[:2], batch_size=2)  # (N, H, W, 3) uint8
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    x = torch.from_numpy(arr[:2]).permute(0, 3, 1, 2)  # (N, 3, H, W)
    pool_f, logits_f = fid.features_from_images(model, x.float() / 255, batch_size=2)
    torch.testing.assert_close(pool_f, pool, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, pool @ model.fc.weight.T)  # no bias
    # random weights still separate images
    assert not torch.allclose(pool[0], pool[1], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid.features_from_images(model, x.float() / 127.5 - 1)


def test_parity_with_pytorch_fid(weights, model, images, monkeypatch):
    """Same weights, same features as pytorch-fid (optional: never a dependency of this
    project)."""
    pfi = pytest.importorskip("pytorch_fid.inception",
                              reason="pytorch-fid not installed (optional parity check)")
    state = torch.load(weights, weights_only=True)
    # offline, same weights
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
    ref = pfi.InceptionV3([3], use_fid_inception=True).eval()
    x = torch.from_numpy(images[0][:2]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = ref(x)[0].flatten(1)  # (N, 2048)
    torch.testing.assert_close(fid.features_from_images(model, x)[0], expected,
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- FID

def frechet_distance_sqrtm(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy.linalg.sqrtm (deprecated `disp`, complex round-off): the
    reference."""
    import scipy.linalg
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_spd(d, rng):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d)


def test_fid_zero_symmetric_and_matches_sqrtm():
    rng = np.random.default_rng(0)
    d = 64
    mu1, mu2, s1, s2 = (rng.standard_normal(d), rng.standard_normal(d),
                        random_spd(d, rng), random_spd(d, rng))
    assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    f12, f21 = fid.frechet_distance(mu1, s1, mu2, s2), fid.frechet_distance(mu2, s2, mu1, s1)
    assert f12 > 1 and abs(f12 - f21) < 1e-9 * f12
    assert abs(f12 - frechet_distance_sqrtm(mu1, s1, mu2, s2)) < 1e-6 * f12
    # Singular Sigma (N < D, as with few images): x vs x is still 0.
    feats = rng.standard_normal((10, d))
    s = np.cov(feats, rowvar=False)
    assert abs(fid.frechet_distance(feats.mean(0), s, feats.mean(0), s)) < 1e-6 * np.trace(s)
    s_pd = s + 0.1 * np.eye(d)  # rank 9 vs full rank, either order, vs sqrtm
    f = fid.frechet_distance(mu1, s, mu2, s_pd)
    assert abs(f - fid.frechet_distance(mu2, s_pd, mu1, s)) < 1e-8 * f
    assert abs(f - frechet_distance_sqrtm(mu1, s, mu2, s_pd)) < 1e-6 * f


def test_fid_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(1)
    d = 32
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    v1, v2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert (abs(fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) - expected)
            < 1e-9 * expected)
    # Identical images: Sigma = 0 (rank 0).
    expected = ((mu1 - mu2) ** 2).sum() + v2.sum()
    assert (abs(fid.frechet_distance(mu1, np.zeros((d, d)), mu2, np.diag(v2)) - expected)
            < 1e-9 * expected)


def test_fid_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimensions differ"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_running_stats_equal_numpy_and_warn_when_singular():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((50, 8)) * 3 + 5
    stats = fid.InceptionStats(dims=8)
    for part in np.array_split(feats, 4):
        stats.update(torch.from_numpy(part).float())
    mu, sigma = stats.mu_sigma()
    feats32 = feats.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, feats32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats32, rowvar=False), rtol=1e-9, atol=1e-12)
    few = fid.InceptionStats(dims=8)
    few.update(torch.randn(5, 8))
    with pytest.warns(UserWarning, match="singular"):
        few.mu_sigma()
    one = fid.InceptionStats(dims=8)
    one.update(torch.randn(1, 8))
    with pytest.raises(ValueError, match="at least 2"):
        one.mu_sigma()


# ---------------------------------------------------------------------------- IS, precision/recall

def test_inception_score_uniform_is_1_and_balanced_one_hot_is_k():
    mean, std = fid.inception_score(torch.zeros(100, 1008))
    assert abs(mean - 1) < 1e-12 and std < 1e-12
    k = 7
    y = torch.arange(10 * k) % k  # every split of 7 holds each class once
    one_hot = 1e4 * torch.nn.functional.one_hot(y, 1008).double()
    mean, std = fid.inception_score(one_hot, split_size=k)
    assert abs(mean - k) < 1e-9 and std < 1e-9
    with pytest.raises(ValueError, match="splits"):
        fid.inception_score(torch.zeros(0, 10))  # ADM's splits of 5,000 take any N >= 1
    with pytest.raises(ValueError, match="splits"):
        fid.inception_score_torch_fidelity(torch.zeros(5, 10))  # 10 splits need 10 images


def reference_inception_score(logits, split_size):
    """Salimans et al. 2016 as ADM's evaluator computes it: per split of split_size samples
    (contiguous, the last one partial), p(y|x) = softmax(logits), p(y) = the split's mean of
    p(y|x), IS = exp(mean_x sum_y p(y|x) (log p(y|x) - log p(y))); then the mean and std over the
    splits."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i:i + split_size]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1)
        scores.append(np.exp(kl.mean()))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_the_formula_on_random_logits():
    """Random logits: every image has its own p(y|x) and each split its own marginal p(y), so a
    marginal taken over all images, or the mean of exp(KL) instead of exp of the mean, no longer
    agrees (the closed forms above cannot tell them apart). 53 samples in splits of 5: ADM's rule,
    the last split partial (3 samples)."""
    logits = np.random.default_rng(5).standard_normal((53, 20)) * 3
    mean, std = fid.inception_score(torch.from_numpy(logits), split_size=5)
    ref_mean, ref_std = reference_inception_score(logits, 5)
    assert (abs(mean - ref_mean) < 1e-9 * ref_mean and abs(std - ref_std) < 1e-9 * ref_mean
            and std > 0.01)
    even, _ = reference_inception_score(logits[:50], 5)  # the partial split counts as a split
    fifty, _ = fid.inception_score(torch.from_numpy(logits[:50]), split_size=5)
    assert abs(fifty - even) < 1e-9 * even
    assert abs(mean - even) > 1e-3


def brute_force_pr(real, fake, k):
    d_rr = ((real[:, None] - real[None]) ** 2).sum(-1)
    d_ff = ((fake[:, None] - fake[None]) ** 2).sum(-1)
    d_fr = ((fake[:, None] - real[None]) ** 2).sum(-1)  # (N_fake, N_real)
    r_real, r_fake = np.sort(d_rr, 1)[:, k], np.sort(d_ff, 1)[:, k]  # self is the 0-th neighbour
    return (d_fr <= r_real[None]).any(1).mean(), (d_fr <= r_fake[:, None]).any(0).mean()


def test_precision_recall():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((40, 5))
    assert fid.precision_recall(real, real) == (1.0, 1.0)
    assert fid.precision_recall(real, real + 100) == (0.0, 0.0)
    fake = rng.standard_normal((30, 5)) * 1.5 + 0.5
    p, r = fid.precision_recall(real, fake, k=3, batch_size=7)  # blocks of 7 exercise the tiling
    p_ref, r_ref = brute_force_pr(real, fake, 3)
    assert 0 < p < 1 and 0 < r < 1 and (p, r) != (r, p)
    assert abs(p - p_ref) < 1e-6 and abs(r - r_ref) < 1e-6
    with pytest.raises(ValueError, match="k=3"):
        fid.precision_recall(real[:3], fake)


# ----------------------------------------------------------------------------- inputs

def test_folder_npz_and_stats_npz_give_the_same_statistics(model, images, tmp_path):
    _, root = images
    results = []
    for name in ("folder", "arr.npz", "arr_compressed.npz"):
        source = fid.open_input(str(root / name), num_workers=0)
        assert source.stats is None and len(source.images) == 4
        features = fid.Features(model, batch_size=4)
        fid.feed(features, source.images)
        _, pool, _ = features.gathered()
        assert features.skipped == 0 and pool.shape == (4, 2048)
        with pytest.warns(UserWarning, match="singular"):
            results.append(features.pool_stats.mu_sigma())
    assert fid.NpzArray(str(root / "arr.npz")).mmap is not None  # stored: memory-mapped
    assert fid.NpzArray(str(root / "arr_compressed.npz")).mmap is None  # deflated: streamed
    for mu, sigma in results[1:]:
        np.testing.assert_allclose(mu, results[0][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(sigma, results[0][1], rtol=1e-5, atol=1e-7)
    batches.write_reference(str(tmp_path / "stats.npz"), dict(zip(("mu", "sigma"), results[0])))
    stats = fid.open_input(str(tmp_path / "stats.npz"))
    assert stats.images is None and np.array_equal(stats.stats["mu"], results[0][0])
    assert np.array_equal(stats.stats["sigma"], results[0][1])
    # Metrics of a set against itself: FID 0, precision = recall = 1.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = fid.compute_metrics(str(root / "arr.npz"), str(root / "folder"), model=model,
                                num_workers=0)
    assert (abs(m["fid"]) < 1e-4 and m["precision"] == 1.0 and m["recall"] == 1.0
            and m["n_ref"] == 4)


def test_center_crop_and_mixed_size_batches():
    rng = np.random.default_rng(4)
    square = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    # identity at R x R
    assert np.array_equal(data.center_crop_arr(Image.fromarray(square), 32), square)
    wide = Image.fromarray(rng.integers(0, 256, (70, 150, 3), dtype=np.uint8))
    # box-halved once, bicubic, center crop
    assert data.center_crop_arr(wide, 32).shape == (32, 32, 3)
    a, b = torch.from_numpy(square).permute(2, 0, 1), torch.zeros(3, 20, 30, dtype=torch.uint8)
    # fid.py's folders: an unreadable file is skipped and counted; mixed sizes stay a list (the
    # Inception resizes each image alone), one size stacks as uint8 (resized by the model).
    index, x, skipped = batches.collate([(0, a), (1, None), (2, b)])
    assert skipped == 1 and index.tolist() == [0, 2] and isinstance(x, list)
    assert [tuple(image.shape) for image in x] == [(3, 32, 32), (3, 20, 30)]
    index, x_same, _ = batches.collate([(0, a), (1, a)])
    assert x_same.dtype == torch.uint8 and x_same.shape == (2, 3, 32, 32)


def test_bad_inputs_raise_before_compute(tmp_path, images, monkeypatch):
    arr, root = images
    with pytest.raises(FileNotFoundError, match="no such"):
        fid.open_input(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="found 0 images"):
        fid.open_input(str(tmp_path / "empty"))
    os.makedirs(tmp_path / "one")
    Image.fromarray(arr[0]).save(tmp_path / "one" / "a.png")
    with pytest.raises(ValueError, match="found 1 images"):
        fid.open_input(str(tmp_path / "one"))
    cases = {"x.npz": dict(features=np.zeros((3, 4))),  # neither arr_0 nor mu/sigma
             "dims.npz": dict(mu=np.zeros(64), sigma=np.eye(64)),  # not 2048-d
             "f32.npz": dict(arr_0=np.zeros((4, 8, 8, 3), np.float32)),  # not uint8
             "gray.npz": dict(arr_0=np.zeros((4, 8, 8), np.uint8)),  # not (N, H, W, 3)
             "single.npz": dict(arr_0=np.zeros((1, 8, 8, 3), np.uint8))}
    for name, arrays in cases.items():
        np.savez(tmp_path / name, **arrays)
    for name, match in (("x.npz", "arr_0"), ("dims.npz", "64-d"), ("f32.npz", "uint8"),
                        ("gray.npz", "uint8"), ("single.npz", "1 images")):
        with pytest.raises(ValueError, match=match):
            fid.open_input(str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="expected a folder"):
        fid.open_input(str(tmp_path / "notes.txt"))
    np.savez(tmp_path / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="SAMPLES must be images"):
        fid.compute_metrics(str(tmp_path / "stats.npz"), str(root / "arr.npz"), weights="random")
    # A bad pixel limit is found when the folder is opened, not in a DataLoader worker (it was a
    # traceback from a worker, where fid.py's old reader checked it and its real one did not).
    Image.fromarray(arr[1]).save(tmp_path / "one" / "b.png")
    monkeypatch.setenv("DCAE_MAX_IMAGE_PIXELS", "1e9")
    with pytest.raises(ValueError, match="^DCAE_MAX_IMAGE_PIXELS='1e9' is not a number"):
        fid.open_input(str(tmp_path / "one"))


def test_unreadable_files_are_skipped_and_counted(model, images, tmp_path):
    arr, _ = images
    for i in range(2):
        Image.fromarray(arr[i]).save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "truncated.jpg").write_bytes(b"\xff\xd8\xff")
    source = fid.open_input(str(tmp_path), num_workers=0).images
    features = fid.Features(model, batch_size=2)
    fid.feed(features, source)
    _, pool, _ = features.gathered()
    assert features.skipped == 2 and pool.shape[0] == 2 and features.pool_stats.n.item() == 2


def test_cli_refuses_bad_input_with_one_line(tmp_path, images, capsys):
    arr, root = images
    np.savez(tmp_path / "nan.npz", mu=np.full(2048, np.nan), sigma=np.eye(2048))
    np.savez(tmp_path / "good.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    cases = [([str(tmp_path / "missing"), str(root / "folder")], "no such file or folder"),
             ([str(root / "arr.npz"), str(root / "folder"), "--batch-size", "-2"],
              "--batch-size -2"),
             ([str(root / "arr.npz"), str(tmp_path / "nan.npz")], "NaN or inf"),
             ([str(root / "arr.npz")], "expected SAMPLES REF"),
             ([str(tmp_path / "good.npz"), str(root / "arr.npz")], "SAMPLES must be images")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            fid.main(fid.parse_args(argv + ["--inception-weights", "random"]))
        err = capsys.readouterr().err.strip().splitlines()
        assert (e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
                and message in err[0]), err
    # The script itself, once, with a timeout that only a hang exceeds (importing torch alone took
    # over 60 s on a loaded machine).
    out = subprocess.run([sys.executable, os.path.join(REPO, "fid.py"), str(tmp_path / "missing"),
                          str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"error: no such file or folder: {tmp_path / 'missing'}"]
    with pytest.raises(SystemExit) as e:
        fid.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert e.value.code == 0 and "(default: 50)" in help_text and "docstring" not in help_text


def test_write_npz_streams_the_adm_format(tmp_path, images):
    arr, _ = images
    chunks = [(arr[:3], np.array([1, 2, 3])), (arr[3:], np.array([4]))]
    fid.write_npz(str(tmp_path / "s.npz"), iter(chunks), arr.shape)
    with np.load(tmp_path / "s.npz") as f:
        assert np.array_equal(f["arr_0"], arr) and f["arr_1"].tolist() == [1, 2, 3, 4]
    assert fid.NpzArray(str(tmp_path / "s.npz")).mmap is not None  # stored: fid.py memory-maps it
    with pytest.raises(ValueError, match="hold 3 images, expected 4"):
        fid.write_npz(str(tmp_path / "t.npz"), iter(chunks[:1]), arr.shape)
    assert not os.path.exists(tmp_path / "t.npz") and not list(tmp_path.glob("*.tmp"))


def test_sharded_statistics_under_torchrun_equal_one_process(model, images, tmp_path):
    """2 gloo ranks, uneven shards (2 + 3 images) through the CLI -> the one-process statistics,
    pool_3 and spatial, and arr_0 (rank 0 reads the images again). --inception-weights random:
    every rank builds the network of this process (issue 25: each rank had its own)."""
    arr, _ = images
    arr5 = np.concatenate([arr, arr[:1, ::-1]])  # 5 images
    np.savez(tmp_path / "five.npz", arr5)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2",
                          os.path.join(REPO, "fid.py"), str(tmp_path / "five.npz"), "--save-stats",
                          str(tmp_path / "s2.npz"), "--inception-weights", "random",
                          "--batch-size", "3"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    features = fid.Features(model, batch_size=5)
    features.update(torch.from_numpy(arr5).permute(0, 3, 1, 2), range(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mu, sigma = features.pool_stats.mu_sigma()
        mu_s, sigma_s = features.spatial_stats.mu_sigma()
    stats2 = fid.load_stats(str(tmp_path / "s2.npz"))
    mu2, sigma2 = stats2["mu"], stats2["sigma"]
    np.testing.assert_allclose(mu2, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma2, sigma, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats2["mu_s"], mu_s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats2["sigma_s"], sigma_s, rtol=1e-4, atol=1e-6)
    with np.load(tmp_path / "s2.npz") as f:
        assert np.array_equal(f["arr_0"], arr5)
