"""Distributed-training plumbing shared by train_ae.py and train_diffusion.py: process groups, FSDP2 sharding,
EMA, AdamW groups, LR warmup, crash-safe checkpoints and run logs (paper Sec. 4.1: "FSDP and bf16 training").

One code path serves one process (CPU or one GPU, no process group) and `torchrun` (NCCL on GPUs, gloo on CPU):

    python train_diffusion.py                                      # one process
    torchrun --nproc_per_node 8 train_diffusion.py --model USiT-2B ...
    torchrun --nnodes 2 --node_rank $R --master_addr $HOST --nproc_per_node 8 train_diffusion.py ...

FSDP2 pattern (DESIGN.md §7): build the model with the same seed on every rank (FSDP2 has no
sync_module_states), `fully_shard` each block, then the root, then build the optimizer. Parameters stay fp32
and sharded; the forward runs under `torch.autocast(bf16)`. We use autocast rather than
MixedPrecisionPolicy(param_dtype=bf16) so that the very same code runs unsharded in one process and so that
numerically sensitive ops (norms, softmax, losses) stay fp32 by autocast's rules.
"""
import glob
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method


# ------------------------------------------------------------------------------------------------
# Process group
# ------------------------------------------------------------------------------------------------

def setup():
    """Returns (rank, world_size, device). Under torchrun: init the process group (NCCL on GPU, gloo on CPU)."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        if torch.cuda.is_available():
            local_rank = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
            device = torch.device("cuda", local_rank)
        else:
            dist.init_process_group("gloo")  # FSDP2 runs on CPU with gloo (FSDP1 does not)
            device = torch.device("cpu")
        return dist.get_rank(), dist.get_world_size(), device
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def barrier():
    if is_distributed():
        dist.barrier()


def cleanup():
    if is_distributed():
        # All ranks first: a rank that tears down gloo while a peer is still finishing its last collective
        # makes the peer abort ("terminate called without an active exception", seen under torchrun on CPU).
        dist.barrier()
        dist.destroy_process_group()


def fail(msg, rank=0):
    """Stop before any compute with a clear message (every rank reaches the same verdict)."""
    if rank == 0:
        print(f"error: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(2)


def all_mean(x):
    """Mean of a float over ranks (for logging)."""
    if not is_distributed():
        return float(x)
    t = torch.tensor([float(x)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def all_sum(x):
    if not is_distributed():
        return x
    t = torch.tensor([x], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return type(x)(t.item())


# ------------------------------------------------------------------------------------------------
# FSDP2, optimizer, EMA, schedule
# ------------------------------------------------------------------------------------------------

def shard(model, blocks, methods=()):
    """fully_shard each block, then the root. A no-op in one process (plain module, same numerics).
    `methods` (e.g. "encode", "decode") get FSDP's unshard hooks too: only module(...) triggers them otherwise."""
    if is_distributed():
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        for name in methods:
            register_fsdp_forward_method(model, name)
    return model


def local_numel(model):
    """Parameters held by this rank: about 1/world of the model once sharded (FSDP2 shards dim 0 of each one)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def agree(error):
    """Every rank's error message (or None) -> the first one on every rank, so all ranks fail together."""
    if not is_distributed():
        return error
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return next((e for e in errors if e), None)


