"""Tests for train_ae.py, train_diffusion.py and fsdp.py: the scripts run end to end as
subprocesses (one process and `torchrun` with 2 gloo processes on CPU), checkpoints load into plain
models, SIGKILL-ed runs resume from the last complete checkpoint, corrupt images are skipped, a NaN
loss stops the run, bad arguments fail fast.
Tiny models and a few steps each; about a minute and a half on 2 cores. The no-argument runs (the
tiny recipes) are marked slow: python -m pytest -q -m slow tests/test_train.py
"""
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import ae as ae_lib
import checkpoints as checkpoints_lib
import cli
import models
import train_ae
import train_diffusion
from conftest import checkpoints, records

REPO = Path(__file__).resolve().parents[1]
FAST = ["--num-workers", "0", "--log-every", "1", "--grid-every", "0", "--batch-size", "8"]


def run(script, *args, procs=1, cwd=None, timeout=600):
    """Run a training script as its users do: `python script.py ...` or
    `torchrun --nproc_per_node N script.py`."""
    launch = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run",
                                                   "--standalone", f"--nproc_per_node={procs}"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(launch + [str(REPO / script)] + [str(a) for a in args], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def steps_logged(out):
    return [r["step"] for r in records(out) if "step" in r]


def messages(out):
    return [r["message"] for r in records(out) if "message" in r]


def step_of(path):
    return int(os.path.basename(path)[len("ckpt_"):-len(".pt")])


def plain_ae(path):
    """A train_ae.py checkpoint -> a plain (unsharded) DCAE, strict load of both weight sets."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = ae_lib.build_ae(ckpt["args"]["model"])
    model.load_state_dict(ckpt["model"], strict=True)
    model.load_state_dict(ckpt["ema"], strict=True)
    return model, ckpt


def plain_backbone(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    c, h, _ = ckpt["latent_shape"]
    model = models.create_model(ckpt["args"]["model"], in_channels=c, input_size=h,
                                num_classes=ckpt["num_classes"])
    model.load_state_dict(ckpt["model"], strict=True)
    model.load_state_dict(ckpt["ema"], strict=True)
    return model, ckpt


# ------------------------------------------------------------------------------------------------
# Tiny runs, evaluation, resume, checkpoints in plain models
# ------------------------------------------------------------------------------------------------

def test_defaults_but_steps_chain_ae_then_diffusion(tmp_path):
    """Default arguments (only --steps and the toy size cut down), run from a fresh folder:
    train_diffusion.py's default --ae runs/ae finds the AE that train_ae.py's default --out
    wrote."""
    ok(run("train_ae.py", "--steps", 2, cwd=tmp_path))
    ok(run("train_diffusion.py", "--steps", 2, "--toy-size", 128, cwd=tmp_path))
    # --save-every defaults to 10% of the steps: here every step (the newest two are kept)
    assert ([os.path.basename(p) for p in checkpoints(tmp_path / "runs/ae")]
            == ["ckpt_0000001.pt", "ckpt_0000002.pt"])
    assert (tmp_path / "runs/ae/grid_0000002.png").is_file()
    _, ckpt = plain_backbone(tmp_path / "runs/diffusion/ckpt_0000002.pt")
    assert (os.path.samefile(ckpt["ae"], tmp_path / "runs/ae/ckpt_0000002.pt")
            and ckpt["latent_shape"] == [64, 4, 4])
    assert (tmp_path / "runs/diffusion/samples_0000002.png").is_file()


def test_tiny_runs_eval_resume_and_plain_loading(tmp_path):
    ae_out, d_out = tmp_path / "ae", tmp_path / "diffusion"
    ok(run("train_ae.py", "--out", ae_out, "--steps", 4, "--save-every", 2, *FAST,
           "--grid-every", 4))
    assert steps_logged(ae_out) == [1, 2, 3, 4]
    assert ([step_of(p) for p in checkpoints(ae_out)] == [2, 4]
            and (ae_out / "grid_0000004.png").is_file())
    model, ckpt = plain_ae(checkpoints(ae_out)[-1])
    assert (ckpt["step"] == 4 and ckpt["structured"]
            and ckpt["c_prime_candidates"] == model.c_prime_candidates)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert model.decode(model.encode(x)[:, :8]).shape == x.shape

    # Evaluation of the run (eval_ae.py): eval.json and the two figures in the run folder.
    ok(run("eval_ae.py", "--ae", ae_out, "--no-rfid", "--images", 8, "--c-primes", 8, 64,
           "--num-workers", 0))
    ev = json.loads((ae_out / "eval.json").read_text())  # strict JSON (no NaN)
    assert ev["images"] == 8 and [r["c_prime"] for r in ev["results"]] == [8, 64]
    assert all(5 < r["psnr"] < 60 for r in ev["results"])
    assert ((ae_out / "fig3_partial_channels.png").is_file()
            and (ae_out / "fig2a_latent_mean.png").is_file())

    # Diffusion on the trained AE, then resumed for one more step.
    common = ["--ae", ae_out, "--out", d_out, "--toy-size", 32, "--save-every", 2, *FAST]
    ok(run("train_diffusion.py", *common, "--steps", 2, "--grid-every", 2))
    assert (d_out / "samples_0000002.png").is_file() and (d_out / "latents/meta.json").is_file()
    ok(run("train_diffusion.py", *common, "--steps", 3))
    assert f"resumed from {d_out / 'ckpt_0000002.pt'} at step 2" in messages(d_out)
    assert steps_logged(d_out) == [1, 2, 3]
    model, ckpt = plain_backbone(checkpoints(d_out)[-1])
    assert ckpt["step"] == 3 and os.path.samefile(ckpt["ae"], ae_out / "ckpt_0000004.pt")
    assert model(torch.randn(2, 64, 4, 4), torch.rand(2), torch.tensor([0, 1])).shape[1] == 64


# ------------------------------------------------------------------------------------------------
# Two processes (torchrun, gloo, FSDP2) against one
# ------------------------------------------------------------------------------------------------

def test_two_process_ae_matches_one_process_and_is_sharded(tmp_path):
    """With the whole toy set as one global batch (8 images), --no-structured (c' = c on every
    rank) and fp32, the 2-rank run sees the same data and the same initial weights as the 1-rank
    run, and the mean of the two ranks' L1 means is the global L1 mean: losses, grad norms and the
    trained weights must agree to float tolerance."""
    args = ["--no-structured", "--no-bf16", "--toy-size", 8, "--steps", 3, "--save-every", 3,
            *FAST]
    ok(run("train_ae.py", *args, "--out", tmp_path / "one"))
    ok(run("train_ae.py", *args, "--out", tmp_path / "two", procs=2))
    one = [r for r in records(tmp_path / "one") if "step" in r]
    two = [r for r in records(tmp_path / "two") if "step" in r]
    assert [r["step"] for r in two] == [1, 2, 3] and all(r["c_prime"] == 64 for r in two)
    for a, b in zip(one, two):
        assert (b["l1"] == pytest.approx(a["l1"], rel=1e-5)
                and b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4))
    # the weights moved, so step 3 compares trained weights
    assert abs(one[-1]["l1"] - one[0]["l1"]) > 1e-3

    # Parameters are sharded: rank 0 holds about half of them (FSDP2 splits dim 0, rounding up).
    p1 = next(r for r in records(tmp_path / "one") if "params_local" in r)
    p2 = next(r for r in records(tmp_path / "two") if "params_local" in r)
    assert p1["params_local"] == p1["params"] == p2["params"]
    assert 0.45 < p2["params_local"] / p2["params"] < 0.6

    # The 2-rank checkpoint is a full state dict that loads into a plain model and equals the
    # 1-rank result.
    m1, _ = plain_ae(tmp_path / "one/ckpt_0000003.pt")
    m2, ckpt = plain_ae(tmp_path / "two/ckpt_0000003.pt")
    assert len(ckpt["rng"]) == 2
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)

    # Evaluation under torchrun: every rank evaluates its shard, the sums are reduced.
    ev = ["--no-rfid", "--images", 8, "--c-primes", 8, 64, "--num-workers", 0]
    ok(run("eval_ae.py", "--ae", tmp_path / "one", *ev))
    ok(run("eval_ae.py", "--ae", tmp_path / "two", *ev, procs=2, timeout=300))
    psnr = [[r["psnr"] for r in json.loads((tmp_path / d / "eval.json").read_text())["results"]]
            for d in ("one", "two")]
    assert psnr[1] == pytest.approx(psnr[0], rel=1e-4)
    assert (tmp_path / "two/fig3_partial_channels.png").is_file()


def test_two_process_diffusion_shards_loads_and_resumes_in_one_process(tmp_path):
    out = tmp_path / "d"
    args = ["--ae", "random:dc-ae-f8c16-tiny", "--out", out, "--toy-size", 32, "--save-every", 2,
            *FAST]
    ok(run("train_diffusion.py", *args, "--steps", 2, procs=2))
    meta = json.loads((out / "latents/meta.json").read_text())
    assert meta["parts"] == 2 and (out / "latents/part-0001.npy").is_file()
    p = next(r for r in records(out) if "params_local" in r)
    assert 0.45 < p["params_local"] / p["params"] < 0.6
    model, ckpt = plain_backbone(out / "ckpt_0000002.pt")
    assert len(ckpt["rng"]) == 2 and ckpt["latent_shape"] == [16, 4, 4]
    # A different world size resumes the full state dict (the cache of 2 parts is reused).
    ok(run("train_diffusion.py", *args, "--steps", 3))
    assert f"resumed from {out / 'ckpt_0000002.pt'} at step 2" in messages(out)
    assert steps_logged(out) == [1, 2, 3]


# ------------------------------------------------------------------------------------------------
# SIGKILL and resume
# ------------------------------------------------------------------------------------------------

def start(script, *args):
    return subprocess.Popen([sys.executable, str(REPO / script)] + [str(a) for a in args],
                            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc, ready, timeout=120):
    """SIGKILL proc as soon as ready() holds (polled every millisecond)."""
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() - t0 < timeout, "timed out waiting to kill"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("script", ["train_ae.py", "train_diffusion.py"])
def test_sigkill_during_write_and_during_training_resumes(tmp_path, script):
    out = tmp_path / "run"
    args = (["--out", out, "--save-every", 1, *FAST]
            + (["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", 32]
               if script == "train_diffusion.py" else []))
    # 1) Killed while a checkpoint is being written (a .tmp exists). Checkpoints every step keep
    # writes frequent.
    proc = start(script, *args, "--steps", 100_000)
    kill_when(proc, lambda: checkpoints(out) and glob.glob(str(out / "ckpt_*.tmp")))
    # The kill leaves a partial ckpt_{s1 + 1}.pt.<random>.tmp (it did in every trial). Should it
    # have landed just after the rename, write the partial file such a kill leaves, newer than
    # every complete checkpoint.
    last = checkpoints(out)[-1]
    s1, partial = step_of(last), None
    if not glob.glob(str(out / "ckpt_*.tmp")):
        partial = out / f"ckpt_{s1 + 50:07d}.pt.x.tmp"
        partial.write_bytes(Path(last).read_bytes()[: os.path.getsize(last) // 2])
    # complete and loadable
    assert plain_ae(last) if script == "train_ae.py" else plain_backbone(last)

    # 2) Resumed, then killed during training (no write in progress) after at least one more
    # checkpoint.
    proc = start(script, *args, "--steps", 100_000)
    kill_when(proc, lambda: checkpoints(out) and step_of(checkpoints(out)[-1]) >= s1 + 2
              # not writing (the run removed the dead writer's file)
              and not glob.glob(str(out / "ckpt_*.tmp")))
    assert f"resumed from {last} at step {s1}" in messages(out)
    s2 = step_of(checkpoints(out)[-1])

    # 3) Resumed at the newest complete checkpoint, finishes 2 more steps.
    n_before = len(records(out))
    ok(run(script, *args, "--steps", s2 + 2))
    new = records(out)[n_before:]
    assert any(r.get("message") == f"resumed from {out / f'ckpt_{s2:07d}.pt'} at step {s2}"
               for r in new)
    assert [r["step"] for r in new if "step" in r] == [s2 + 1, s2 + 2]
    assert step_of(checkpoints(out)[-1]) == s2 + 2
    assert (torch.load(checkpoints(out)[-1], map_location="cpu", weights_only=False)["step"]
            == s2 + 2)


# ------------------------------------------------------------------------------------------------
# Corrupt images, NaN loss
# ------------------------------------------------------------------------------------------------

def test_corrupt_image_is_skipped(tmp_path, capsys):
    """A folder of 7 readable PNGs and one garbage .jpg, batch 8: every epoch meets the broken file
    once."""
    g = torch.Generator().manual_seed(0)
    for i in range(7):
        (tmp_path / "data" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        arr = torch.randint(0, 256, (40, 48, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / "data" / f"class{i % 2}" / f"{i}.png")
    (tmp_path / "data/class1/broken.jpg").write_bytes(b"not a jpeg" * 50)
    proc = ok(run("train_ae.py", "--data", tmp_path / "data", "--out", tmp_path / "ae",
                  "--steps", 2, "--save-every", 2, *FAST))
    assert "skipping unreadable image" in proc.stderr and "broken.jpg" in proc.stderr
    last = [r for r in records(tmp_path / "ae") if "step" in r][-1]
    assert last["step"] == 2 and last["skipped"] == 2
    ok(run("train_diffusion.py", "--data", tmp_path / "data", "--ae", "random:dc-ae-f8c16-tiny",
           "--out", tmp_path / "d", "--steps", 1, *FAST))
    meta = json.loads((tmp_path / "d/latents/meta.json").read_text())
    assert meta["skipped"] == 1 and meta["num_classes"] == 2
    # A folder smaller than one batch would give an empty loader (drop_last): refused instead of
    # spinning forever.
    with pytest.raises(SystemExit) as e:
        train_ae.main(train_ae.parse_args(["--data", str(tmp_path / "data"),
                                           "--out", str(tmp_path / "big"),
                                           "--batch-size", "16", "--num-workers", "0"]))
    assert (e.value.code == 2
            and "have 8 images: fewer than one micro-batch of 16" in capsys.readouterr().err)


@pytest.mark.parametrize("script", ["train_ae.py", "train_diffusion.py"])
def test_nan_loss_stops_without_touching_last_checkpoint(tmp_path, script):
    """lr 1e30: the first Adam step moves every weight by ~lr, so the second forward overflows to
    inf / NaN. Step 1 is saved (its loss was finite); step 2's loss is not: the run stops with exit
    status 3 and writes nothing more."""
    out = tmp_path / "run"
    args = ["--out", out, *FAST] + (["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", 32]
                                    if script == "train_diffusion.py" else [])
    proc = run(script, *args, "--steps", 50, "--save-every", 1, "--lr", 1e30, "--warmup", 0)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    ckpt = out / "ckpt_0000001.pt"
    assert "non-finite loss by step 2" in proc.stdout and f"untouched: {ckpt}" in proc.stdout
    assert checkpoints(out) == [str(ckpt)] and not glob.glob(str(out / "*.tmp"))
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["step"] == 1
    assert steps_logged(out) == [1]  # the non-finite interval is not logged as if it were a result


# ------------------------------------------------------------------------------------------------
# Bad arguments fail before training, with a message naming the value (in-process: no startup cost)
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def other_checkpoints(tmp_path_factory):
    """Real one-step checkpoints of models the bad-argument runs do not ask for."""
    root = tmp_path_factory.mktemp("other")
    small = ["--steps", "1", "--save-every", "1", "--batch-size", "4", "--num-workers", "0",
             "--grid-every", "0"]
    train_ae.main(train_ae.parse_args(["--model", "dc-ae-f8c16-tiny",
                                       "--out", str(root / "ae"), *small]))
    train_diffusion.main(train_diffusion.parse_args(["--model", "DiT-tiny",
                                                     "--ae", "random:dc-ae-f8c16-tiny",
                                                     "--toy-size", "8",
                                                     "--out", str(root / "dit"), *small]))
    garbage = root / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 100)
    return {"ae": root / "ae/ckpt_0000001.pt", "dit": root / "dit/ckpt_0000001.pt",
            "garbage": garbage}


BAD_AE = [
    (["--resolution", "36"],
     "--resolution 36 is not a positive multiple of dc-ae-f8c64-tiny's f=8"),
    (["--c-prime-start", "65"], "c' list must lie in [1, c=64]: got --c-prime-start 65"),
    (["--c-prime-start", "0"], "c' list must lie in [1, c=64]: got --c-prime-start 0"),
    (["--c-prime-step", "0"], "--c-prime-step 0"),
    (["--data", "{tmp}/missing"], "--data folder not found: {tmp}/missing"),
    (["--resume", "{ae}"], "is a checkpoint of 'dc-ae-f8c16-tiny', not --model dc-ae-f8c64-tiny"),
    (["--resume", "{dit}"], "is a checkpoint of 'DiT-tiny', not --model dc-ae-f8c64-tiny"),
    (["--init", "{dit}"],
     "is a checkpoint of 'DiT-tiny', not of an AE of ae.py (a diffusion checkpoint"),
    (["--init", "{ae}"], "is 'dc-ae-f8c16-tiny', not --model dc-ae-f8c64-tiny"),
    (["--resume", "{garbage}"], "{garbage} is not a readable checkpoint"),
    (["--resume", "{tmp}/nope.pt"], "checkpoint not found: {tmp}/nope.pt"),
    (["--save-every", "0"], "--save-every must be >= 1, got 0"),
]
BAD_DIFFUSION = [
    (["--ae", "random:dc-ae-f8c16-tiny", "--resolution", "36"],
     "--resolution 36 is not a positive multiple of the AE's f=8"),
    (["--ae", "random:dc-ae-f8c16-tiny", "--aug-c-primes", "0", "8"],
     "--aug-c-primes [0, 8] must lie in [1, c=16]"),
    (["--ae", "random:dc-ae-f8c16-tiny", "--aug-c-primes", "8", "17"],
     "--aug-c-primes [8, 17] must lie in [1, c=16]"),
    (["--ae", "random:dc-ae-f8c16-tiny", "--data", "{tmp}/missing"],
     "--data folder not found: {tmp}/missing"),
    (["--ae", "random:dc-ae-f8c16-tiny", "--resume", "{ae}"],
     "is a checkpoint of 'dc-ae-f8c16-tiny', not --model USiT-tiny"),
    (["--ae", "random:dc-ae-f8c16-tiny", "--resume", "{dit}"],
     "is a checkpoint of 'DiT-tiny', not --model USiT-tiny"),
    (["--ae", "random:dc-ae-f8c64-tiny", "--model", "DiT-tiny", "--resume", "{dit}"],
     "was trained with latent_shape [16, 4, 4], this run has [64, 4, 4]"),
    (["--ae", "{dit}"],
     "is a checkpoint of 'DiT-tiny', not of an AE of ae.py (a diffusion checkpoint: "
     "pass it to --ckpt)"),
    ([], "--ae runs/ae: not found"),  # the default --ae, with no train_ae.py run in this folder
    (["--ae", "random:dc-ae-f8c16-tiny", "--accum", "0"], "--accum must be >= 1, got 0"),
]


@pytest.mark.parametrize("script,argv,message",
                         [("ae", *c) for c in BAD_AE] + [("diffusion", *c) for c in BAD_DIFFUSION])
def test_bad_argument_fails_fast(tmp_path, monkeypatch, capsys, other_checkpoints, script, argv,
                                 message):
    monkeypatch.chdir(tmp_path)
    fill = dict(tmp=tmp_path, **other_checkpoints)
    argv = ([a.format(**fill) for a in argv]
            + ["--out", str(tmp_path / "out"), "--num-workers", "0"])
    lib = train_ae if script == "ae" else train_diffusion
    with pytest.raises(SystemExit) as e:
        lib.main(lib.parse_args(argv))
    assert e.value.code == 2
    assert message.format(**fill) in capsys.readouterr().err
    # nothing written: it failed before the run folder was made
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# No arguments at all
# (the tiny recipes: 1000 AE steps, 1000 diffusion steps; about 2 min on 2 cores)
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_no_arguments(tmp_path):
    ok(run("train_ae.py", cwd=tmp_path, timeout=1800))
    ok(run("train_diffusion.py", cwd=tmp_path, timeout=1800))
    for run_dir, steps in (("runs/ae", train_ae.TINY_RECIPE["steps"]),
                           ("runs/diffusion", models.TINY["steps"])):
        assert step_of(checkpoints(tmp_path / run_dir)[-1]) == steps
        assert steps_logged(tmp_path / run_dir)[-1] == steps
    ae_l1 = [r["l1"] for r in records(tmp_path / "runs/ae") if "l1" in r]
    assert ae_l1[-1] < 0.6 * ae_l1[0]  # it trains
    plain_ae(checkpoints(tmp_path / "runs/ae")[-1])
    plain_backbone(checkpoints(tmp_path / "runs/diffusion")[-1])


# ------------------------------------------------------------------------------------------------
# The latent scale and precision of the cache (a released factor belongs to released weights only)
# ------------------------------------------------------------------------------------------------

def test_self_trained_ae_gets_its_own_latent_scale(tmp_path, monkeypatch, capsys):
    """A train_ae.py checkpoint of an entry whose *released* weights have a published factor (here
    a tiny stand-in with 0.5935, like dc-ae-f64c128-1.5) must not inherit it: train_diffusion.py
    scales by 1 / std of its latents."""
    monkeypatch.setitem(ae_lib.AE_CONFIGS, "dc-ae-f8c16-tiny-released",
                        dataclasses.replace(ae_lib.AE_CONFIGS["dc-ae-f8c16-tiny"],
                                            scaling_factor=0.5935))
    small = ["--steps", "1", "--save-every", "1", "--batch-size", "4", "--num-workers", "0",
             "--grid-every", "0"]
    train_ae.main(train_ae.parse_args(["--model", "dc-ae-f8c16-tiny-released",
                                       "--out", str(tmp_path / "ae"), *small]))
    ckpt = checkpoints(tmp_path / "ae")[-1]
    assert checkpoints_lib.load_ae(ckpt).scaling_factor is None  # not the registry's 0.5935
    encoded = []
    real = ae_lib.DCAE.encode
    monkeypatch.setattr(ae_lib.DCAE, "encode",
                        lambda self, x: (encoded.append(torch.is_autocast_enabled("cpu"))
                                         or real(self, x)))
    train_diffusion.main(train_diffusion.parse_args(["--ae", str(tmp_path / "ae"),
                                                     "--toy-size", "8",
                                                     "--out", str(tmp_path / "d"), *small]))
    assert encoded and not any(encoded)  # the latent cache is encoded in fp32
    meta = json.loads((tmp_path / "d/latents/meta.json").read_text())
    saved = torch.load(checkpoints(tmp_path / "d")[-1], map_location="cpu", weights_only=False)
    assert saved["scaling_factor"] == pytest.approx(1 / meta["latent_std"])
    text = "\n".join(messages(tmp_path / "d"))
    assert (f"latent std {meta['latent_std']:.4f} x scale {1 / meta['latent_std']:.4f} = 1.000"
            in text)


def test_a_scale_that_does_not_fit_the_latents_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints_lib, "load_ae", lambda spec, device: checkpoints_lib.loaded(
        ae_lib.build_ae("dc-ae-f8c16-tiny"), "dc-ae-f8c16-tiny", spec, device,
        scaling_factor=50.0))
    (tmp_path / "ae").mkdir()
    small = ["--steps", "1", "--batch-size", "4", "--num-workers", "0", "--grid-every", "0",
             "--toy-size", "8"]
    train_diffusion.main(train_diffusion.parse_args(["--ae", str(tmp_path / "ae"),
                                                     "--out", str(tmp_path / "d"), *small]))
    assert any("WARNING: the scaled latents have std" in m for m in messages(tmp_path / "d"))


# ------------------------------------------------------------------------------------------------
# The precision policy (cli.precision): bf16 autocast for training on CUDA, fp32 on CPU, fp32 for
# evaluation
# ------------------------------------------------------------------------------------------------

def test_precision_policy(monkeypatch):
    import fsdp
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert cli.precision(cpu) == (False, "fp32 (CPU default; --bf16 to autocast)")
    assert cli.precision(cpu, True) == (True, "bf16 autocast (--bf16)")
    assert (cli.precision(cpu, False, evaluation=True, flag="--ae-bf16")
            == (False, "fp32 (--no-ae-bf16)"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert cli.precision(cuda) == (True, "bf16 autocast (CUDA default; --no-bf16 for fp32)")
    assert cli.precision(cuda, False) == (False, "fp32 (--no-bf16)")
    assert (cli.precision(cuda, evaluation=True)
            == (False, "fp32 (the evaluation protocol; --bf16 to autocast)"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert cli.precision(cuda) == (False, "fp32 (this GPU has no bf16; --bf16 to autocast)")


@pytest.mark.parametrize("bf16", [None, True])
def test_trainers_follow_the_precision_policy(tmp_path, monkeypatch, bf16):
    """On CPU both trainers train in fp32 unless --bf16 asks for autocast; the run log says which
    and why. The latent cache is encoded in fp32 either way (the evaluation protocol)."""
    autocast = {"ae": [], "backbone": [], "encode": []}

    def spy(cls, method, key):
        real = getattr(cls, method)
        monkeypatch.setattr(cls, method, lambda self, *a, **k: (
            autocast[key].append(torch.is_autocast_enabled("cpu")) or real(self, *a, **k)))
    spy(ae_lib.DCAE, "forward", "ae")
    spy(ae_lib.DCAE, "encode", "encode")
    spy(models.UViT, "forward", "backbone")
    flag = [] if bf16 is None else ["--bf16"]
    small = ["--steps", "1", "--save-every", "1", "--batch-size", "4", "--num-workers", "0",
             "--grid-every", "0", *flag]
    train_ae.main(train_ae.parse_args(["--model", "dc-ae-f8c16-tiny",
                                       "--out", str(tmp_path / "ae"), *small]))
    autocast["encode"].clear()  # from here on: the latent cache's encodes only
    train_diffusion.main(train_diffusion.parse_args(["--ae", "random:dc-ae-f8c16-tiny",
                                                     "--toy-size", "8",
                                                     "--out", str(tmp_path / "d"), *small]))
    want = ("precision: bf16 autocast (--bf16)" if bf16
            else "precision: fp32 (CPU default; --bf16 to autocast)")
    assert any(m.startswith(f"{want}; ") for m in messages(tmp_path / "ae"))  # then the machine
    cache = f"{want}; latent cache: fp32 (the evaluation protocol; --ae-bf16 to autocast); "
    assert any(m.startswith(cache) for m in messages(tmp_path / "d"))
    assert autocast["ae"] == [bool(bf16)] and set(autocast["backbone"]) == {bool(bf16)}
    assert autocast["encode"] and not any(autocast["encode"])
    # the resolved value is recorded
    assert json.loads((tmp_path / "ae/args.json").read_text())["bf16"] is bool(bf16)
