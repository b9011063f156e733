"""What real clusters and real files do to a run, and what the scripts promise back (README: runs
that survive anything): a signal to the whole process group saves and stops cleanly (DataLoader
workers included), also while the latent cache is encoded; an --out that is a file, read-only or
full gets one line and the last checkpoint stays intact; a resume that changes any option outside
run.MAY_CHANGE, a checkpoint or cache of another class list, a truncated checkpoint are refused in
one line; an older checkpoint says what it lacks; a damaged or interrupted latent cache is
rebuilt, byte for byte; odd image files are read right; numbers that are not numbers are refused;
sample.py holds its folder's lock; files have the mode of a plain open(); and the EMA of a
BatchNorm model carries its running statistics. The subprocess tests are slow (-m slow); each has
an in-process twin here or in test_runs.py, named in its docstring.

    python -m pytest -q tests/test_faults.py
"""
import contextlib
import gc
import glob
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import batches
import checkpoints
import data as data_lib
import evaluation
import fsdp
import latents
import models
import run
import sample
import train_ae
import train_diffusion
from conftest import HANG, alive, children, records

# In-process runs on one thread, as the subprocess tests run (OMP_NUM_THREADS=1): on a busy 2-core
# machine a second intra-op thread only spin-waits (conftest.one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
TINY_DIFFUSION = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8",
                  "--grid-every", "0", "--log-every", "1"]


def steps_logged(out):
    return ([r["step"] for r in records(out) if "step" in r]
            if os.path.isfile(os.path.join(out, "metrics.jsonl")) else [])


def one_error_line(capsys, exc, code=2):
    """A script's SystemExit: the exit status and exactly one `error: ...` line on stderr (warnings
    aside)."""
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.strip() and not line.startswith("WARNING")]
    assert (exc.value.code == code and len(errors) == 1
            and errors[0].startswith("error: ")), (exc.value.code, errors)
    return errors[0]


def wait_for(condition, proc, timeout=HANG):
    t0 = time.time()
    while not condition():
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


@pytest.fixture
def disk(tmp_path):
    """mount(size, readonly) -> a fresh tmpfs folder of that many bytes (skipped where no tmpfs can
    be mounted)."""
    mounted = []

    def mount(size, readonly=False):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        try:
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                               capture_output=True, text=True, timeout=HANG)
        except OSError as e:
            pytest.skip(f"no mount command here: {e}")
        if p.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=HANG)


# ------------------------------------------------------------------------------------------------
# 1. A signal to the whole process group (scancel, preemption, `timeout`, Ctrl-C in a terminal)
# ------------------------------------------------------------------------------------------------

