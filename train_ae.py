"""Train a DC-AE with the structured latent space of DC-AE 1.5 (paper Sec. 3.2, Eq. 1, Fig. 4;
Sec. 4.1).

Each step draws c' from the candidate list [c1, c1 + step, ..., c] (per rank, as the official
trainer does; K of them with --num-c-primes, one encode and K masked decodes), reconstructs
from z * mask_{c,c'} (Eq. 1) and minimises l(x, D(z * mask)) = L1 + LPIPS (+ GAN in phase 3;
ae_loss.py). `--no-structured` trains the plain DC-AE baseline (always c' = c) for the Table 5
comparison. `--eval-every N` measures PSNR, LPIPS and rFID per c' on held-out images while it
trains, as eval_ae.py does (which also draws Fig. 2a and Fig. 3).

`--finetune-decoder K` fine-tunes the decoder of --init for one c' (Fig. 3: "The decoder is
fine-tuned for all settings to fully reveal the information encoded in the (partial) latent
space"; DC-Gen's dc-ae-f32c128-{1.1,1.5}-cK): the encoder frozen, every step at c' = K, the
decoder trained with the AE loss of --phase. eval_ae.py --decoders K=RUN then evaluates c' = K
with it.

The three DC-AE phases (Sec. 4.1, following DC-AE):
  --phase 1  low-resolution full training, L1 + LPIPS             (all parameters)
  --phase 2  high-resolution latent adaptation, L1 + LPIPS        (the stages next to the latent)
  --phase 3  low-resolution local refinement, L1 + LPIPS + GAN    (the decoder head only)

    python train_ae.py                                   # tiny AE on the toy data (CPU, minutes)
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 --data /data/imagenet/train
    torchrun --nproc_per_node 8 train_ae.py --model dc-ae-f32c128-1.5 \\
        --data /data/imagenet/train --phase 2 --init runs/ae-p1 --out runs/ae-p2
    python train_ae.py --init runs/ae --finetune-decoder 8 --steps 500 --out runs/ae-decoder-c8
"""
import argparse
import math
import os
import sys
import time

import torch

import ae as ae_lib
import checkpoints
import cli
import data as data_lib
import evaluation
import fid
import fsdp
import run
import runlog
import ae_loss
from ae_loss import AELoss, PatchDiscriminator

# Recipes. The official AE trainer and loss are unreleased: these are our choices, stated in the
# README. The tiny CPU recipe is L1 only: LPIPS needs pretrained VGG weights (no download here) and
# costs more than the tiny AE itself; pass --w-lpips 1 to add it. EMA: DC-Gen's trainer warm-up
# (fsdp.ema_update); the tiny runs of a few thousand steps use a shorter horizon.
# c' per step: DC-Gen's default, one (K = 1), everywhere (no released config sets another). On the
# toy data two with c always among them (K = 2, --always max) cost the structured latent less at
# c' = c (0.7 dB against 1.1 dB, shared decoders: README, toy results); the structure of the front
# channels, which the paper trains the AE for, is the same with either.
TINY_RECIPE = dict(resolution=32, batch_size=32, lr=3e-4, steps=1000, warmup=20,  # lr 1e-3 stalls
                   w_lpips=0.0, ema_decay=0.999, ema_warmup=200, save_minutes=2, num_c_primes=1,
                   always="none", disc_width=16)
PAPER = dict(ema_decay=0.9999, ema_warmup=2000, w_lpips=1.0, save_minutes=30, num_c_primes=1,
             always="none", disc_width=64)
PAPER_RECIPE = {
    1: dict(PAPER, resolution=256, batch_size=256, lr=1e-4, steps=200_000, warmup=1000),
    2: dict(PAPER, resolution=512, batch_size=64, lr=5e-5, steps=50_000, warmup=500),
    3: dict(PAPER, resolution=256, batch_size=256, lr=5e-5, steps=50_000, warmup=500),
}
ALWAYS = ("none", "max", "min-max")  # c' in every step: DC-Gen's always_sample_(min_)max_channel


