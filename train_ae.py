"""Train a DC-AE with the structured latent space of DC-AE 1.5 (paper Sec. 3.2, Eq. 1, Fig. 4; Sec. 4.1).

Each step draws c' from the candidate list [c1, c1 + step, ..., c] (per rank, as the official trainer does; K of
them with --num-c-primes, one encode and K masked decodes), reconstructs from z * mask_{c,c'} (Eq. 1) and minimises
l(x, D(z * mask)) = L1 + LPIPS (+ GAN in phase 3). `--no-structured` trains the plain DC-AE baseline (always c' = c)
for the Table 5 comparison. Reconstruction metrics per c' and the Fig. 2a / Fig. 3 pictures: eval_ae.py.

`--finetune-decoder K` fine-tunes the decoder of --init for one c' (Fig. 3: "The decoder is
fine-tuned for all settings to fully reveal the information encoded in the (partial) latent
space"; DC-Gen's dc-ae-f32c128-{1.1,1.5}-cK): the encoder frozen, every step at c' = K, the
decoder trained with the AE loss of --phase. eval_ae.py --decoders K=RUN then evaluates c' = K
with it.

The three DC-AE phases (Sec. 4.1, following DC-AE):
  --phase 1  low-resolution full training, L1 + LPIPS                     (all parameters)
  --phase 2  high-resolution latent adaptation, L1 + LPIPS               (the stages next to the latent)
  --phase 3  low-resolution local refinement, L1 + LPIPS + PatchGAN      (the decoder head only)

    python train_ae.py                                                   # tiny AE on the toy data (CPU, 2 cores: 74 s)
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 --data /data/imagenet/train --phase 1
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 --data /data/imagenet/train --phase 2 \\
        --init runs/ae-p1 --out runs/ae-p2
    python train_ae.py --init runs/ae --finetune-decoder 8 --steps 500 --out runs/ae-decoder-c8
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import ae as ae_lib
import checkpoints
import cli
import data as data_lib
import evaluation
import fid
import fsdp
import run

# Recipes. The official AE trainer and loss are unreleased: these are our choices, stated in the README.
# The tiny CPU recipe is L1 only: LPIPS needs pretrained VGG weights (no download here) and costs more than the
# tiny AE itself; pass --w-lpips 1 to add it. EMA: DC-Gen's trainer warm-up (fsdp.ema_update); the tiny runs of a
# few thousand steps use a shorter horizon.
# c' per step: DC-Gen's default, one (K = 1), everywhere (no released config sets another). On the
# toy data two with c always among them (K = 2, --always-max) cost the structured latent less at
# c' = c (0.7 dB against 1.1 dB, shared decoders: README, toy results); the structure of the front
# channels, which the paper trains the AE for, is the same with either.
TINY_RECIPE = dict(resolution=32, batch_size=32, lr=3e-4, steps=1000, warmup=20, w_lpips=0.0,  # lr 1e-3 stalls
                   ema_decay=0.999, ema_warmup=200, save_minutes=2, num_c_primes=1, always_max=False, disc_width=16)
PAPER = dict(ema_decay=0.9999, ema_warmup=2000, w_lpips=1.0, save_minutes=30, num_c_primes=1, always_max=False,
             disc_width=64)
PAPER_RECIPE = {1: dict(PAPER, resolution=256, batch_size=256, lr=1e-4, steps=200_000, warmup=1000),
                2: dict(PAPER, resolution=512, batch_size=64, lr=5e-5, steps=50_000, warmup=500),
                3: dict(PAPER, resolution=256, batch_size=256, lr=5e-5, steps=50_000, warmup=500)}


# ------------------------------------------------------------------------------------------------
# The AE loss (Sec. 3.2): weighted L1 + LPIPS + GAN on D(z * mask)
# ------------------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix's NLayerDiscriminator, as in taming/SD): 4x4 convs, LeakyReLU 0.2, BatchNorm.
    x (N, 3, H, W) -> logits (N, 1, H/8 - 2, W/8 - 2) for n_layers = 3."""

    def __init__(self, width=64, n_layers=3):
        super().__init__()
        layers = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        w = width
        for i in range(1, n_layers + 1):
            w_next = width * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(w, w_next, 4, stride, 1, bias=False), nn.BatchNorm2d(w_next), nn.LeakyReLU(0.2)]
            w = w_next
        layers.append(nn.Conv2d(w, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN init, as pix2pix
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.main(x)


class AELoss(nn.Module):
    """l(x, D(z * mask)) = w_l1 * L1 + w_lpips * LPIPS + w_gan * GAN (Sec. 3.2; three DC-AE phases, Sec. 4.1).

    The official loss code is unreleased; defaults and their sources:
    - w_l1 = 1.0: the pixel term is the anchor; every DC-AE phase uses it (efficientvit issue #143).
    - w_lpips = 1.0: LPIPS(VGG) with weight 1.0, as SD's LPIPSWithDiscriminator (community DC-AE
      reproductions use 0.25-1.0); phases 1 and 2 use L1 + perceptual only (issue #143).
    - w_gan = 0.1 with a hinge loss and a PatchGAN, from gan_start on: DC-AE adds the GAN only in phase 3
      (local refinement). A fixed weight instead of taming's adaptive one, because the adaptive weight needs
      gradients of the decoder's last layer, which FSDP shards; 0.1 is the common fixed choice (e.g. MaskGIT).
    No KL term: DC-AE is a plain autoencoder (efficientvit issue #155).
    """

    def __init__(self, lpips_net, discriminator=None, w_l1=1.0, w_lpips=1.0, w_gan=0.1, gan_start=0):
        super().__init__()
        self.lpips = lpips_net  # frozen helper net: stays outside FSDP (None: L1 only, the tiny CPU recipe)
        self.discriminator = discriminator
        self.w_l1, self.w_lpips, self.w_gan, self.gan_start = w_l1, w_lpips, w_gan, gan_start

    def forward(self, x, x_rec, step=0):
        """Generator-side loss. x, x_rec (N, 3, H, W) in [-1, 1]. Returns (loss, {term: float tensor})."""
        l1 = (x_rec - x).abs().mean()
        loss, terms = self.w_l1 * l1, {"l1": l1.detach()}
        if self.lpips is not None and self.w_lpips > 0:
            lp = self.lpips(x_rec.float(), x.float()).mean()  # LPIPS expects [-1, 1]
            loss = loss + self.w_lpips * lp
            terms["lpips"] = lp.detach()
        if self.discriminator is not None and step >= self.gan_start:
            gan = -self.discriminator(x_rec).mean()  # hinge generator loss
            loss = loss + self.w_gan * gan
            terms["gan"] = gan.detach()
        return loss, terms

    def discriminator_loss(self, x, x_rec):
        """Hinge loss for the PatchGAN: mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))), halved; x_rec is detached, so
        this loss trains the discriminator alone."""
        real = self.discriminator(x)
        fake = self.discriminator(x_rec.detach())
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())


def sample_step_c_primes(candidates, k=1, always_max=False, always_min_max=False, generator=None):
    """The K c' of one AE training step (DC-Gen aecore/trainer.py, prepare_batch): draws with replacement from the
    candidates (ae.sample_c_prime); always_max makes the first one c, always_min_max the first two the smallest and c."""
    fixed = [candidates[0], candidates[-1]] if always_min_max else [candidates[-1]] if always_max else []
    if k < max(len(fixed), 1):
        raise ValueError(f"{k} c' per step cannot include {fixed}")
    return fixed + (ae_lib.sample_c_prime(candidates, k - len(fixed), generator).tolist() if k > len(fixed) else [])


# ------------------------------------------------------------------------------------------------
# The DC-AE phases and the arguments
# ------------------------------------------------------------------------------------------------

def trainable_prefixes(ae, phase, finetune_decoder=None):
    """Which parameters train in each DC-AE phase. Fine-tuning a decoder for one c' trains all of
    it in any phase (the phase picks the recipe and the loss); the encoder stays frozen, so that
    the decoder serves its latents. Which layers DC-Gen tuned for its per-c' decoders is
    unreleased: the whole decoder is our choice."""
    if finetune_decoder is not None:
        return ["decoder."]
    if phase == 1:
        return [""]
    last = len(ae.encoder.down_blocks) - 1
    if phase == 2:  # the layers next to the latent: the deepest stage on each side and the latent convs
        return [f"encoder.down_blocks.{last}.", "encoder.conv_out.", "decoder.conv_in.", f"decoder.up_blocks.{last}."]
    # phase 3: the decoder head, i.e. its highest-resolution stage and output layers
    return ["decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out."]


def set_phase(ae, phase, finetune_decoder=None):
    prefixes = trainable_prefixes(ae, phase, finetune_decoder)
    for name, p in ae.named_parameters():
        p.requires_grad_(any(name.startswith(q) for q in prefixes))
    return prefixes, sum(p.numel() for p in ae.parameters() if p.requires_grad)


def fill_defaults(args, device):
    """The recipe of the model and phase, then what depends on it, for every argument left at None.
    Raises ValueError for the options that --finetune-decoder excludes (one c', K, no c' list)."""
    if args.finetune_decoder is not None:
        given = [flag for flag, value in [("--structured / --no-structured", args.structured),
                                          ("--num-c-primes", args.num_c_primes),
                                          ("--always-max", args.always_max)] if value is not None]
        given += ["--always-min-max"] if args.always_min_max else []
        if given:
            raise ValueError(f"--finetune-decoder {args.finetune_decoder} trains the decoder at "
                             f"that one c'; {', '.join(given)} do not apply to it")
        # The c' list is K alone; whether the AE was structured is --init's, not this run's.
        args.structured, args.num_c_primes, args.always_max = None, 1, False
    if args.always_min_max and args.always_max is None:  # the min-max option replaces the recipe's always-max
        args.always_max = False
    cfg = ae_lib.AE_CONFIGS[args.model]
    run.fill_recipe(args, TINY_RECIPE if cfg.recipe == "tiny" else PAPER_RECIPE[args.phase])
    if args.finetune_decoder is None:  # 1.5: Eq. 1; 1.0 / 1.1: not
        args.structured = cfg.structured if args.structured is None else args.structured
    if not args.structured:  # c' = c always: K decodes would be K copies of one
        args.num_c_primes, args.always_max, args.always_min_max = 1, False, False
    args.c_prime_start = cfg.c_prime_start if args.c_prime_start is None else args.c_prime_start
    args.c_prime_step = cfg.c_prime_step if args.c_prime_step is None else args.c_prime_step
    args.gan_start = 0 if args.phase == 3 and args.gan_start is None else args.gan_start
    args.compile = device.type == "cuda" if args.compile is None else args.compile
    args.bf16, precision = cli.precision(device, args.bf16)  # bf16 autocast on CUDA, fp32 on CPU
    return precision


def check_args(args, ae):
    """What depends on the AE, before any compute (the checks both trainers share are in run.start_run)."""
    if args.resolution < 1 or args.resolution % ae.f:
        raise ValueError(f"--resolution {args.resolution} is not a positive multiple of {ae.name}'s f={ae.f}")
    if not (1 <= args.c_prime_start <= ae.c) or args.c_prime_step < 1:
        raise ValueError(f"c' list must lie in [1, c={ae.c}]: got --c-prime-start {args.c_prime_start} "
                         f"--c-prime-step {args.c_prime_step}")
    if args.num_c_primes < 1 + args.always_min_max or (args.always_max and args.always_min_max):
        raise ValueError(f"--num-c-primes {args.num_c_primes} must be >= 1 (>= 2 with --always-min-max), and "
                         f"--always-max and --always-min-max exclude each other")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    if args.finetune_decoder is not None and not 1 <= args.finetune_decoder <= ae.c:
        raise ValueError(f"--finetune-decoder {args.finetune_decoder} must lie in [1, c={ae.c}]")
    if args.eval_every < 0 or args.eval_images < 1:
        raise ValueError(f"--eval-every {args.eval_every} must be >= 0 and --eval-images {args.eval_images} >= 1")
    if args.eval_every and args.data != "toy" and not (args.eval_data and os.path.isdir(args.eval_data)):
        raise ValueError(f"--eval-every on --data {args.data} needs --eval-data, a held-out (validation) image "
                         f"folder (got {args.eval_data})")
    if args.inception_weights not in (None, "random") and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")
    if args.finetune_decoder is not None and not args.init:
        raise ValueError(f"--finetune-decoder {args.finetune_decoder} fine-tunes the decoder of "
                         f"a trained AE: pass its encoder and decoder with --init (a train_ae.py "
                         f"run, a released folder or hub id)")


def read_init(args):
    """--init: the weights of a previous phase (a train_ae.py run or checkpoint: its EMA weights) or released ones (a
    DC-Gen or diffusers folder, a hub id), unless this run resumes.
    -> (state dict, its source) or (None, None)."""
    if not args.init or run.resume_path(args):
        return None, None
    init = checkpoints.load_ae(args.init, option="--init")
    if init.name != args.model:
        raise ValueError(f"--init {args.init} is {init.name!r}, not --model {args.model}")
    return init.model.state_dict(), init.source


def held_out(data, resolution, images):
    """The images train_ae.py --eval-every measures: the toy data's held-out set (seed 1, as eval_ae.py's), or the
    first `images` of a validation folder."""
    dataset = data_lib.build_dataset(data, resolution, toy_size=images, seed=1)
    return torch.utils.data.Subset(dataset, range(min(len(dataset), images)))


def main(args):
    # Setup: process group, recipe, checks, the run folder (lock, resume checkpoint), all before any compute.
    rank, world_size, device = fsdp.setup()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    error, init, init_source, dataset = None, None, None, None
    try:
        precision = fill_defaults(args, device)
        with torch.device("meta"):
            check_args(args, ae_lib.build_ae(args.model))
        init, init_source = read_init(args)
        # The toy data are one fixed dataset (seed 0; eval_ae.py holds out seed 1), whatever the training --seed.
        dataset = data_lib.build_dataset(args.data, args.resolution, toy_size=args.toy_size, seed=0)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    ckpt_path, ckpt = run.start_run(args, rank, world_size, dict(model=args.model))

    # Model and EMA (FSDP2), optimizers (and the PatchGAN), every rank's own RNG streams, then the checkpoint.
    def build():  # the previous phase's weights (--init) go in before sharding
        model = ae_lib.build_ae(args.model, c_prime_start=args.c_prime_start, c_prime_step=args.c_prime_step)
        if init is not None:
            model.load_state_dict(init)
        return model.to(device)
    model, ema = fsdp.build_with_ema(build, args.seed, methods=("encode", "decode"))  # the grids call them
    prefixes, n_train = set_phase(model, args.phase, args.finetune_decoder)
    opt = fsdp.adamw(model, args.lr, 0.0, (0.9, 0.999))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    disc = opt_disc = None
    if args.gan_start is not None:
        disc = fsdp.shard(PatchDiscriminator(width=args.disc_width).to(device), [])
        opt_disc = fsdp.adamw(disc, args.disc_lr or args.lr, 0.0, (0.5, 0.9))
        modules["disc"], optimizers["opt_disc"] = disc, (opt_disc, disc)
    torch.manual_seed((args.seed * 1000 + rank) % 2 ** 64)  # c' draws and flips differ across ranks
    step, data_state = run.load_checkpoint(ckpt, modules, optimizers, rank) if ckpt_path else (0, None)
    elapsed = ckpt.get("elapsed", 0.0) if ckpt else 0.0  # training seconds before this process (rank 0 logs them)
    # A fine-tuned decoder records the c' it serves and whose encoder it decodes (the checkpoint
    # holds that encoder too, bit for bit: eval_ae.py --decoders compares it with --ae's). On
    # resume, rank 0 (which writes) reads the record back.
    finetuned = None
    if args.finetune_decoder is not None:
        encoder = init_source or (ckpt or {}).get("finetuned_decoder", {}).get("encoder")
        finetuned = {"c_prime": args.finetune_decoder, "encoder": encoder}
    ckpt = init = None  # free the host copies of the weights
    log = run.RunLog(args.out, args, rank, args.steps, step if ckpt_path else None)
    log.message(f"resumed from {ckpt_path} at step {step}" if ckpt_path else
                f"initialised from {args.init} (phase {args.phase})" if args.init else "started from random weights")
    if finetuned:
        log.message(f"fine-tuning the decoder for c'={args.finetune_decoder} (Fig. 3); the "
                    f"encoder of {finetuned['encoder']} is frozen")
    lp = None
    if args.w_lpips > 0:
        try:
            lp = ae_lib.build_lpips(random_weights=args.lpips_random).to(device)
        except RuntimeError as e:
            fsdp.fail(f"{e}; or pass --lpips-random (a smoke run) or --w-lpips 0", rank)
    loss_fn = AELoss(lp, disc, args.w_l1, args.w_lpips, args.w_gan, gan_start=args.gan_start or 0)

    # Reconstruction during training (eval_ae.py's metrics per c' on held-out images): LPIPS with the loss's network
    # or its own, rFID when --inception-weights is given; both said once when they cannot be measured.
    eval_loader = eval_lp = inception = None
    if args.eval_every:
        eval_loader = data_lib.make_loader(held_out(args.eval_data or args.data, args.resolution, args.eval_images),
                                           32, rank, world_size, args.num_workers, device.type == "cuda")
        eval_lp = lp
        if eval_lp is None:
            try:
                eval_lp = ae_lib.build_lpips(random_weights=args.lpips_random).to(device)
            except RuntimeError as e:
                log.message(f"--eval-every: LPIPS not measured ({e})")
        inception = fid.load_inception(args.inception_weights, device) if args.inception_weights else None

    # Data: this rank's batches, from where the checkpoint left them.
    micro = args.batch_size // (world_size * args.accum)
    try:
        batches = data_lib.Batches(dataset, micro, rank, world_size, args.seed, args.num_workers,
                                   device.type == "cuda", state=data_state)
    except ValueError as e:
        fsdp.fail(str(e), rank)
    fixed = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
    candidates = model.c_prime_candidates if args.structured else [model.c]
    if finetuned:
        candidates = [args.finetune_decoder]
    train_model = torch.compile(model) if args.compile else model
    sync = run.Sync(device, step, args.steps, args.log_every, args.save_every, args.save_minutes, args.batch_size)
    meter = run.Meter()
    n_params = sum(p.numel() for p in model.parameters())
    log.log({"params": n_params, "params_local": fsdp.local_numel(model)}, show=False)
    log.message(f"{args.model}: {n_params / 1e6:.2f}M params, phase {args.phase}, training "
                f"{n_train / 1e6:.2f}M in {prefixes}; "
                + (f"c' = {args.finetune_decoder} (decoder fine-tuning)" if finetuned else
                   f"structured={args.structured} c' in {candidates}, {args.num_c_primes} per "
                   f"step")
                + f"{' with c' if args.always_max else ''}"
                f"{' with the smallest and c' if args.always_min_max else ''}; {world_size} rank(s) on {device}"
                f"{' sharded with FSDP2' if fsdp.is_distributed() else ''}, "
                f"global batch {args.batch_size} ({micro} x {args.accum} x {world_size}), {args.resolution}px, "
                f"GAN from step {args.gan_start}, EMA {args.ema_decay} warm-up {args.ema_warmup}")
    log.message(f"precision: {precision}; {cli.machine(device)}")

    # Training loop. The host waits for the device only at sync points (every --log-every steps and at saves).
    model.train()
    code, clock = 0, time.time()  # training time = elapsed + (now - clock); evaluations are not counted
    while step < args.steps:
        lr = fsdp.set_lr(opt, step, args.lr, args.warmup)
        # K c' per step (DC-Gen's num_sample_latent_channels) on the training RNG: one encode, K masked decodes.
        c_primes = sample_step_c_primes(candidates, args.num_c_primes, args.always_max, args.always_min_max)
        for i in range(args.accum):
            x, _, bad = next(batches)
            if args.data != "toy":  # random horizontal flips, drawn from the training RNG (exact resume)
                x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(3), x)  # (N, 3, H, W)
            x = x.to(device, non_blocking=True)
            # Channel masks (Eq. 1): block k keeps the first c'_k channels of every image.
            mask = torch.stack([ae_lib.channel_mask(model.c, [cp] * len(x)) for cp in c_primes])  # (K, N, c, 1, 1)
            mask = mask.to(device, non_blocking=True)
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-step
                model.set_requires_gradient_sync(i == args.accum - 1)
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                x_rec = train_model(x, mask)  # (K N, 3, H, W): reconstructions from z * mask_k (Fig. 4)
                # The mean over the K blocks: the mean of the K losses, each against the same images.
                loss, terms = loss_fn(x.repeat(len(c_primes), 1, 1, 1), x_rec.float(), step)
            (loss / args.accum).backward()
            meter.add({"loss": loss, **terms}, 1 / args.accum)
            meter.count("skipped", bad.sum())
            if disc is not None and step >= loss_fn.gan_start:  # the PatchGAN's own step on the same batch (phase 3)
                opt_disc.zero_grad(set_to_none=True)  # also drops what the generator's GAN term left in it
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                    d_loss = loss_fn.discriminator_loss(x, x_rec.float())
                d_loss.backward()
                opt_disc.step()
                meter.add({"disc": d_loss.detach()}, 1 / args.accum)
        # Clip, AdamW step, EMA (DC-Gen's warm-up).
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or float("inf"), foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if finetuned:  # the EMA of the decoder; the frozen encoder is its own EMA, left untouched
            fsdp.ema_update(ema.decoder, model.decoder, args.ema_decay, step + 1, args.ema_warmup)
        else:
            fsdp.ema_update(ema, model, args.ema_decay, step + 1, args.ema_warmup)
        meter.add({"grad_norm": fsdp.full_tensor(grad_norm)})
        meter.end_step()
        step += 1
        if args.grid_every and (step % args.grid_every == 0 or step == args.steps):
            save_grid(ema, fixed, candidates, args, device, os.path.join(args.out, f"grid_{step:07d}.png"), rank)

        # Log, stop, save, evaluate: only at sync points, where one all-reduce brings the means and the flags to
        # every rank.
        eval_due = bool(args.eval_every and step % args.eval_every == 0)
        if not (sync.due(step) or eval_due):
            continue
        record, nonfinite, stopped, late = sync.reduce(step, meter)
        if nonfinite:  # write nothing: the last checkpoint stays the last good state
            log.message(f"non-finite loss by step {step}; stopping. The last checkpoint is untouched: "
                        f"{run.latest_checkpoint(args.out)}")
            code = 3
            break
        log.log({**record, "lr": lr, "c_prime": c_primes if len(c_primes) > 1 else c_primes[0]})
        if late or stopped or eval_due or step % args.save_every == 0 or step == args.steps:
            extra = {"c_prime_candidates": candidates, "structured": args.structured, "data": batches.state(),
                     "elapsed": elapsed + time.time() - clock}
            if finetuned:
                extra["finetuned_decoder"] = finetuned
            log.saved(*run.save_checkpoint(args.out, step, modules, optimizers, args, extra,
                                           keep_every=args.eval_every))
            sync.saved()
        if stopped:  # SIGTERM / SIGINT: saved above, now stop (exit status 128 + the signal)
            log.message(f"stopped by {sync.signal_name} at step {step} after saving; run the same command again to "
                        f"resume")
            code = 128 + sync.signal
            break
        if eval_due:  # PSNR, LPIPS and rFID per c' of the EMA, on the held-out images (Table 1)
            t0 = time.time()
            shown = [args.finetune_decoder] if finetuned else grid_c_primes(candidates)
            rows, _, _ = evaluation.reconstruction_metrics(ema, {cp: ema for cp in shown}, eval_loader, device,
                                                           eval_lp, inception)
            elapsed, clock = elapsed + t0 - clock, time.time()
            log.log({"step": step, "images_seen": step * args.batch_size, "elapsed_s": elapsed,
                     "device_hours": elapsed * world_size / 3600, "eval_s": clock - t0,
                     **{f"{k}_c{r['c_prime']}": r[k] for r in rows for k in ("psnr", "lpips", "rfid")
                        if k in r and not (k == "lpips" and math.isnan(r[k]))}})
            model.train()
    run.finish(log, sync)
    if code:
        sys.exit(code)