def start_group(argv, procs=None):
    """A script in a process group of its own, as a job under Slurm or a command in a terminal."""
    launch = [sys.executable] if procs is None else [sys.executable, "-m", "torch.distributed.run",
                                                      "--standalone", f"--nproc_per_node={procs}"]
    return subprocess.Popen(launch + [str(a) for a in argv], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


SCRIPTS = {  # script -> arguments; train_ae.py reads its batches through 2 DataLoader workers
    "train_ae.py": ["--model", "dc-ae-f8c16-tiny", "--batch-size", "4", "--num-workers", "2",
                    "--grid-every", "0", "--log-every", "1", "--save-every", "100000",
                    "--toy-size", "64"],
    "train_diffusion.py": [*TINY_DIFFUSION, "--num-workers", "2", "--save-every", "100000"],
}


@pytest.mark.parametrize("script", [pytest.param("train_ae.py", marks=pytest.mark.slow),
                                    "train_diffusion.py"])
def test_group_sigterm_saves_and_stops_and_the_same_command_resumes(tmp_path, script):
    """Twin of the slow case: test_group_sigterm_in_process_saves_and_stops_*[train_ae-False]."""
    at = random.randint(2, 6)  # a random step: the signal must be safe wherever it lands
    argv = [REPO / script, *SCRIPTS[script], "--out", tmp_path]
    proc = start_group([*argv, "--steps", "100000"])
    wait_for(lambda: len(steps_logged(tmp_path)) >= at, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its DataLoader workers alike
    out, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signal.SIGTERM, (at, err[-3000:])
    assert "Traceback" not in err and "DataLoader worker" not in err, (at, err[-3000:])
    last = steps_logged(tmp_path)[-1]
    assert (f"stopped by SIGTERM at step {last} after saving" in out
            and (tmp_path / f"ckpt_{last:07d}.pt").is_file())
    # the same command, in this process (faster)
    lib = train_ae if script == "train_ae.py" else train_diffusion
    lib.main(lib.parse_args([*map(str, argv[1:]), "--steps", str(last + 2)]))
    assert (f"resumed from {tmp_path / f'ckpt_{last:07d}.pt'} at step {last}"
            in [r.get("message") for r in records(tmp_path)])
    assert steps_logged(tmp_path)[-2:] == [last + 1, last + 2]


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_group_sigterm_under_torchrun_saves_on_every_rank_and_stops(tmp_path, script):
    """torchrun's agent receives the signal too and forwards it; the ranks agree at the next sync
    point, save once and stop. The only traceback is the agent's own report of the signal
    (torchrun's behaviour). Twin: test_group_sigterm_in_process_saves_and_stops_*[*-True]
    (torchrun's environment)."""
    proc = start_group([REPO / script, *SCRIPTS[script], "--num-workers", "1", "--batch-size", "8",
                        "--steps", "100000", "--out", tmp_path], procs=2)
    wait_for(lambda: len(steps_logged(tmp_path)) >= random.randint(2, 5), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG)
    last = steps_logged(tmp_path)[-1]
    assert f"stopped by SIGTERM at step {last} after saving" in out, err[-3000:]
    assert (tmp_path / f"ckpt_{last:07d}.pt").is_file() and not glob.glob(str(tmp_path / "*.tmp"))
    assert ("DataLoader worker" not in err and err.count("Traceback") <= 1
            and "SignalException" in err), err[-3000:]


def group_signal_at(monkeypatch, at):
    """In this process, what a signal to the whole process group does mid-run: at training step
    `at` (just after its EMA update) SIGTERM goes to this process and its live DataLoader workers
    at once."""
    update = fsdp.ema_update

    def update_then_signal(*args):
        update(*args)
        if args[3] == at:  # args: ema, model, decay, step + 1, warm-up
            me = open("/proc/self/cmdline", "rb").read()
            workers = [p for p in children(os.getpid())
                       if alive(p) and open(f"/proc/{p}/cmdline", "rb").read() == me]
            for pid in workers + [os.getpid()]:
                os.kill(pid, signal.SIGTERM)
    monkeypatch.setattr(fsdp, "ema_update", update_then_signal)


@contextlib.contextmanager
def sigterm_must_be_handled():
    """The code inside installs its own SIGTERM handler. Should it not, the signal a test sends
    to this process fails that test here instead of ending the test session."""
    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached code that does not handle it")
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("script, torchrun", [("train_ae.py", False), ("train_ae.py", True),
                                              ("train_diffusion.py", True)],
                         ids=["train_ae-False", "train_ae-True", "train_diffusion-True"])
def test_group_sigterm_in_process_saves_and_stops_and_the_same_command_resumes(
        tmp_path, capfd, monkeypatch, request, script, torchrun):
    """The twin of the subprocess group-signal tests: the trainer (with 2 DataLoader workers for
    train_ae), in this process, alone or with torchrun's environment (a gloo group, FSDP2);
    SIGTERM to it and its workers at a random step. The workers live on, the run saves at the
    next sync point and stops with 128 + 15; the same command resumes there."""
    if torchrun:
        request.getfixturevalue("torchrun_env")
    at = random.randint(2, 4)
    lib = train_ae if script == "train_ae.py" else train_diffusion
    argv = [*map(str, SCRIPTS[script]), "--out", str(tmp_path)]
    group_signal_at(monkeypatch, at)
    with sigterm_must_be_handled(), pytest.raises(SystemExit) as e:
        lib.main(lib.parse_args([*argv, "--steps", "100000"]))
    out, err = capfd.readouterr()
    assert e.value.code == 128 + signal.SIGTERM, (at, err[-3000:])
    del e  # its traceback holds the stopped run's loader; freed, the loader ends its workers
    gc.collect()
    wait_for(lambda: not [p for p in children(os.getpid()) if alive(p)], None, timeout=60)
    assert "Traceback" not in err and "DataLoader worker" not in err, (at, err[-3000:])
    assert f"stopped by SIGTERM at step {at} after saving" in out
    assert (tmp_path / f"ckpt_{at:07d}.pt").is_file() and steps_logged(tmp_path)[-1] == at
    assert ("sharded with FSDP2" in out) == torchrun
    monkeypatch.undo()  # the same command again, without the signal (and as one process)
    lib.main(lib.parse_args([*argv, "--steps", str(at + 2)]))
    messages = [r.get("message") for r in records(tmp_path)]
    assert f"resumed from {tmp_path / f'ckpt_{at:07d}.pt'} at step {at}" in messages
    assert steps_logged(tmp_path)[-2:] == [at + 1, at + 2]


@pytest.mark.slow
def test_group_sigterm_keeps_the_finished_sample_chunks_and_the_rerun_samples_the_rest(
        tmp_path, ckpt_folder, one_thread):
    """Twin: test_sigterm_in_process_keeps_the_finished_sample_chunks_*."""
    argv = [REPO / "sample.py", "--ckpt", ckpt_folder, "--num-samples", "32", "--batch-size", "4",
            "--sampler", "euler", "--steps", "30", "--out", tmp_path / "s"]
    proc = start_group(argv)
    wait_for(lambda: (len(glob.glob(str(tmp_path / "s/shards/chunk_*.npz")))
                      >= random.randint(1, 3)), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG)
    done = sorted(glob.glob(str(tmp_path / "s/shards/chunk_*.npz")))
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert f"stopped by SIGTERM: {len(done)} of 8 chunks are in" in err and 0 < len(done) < 8
    assert not glob.glob(str(tmp_path / "s/shards/*.tmp"))  # the chunk being written left nothing
    kept = {p: os.stat(p).st_mtime_ns for p in done}
    # the same command again (in-process)
    sample.main(sample.parse_args([*map(str, argv[1:]), "--keep-shards"]))
    # the finished chunks were not sampled again
    assert all(os.stat(p).st_mtime_ns == t for p, t in kept.items())
    # an uninterrupted run
    sample.main(sample.parse_args([*map(str, argv[1:-1]), str(tmp_path / "fresh")]))
    with np.load(tmp_path / "s/samples.npz") as a, np.load(tmp_path / "fresh/samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])


def test_sigterm_in_process_keeps_the_finished_sample_chunks_and_the_rerun_samples_the_rest(
        tmp_path, ckpt_folder, capsys, monkeypatch):
    """sample.py in this process, SIGTERM while it samples chunk 2 of 8: one line, exit status
    128 + 15, chunks 0-1 kept, no temp file; the same command samples only chunks 2-7, and
    samples.npz equals an uninterrupted run's."""
    argv = ["--ckpt", str(ckpt_folder), "--num-samples", "32", "--batch-size", "4", "--sampler",
            "euler", "--steps", "4", "--out", str(tmp_path / "s")]
    generate, seeds = evaluation.generate, []

    def signal_on_third(*args, **kwargs):  # args[6]: the chunk's noise seed, chunk_seed(0, k) = k
        if len(seeds) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        seeds.append(args[6])
        return generate(*args, **kwargs)
    monkeypatch.setattr(evaluation, "generate", signal_on_third)
    with sigterm_must_be_handled(), pytest.raises(SystemExit) as e:
        sample.main(sample.parse_args(argv))
    assert e.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"stopped by SIGTERM: 2 of 8 chunks are in {tmp_path / 's'}/shards; run the same command "
        f"to sample the rest")
    shards = sorted(os.listdir(tmp_path / "s" / "shards"))
    assert shards == ["chunk_000000.npz", "chunk_000001.npz"]  # and no temp file
    seeds.clear()
    monkeypatch.setattr(evaluation, "generate",
                        lambda *a, **k: seeds.append(a[6]) or generate(*a, **k))
    sample.main(sample.parse_args(argv))
    assert seeds == [2, 3, 4, 5, 6, 7]  # only the missing chunks
    monkeypatch.undo()
    sample.main(sample.parse_args([*argv[:-1], str(tmp_path / "fresh")]))  # an uninterrupted run
    with np.load(tmp_path / "s/samples.npz") as a, np.load(tmp_path / "fresh/samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])


@pytest.fixture(scope="module")
def ckpt_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("usit")
    train_diffusion.main(train_diffusion.parse_args([*TINY_DIFFUSION, "--steps", "1",
                                                     "--num-workers", "0", "--out", str(out)]))
    return out


# ------------------------------------------------------------------------------------------------
# 2. Disks that are full, read-only, or not folders
# ------------------------------------------------------------------------------------------------

def test_out_that_is_a_file_gets_one_line(tmp_path, capsys, ckpt_folder):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a user's file")
    for lib, argv in [(train_ae, []), (train_diffusion, TINY_DIFFUSION),
                      (sample, ["--ckpt", str(ckpt_folder), "--steps", "2",
                                "--sampler", "euler"])]:
        for out in (not_a_folder, not_a_folder / "run"):
            with pytest.raises(SystemExit) as e:
                lib.main(lib.parse_args([*argv, "--out", str(out),
                                         "--num-workers" if lib is not sample else "--seed", "0"]))
            assert (one_error_line(capsys, e)
                    == f"error: --out {out}: {not_a_folder} is a file, not a folder")
    assert not_a_folder.read_text() == "a user's file"


def test_read_only_out_gets_one_line(disk, capsys, ckpt_folder):
    ro = disk(1 << 20, readonly=True)
    for lib, argv in [(train_ae, ["--num-workers", "0"]),
                      (train_diffusion, [*TINY_DIFFUSION, "--num-workers", "0"]),
                      (sample, ["--ckpt", str(ckpt_folder)])]:
        with pytest.raises(SystemExit) as e:
            lib.main(lib.parse_args([*argv, "--out", str(ro / "run")]))
        assert (one_error_line(capsys, e)
                == f"error: --out {ro / 'run'}: cannot write in {ro} (read-only file system)")


def checkpoint_bytes():
    """About one USiT-tiny checkpoint on dc-ae-f8c16-tiny latents: model, EMA and two AdamW moments
    in fp32."""
    model = models.create_model("USiT-tiny", in_channels=16, input_size=4, num_classes=10)
    return 16 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("when", ["before the write", "during the write"])
def test_full_disk_at_a_checkpoint_stops_with_one_line_and_the_last_checkpoint_intact(
        tmp_path, disk, capsys, monkeypatch, when):
    """Room for one checkpoint and a half: step 1 is saved, step 2 does not fit. Either the space
    check sees it before writing, or (space check skipped) torch.save runs out of space mid-file;
    both end with one line naming the file, the bytes needed and the intact checkpoint, exit status
    4, and no partial file."""
    out = disk(int(1.5 * checkpoint_bytes()) + (64 << 10))
    if when == "during the write":
        monkeypatch.setattr(run, "enough_space", lambda folder, needed: True)
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--save-every", "1",
            "--cache", str(tmp_path / "latents")]
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "3",
                                                         "--out", str(out)]))
    line = one_error_line(capsys, e, code=4)
    first = out / "ckpt_0000001.pt"
    assert (line.startswith(f"error: cannot write {out / 'ckpt_0000002.pt'}: no space left on "
                            f"the device (")
            and " bytes needed, " in line
            and line.endswith(f"the last checkpoint is intact: {first}; free some space and "
                              f"run the same command to resume")), line
    # no temp file
    assert sorted(os.listdir(out)) == [".lock", "args.json", "ckpt_0000001.pt", "metrics.jsonl"]
    # complete and loadable
    assert torch.load(first, map_location="cpu", weights_only=False)["step"] == 1