def sample_step_c_primes(candidates, k=1, always="none", generator=None):
    """The K c' of one AE training step (DC-Gen aecore/trainer.py, prepare_batch): draws with
    replacement from the candidates (ae.sample_c_prime); always "max" makes the first one c,
    "min-max" the first two the smallest and c."""
    fixed = {"none": [], "max": [candidates[-1]],
             "min-max": [candidates[0], candidates[-1]]}[always]
    if k < max(len(fixed), 1):
        raise ValueError(f"{k} c' per step cannot include {fixed}")
    drawn = (ae_lib.sample_c_prime(candidates, k - len(fixed), generator).tolist()
             if k > len(fixed) else [])
    return fixed + drawn


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
    # phase 2: the layers next to the latent: the deepest stage on each side, the latent convs
    if phase == 2:
        return [f"encoder.down_blocks.{last}.", "encoder.conv_out.", "decoder.conv_in.",
                f"decoder.up_blocks.{last}."]
    # phase 3: the decoder head, i.e. its highest-resolution stage and output layers
    return ["decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out."]


def set_phase(ae, phase, finetune_decoder=None):
    prefixes = trainable_prefixes(ae, phase, finetune_decoder)
    for name, p in ae.named_parameters():
        p.requires_grad_(any(name.startswith(q) for q in prefixes))
    return prefixes, sum(p.numel() for p in ae.parameters() if p.requires_grad)


def resolve(args, device):
    """The run's settings, resolved once: the recipe of the model and phase for every option left
    out, then what depends on it. Raises ValueError for the options --finetune-decoder excludes (it
    trains at one c' = K: no c' list, K = 1, no always)."""
    tuned = args.finetune_decoder is not None
    if tuned:
        given = [flag for flag, value in [("--structured / --no-structured", args.structured),
                                          ("--num-c-primes", args.num_c_primes),
                                          ("--always", args.always)] if value is not None]
        if given:
            raise ValueError(f"--finetune-decoder {args.finetune_decoder} trains the decoder at "
                             f"that one c'; {', '.join(given)} do not apply to it")
    cfg = ae_lib.AE_CONFIGS[args.model]
    recipe = TINY_RECIPE if cfg.recipe == "tiny" else PAPER_RECIPE[args.phase]
    # 1.5: Eq. 1; 1.0 / 1.1: not. A fine-tuned decoder's AE is --init's, structured or not.
    structured = None if tuned else cfg.structured if args.structured is None else args.structured
    # One c' per step: K decodes of c' = c would be K copies of one.
    single = tuned or not structured
    return run.resolve(
        args, recipe, structured=structured,
        num_c_primes=1 if single else args.num_c_primes or recipe["num_c_primes"],
        always="none" if single else args.always or recipe["always"],
        c_prime_start=cfg.c_prime_start if args.c_prime_start is None else args.c_prime_start,
        c_prime_step=cfg.c_prime_step if args.c_prime_step is None else args.c_prime_step,
        gan_start=0 if args.phase == 3 and args.gan_start is None else args.gan_start,
        compile=device.type == "cuda" if args.compile is None else args.compile,
        bf16=cli.precision(device, args.bf16)[0])  # bf16 autocast on CUDA, fp32 on CPU


