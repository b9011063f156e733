"""What real clusters and real files do to a run, and what the scripts promise back (README: runs that survive
anything): a signal to the whole process group saves and stops cleanly (DataLoader workers included), an --out that
is a file, read-only or full gets one line and the last checkpoint stays intact, a resume with other settings is
refused, a damaged latent cache is rebuilt, odd image files are read right, numbers that are not numbers are refused,
sample.py holds its folder's lock, and the EMA of a BatchNorm model carries its running statistics.

    python -m pytest -q tests/test_faults.py
"""
import glob
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoints
import data as data_lib
import latents
import models
import run
import sample
import train_ae
import train_diffusion
from conftest import records

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
TINY_DIFFUSION = ["--ae", "random:dc-ae-f8c16-tiny", "--toy-size", "16", "--batch-size", "8", "--grid-every", "0",
                  "--log-every", "1"]


def steps_logged(out):
    return [r["step"] for r in records(out) if "step" in r] if os.path.isfile(os.path.join(out, "metrics.jsonl")) else []


def one_error_line(capsys, exc, code=2):
    """A script's SystemExit: the exit status and exactly one `error: ...` line on stderr (warnings aside)."""
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert exc.value.code == code and len(errors) == 1 and errors[0].startswith("error: "), (exc.value.code, errors)
    return errors[0]


def wait_for(condition, proc, timeout=180):
    t0 = time.time()
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


@pytest.fixture
def disk(tmp_path):
    """mount(size, readonly) -> a fresh tmpfs folder of that many bytes (skipped where no tmpfs can be mounted)."""
    mounted = []

    def mount(size, readonly=False):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        try:
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        except OSError as e:
            pytest.skip(f"no mount command here: {e}")
        if p.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------
# 1. A signal to the whole process group (scancel, preemption, `timeout`, Ctrl-C in a terminal)
# ------------------------------------------------------------------------------------------------