def test_full_disk_at_the_latent_cache_stops_with_one_line_before_encoding(tmp_path, disk, capsys):
    """The space of a cache part is reserved before the first image is encoded: a disk too small
    for it ends the run at once, with one line naming the part and the bytes needed, exit status
    4, and no meta.json (no cache)."""
    cache = disk(256 << 10)
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--toy-size", "2000", "--steps", "1",
            "--cache", str(cache)]
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args([*argv, "--out", str(tmp_path / "run")]))
    line = one_error_line(capsys, e, code=4)
    # 2000 latents of 16 x 4 x 4 in fp16
    assert line.startswith(f"error: cannot write {cache / 'part-0000.npy'}: no space left on the "
                           f"device (1024000 bytes needed, "), line
    assert "meta.json" not in os.listdir(cache)
    assert latents.open_cache(str(cache)) == (None, None)


# ------------------------------------------------------------------------------------------------
# 3. Resume with a changed configuration, an older checkpoint, another class list; bad resumes
# ------------------------------------------------------------------------------------------------

def test_resume_refuses_changed_settings_and_allows_the_schedule_to_change(tmp_path, capsys):
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--out", str(tmp_path),
            "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "2"]))
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "4",
                                                         "--batch-size", "4", "--lr", "0.01"]))
    line = one_error_line(capsys, e)
    assert line.startswith(f"error: {tmp_path / 'ckpt_0000002.pt'} was trained with other "
                           f"settings; an exact resume needs the same: --batch-size 8 (now 4), "
                           f"--lr 0.001 (now 0.01). Pass the old values"), line
    assert steps_logged(tmp_path) == [1, 2]  # nothing trained
    train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "4", "--log-every", "2",
                                                     "--save-every", "4"]))
    assert steps_logged(tmp_path) == [1, 2, 4]