def check_args(s, ae, world_size):
    """What the settings `s` must satisfy, before any compute."""
    run.check_training(s.steps, s.batch_size, s.accum, s.save_every, s.log_every, s.num_workers,
                       s.save_minutes, world_size)
    if s.resolution < 1 or s.resolution % ae.f:
        raise ValueError(f"--resolution {s.resolution} is not a positive multiple of {ae.name}'s "
                         f"f={ae.f}")
    if not (1 <= s.c_prime_start <= ae.c) or s.c_prime_step < 1:
        raise ValueError(f"c' list must lie in [1, c={ae.c}]: "
                         f"got --c-prime-start {s.c_prime_start} --c-prime-step {s.c_prime_step}")
    if s.num_c_primes < 1 + (s.always == "min-max"):
        raise ValueError(f"--num-c-primes {s.num_c_primes} must be >= 1 (>= 2 with --always "
                         f"min-max)")
    if s.data != "toy" and not os.path.isdir(s.data):
        raise ValueError(f"--data folder not found: {s.data}")
    if s.finetune_decoder is not None and not 1 <= s.finetune_decoder <= ae.c:
        raise ValueError(f"--finetune-decoder {s.finetune_decoder} must lie in [1, c={ae.c}]")
    if s.finetune_decoder is not None and not s.init:
        raise ValueError(f"--finetune-decoder {s.finetune_decoder} fine-tunes the decoder of a "
                         f"trained AE: pass its encoder and decoder with --init "
                         f"(a train_ae.py run, a released folder or hub id)")
    if s.eval_every < 0 or s.eval_images < 1:
        raise ValueError(f"--eval-every {s.eval_every} must be >= 0 and --eval-images "
                         f"{s.eval_images} >= 1")
    if s.eval_every and s.data != "toy" and not (s.eval_data and os.path.isdir(s.eval_data)):
        raise ValueError(f"--eval-every on --data {s.data} needs --eval-data, a held-out "
                         f"(validation) image folder (got {s.eval_data})")
    if s.inception_weights not in (None, "random") and not os.path.isfile(s.inception_weights):
        raise ValueError(f"--inception-weights not found: {s.inception_weights}")


def read_init(init, model, resume, out):
    """--init: the weights of a previous phase (a train_ae.py run or checkpoint: its EMA weights)
    or released ones (a DC-Gen or diffusers folder, a hub id), unless this run resumes.
    -> (state dict, its source) or (None, None)."""
    if not init or run.resume_path(resume, out):
        return None, None
    loaded = checkpoints.load_ae(init, option="--init")
    if loaded.name != model:
        raise ValueError(f"--init {init} is {loaded.name!r}, not --model {model}")
    return loaded.model.state_dict(), loaded.source


def held_out(data, resolution, images):
    """The images train_ae.py --eval-every measures: the toy data's held-out set (seed 1, as
    eval_ae.py's), or the first `images` of a validation folder."""
    dataset = data_lib.build_dataset(data, resolution, toy_size=images, seed=1)
    return torch.utils.data.Subset(dataset, range(min(len(dataset), images)))


