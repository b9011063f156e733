"""Train a class-conditional latent diffusion model with augmented diffusion training (paper
Sec. 3.3, Eq. 2, Fig. 5; Sec. 4.1; Tables 2-5), and measure its convergence while it trains
(Fig. 5b, Fig. 1).

1. Latents: the dataset is encoded once by the frozen AE (center crops, no flips, fp32), sharded
   across ranks, into a cache folder that records the AE's identity and the class list
   (latents.build_cache); a cache made by another AE or on other classes is refused.
2. Training: any backbone of models.py with its objective (DiT: DDPM, UViT: eps, SiT/USiT: flow
   matching). `--aug` adds Eq. 2's masked objectives on the first c' channels: `replace` draws each
   sample's c' from the list (which includes c; the paper's literal Eq. 2), `extra` adds a masked
   copy of the batch to the full-channel loss (the official always_sample_max_channel), `off`
   trains the plain objective. Whether the AE is structured is independent (its own checkpoint),
   so Table 5's four cells are four runs.
3. Convergence: `--eval-every N --fid REF` samples the EMA every N steps and logs FID, sFID, IS,
   precision and recall (per c' with --eval-c-primes) to metrics.jsonl with the images seen and the
   device-hours: the numbers `sample.py --ckpt OUT/ckpt_<step>.pt --num-samples K --fid REF` gives.
   `python curves.py OUT ...` draws them; `--tensorboard` writes every record to OUT/tb too.

    python train_ae.py && python train_diffusion.py       # tiny AE, then a tiny USiT on it (CPU)
    python train_diffusion.py --ae random:dc-ae-f8c64-tiny --steps 20    # smoke run (says so)
    torchrun --nproc_per_node 8 train_diffusion.py --model USiT-2B --ae dc-ae-f64c128-1.5 \\
        --data /data/imagenet/train --resolution 512 --out runs/usit2b-f64 \\
        --eval-every 25000 --fid stats/in512_train.npz --inception-weights pt_inception.pth
"""
import argparse
import os
import sys
import time

import torch

import ae as ae_lib
import checkpoints
import cli
import data as data_lib
import diffusion
import evaluation
import fid
import fsdp
import latents
import models
import run
import runlog

PREVIEW = dict(columns=8, steps=50)  # the EMA grids: samples per class, sampler steps


def resolve(args, device, ae):
    """The run's settings, resolved once: the model's recipe where an option was left out, the
    precision policy, the latent cache's folder, the AE's c' list, the partial c' to evaluate."""
    return run.resolve(
        args, models.MODELS[args.model].recipe,
        compile=device.type == "cuda" if args.compile is None else args.compile,
        bf16=cli.precision(device, args.bf16)[0],  # training: bf16 autocast on CUDA, fp32 on CPU
        ae_bf16=cli.precision(device, args.ae_bf16, evaluation=True)[0],
        cache=args.cache or os.path.join(args.out, "latents"),
        aug_c_primes=args.aug_c_primes or ae.c_prime_candidates,
        # FID from all c channels is always evaluated: the list holds the partial ones, once each.
        eval_c_primes=sorted({cp for cp in args.eval_c_primes if cp not in ("c", ae.c)}))


def check_args(s, ae, world_size):
    """What the settings `s` must satisfy, before any compute (--out too, before the cache
    under it)."""
    run.check_training(s.steps, s.batch_size, s.accum, s.save_every, s.log_every, s.num_workers,
                       s.save_minutes, world_size)
    run.check_out(s.out)
    if s.resolution < 1 or s.resolution % ae.f:
        raise ValueError(f"--resolution {s.resolution} is not a positive multiple of the AE's "
                         f"f={ae.f} ({ae.name})")
    for option, values in (("--aug-c-primes", s.aug_c_primes),
                           ("--eval-c-primes", s.eval_c_primes)):
        if any(not 1 <= cp <= ae.c for cp in values):
            raise ValueError(f"{option} {values} must lie in [1, c={ae.c}]")
    if s.data != "toy" and not os.path.isdir(s.data):
        raise ValueError(f"--data folder not found: {s.data}")
    if s.eval_every < 0 or s.eval_samples < 2:
        raise ValueError(f"--eval-every {s.eval_every} must be >= 0 and --eval-samples "
                         f"{s.eval_samples} >= 2")
    if s.eval_every and not (s.fid and os.path.exists(s.fid)):
        raise ValueError(f"--eval-every needs --fid REF, a reference batch, statistics .npz "
                         f"or image folder (got {s.fid})")
    if s.inception_weights not in (None, "random") and not os.path.isfile(s.inception_weights):
        raise ValueError(f"--inception-weights not found: {s.inception_weights}")