# Every option outside run.MAY_CHANGE, flipped on resume: each must be named in the one line that
# refuses it. One call per group: train_ae.py's --no-structured also resets the c' options, and
# --always takes one value. --model and, for the diffusion trainer, --resolution (the
# latent shape) are refused by start_run's `expect` first. "data": None -> a folder of images.
FLIPS = {
    train_ae: [
        {"data": None, "toy_size": ["--toy-size", "16"], "resolution": ["--resolution", "16"],
         "phase": ["--phase", "2"], "c_prime_start": ["--c-prime-start", "16"],
         "c_prime_step": ["--c-prime-step", "16"], "num_c_primes": ["--num-c-primes", "3"],
         "always": ["--always", "min-max"], "batch_size": ["--batch-size", "2"],
         "accum": ["--accum", "2"], "lr": ["--lr", "0.01"], "warmup": ["--warmup", "7"],
         "grad_clip": ["--grad-clip", "0.5"], "ema_decay": ["--ema-decay", "0.5"],
         "ema_warmup": ["--ema-warmup", "3"],
         "w_lpips": ["--w-lpips", "0.5"], "w_gan": ["--w-gan", "0.5"],
         "gan_start": ["--gan-start", "5"], "disc_lr": ["--disc-lr", "0.01"],
         "lpips_random": ["--lpips-random"], "bf16": ["--bf16"], "seed": ["--seed", "7"]},
        {"structured": ["--no-structured"]}],
    train_diffusion: [
        {"ae": ["--ae", "random:dc-ae-f8c16-tiny-1.0"], "data": None,
         "toy_size": ["--toy-size", "24"], "num_classes": ["--num-classes", "5"],
         "patch_size": ["--patch-size", "2"], "aug": ["--aug", "replace"],
         "aug_c_primes": ["--aug-c-primes", "8", "16"], "batch_size": ["--batch-size", "4"],
         "accum": ["--accum", "2"], "lr": ["--lr", "0.01"],
         "weight_decay": ["--weight-decay", "0.5"], "betas": ["--betas", "0.5", "0.5"],
         "warmup": ["--warmup", "7"],
         "grad_clip": ["--grad-clip", "0.5"], "ema_decay": ["--ema-decay", "0.5"],
         "ema_warmup": ["--ema-warmup", "3"], "bf16": ["--bf16"], "ae_bf16": ["--ae-bf16"],
         "seed": ["--seed", "7"]}],
}
REFUSED_FIRST = {
    train_ae: {"model": (["--model", "dc-ae-f8c16-tiny"],
                         "is a checkpoint of 'dc-ae-f8c64-tiny', not --model dc-ae-f8c16-tiny"),
               "finetune_decoder": (["--finetune-decoder", "4"],  # needs --init, checked first
                                    "--finetune-decoder 4 fine-tunes the decoder of a "
                                    "trained AE")},
    train_diffusion: {"model": (["--model", "DiT-tiny"],
                                "is a checkpoint of 'USiT-tiny', not --model DiT-tiny"),
                      "resolution": (["--resolution", "64"],
                                     "was trained with latent_shape [16, 4, 4], this run has "
                                     "[16, 8, 8]")}}


@pytest.mark.parametrize("lib", [train_ae, train_diffusion])
def test_resume_refuses_every_option_outside_the_may_change_list(tmp_path, capsys, lib):
    """Every argument not in run.MAY_CHANGE decides the numbers: a resume that changes any of them
    is not the run it continues. The one line names each changed option, and nothing is trained
    or written. The lists above must cover every such option of the trainer (a new option fails
    this test until it is added)."""
    untouchable = set(vars(lib.parse_args([]))) - set(run.MAY_CHANGE)
    assert untouchable == {k for group in FLIPS[lib] for k in group} | set(REFUSED_FIRST[lib])
    images = tmp_path / "images" / "c0"
    images.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((16, 16, 3), 30 * i, np.uint8)).save(images / f"{i}.png")
    diffusion = lib is train_diffusion
    base = ([*TINY_DIFFUSION, "--num-workers", "0"] if diffusion else
            ["--batch-size", "4", "--toy-size", "8", "--num-workers", "0", "--grid-every", "0"])
    out = tmp_path / "run"
    cache = ["--cache", str(tmp_path / "cache")] if diffusion else []
    lib.main(lib.parse_args([*base, *cache, "--steps", "1", "--out", str(out)]))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"}
    other_cache = ["--cache", str(tmp_path / "other")] if diffusion else []
    again = [*base, *other_cache, "--steps", "2", "--out", str(out)]
    capsys.readouterr()
    for group in FLIPS[lib]:
        flips = [a for option in group.values()
                 for a in option or ["--data", str(tmp_path / "images")]]
        with pytest.raises(SystemExit) as e:
            lib.main(lib.parse_args([*again, *flips]))
        line = one_error_line(capsys, e)
        named = line.split("an exact resume needs the same: ")[1].split(". Pass the old values")[0]
        for option in group:
            assert f"--{option.replace('_', '-')} " in named, (option, line)
        assert named.count(" (now ") == len(group), line  # nothing else
    for option, (flip, message) in REFUSED_FIRST[lib].items():
        with pytest.raises(SystemExit) as e:
            lib.main(lib.parse_args([*again, *flip]))
        assert message in one_error_line(capsys, e), option
    # Nothing written (the lock file holds each run's pid), no cache built.
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.name != ".lock"} == before
    assert not (tmp_path / "other").exists()