def start_group(argv, procs=None):
    """A script in a process group of its own, as a job under Slurm or a command in a terminal."""
    launch = [sys.executable] if procs is None else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      f"--nproc_per_node={procs}"]
    return subprocess.Popen(launch + [str(a) for a in argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


SCRIPTS = {  # script -> arguments; train_ae.py reads its batches through 2 DataLoader workers
    "train_ae.py": ["--model", "dc-ae-f8c16-tiny", "--batch-size", "4", "--num-workers", "2", "--grid-every", "0",
                    "--log-every", "1", "--save-every", "100000", "--toy-size", "64"],
    "train_diffusion.py": [*TINY_DIFFUSION, "--num-workers", "2", "--save-every", "100000"],
}


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_group_sigterm_saves_and_stops_and_the_same_command_resumes(tmp_path, script):
    at = random.randint(2, 6)  # a random step: the signal must be safe wherever it lands
    argv = [REPO / script, *SCRIPTS[script], "--out", tmp_path]
    proc = start_group([*argv, "--steps", "100000"])
    wait_for(lambda: len(steps_logged(tmp_path)) >= at, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its DataLoader workers alike
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (at, err[-3000:])
    assert "Traceback" not in err and "DataLoader worker" not in err, (at, err[-3000:])
    last = steps_logged(tmp_path)[-1]
    assert f"stopped by SIGTERM at step {last} after saving" in out and (tmp_path / f"ckpt_{last:07d}.pt").is_file()
    lib = train_ae if script == "train_ae.py" else train_diffusion  # the same command, in this process (faster)
    lib.main(lib.parse_args([*map(str, argv[1:]), "--steps", str(last + 2)]))
    assert f"resumed from {tmp_path / f'ckpt_{last:07d}.pt'} at step {last}" in [r.get("message") for r in
                                                                              records(tmp_path)]
    assert steps_logged(tmp_path)[-2:] == [last + 1, last + 2]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_group_sigterm_under_torchrun_saves_on_every_rank_and_stops(tmp_path, script):
    """torchrun's agent receives the signal too and forwards it; the ranks agree at the next sync point, save once and
    stop. The only traceback is the agent's own report of the signal (torchrun's behaviour)."""
    proc = start_group([REPO / script, *SCRIPTS[script], "--num-workers", "1", "--batch-size", "8",
                        "--steps", "100000", "--out", tmp_path], procs=2)
    wait_for(lambda: len(steps_logged(tmp_path)) >= random.randint(2, 5), proc, timeout=240)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    last = steps_logged(tmp_path)[-1]
    assert f"stopped by SIGTERM at step {last} after saving" in out, err[-3000:]
    assert (tmp_path / f"ckpt_{last:07d}.pt").is_file() and not glob.glob(str(tmp_path / "*.tmp"))
    assert "DataLoader worker" not in err and err.count("Traceback") <= 1 and "SignalException" in err, err[-3000:]


def test_group_sigterm_keeps_the_finished_sample_chunks_and_the_rerun_samples_the_rest(tmp_path, ckpt_folder,
                                                                                       one_thread):
    argv = [REPO / "sample.py", "--ckpt", ckpt_folder, "--num-samples", "32", "--batch-size", "4", "--sampler",
            "euler", "--steps", "30", "--out", tmp_path / "s"]
    proc = start_group(argv)
    wait_for(lambda: len(glob.glob(str(tmp_path / "s/shards/chunk_*.npz"))) >= random.randint(1, 3), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    done = sorted(glob.glob(str(tmp_path / "s/shards/chunk_*.npz")))
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    assert f"stopped by SIGTERM: {len(done)} of 8 chunks are in" in err and 0 < len(done) < 8
    assert not glob.glob(str(tmp_path / "s/shards/*.tmp"))  # the chunk being written left nothing
    kept = {p: os.stat(p).st_mtime_ns for p in done}
    sample.main(sample.parse_args([*map(str, argv[1:]), "--keep-shards"]))  # the same command again (in-process)
    assert all(os.stat(p).st_mtime_ns == t for p, t in kept.items())  # the finished chunks were not sampled again
    sample.main(sample.parse_args([*map(str, argv[1:-1]), str(tmp_path / "fresh")]))  # an uninterrupted run
    with np.load(tmp_path / "s/samples.npz") as a, np.load(tmp_path / "fresh/samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])


@pytest.fixture(scope="module")
def ckpt_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("usit")
    train_diffusion.main(train_diffusion.parse_args([*TINY_DIFFUSION, "--steps", "1", "--num-workers", "0", "--out",
                                                     str(out)]))
    return out


# ------------------------------------------------------------------------------------------------
# 2. Disks that are full, read-only, or not folders
# ------------------------------------------------------------------------------------------------

def test_out_that_is_a_file_gets_one_line(tmp_path, capsys, ckpt_folder):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a user's file")
    for lib, argv in [(train_ae, []), (train_diffusion, TINY_DIFFUSION),
                      (sample, ["--ckpt", str(ckpt_folder), "--steps", "2", "--sampler", "euler"])]:
        for out in (not_a_folder, not_a_folder / "run"):
            with pytest.raises(SystemExit) as e:
                lib.main(lib.parse_args([*argv, "--out", str(out), "--num-workers" if lib is not sample else "--seed",
                                         "0"]))
            assert one_error_line(capsys, e) == f"error: --out {out}: {not_a_folder} is a file, not a folder"
    assert not_a_folder.read_text() == "a user's file"


def test_read_only_out_gets_one_line(disk, capsys, ckpt_folder):
    ro = disk(1 << 20, readonly=True)
    for lib, argv in [(train_ae, ["--num-workers", "0"]), (train_diffusion, [*TINY_DIFFUSION, "--num-workers", "0"]),
                      (sample, ["--ckpt", str(ckpt_folder)])]:
        with pytest.raises(SystemExit) as e:
            lib.main(lib.parse_args([*argv, "--out", str(ro / "run")]))
        assert one_error_line(capsys, e) == f"error: --out {ro / 'run'}: cannot write in {ro} (read-only file system)"


def checkpoint_bytes():
    """About one USiT-tiny checkpoint on dc-ae-f8c16-tiny latents: model, EMA and two AdamW moments in fp32."""
    model = models.create_model("USiT-tiny", in_channels=16, input_size=4, num_classes=10)
    return 16 * sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("when", ["before the write", "during the write"])
def test_full_disk_at_a_checkpoint_stops_with_one_line_and_the_last_checkpoint_intact(tmp_path, disk, capsys,
                                                                                      monkeypatch, when):
    """Room for one checkpoint and a half: step 1 is saved, step 2 does not fit. Either the space check sees it
    before writing, or (space check skipped) torch.save runs out of space mid-file; both end with one line naming the
    file, the bytes needed and the intact checkpoint, exit status 4, and no partial file."""
    out = disk(int(1.5 * checkpoint_bytes()) + (64 << 10))
    if when == "during the write":
        monkeypatch.setattr(run, "enough_space", lambda folder, needed: True)
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--save-every", "1", "--cache", str(tmp_path / "latents")]
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "3", "--out", str(out)]))
    line = one_error_line(capsys, e, code=4)
    first = out / "ckpt_0000001.pt"
    assert line.startswith(f"error: cannot write {out / 'ckpt_0000002.pt'}: no space left on the device (") and \
        " bytes needed, " in line and line.endswith(f"the last checkpoint is intact: {first}; free some space and "
                                                     f"run the same command to resume"), line
    assert sorted(os.listdir(out)) == [".lock", "args.json", "ckpt_0000001.pt", "metrics.jsonl"]  # no temp file
    assert torch.load(first, map_location="cpu", weights_only=False)["step"] == 1  # complete and loadable


# ------------------------------------------------------------------------------------------------
# 3. Resume with a changed configuration
# ------------------------------------------------------------------------------------------------

def test_resume_refuses_changed_settings_and_allows_the_schedule_to_change(tmp_path, capsys):
    argv = [*TINY_DIFFUSION, "--num-workers", "0", "--out", str(tmp_path), "--cache", str(tmp_path / "latents")]
    train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "2"]))
    with pytest.raises(SystemExit) as e:
        train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "4", "--batch-size", "4", "--lr", "0.01"]))
    line = one_error_line(capsys, e)
    assert line.startswith(f"error: {tmp_path / 'ckpt_0000002.pt'} was trained with other settings; an exact resume "
                           f"needs the same: --batch-size 8 (now 4), --lr 0.001 (now 0.01). Pass the old values"), line
    assert steps_logged(tmp_path) == [1, 2]  # nothing trained
    train_diffusion.main(train_diffusion.parse_args([*argv, "--steps", "4", "--log-every", "2", "--save-every", "4"]))
    assert steps_logged(tmp_path) == [1, 2, 4]


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
    assert f"latent cache {cache} is damaged: " in err and problem in err and "rebuilding it" in err, err
    assert {name: (cache / name).read_bytes() for name in intact} == intact  # the same latents again
    assert latents.open_cache(str(cache))[1] is None