def main(args):
    # Setup: process group, the settings, checks, the run folder (lock, resume checkpoint), all
    # before any compute.
    rank, world_size, device = fsdp.setup()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    error, init, init_source = None, None, None
    try:
        s = resolve(args, device)
        with torch.device("meta"):
            check_args(s, ae_lib.build_ae(s.model), world_size)
        run.check_out(s.out)
        init, init_source = read_init(s.init, s.model, s.resume, s.out)
        # The toy data: one fixed dataset (seed 0; eval_ae.py holds out seed 1), whatever --seed.
        dataset = data_lib.build_dataset(s.data, s.resolution, toy_size=s.toy_size, seed=0)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    ckpt_path, ckpt = run.start_run(s.out, s.resume, vars(s), rank, dict(model=s.model))

    # Model and EMA (FSDP2), optimizers (and the PatchGAN), every rank's own RNG streams, then the
    # checkpoint.
    def build():  # the previous phase's weights (--init) go in before sharding
        model = ae_lib.build_ae(s.model, c_prime_start=s.c_prime_start,
                                c_prime_step=s.c_prime_step)
        if init is not None:
            model.load_state_dict(init)
        return model.to(device)
    # The grids call encode and decode, not forward: they get FSDP's unshard hooks too.
    model, ema = fsdp.build_with_ema(build, s.seed, methods=("encode", "decode"))
    prefixes, n_train = set_phase(model, s.phase, s.finetune_decoder)
    opt = fsdp.adamw(model, s.lr, 0.0, (0.9, 0.999))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    disc = opt_disc = None
    if s.gan_start is not None:
        disc = fsdp.shard(PatchDiscriminator(width=s.disc_width).to(device), [])
        opt_disc = fsdp.adamw(disc, s.disc_lr or s.lr, 0.0, (0.5, 0.9))
        modules["disc"], optimizers["opt_disc"] = disc, (opt_disc, disc)
    torch.manual_seed((s.seed * 1000 + rank) % 2 ** 64)  # c' draws and flips differ across ranks
    step, data_state = (run.load_checkpoint(ckpt, modules, optimizers, rank) if ckpt_path
                        else (0, None))
    elapsed = ckpt.get("elapsed", 0.0) if ckpt else 0.0  # training seconds before this process
    # A fine-tuned decoder records the c' it serves and whose encoder it decodes (the checkpoint
    # holds that encoder too, bit for bit: eval_ae.py --decoders compares it with --ae's). On
    # resume, rank 0 (which writes) reads the record back.
    finetuned = None
    if s.finetune_decoder is not None:
        encoder = init_source or (ckpt or {}).get("finetuned_decoder", {}).get("encoder")
        finetuned = {"c_prime": s.finetune_decoder, "encoder": encoder}
    ckpt = init = None  # free the host copies of the weights
    log = runlog.RunLog(s.out, vars(s), rank, s.steps, step if ckpt_path else None, s.tensorboard)
    log.message(f"resumed from {ckpt_path} at step {step}" if ckpt_path else
                f"initialised from {s.init} (phase {s.phase})" if s.init else
                "started from random weights")
    lp = None
    if s.w_lpips > 0:
        try:
            lp = ae_loss.build_lpips(random_weights=s.lpips_random).to(device)
        except RuntimeError as e:
            fsdp.fail(f"{e}; or pass --lpips-random (a smoke run) or --w-lpips 0", rank)
    loss_fn = AELoss(lp, disc, w_lpips=s.w_lpips, w_gan=s.w_gan, gan_start=s.gan_start or 0)

    # Data: this rank's batches, from where the checkpoint left them.
    micro = s.batch_size // (world_size * s.accum)
    try:
        batches = data_lib.Batches(dataset, micro, rank, world_size, s.seed, s.num_workers,
                                   device.type == "cuda", state=data_state)
    except ValueError as e:
        fsdp.fail(str(e), rank)
    fixed = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
    candidates = [s.finetune_decoder] if finetuned else \
        model.c_prime_candidates if s.structured else [model.c]
    train_model = torch.compile(model) if s.compile else model
    sync = runlog.Sync(device, step, s.steps, s.log_every, s.save_every, s.save_minutes,
                       s.batch_size, eval_every=s.eval_every)
    meter = runlog.Meter()
    precision = cli.precision(device, args.bf16)[1]  # the policy's words: the option as typed
    header(log, s, model, n_train, prefixes, candidates, micro, world_size, device, precision)
    eval_loader, eval_lp, inception = evaluators(s, lp, rank, world_size, device, log)

    def save():  # this step's checkpoint; an evaluated one is kept for good
        extra = {"c_prime_candidates": candidates, "structured": s.structured,
                 "data": batches.state(), "elapsed": elapsed + time.time() - clock}
        if finetuned:
            extra["finetuned_decoder"] = finetuned
        log.saved(*run.save_checkpoint(s.out, step, modules, optimizers, vars(s), extra,
                                       keep_every=s.eval_every))
        sync.saved()

    def evaluate_step():  # PSNR, LPIPS and rFID per c' of the EMA, on held-out images (Table 1)
        nonlocal elapsed, clock
        t0 = time.time()
        shown = {cp: ema for cp in grid_c_primes(candidates)}  # the EMA's own decoder for each c'
        rows, _, _ = evaluation.reconstruction_metrics(ema, shown, eval_loader, device, eval_lp,
                                                       inception)
        elapsed, clock = elapsed + t0 - clock, time.time()
        metrics = {f"{k}_c{r['c_prime']}": r[k] for r in rows for k in ("psnr", "lpips", "rfid")
                   if k in r and not math.isnan(r[k])}
        log.log({"step": step, "images_seen": step * s.batch_size, "elapsed_s": elapsed,
                 "device_hours": elapsed * world_size / 3600, "eval_s": clock - t0, **metrics})
        model.train()

    # Training loop. The host waits for the device only at sync points (every --log-every steps,
    # at saves and evaluations).
    model.train()
    # Training time = elapsed + (now - clock): evaluations do not count.
    code, clock = 0, time.time()
    while step < s.steps:
        lr = fsdp.set_lr(opt, step, s.lr, s.warmup)
        # K c' per step (DC-Gen's num_sample_latent_channels), drawn on the training RNG:
        # one encode, K decodes.
        c_primes = sample_step_c_primes(candidates, s.num_c_primes, s.always)
        for i in range(s.accum):
            x, _, bad = next(batches)
            if s.data != "toy":  # random horizontal flips, from the training RNG (exact resume)
                x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(3), x)  # (N, 3, H, W)
            x = x.to(device, non_blocking=True)
            # Channel masks (Eq. 1): block k keeps the first c'_k channels of every image.
            mask = torch.stack([ae_lib.channel_mask(model.c, [cp] * len(x)) for cp in c_primes])
            mask = mask.to(device, non_blocking=True)  # (K, N, c, 1, 1)
            # FSDP2: the gradients are reduce-scattered at the last micro-step only.
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(i == s.accum - 1)
            with torch.autocast(device.type, torch.bfloat16, enabled=s.bf16):
                x_rec = train_model(x, mask)  # (K N, 3, H, W): decodes of z * mask_k (Fig. 4)
                # The mean over the K blocks: the mean of the K losses, each against the same
                # images (x repeated K times).
                loss, terms = loss_fn(x.repeat(len(c_primes), 1, 1, 1), x_rec.float(), step)
            (loss / s.accum).backward()
            meter.add({"loss": loss, **terms}, 1 / s.accum)
            meter.count("skipped", bad.sum())
            if disc is not None and step >= loss_fn.gan_start:  # the PatchGAN's step (phase 3)
                opt_disc.zero_grad(set_to_none=True)  # also drops the generator's GAN gradients
                with torch.autocast(device.type, torch.bfloat16, enabled=s.bf16):
                    d_loss = loss_fn.discriminator_loss(x, x_rec.float())
                d_loss.backward()
                opt_disc.step()
                meter.add({"disc": d_loss.detach()}, 1 / s.accum)
        # Clip, AdamW step, EMA (DC-Gen's warm-up); a fine-tuned decoder's frozen encoder is its
        # own EMA, left untouched.
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or float("inf"),
                                                   foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        trained, averaged = (model.decoder, ema.decoder) if finetuned else (model, ema)
        fsdp.ema_update(averaged, trained, s.ema_decay, step + 1, s.ema_warmup)
        meter.add({"grad_norm": fsdp.full_tensor(grad_norm)})
        meter.end_step()
        step += 1
        if s.grid_every and (step % s.grid_every == 0 or step == s.steps):
            path = os.path.join(s.out, f"grid_{step:07d}.png")
            save_grid(ema, fixed, candidates, s.bf16, path, rank)
            log.image("grid", path, step)

        # Sync points: one all-reduce brings every rank the logged means and the flags.
        if sync.due(step):
            tick = sync.reduce(step, meter)
            if tick.nonfinite:  # nothing written: the last checkpoint stays the last good state
                code = log.nonfinite(step)
                break
            log.log({**tick.record, "lr": lr,
                     "c_prime": c_primes[0] if len(c_primes) == 1 else c_primes})
            if tick.save:
                save()
            if tick.evaluate:  # before a stop: an AE evaluation takes seconds, and is not resumed
                evaluate_step()
            if tick.stopped:  # SIGTERM / SIGINT: saved above
                code = log.stopped(sync.signal, step)
                break
    runlog.finish(log, sync)
    if code:
        sys.exit(code)