def test_an_older_checkpoint_says_what_it_lacks_and_what_that_changes(tmp_path, capsys,
                                                                      ckpt_folder):
    """A checkpoint without RNG states or data position (an older format) resumes from its
    weights, optimizer and step, with one WARNING line saying what is missing and that the run is
    not bit-exact (not "written by 0 rank(s)")."""
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--cache", str(ckpt_folder / "latents"),
            "--steps", "2"]
    ckpt = torch.load(ckpt_folder / "ckpt_0000001.pt", map_location="cpu", weights_only=False)
    cases = [(("rng", "data"), "holds no random-number state and no data position (an older "
                               "format): the run continues from its weights, optimizer state and "
                               "step 1, with the random streams of a fresh start and the data "
                               "order of epoch 0 from its start"),
             (("data",), "holds no data position (an older format): the run continues from its "
                         "weights, optimizer state and step 1, with the data order of epoch 0 "
                         "from its start")]
    for lacks, line in cases:
        out = tmp_path / "_".join(lacks)
        out.mkdir()
        torch.save({k: v for k, v in ckpt.items() if k not in lacks}, out / "ckpt_0000001.pt")
        capsys.readouterr()
        train_diffusion.main(train_diffusion.parse_args([*argv, "--out", str(out)]))
        err = capsys.readouterr().err.splitlines()
        assert [w for w in err if w.startswith("WARNING: the checkpoint")] == [
            f"WARNING: the checkpoint {line}; it will not equal an uninterrupted run bit for bit"]
        assert steps_logged(out) == [2]
        assert torch.load(out / "ckpt_0000002.pt", weights_only=False)["step"] == 2


def test_a_cache_or_a_resume_on_another_class_list_is_refused(tmp_path, capsys):
    """A folder with a_cls, b_empty, c_cls: the cache numbers c_cls 2 and records the three names;
    once b_empty is gone, the cache and a checkpoint of that class list are refused in one line
    (latents.check_classes, and run.start_run with expect["classes"], which train_diffusion.py is
    to pass them), and so are older ones (no names recorded) whose number of classes differs."""
    root = tmp_path / "data"
    for name in ("a_cls", "c_cls"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(root / name / f"{i}.png")
    (root / "b_empty").mkdir()
    cache = tmp_path / "cache"
    train_diffusion.main(train_diffusion.parse_args([
        *TINY_DIFFUSION, "--num-workers", "0", "--steps", "1", "--data", str(root),
        "--resolution", "16", "--cache", str(cache), "--out", str(tmp_path / "run")]))
    assert "data.py: class folder 'b_empty' (id 1) holds no images" in capsys.readouterr().err
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["classes"] == ["a_cls", "b_empty", "c_cls"] and meta["num_classes"] == 3
    assert np.load(cache / "labels-0000.npy").tolist() == [0] * 4 + [2] * 4
    latents.check_classes(str(cache), meta, data_lib.class_names(str(root)))  # the same: accepted
    (root / "b_empty").rmdir()
    now = data_lib.class_names(str(root))
    with pytest.raises(ValueError) as e:
        latents.check_classes(str(cache), meta, now)
    assert str(e.value) == (f"latent cache {cache} was built on another class list (3 classes "
                            f"then, 2 now; class 1 was 'b_empty', now 'c_cls'): its labels would "
                            f"name other classes; pass another --cache, or the --data it was "
                            f"built from")
    older = {k: v for k, v in meta.items() if k != "classes"}
    with pytest.raises(ValueError, match=r"\(3 classes then, 2 now; an empty class folder now "
                                         r"keeps its id\)"):
        latents.check_classes(str(cache), older, now)
    latents.check_classes(str(cache), older, ["x", "y", "z"])  # as many: no empty folder dropped

    # A resume: the checkpoint records the class list it was trained on.
    out = tmp_path / "resume"
    out.mkdir()
    args = train_diffusion.parse_args([*TINY_DIFFUSION, "--num-workers", "0", "--steps", "2",
                                       "--out", str(out)])
    settings = vars(run.resolve(args, models.MODELS[args.model].recipe))
    cases = [({"classes": meta["classes"]}, "another class list (3 classes then, 2 now; class 1 "
                                             "was 'b_empty', now 'c_cls'): its class ids would "
                                             "name other classes; pass the --data it was trained "
                                             "on, or another --out"),
             ({"num_classes": 3}, "another class list (3 classes then, 2 now; an empty class "
                                  "folder now keeps its id)"),
             ({"num_classes": 2}, None), ({"classes": now}, None)]
    for record, verdict in cases:
        torch.save({"args": settings, "model": {}, "step": 1, **record}, out / "ckpt_0000001.pt")
        expect = {"model": args.model, "classes": now}
        if verdict:
            with pytest.raises(SystemExit) as e:
                run.start_run(str(out), None, settings, 0, expect)
            line = one_error_line(capsys, e)
            assert line.startswith(f"error: {out / 'ckpt_0000001.pt'} was trained on {verdict}")
        else:
            assert (run.start_run(str(out), None, settings, 0, expect)[0]
                    == str(out / "ckpt_0000001.pt"))
        run.release_locks()


def test_bad_resumes_and_zero_steps_get_one_line(tmp_path, capsys, ckpt_folder):
    """A truncated checkpoint (a copy cut in half), --resume of a folder without checkpoints, and
    --steps 0: one line, exit status 2, before any compute, nothing written."""
    truncated = tmp_path / "cut.pt"
    whole = (ckpt_folder / "ckpt_0000001.pt").read_bytes()
    truncated.write_bytes(whole[:len(whole) // 2])
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["--resume", str(truncated)], f"error: {truncated} is not a readable checkpoint ("),
             (["--resume", str(empty)], f"error: --resume {empty}: no ckpt_*.pt in this folder"),
             (["--steps", "0"], "error: --steps must be >= 1, got 0")]
    for argv, message in cases:
        for lib, base in [(train_diffusion, [*TINY_DIFFUSION, "--cache",
                                             str(ckpt_folder / "latents")]),
                          (train_ae, [])]:
            with pytest.raises(SystemExit) as e:
                lib.main(lib.parse_args([*base, "--num-workers", "0", *argv, "--out",
                                         str(tmp_path / "run")]))
            assert one_error_line(capsys, e).startswith(message), (lib.__name__, argv)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# 4. A damaged latent cache is found before training and rebuilt
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, problem", [
    ("delete part", "part-0000.npy is missing"),
    ("truncate part", "part-0000.npy is truncated or unreadable"),
    ("truncate meta", "meta.json is unreadable (JSONDecodeError"),
    ("shorter labels", "labels-0000.npy holds (3,), meta.json records (16,)"),
])
def test_damaged_latent_cache_is_rebuilt(tmp_path, capsys, damage, problem):
    cache = tmp_path / "latents"
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--steps", "1", "--cache", str(cache)]
    train_diffusion.main(train_diffusion.parse_args([*argv, "--out", str(tmp_path / "a")]))
    intact = {name: (cache / name).read_bytes() for name in ("part-0000.npy", "labels-0000.npy")}
    if damage == "delete part":
        (cache / "part-0000.npy").unlink()
    elif damage == "truncate part":
        (cache / "part-0000.npy").write_bytes(intact["part-0000.npy"][:500])
    elif damage == "truncate meta":
        (cache / "meta.json").write_text((cache / "meta.json").read_text()[:40])
    else:
        np.save(cache / "labels-0000.npy", np.zeros(3, np.int64))
    capsys.readouterr()
    train_diffusion.main(train_diffusion.parse_args([*argv, "--out", str(tmp_path / "b")]))
    err = capsys.readouterr().err
    assert (f"latent cache {cache} is damaged: " in err and problem in err
            and "rebuilding it" in err), err
    # the same latents again
    assert {name: (cache / name).read_bytes() for name in intact} == intact
    assert latents.open_cache(str(cache))[1] is None


