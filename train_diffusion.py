"""Train a class-conditional latent diffusion model with augmented diffusion training (paper Sec. 3.3, Eq. 2,
Fig. 5; Sec. 4.1; Tables 2-5).

1. Latents: the dataset is encoded once by the frozen AE (center crops, no flips, fp32), sharded across ranks, into
   a cache folder that records the AE's identity (latents.build_cache); a cache made by another AE is refused.
2. Training: any backbone of models.py with its objective (DiT: DDPM, UViT: eps, SiT/USiT: flow matching).
   `--aug` adds Eq. 2's masked objectives on the first c' channels: `replace` draws each sample's c' from the
   list (which includes c; the paper's literal Eq. 2), `extra` adds a masked copy of the batch to the full-channel
   loss (the official always_sample_max_channel), `off` trains the plain objective. Whether the AE is structured
   is independent (its own checkpoint), so Table 5's four cells are four runs.

    python train_ae.py && python train_diffusion.py                  # tiny AE, then a tiny USiT on it (CPU: +47 s)
    python train_diffusion.py --ae random:dc-ae-f8c64-tiny --steps 20   # random AE: a smoke run only (it says so)
    torchrun --nproc_per_node 8 train_diffusion.py --model USiT-2B --ae /ckpt/dc-ae-f64c128-1.5 \\
        --data /data/imagenet/train --resolution 512 --out runs/usit2b-f64
"""
import argparse
import json
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


def check_args(args, ae):
    """What depends on the AE, before any compute (the checks both trainers share are in run.start_run; --out is
    checked here too, before the latent cache under it)."""
    run.check_out(args.out)
    if args.resolution < 1 or args.resolution % ae.f:
        raise ValueError(f"--resolution {args.resolution} is not a positive multiple of the AE's f={ae.f} ({ae.name})")
    if any(not 1 <= cp <= ae.c for cp in args.aug_c_primes):
        raise ValueError(f"--aug-c-primes {args.aug_c_primes} must lie in [1, c={ae.c}]")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    if args.eval_every < 0 or args.eval_samples < 2:
        raise ValueError(f"--eval-every {args.eval_every} must be >= 0 and --eval-samples {args.eval_samples} >= 2")
    if args.eval_every and not (args.fid and os.path.exists(args.fid)):
        raise ValueError(f"--eval-every needs --fid REF, a reference batch, statistics .npz or image folder "
                         f"(got {args.fid})")
    if args.inception_weights not in (None, "random") and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")
    if any(cp != "c" and not 1 <= cp <= ae.c for cp in args.eval_c_primes):
        raise ValueError(f"--eval-c-primes {args.eval_c_primes} must lie in [1, c={ae.c}] (or be c)")


def latent_cache(ae, source, args):
    """(identity, meta.json of a usable cache or None, the dataset to encode or None, what was wrong with a damaged
    cache or None): a cache is used only if the same AE, data, resolution and precision made it, and one made by
    anything else is refused (ValueError); a damaged one (latents.open_cache) is rebuilt."""
    identity = dict(ae=source, ae_name=ae.name, ae_fingerprint=latents.fingerprint(ae), data=os.path.abspath(args.data)
                    if args.data != "toy" else f"toy:{args.toy_size}", resolution=args.resolution, ae_bf16=args.ae_bf16)
    meta, damaged = latents.open_cache(args.cache)
    if meta is not None and {k: meta.get(k) for k in identity} != identity:
        raise ValueError(f"latent cache {args.cache} was made by {meta.get('ae')} ({meta.get('ae_fingerprint')}) on "
                         f"{meta.get('data')} at {meta.get('resolution')}px, not by {identity['ae']} "
                         f"({identity['ae_fingerprint']}) on {identity['data']} at {args.resolution}px: pass another "
                         f"--cache")
    if meta is None:
        run.check_out(args.cache, "--cache")
    # The toy data are one fixed dataset (seed 0), whatever the training --seed: seeds share one latent cache.
    dataset = None if meta else data_lib.build_dataset(args.data, args.resolution, args.num_classes, args.toy_size, 0)
    return identity, meta, dataset, damaged


