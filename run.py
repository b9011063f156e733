"""The life of one training run in its folder, shared by train_ae.py and train_diffusion.py
(paper Sec. 4.1): the arguments both check, one run per folder (an OS lock), files written
atomically through temp files unique to their writer, and checkpoints that resume bit for bit
(weights, optimizer, every RNG stream, the position in the epoch). What a run reports and when
(the step meter, the sync points where ranks agree, metrics.jsonl) is runlog.py.

A run killed at any moment leaves complete checkpoints; re-running the same command resumes.

    # a run in runs/ae; Ctrl-C saves and stops; the same command resumes
    python train_ae.py --steps 3000
    # resume another folder's newest checkpoint
    python train_ae.py --resume runs/ae --out runs/ae2
"""
import argparse
import errno
import fcntl
import glob
import os
import random
import shutil
import stat
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
    set_model_state_dict, set_optimizer_state_dict)

from data import class_change
from fsdp import is_distributed, stop_if


# ------------------------------------------------------------------------------------------------
# Arguments, the run folder, its lock and atomic files
# ------------------------------------------------------------------------------------------------

def resolve(args, recipe, **derived):
    """The settings of a run, resolved once: a copy of the command line's `args` whose options left
    at None take the recipe's value (explicit values, even bad ones, are kept for the checks), then
    the `derived` values (settings computed from others), then --save-every's default, 10% of the
    run, so an interrupted run never loses much. The caller's args stay as they were typed."""
    settings = argparse.Namespace(**vars(args))
    for k, v in recipe.items():
        if getattr(settings, k, None) is None:
            setattr(settings, k, v)
    for k, v in derived.items():
        setattr(settings, k, v)
    if getattr(settings, "save_every", 0) is None:
        settings.save_every = max(1, settings.steps // 10)
    return settings


def check_out(folder, option="--out"):
    """A folder the run can write in, checked before any compute without creating it: not a file,
    not on a read-only file system, writable. Raises ValueError naming the path and the cause."""
    path = os.path.abspath(folder)
    # The nearest existing ancestor decides whether the folder can be made.
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ValueError(f"{option} {folder}: {path} is a file, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        cause = ("read-only file system" if os.statvfs(path).f_flag & os.ST_RDONLY
                 else "permission denied")
        raise ValueError(f"{option} {folder}: cannot write in {path} ({cause})")


def write_error(path, error, needed=None):
    """One line for a file that could not be written: the path, the cause, and for a full disk the
    bytes needed (a full disk makes torch.save fail with "[enforce fail at inline_container.cc]
    ... unexpected pos", no errno)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if ((isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
            or (needed and needed > free)):
        return (f"cannot write {path}: no space left on the device "
                f"({needed or '?'} bytes needed, {free} free)")
    cause = (error.strerror if isinstance(error, OSError) and error.strerror else
             f"{type(error).__name__}: "
             f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}")
    return f"cannot write {path}: {cause}"


def enough_space(folder, needed):
    return shutil.disk_usage(folder).free >= needed


def tensor_bytes(obj):
    """Bytes of the tensors in a nested dict / list (about the size of its torch.save file)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def check_training(steps, batch_size, accum, save_every, log_every, num_workers, save_minutes,
                   world_size):
    """The numbers both trainers check the same way, before any compute; ValueError names
    the value."""
    counts = dict(steps=steps, batch_size=batch_size, accum=accum, save_every=save_every,
                  log_every=log_every, num_workers=num_workers)
    for name, value in counts.items():
        low = 0 if name == "num_workers" else 1
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if save_minutes <= 0:
        raise ValueError(f"--save-minutes must be > 0, got {save_minutes}")
    if batch_size % (world_size * accum):
        raise ValueError(f"--batch-size {batch_size} must be divisible by world size x --accum "
                         f"({world_size} x {accum})")


# What may change when a run resumes: how long it runs, how often it logs, saves and draws, and
# where it writes. Every other argument decides the numbers, and a resume with another value is
# not the run it continues.
MAY_CHANGE = ("steps", "save_every", "save_minutes", "log_every", "grid_every", "num_workers",
              "encode_batch", "compile", "resume", "out", "cache", "init",
              "eval_every", "eval_samples", "eval_images", "eval_data", "eval_c_primes", "fid",
              "inception_weights", "tensorboard")


def changed_args(old, new):
    """{option: (checkpoint's value, this run's)} of the arguments that differ and break an
    exact resume."""
    # A recipe's tuple and a command line's list compare as lists.
    same = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return {k: (old[k], v) for k, v in new.items()
            if k not in MAY_CHANGE and k in old and same(old[k]) != same(v)}


def lock_run(out):
    """Hold an OS lock on OUT/.lock for the life of this process (the kernel drops it when the
    process dies, however it dies). Returns None, or the error when another live process holds
    it. POSIX record locks are not inherited by DataLoader workers, so the lock goes with the
    run's main process."""
    os.makedirs(out, exist_ok=True)
    fd = os.open(os.path.join(out, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        return (f"{out} is in use by another run (pid {holder}); "
                "wait for it, stop it, or pass another --out")
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    lock_run.held.append(fd)  # keep it open (and locked) until exit
    # The temp files of dead writers, in OUT and one folder down.
    for stale in (glob.glob(os.path.join(out, "*.tmp"))
                  + glob.glob(os.path.join(out, "*", "*.tmp"))):
        os.remove(stale)
    return None


lock_run.held = []


def release_locks():
    """The end of a run in this process (main() may run again in-process, e.g. from toy.py): let
    the folders go."""
    while lock_run.held:
        os.close(lock_run.held.pop())


def atomic_write(path, write):
    """write(file object) into a temp file unique to this writer, fsync, then rename over `path`: a
    reader sees the old file or the complete new one, never a partial one, and two writers never
    share a temp file. The file gets the mode a plain open() would give it: the mode of the file it
    replaces, else 0666 less the umask (0644 under umask 022; a temp file from mkstemp is 0600,
    which a colleague on a shared cluster could not read)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def checkpoint_step(path):
    """The step of OUT/ckpt_{step:07d}.pt."""
    return int(os.path.basename(path)[len("ckpt_"):-len(".pt")])


def current_umask():
    """The process's umask. Reading it means setting it: for that instant it is 077, so a file
    another thread creates meanwhile is only ever more private, never more open."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def latest_checkpoint(out):
    paths = sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))
    return paths[-1] if paths else None


def resume_path(resume, out):
    """--resume FILE, --resume FOLDER (its newest checkpoint) or, by default, the newest
    checkpoint in --out; None: a new run."""
    if resume and not os.path.exists(resume):
        raise ValueError(f"checkpoint not found: {resume}")
    if resume and os.path.isdir(resume):
        path = latest_checkpoint(resume)
        if path is None:
            raise ValueError(f"--resume {resume}: no ckpt_*.pt in this folder")
        return path
    return resume or latest_checkpoint(out)


def classes_changed(record, classes):
    """What differs between the class list a checkpoint or a latent cache's meta.json records and
    `classes` (data.class_change), None when nothing does. One from before class lists were
    recorded is judged by its number of classes: it had no empty class folder (they were dropped
    then) unless that number differs."""
    if "classes" in record:
        return class_change(record["classes"], classes)
    if record.get("num_classes", len(classes)) != len(classes):
        return (f"{record['num_classes']} classes then, {len(classes)} now; an empty class folder "
                f"now keeps its id")
    return None


def start_run(out, resume, settings, rank, expect):
    """The start both trainers share, before any compute, every rank reaching the same verdict: the
    run folder's lock (rank 0) and the checkpoint to resume (--resume, else the newest in `out`;
    read on rank 0, load_checkpoint broadcasts), which must have been written with the same
    `settings` (the run's resolved options, a dict; MAY_CHANGE may differ) and the values in
    `expect` (e.g. the model name and latent shape; "classes": the class names in id order,
    data.class_names). Returns (checkpoint path or None, checkpoint or None)."""
    error, path, ckpt = None, None, None
    try:
        check_out(out)
        # An existing folder is locked first (is another run in it?); a new one only once all is
        # checked, so that a run refused for bad input leaves nothing behind.
        locked = rank == 0 and os.path.isdir(out)
        error = lock_run(out) if locked else None
        path = resume_path(resume, out)
        if path and rank == 0 and not error:
            ckpt = read_checkpoint(path)
            for key, want in expect.items():  # the model and latent first: nothing else fits then
                if key == "classes":
                    continue
                have = ckpt["args"].get(key) if key == "model" else ckpt.get(key, want)
                if have != want:
                    raise ValueError(f"{path} is a checkpoint of {have!r}, not --model {want}"
                                     if key == "model" else
                                     f"{path} was trained with {key} {have}, this run has {want}")
            changed = changed_args(ckpt["args"], settings)
            if changed:
                flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
                differ = ", ".join(f"{flag(k)} {old} (now {new})"
                                   for k, (old, new) in changed.items())
                may_change = ", ".join(flag(k) for k in MAY_CHANGE[:9])
                raise ValueError(f"{path} was trained with other settings; an exact resume needs "
                                 f"the same: {differ}. Pass the old values, or another --out "
                                 f"for a new run (options that may change: {may_change})")
            change = classes_changed(ckpt, expect["classes"]) if "classes" in expect else None
            if change:  # the same options on other data (a folder's content changed)
                raise ValueError(f"{path} was trained on another class list ({change}): "
                                 "its class ids would name other classes; "
                                 "pass the --data it was trained on, or another --out")
        if rank == 0 and not error and not locked:
            error = lock_run(out)
    except ValueError as e:
        error = str(e)
    stop_if(error, rank)
    return path, ckpt


# ------------------------------------------------------------------------------------------------
# Checkpoints: full state dicts, written by rank 0 atomically, resumable bit for bit
# ------------------------------------------------------------------------------------------------

def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(out, step, modules, optimizers, settings, extra=None, keep=2, keep_every=0):
    """Gather full state dicts (collective: every rank calls this) and write
    `out/ckpt_{step:07d}.pt` on rank 0 with atomic_write, so a crash mid-write leaves only a temp
    file that the next run removes. Keeps the newest `keep` checkpoints, and for good those of
    every `keep_every`-th step (the evaluated ones). Loadable with plain torch.load: {"model",
    "ema", "opt", "step", "args" (the run's `settings` dict), "rng", ...}. Returns (path, size in
    bytes, seconds) on rank 0."""
    t0 = time.time()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    ckpt = {name: get_model_state_dict(m, options=opts) for name, m in modules.items()}
    for name, (opt, m) in optimizers.items():
        ckpt[name] = get_optimizer_state_dict(m, opt, options=opts)
    rngs = [None] * (dist.get_world_size() if is_distributed() else 1)
    if is_distributed():
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs[0] = rng_state()
    ckpt.update(step=step, args=settings, rng=rngs, **(extra or {}))
    path = os.path.join(out, f"ckpt_{step:07d}.pt")
    size, error, rank = 0, None, dist.get_rank() if is_distributed() else 0
    if rank == 0:
        needed = tensor_bytes(ckpt)
        try:
            if not enough_space(out, needed):  # do not start a write that cannot finish
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            # A failed write leaves no temp file.
            atomic_write(path, lambda fh: torch.save(ckpt, fh))
        except (OSError, RuntimeError) as e:
            error = (write_error(path, e, needed)
                     + f"; the last checkpoint is intact: {latest_checkpoint(out)}; "
                     "free some space and run the same command to resume")
        else:
            size = os.path.getsize(path)
            for old in sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))[:-keep]:
                if not (keep_every and checkpoint_step(old) % keep_every == 0):
                    os.remove(old)
    stop_if(error, rank, code=4)  # every rank stops together (exit status 4), or all go on
    return path, size, time.time() - t0