def grid_c_primes(candidates, columns=6):
    """The c' the grids show: about `columns` of the candidate list, evenly spaced, the largest
    always last, each once (a stride that lands on it must not show it twice)."""
    return sorted(set(candidates[:: max(1, len(candidates) // columns)]) | {candidates[-1]})


@torch.no_grad()
def save_grid(ema, fixed, candidates, args, device, path, rank):
    """Rows: the fixed images; columns: the input, then decode(z[:, :c']) for a few c' and c, as in Fig. 3. Every rank
    runs the forward passes (the EMA is sharded); rank 0 writes the PNG."""
    shown = grid_c_primes(candidates)
    with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
        z = ema.encode(fixed)  # (8, c, h, w)
        cols = [fixed] + [ema.decode(z[:, :cp]).float().clamp(-1, 1) for cp in shown]
    if rank == 0:
        data_lib.save_grid(torch.stack(cols, 1).flatten(0, 1).float(), path, nrow=len(cols),
                           col_labels=["input"] + [f"c'={cp}" for cp in shown])


def recipe_default(key):
    """--help words for an option the recipe sets, e.g. "default: 0.0003 for tiny AEs; 0.0001 / 5e-05 / 5e-05 in
    phases 1 / 2 / 3" (written from the recipes, so it cannot drift from them)."""
    phases = [PAPER_RECIPE[p][key] for p in (1, 2, 3)]
    paper = f"{phases[0]} for the paper's AEs" if len(set(phases)) == 1 else \
        " / ".join(map(str, phases)) + " in phases 1 / 2 / 3"
    return f"default: {TINY_RECIPE[key]} for tiny AEs; {paper}"


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(ae_lib.AE_CONFIGS), default="dc-ae-f8c64-tiny", help="AE (ae.py)")
    parser.add_argument("--data", default="toy", help="'toy' or an ImageNet-style folder (class subfolders)")
    parser.add_argument("--toy-size", type=int, default=50_000, help="images of the toy dataset")
    parser.add_argument("--resolution", type=int, default=None, help=f"image side ({recipe_default('resolution')})")
    parser.add_argument("--phase", type=int, choices=[1, 2, 3], default=1, help="the DC-AE training phase")
    parser.add_argument("--structured", action=argparse.BooleanOptionalAction, default=None,
                        help="train with the channel mask of Eq. 1 (default: on, except for -1.0/-1.1 baselines)")
    parser.add_argument("--c-prime-start", type=int, default=None, help="first c' of the list (default: the AE entry's; paper models 16)")
    parser.add_argument("--c-prime-step", type=int, default=None, help="step of the c' list (default: the AE entry's; paper models 4)")
    parser.add_argument("--num-c-primes", type=int, default=None, help="K c' per step: one encode, K masked decodes, the "
                        "mean loss (DC-Gen's num_sample_latent_channels). Default: 1, DC-Gen's")
    parser.add_argument("--always-max", action=argparse.BooleanOptionalAction, default=None,
                        help="c is always one of the K (always_sample_max_channel). Default: off, DC-Gen's")
    parser.add_argument("--always-min-max", action="store_true", help="the smallest c' and c are always two of the K "
                        "(always_sample_min_max_channel)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps ({recipe_default('steps')})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"global batch size ({recipe_default('batch_size')})")
    parser.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    parser.add_argument("--lr", type=cli.real(0, above=True), default=None, help=f"AdamW learning rate ({recipe_default('lr')})")
    parser.add_argument("--warmup", type=int, default=None, help=f"linear LR warm-up steps ({recipe_default('warmup')})")
    parser.add_argument("--grad-clip", type=cli.real(0), default=1.0, help="max grad norm (0: no clipping)")
    parser.add_argument("--ema-decay", type=cli.real(0, 1), default=None, help=f"EMA decay ({recipe_default('ema_decay')})")
    parser.add_argument("--ema-warmup", type=int, default=None, help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
                        f"0: constant decay ({recipe_default('ema_warmup')})")
    parser.add_argument("--w-l1", type=cli.real(0), default=1.0, help="weight of the L1 term")
    parser.add_argument("--w-lpips", type=cli.real(0), default=None, help=f"weight of LPIPS ({recipe_default('w_lpips')})")
    parser.add_argument("--w-gan", type=cli.real(0), default=0.1, help="weight of the hinge GAN term")
    parser.add_argument("--gan-start", type=int, default=None, help="step at which the GAN loss starts (default: 0 in phase 3, no GAN in phases 1-2)")
    parser.add_argument("--disc-lr", type=cli.real(0, above=True), default=None, help="discriminator learning rate (default: --lr)")
    parser.add_argument("--lpips-random", action="store_true",
                        help="random VGG trunk for LPIPS (offline smoke runs; not a perceptual loss)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for training (default: on with CUDA, fp32 on CPU: cli.precision)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the model (default: on with CUDA, off on CPU)")
    parser.add_argument("--out", default="runs/ae", help="run folder: args, metrics, grids, checkpoints")
    parser.add_argument("--resume", default=None, help="checkpoint or run folder to resume (default: the newest in --out)")
    parser.add_argument("--init", default=None, help="weights of a previous phase: a train_ae.py run or checkpoint (its EMA), a "
                        "released folder or hub id (default: random init)")
    parser.add_argument("--finetune-decoder", type=int, default=None, metavar="K",
                        help="fine-tune the decoder of --init for c' = K (Fig. 3): the encoder "
                        "frozen, the latents masked to the first K channels (Eq. 1), the whole "
                        "decoder trained with the AE loss of --phase; for eval_ae.py --decoders "
                        "K=OUT (default: off)")
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (default: 10%% of --steps)")
    parser.add_argument("--save-minutes", type=cli.real(0, above=True), default=None, help="... and at least every M minutes of wall time "
                        f"({recipe_default('save_minutes')})")
    parser.add_argument("--grid-every", type=int, default=1000, help="Fig. 3 grid of the EMA every N steps (0: never)")
    parser.add_argument("--log-every", type=int, default=10, help="log (and sync with the device) every N steps")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--eval-every", type=int, default=0, help="PSNR, LPIPS and rFID per c' of the EMA on "
                        "held-out images every N steps, as eval_ae.py measures them, into metrics.jsonl (0: never)")
    parser.add_argument("--eval-images", type=int, default=1000, help="held-out images per evaluation")
    parser.add_argument("--eval-data", default=None, help="held-out image folder of --eval-every (default: the toy "
                        "data's held-out set; needed with a --data folder)")
    parser.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth: rFID in "
                        "--eval-every ('random' for smoke runs; default: no rFID)")
    parser.add_argument("--seed", type=cli.integer(*cli.SEED), default=0, help="model init and the per-rank random "
                        "streams")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