@torch.no_grad()
def save_samples(ema, objective, ae, scale, args, device, path, num_classes, rank):
    """A preview grid from the EMA weights with fixed noise, rows = classes; it leaves the training RNG untouched."""
    classes = list(range(min(num_classes, 8)))
    y = torch.tensor(classes, device=device).repeat_interleave(args.grid_cols)  # (rows * cols,)
    g = torch.Generator(device).manual_seed(1234)
    h = args.resolution // ae.f
    z = torch.randn(len(y), ae.c, h, h, generator=g, device=device)  # (rows * cols, c, h, h)
    ema.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):  # a preview, not an evaluation
        x0 = objective.sample(ema, z, y, objective.preview, args.grid_steps, generator=g)
        x = ae.decode(x0.float() / scale).float().clamp(-1, 1)  # undo the latent scaling before decoding
    if rank == 0:
        data_lib.save_grid(x, path, nrow=args.grid_cols, row_labels=[f"class {c}" for c in classes])


def evaluate(ema, build, objective, ae, scale, latent_shape, num_classes, c_primes, samples, inception, reference,
             rank, world_size, stop):
    """FID during training (Fig. 5b, Fig. 1): what `sample.py --ckpt <this step's checkpoint> --num-samples K --fid
    REF` computes with its defaults (the objective's protocol sampler, no CFG, random labels, seed 0, chunks of
    evaluation.BATCH, the EMA weights, fp32), from all c channels and from the first c' of `c_primes` (as sample.py
    --c-prime). Every rank samples its chunks with an unsharded copy of the EMA (adaptive solvers take other steps on
    each rank). -> {metric: value, metric_c<c'>: value} or None, when stop() said yes (a signal) on any rank."""
    model = fsdp.unsharded_copy(ema, build).eval()
    sampler, steps = diffusion.resolve_sampler(objective)
    labels = evaluation.sample_labels(samples, 0, list(range(num_classes)))  # (K,)
    result = {}
    for c_prime in [None, *c_primes]:
        def generate(y, k):
            return evaluation.generate(model, objective, ae, scale, latent_shape, y, evaluation.chunk_seed(0, k),
                                       sampler=sampler, steps=steps, c_prime=c_prime)
        metrics = evaluation.generation_metrics(generate, labels, evaluation.BATCH, inception, reference, rank,
                                                world_size, stop=stop, progress=rank == 0)
        if metrics is None:
            return None
        suffix = "" if c_prime is None else f"_c{c_prime}"
        result.update({k + suffix: metrics[k] for k in ("fid", "sfid", "is_mean", "precision", "recall")})
    return result


