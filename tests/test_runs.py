"""Runs that survive anything (fsdp.py, both trainers): a resumed run equals the uninterrupted one bit for bit, a run
folder holds one run at a time, torchrun's workers die with their launcher, SIGTERM saves and stops, metrics.jsonl
tells one history, the logged loss is the mean of the per-step losses, and torchrun with one process shards through
FSDP2. CPU, tiny models; about a minute on 2 cores.

    python -m pytest -q tests/test_runs.py
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train_ae
import train_diffusion
from conftest import records

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def steps_logged(out):
    return [r["step"] for r in records(out) if "step" in r]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_state(a, b, where=""):
    """Every tensor of two (nested) state dicts is equal, bit for bit."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 random PNGs in two classes: 3 batches of 4 per epoch, so a checkpoint at step 2 is mid-epoch."""
    root = tmp_path_factory.mktemp("images")
    g = np.random.default_rng(0)
    for i in range(12):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(g.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------------
# Exact resume: stopped at step 2 and resumed to 5 == run to 5 without stopping
# ------------------------------------------------------------------------------------------------

def test_ae_resume_is_bit_exact(tmp_path, image_folder):
    """Mid-epoch, with random flips, two c' per step, the GAN and its BatchNorm, and a loader worker."""
    common = ["--data", str(image_folder), "--batch-size", "4", "--num-c-primes", "2", "--gan-start", "1",
              "--num-workers", "1", "--grid-every", "2", "--log-every", "1", "--save-every", "2", "--no-bf16"]
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "a"), "--steps", "5"]))
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "2"]))
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "5"]))
    a, b = load(tmp_path / "a/ckpt_0000005.pt"), load(tmp_path / "b/ckpt_0000005.pt")
    for key in ("model", "ema", "opt", "disc", "opt_disc", "data"):
        assert_same_state(a[key], b[key], key)
    assert a["data"] == {"epoch": 1, "position": 2}
    # metrics.jsonl of the resumed run: one record per step, in order
    assert steps_logged(tmp_path / "b") == [1, 2, 3, 4, 5]


def test_diffusion_resume_is_bit_exact(tmp_path):
    """Noise, t, c' (--aug extra), label dropout, the data order and the preview grids' RNG isolation."""
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "24", "--batch-size", "8", "--num-workers", "0",
              "--grid-every", "2", "--grid-steps", "2", "--grid-cols", "1", "--log-every", "1", "--save-every", "2",
              "--no-bf16", "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "a"), "--steps", "5"]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "2"]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "5"]))
    a, b = load(tmp_path / "a/ckpt_0000005.pt"), load(tmp_path / "b/ckpt_0000005.pt")
    for key in ("model", "ema", "opt", "data"):
        assert_same_state(a[key], b[key], key)
    assert steps_logged(tmp_path / "b") == [1, 2, 3, 4, 5]


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    """A run killed after logging steps 3-4 but before saving them resumes at 2: metrics.jsonl keeps one history."""
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8", "--num-workers", "0",
              "--grid-every", "0", "--log-every", "1", "--save-every", "2", "--out", str(tmp_path)]
    train_diffusion.main(train_diffusion.parse_args(common + ["--steps", "4"]))
    os.remove(tmp_path / "ckpt_0000004.pt")
    train_diffusion.main(train_diffusion.parse_args(common + ["--steps", "5", "--resume", str(tmp_path)]))  # a folder
    assert steps_logged(tmp_path) == [1, 2, 3, 4, 5]
    assert f"resumed from {tmp_path / 'ckpt_0000002.pt'} at step 2" in [r.get("message") for r in records(tmp_path)]