def header(log, s, model, n_train, prefixes, candidates, micro, world_size, device, precision):
    """The run's first lines: the model, what trains, the c', the batch, the precision."""
    n_params = sum(p.numel() for p in model.parameters())
    log.log({"params": n_params, "params_local": fsdp.local_numel(model)}, show=False)
    if s.finetune_decoder is not None:
        c_primes = (f"c' = {s.finetune_decoder}: the decoder fine-tuned (Fig. 3), "
                    "the encoder frozen")
    else:
        always = {"none": "", "max": " with c", "min-max": " with the smallest and c"}[s.always]
        c_primes = (f"structured={s.structured} c' in {candidates}, {s.num_c_primes} per step"
                    f"{always}")
    log.message(f"{s.model}: {n_params / 1e6:.2f}M params, phase {s.phase}, training "
                f"{n_train / 1e6:.2f}M in {prefixes}; {c_primes}; {world_size} rank(s) on {device}"
                f"{' sharded with FSDP2' if fsdp.is_distributed() else ''}, global batch "
                f"{s.batch_size} ({micro} x {s.accum} x {world_size}), {s.resolution}px, GAN from "
                f"step {s.gan_start}, EMA {s.ema_decay} warm-up {s.ema_warmup}")
    log.message(f"precision: {precision}; {cli.machine(device)}")