CACHE_BUILD = [*TINY_DIFFUSION, "--num-workers", "2", "--toy-size", "48", "--encode-batch", "4",
               "--steps", "1"]


def cache_files(cache):
    names = ("part-0000.npy", "labels-0000.npy", "meta.json")
    return {name: (cache / name).read_bytes() for name in names}


def test_an_interrupted_cache_build_is_rebuilt_bit_identical(tmp_path, monkeypatch, capsys):
    """SIGTERM to this process once it has encoded the third batch (2 DataLoader workers): one
    line, exit status 128 + 15, no meta.json (the cache is incomplete); the same command encodes
    it again, and the cache equals one built in one go by another run, byte for byte (two runs
    build one cache alike). Twin of test_group_sigterm_during_the_cache_build_*."""
    encode = latents.ae_lib.estimate_scaling_factor

    def signal_on_third(zs, **kwargs):
        def batches():
            for k, z in enumerate(zs):
                if k == 2:
                    os.kill(os.getpid(), signal.SIGTERM)
                yield z
        return encode(batches(), **kwargs)
    monkeypatch.setattr(latents.ae_lib, "estimate_scaling_factor", signal_on_third)
    argv = [*CACHE_BUILD, "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "a")]
    with sigterm_must_be_handled(), pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args(argv))
    assert e.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"stopped by SIGTERM while encoding the latent cache {tmp_path / 'cache'} (12 of 48 "
        f"images): it is incomplete (no meta.json); run the same command to encode it again")
    assert (tmp_path / "cache" / "part-0000.npy").is_file()
    assert not (tmp_path / "cache" / "meta.json").exists()
    del e
    run.release_locks()
    monkeypatch.undo()
    train_diffusion.main(train_diffusion.parse_args(argv))
    other = [*CACHE_BUILD, "--cache", str(tmp_path / "other"), "--out", str(tmp_path / "b")]
    train_diffusion.main(train_diffusion.parse_args(other))
    assert cache_files(tmp_path / "cache") == cache_files(tmp_path / "other")

    # A signal during the last batch: the cache is finished and kept, then the run stops.
    def signal_on_last(zs, **kwargs):
        def batches():
            for k, z in enumerate(zs):
                if k == 11:  # 48 images in batches of 4
                    os.kill(os.getpid(), signal.SIGTERM)
                yield z
        return encode(batches(), **kwargs)
    monkeypatch.setattr(latents.ae_lib, "estimate_scaling_factor", signal_on_last)
    last = [*CACHE_BUILD, "--cache", str(tmp_path / "last"), "--out", str(tmp_path / "c")]
    with sigterm_must_be_handled(), pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args(last))
    assert e.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"stopped by SIGTERM after encoding the latent cache {tmp_path / 'last'} (complete); run "
        f"the same command to train")
    assert cache_files(tmp_path / "last") == cache_files(tmp_path / "other")
    del e
    run.release_locks()


@pytest.mark.slow
def test_group_sigterm_during_the_cache_build_leaves_no_cache_and_the_same_command_builds_it(
        tmp_path):
    """SIGTERM to the whole group (2 DataLoader workers) while the latents are encoded: one line,
    exit status 128 + 15, no traceback (from the workers either), no meta.json; the same command
    encodes the cache again and trains. Twin: test_an_interrupted_cache_build_*."""
    argv = [*CACHE_BUILD, "--toy-size", "3000", "--cache", str(tmp_path / "cache"), "--out",
            str(tmp_path / "a")]
    proc = start_group([REPO / "train_diffusion.py", *argv])
    wait_for(lambda: (tmp_path / "cache" / "part-0000.npy").is_file(), proc)
    time.sleep(random.uniform(0.05, 0.5))  # encoding 3000 images takes seconds
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and err.splitlines()[-1].startswith(
        f"stopped by SIGTERM while encoding the latent cache {tmp_path / 'cache'} ("), err[-3000:]
    assert not (tmp_path / "cache" / "meta.json").exists()
    train_diffusion.main(train_diffusion.parse_args(argv))  # the twin compares with another build
    meta, damaged = latents.open_cache(str(tmp_path / "cache"))
    assert damaged is None and meta["lengths"] == [3000] and steps_logged(tmp_path / "a") == [1]