# ------------------------------------------------------------------------------------------------
# 5. Real image files: one reader everywhere
# ------------------------------------------------------------------------------------------------

def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    v = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535: the 256 8-bit levels
    Image.fromarray(v).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = data_lib.read_image(str(tmp_path / "deep.png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    assert np.array_equal(rgb[..., 0], (v // 257).astype(np.uint8)) and (rgb[..., 0] == rgb[..., 2]).all()


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
    """pytorch-fid, ADM and torchvision's loader read the stored pixels; so do we (README: the data)."""
    a = np.zeros((8, 16, 3), np.uint8)
    a[:, :8] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees on display
    Image.fromarray(a).save(tmp_path / "rot.png", exif=exif)
    assert Image.open(tmp_path / "rot.png").getexif()[0x0112] == 6
    stored = data_lib.read_image(str(tmp_path / "rot.png"))
    assert stored.shape == (8, 16, 3) and np.array_equal(stored, a)
    folder = next(iter(data_lib.FolderImages([str(tmp_path / "rot.png")] * 2, batch_size=2, num_workers=0)))
    assert np.array_equal(folder[0].permute(1, 2, 0).numpy(), a)  # fid.py's reader is the same one


# ------------------------------------------------------------------------------------------------
# 6. Numbers that are not numbers; 7. one sample.py run per folder; 8. the EMA of a model with buffers
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lib, argv, message", [
    (sample, ["--ckpt", "x", "--cfg-scale", "nan"], "argument --cfg-scale: nan is not a finite number in [0, inf]"),
    (sample, ["--ckpt", "x", "--guidance-interval", "0.2", "1.5"], "argument --guidance-interval: 1.5 is not a finite "
                                                                     "number in [0, 1]"),
    (train_ae, ["--lr", "inf"], "argument --lr: inf is not a finite number in (0, inf]"),
    (train_ae, ["--lr", "0"], "argument --lr: 0 is not a finite number in (0, inf]"),
    (train_ae, ["--w-lpips", "-1"], "argument --w-lpips: -1 is not a finite number in [0, inf]"),
    (train_diffusion, ["--betas", "0.9", "1.5"], "argument --betas: 1.5 is not a finite number in [0, 1]"),
    (train_diffusion, ["--ema-decay", "nan"], "argument --ema-decay: nan is not a finite number in [0, 1]"),
    (train_diffusion, ["--save-minutes", "abc"], "argument --save-minutes: 'abc' is not a number"),
])
def test_numbers_must_be_finite_and_in_range(capsys, lib, argv, message):
    with pytest.raises(SystemExit) as e:
        lib.parse_args(argv)
    assert one_error_line(capsys, e).startswith(f"error: {message}")