def test_logged_loss_is_the_mean_of_the_steps_since_the_last_log(tmp_path):
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8", "--num-workers", "0",
              "--grid-every", "0", "--steps", "6", "--save-every", "6", "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args(common + ["--log-every", "1", "--out", str(tmp_path / "a")]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--log-every", "3", "--out", str(tmp_path / "b")]))
    every = {r["step"]: r for r in records(tmp_path / "a") if "step" in r}
    third = {r["step"]: r for r in records(tmp_path / "b") if "step" in r}
    assert sorted(every) == list(range(1, 7)) and sorted(third) == [3, 6]
    for end in (3, 6):
        for key in ("loss", "mse", "grad_norm"):
            mean = sum(every[s][key] for s in range(end - 2, end + 1)) / 3
            assert third[end][key] == pytest.approx(mean, rel=1e-6), (end, key)


# ------------------------------------------------------------------------------------------------
# One run per folder; workers that die with torchrun; SIGTERM
# ------------------------------------------------------------------------------------------------

def start(args, procs=None):
    """train_diffusion.py as `python` (procs None) or under torchrun with `procs` processes."""
    launch = [sys.executable] if procs is None else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      f"--nproc_per_node={procs}"]
    return subprocess.Popen(launch + [str(REPO / "train_diffusion.py")] + [str(a) for a in args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, timeout=120, proc=None):
    t0 = time.time()
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate() if proc else ""
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def trained_steps(out):
    return steps_logged(out) if os.path.isfile(os.path.join(out, "metrics.jsonl")) else []


LONG = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8", "--num-workers", "0", "--grid-every", "0",
        "--log-every", "1", "--save-every", "5", "--steps", "100000"]


def test_a_second_run_in_the_same_folder_refuses_to_start(tmp_path):
    first = start(LONG + ["--out", tmp_path])
    try:
        wait_for(lambda: trained_steps(tmp_path), proc=first)
        second = subprocess.run([sys.executable, str(REPO / "train_diffusion.py"), *map(str, LONG), "--out",
                                 str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if not line.startswith("WARNING: --ae")]
        assert errors == [f"error: {tmp_path} is in use by another run (pid {first.pid}); wait for it, stop it, or "
                          f"pass another --out"]
    finally:
        first.kill()
        first.wait()
    # The kernel released the lock with the killed process: the same command resumes.
    done = subprocess.run([sys.executable, str(REPO / "train_diffusion.py"), *map(str, LONG[:-1]), "12", "--out",
                           str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout


def children(pid):
    """Pids whose parent is pid (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_torchrun_workers_exit_when_the_launcher_is_killed(tmp_path):
    launcher = start(LONG + ["--out", tmp_path], procs=2)
    try:
        wait_for(lambda: trained_steps(tmp_path), timeout=180, proc=launcher)
        workers = children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        wait_for(lambda: not any(alive(p) for p in workers), timeout=15)  # they noticed and exited
    finally:
        launcher.kill()
        for p in children(launcher.pid):
            os.kill(p, signal.SIGKILL)


def test_sigterm_saves_and_stops(tmp_path):
    proc = start(LONG + ["--out", tmp_path, "--save-every", "100000"])
    wait_for(lambda: len(trained_steps(tmp_path)) >= 3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = steps_logged(tmp_path)[-1]
    assert os.path.isfile(tmp_path / f"ckpt_{last:07d}.pt")  # saved at the step it stopped
    assert f"stopped by SIGTERM at step {last} after saving" in out


def test_torchrun_with_one_process_shards_with_fsdp2(tmp_path):
    proc = start(["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8", "--num-workers", "0",
                  "--grid-every", "0", "--steps", "2", "--out", tmp_path], procs=1)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert "1 rank(s) on cpu sharded with FSDP2" in out
    ckpt = load(tmp_path / "ckpt_0000002.pt")  # a full state dict, as from 8 ranks
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 1
    assert "sharded with FSDP2" not in subprocess.run(
        [sys.executable, str(REPO / "train_diffusion.py"), "--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16",
         "--batch-size", "8", "--num-workers", "0", "--grid-every", "0", "--steps", "3", "--out", str(tmp_path)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120).stdout  # one process without torchrun
