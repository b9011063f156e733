"""Train a DC-AE with the structured latent space of DC-AE 1.5 (paper Sec. 3.2, Eq. 1, Fig. 4; Sec. 4.1).

Each step samples c' from the candidate list [c1, c1 + step, ..., c] (one draw per step and rank, as the official
trainer does), reconstructs from z * mask_{c,c'} (Eq. 1) and minimises l(x, D(z * mask)) = L1 + LPIPS (+ GAN
in phase 3). `--no-structured` trains the plain DC-AE baseline (always c' = c) for the Table 5 comparison.

The three DC-AE phases (Sec. 4.1, following DC-AE):
  --phase 1  low-resolution full training, L1 + LPIPS                     (all parameters)
  --phase 2  high-resolution latent adaptation, L1 + LPIPS               (the stages next to the latent)
  --phase 3  low-resolution local refinement, L1 + LPIPS + PatchGAN      (the decoder head only)

    python train_ae.py                                                   # tiny AE on the toy data, ~1 min CPU
    python train_ae.py --eval toy --resume runs/ae/ckpt_0000300.pt         # Fig. 3 / Table 1 metrics per c'
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 --data /data/imagenet/train --phase 1
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 --data /data/imagenet/train --phase 2 \\
        --init runs/ae-p1/ckpt_XXXXXXX.pt --out runs/ae-p2
    python train_ae.py --model dc-ae-f32c128-1.5 --eval /data/imagenet/val --resume runs/ae-p3/ckpt_XXXXXXX.pt \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import torch

import ae as ae_lib
import data as data_lib
import fsdp

# Recipes. The official AE trainer is unreleased: these are our choices, stated in the README.
# The tiny CPU recipe is L1 only: LPIPS needs pretrained VGG weights (no download here) and costs more than the
# tiny AE itself; pass --w-lpips 1 to add it.
# EMA: DC-Gen's trainer warm-up (fsdp.ema_update); the tiny runs of a few thousand steps use a shorter horizon.
TINY_RECIPE = dict(resolution=32, batch_size=32, lr=3e-4, steps=1500, warmup=20, w_lpips=0.0,  # lr 1e-3 stalls
                   ema_decay=0.999, ema_warmup=200)
PAPER = dict(ema_decay=0.9999, ema_warmup=2000, w_lpips=1.0)
PAPER_RECIPE = {1: dict(PAPER, resolution=256, batch_size=256, lr=1e-4, steps=200_000, warmup=1000),
                2: dict(PAPER, resolution=512, batch_size=64, lr=5e-5, steps=50_000, warmup=500),
                3: dict(PAPER, resolution=256, batch_size=256, lr=5e-5, steps=50_000, warmup=500)}


def trainable_prefixes(ae, phase):
    """Which parameters train in each DC-AE phase."""
    if phase == 1:
        return [""]
    last = len(ae.encoder.down_blocks) - 1
    if phase == 2:  # the layers next to the latent: the deepest stage on each side and the latent convs
        return [f"encoder.down_blocks.{last}.", "encoder.conv_out.", "decoder.conv_in.", f"decoder.up_blocks.{last}."]
    # phase 3: the decoder head, i.e. its highest-resolution stage and output layers
    return ["decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out."]


def set_phase(ae, phase):
    prefixes = trainable_prefixes(ae, phase)
    for name, p in ae.named_parameters():
        p.requires_grad_(any(name.startswith(q) for q in prefixes))
    n_train = sum(p.numel() for p in ae.parameters() if p.requires_grad)
    return prefixes, n_train


def check_args(args, ae):
    """Fail before any compute with a message naming the bad value."""
    if args.resolution % ae.f:
        raise ValueError(f"--resolution {args.resolution} is not a multiple of {ae.name}'s f={ae.f}")
    if not (1 <= args.c_prime_start <= ae.c) or args.c_prime_step < 1:
        raise ValueError(f"c' list must lie in [1, c={ae.c}]: got --c-prime-start {args.c_prime_start} "
                         f"--c-prime-step {args.c_prime_step}")
    if args.num_c_primes < 1 + args.always_min_max or (args.always_max and args.always_min_max):
        raise ValueError(f"--num-c-primes {args.num_c_primes} must be >= 1 (>= 2 with --always-min-max), and "
                         f"--always-max and --always-min-max exclude each other")
    for cp in args.eval_c_primes or []:
        if not 1 <= cp <= ae.c:
            raise ValueError(f"--eval-c-primes {cp} is outside [1, c={ae.c}]")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    if args.eval and args.eval != "toy" and not os.path.isdir(args.eval):
        raise ValueError(f"--eval folder not found: {args.eval}")
    for name in ("accum", "steps", "save_every", "log_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.batch_size % (args.world_size * args.accum):
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by world size x --accum "
                         f"({args.world_size} x {args.accum})")
    for path in (args.resume, args.init):
        if path and not os.path.isfile(path):
            raise ValueError(f"checkpoint not found: {path}")
    if args.inception_weights not in (None, "random") and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")


def check_checkpoint(ckpt, args, path):
    if ckpt["args"].get("model") != args.model:
        raise ValueError(f"{path} is a checkpoint of {ckpt['args'].get('model')!r}, not --model {args.model}")


# ------------------------------------------------------------------------------------------------
# Evaluation: the quantitative Fig. 3 / Table 1 (rFID, PSNR, LPIPS per c') and the pictures of Fig. 2a / 3
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model, args, device, rank, world_size, log):
    import fid as fid_lib
    ds = data_lib.build_dataset(args.eval, args.resolution, flip=False, toy_size=args.eval_images, seed=1)
    n = min(len(ds), args.eval_images)
    ds = torch.utils.data.Subset(ds, range(n))
    loader = data_lib.make_loader(ds, args.eval_batch, rank, world_size, shuffle=False, drop_last=False,
                                  num_workers=args.num_workers, pin_memory=device.type == "cuda")
    try:
        lp = ae_lib.build_lpips(random_weights=args.lpips_random).to(device)
    except RuntimeError as e:
        lp = None
        log.message(f"LPIPS skipped: {e}")
    inception = None
    if args.inception_weights or not args.no_rfid:
        try:
            inception = fid_lib.load_inception(args.inception_weights, device)
        except FileNotFoundError as e:
            log.message(f"rFID skipped: {e}")
    c_primes = args.eval_c_primes or model.c_prime_candidates
    sums = {cp: {"psnr": 0.0, "lpips": 0.0} for cp in c_primes}
    recs = {cp: [] for cp in c_primes}
    originals, skipped, count = [], 0, 0
    # DistributedSampler pads shards by repeating indices; eval on the padded set is off by at most world-1 images.
    for x, _, bad in loader:
        x = x.to(device)
        skipped += int(bad.sum())
        count += x.shape[0]
        originals.append(data_lib.to_uint8(x).permute(0, 3, 1, 2))  # (N, 3, H, W) uint8
        with torch.autocast(device.type, torch.bfloat16, enabled=args.ae_bf16):  # fp32 unless asked: these are metrics
            z = model.encode(x)  # (N, c, h, w)
        for cp in c_primes:
            with torch.autocast(device.type, torch.bfloat16, enabled=args.ae_bf16):
                x_rec = model.decode(z[:, :cp]).float().clamp(-1, 1)
            mse = ((x_rec - x) ** 2).flatten(1).mean(1)  # (N,) in [-1, 1] units: peak-to-peak 2
            sums[cp]["psnr"] += float((10 * torch.log10(4.0 / mse.clamp_min(1e-10))).sum())
            sums[cp]["lpips"] += float(lp(x_rec, x).sum()) if lp is not None else float("nan")
            recs[cp].append(data_lib.to_uint8(x_rec).permute(0, 3, 1, 2))
    total, skipped = fsdp.all_sum(count), fsdp.all_sum(skipped)
    results = []
    ref_stats = None
    if inception is not None:
        ref_stats = fid_lib.statistics(torch.cat(originals), inception, device=device, keep=False)[0]
    for cp in c_primes:
        row = {"c_prime": cp, "psnr": fsdp.all_sum(sums[cp]["psnr"]) / total,
               "lpips": fsdp.all_sum(sums[cp]["lpips"]) / total}
        if inception is not None:
            st = fid_lib.statistics(torch.cat(recs[cp]), inception, device=device, keep=False)[0]
            row["rfid"] = fid_lib.frechet_distance(*st.mu_sigma(), *ref_stats.mu_sigma())
        results.append(row)
    if rank == 0:
        tag = "" if not args.lpips_random else " (LPIPS with a RANDOM VGG: not meaningful)"
        print(f"\n{model.name}: reconstruction from the first c' channels, {total} images at {args.resolution}px"
              f" ({skipped} unreadable skipped){tag}")
        print("| c' | PSNR (dB) | LPIPS | rFID |\n|---:|---:|---:|---:|")
        for r in results:
            lp = "-" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
            rfid = f"{r['rfid']:.2f}" if "rfid" in r else "-"
            print(f"| {r['c_prime']} | {r['psnr']:.2f} | {lp} | {rfid} |")
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in results]
        with open(os.path.join(args.out, "eval.json"), "w") as fh:  # strict JSON: a skipped LPIPS is null, not NaN
            json.dump({"images": total, "resolution": args.resolution, "skipped": skipped, "results": rows}, fh,
                      indent=2)
    # Every rank runs the figures' forward passes: the EMA is sharded, so each encode/decode is collective.
    save_figures(model, torch.cat(originals)[:8], c_primes, args, device, rank)
    return results


@torch.no_grad()
def save_figures(model, x_uint8, c_primes, args, device, rank=0):
    """Fig. 3: rows = images, columns = [input, decode(z[:, :c']) for each c']. Fig. 2a: channel-averaged z."""
    x = (x_uint8.to(device).float() / 127.5 - 1)  # (n, 3, H, W) in [-1, 1]
    z = model.encode(x)  # (n, c, h, w)
    cols = [x] + [model.decode(z[:, :cp]).float().clamp(-1, 1) for cp in c_primes]
    grid = torch.stack(cols, 1).flatten(0, 1)  # (n * (1 + len(c')), 3, H, W), row-major by image
    if rank != 0:
        return
    data_lib.save_grid(grid, os.path.join(args.out, "fig3_partial_channels.png"), nrow=len(cols))
    avg = z.float().mean(1, keepdim=True)  # (n, 1, h, w): the channel-wise average feature of Fig. 2a
    lo, hi = avg.amin(dim=(1, 2, 3), keepdim=True), avg.amax(dim=(1, 2, 3), keepdim=True)
    avg = ((avg - lo) / (hi - lo + 1e-8) * 2 - 1).expand(-1, 3, -1, -1)  # per image to [-1, 1], gray
    avg = torch.nn.functional.interpolate(avg, size=x.shape[-2:], mode="nearest")
    data_lib.save_grid(torch.stack([x, avg], 1).flatten(0, 1), os.path.join(args.out, "fig2a_latent_mean.png"), nrow=2)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------

def main(args):
    rank, world_size, device = fsdp.setup()
    args.world_size = world_size
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    recipe = TINY_RECIPE if "tiny" in args.model else PAPER_RECIPE[args.phase]
    for k, v in recipe.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.structured is None:  # DC-AE 1.5 entries and tiny ones are structured; 1.0 / 1.1 baselines are not
        args.structured = not args.model.endswith(("-1.0", "-1.1"))
    cfg = ae_lib.AE_CONFIGS.get(args.model)
    if cfg is None:
        fsdp.fail(f"unknown --model {args.model}", rank)
    # `is None`, not `or`: an explicit bad value (0) must reach check_args, not silently become the default.
    if args.c_prime_start is None:
        args.c_prime_start = cfg.get("c_prime_start", 16)
    if args.c_prime_step is None:
        args.c_prime_step = cfg.get("c_prime_step", 4)

    # Validate everything before any compute; every rank reaches the same verdict.
    with torch.device("meta"):
        meta = ae_lib.build_ae(args.model)
    error, ckpt, init = None, None, None
    ckpt_path = args.resume or fsdp.latest_checkpoint(args.out)
    try:
        check_args(args, meta)
        if args.eval and ckpt_path is None and args.init is None:
            raise ValueError(f"--eval needs trained weights: no ckpt_*.pt in --out {args.out}; pass --resume or --init")
        if ckpt_path and rank == 0:  # rank 0 reads; load_checkpoint broadcasts
            ckpt = fsdp.read_checkpoint(ckpt_path)
            check_checkpoint(ckpt, args, ckpt_path)
        if args.init and ckpt_path is None:
            init = fsdp.read_checkpoint(args.init)
            check_checkpoint(init, args, args.init)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        error = str(e)
    error = fsdp.agree(error)
    if error:
        fsdp.fail(error, rank)

    torch.manual_seed(args.seed)  # same seed on every rank: FSDP2 has no sync_module_states
    kw = dict(c_prime_start=args.c_prime_start, c_prime_step=args.c_prime_step)
    model = ae_lib.build_ae(args.model, **kw).to(device)
    if init is not None:  # weights of the previous phase (EMA), no optimizer state
        model.load_state_dict(init.get("ema") or init["model"])
    prefixes, n_train = set_phase(model, args.phase)
    ema = ae_lib.build_ae(args.model, **kw).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    for m in (model, ema):
        fsdp.shard(m, [s for s in list(m.encoder.down_blocks) + list(m.decoder.up_blocks) if len(s)],
                   methods=("encode", "decode"))
    opt = fsdp.adamw(model, args.lr, 0.0, (0.9, 0.999))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    use_gan = args.phase == 3 or args.gan_start is not None
    disc = None
    if use_gan:
        disc = ae_lib.PatchDiscriminator(width=16 if "tiny" in args.model else 64).to(device)
        fsdp.shard(disc, [])
        opt_d = fsdp.adamw(disc, args.disc_lr or args.lr, 0.0, (0.5, 0.9))
        modules["disc"], optimizers["opt_disc"] = disc, (opt_d, disc)

    step = 0
    if ckpt_path is not None:
        step = fsdp.load_checkpoint(ckpt, modules, optimizers, rank)
    log = fsdp.RunLog(args.out, args, rank, args.steps, step, "eval_args.json" if args.eval else "args.json")
    if ckpt_path is not None:
        log.message(f"resumed from {ckpt_path} at step {step}")
    elif args.init:
        log.message(f"initialised from {args.init} (phase {args.phase})")
    del ckpt, init

    if args.eval:
        evaluate(ema, args, device, rank, world_size, log)
        log.close()
        fsdp.cleanup()
        return

    lp = None
    if args.w_lpips > 0:
        try:
            lp = ae_lib.build_lpips(random_weights=args.lpips_random).to(device)
        except RuntimeError as e:
            fsdp.fail(str(e), rank)
        if args.lpips_random:
            log.message("WARNING: LPIPS has a random VGG trunk (--lpips-random): not a perceptual loss")
    loss_fn = ae_lib.AELoss(lp, disc, args.w_l1, args.w_lpips, args.w_gan,
                            gan_start=args.gan_start if args.gan_start is not None else 0)
    train_model = torch.compile(model) if args.compile else model
    # The toy data are one fixed dataset (seed 0; eval uses held-out seed 1), whatever the training --seed.
    dataset = data_lib.build_dataset(args.data, args.resolution, flip=True, seed=0, toy_size=args.toy_size)
    micro = args.batch_size // (world_size * args.accum)
    if len(dataset) // world_size < micro:  # drop_last would leave no batch at all and forever() would spin
        fsdp.fail(f"{args.data} has {len(dataset)} images: fewer than one micro-batch of {micro} per rank "
                  f"({world_size} ranks); lower --batch-size", rank)
    loader = data_lib.make_loader(dataset, micro, rank, world_size, seed=args.seed, num_workers=args.num_workers,
                                  pin_memory=device.type == "cuda")
    batches = data_lib.forever(loader, epoch=step * args.batch_size // max(len(dataset), 1))
    gen = torch.Generator().manual_seed(args.seed * 1000 + rank + step)  # c' draws differ across ranks
    candidates = model.c_prime_candidates if args.structured else [model.c]
    fixed = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)

    n_local = fsdp.local_numel(model)
    if rank == 0:
        log.log({"params": ae_lib.count_params(model), "params_local": n_local}, show=False)
        log.message(f"{args.model}: {ae_lib.count_params(model) / 1e6:.2f}M params ({n_local / 1e6:.2f}M on rank 0), "
                    f"phase {args.phase}, training {n_train / 1e6:.2f}M in {prefixes}; "
                    f"structured={args.structured} c' in {candidates}; {world_size} rank(s) on {device}, "
                    f"global batch {args.batch_size} ({micro} x {args.accum} x {world_size}), {args.resolution}px, "
                    f"GAN {'on' if use_gan else 'off'}")
    skipped, t_last, n_last = 0, time.time(), 0
    model.train()
    while step < args.steps:
        lr = fsdp.lr_at(step, args.lr, args.warmup)
        for group in opt.param_groups:
            group["lr"] = lr
        # K c' per step (DC-Gen's num_sample_latent_channels), drawn per rank: one encode, K masked decodes.
        c_primes = ae_lib.sample_step_c_primes(candidates, args.num_c_primes, args.always_max, args.always_min_max, gen)
        terms_sum = {}
        for i in range(args.accum):
            x, _, bad = next(batches)
            skipped += int(bad.sum())
            x = x.to(device, non_blocking=True)
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-batch
                model.set_requires_gradient_sync(i == args.accum - 1)
            c_prime = torch.tensor(c_primes).repeat_interleave(len(x))  # (K N,): block k keeps c_primes[k] channels
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                x_rec, _ = train_model(x, c_prime=c_prime)  # reconstruct from z * mask_{c,c'} (Eq. 1, Fig. 4)
                # The mean over the K blocks: the mean of the K losses, each against the same images.
                loss, terms = loss_fn(x.repeat(len(c_primes), 1, 1, 1), x_rec.float(), step)
            # Decided collectively (one tiny all-reduce, NaN if any rank's loss is): every rank stops at the same
            # step instead of one rank exiting while the others wait in the next collective.
            loss_mean = fsdp.all_mean(loss.item())
            if not math.isfinite(loss_mean):
                log.message(f"non-finite loss {loss_mean} at step {step + 1} (c'={c_primes}); stopping. The last "
                            f"checkpoint is untouched: {fsdp.latest_checkpoint(args.out)}")
                log.close()
                fsdp.cleanup()
                sys.exit(3)
            (loss / args.accum).backward()
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / args.accum
            if use_gan and step >= loss_fn.gan_start:
                opt_d.zero_grad(set_to_none=True)
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                    d_loss = loss_fn.discriminator_loss(x, x_rec.float())
                d_loss.backward()
                opt_d.step()
                terms_sum["disc"] = terms_sum.get("disc", 0.0) + d_loss.item() / args.accum
        gnorm = fsdp.optimizer_step(model, opt, ema, step, args.grad_clip, args.ema_decay, args.ema_warmup)
        step += 1
        n_last += args.batch_size

        if step % args.log_every == 0 or step == args.steps:
            dt = time.time() - t_last
            rec = {"step": step, "c_prime": c_primes if len(c_primes) > 1 else c_primes[0], **{k: fsdp.all_mean(v) for k, v in terms_sum.items()},
                   "grad_norm": gnorm, "lr": lr, "img_per_s": n_last / dt, "skipped": fsdp.all_sum(skipped)}
            log.log(rec)
            t_last, n_last = time.time(), 0
        if args.grid_every and (step % args.grid_every == 0 or step == args.steps):
            shown = candidates[:: max(1, len(candidates) // 6)] + [model.c]  # a few c' and always c
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                z = ema.encode(fixed)  # (8, c, h, w)
                cols = [fixed] + [ema.decode(z[:, :cp]).float().clamp(-1, 1) for cp in shown]
            if rank == 0:  # rows: images; columns: input, then decode(z[:, :c']) as in Fig. 3
                data_lib.save_grid(torch.stack(cols, 1).flatten(0, 1).float(),
                                   os.path.join(args.out, f"grid_{step:07d}.png"), nrow=len(cols))
        if step % args.save_every == 0 or step == args.steps:
            extra = {"c_prime_candidates": candidates, "structured": args.structured}
            path = fsdp.save_checkpoint(args.out, step, modules, optimizers, args, extra)
            log.message(f"saved {path}")
    log.close()
    fsdp.cleanup()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(ae_lib.AE_CONFIGS), default="dc-ae-f8c64-tiny")
    p.add_argument("--data", default="toy", help="'toy' or an ImageNet-style folder (class subfolders)")
    p.add_argument("--toy-size", type=int, default=50_000, help="images of the toy dataset")
    p.add_argument("--resolution", type=int, default=None, help="default: 256 (phases 1, 3), 512 (phase 2); toy 32")
    p.add_argument("--phase", type=int, choices=[1, 2, 3], default=1)
    p.add_argument("--structured", action=argparse.BooleanOptionalAction, default=None,
                   help="train with the channel mask of Eq. 1 (default: on, except for -1.0/-1.1 baselines)")
    p.add_argument("--c-prime-start", type=int, default=None, help="first c' of the list (paper: 16)")
    p.add_argument("--c-prime-step", type=int, default=None, help="step of the c' list (paper: 4)")
    p.add_argument("--num-c-primes", type=int, default=1, help="K c' per step: one encode, K masked decodes, the mean "
                   "loss (DC-Gen's num_sample_latent_channels, default 1)")
    p.add_argument("--always-max", action="store_true", help="c is always one of the K (always_sample_max_channel)")
    p.add_argument("--always-min-max", action="store_true", help="the smallest c' and c are always two of the K "
                   "(always_sample_min_max_channel)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch size")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--ema-decay", type=float, default=None, help="default: 0.9999 (paper models), 0.999 (tiny)")
    p.add_argument("--ema-warmup", type=int, default=None, help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
                   "0: constant decay. Default: 2000 (paper models), 200 (tiny)")
    p.add_argument("--w-l1", type=float, default=1.0)
    p.add_argument("--w-lpips", type=float, default=None, help="default 1.0 (paper models), 0.0 (tiny recipe)")
    p.add_argument("--w-gan", type=float, default=0.1)
    p.add_argument("--gan-start", type=int, default=None, help="step at which the GAN loss starts (phase 3: 0)")
    p.add_argument("--disc-lr", type=float, default=None)
    p.add_argument("--lpips-random", action="store_true",
                   help="random VGG trunk for LPIPS (offline smoke runs; not a perceptual loss)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (training)")
    p.add_argument("--ae-bf16", action="store_true", help="--eval under bf16 autocast (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--out", default="runs/ae")
    p.add_argument("--resume", default=None, help="checkpoint to resume (default: the newest in --out)")
    p.add_argument("--init", default=None, help="weights from a previous phase's checkpoint")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--grid-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval", default=None, help="evaluate only: a validation folder or 'toy'")
    p.add_argument("--eval-c-primes", type=int, nargs="+", default=None, help="default: the candidate list")
    p.add_argument("--eval-images", type=int, default=50_000)
    p.add_argument("--eval-batch", type=int, default=32)
    p.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth for rFID")
    p.add_argument("--no-rfid", action="store_true", help="skip rFID (no Inception weights at hand)")
    args = p.parse_args(argv)
    if args.phase == 3 and args.gan_start is None:
        args.gan_start = 0
    return args


if __name__ == "__main__":
    main(parse_args())
