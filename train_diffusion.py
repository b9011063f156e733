"""Train a class-conditional latent diffusion model with augmented diffusion training (paper Sec. 3.3, Eq. 2,
Fig. 5; Sec. 4.1; Tables 2-5).

1. Latents: the dataset is encoded once by the frozen AE (center crops, no flips), sharded across ranks, into a
   cache folder that records the AE's identity and scaling factor (a cache made by another AE is refused).
2. Training: any backbone of models.py with its objective (DiT: DDPM, UViT: eps, SiT/USiT: flow matching).
   `--aug` adds Eq. 2's masked objectives on the first c' channels: `replace` draws each sample's c' from the
   list (which includes c; the paper's literal Eq. 2), `extra` adds a masked copy of the batch to the full-channel
   loss (the official always_sample_max_channel), `off` trains the plain objective. Whether the AE is structured
   is independent (its own checkpoint), so Table 5's four cells are four runs.

    python train_ae.py && python train_diffusion.py                  # tiny AE, then tiny USiT on its latents (CPU)
    python train_diffusion.py --ae dc-ae-f8c64-tiny --steps 20       # random AE: a smoke run only (it says so)
    torchrun --nproc_per_node 8 train_diffusion.py --model USiT-2B --ae /ckpt/dc-ae-f64c128-1.5 \\
        --data /data/imagenet/train --resolution 512 --out runs/usit2b-f64
"""
import argparse
import glob
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import torch

import ae as ae_lib
import data as data_lib
import diffusion
import fsdp
import models

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16, for MFU


# ------------------------------------------------------------------------------------------------
# The frozen AE and the latent cache
# ------------------------------------------------------------------------------------------------

def ae_fingerprint(ae):
    """A short hash of the weights next to the latent: two different AEs give different fingerprints."""
    h = hashlib.sha256()
    for t in (ae.encoder.conv_out.weight, ae.encoder.conv_out.bias, ae.decoder.conv_in.weight):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_cache(ae, args, identity, rank, world_size, device):
    """Encode the dataset once (each rank a shard) into cache/part-RRRR.npy + labels-RRRR.npy, then meta.json
    (written last, atomically: a cache without meta.json is incomplete and is rebuilt)."""
    # The toy data are one fixed dataset (seed 0), whatever the training --seed: seeds share one latent cache.
    dataset = data_lib.build_dataset(args.data, args.resolution, flip=False, seed=0, toy_size=args.toy_size)
    loader = data_lib.make_loader(dataset, args.encode_batch, rank, world_size, shuffle=False, drop_last=False,
                                  num_workers=args.num_workers, pin_memory=device.type == "cuda")
    n = len(loader.sampler)
    h = args.resolution // ae.f
    os.makedirs(args.cache, exist_ok=True)
    z_out = np.lib.format.open_memmap(os.path.join(args.cache, f"part-{rank:04d}.npy"), "w+", np.float16,
                                      (n, ae.c, h, h))
    y_out = np.zeros(n, np.int64)
    s1 = s2 = 0.0
    i, skipped = 0, 0
    from tqdm import tqdm
    for x, y, bad in tqdm(loader, desc="encoding latents", disable=rank != 0):
        with torch.autocast(device.type, torch.bfloat16, enabled=args.ae_bf16):  # fp32 unless asked: latents are data
            z = ae.encode(x.to(device)).float()  # (N, c, h, w), unscaled
        z_out[i:i + len(z)] = z.cpu().numpy().astype(np.float16)
        y_out[i:i + len(z)] = y.numpy()
        s1, s2, i, skipped = s1 + z.double().sum().item(), s2 + z.double().pow(2).sum().item(), i + len(z), skipped + int(bad.sum())
    z_out.flush()
    np.save(os.path.join(args.cache, f"labels-{rank:04d}.npy"), y_out)
    count = fsdp.all_sum(float(i * ae.c * h * h))
    s1, s2, skipped = fsdp.all_sum(s1), fsdp.all_sum(s2), fsdp.all_sum(skipped)
    fsdp.barrier()
    std = math.sqrt(max(s2 / count - (s1 / count) ** 2, 1e-12))
    meta = dict(identity, parts=world_size, latent_std=std, skipped=skipped,
                num_classes=len(dataset.classes) if hasattr(dataset, "classes") else args.num_classes)
    if rank == 0:
        tmp = os.path.join(args.cache, "meta.json.tmp")
        with open(tmp, "w") as fh:
            json.dump(meta, fh, indent=2)
        os.replace(tmp, os.path.join(args.cache, "meta.json"))
    fsdp.barrier()
    return meta