def test_a_second_sample_run_in_one_folder_refuses_to_start(tmp_path, ckpt_folder, capsys):
    argv = [sys.executable, REPO / "sample.py", "--ckpt", ckpt_folder, "--num-samples", "400", "--batch-size", "4",
            "--sampler", "euler", "--steps", "40", "--out", tmp_path]
    first = subprocess.Popen([str(a) for a in argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: glob.glob(str(tmp_path / "shards/chunk_*.npz")), first)
        with pytest.raises(SystemExit) as e:  # the second run, in this process
            sample.main(sample.parse_args([str(a) for a in argv[2:]]))
        assert one_error_line(capsys, e) == (f"error: {tmp_path} is in use by another run (pid {first.pid}); wait "
                                             f"for it, stop it, or pass another --out")
    finally:
        first.kill()
        first.wait()


def test_ema_of_a_batchnorm_ae_carries_the_running_statistics(tmp_path):
    """DC-AE 1.0's decoder normalises with BatchNorm: the EMA copy (which checkpoints.load_ae prefers) must hold the running
    statistics training produced, not those of the initialisation."""
    train_ae.main(train_ae.parse_args(["--model", "dc-ae-f8c16-tiny-1.0", "--steps", "3", "--batch-size", "4",
                                       "--num-workers", "0", "--grid-every", "0", "--out", str(tmp_path)]))
    ckpt = torch.load(tmp_path / "ckpt_0000003.pt", map_location="cpu", weights_only=False)
    stats = [k for k in ckpt["model"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in stats)
    assert all(ckpt["model"][k].item() == 3 for k in stats if k.endswith("num_batches_tracked"))
    loaded = checkpoints.load_ae(str(tmp_path / "ckpt_0000003.pt")).model
    trained = {k: v for k, v in loaded.state_dict().items() if k in stats}
    assert all(torch.equal(trained[k], ckpt["model"][k]) for k in stats)
    assert any(not torch.equal(trained[k], torch.zeros_like(trained[k])) for k in stats if k.endswith("running_mean"))