def read_checkpoint(path, mmap=False):
    """torch.load of one of our checkpoints; a file that is not one (truncated, another format)
    -> ValueError. mmap=True (the loaders of checkpoints.py): only the tensors used are read; a 2B
    model's file also holds the Adam moments (~25 GB)."""
    try:
        # Our own file: the RNG states need pickle.
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as e:  # truncated zip, pickle garbage, ...
        # The message names the file, not the unpickler.
        raise ValueError(f"{path} is not a readable checkpoint "
                         f"({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("args"), dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of train_ae.py / train_diffusion.py "
                         "(no 'args' and 'model')")
    return ckpt


def load_checkpoint(ckpt, modules, optimizers, rank=0):
    """Load full state dicts into (possibly sharded) modules and optimizers; returns (step, data
    position). Under torchrun only rank 0 needs to have read the file (others pass None): weights
    are broadcast from rank 0, so N ranks do not hold N copies of a multi-GB checkpoint in host
    memory. With the same world size every rank continues its own RNG streams; with another one the
    resume is not bit-exact (the data order changes too) and says so, as it says what a checkpoint
    of an older format (no RNG state, no data position) lacks."""
    bcast = is_distributed()
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=bcast, strict=True)
    has = ckpt is not None and (rank == 0 or not bcast)
    for name, m in modules.items():
        set_model_state_dict(m, ckpt[name] if has else {}, options=opts)
    for name, (opt, m) in optimizers.items():
        set_optimizer_state_dict(m, opt, ckpt[name] if has else {}, options=opts)
    meta = [ckpt["step"], ckpt.get("rng"), ckpt.get("data")] if has else [None, None, None]
    if bcast:
        dist.broadcast_object_list(meta, src=0)
    step, rngs, data = meta
    world = dist.get_world_size() if bcast else 1
    # An older format holds weights, optimizer and step only: say what it lacks, and what follows.
    instead = {"random-number state": (rngs, "the random streams of a fresh start"),
               "data position": (data, "the data order of epoch 0 from its start")}
    missing = [name for name, (value, _) in instead.items() if value is None]
    if missing and rank == 0:
        lacks, then = " and no ".join(missing), " and ".join(instead[m][1] for m in missing)
        print(f"WARNING: the checkpoint holds no {lacks} (an older format): the run continues "
              f"from its weights, optimizer state and step {step}, with {then}; it will not equal "
              f"an uninterrupted run bit for bit", file=sys.stderr)
    if rngs is not None and len(rngs) == world:
        set_rng_state(rngs[rank])
    elif rngs is not None:
        if rank == 0:
            print(f"WARNING: the checkpoint was written by {len(rngs)} rank(s), this run has "
                  f"{world}: it continues from the same weights and step, with other random "
                  f"streams and data order", file=sys.stderr)
        data = None
    return step, data