def latent_cache(ae, source, s, classes):
    """(identity, meta.json of a usable cache or None, the dataset to encode or None, what was
    wrong with a damaged cache or None): a cache is used only if the same AE, data, resolution and
    precision made it on the same classes; one made by anything else is refused (ValueError); a
    damaged one (latents.open_cache) is rebuilt."""
    data = os.path.abspath(s.data) if s.data != "toy" else f"toy:{s.toy_size}"
    identity = dict(ae=source, ae_name=ae.name, ae_fingerprint=latents.fingerprint(ae), data=data,
                    resolution=s.resolution, ae_bf16=s.ae_bf16)
    meta, damaged = latents.open_cache(s.cache)
    if meta is not None and {k: meta.get(k) for k in identity} != identity:
        raise ValueError(f"latent cache {s.cache} was made by {meta.get('ae')} "
                         f"({meta.get('ae_fingerprint')}) on {meta.get('data')} at "
                         f"{meta.get('resolution')}px, not by {identity['ae']} "
                         f"({identity['ae_fingerprint']}) on {data} at {s.resolution}px: pass "
                         f"another --cache")
    if meta is not None:
        latents.check_classes(s.cache, meta, classes)
    else:
        run.check_out(s.cache, "--cache")
    # The toy data are one fixed dataset (seed 0), whatever the training --seed:
    # seeds share a cache.
    dataset = None if meta else data_lib.build_dataset(s.data, s.resolution, s.num_classes,
                                                       s.toy_size, 0)
    return identity, meta, dataset, damaged


def step_loss(objective, model, x0, y, c_primes, aug, bf16):
    """Augmented diffusion training (Eq. 2, Fig. 5a) on one micro-batch: a c' per sample drawn
    from c_primes (--aug replace / extra) and its channel mask (Eq. 1); --aug off: no mask.
    Returns (loss, terms); benchmarks/bench.py times this same function."""
    x0, y, c_prime = diffusion.augment_batch(x0, y, c_primes, aug)
    mask = None if c_prime is None else ae_lib.channel_mask(x0.shape[1], c_prime)  # (N, c, 1, 1)
    with torch.autocast(x0.device.type, torch.bfloat16, enabled=bf16):
        return objective.loss(model, x0, y, mask=mask)  # Eq. 2 where c' < c


@torch.no_grad()
def save_samples(ema, objective, ae, scale, latent_shape, num_classes, bf16, path, rank):
    """A preview grid from the EMA weights with fixed noise, rows = classes (at most 8); the
    training RNG is left untouched. Every rank samples (the EMA may be sharded), rank 0 writes
    the PNG."""
    device = next(ema.parameters()).device
    classes = list(range(min(num_classes, 8)))
    y = torch.tensor(classes, device=device)  # (rows,)
    y = y.repeat_interleave(PREVIEW["columns"])  # (rows * cols,)
    g = torch.Generator(device).manual_seed(1234)
    z = torch.randn(len(y), *latent_shape, generator=g, device=device)  # (rows * cols, c, h, w)
    ema.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.autocast(device.type, torch.bfloat16, enabled=bf16):  # a preview, no evaluation
        x0 = objective.sample(ema, z, y, objective.preview, PREVIEW["steps"], generator=g)
        x = ae.decode(x0.float() / scale).float().clamp(-1, 1)  # the latent scale undone first
    if rank == 0:
        data_lib.save_grid(x, path, nrow=PREVIEW["columns"],
                           row_labels=[f"class {c}" for c in classes])