def evaluators(s, lp, rank, world_size, device, log):
    """What --eval-every measures with: the held-out loader, LPIPS (the loss's network or its own;
    said once when it cannot be built) and the Inception of rFID (with --inception-weights)."""
    if not s.eval_every:
        return None, None, None
    images = held_out(s.eval_data or s.data, s.resolution, s.eval_images)
    loader = data_lib.make_loader(images, 32, rank, world_size, s.num_workers,
                                  device.type == "cuda")
    if lp is None:
        try:
            lp = ae_loss.build_lpips(random_weights=s.lpips_random).to(device)
        except RuntimeError as e:
            log.message(f"--eval-every: LPIPS not measured ({e})")
    inception = fid.load_inception(s.inception_weights, device) if s.inception_weights else None
    return loader, lp, inception


def grid_c_primes(candidates, columns=6):
    """The c' the grids show: about `columns` of the candidate list, evenly spaced, the largest
    always last, each once (a stride that lands on it must not show it twice)."""
    return sorted(set(candidates[:: max(1, len(candidates) // columns)]) | {candidates[-1]})


@torch.no_grad()
def save_grid(ema, fixed, candidates, bf16, path, rank):
    """Rows: the fixed images; columns: the input, then decode(z[:, :c']) for a few c' and c, as in
    Fig. 3. Every rank runs the forward passes (the EMA is sharded); rank 0 writes the PNG."""
    shown = grid_c_primes(candidates)
    with torch.autocast(fixed.device.type, torch.bfloat16, enabled=bf16):
        z = ema.encode(fixed)  # (8, c, h, w)
        cols = [fixed] + [ema.decode(z[:, :cp]).float().clamp(-1, 1) for cp in shown]
    if rank == 0:
        data_lib.save_grid(torch.stack(cols, 1).flatten(0, 1).float(), path, nrow=len(cols),
                           col_labels=["input"] + [f"c'={cp}" for cp in shown])


def recipe_default(key):
    """--help words for an option the recipe sets, e.g. "default: 0.0003 for tiny AEs; 0.0001 /
    5e-05 / 5e-05 in phases 1 / 2 / 3" (written from the recipes, so it cannot drift from them)."""
    phases = [PAPER_RECIPE[p][key] for p in (1, 2, 3)]
    paper = f"{phases[0]} for the paper's AEs" if len(set(phases)) == 1 else \
        " / ".join(map(str, phases)) + " in phases 1 / 2 / 3"
    return f"default: {TINY_RECIPE[key]} for tiny AEs; {paper}"


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--model", choices=sorted(ae_lib.AE_CONFIGS), default="dc-ae-f8c64-tiny",
        help="AE (ae.py)")
    add("--seed", type=cli.integer(*cli.SEED), default=0,
        help="model init and the per-rank random streams")
    add("--data", default="toy", help="'toy' or an ImageNet-style folder (class subfolders)")
    add("--toy-size", type=int, default=50_000, help="images of the toy dataset")
    add("--resolution", type=int, default=None,
        help=f"image side ({recipe_default('resolution')})")
    add("--phase", type=int, choices=[1, 2, 3], default=1, help="the DC-AE training phase")
    add("--structured", action=argparse.BooleanOptionalAction, default=None,
        help="train with the channel mask of Eq. 1 (default: on, except for -1.0/-1.1 baselines)")
    add("--c-prime-start", type=int, default=None,
        help="first c' of the list (default: the AE entry's; paper models 16)")
    add("--c-prime-step", type=int, default=None,
        help="step of the c' list (default: the AE entry's; paper models 4)")
    add("--num-c-primes", type=int, default=None,
        help="K c' per step: one encode, K masked decodes, the mean loss "
             "(DC-Gen's num_sample_latent_channels). Default: 1, DC-Gen's")
    add("--always", choices=ALWAYS, default=None,
        help="c' in each step's K: max = c (always_sample_max_channel), "
             "min-max = the smallest and c. Default: none, DC-Gen's")
    add("--steps", type=int, default=None, help=f"optimizer steps ({recipe_default('steps')})")
    add("--batch-size", type=int, default=None,
        help=f"global batch size ({recipe_default('batch_size')})")
    add("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    add("--lr", type=cli.real(0, above=True), default=None,
        help=f"AdamW learning rate ({recipe_default('lr')})")
    add("--warmup", type=int, default=None,
        help=f"linear LR warm-up steps ({recipe_default('warmup')})")
    add("--grad-clip", type=cli.real(0), default=1.0, help="max grad norm (0: no clipping)")
    add("--ema-decay", type=cli.real(0, 1), default=None,
        help=f"EMA decay ({recipe_default('ema_decay')})")
    add("--ema-warmup", type=int, default=None,
        help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
             f"0: constant decay ({recipe_default('ema_warmup')})")
    add("--w-lpips", type=cli.real(0), default=None,
        help=f"weight of LPIPS, beside L1's 1 ({recipe_default('w_lpips')})")
    add("--w-gan", type=cli.real(0), default=0.1, help="weight of the hinge GAN term")
    add("--gan-start", type=int, default=None,
        help="step at which the GAN loss starts (default: 0 in phase 3, no GAN in phases 1-2)")
    add("--disc-lr", type=cli.real(0, above=True), default=None,
        help="discriminator learning rate (default: --lr)")
    add("--lpips-random", action="store_true",
        help="random VGG trunk for LPIPS (offline smoke runs; not a perceptual loss)")
    add("--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast for training (default: on with CUDA, fp32 on CPU: cli.precision)")
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the model (default: on with CUDA, off on CPU)")
    add("--out", default="runs/ae", help="run folder: args, metrics, grids, checkpoints")
    add("--resume", default=None,
        help="checkpoint or run folder to resume (default: the newest in --out)")
    add("--init", default=None,
        help="weights of a previous phase: a train_ae.py run or checkpoint (its EMA), "
             "a released name, folder or hub id (default: random init)")
    add("--finetune-decoder", type=int, default=None, metavar="K",
        help="fine-tune the decoder of --init for c' = K (Fig. 3): the encoder frozen, "
             "the latents masked to the first K channels (Eq. 1), "
             "the whole decoder trained with the AE loss of --phase; "
             "for eval_ae.py --decoders K=OUT (default: off)")
    add("--save-every", type=int, default=None,
        help="checkpoint every N steps (default: 10%% of --steps)")
    add("--save-minutes", type=cli.real(0, above=True), default=None,
        help=f"... and at least every M minutes of wall time ({recipe_default('save_minutes')})")
    add("--grid-every", type=int, default=1000,
        help="Fig. 3 grid of the EMA every N steps (0: never)")
    add("--log-every", type=int, default=10, help="log (and sync with the device) every N steps")
    add("--tensorboard", action="store_true", help="also write every record and grid to OUT/tb")
    add("--num-workers", type=int, default=2, help="DataLoader workers")
    add("--eval-every", type=int, default=0,
        help="PSNR, LPIPS and rFID per c' of the EMA on held-out images every N steps, "
             "as eval_ae.py measures them, into metrics.jsonl (0: never)")
    add("--eval-data", default=None,
        help="held-out image folder of --eval-every "
             "(default: the toy data's held-out set; needed with a --data folder)")
    add("--inception-weights", default=None,
        help="pt_inception-2015-12-05-6726825d.pth: rFID in --eval-every "
             "('random' for smoke runs; default: no rFID)")
    add("--eval-images", type=int, default=1000, help="held-out images per evaluation")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