def evaluated(out, step):
    """Whether OUT/metrics.jsonl holds the evaluation of `step`: a run stopped by a signal during an evaluation
    resumes from that step's checkpoint and evaluates it first; one evaluated already is not evaluated twice."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return False
    with open(path) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if record.get("step") == step and "fid" in record:
                return True
    return False


def main(args):
    # Setup: process group, recipe, the frozen AE, the run folder (lock, resume checkpoint), all before any compute.
    rank, world_size, device = fsdp.setup()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    run.fill_recipe(args, models.MODELS[args.model].recipe)
    args.compile = device.type == "cuda" if args.compile is None else args.compile
    args.bf16, precision = cli.precision(device, args.bf16)  # training: bf16 autocast on CUDA, fp32 on CPU
    args.ae_bf16, cache_precision = cli.precision(device, args.ae_bf16, evaluation=True, flag="--ae-bf16")
    args.cache = args.cache or os.path.join(args.out, "latents")
    error, ae = None, None
    try:
        frozen = checkpoints.load_ae(args.ae, device)
        ae, scaling, source = frozen.model, frozen.scaling_factor, frozen.source
        args.aug_c_primes = args.aug_c_primes or ae.c_prime_candidates
        check_args(args, ae)
        # FID from all c channels is always evaluated: the list holds the partial ones, once each.
        args.eval_c_primes = sorted({cp for cp in args.eval_c_primes if cp not in ("c", ae.c)})
        identity, meta, dataset, damaged = latent_cache(ae, source, args)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    side = args.resolution // ae.f
    ckpt_path, ckpt = run.start_run(args, rank, world_size, dict(model=args.model, latent_shape=[ae.c, side, side]))

    # Latents, encoded once; the scale that makes them unit-std: the released factor of released weights, else 1 / std.
    if damaged and rank == 0:
        print(f"latent cache {args.cache} is damaged: {damaged}; rebuilding it", file=sys.stderr, flush=True)
    if meta is None:
        meta = latents.build_cache(ae, dataset, args.cache, identity, rank, world_size, device, args.encode_batch,
                                   args.num_workers, args.ae_bf16)
    scale = scaling if scaling is not None else 1.0 / meta["latent_std"]
    num_classes = meta["num_classes"] or args.num_classes

    # Model and EMA (FSDP2), optimizer, then every rank's own RNG streams, and the checkpoint over all of them.
    def build():
        return models.create_model(args.model, in_channels=ae.c, input_size=side, num_classes=num_classes,
                                   patch_size=args.patch_size, device=device)
    model, ema = fsdp.build_with_ema(build, args.seed)
    opt = fsdp.adamw(model, args.lr, args.weight_decay, tuple(args.betas))
    modules, optimizers = {"model": model, "ema": ema}, {"opt": (opt, model)}
    torch.manual_seed((args.seed * 1000 + rank) % 2 ** 64)  # noise, t, c', label dropout differ per rank
    step, data_state = run.load_checkpoint(ckpt, modules, optimizers, rank) if ckpt_path else (0, None)
    elapsed = ckpt.get("elapsed", 0.0) if ckpt else 0.0  # training seconds before this process (rank 0 logs them)
    del ckpt
    log = run.RunLog(args.out, args, rank, args.steps, step if ckpt_path else None)
    if ckpt_path:
        log.message(f"resumed from {ckpt_path} at step {step}")
    micro = args.batch_size // (world_size * args.accum)
    try:  # latents are memory-mapped: read in this process, no DataLoader workers
        batches = data_lib.Batches(latents.LatentCache(args.cache, meta["parts"]), micro, rank, world_size, args.seed,
                                   pin_memory=device.type == "cuda", state=data_state)
    except ValueError as e:
        fsdp.fail(str(e), rank)
    objective = diffusion.make_objective(models.MODELS[args.model].objective)
    train_model = torch.compile(model) if args.compile else model
    flops = 3 * ema.flops_per_image() * (2 if args.aug == "extra" else 1)  # fwd + bwd per training image
    sync = run.Sync(device, step, args.steps, args.log_every, args.save_every, args.save_minutes, args.batch_size,
                    flops)
    meter = run.Meter()
    std = meta["latent_std"]
    log.log({"params": models.count_params(model, trainable_only=False), "params_local": fsdp.local_numel(model)},
            show=False)
    log.message(f"{args.model} ({models.MODELS[args.model].objective}): {models.count_params(model) / 1e6:.2f}M params "
                f"on {ae.c}x{side}x{side} latents of {ae.name} (latent std {std:.4f} x scale {scale:.4f} = "
                f"{std * scale:.3f}), {meta['skipped']} unreadable files skipped, {num_classes} classes; aug={args.aug} "
                f"c' in {args.aug_c_primes}; {world_size} rank(s) on {device}"
                f"{' sharded with FSDP2' if fsdp.is_distributed() else ''}, global batch {args.batch_size} "
                f"({micro} x {args.accum} x {world_size}), compile={args.compile}, EMA {args.ema_decay} warm-up "
                f"{args.ema_warmup}")
    log.message(f"precision: {precision}; latent cache: {cache_precision}; {cli.machine(device)}")
    if not 0.5 <= std * scale <= 2:
        log.message(f"WARNING: the scaled latents have std {std * scale:.3f}, far from 1: the scaling factor "
                    f"{scale:.4f} of {ae.name} does not fit these latents (std {std:.4f}); the noise schedules assume "
                    f"unit-scale data")

    # FID during training: the Inception and the reference statistics, loaded once.
    inception = reference = None
    if args.eval_every:
        try:
            inception = fid.load_inception(args.inception_weights, device)
            reference = fid.load_reference(args.fid, inception, 50, device)
        except (ValueError, FileNotFoundError) as e:
            fsdp.fail(str(e), rank)

    def evaluate_step():  # -> the record of this step's evaluation, or None when a signal stopped it
        t0 = time.time()
        metrics = evaluate(ema, build, objective, ae, scale, [ae.c, side, side], num_classes, args.eval_c_primes,
                           args.eval_samples, inception, reference, rank, world_size,
                           stop=lambda: sync.signal is not None)
        seconds = elapsed + t0 - clock
        return metrics and {"step": step, "images_seen": step * args.batch_size, "elapsed_s": seconds,
                            "device_hours": seconds * world_size / 3600, "eval_s": time.time() - t0, **metrics}

    # Training loop. The host waits for the device only at sync points (every --log-every steps and at saves).
    model.train()
    code, clock = 0, time.time()  # training time = elapsed + (now - clock); evaluations are not counted
    eval_due = bool(args.eval_every and step and step % args.eval_every == 0)
    if eval_due and not fsdp.gather(rank == 0 and evaluated(args.out, step))[0]:  # stopped during it: once more
        log.message(f"evaluating step {step}, which the run stopped before finishing")
        record = evaluate_step()
        if record is None:
            log.message(f"stopped by {sync.signal_name} while evaluating step {step}; run the same command again")
            code = 128 + sync.signal
        else:
            log.log(record)
            elapsed, clock = record["elapsed_s"], time.time()
    while step < args.steps and not code:
        lr = fsdp.set_lr(opt, step, args.lr, args.warmup)
        for i in range(args.accum):
            x0, y, _ = next(batches)
            x0, y = x0.to(device, non_blocking=True) * scale, y.to(device, non_blocking=True)  # (N, c, h, w)
            # Augmented diffusion training (Eq. 2, Fig. 5a): a c' per sample for --aug replace / extra, and its
            # channel mask (Eq. 1); --aug off: no mask.
            x0, y, c_prime = diffusion.augment_batch(x0, y, args.aug_c_primes, args.aug)
            mask = None if c_prime is None else ae_lib.channel_mask(ae.c, c_prime)  # (N, c, 1, 1)
            if hasattr(model, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter only on the last micro-step
                model.set_requires_gradient_sync(i == args.accum - 1)
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                loss, terms = objective.loss(train_model, x0, y, mask=mask)  # Eq. 2 where c' < c
            (loss / args.accum).backward()
            meter.add({"loss": loss, **terms}, 1 / args.accum)
        # Clip, AdamW step, EMA (DC-Gen's warm-up).
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or float("inf"), foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        fsdp.ema_update(ema, model, args.ema_decay, step + 1, args.ema_warmup)
        meter.add({"grad_norm": fsdp.full_tensor(grad_norm)})
        meter.end_step()
        step += 1
        if args.grid_every and (step % args.grid_every == 0 or step == args.steps):  # every rank: the EMA is sharded
            save_samples(ema, objective, ae, scale, args, device, os.path.join(args.out, f"samples_{step:07d}.png"),
                         num_classes, rank)

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
        log.log({**record, "lr": lr})
        if late or stopped or eval_due or step % args.save_every == 0 or step == args.steps:
            extra = {"ae": source, "ae_name": ae.name, "scaling_factor": scale, "num_classes": num_classes,
                     "latent_shape": [ae.c, side, side], "data": batches.state(),
                     "elapsed": elapsed + time.time() - clock}
            # An evaluated step's checkpoint is kept for good: each point of the curve can be checked again.
            log.saved(*run.save_checkpoint(args.out, step, modules, optimizers, args, extra,
                                           keep_every=args.eval_every))
            sync.saved()
        if stopped:  # SIGTERM / SIGINT: saved above, now stop (exit status 128 + the signal)
            log.message(f"stopped by {sync.signal_name} at step {step} after saving; run the same command again to "
                        f"resume")
            code = 128 + sync.signal
            break
        if eval_due:
            record = evaluate_step()
            if record is None:  # a signal during the evaluation: this step's checkpoint is on disk
                log.message(f"stopped by {sync.signal_name} while evaluating step {step}; the same command resumes "
                            f"there and evaluates step {step} first")
                code = 128 + sync.signal
                break
            log.log(record)
            elapsed, clock = record["elapsed_s"], time.time()
            model.train()
    run.finish(log, sync)
    if code:
        sys.exit(code)


def recipe_default(key):
    """--help words for an option the model's recipe sets, e.g. "default: 0.0001 DiT/SiT, 0.0002 UViT, ..." (written
    from the recipes of models.py, so it cannot drift from them)."""
    values = [recipe[key] for recipe in models.RECIPES.values()]
    if len(set(values)) == 1:
        return f"default: {values[0]}"
    return "default: " + ", ".join(f"{v} {name}" for name, v in zip(models.RECIPES, values))


def c_prime_arg(text):
    """An --eval-c-primes entry: a channel count, or `c` (all channels)."""
    return text if text == "c" else cli.integer(1)(text)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(models.MODELS), default="USiT-tiny", help="backbone (models.py)")
    parser.add_argument("--ae", default="runs/ae", help="train_ae.py run folder / .pt, a diffusers or DC-Gen folder, "
                        "or random:NAME (random weights of a registry AE, smoke runs)")
    parser.add_argument("--data", default="toy", help="'toy' or an ImageNet-style folder")
    parser.add_argument("--toy-size", type=int, default=5000, help="images of the toy dataset")
    parser.add_argument("--num-classes", type=int, default=10, help="toy classes")
    parser.add_argument("--resolution", type=int, default=32, help="image resolution; latents are resolution / f")
    parser.add_argument("--patch-size", type=int, default=1, help="DC-AE backbones use 1 (Sec. 4.1)")
    parser.add_argument("--cache", default=None, help="latent cache folder (default: OUT/latents)")
    parser.add_argument("--aug", choices=["replace", "extra", "off"], default="extra",
                        help="augmented diffusion training (Eq. 2): extra = official always_sample_max_channel")
    parser.add_argument("--aug-c-primes", type=int, nargs="+", default=None, help="c' list (default: the AE's)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps ({recipe_default('steps')})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"global batch size ({recipe_default('batch_size')})")
    parser.add_argument("--accum", type=int, default=1, help="gradient accumulation micro-steps")
    parser.add_argument("--lr", type=cli.real(0, above=True), default=None, help=f"AdamW learning rate ({recipe_default('lr')})")
    parser.add_argument("--weight-decay", type=cli.real(0), default=None, help=f"AdamW weight decay, not on norms and biases "
                        f"({recipe_default('weight_decay')})")
    parser.add_argument("--betas", type=cli.real(0, 1), nargs=2, default=None, help=f"AdamW betas ({recipe_default('betas')})")
    parser.add_argument("--warmup", type=int, default=None, help=f"linear LR warm-up steps ({recipe_default('warmup')})")
    parser.add_argument("--grad-clip", type=cli.real(0), default=1.0, help="max grad norm (0: no clipping)")
    parser.add_argument("--ema-decay", type=cli.real(0, 1), default=None, help=f"EMA decay ({recipe_default('ema_decay')})")
    parser.add_argument("--ema-warmup", type=int, default=None, help="DC-Gen's EMA warm-up d = decay (1 - exp(-step / W)); "
                        f"0: constant decay, as DiT and U-ViT ({recipe_default('ema_warmup')})")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for training (default: on with CUDA, fp32 on CPU: cli.precision)")
    parser.add_argument("--ae-bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="encode the latent cache under bf16 autocast (default: fp32, the evaluation protocol)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the backbone (default: on with CUDA, off on CPU)")
    parser.add_argument("--out", default="runs/diffusion", help="run folder: args, metrics, grids, checkpoints")
    parser.add_argument("--resume", default=None, help="checkpoint or run folder to resume (default: the newest in --out)")
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (default: 10%% of --steps)")
    parser.add_argument("--save-minutes", type=cli.real(0, above=True), default=None, help="... and at least every M minutes of wall time "
                        f"({recipe_default('save_minutes')})")
    parser.add_argument("--grid-every", type=int, default=5000, help="EMA sample grid every N steps (0: never)")
    parser.add_argument("--grid-steps", type=int, default=50, help="sampler steps for the periodic grids")
    parser.add_argument("--grid-cols", type=int, default=8, help="samples per class in the periodic grids")
    parser.add_argument("--log-every", type=int, default=10, help="log (and sync with the device) every N steps")
    parser.add_argument("--encode-batch", type=int, default=64, help="batch size when encoding the latent cache")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers when encoding the latent cache")
    parser.add_argument("--eval-every", type=int, default=0, help="FID, sFID, IS, precision and recall of the EMA "
                        "every N steps, as sample.py computes them, into metrics.jsonl (0: never)")
    parser.add_argument("--eval-samples", type=int, default=10_000, help="samples per evaluation")
    parser.add_argument("--eval-c-primes", type=c_prime_arg, nargs="+", default=[], help="also evaluate generation "
                        "from the first c' channels, e.g. 16 32 c (default: all c only)")
    parser.add_argument("--fid", default=None, metavar="REF", help="the reference of --eval-every: a reference "
                        "batch or statistics .npz, or an image folder (default: none; needed by --eval-every)")
    parser.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth for "
                        "--eval-every (default: the torch hub cache; 'random' for smoke runs)")
    parser.add_argument("--seed", type=cli.integer(*cli.SEED), default=0, help="model init and the per-rank random "
                        "streams")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