class LatentCache(torch.utils.data.Dataset):
    """All parts of a latent cache, memory-mapped (ranks on a node share the page cache): -> (z, y, 0)."""

    def __init__(self, folder, parts):
        self.z = [np.load(os.path.join(folder, f"part-{r:04d}.npy"), mmap_mode="r") for r in range(parts)]
        self.y = [np.load(os.path.join(folder, f"labels-{r:04d}.npy")) for r in range(parts)]
        self.offsets = np.cumsum([0] + [len(y) for y in self.y])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, i):
        part = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - self.offsets[part]
        return torch.from_numpy(np.array(self.z[part][j], dtype=np.float32)), int(self.y[part][j]), 0


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------

def check_args(args, ae):
    if args.resolution % ae.f:
        raise ValueError(f"--resolution {args.resolution} is not a multiple of the AE's f={ae.f} ({ae.name})")
    if any(not 1 <= cp <= ae.c for cp in args.aug_c_primes):
        raise ValueError(f"--aug-c-primes {args.aug_c_primes} must lie in [1, c={ae.c}]")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    for name in ("accum", "steps", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.batch_size % (args.world_size * args.accum):
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by world size x --accum "
                         f"({args.world_size} x {args.accum})")
    if args.resume and not os.path.isfile(args.resume):
        raise ValueError(f"checkpoint not found: {args.resume}")


@torch.no_grad()
def save_samples(ema, objective, ae, scale, args, device, path, num_classes, rank):
    """A grid from the EMA weights with fixed seeds and classes: rows = classes."""
    rows = min(num_classes, 8)
    y = torch.arange(rows, device=device).repeat_interleave(args.grid_cols)  # (rows * cols,)
    g = torch.Generator(device).manual_seed(1234)
    h = args.resolution // ae.f
    z = torch.randn(len(y), ae.c, h, h, generator=g, device=device)
    ema.eval()
    with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):  # a preview, not an evaluation
        x0 = objective.sample(ema, z, y, objective.preview, args.grid_steps, generator=g)
        x = ae.decode(x0.float() / scale).float().clamp(-1, 1)  # undo the latent scaling before decoding
    if rank == 0:
        data_lib.save_grid(x, path, nrow=args.grid_cols)