# ------------------------------------------------------------------------------------------------
# 5. Real image files: one reader everywhere
# ------------------------------------------------------------------------------------------------

def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    """16-bit levels v -> round(v * 255 / 65535): the 256 exact multiples of 257, and the values
    between them, where floor, ceil or v // 256 give other bytes (128 -> 0, 129 -> 1, 385 -> 1,
    386 -> 2, 65406 -> 254, 65407 -> 255)."""
    # 0, 257, ..., 65535: the 256 8-bit levels
    v = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(v).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = data_lib.read_image(str(tmp_path / "deep.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    assert (np.array_equal(rgb[..., 0], (v // 257).astype(np.uint8))
            and (rgb[..., 0] == rgb[..., 2]).all())
    between = np.array([1, 128, 129, 255, 256, 385, 386, 32767, 32768, 65406, 65407, 65408, 65534],
                       np.uint16)
    Image.fromarray(between[None]).save(tmp_path / "between.png")
    want = (2 * between.astype(np.int64) * 255 + 65535) // (2 * 65535)  # round half up, exactly
    assert want.tolist() == [0, 0, 1, 1, 1, 1, 2, 127, 128, 254, 255, 255, 255]
    assert data_lib.read_image(str(tmp_path / "between.png"))[0, :, 0].tolist() == want.tolist()


def test_a_bad_pixel_limit_is_one_line_before_any_compute(tmp_path, capsys, monkeypatch):
    (tmp_path / "data" / "c0").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "c0" / "0.png")
    monkeypatch.setenv("DCAE_MAX_IMAGE_PIXELS", "many")
    with pytest.raises(SystemExit) as e:
        train_ae.main(train_ae.parse_args(["--data", str(tmp_path / "data"), "--out",
                                           str(tmp_path / "run")]))
    assert one_error_line(capsys, e) == ("error: DCAE_MAX_IMAGE_PIXELS='many' is not a number of "
                                         "pixels (a whole number >= 0; 0: no limit)")
    assert not (tmp_path / "run").exists()


def test_one_image_folder_and_a_negative_seed_train(tmp_path, capsys):
    """The smallest data (one image, batch 1): both trainers run and resume. A negative --seed is
    refused in one line (seeds lie in [0, 2^63 - 1]: the per-rank and per-chunk seeds derived from
    it never overflow)."""
    (tmp_path / "one" / "c0").mkdir(parents=True)
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "one" / "c0" / "0.png")
    common = ["--data", str(tmp_path / "one"), "--resolution", "16", "--batch-size", "1",
              "--num-workers", "0", "--grid-every", "0", "--log-every", "1"]
    for lib, extra in [(train_ae, ["--model", "dc-ae-f8c16-tiny"]),
                       (train_diffusion, ["--ae", "random:dc-ae-f8c16-tiny"])]:
        out = tmp_path / lib.__name__
        with pytest.raises(SystemExit) as e:
            lib.parse_args([*common, *extra, "--seed", "-3", "--out", str(out)])
        assert e.value.code == 2 and capsys.readouterr().err.startswith(
            "error: argument --seed: -3 is not in [0, 9223372036854775807]")
        lib.main(lib.parse_args([*common, *extra, "--seed", "3", "--steps", "1",
                                 "--out", str(out)]))
        lib.main(lib.parse_args([*common, *extra, "--seed", "3", "--steps", "2",
                                 "--out", str(out)]))
        assert steps_logged(out) == [1, 2]
        assert all(np.isfinite(r["loss"]) for r in records(out) if "loss" in r)


def test_symlink_loop_lists_each_real_file_once(tmp_path):
    root = tmp_path / "data"
    (root / "c0").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / "c0" / f"{i}.png")
    os.symlink(root / "c0", root / "c0" / "loop")  # c0/loop/loop/... forever
    os.symlink(root / "c0" / "0.png", root / "c0" / "again.png")  # a second path to one file
    files = data_lib.list_images(str(root))
    assert [os.path.relpath(f, root) for f in files] == ["c0/0.png", "c0/1.png"]
    assert len(data_lib.ImageFolder(str(root), 8)) == 2


def test_exif_orientation_is_ignored_as_the_fid_readers_do(tmp_path):
    """pytorch-fid, ADM and torchvision's loader read the stored pixels; so do we (README: the
    data)."""
    a = np.zeros((8, 16, 3), np.uint8)
    a[:, :8] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees on display
    Image.fromarray(a).save(tmp_path / "rot.png", exif=exif)
    assert Image.open(tmp_path / "rot.png").getexif()[0x0112] == 6
    stored = data_lib.read_image(str(tmp_path / "rot.png"))
    assert stored.shape == (8, 16, 3) and np.array_equal(stored, a)
    folder = batches.Folder(str(tmp_path), [str(tmp_path / "rot.png")] * 2, num_workers=0)
    [(_, x, _)] = folder.batches(0, 2, 2)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy(), a)  # fid.py's reader is the same one