def adamw(model, lr, weight_decay, betas):
    """AdamW without weight decay on norms and biases (every parameter with fewer than 2 dims)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=torch.cuda.is_available())


def lr_at(step, lr, warmup):
    """Linear warmup to lr over `warmup` steps, then constant (DiT/SiT/U-ViT recipes)."""
    return lr * min(1.0, (step + 1) / max(warmup, 1))


@torch.no_grad()
def ema_update(ema, model, decay, step, warmup):
    """ema <- d * ema + (1 - d) * model after optimizer step `step` (1, 2, ...), with DC-Gen's warm-up
    d = decay * (1 - exp(-step / warmup)) (apps/utils/ema.py), so the EMA does not remember the random init;
    warmup = 0: the constant decay of the DiT and U-ViT repositories. Both are sharded alike: purely local work."""
    d = decay * (1 - math.exp(-step / warmup)) if warmup > 0 else decay
    ema_p = [p.to_local() if hasattr(p, "to_local") else p for p in ema.parameters()]
    model_p = [p.detach().to_local() if hasattr(p, "to_local") else p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_p, model_p, 1 - d)


def grad_norm_clip(model, max_norm):
    """Clip and return the total grad norm as a float (FSDP2 returns a DTensor: .full_tensor() first)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def optimizer_step(model, opt, ema, step, grad_clip, ema_decay, ema_warmup):
    """The end of training step `step` (0-based): clip, AdamW step, zero the grads, EMA update. Returns the grad
    norm."""
    gnorm = grad_norm_clip(model, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ema_update(ema, model, ema_decay, step + 1, ema_warmup)
    return gnorm


# ------------------------------------------------------------------------------------------------
# Checkpoints: full state dicts, written by rank 0 atomically, resumable
# ------------------------------------------------------------------------------------------------

def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(out, step, modules, optimizers, args, extra=None, keep=2):
    """Gather full state dicts (collective: every rank calls this) and write `out/ckpt_{step:07d}.pt` on rank 0
    via a temp file + rename, so a crash mid-write leaves only a `.tmp` that resume ignores. Keeps the newest
    `keep` checkpoints. Loadable with plain torch.load: {"model", "ema", "opt", "step", "args", "rng", ...}."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    ckpt = {name: get_model_state_dict(m, options=opts) for name, m in modules.items()}
    for name, (opt, m) in optimizers.items():
        ckpt[name] = get_optimizer_state_dict(m, opt, options=opts)
    rngs = [None] * (dist.get_world_size() if is_distributed() else 1)
    if is_distributed():
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs[0] = rng_state()
    ckpt.update(step=step, args=vars(args) if not isinstance(args, dict) else args, rng=rngs, **(extra or {}))
    path = os.path.join(out, f"ckpt_{step:07d}.pt")
    if not is_distributed() or dist.get_rank() == 0:
        tmp = path + ".tmp"
        torch.save(ckpt, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX: the checkpoint is either absent or complete
        for old in sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))[:-keep]:
            os.remove(old)
    barrier()
    return path


def latest_checkpoint(out):
    paths = sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))
    return paths[-1] if paths else None


def read_checkpoint(path):
    """torch.load of one of our checkpoints; a file that is not one (truncated, another format) -> ValueError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states need pickle
    except Exception as e:  # truncated zip, pickle garbage, ...: the message names the file, not the unpickler
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("args"), dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of train_ae.py / train_diffusion.py (no 'args' and 'model')")
    return ckpt


def load_checkpoint(ckpt, modules, optimizers, rank=0):
    """Load full state dicts into (possibly sharded) modules and optimizers; returns the step. Under torchrun only
    rank 0 needs to have read the file (others pass None): weights are broadcast from rank 0, so N ranks do not
    hold N copies of a multi-GB checkpoint in host memory."""
    bcast = is_distributed()
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=bcast, strict=True)
    has = ckpt is not None and (rank == 0 or not bcast)
    for name, m in modules.items():
        set_model_state_dict(m, ckpt[name] if has else {}, options=opts)
    for name, (opt, m) in optimizers.items():
        set_optimizer_state_dict(m, opt, ckpt[name] if has else {}, options=opts)
    meta = [ckpt["step"], ckpt.get("rng")] if has else [None, None]
    if bcast:
        dist.broadcast_object_list(meta, src=0)
    step, rngs = meta
    if rngs is not None and rank < len(rngs):
        set_rng_state(rngs[rank])  # same world size: every rank continues its own stream
    return step


# ------------------------------------------------------------------------------------------------
# Run folder: args.json, metrics.jsonl, progress
# ------------------------------------------------------------------------------------------------

class RunLog:
    """Rank 0 writes args.json (`args_file`) and appends JSON lines to metrics.jsonl; prints plain lines when not a
    TTY. An evaluation of a run passes another args_file so that it keeps the training run's args.json."""

    def __init__(self, out, args, rank, total_steps, start_step, args_file="args.json"):
        self.rank, self.out = rank, out
        self.bar = None
        if rank != 0:
            return
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, args_file), "w") as fh:
            json.dump(vars(args), fh, indent=2)
        self.fh = open(os.path.join(out, "metrics.jsonl"), "a")
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True)
        self.t0 = time.time()

    def log(self, record, show=True):
        if self.rank != 0:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        if self.bar is not None:
            self.bar.n = record.get("step", self.bar.n)
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in record.items()
                                  if k != "step"}, refresh=True)
        elif show:
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
                  flush=True)

    def message(self, text):
        if self.rank != 0:
            return
        self.fh.write(json.dumps({"message": text}) + "\n")
        self.fh.flush()
        (self.bar.write if self.bar is not None else print)(text)

    def close(self):
        if self.rank == 0:
            if self.bar is not None:
                self.bar.close()
            self.fh.close()
