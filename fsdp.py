"""Distributed-training plumbing shared by the trainers, sample.py, eval_ae.py and fid.py (paper
Sec. 4.1: "FSDP and bf16 training"): process groups, one-line errors that every rank agrees on,
FSDP2 sharding, AdamW groups, LR warmup and the EMA update of sharded weights. Utilities that
answer; the trainers write their steps out and decide. The command line (parser, number types,
--help, the machine and precision lines) is cli.py; the run folder (lock, checkpoints, exact
resume) is run.py; the logs and sync points are runlog.py.

One code path serves one process (CPU or one GPU, no process group) and `torchrun` (NCCL on GPUs,
gloo on CPU; also with one process, which then shards through fully_shard exactly as 8 ranks
would):

    python train_diffusion.py                                      # one process
    torchrun --nproc_per_node 8 train_diffusion.py --model USiT-2B ...
    torchrun --nnodes 2 --node_rank $R --master_addr $HOST --nproc_per_node 8 \
        train_diffusion.py ...

FSDP2 pattern (DESIGN.md §7): build the model with the same seed on every rank (FSDP2 has no
sync_module_states), `fully_shard` each block, then the root, then build the optimizer. Parameters
stay fp32 and sharded; the forward runs under `torch.autocast(bf16)`. We use autocast rather than
MixedPrecisionPolicy(param_dtype=bf16) so that the very same code runs unsharded in one process and
so that numerically sensitive ops (norms, softmax, losses) stay fp32 by autocast's rules.
"""
import math
import os
import sys
import threading
import time

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method


# ------------------------------------------------------------------------------------------------
# Process group
# ------------------------------------------------------------------------------------------------

def setup():
    """Returns (rank, world_size, device). Under torchrun (even with one process): a process group
    (NCCL on GPU, gloo on CPU) and a watchdog that ends this rank if the launcher dies."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    exit_with_launcher()
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")  # FSDP2 runs on CPU with gloo (FSDP1 does not)
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def exit_with_launcher(interval=0.5):
    """A `kill -9` of torchrun re-parents its workers, which would train on (and write checkpoints)
    alone: a daemon thread notices the new parent and ends this process at once (the checkpoints on
    disk are complete by design)."""
    launcher = os.getppid()

    def watch():
        while os.getppid() == launcher:
            time.sleep(interval)
        print(f"rank {os.environ.get('RANK')}: the launcher (pid {launcher}) is gone; exiting",
              file=sys.stderr)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="exit-with-launcher").start()


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def barrier():
    if is_distributed():
        dist.barrier()


def cleanup():
    if is_distributed():
        # All ranks first: a rank that tears down gloo while a peer is still finishing its last
        # collective makes the peer abort ("terminate called without an active exception", seen
        # under torchrun on CPU).
        dist.barrier()
        dist.destroy_process_group()


def fail(msg, rank=0, code=2):
    """Stop with a one-line message (every rank reaches the same verdict; rank 0 prints it)."""
    if rank == 0:
        print(f"error: {msg}", file=sys.stderr)
    cleanup()
    sys.exit(code)


def agree(error):
    """Every rank's error message (or None) -> the first one on every rank,
    so all ranks fail together."""
    if not is_distributed():
        return error
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    return next((e for e in errors if e), None)


def gather(x):
    """Every rank's Python object x, as a list in rank order
    (start-up bookkeeping, not the training loop)."""
    if not is_distributed():
        return [x]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, x)
    return out


def all_sum(x):
    """Sum of a Python number over ranks
    (start-up and evaluation bookkeeping, not the training loop)."""
    if not is_distributed():
        return x
    t = torch.tensor([x], dtype=torch.float64,
                     device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return type(x)(t.item())


def stop_if(error, rank, code=2):
    """All ranks agree on the first error (a string or None) and, if there is one, fail together
    with one line."""
    error = agree(error)
    if error:
        fail(error, rank, code)


# ------------------------------------------------------------------------------------------------
# FSDP2, optimizer, EMA, schedule
# ------------------------------------------------------------------------------------------------

def shard(model, blocks, methods=()):
    """fully_shard each block, then the root. A no-op in one process (plain module,
    same numerics). `methods` (e.g. "encode", "decode") get FSDP's unshard hooks too:
    only module(...) triggers them otherwise."""
    if is_distributed():
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        for name in methods:
            register_fsdp_forward_method(model, name)
    return model


def build_with_ema(build, seed, methods=()):
    """(model, ema), both sharded alike:
    built with the same seed on every rank (FSDP2 has no sync_module_states)."""
    torch.manual_seed(seed)
    model = build()
    ema = build()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    for m in (model, ema):
        shard(m, m.fsdp_units(), methods)
    return model, ema


def unsharded_copy(model, build):
    """A plain copy of a sharded model on every rank (collective), for work each rank does on its
    own: an evaluation samples with an adaptive solver (dopri5) that takes another number of steps
    on each rank, which FSDP's all-gathers cannot follow. `build()` makes the unsharded
    architecture. In one process: the model itself."""
    if not is_distributed():
        return model
    # full tensors, every rank
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    copy = build()
    copy.load_state_dict(state)
    return copy.eval().requires_grad_(False)


def local_numel(model):
    """Parameters held by this rank: about 1/world of the model once sharded
    (FSDP2 shards dim 0 of each one)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters())


def adamw(model, lr, weight_decay, betas):
    """AdamW without weight decay on norms and biases (every parameter with fewer than 2 dims)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=torch.cuda.is_available())


def set_lr(opt, step, lr, warmup):
    """Linear warmup to lr over `warmup` steps, then constant (DiT/SiT/U-ViT recipes). Returns the
    lr of this step."""
    lr = lr * min(1.0, (step + 1) / max(warmup, 1))
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def ema_update(ema, model, decay, step, warmup):
    """ema <- d * ema + (1 - d) * model for the parameters (buffers are copied) after optimizer
    step `step` (1, 2, ...), with DC-Gen's warm-up d = decay * (1 - exp(-step / warmup))
    (apps/utils/ema.py), so the EMA does not remember the random init; warmup = 0: the constant
    decay of the DiT and U-ViT repositories. Both are sharded alike: purely local work."""
    d = decay * (1 - math.exp(-step / warmup)) if warmup > 0 else decay
    ema_p = [p.to_local() if hasattr(p, "to_local") else p for p in ema.parameters()]
    model_p = [p.detach().to_local() if hasattr(p, "to_local") else p.detach()
               for p in model.parameters()]
    torch._foreach_lerp_(ema_p, model_p, 1 - d)
    # Buffers (BatchNorm's running statistics: the DC-AE 1.0 decoder, the PatchGAN) are copied, not
    # averaged: the EMA then normalises with the statistics the training produced, and integer
    # counters stay counts. (DC-Gen's apps/utils/ema.py averages floating-point buffers with the
    # weights; its 1.5 AEs have none.) FSDP2 does not shard buffers, so this is local work too.
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def full_tensor(x):
    """A value reduced over the shards: clip_grad_norm_ of FSDP2 parameters returns a DTensor
    (all-reduced here); a plain tensor as it is. The result stays on the device: reading it would
    make the host wait."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x
