"""Runs that survive anything (fsdp.py, both trainers): a resumed run equals the uninterrupted one
bit for bit, a run folder holds one run at a time, torchrun's workers die with their launcher,
SIGTERM saves and stops, metrics.jsonl tells one history (a rerun from scratch sets the old one
aside), the logged loss is the mean of the per-step losses, and torchrun with one process shards
through FSDP2. CPU, tiny models; about a minute on 2 cores. The subprocess tests are slow
(-m slow); each has an in-process twin, named in its docstring.

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
from conftest import HANG, alive, children, records

# In-process runs on one thread, as the subprocess tests run (OMP_NUM_THREADS=1): on a busy 2-core
# machine a second intra-op thread only spin-waits (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

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
    """12 random PNGs in two classes: 3 batches of 4 per epoch, so a checkpoint at step 2 is
    mid-epoch."""
    root = tmp_path_factory.mktemp("images")
    g = np.random.default_rng(0)
    for i in range(12):
        (root / f"c{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(g.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
            root / f"c{i % 2}" / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------------
# Exact resume: stopped at step 2 and resumed to 5 == run to 5 without stopping
# ------------------------------------------------------------------------------------------------

def test_ae_resume_is_bit_exact(tmp_path, image_folder):
    """Mid-epoch, with random flips, two c' per step, the GAN and its BatchNorm, and a loader
    worker."""
    common = ["--data", str(image_folder), "--batch-size", "4", "--num-c-primes", "2",
              "--gan-start", "1", "--num-workers", "1", "--grid-every", "2", "--log-every", "1",
              "--save-every", "2", "--no-bf16"]
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "a"), "--steps", "4"]))
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "2"]))
    train_ae.main(train_ae.parse_args(common + ["--out", str(tmp_path / "b"), "--steps", "4"]))
    a, b = load(tmp_path / "a/ckpt_0000004.pt"), load(tmp_path / "b/ckpt_0000004.pt")
    for key in ("model", "ema", "opt", "disc", "opt_disc", "data"):
        assert_same_state(a[key], b[key], key)
    assert a["data"] == {"epoch": 1, "position": 1}  # past an epoch's end: the reshuffle resumes
    # metrics.jsonl of the resumed run: one record per step, in order
    assert steps_logged(tmp_path / "b") == [1, 2, 3, 4]


def test_diffusion_resume_is_bit_exact(tmp_path):
    """Noise, t, c' (--aug extra), label dropout, the data order and the preview grids' RNG
    isolation."""
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "24", "--batch-size", "8",
              "--num-workers", "0", "--grid-every", "2", "--log-every", "1", "--save-every", "2",
              "--no-bf16", "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "a"),
                                                              "--steps", "5"]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "b"),
                                                              "--steps", "2"]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--out", str(tmp_path / "b"),
                                                              "--steps", "5"]))
    a, b = load(tmp_path / "a/ckpt_0000005.pt"), load(tmp_path / "b/ckpt_0000005.pt")
    for key in ("model", "ema", "opt", "data"):
        assert_same_state(a[key], b[key], key)
    assert steps_logged(tmp_path / "b") == [1, 2, 3, 4, 5]


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    """A run killed after logging steps 3-4 but before saving them resumes at 2: metrics.jsonl
    keeps one history."""
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8",
              "--num-workers", "0", "--grid-every", "0", "--log-every", "1", "--save-every", "2",
              "--out", str(tmp_path)]
    train_diffusion.main(train_diffusion.parse_args(common + ["--steps", "4"]))
    os.remove(tmp_path / "ckpt_0000004.pt")
    train_diffusion.main(train_diffusion.parse_args(
        common + ["--steps", "5", "--resume", str(tmp_path)]))  # a folder
    assert steps_logged(tmp_path) == [1, 2, 3, 4, 5]
    assert (f"resumed from {tmp_path / 'ckpt_0000002.pt'} at step 2"
            in [r.get("message") for r in records(tmp_path)])


def test_a_rerun_from_scratch_sets_the_old_log_aside(tmp_path, capsys):
    """A run killed before its first checkpoint leaves a metrics.jsonl; the rerun starts from
    scratch, keeps the old file as metrics.1.jsonl (then .2, ...), says so in one line, and its
    metrics.jsonl tells one history."""
    argv = ["--model", "dc-ae-f8c16-tiny", "--steps", "2", "--batch-size", "4", "--num-workers",
            "0", "--grid-every", "0", "--log-every", "1", "--toy-size", "4", "--out",
            str(tmp_path)]
    train_ae.main(train_ae.parse_args(argv))
    first = (tmp_path / "metrics.jsonl").read_text()
    for k in (1, 2):
        for ckpt in tmp_path.glob("ckpt_*.pt"):  # killed before its first checkpoint
            ckpt.unlink()
        capsys.readouterr()
        train_ae.main(train_ae.parse_args(argv))
        line = (f"no checkpoint to resume in {tmp_path}: this run starts from scratch with a new "
                f"metrics.jsonl; the earlier run's is kept as metrics.{k}.jsonl")
        assert line in capsys.readouterr().out.splitlines()
        assert steps_logged(tmp_path) == [1, 2]
        messages = [r["message"] for r in records(tmp_path) if "message" in r]
        assert messages[0] == line and messages.count("started from random weights") == 1
    assert (tmp_path / "metrics.1.jsonl").read_text() == first  # nothing the user had is lost
    assert sorted(p.name for p in tmp_path.glob("metrics*.jsonl")) == [
        "metrics.1.jsonl", "metrics.2.jsonl", "metrics.jsonl"]


def test_logged_loss_is_the_mean_of_the_steps_since_the_last_log(tmp_path):
    common = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8",
              "--num-workers", "0", "--grid-every", "0", "--steps", "6", "--save-every", "6",
              "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args(common + ["--log-every", "1",
                                                              "--out", str(tmp_path / "a")]))
    train_diffusion.main(train_diffusion.parse_args(common + ["--log-every", "3",
                                                              "--out", str(tmp_path / "b")]))
    every = {r["step"]: r for r in records(tmp_path / "a") if "step" in r}
    third = {r["step"]: r for r in records(tmp_path / "b") if "step" in r}
    assert sorted(every) == list(range(1, 7)) and sorted(third) == [3, 6]
    for end in (3, 6):
        for key in ("loss", "mse", "grad_norm"):
            mean = sum(every[s][key] for s in range(end - 2, end + 1)) / 3
            assert third[end][key] == pytest.approx(mean, rel=1e-6), (end, key)


# ------------------------------------------------------------------------------------------------
# One run per folder; workers that die with torchrun; SIGTERM. The subprocess tests are slow (each
# starts Python and torch, minutes on a loaded 2-core CPU): they run with -m slow, and each has a
# fast in-process twin that keeps checking the same promise in the default suite.
# ------------------------------------------------------------------------------------------------

def start(args, procs=None):
    """train_diffusion.py as `python` (procs None) or under torchrun with `procs` processes."""
    launch = ([sys.executable] if procs is None
              else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={procs}"])
    return subprocess.Popen(launch + [str(REPO / "train_diffusion.py")] + [str(a) for a in args],
                            cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def script(*args):
    """train_diffusion.py with these arguments, run to its end (at most HANG seconds)."""
    return subprocess.run([sys.executable, str(REPO / "train_diffusion.py"), *map(str, args)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=HANG)


def wait_for(condition, timeout=HANG, proc=None):
    t0 = time.time()
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate() if proc else ""
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def trained_steps(out):
    return steps_logged(out) if os.path.isfile(os.path.join(out, "metrics.jsonl")) else []


LONG = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8",
        "--num-workers", "0", "--grid-every", "0",
        "--log-every", "1", "--save-every", "5", "--steps", "100000"]
SMALL_AE = ["--batch-size", "4", "--num-workers", "0", "--grid-every", "0", "--log-every", "1",
            "--toy-size", "8"]


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_refuses_to_start(tmp_path):
    """Twin: test_a_second_run_in_a_locked_folder_refuses_to_start."""
    first = start(LONG + ["--out", tmp_path])
    try:
        wait_for(lambda: trained_steps(tmp_path), proc=first)
        second = script(*LONG, "--out", tmp_path)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines()
                  if not line.startswith("WARNING: --ae")]
        assert errors == [f"error: {tmp_path} is in use by another run (pid {first.pid}); "
                          f"wait for it, stop it, or pass another --out"]
    finally:
        first.kill()
        first.wait()
    # The kernel released the lock with the killed process: the same command resumes.
    done = script(*LONG[:-1], "12", "--out", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout


@pytest.mark.parametrize("lib", [train_ae, train_diffusion])
def test_a_second_run_in_a_locked_folder_refuses_to_start(tmp_path, capsys, lock_holder, lib):
    """Two trainers on one --out: while another process holds the folder's lock (as a live run
    does), a run there is refused with one line naming that process; once it has died (the kernel
    drops its lock), the same command runs."""
    argv = [*(SMALL_AE if lib is train_ae else LONG[:-2]), "--steps", "1", "--out", str(tmp_path)]
    holder = lock_holder(tmp_path)
    with pytest.raises(SystemExit) as e:
        lib.main(lib.parse_args(argv))
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if not line.startswith("WARNING: --ae")]
    assert e.value.code == 2 and errors == [f"error: {tmp_path} is in use by another run (pid "
                                            f"{holder.pid}); wait for it, stop it, or pass "
                                            f"another --out"]
    assert sorted(os.listdir(tmp_path)) == [".lock"]  # nothing else was written
    holder.kill()
    holder.wait()
    lib.main(lib.parse_args(argv))
    assert steps_logged(tmp_path) == [1]


@pytest.mark.slow
def test_torchrun_workers_exit_when_the_launcher_is_killed(tmp_path):
    """Twin: test_a_rank_exits_when_its_launcher_is_killed."""
    launcher = start(LONG + ["--out", tmp_path], procs=2)
    try:
        wait_for(lambda: trained_steps(tmp_path), proc=launcher)
        workers = children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        wait_for(lambda: not any(alive(p) for p in workers), timeout=60)  # they noticed and exited
    finally:
        launcher.kill()
        for p in children(launcher.pid):
            os.kill(p, signal.SIGKILL)


def test_a_rank_exits_when_its_launcher_is_killed():
    """fsdp.exit_with_launcher, as torchrun's workers run it, in a grandchild of this process: its
    parent (the "launcher") is SIGKILLed once the watch runs, and the rank ends by itself."""
    import fsdp
    ready_r, ready_w = os.pipe()
    launcher = os.fork()
    if launcher == 0:  # the launcher: start a rank, wait until it watches, then die (`kill -9`)
        try:
            rank = os.fork()
            if rank == 0:
                try:
                    fsdp.exit_with_launcher(interval=0.05)
                    os.write(ready_w, f"{os.getpid()}\n".encode())
                    time.sleep(HANG)  # only the watch can end this early
                finally:
                    os._exit(0)
            os.read(ready_r, 64)
            os.write(ready_w, f"{rank}\n".encode())  # passed on to the test
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.close(ready_w)
    _, status = os.waitpid(launcher, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    rank = int(os.read(ready_r, 64).split()[-1])
    os.close(ready_r)
    try:
        wait_for(lambda: not alive(rank), timeout=60)
    finally:
        if alive(rank):
            os.kill(rank, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_saves_and_stops(tmp_path):
    """Twin: test_faults.py::test_group_sigterm_in_process_saves_and_stops_*."""
    proc = start(LONG + ["--out", tmp_path, "--save-every", "100000"])
    wait_for(lambda: len(trained_steps(tmp_path)) >= 3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    last = steps_logged(tmp_path)[-1]
    assert os.path.isfile(tmp_path / f"ckpt_{last:07d}.pt")  # saved at the step it stopped
    assert f"stopped by SIGTERM at step {last} after saving" in out


TORCHRUN_ONE = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8",
                "--num-workers", "0", "--grid-every", "0", "--steps", "2"]


@pytest.mark.slow
def test_torchrun_with_one_process_shards_with_fsdp2(tmp_path):
    """Twin: test_torchrun_environment_in_process_shards_with_fsdp2."""
    proc = start([*TORCHRUN_ONE, "--out", tmp_path], procs=1)
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 0, err[-2000:]
    assert "1 rank(s) on cpu sharded with FSDP2" in out
    ckpt = load(tmp_path / "ckpt_0000002.pt")  # a full state dict, as from 8 ranks
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 1
    alone = script(*TORCHRUN_ONE[:-1], "3", "--out", tmp_path)  # one process without torchrun
    assert "sharded with FSDP2" not in alone.stdout


def test_torchrun_environment_in_process_shards_with_fsdp2(tmp_path, capsys, monkeypatch,
                                                           torchrun_env):
    """torchrun's environment for one worker, in this process: a gloo group, FSDP2 shards, the
    checkpoint is a full state dict with one RNG state; the same command without it runs
    unsharded and resumes that checkpoint."""
    import torch.distributed as dist
    train_diffusion.main(train_diffusion.parse_args([*TORCHRUN_ONE, "--out", str(tmp_path)]))
    out = capsys.readouterr().out
    assert "1 rank(s) on cpu sharded with FSDP2" in out and not dist.is_initialized()
    ckpt = load(tmp_path / "ckpt_0000002.pt")
    assert ckpt["step"] == 2 and len(ckpt["rng"]) == 1
    assert all(type(v) is torch.Tensor for v in ckpt["model"].values())  # no DTensor: full
    monkeypatch.delenv("RANK")
    argv = [*TORCHRUN_ONE[:-1], "3", "--out", str(tmp_path)]
    train_diffusion.main(train_diffusion.parse_args(argv))
    out = capsys.readouterr().out
    assert "sharded with FSDP2" not in out and "1 rank(s) on cpu" in out
    assert steps_logged(tmp_path)[-1] == 3
