"""What a run reports and when, shared by train_ae.py and train_diffusion.py (paper Sec. 4.1):
the step meter, the sync points where ranks agree, metrics.jsonl that tells one history, and
TensorBoard. The run folder, its lock, atomic files and checkpoints are run.py.

The host syncs with the device only at sync points (every --log-every steps, and where a
checkpoint is due): one all-reduce carries the logged means, a non-finite-loss flag, a stop signal
(SIGTERM / SIGINT: save, then stop) and the wall-clock save.

    # a record every 50 steps in runs/ae/metrics.jsonl, and in TensorBoard
    python train_ae.py --steps 3000 --log-every 50 --tensorboard
    tensorboard --logdir runs/ae/tb
"""
import collections
import json
import os
import resource
import signal
import sys
import time

import torch
import torch.distributed as dist

from fsdp import cleanup, is_distributed
from run import atomic_write, latest_checkpoint, release_locks, write_error


# ------------------------------------------------------------------------------------------------
# Sync points: what the host reads from the device, and when the ranks stop or save
# ------------------------------------------------------------------------------------------------

class Meter:
    """Sums of the logged terms as device tensors (no host sync per step), a count of non-finite
    losses, and counts logged as running totals (e.g. skipped files)."""

    def __init__(self):
        self.sums, self.counts, self.steps = {}, {}, 0

    def count(self, name, value):
        self.counts[name] = self.counts.get(name, 0) + value

    def add(self, terms, weight=1.0):
        for k, v in terms.items():
            v = torch.as_tensor(v).detach().float()
            self.sums[k] = self.sums.get(k, 0) + v * weight
            if k == "loss":
                self.sums["nonfinite"] = (self.sums.get("nonfinite", 0)
                                          + (~torch.isfinite(v)).float())

    def end_step(self):
        self.steps += 1


# What a sync point answers (Sync.reduce): the logged means since the last one, and whether the
# loss went non-finite, a stop signal came, a checkpoint is due (a save step, the last step, the
# wall clock, a signal or an evaluation) and an evaluation is due.
Tick = collections.namedtuple("Tick", "record nonfinite stopped save evaluate")


class Sync:
    """The sync points of a run, answered, not decided. `due(step)`: every --log-every steps, at
    save and evaluation steps and at the last step, decided by the step alone, so every rank meets
    in the same all-reduce (a signal reaches ranks at slightly different moments).
    `reduce(step, meter)`: that one all-reduce, of the logged sums and the flags -> a Tick; between
    sync points the host never waits for the device. SIGTERM / SIGINT only note the signal, for
    the trainer to act on at the next sync point (a second SIGINT interrupts at once)."""

    def __init__(self, device, start_step, steps, log_every, save_every, save_minutes, batch_size,
                 train_flops_per_image=None, eval_every=0):
        self.device, self.steps = device, steps
        self.log_every, self.save_every, self.eval_every = log_every, save_every, eval_every
        self.save_minutes, self.batch_size = save_minutes, batch_size
        self.last_save, self.t_last = time.time(), time.time()
        self.step_last, self.totals = start_step, {}
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        world = dist.get_world_size() if is_distributed() else 1
        self.mfu_per_image = (train_flops_per_image / (peak * world)
                              if peak and train_flops_per_image else None)
        self.signal = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)

    def on_signal(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    @property
    def signal_name(self):
        return signal.Signals(self.signal).name

    def evaluation_due(self, step):
        return bool(self.eval_every) and step % self.eval_every == 0

    def due(self, step):
        return (step % self.log_every == 0 or step % self.save_every == 0 or step == self.steps
                or self.evaluation_due(step))

    def reduce(self, step, meter):
        """-> Tick(record with the means since the last sync point, non-finite?, stop?, save?,
        evaluate?)."""
        keys, counts = sorted(k for k in meter.sums if k != "nonfinite"), sorted(meter.counts)
        flags = [self.signal is not None, time.time() - self.last_save > 60 * self.save_minutes]
        values = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(self.device) for v in
                              [meter.sums[k] for k in keys] + [meter.sums.get("nonfinite", 0.0)] +
                              [meter.counts[k] for k in counts] + flags])
        world = 1
        if is_distributed():
            dist.all_reduce(values)
            world = dist.get_world_size()
        values = values.tolist()  # the one host sync of the interval
        n = max(meter.steps, 1) * world
        for k, v in zip(counts, values[len(keys) + 1:]):
            self.totals[k] = self.totals.get(k, 0) + int(v)
        now = time.time()
        images = (step - self.step_last) * self.batch_size  # since the last sync point
        record = {"step": step, **{k: v / n for k, v in zip(keys, values)}, **self.totals,
                  "img_per_s": images / max(now - self.t_last, 1e-9),
                  "mem_gib": peak_memory_gib(self.device)}
        if self.mfu_per_image:
            record["mfu"] = record["img_per_s"] * self.mfu_per_image
        self.t_last, self.step_last = now, step
        meter.sums, meter.counts, meter.steps = {}, {}, 0
        stopped, late, evaluate = values[-2] > 0, values[-1] > 0, self.evaluation_due(step)
        save = stopped or late or evaluate or step % self.save_every == 0 or step == self.steps
        return Tick(record, values[len(keys)] > 0, stopped, save, evaluate)

    def saved(self):
        """A checkpoint was written: the wall-clock save is due --save-minutes from now."""
        self.last_save = time.time()

    def close(self):
        """Give SIGTERM / SIGINT back to Python's defaults (main() may run in-process, e.g.
        in tests)."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def finish(log, sync):
    """The end of a run in this process, however it ends: signals back to Python, the log closed,
    the folder's lock released, the process group down (main() may run again in-process, e.g.
    from toy.py)."""
    sync.close()
    log.close()
    release_locks()
    cleanup()


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s, for MFU


def peak_memory_gib(device):
    """Peak memory: the CUDA caching allocator's high-water mark, or the process's peak RSS on
    CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB


# ------------------------------------------------------------------------------------------------
# Run folder: args.json, metrics.jsonl, progress
# ------------------------------------------------------------------------------------------------

class RunLog:
    """Rank 0 writes args.json (`args_file`) and appends JSON lines to metrics.jsonl; prints plain
    lines (a progress bar only on a terminal). metrics.jsonl tells one history: a resumed run first
    drops the records after its checkpoint's step; a run that starts from scratch where an earlier
    one left a metrics.jsonl (killed before its first checkpoint) sets that file aside as
    metrics.N.jsonl (N = 1, 2, ... in the order they were set aside), says so, and starts a new
    one. An evaluation of a run passes another args_file so that it keeps the run's args.json."""

    def __init__(self, out, settings, rank, total_steps, start_step, tensorboard=False,
                 args_file="args.json"):
        self.rank, self.out = rank, out
        self.bar = self.tb = None
        if rank != 0:
            return
        os.makedirs(out, exist_ok=True)
        atomic_write(os.path.join(out, args_file),
                     lambda fh: fh.write(json.dumps(settings, indent=2).encode()))
        # --tensorboard: the same records, for `tensorboard --logdir`; a resume drops the events
        # after its step.
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out, "tb"),
                                    purge_step=None if start_step is None else start_step + 1)
        path = os.path.join(out, "metrics.jsonl")
        kept = None
        if start_step is None and os.path.isfile(path) and os.path.getsize(path) > 0:
            n = 1
            while os.path.exists(os.path.join(out, f"metrics.{n}.jsonl")):
                n += 1
            kept = os.path.join(out, f"metrics.{n}.jsonl")
            os.rename(path, kept)  # the run folder is locked: no other writer
        if start_step is not None and os.path.isfile(path):
            keep = []
            with open(path) as fh:
                for line in fh:
                    try:
                        if json.loads(line).get("step", 0) > start_step:
                            break
                    except ValueError:  # a line cut by a kill
                        break
                    keep.append(line)
            atomic_write(path, lambda fh: fh.write("".join(keep).encode()))
        self.fh = open(path, "a")
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step or 0, dynamic_ncols=True)
        if kept:
            self.message(f"no checkpoint to resume in {out}: this run starts from scratch with a "
                         f"new metrics.jsonl; the earlier run's is kept as "
                         f"{os.path.basename(kept)}")

    def log(self, record, show=True):
        if self.rank != 0:
            return
        self.append(record)
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, record["step"])
            self.tb.flush()
        if self.bar is not None:
            self.bar.n = record.get("step", self.bar.n)
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                  for k, v in record.items() if k != "step"}, refresh=True)
        elif show:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items()), flush=True)

    def message(self, text):
        if self.rank != 0:
            return
        self.append({"message": text})
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def append(self, record):
        """One JSON line. A disk that fills up mid-run ends the run with one line and exit status 4
        (the checkpoints on disk are complete; under torchrun the launcher then stops the other
        ranks)."""
        try:
            self.fh.write(json.dumps(record) + "\n")
            self.fh.flush()
        except OSError as e:
            print(f"error: {write_error(self.fh.name, e)}", file=sys.stderr, flush=True)
            if is_distributed():
                os._exit(4)  # a collective clean-up would wait for ranks that are still training
            sys.exit(4)

    def image(self, tag, path, step):
        """A picture the run wrote (an EMA grid), into TensorBoard too."""
        if self.rank == 0 and self.tb is not None:
            import numpy as np
            from PIL import Image
            with Image.open(path) as im:
                self.tb.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
            self.tb.flush()

    def logged(self, step, key):
        """Whether metrics.jsonl holds a record of `step` with `key` (rank 0; e.g. an evaluation
        that a signal interrupted is evaluated again on resume, one that finished is not)."""
        with open(os.path.join(self.out, "metrics.jsonl")) as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                if record.get("step") == step and key in record:
                    return True
        return False

    def nonfinite(self, step):
        """The loss went non-finite: nothing is written, the last checkpoint stays the last good
        state. -> the exit status, 3."""
        self.message(f"non-finite loss by step {step}; stopping. "
                     f"The last checkpoint is untouched: {latest_checkpoint(self.out)}")
        return 3

    def stopped(self, signum, step, evaluating=False):
        """SIGTERM / SIGINT: the checkpoint of `step` is on disk. -> the exit status, 128 + the
        signal."""
        what = f"while evaluating step {step}" if evaluating else f"at step {step} after saving"
        self.message(f"stopped by {signal.Signals(signum).name} {what}; "
                     "run the same command again to resume"
                     + (f" (step {step} is evaluated first)" if evaluating else ""))
        return 128 + signum

    def saved(self, path, size, seconds):
        """A checkpoint was written: a message, and a record that benchmarks read
        (benchmarks/bench.py)."""
        self.message(f"saved {path} ({size / 2 ** 30:.2f} GiB in {seconds:.1f}s)")
        if self.rank == 0:
            self.append({"saved": path, "bytes": size, "seconds": seconds})

    def close(self):
        if self.rank == 0:
            if self.bar is not None:
                self.bar.close()
            if self.tb is not None:
                self.tb.close()
            self.fh.close()