# ------------------------------------------------------------------------------------------------
# 6. Numbers that are not numbers; 7. one sample.py run per folder;
# 8. the EMA of a model with buffers
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lib, argv, message", [
    (sample, ["--ckpt", "x", "--cfg-scale", "nan"],
     "argument --cfg-scale: nan is not a finite number in [0, inf]"),
    (sample, ["--ckpt", "x", "--guidance-interval", "0.2", "1.5"],
     "argument --guidance-interval: 1.5 is not a finite number in [0, 1]"),
    (train_ae, ["--lr", "inf"], "argument --lr: inf is not a finite number in (0, inf]"),
    (train_ae, ["--lr", "0"], "argument --lr: 0 is not a finite number in (0, inf]"),
    (train_ae, ["--w-lpips", "-1"], "argument --w-lpips: -1 is not a finite number in [0, inf]"),
    (train_diffusion, ["--betas", "0.9", "1.5"],
     "argument --betas: 1.5 is not a finite number in [0, 1]"),
    (train_diffusion, ["--ema-decay", "nan"],
     "argument --ema-decay: nan is not a finite number in [0, 1]"),
    (train_diffusion, ["--save-minutes", "abc"], "argument --save-minutes: 'abc' is not a number"),
])
def test_numbers_must_be_finite_and_in_range(capsys, lib, argv, message):
    with pytest.raises(SystemExit) as e:
        lib.parse_args(argv)
    assert one_error_line(capsys, e).startswith(f"error: {message}")


@pytest.mark.slow
def test_a_second_sample_run_in_one_folder_refuses_to_start(tmp_path, ckpt_folder, capsys):
    """Twin: test_sample_in_a_locked_folder_refuses_to_start."""
    argv = [sys.executable, REPO / "sample.py", "--ckpt", ckpt_folder, "--num-samples", "400",
            "--batch-size", "4", "--sampler", "euler", "--steps", "40", "--out", tmp_path]
    first = subprocess.Popen([str(a) for a in argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: glob.glob(str(tmp_path / "shards/chunk_*.npz")), first)
        with pytest.raises(SystemExit) as e:  # the second run, in this process
            sample.main(sample.parse_args([str(a) for a in argv[2:]]))
        assert one_error_line(capsys, e) == (f"error: {tmp_path} is in use by another run "
                                             f"(pid {first.pid}); wait for it, stop it, or pass "
                                             f"another --out")
    finally:
        first.kill()
        first.wait()


def test_sample_in_a_locked_folder_refuses_to_start(tmp_path, ckpt_folder, capsys, lock_holder):
    holder = lock_holder(tmp_path)
    with pytest.raises(SystemExit) as e:
        sample.main(sample.parse_args(["--ckpt", str(ckpt_folder), "--num-samples", "4",
                                       "--sampler", "euler", "--steps", "2", "--out",
                                       str(tmp_path)]))
    assert one_error_line(capsys, e) == (f"error: {tmp_path} is in use by another run (pid "
                                         f"{holder.pid}); wait for it, stop it, or pass another "
                                         f"--out")
    assert os.listdir(tmp_path) == [".lock"]


def test_ema_of_a_batchnorm_ae_carries_the_running_statistics(tmp_path):
    """DC-AE 1.0's decoder normalises with BatchNorm: the EMA copy (which checkpoints.load_ae
    prefers) must hold the running statistics training produced, not those of the
    initialisation."""
    train_ae.main(train_ae.parse_args(["--model", "dc-ae-f8c16-tiny-1.0", "--steps", "3",
                                       "--batch-size", "4", "--num-workers", "0",
                                       "--grid-every", "0", "--out", str(tmp_path)]))
    ckpt = torch.load(tmp_path / "ckpt_0000003.pt", map_location="cpu", weights_only=False)
    stats = [k for k in ckpt["model"]
             if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in stats)
    assert all(ckpt["model"][k].item() == 3 for k in stats if k.endswith("num_batches_tracked"))
    loaded = checkpoints.load_ae(str(tmp_path / "ckpt_0000003.pt")).model
    trained = {k: v for k, v in loaded.state_dict().items() if k in stats}
    assert all(torch.equal(trained[k], ckpt["model"][k]) for k in stats)
    assert any(not torch.equal(trained[k], torch.zeros_like(trained[k]))
               for k in stats if k.endswith("running_mean"))


# ------------------------------------------------------------------------------------------------
# 9. Files others can read: the mode of a plain open() under the user's umask
# ------------------------------------------------------------------------------------------------

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o077, 0o600)], ids=["022", "077"])
def test_files_we_write_have_the_mode_of_a_plain_open(tmp_path, umask, want):
    """run.atomic_write goes through a temp file (mkstemp: 0600); the file it leaves has the mode
    open() would give: 0666 less the umask for a new file, the old mode for a file it replaces.
    So every file of a run folder and its latent cache (checkpoints, args.json, meta.json, parts,
    metrics.jsonl) is readable by others under umask 022."""
    old = os.umask(umask)
    try:
        run.atomic_write(str(tmp_path / "atomic"), lambda fh: fh.write(b"x"))
        open(tmp_path / "plain", "w").close()
        assert mode(tmp_path / "atomic") == mode(tmp_path / "plain") == want
        assert os.umask(umask) == umask  # reading the umask left it as it was
        os.chmod(tmp_path / "atomic", 0o640)
        run.atomic_write(str(tmp_path / "atomic"), lambda fh: fh.write(b"y"))
        assert mode(tmp_path / "atomic") == 0o640 and (tmp_path / "atomic").read_bytes() == b"y"
        train_diffusion.main(train_diffusion.parse_args([*TINY_DIFFUSION, "--num-workers", "0",
                                                         "--steps", "1", "--out",
                                                         str(tmp_path / "run")]))
    finally:
        os.umask(old)
    files = {p.name: mode(p) for p in (tmp_path / "run").rglob("*")
             if p.is_file() and p.name != ".lock"}
    assert set(files) >= {"ckpt_0000001.pt", "args.json", "metrics.jsonl", "meta.json",
                          "part-0000.npy", "labels-0000.npy"}
    assert files == {name: want for name in files}