def evaluate(ema, build, objective, ae, scale, latent_shape, num_classes, c_primes, samples,
             inception, reference, rank, world_size, stop):
    """FID during training (Fig. 5b, Fig. 1): what `sample.py --ckpt <this step's checkpoint>
    --num-samples K --fid REF` computes with its defaults (the objective's protocol sampler, no
    CFG, random labels, seed 0, chunks of evaluation.BATCH, the EMA weights, fp32), from all c
    channels and from the first c' of `c_primes` (as sample.py --c-prime). Every rank samples its
    chunks with an unsharded copy of the EMA (an adaptive solver takes other steps on each rank).
    -> {metric: value, metric_c<c'>: value}, or None when stop() said yes (a signal) on any
    rank."""
    model = fsdp.unsharded_copy(ema, build).eval()
    sampler, steps = diffusion.resolve_sampler(objective)
    labels = evaluation.sample_labels(samples, 0, list(range(num_classes)))  # (K,)
    result = {}
    for c_prime in [None, *c_primes]:
        def generate(y, k):
            return evaluation.generate(model, objective, ae, scale, latent_shape, y,
                                       evaluation.chunk_seed(0, k), sampler=sampler, steps=steps,
                                       c_prime=c_prime)
        metrics = evaluation.generation_metrics(generate, labels, evaluation.BATCH, inception,
                                                reference, rank, world_size, stop=stop,
                                                progress=rank == 0)
        if metrics is None:
            return None
        suffix = "" if c_prime is None else f"_c{c_prime}"
        result.update({k + suffix: metrics[k]
                       for k in ("fid", "sfid", "is_mean", "precision", "recall")})
    return result