def main(args):
    rank, world_size, device = fsdp.setup()
    args.world_size = world_size
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.model not in models.MODELS:
        fsdp.fail(f"unknown --model {args.model}", rank)
    for k, v in models.MODELS[args.model].recipe.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.cache = args.cache or os.path.join(args.out, "latents")

    error, ckpt, ae = None, None, None
    ckpt_path = args.resume or fsdp.latest_checkpoint(args.out)
    try:
        ae, scaling, source = ae_lib.load_ae(args.ae, device)
        if args.aug_c_primes is None:
            args.aug_c_primes = ae.c_prime_candidates
        check_args(args, ae)
        if ckpt_path and rank == 0:
            ckpt = fsdp.read_checkpoint(ckpt_path)
            if ckpt["args"].get("model") != args.model:
                raise ValueError(f"{ckpt_path} is a checkpoint of {ckpt['args'].get('model')!r}, not --model {args.model}")
            shape = [ae.c, args.resolution // ae.f, args.resolution // ae.f]
            if ckpt.get("latent_shape", shape) != shape:  # same backbone name, other AE or resolution
                raise ValueError(f"{ckpt_path} was trained on {ckpt['latent_shape']} latents, but --ae {args.ae} at "
                                 f"{args.resolution}px gives {shape}")
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        error = str(e)
    error = fsdp.agree(error)
    if error:
        fsdp.fail(error, rank)

    # Latent cache: reuse it only if the same AE, data and resolution made it.
    identity = dict(ae=source, ae_name=ae.name, ae_fingerprint=ae_fingerprint(ae), data=os.path.abspath(args.data)
                    if args.data != "toy" else f"toy:{args.toy_size}", resolution=args.resolution, ae_bf16=args.ae_bf16)
    meta_path = os.path.join(args.cache, "meta.json")
    meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else None
    if meta is not None and {k: meta.get(k) for k in identity} != identity:
        fsdp.fail(f"latent cache {args.cache} was made by {meta.get('ae')} ({meta.get('ae_fingerprint')}) on "
                  f"{meta.get('data')} at {meta.get('resolution')}px, not by {identity['ae']} "
                  f"({identity['ae_fingerprint']}) on {identity['data']} at {args.resolution}px: pass another --cache", rank)
    if meta is None:
        meta = build_cache(ae, args, identity, rank, world_size, device)
    # The released factor of released weights, else 1 / std of these latents (the official recipe for unpublished ones).
    scale = scaling if scaling is not None else 1.0 / meta["latent_std"]
    c, h, num_classes = ae.c, args.resolution // ae.f, meta["num_classes"]

    torch.manual_seed(args.seed)  # same init on every rank (FSDP2 has no sync_module_states)
    model = models.create_model(args.model, in_channels=c, input_size=h, num_classes=num_classes,
                                patch_size=args.patch_size, device=device)
    ema = models.create_model(args.model, in_channels=c, input_size=h, num_classes=num_classes,
                              patch_size=args.patch_size, device=device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    fsdp.shard(model, model.fsdp_units())
    fsdp.shard(ema, ema.fsdp_units())
    opt = fsdp.adamw(model, args.lr, args.weight_decay, tuple(args.betas))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    step = fsdp.load_checkpoint(ckpt, modules, optimizers, rank) if ckpt_path else 0
    log = fsdp.RunLog(args.out, args, rank, args.steps, step)
    if ckpt_path:
        log.message(f"resumed from {ckpt_path} at step {step}")
    del ckpt
    torch.manual_seed(args.seed * 1000 + rank + step)  # per-rank noise, t and c' streams

    objective = diffusion.make_objective(models.MODELS[args.model].objective)
    train_model = torch.compile(model) if args.compile else model
    dataset = LatentCache(args.cache, meta["parts"])
    micro = args.batch_size // (world_size * args.accum)
    if len(dataset) // world_size < micro:  # drop_last would leave no batch at all and forever() would spin
        fsdp.fail(f"{args.data} has {len(dataset)} images: fewer than one micro-batch of {micro} per rank "
                  f"({world_size} ranks); lower --batch-size", rank)
    loader = data_lib.make_loader(dataset, micro, rank, world_size, seed=args.seed, num_workers=args.num_workers,
                                  pin_memory=device.type == "cuda")
    batches = data_lib.forever(loader, epoch=step * args.batch_size // max(len(dataset), 1))
    n_params, n_local = models.count_params(model), fsdp.local_numel(model)
    log.log({"params": models.count_params(model, trainable_only=False), "params_local": n_local}, show=False)
    flops = 3 * models.flops_per_image(ema) * (2 if args.aug == "extra" else 1)  # fwd + bwd per training image
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
    log.message(f"{args.model} ({models.MODELS[args.model].objective}): {n_params / 1e6:.2f}M params "
                f"({n_local / 1e6:.2f}M on rank 0) on {c}x{h}x{h} latents of {ae.name} (latent std "
                f"{meta['latent_std']:.4f} x scale {scale:.4f} = {meta['latent_std'] * scale:.3f}, "
                f"{len(dataset)} images, {num_classes} classes); "
                f"aug={args.aug} c' in {args.aug_c_primes}; {world_size} rank(s) on {device}, global batch "
                f"{args.batch_size}")
    if not 0.5 <= meta["latent_std"] * scale <= 2:
        log.message(f"WARNING: the scaled latents have std {meta['latent_std'] * scale:.3f}, far from 1: the scaling "
                    f"factor {scale:.4f} {'of ' + ae.name if scaling is not None else ''} does not fit these latents "
                    f"(std {meta['latent_std']:.4f}); the noise schedules assume unit-scale data")
    model.train()
    t_last, n_last = time.time(), 0
    while step < args.steps:
        lr = fsdp.lr_at(step, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for i in range(args.accum):
            x0, y, _ = next(batches)
            x0, y = x0.to(device, non_blocking=True) * scale, y.to(device, non_blocking=True)  # (N, c, h, w)
            # Augmented diffusion training (Eq. 2): (x0, y, c') for replace / extra / off.
            x0, y, c_prime = diffusion.augment_batch(x0, y, args.aug_c_primes, "none" if args.aug == "off" else args.aug)
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(i == args.accum - 1)
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                loss, terms = objective.loss(train_model, x0, y, c_prime=c_prime)
            # Decided collectively (NaN if any rank's loss is), so that every rank stops at the same step.
            loss_mean = fsdp.all_mean(loss.item())
            if not math.isfinite(loss_mean):
                log.message(f"non-finite loss {loss_mean} at step {step + 1}; stopping. The last checkpoint is "
                            f"untouched: {fsdp.latest_checkpoint(args.out)}")
                log.close()
                fsdp.cleanup()
                sys.exit(3)
            (loss / args.accum).backward()
            loss_sum += loss.item() / args.accum
        gnorm = fsdp.optimizer_step(model, opt, ema, step, args.grad_clip, args.ema_decay, args.ema_warmup)
        step += 1
        n_last += args.batch_size

        if step % args.log_every == 0 or step == args.steps:
            dt = time.time() - t_last
            rec = {"step": step, "loss": fsdp.all_mean(loss_sum), "grad_norm": gnorm, "lr": lr,
                   "img_per_s": n_last / dt}
            if peak is not None:
                rec["mfu"] = flops * rec["img_per_s"] / (peak * world_size)
            log.log(rec)
            t_last, n_last = time.time(), 0
        if args.grid_every and (step % args.grid_every == 0 or step == args.steps):
            # Every rank samples: the EMA is sharded, so its forward is collective.
            save_samples(ema, objective, ae, scale, args, device, os.path.join(args.out, f"samples_{step:07d}.png"),
                         num_classes, rank)
        if step % args.save_every == 0 or step == args.steps:
            extra = {"ae": identity["ae"], "ae_name": ae.name, "scaling_factor": scale, "num_classes": num_classes,
                     "latent_shape": [c, h, h]}
            log.message(f"saved {fsdp.save_checkpoint(args.out, step, modules, optimizers, args, extra)}")
    log.close()
    fsdp.cleanup()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(models.MODELS), default="USiT-tiny")
    p.add_argument("--ae", default="runs/ae", help="train_ae.py run folder / .pt, a diffusers or DC-Gen folder, "
                   "or a registry name (random weights, smoke runs)")
    p.add_argument("--data", default="toy", help="'toy' or an ImageNet-style folder")
    p.add_argument("--toy-size", type=int, default=5000, help="images of the toy dataset")
    p.add_argument("--num-classes", type=int, default=10, help="toy classes")
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=1, help="DC-AE backbones use 1 (Sec. 4.1)")
    p.add_argument("--cache", default=None, help="latent cache folder (default: OUT/latents)")
    p.add_argument("--aug", choices=["replace", "extra", "off"], default="extra",
                   help="augmented diffusion training (Eq. 2): extra = official always_sample_max_channel")
    p.add_argument("--aug-c-primes", type=int, nargs="+", default=None, help="c' list (default: the AE's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--betas", type=float, nargs=2, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=None, help="default: 0.9999 (paper models), 0.999 (tiny)")
    p.add_argument("--ema-warmup", type=int, default=None, help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
                   "0: constant decay (DiT, U-ViT). Default: 2000 (paper models), 200 (tiny)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast for training")
    p.add_argument("--ae-bf16", action="store_true", help="encode the latent cache under bf16 autocast (default fp32)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default="runs/diffusion")
    p.add_argument("--resume", default=None)
    p.add_argument("--save-every", type=int, default=5000)
    p.add_argument("--grid-every", type=int, default=5000)
    p.add_argument("--grid-steps", type=int, default=50, help="sampler steps for the periodic grids")
    p.add_argument("--grid-cols", type=int, default=8)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--encode-batch", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
