"""Tests of sample.py: grid and 50K-.npz outputs, per-sample determinism (one process and two gloo
processes), resume after an interruption, CFG scale 1 = unguided, partial-channel generation, bad
inputs, and one real train_diffusion.py -> sample.py --fid run. Tiny checkpoints are built in the
train_diffusion.py format directly (random-weight registry AE "dc-ae-f8c16-tiny": c = 16, f = 8;
32 px images from 16x4x4 latents).

    python -m pytest -q tests/test_sample.py
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ae as ae_lib  # noqa: E402
import cfg_search  # noqa: E402
import checkpoints  # noqa: E402
import data as data_lib  # noqa: E402
import diffusion  # noqa: E402
import evaluation  # noqa: E402
import fid  # noqa: E402
import models  # noqa: E402
import sample  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C, S, NUM_CLASSES, SCALE = 16, 4, 10, 0.7
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors on a shared 2-core machine: a second intra-op thread only adds spin-waits
    (50x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_ckpt(path, name="USiT-tiny", **overrides):
    """A checkpoint as train_diffusion.py writes it; random weights of std 0.1 so every output
    depends on x, t, y (DiT is zero-initialised), and EMA != raw weights so --weights matters."""
    torch.manual_seed(0)
    model = models.create_model(name, in_channels=C, input_size=S, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.1)
    ema = {k: v + 0.01 * torch.randn(v.shape) for k, v in model.state_dict().items()}
    ckpt = dict(model=model.state_dict(), ema=ema, step=7, rng=[],
                args=dict(model=name, patch_size=1, resolution=S * 8, ae="dc-ae-f8c16-tiny"),
                ae="random:dc-ae-f8c16-tiny", ae_name="dc-ae-f8c16-tiny", scaling_factor=SCALE,
                num_classes=NUM_CLASSES, latent_shape=[C, S, S])
    ckpt.update(overrides)
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    return {name: make_ckpt(d / f"{name}.pt", name)
            for name in ("USiT-tiny", "DiT-tiny", "UViT-tiny")}


def run(ckpt, out, *extra):
    """sample.py with 4 steps; flow checkpoints use the SDE sampler (fixed steps, noise drawn while
    sampling)."""
    sampler = (["--sampler", "euler_maruyama"]
               if "USiT" in str(ckpt) and "--sampler" not in extra else [])
    return sample.main(sample.parse_args(["--ckpt", ckpt, "--out", str(out), "--steps", "4",
                                          *sampler, *extra]))


def load_npz(path):
    with np.load(path) as d:
        return d["arr_0"], d["arr_1"]


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------

def test_grid_png_rows_are_classes(ckpts, tmp_path):
    res = run(ckpts["DiT-tiny"], tmp_path, "--classes", "3", "1", "7", "--per-class", "2")
    assert res["images"].shape == (6, 32, 32, 3) and res["images"].dtype == np.uint8
    grid = np.asarray(Image.open(res["grid"]))
    # the band of row labels ("class 3", ...) left of the images
    left = grid.shape[1] - (2 * 34 + 2)
    assert grid.shape[0] == 3 * 34 + 2 and left > 0  # 3 rows (classes) x 2 columns, 2 px padding
    assert np.array_equal(grid[2 + 34:2 + 34 + 32, left + 2 + 34:left + 2 + 34 + 32],
                          res["images"][3])  # class 1, col 1
    assert grid[:, :left].max() > 200  # the labels are written
    assert res["images"].std() > 0


@pytest.mark.parametrize("name", ["USiT-tiny", "UViT-tiny"])
def test_npz_adm_format(ckpts, tmp_path, name):
    res = run(ckpts[name], tmp_path, "--num-samples", "7", "--batch-size", "3")
    x, y = load_npz(res["npz"])
    assert x.shape == (7, 32, 32, 3) and x.dtype == np.uint8
    assert y.shape == (7,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < NUM_CLASSES
    array = fid.NpzArray(res["npz"])  # stored, so fid.py memory-maps it instead of loading 39 GB
    assert array.mmap is not None and np.array_equal(array.read(2, 5), x[2:5])
    assert not os.path.exists(tmp_path / "shards")  # removed after assembly by default


def test_labels_uniform_over_given_classes(ckpts, tmp_path):
    res = run(ckpts["USiT-tiny"], tmp_path, "--num-samples", "40", "--batch-size", "40",
              "--steps", "2", "--classes", "2", "5")
    assert set(load_npz(res["npz"])[1].tolist()) == {2, 5}
    x, y = load_npz(run(ckpts["USiT-tiny"], tmp_path / "one", "--num-samples", "4",
                        "--batch-size", "2", "--classes", "5")["npz"])
    # one class: the noise differs per sample
    assert (y == 5).all() and len({im.tobytes() for im in x}) == 4


# ------------------------------------------------------------------------------------------------
# Determinism: same seed -> same images, independent of batching into ranks
# ------------------------------------------------------------------------------------------------

def test_same_seed_same_images(ckpts, tmp_path):
    args = ("--num-samples", "5", "--batch-size", "2")
    a = load_npz(run(ckpts["USiT-tiny"], tmp_path / "a", *args)["npz"])
    b = load_npz(run(ckpts["USiT-tiny"], tmp_path / "b", *args)["npz"])
    c = load_npz(run(ckpts["USiT-tiny"], tmp_path / "c", *args, "--seed", "1")["npz"])
    short = load_npz(run(ckpts["USiT-tiny"], tmp_path / "d", "--num-samples", "4",
                         "--batch-size", "2")["npz"])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(short[0], a[0][:4])  # a sample depends on (seed, index), not on N


def test_two_gloo_processes_match_one(ckpts, tmp_path):
    """SDE sampler (noise drawn during sampling): 5 chunks of 2 split over 2 ranks give the
    one-process images."""
    args = ["--ckpt", ckpts["USiT-tiny"], "--num-samples", "9", "--batch-size", "2",
            "--steps", "4", "--sampler", "euler_maruyama"]
    one = load_npz(run(ckpts["USiT-tiny"], tmp_path / "one", *args[2:])["npz"])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "sample.py"), *args, "--out", str(tmp_path / "two")]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    two = load_npz(tmp_path / "two" / "samples.npz")
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


# ------------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------------

def test_interrupted_run_resumes(ckpts, tmp_path, monkeypatch, capsys):
    args = ("--num-samples", "7", "--batch-size", "2")
    ref = load_npz(run(ckpts["USiT-tiny"], tmp_path / "ref", *args)["npz"])
    real, done = evaluation.generate, []

    def crash_on_third(*a, **k):  # a[6]: the chunk's noise seed, chunk_seed(0, k) = k
        if len(done) == 2:
            raise KeyboardInterrupt  # the job is killed while sampling chunk 2
        done.append(a[6])
        return real(*a, **k)
    monkeypatch.setattr(evaluation, "generate", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(ckpts["USiT-tiny"], tmp_path / "run", *args)
    assert (sorted(os.listdir(tmp_path / "run" / "shards"))
            == ["chunk_000000.npz", "chunk_000001.npz"])
    with pytest.raises(SystemExit):  # other settings must not mix with the shards
        run(ckpts["USiT-tiny"], tmp_path / "run", *args, "--seed", "3")
    assert "another configuration" in capsys.readouterr().err

    done.clear()
    monkeypatch.setattr(evaluation, "generate", lambda *a, **k: done.append(a[6]) or real(*a, **k))
    res = run(ckpts["USiT-tiny"], tmp_path / "run", *args)
    assert done == [2, 3]  # only the missing chunks
    out = load_npz(res["npz"])
    assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1])
    done.clear()
    run(ckpts["USiT-tiny"], tmp_path / "run", *args)  # samples.npz is complete: nothing to do
    assert done == []


# ------------------------------------------------------------------------------------------------
# CFG and partial-channel generation
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["DiT-tiny", "USiT-tiny"])
def test_cfg_one_is_unguided_sampling(ckpts, tmp_path, name):
    """The .npz equals the documented recipe with the objective's plain (unguided) sampler; CFG 2
    differs."""
    res = run(ckpts[name], tmp_path / "cfg1", "--num-samples", "3", "--batch-size", "3",
              "--cfg-scale", "1.0")
    x, y = load_npz(res["npz"])
    model = checkpoints.load_diffusion(str(ckpts[name])).model
    # the checkpoint's random:dc-ae-f8c16-tiny
    ae = checkpoints.load_ae("random:dc-ae-f8c16-tiny").model
    objective = diffusion.make_objective(models.MODELS[name].objective)
    g = torch.Generator().manual_seed(evaluation.chunk_seed(0, 0))
    z = torch.randn(3, C, S, S, generator=g)
    # DC-Gen's labels
    labels = torch.randint(0, NUM_CLASSES, (3,), generator=torch.Generator().manual_seed(0))
    x0 = objective.sample(model, z, labels, "euler_maruyama" if name == "USiT-tiny" else None, 4,
                          generator=g)
    expected = data_lib.to_uint8(ae.decode(x0 / SCALE)).numpy()
    assert np.array_equal(y, labels.numpy()) and np.array_equal(x, expected)
    guided = load_npz(run(ckpts[name], tmp_path / "cfg2", "--num-samples", "3",
                          "--batch-size", "3", "--cfg-scale", "2.0")["npz"])[0]
    assert np.abs(guided.astype(int) - x).max() > 0


def test_partial_channel_zeros_before_decoding(ckpts, tmp_path, monkeypatch):
    latents, real = [], ae_lib.DCAE.decode  # what the decoder receives
    monkeypatch.setattr(ae_lib.DCAE, "decode", lambda self, z: latents.append(z) or real(self, z))
    run(ckpts["UViT-tiny"], tmp_path / "c4", "--classes", "1", "--per-class", "3",
        "--c-prime", "4")
    run(ckpts["UViT-tiny"], tmp_path / "full", "--classes", "1", "--per-class", "3")
    partial, full = latents
    assert partial.shape == (3, C, S, S)
    assert torch.all(partial[:, 4:] == 0) and partial[:, :4].abs().min() > 0
    assert full[:, 4:].abs().min() > 0


# ------------------------------------------------------------------------------------------------
# Bad inputs: clear messages before any sampling
# ------------------------------------------------------------------------------------------------

def test_bad_inputs(ckpts, tmp_path, capsys):
    ok = ckpts["USiT-tiny"]
    ae_ckpt = tmp_path / "ae.pt"
    torch.save({"model": {}, "args": {"model": "dc-ae-f8c16-tiny"}}, ae_ckpt)
    truncated = str(tmp_path / "truncated.pt")
    with open(ok, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:5000])
    cases = [
        ([str(tmp_path / "missing.pt")], "not found"),
        ([str(tmp_path)], "no ckpt_"),
        ([str(ae_ckpt)], "not a train_diffusion.py checkpoint"),
        ([truncated], "is not a readable checkpoint"),
        ([make_ckpt(tmp_path / "other.pt", latent_shape=[C, 8, 8])], "do not match USiT-tiny"),
        ([make_ckpt(tmp_path / "noae.pt", ae=str(tmp_path / "gone"))],
         "the checkpoint's AE .*gone: not found"),
        ([ok, "--model", "DiT-tiny"], "checkpoint of USiT-tiny, not --model DiT-tiny"),
        ([ok, "--ae", "random:dc-ae-f8c64-tiny"], "c=64 latent channels"),
        ([ok, "--c-prime", "17"], "--c-prime 17"),
        ([ok, "--classes", "3", "10"], "--classes"),
        ([ok, "--sampler", "dpm-solver"], "does not fit USiT-tiny"),
        ([ok, "--sampler", "dopri5", "--steps", "4"],
         "--steps 4 does not fit USiT-tiny .*dopri5 is adaptive"),
        ([ok, "--guidance-interval", "0.8", "0.2"], "--guidance-interval"),
        ([ok, "--cfg-scale", "-1"], "--cfg-scale"),
        ([ok, "--num-samples", "4", "--fid", str(tmp_path / "ref.npz")], "reference not found"),
        ([ckpts["DiT-tiny"], "--steps", "1001"], "--steps 1001"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            sample.main(sample.parse_args(["--ckpt", *argv, "--out", str(tmp_path / "o")]))
        errors = [line for line in capsys.readouterr().err.splitlines()
                  if line.startswith("error: ")]
        assert (e.value.code == 2 and len(errors) == 1
                and re.search(message, errors[0])), (message, errors)


# ------------------------------------------------------------------------------------------------
# The real thing: train_diffusion.py -> sample.py --num-samples --fid, as a user runs it
# ------------------------------------------------------------------------------------------------

def test_end_to_end_train_sample_fid(tmp_path):
    run_dir = tmp_path / "d"
    p = subprocess.run([sys.executable, os.path.join(REPO, "train_diffusion.py"),
                        "--ae", "random:dc-ae-f8c16-tiny", "--out", str(run_dir), "--steps", "2",
                        "--toy-size", "16", "--batch-size", "8", "--num-workers", "0",
                        "--grid-every", "0", "--log-every", "1"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    ref = tmp_path / "ref.npz"
    np.savez(ref, np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    p = subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), "--ckpt", str(run_dir),
                        "--out", str(tmp_path / "s"), "--num-samples", "12", "--batch-size", "6",
                        "--steps", "3", "--sampler", "heun", "--fid", str(ref),
                        "--inception-weights", "random"],
                       env=ENV, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "FID" in p.stdout and "precision" in p.stdout
    assert os.path.isfile(tmp_path / "s" / "metrics.json")
    p = subprocess.run([sys.executable, os.path.join(REPO, "sample.py"), "--ckpt", str(run_dir),
                        "--c-prime", "99"],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert (p.returncode == 2 and p.stderr.strip().splitlines()[-1]
            == "error: --c-prime 99 is outside [1, c=16]")


def test_the_ae_decodes_in_fp32_unless_asked(ckpts, tmp_path, monkeypatch):
    seen, real = [], ae_lib.DCAE.decode
    monkeypatch.setattr(
        ae_lib.DCAE, "decode",
        lambda self, z: seen.append(torch.is_autocast_enabled("cpu")) or real(self, z))
    run(ckpts["UViT-tiny"], tmp_path / "a", "--classes", "1", "--per-class", "1")
    run(ckpts["UViT-tiny"], tmp_path / "b", "--classes", "1", "--per-class", "1", "--ae-bf16")
    assert seen == [False, True]


def test_labels_are_dc_gens(ckpts, tmp_path):
    """50K labels: torch.randint(0, num_classes, (N,)) from a CPU generator seeded --seed, sliced
    by chunk."""
    y = load_npz(run(ckpts["UViT-tiny"], tmp_path, "--num-samples", "7", "--batch-size", "3",
                     "--seed", "5", "--steps", "1")["npz"])[1]
    assert np.array_equal(y, torch.randint(0, NUM_CLASSES, (7,),
                                           generator=torch.Generator().manual_seed(5)).numpy())


# ------------------------------------------------------------------------------------------------
# Labels, seeds, a full disk at the .npz, --cfg-scale release, the CFG search
# ------------------------------------------------------------------------------------------------

def test_balanced_labels_give_each_class_n_over_k_in_a_seeded_order(ckpts, tmp_path):
    y = load_npz(run(ckpts["UViT-tiny"], tmp_path, "--num-samples", "20", "--batch-size", "6",
                     "--steps", "1", "--labels", "balanced")["npz"])[1]
    assert np.bincount(y, minlength=NUM_CLASSES).tolist() == [2] * NUM_CLASSES
    assert y.tolist() != sorted(y.tolist())  # shuffled: a chunk is not one class
    again = evaluation.sample_labels(20, 0, list(range(NUM_CLASSES)), "balanced")
    # a function of (N, classes, seed): any number of ranks
    assert np.array_equal(y, again.numpy())


def test_seeds_cover_the_int64_range_and_keep_todays_samples(ckpts, tmp_path, capsys):
    assert evaluation.chunk_seed(5, 3) == 5 * 1_000_003 + 3  # today's seeds: unchanged
    # no overflow in torch.Generator.manual_seed
    assert 0 <= evaluation.chunk_seed(2 ** 63 - 1, 7) < 2 ** 64
    # seed x 1,000,003 + k passed int64: "Overflow when unpacking long long"
    big = "99999999999999"
    run(ckpts["UViT-tiny"], tmp_path / "grid", "--seed", big, "--classes", "1", "--per-class", "2")
    run(ckpts["UViT-tiny"], tmp_path / "npz", "--seed", big, "--num-samples", "3",
        "--batch-size", "2")
    for seed in ("-1", str(2 ** 63)):
        with pytest.raises(SystemExit) as e:
            run(ckpts["UViT-tiny"], tmp_path / "bad", "--seed", seed)
        assert e.value.code == 2 and (f"argument --seed: {seed} is not in [0, {2 ** 63 - 1}]"
                                      in capsys.readouterr().err)


def test_a_full_disk_at_the_npz_keeps_the_shards_and_leaves_no_temp_file(ckpts, tmp_path,
                                                                          monkeypatch, capsys):
    args = ("--num-samples", "5", "--batch-size", "2", "--steps", "1")
    out = tmp_path / "o"
    usage = sample.shutil.disk_usage
    # checked first
    monkeypatch.setattr(sample.shutil, "disk_usage", lambda p: usage(p)._replace(free=1000))
    with pytest.raises(SystemExit) as e:
        run(ckpts["UViT-tiny"], out, *args)
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("WARNING: ")]
    assert (e.value.code == 4 and len(err) == 1
            and "bytes needed, 1000 free; the 3 chunks stay in" in err[0])
    assert len(os.listdir(out / "shards")) == 3 and not os.path.exists(out / "samples.npz")
    monkeypatch.undo()

    # the disk fills while writing: write_npz's temp file is half written
    def full(path, chunks, shape):
        with open(f"{path}.{os.getpid()}.tmp", "wb") as fh:
            fh.write(b"\0" * 100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sample.fid, "write_npz", full)
    with pytest.raises(SystemExit) as e:
        run(ckpts["UViT-tiny"], out, *args)
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("WARNING: ")]
    assert e.value.code == 4 and len(err) == 1 and "no space left on the device" in err[0]
    assert (len(os.listdir(out / "shards")) == 3
            and not [f for f in os.listdir(out) if "samples.npz" in f])
    monkeypatch.undo()
    # space freed: the same command finishes
    x, _ = load_npz(run(ckpts["UViT-tiny"], out, *args)["npz"])
    assert x.shape == (5, 32, 32, 3)


def test_cfg_scale_release_needs_a_release(ckpts, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(ckpts["UViT-tiny"], tmp_path, "--cfg-scale", "release")
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("WARNING: ")]
    assert e.value.code == 2 and err == [f"error: --cfg-scale release: {ckpts['UViT-tiny']} "
                                         f"is not a release; pass a number"]


def test_ternary_search_finds_the_minimum_of_a_valley_evaluating_each_scale_once():
    for best in cfg_search.CFG_CANDIDATES:
        seen = []

        def fid_of(s):
            seen.append(s)
            return (s - best) ** 2
        assert cfg_search.ternary_search(list(cfg_search.CFG_CANDIDATES), fid_of) == best
        assert len(set(seen)) < len(cfg_search.CFG_CANDIDATES) // 2  # a search, not a sweep


def test_cfg_search_resumes_with_the_finished_scales_and_writes_its_table_and_plot(tmp_path,
                                                                                   capsys):
    calls, kill_at = [], [3]

    def metrics_at(scale):
        calls.append(scale)
        if len(calls) == kill_at[0]:
            raise KeyboardInterrupt  # killed during the third scale
        return {"fid": (scale - 1.5) ** 2, "is_mean": 10 * scale}
    config = {"ckpt": "x"}
    with pytest.raises(KeyboardInterrupt):
        cfg_search.search_cfg(metrics_at, 1.0, 3.0, str(tmp_path), config,
                              cfg_search.read_search(str(tmp_path), config), 0)
    done = cfg_search.read_search(str(tmp_path), config)
    assert sorted(done) == sorted(calls[:2])
    calls.clear()
    kill_at[0] = None
    best, results = cfg_search.search_cfg(metrics_at, 1.0, 3.0, str(tmp_path), config,
                                          dict(done), 0)
    # the finished scales are not evaluated again
    assert best == 1.5 and not set(calls) & set(done)
    assert (tmp_path / "cfg_search.png").stat().st_size > 0
    assert "| 1.5 | 0.0000 | 15.00 | best" in (tmp_path / "cfg_search.md").read_text()
    with pytest.raises(ValueError, match="a CFG search of another configuration"):
        cfg_search.read_search(str(tmp_path), {"ckpt": "y"})