def main(args):
    # Setup: process group, the frozen AE, the settings, the run folder (lock, resume checkpoint)
    # and the latent cache, all checked before any compute.
    rank, world_size, device = fsdp.setup()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    error, ae = None, None
    try:
        frozen = checkpoints.load_ae(args.ae, device)
        ae, source = frozen.model, frozen.source
        s = resolve(args, device, ae)
        check_args(s, ae, world_size)
        classes = data_lib.class_names(s.data, s.num_classes)
        identity, meta, dataset, damaged = latent_cache(ae, source, s, classes)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    latent_shape = [ae.c, s.resolution // ae.f, s.resolution // ae.f]
    expect = dict(model=s.model, latent_shape=latent_shape, classes=classes)
    ckpt_path, ckpt = run.start_run(s.out, s.resume, vars(s), rank, expect)

    # Latents, encoded once; the scale that makes them unit-std: the released factor of released
    # weights, else 1 / std.
    if damaged and rank == 0:
        print(f"latent cache {s.cache} is damaged: {damaged}; rebuilding it",
              file=sys.stderr, flush=True)
    if meta is None:
        meta = latents.build_cache(ae, dataset, s.cache, identity, rank, world_size, device,
                                   s.encode_batch, s.num_workers, s.ae_bf16)
    scale = frozen.scaling_factor or 1.0 / meta["latent_std"]
    num_classes = len(classes)

    # Model and EMA (FSDP2), optimizer, then every rank's own RNG streams, and the checkpoint
    # over them.
    def build():
        return models.create_model(s.model, in_channels=ae.c, input_size=latent_shape[1],
                                   num_classes=num_classes, patch_size=s.patch_size, device=device)
    model, ema = fsdp.build_with_ema(build, s.seed)
    opt = fsdp.adamw(model, s.lr, s.weight_decay, tuple(s.betas))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    # The noise, t, c' and label dropout differ by rank.
    torch.manual_seed((s.seed * 1000 + rank) % 2 ** 64)
    step, data_state = (run.load_checkpoint(ckpt, modules, optimizers, rank) if ckpt_path
                        else (0, None))
    # The training seconds before this process (rank 0's: only rank 0 reads the checkpoint).
    elapsed = ckpt.get("elapsed", 0.0) if ckpt else 0.0
    del ckpt
    log = runlog.RunLog(s.out, vars(s), rank, s.steps, step if ckpt_path else None, s.tensorboard)
    if ckpt_path:
        log.message(f"resumed from {ckpt_path} at step {step}")
    micro = s.batch_size // (world_size * s.accum)
    try:  # latents are memory-mapped: read in this process, no DataLoader workers
        batches = data_lib.Batches(latents.LatentCache(s.cache, meta["parts"]),
                                   micro, rank, world_size, s.seed,
                                   pin_memory=device.type == "cuda", state=data_state)
    except ValueError as e:
        fsdp.fail(str(e), rank)
    objective = diffusion.make_objective(models.MODELS[s.model].objective)
    train_model = torch.compile(model) if s.compile else model
    flops = 3 * ema.flops_per_image() * (2 if s.aug == "extra" else 1)  # fwd + bwd, per image
    sync = runlog.Sync(device, step, s.steps, s.log_every, s.save_every, s.save_minutes,
                       s.batch_size, flops, s.eval_every)
    meter = runlog.Meter()
    precision = (cli.precision(device, args.bf16)[1],  # the policy's words: the options as typed
                 cli.precision(device, args.ae_bf16, evaluation=True, flag="--ae-bf16")[1])
    header(log, s, model, ae, meta, scale, num_classes, micro, world_size, device, precision)

    # FID during training: the Inception and the reference statistics, loaded once.
    inception = reference = None
    if s.eval_every:
        try:
            inception = fid.load_inception(s.inception_weights, device)
            reference = fid.load_reference(s.fid, inception, 50, device)
        except (ValueError, FileNotFoundError) as e:
            fsdp.fail(str(e), rank)

    # This step's checkpoint; an evaluated one is kept for good (the curve is checkable).
    def save():
        extra = {"ae": source, "ae_name": ae.name, "scaling_factor": scale,
                 "num_classes": num_classes, "classes": classes, "latent_shape": latent_shape,
                 "data": batches.state(), "elapsed": elapsed + time.time() - clock}
        log.saved(*run.save_checkpoint(s.out, step, modules, optimizers, vars(s), extra,
                                       keep_every=s.eval_every))
        sync.saved()

    def evaluate_step():  # -> 0, or the exit status when a signal stopped the evaluation
        nonlocal elapsed, clock
        t0 = time.time()
        metrics = evaluate(ema, build, objective, ae, scale, latent_shape, num_classes,
                           s.eval_c_primes, s.eval_samples, inception, reference,
                           rank, world_size, stop=lambda: sync.signal is not None)
        # Stopped: this step's checkpoint is on disk, the same command evaluates it again.
        if metrics is None:
            return log.stopped(sync.signal, step, evaluating=True)
        elapsed, clock = elapsed + t0 - clock, time.time()
        log.log({"step": step, "images_seen": step * s.batch_size, "elapsed_s": elapsed,
                 "device_hours": elapsed * world_size / 3600, "eval_s": clock - t0, **metrics})
        model.train()
        return 0

    # Training loop. The host waits for the device only at sync points (every --log-every steps,
    # at saves and evaluations).
    model.train()
    # Training time = elapsed + (now - clock): evaluations do not count.
    code, clock = 0, time.time()
    if (step and sync.evaluation_due(step)
            and not fsdp.gather(rank == 0 and log.logged(step, "fid"))[0]):
        code = evaluate_step()  # a signal stopped this step's evaluation: it comes first
    while step < s.steps and not code:
        lr = fsdp.set_lr(opt, step, s.lr, s.warmup)
        for i in range(s.accum):
            x0, y, _ = next(batches)
            x0 = x0.to(device, non_blocking=True) * scale  # (N, c, h, w)
            y = y.to(device, non_blocking=True)  # (N,)
            # FSDP2: the gradients are reduce-scattered at the last micro-step only.
            if hasattr(model, "set_requires_gradient_sync"):
                model.set_requires_gradient_sync(i == s.accum - 1)
            loss, terms = step_loss(objective, train_model, x0, y, s.aug_c_primes, s.aug, s.bf16)
            (loss / s.accum).backward()
            meter.add({"loss": loss, **terms}, 1 / s.accum)
        # Clip, AdamW step, EMA (DC-Gen's warm-up).
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or float("inf"),
                                                   foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        fsdp.ema_update(ema, model, s.ema_decay, step + 1, s.ema_warmup)
        meter.add({"grad_norm": fsdp.full_tensor(grad_norm)})
        meter.end_step()
        step += 1
        if s.grid_every and (step % s.grid_every == 0 or step == s.steps):
            path = os.path.join(s.out, f"samples_{step:07d}.png")
            save_samples(ema, objective, ae, scale, latent_shape, num_classes, s.bf16, path, rank)
            log.image("samples", path, step)

        # Sync points: one all-reduce brings every rank the logged means and the flags.
        if sync.due(step):
            tick = sync.reduce(step, meter)
            if tick.nonfinite:  # nothing written: the last checkpoint stays the last good state
                code = log.nonfinite(step)
                break
            log.log({**tick.record, "lr": lr})
            if tick.save:
                save()
            if tick.stopped:  # SIGTERM / SIGINT: saved above
                code = log.stopped(sync.signal, step)
            elif tick.evaluate:
                code = evaluate_step()
    runlog.finish(log, sync)
    if code:
        sys.exit(code)


def header(log, s, model, ae, meta, scale, num_classes, micro, world_size, device, precision):
    """The run's first lines: the model, the latents and their scale, the batch, the precision."""
    std = meta["latent_std"]
    log.log({"params": models.count_params(model, trainable_only=False),
             "params_local": fsdp.local_numel(model)}, show=False)
    log.message(f"{s.model} ({models.MODELS[s.model].objective}): "
                f"{models.count_params(model) / 1e6:.2f}M params on "
                f"{ae.c}x{meta['latent_shape'][1]}x{meta['latent_shape'][2]} latents of {ae.name} "
                f"(latent std {std:.4f} x scale {scale:.4f} = {std * scale:.3f}), "
                f"{meta['skipped']} unreadable files skipped, {num_classes} classes; "
                f"aug={s.aug} c' in {s.aug_c_primes}; {world_size} rank(s) on {device}"
                f"{' sharded with FSDP2' if fsdp.is_distributed() else ''}, "
                f"global batch {s.batch_size} ({micro} x {s.accum} x {world_size}), "
                f"compile={s.compile}, EMA {s.ema_decay} warm-up {s.ema_warmup}")
    log.message(f"precision: {precision[0]}; latent cache: {precision[1]}; {cli.machine(device)}")
    if not 0.5 <= std * scale <= 2:
        log.message(f"WARNING: the scaled latents have std {std * scale:.3f}, far from 1: "
                    f"the scaling factor {scale:.4f} of {ae.name} does not fit these latents "
                    f"(std {std:.4f}); the noise schedules assume unit-scale data")


def recipe_default(key):
    """--help words for an option the model's recipe sets, e.g. "default: 0.0001 DiT/SiT, 0.0002
    UViT, ..." (written from the recipes of models.py, so it cannot drift from them)."""
    values = [recipe[key] for recipe in models.RECIPES.values()]
    if len(set(values)) == 1:
        return f"default: {values[0]}"
    return "default: " + ", ".join(f"{v} {name}" for name, v in zip(models.RECIPES, values))


def c_prime_arg(text):
    """An --eval-c-primes entry: a channel count, or `c` (all channels)."""
    return text if text == "c" else cli.integer(1)(text)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--model", choices=sorted(models.MODELS), default="USiT-tiny", help="backbone (models.py)")
    add("--seed", type=cli.integer(*cli.SEED), default=0,
        help="model init and the per-rank random streams")
    add("--ae", default="runs/ae",
        help="the frozen AE: a train_ae.py run folder / .pt, a released name, folder or hub id, "
             "or random:NAME (random weights, smoke runs)")
    add("--data", default="toy", help="'toy' or an ImageNet-style folder (class subfolders)")
    add("--toy-size", type=int, default=5000, help="images of the toy dataset")
    add("--num-classes", type=int, default=10, help="classes of the toy dataset")
    add("--resolution", type=int, default=32, help="image side; latents are resolution / f")
    add("--patch-size", type=int, default=1, help="DC-AE backbones use 1 (Sec. 4.1)")
    add("--cache", default=None, help="latent cache folder (default: OUT/latents)")
    add("--aug", choices=["replace", "extra", "off"], default="extra",
        help="augmented diffusion training (Eq. 2): extra = official always_sample_max_channel")
    add("--aug-c-primes", type=int, nargs="+", default=None, help="c' list (default: the AE's)")
    add("--steps", type=int, default=None, help=f"optimizer steps ({recipe_default('steps')})")
    add("--batch-size", type=int, default=None,
        help=f"global batch size ({recipe_default('batch_size')})")
    add("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    add("--lr", type=cli.real(0, above=True), default=None,
        help=f"AdamW learning rate ({recipe_default('lr')})")
    add("--weight-decay", type=cli.real(0), default=None,
        help=f"AdamW weight decay, not on norms and biases ({recipe_default('weight_decay')})")
    add("--betas", type=cli.real(0, 1), nargs=2, default=None,
        help=f"AdamW betas ({recipe_default('betas')})")
    add("--warmup", type=int, default=None,
        help=f"linear LR warm-up steps ({recipe_default('warmup')})")
    add("--grad-clip", type=cli.real(0), default=1.0, help="max grad norm (0: no clipping)")
    add("--ema-decay", type=cli.real(0, 1), default=None,
        help=f"EMA decay ({recipe_default('ema_decay')})")
    add("--ema-warmup", type=int, default=None,
        help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
             f"0: constant decay, as DiT and U-ViT ({recipe_default('ema_warmup')})")
    add("--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast for training (default: on with CUDA, fp32 on CPU: cli.precision)")
    add("--ae-bf16", action=argparse.BooleanOptionalAction, default=None,
        help="encode the latent cache under bf16 autocast "
             "(default: fp32, the evaluation protocol)")
    add("--compile", action=argparse.BooleanOptionalAction, default=None,
        help="torch.compile the backbone (default: on with CUDA, off on CPU)")
    add("--out", default="runs/diffusion", help="run folder: args, metrics, grids, checkpoints")
    add("--resume", default=None,
        help="checkpoint or run folder to resume (default: the newest in --out)")
    add("--save-every", type=int, default=None,
        help="checkpoint every N steps (default: 10%% of --steps)")
    add("--save-minutes", type=cli.real(0, above=True), default=None,
        help=f"... and at least every M minutes of wall time ({recipe_default('save_minutes')})")
    add("--grid-every", type=int, default=5000, help="EMA sample grid every N steps (0: never)")
    add("--log-every", type=int, default=10, help="log (and sync with the device) every N steps")
    add("--tensorboard", action="store_true", help="also write every record and grid to OUT/tb")
    add("--encode-batch", type=int, default=64, help="batch size when encoding the latent cache")
    add("--num-workers", type=int, default=2,
        help="DataLoader workers when encoding the latent cache")
    add("--eval-every", type=int, default=0,
        help="FID, sFID, IS, precision and recall of the EMA every N steps, "
             "as sample.py computes them, into metrics.jsonl (0: never)")
    add("--fid", default=None, metavar="REF",
        help="the reference of --eval-every: a reference batch or statistics .npz, "
             "or an image folder (default: none; needed by --eval-every)")
    add("--inception-weights", default=None,
        help="pt_inception-2015-12-05-6726825d.pth for --eval-every "
             "(default: the torch hub cache; 'random' for smoke runs)")
    add("--eval-samples", type=int, default=10_000, help="samples per evaluation")
    add("--eval-c-primes", type=c_prime_arg, nargs="+", default=[],
        help="also evaluate generation from the first c' channels, e.g. 16 32 c "
             "(default: all c only)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
