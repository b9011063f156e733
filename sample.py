"""Class-conditional generation with classifier-free guidance: image grids to look at, 50,000-sample `.npz` files
for FID (paper Sec. 4.2, Tables 2-4, Fig. 7; evaluation protocol Sec. 4.1 / DESIGN.md §5b-6).

--ckpt takes a train_diffusion.py checkpoint (or its run folder), a released DC-Gen class-to-image folder
(checkpoints.load_diffusion; its AE goes to --ae), or "random:<model>" for speed runs. The defaults are the paper's
evaluation protocol (DC-Gen's eval_dc_ae_diffusion_model.py), printed in the header line:
  - SiT/USiT: adaptive dopri5 on t 0 -> 1 (atol 1e-6, rtol 1e-3); UViT: DPM-Solver "fast" (singlestep, order 3,
    30 evaluations, t 1 -> 1e-3); DiT: 250-step DDPM with the learned variance (diffusion.py, `.samplers`);
  - no CFG (the paper's headline numbers); DC-Gen documents scale 1.3 for DiT-XL and 1.5 for the others;
  - denoiser and AE in fp32 (TF32 matmuls, as DC-Gen's amp=fp32 + allow_tf32); --bf16 / --ae-bf16 trade accuracy
    for speed; labels = torch.randint(0, 1000, (N,)) from a CPU generator seeded --seed; uint8 = clamp(127.5 x + 128).

Determinism that does not depend on the number of GPUs: the unit of work is a *chunk* of global sample indices,
chunk k = [k B, (k + 1) B) with B = --batch-size. Its labels are a slice of the N seeded labels, its initial noise
and any SDE noise come from a generator seeded by (seed, k), and chunks go round-robin to ranks, so 1 or 8 GPUs give
the same images for the same --batch-size. Each finished chunk is written atomically to OUT/shards/; a rerun skips
the chunks already there (resume), then rank 0 assembles OUT/samples.npz (`arr_0` uint8 (N, H, W, 3), `arr_1`
labels: the ADM evaluator format that fid.py reads) without holding all images in memory.

    python sample.py --ckpt runs/diffusion                                    # grid.png of the newest checkpoint
    python sample.py --ckpt runs/diffusion --num-samples 1000 --fid ref.npz --inception-weights random  # smoke
    torchrun --nproc_per_node 8 sample.py --ckpt dc-ae-f64c128-1.5-usit-2b-in-512px --ae dc-ae-f64c128-1.5 \\
        --num-samples 50000 --batch-size 64 --out runs/usit2b-15/fid50k --fid in512_train.npz \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth                # Table 4: gFID 2.18 w/o CFG
    python sample.py --ckpt runs/diffusion --c-prime 16 --out runs/grid_c16    # partial-channel generation
    python sample.py --ckpt random:USiT-2B --ae dc-ae-f64c128-1.5 --resolution 512 --num-samples 500 \\
        --batch-size 125 --sampler euler --steps 50 --profile                  # speed only (random weights)
"""
import argparse
import functools
import glob
import json
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import checkpoints
import cli
import data as data_lib
import diffusion
import fid
import fsdp
import models
import run

# ImageNet classes of DC-AE's demo grid (the official demo_dc_ae_diffusion_model prompts).
DEMO_CLASSES = [279, 333, 979, 936, 933, 145, 497, 1, 248, 360, 793, 12, 387, 437, 938, 978]


# ------------------------------------------------------------------------------------------------
# One chunk of global indices: labels, noise, sampling, decoding
# ------------------------------------------------------------------------------------------------

def chunk_seed(seed, k):
    """Seed of chunk k: every sample's randomness is a function of (seed, its global index) for a fixed B."""
    return seed * 1_000_003 + k


def sample_labels(n, seed, classes):
    """The n labels of a 50K run, uniform over `classes` from a CPU generator seeded `seed`: with all 1000 classes
    this is DC-Gen's torch.randint(0, 1000, (n,), generator=seeded) (sample_class.py), label for label."""
    g = torch.Generator().manual_seed(seed)
    return torch.as_tensor(classes)[torch.randint(len(classes), (n,), generator=g)]  # (n,)


class Timer:
    """Wall time per phase; with sync=True the GPU is drained at each boundary so the split is honest."""

    def __init__(self, device, sync):
        self.device, self.sync, self.t = device, sync, {}

    def __call__(self, name, fn, *a):
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn(*a)
        if self.sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
        return out

    def report(self, n, rank, world_size):
        """Print and return the rate and the split of the phases: {"images", "seconds", "img_per_s", phase: s}."""
        total = sum(self.t.values())
        split = ", ".join(f"{k} {v:.2f}s ({100 * v / max(total, 1e-9):.0f}%)" for k, v in self.t.items())
        print(f"rank {rank}: {n} images in {total:.2f}s = {n / max(total, 1e-9):.2f} img/s per rank "
              f"(x{world_size} ranks); {split}", flush=True)
        return {"images": n, "seconds": total, "img_per_s": n / max(total, 1e-9), **self.t}


@torch.no_grad()
def generate_chunk(model, objective, sampling, ae, scale, latent_shape, y, seed, device, bf16, ae_bf16, timer):
    """uint8 images (n, H, W, 3) on the host for labels y (n,): initial noise from a generator seeded `seed`, the
    objective's sampler with `sampling` (its .sample keyword arguments: sampler, steps, cfg_scale, guidance_interval,
    c_prime), the latent scale undone, the AE's decode (bf16 only if asked: the decoder's precision moves FID)."""
    g = torch.Generator(device).manual_seed(seed)
    z = torch.randn(len(y), *latent_shape, generator=g, device=device)  # (n, c, h, w) initial noise

    def denoise(z):
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            return objective.sample(model, z, y.to(device), generator=g, **sampling).float()  # (n, c, h, w)

    def decode(x0):  # with --c-prime the channels after c' are exactly zero (a structured AE decodes them)
        with torch.autocast(device.type, torch.bfloat16, enabled=ae_bf16):
            return ae.decode(x0 / scale).float()  # (n, 3, H, W)
    x = timer("decode", decode, timer("denoise", denoise, z))
    # Quantise on the device, then copy uint8: a quarter of the bytes of a float32 copy.
    return timer("to_uint8+copy", lambda x: data_lib.to_uint8(x).numpy(), x)  # (n, H, W, 3)


# ------------------------------------------------------------------------------------------------
# The two programs: a grid to look at, and the 50K evaluation (shards, resume, the .npz, FID)
# ------------------------------------------------------------------------------------------------

def grid(generate, classes, per_class, batch_size, seed, out):
    """One row per class, per_class columns (rank 0 only: a few dozen images) -> OUT/grid.png. Returns the images."""
    y_all = torch.tensor(classes).repeat_interleave(per_class)  # (rows * cols,)
    chunks = [y_all[i:i + batch_size] for i in range(0, len(y_all), batch_size)]
    images = np.concatenate([generate(y, chunk_seed(seed, k)) for k, y in enumerate(chunks)])  # (N, H, W, 3)
    path = os.path.join(out, "grid.png")
    data_lib.save_grid(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1, path,  # lossless uint8
                       nrow=per_class, row_labels=[f"class {y}" for y in classes])
    print(f"wrote {path}")
    return images


def shard_path(out, k):
    return os.path.join(out, "shards", f"chunk_{k:06d}.npz")


def write_shard(path, images, labels):
    """Atomic: a crash leaves at most a temp file, never a truncated chunk that resume would trust."""
    run.atomic_write(path, lambda fh: np.savez(fh, images=images, labels=labels))


def read_shards(paths):
    for path in paths:
        with np.load(path) as shard:
            yield shard["images"], shard["labels"]


def stop(signum, frame):
    """SIGTERM / SIGINT while sampling: leave through SystemExit(128 + signal), so that a chunk being written removes its
    temp file (run.atomic_write) and the finished chunks stay for the rerun."""
    raise SystemExit(128 + signum)


def evaluate(generate, labels, batch_size, seed, out, image_shape, rank, world_size, timer, keep_shards=False):
    """The N samples of an evaluation (N = len(labels)), chunk k of global indices [k B, (k + 1) B) on rank
    k % world_size, each finished chunk written atomically to OUT/shards/ (a rerun samples only the missing ones),
    then OUT/samples.npz in ADM's format, streamed. Rank 0 appends the rate to OUT/metrics.jsonl. -> the .npz path."""
    out_npz = os.path.join(out, "samples.npz")
    if os.path.isfile(out_npz):
        if rank == 0:
            print(f"{out_npz} exists with this configuration: nothing to sample")
        return out_npz
    N, B = len(labels), batch_size
    num_chunks = (N + B - 1) // B
    todo = [k for k in range(rank, num_chunks, world_size) if not os.path.isfile(shard_path(out, k))]
    mine = sum(min(B, N - k * B) for k in todo)
    for sig in (signal.SIGTERM, signal.SIGINT):  # to one rank or the whole process group: stop at once, finished
        signal.signal(sig, stop)  # chunks stay, a chunk being written leaves nothing
    try:
        with tqdm(total=mine, unit="img", disable=rank != 0 or None, desc=f"sampling (rank 0 of {world_size})") as bar:
            for k in todo:
                y = labels[k * B:(k + 1) * B]  # (n,)
                images = generate(y, chunk_seed(seed, k))
                timer("write", write_shard, shard_path(out, k), images, y.numpy())
                bar.update(len(y))
    except SystemExit as e:
        done = len(glob.glob(os.path.join(out, "shards", "chunk_*.npz")))
        if rank == 0:
            print(f"stopped by {signal.Signals(e.code - 128).name}: {done} of {num_chunks} chunks are in "
                  f"{out}/shards; run the same command to sample the rest", file=sys.stderr, flush=True)
        raise
    except OSError as e:  # a full or lost disk: the finished chunks stay
        fsdp.fail(run.write_error(shard_path(out, k), e, B * int(np.prod(image_shape))), rank, 4)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # main() may run again in this process (toy.py)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rate = timer.report(mine, rank, world_size) if timer.sync or rank == 0 else None
    fsdp.barrier()  # every chunk is on disk
    if rank == 0:
        with open(os.path.join(out, "metrics.jsonl"), "a") as fh:  # for benchmarks/bench.py
            fh.write(json.dumps({"sampled": rate, "world_size": world_size}) + "\n")
        shards = [shard_path(out, k) for k in range(num_chunks)]
        missing = [p for p in shards if not os.path.isfile(p)]
        if missing:
            raise RuntimeError(f"{len(missing)} chunks are missing after sampling, e.g. {missing[0]}")
        t0 = time.perf_counter()
        fid.write_npz(out_npz, read_shards(shards), (N, *image_shape))  # ADM's format, streamed
        print(f"wrote {out_npz} ({N} x {'x'.join(map(str, image_shape))} uint8) in {time.perf_counter() - t0:.1f}s",
              flush=True)
        if not keep_shards:
            shutil.rmtree(os.path.join(out, "shards"))
    return out_npz


def run_config(args, ckpt):
    """What determines the images: a rerun into the same --out must match it to reuse shards or samples."""
    return dict(ckpt=ckpt.source, step=ckpt.step, weights=args.weights, ae=args.ae or ckpt.ae,
                num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, classes=args.classes,
                sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                guidance_interval=args.guidance_interval, c_prime=args.c_prime, bf16=args.bf16, ae_bf16=args.ae_bf16,
                device=args.device_type)


def check_run_config(out, config):
    path = os.path.join(out, "sample_config.json")
    if os.path.isfile(path):
        with open(path) as fh:
            old = json.load(fh)
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        done = glob.glob(os.path.join(out, "shards", "chunk_*.npz")) or os.path.isfile(os.path.join(out, "samples.npz"))
        if diff and done:
            raise ValueError(f"--out {out} holds samples of another configuration (old, new: {diff}); "
                             f"pass another --out or delete it")
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(config, fh, indent=2)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------

def check_cli(args):
    """What needs no checkpoint: checked before loading one (a 2B model takes a while)."""
    if args.guidance_interval is not None and not args.guidance_interval[0] < args.guidance_interval[1]:
        raise ValueError(f"--guidance-interval {args.guidance_interval} must be 0 <= lo < hi <= 1 (noise level)")
    if args.batch_size < 1 or args.num_samples < 0 or args.per_class < 1:
        raise ValueError(f"--batch-size {args.batch_size}, --num-samples {args.num_samples} and --per-class "
                         f"{args.per_class} must be positive")
    if args.fid and not args.num_samples:
        raise ValueError("--fid needs --num-samples (it evaluates the .npz, not the grid)")
    if args.fid and not os.path.exists(args.fid):
        raise ValueError(f"--fid {args.fid}: reference not found (statistics .npz, image .npz or folder)")
    run.check_out(args.out)


def load(args, device):
    """(the diffusion model, its AE) as checkpoints.Loaded. The AE is --ae, or the one the checkpoint trained on, and
    its latent must have the checkpoint's channels; the latent scale is the checkpoint's (the one it trained with)."""
    if args.ckpt.startswith("random:"):  # speed runs: the AE gives the latent shape and the scaling factor
        if not args.ae:
            raise ValueError("--ckpt random:<model> needs --ae (its latent shape)")
        ae = checkpoints.load_ae(args.ae, device)
        ckpt = checkpoints.load_diffusion(args.ckpt, device, ae=ae.model, resolution=args.resolution,
                                          num_classes=args.num_classes)
        ckpt.scaling_factor = ae.scaling_factor or 1.0
        return ckpt, ae
    ckpt = checkpoints.load_diffusion(args.ckpt, device, args.weights)
    if args.model is not None and args.model != ckpt.name:
        raise ValueError(f"--ckpt {args.ckpt} is {ckpt.release or 'a checkpoint'} of {ckpt.name}, not --model "
                         f"{args.model}")
    spec = args.ae or ckpt.ae
    if spec is None:
        hint = f" (the folder of {ckpt.ae_name})" if ckpt.ae_name else ""
        raise ValueError(f"{'a released DC-Gen model' if ckpt.release else args.ckpt} records no AE weights: pass "
                         f"--ae{hint}")
    option = "--ae" if args.ae else "the checkpoint's AE"  # random:NAME is rebuilt as training built it (seeded)
    ae = checkpoints.load_ae(spec, device, option=option)
    if ae.model.c != ckpt.latent_shape[0]:
        raise ValueError(f"AE {ae.name} has c={ae.model.c} latent channels, the diffusion model was trained on "
                         f"c={ckpt.latent_shape[0]} ({ckpt.ae_name})")
    if ckpt.ae_name and ae.name != ckpt.ae_name:
        print(f"WARNING: AE {ae.name} is not the checkpoint's {ckpt.ae_name}", file=sys.stderr)
    return ckpt, ae


def check_args(args, ckpt, objective):
    """What depends on the checkpoint: sampler (default: the objective's protocol), steps, c', classes."""
    c, num_classes = ckpt.latent_shape[0], ckpt.num_classes
    try:
        args.sampler, args.steps = diffusion.resolve_sampler(objective, args.sampler, args.steps)
    except ValueError as e:
        raise ValueError(f"--sampler {args.sampler} --steps {args.steps} does not fit {ckpt.name} "
                         f"({models.MODELS[ckpt.name].objective}): {e}") from e
    if args.c_prime is not None and not 1 <= args.c_prime <= c:
        raise ValueError(f"--c-prime {args.c_prime} is outside [1, c={c}]")
    if args.classes is not None and (not args.classes or min(args.classes) < 0 or max(args.classes) >= num_classes):
        raise ValueError(f"--classes {args.classes} must lie in [0, {num_classes}) (the model's classes)")


def protocol(args, ckpt, objective, ae):
    """The header line: everything that decides the numbers, in words."""
    documented = f"; DC-Gen's documented scale {ckpt.cfg_scale}" if ckpt.cfg_scale else ""
    cfg = "off" if args.cfg_scale == 1.0 else f"{args.cfg_scale:g}"
    interval = "off" if args.guidance_interval is None else f"[{args.guidance_interval[0]:g}, {args.guidance_interval[1]:g}]"
    c = ckpt.latent_shape[0]
    return (f"{ckpt.release or ckpt.name} (step {ckpt.step}) + {ae.name}: "
            f"{objective.describe(args.sampler, args.steps)}; CFG {cfg}{documented}, guidance interval {interval}; "
            f"c' {args.c_prime or c}/{c}; denoiser {'bf16' if args.bf16 else 'fp32'}, AE decode "
            f"{'bf16' if args.ae_bf16 else 'fp32'}; latent scale {ckpt.scaling_factor:.4g}")


def main(args):
    # Setup: checks, the model and its AE, the folder's lock, all before any sampling.
    rank, world_size, device = fsdp.setup()
    args.device_type = device.type
    # fp32 denoiser and decoder by default on every device: DC-Gen's evaluation protocol (cli.precision).
    args.bf16, precision = cli.precision(device, args.bf16, evaluation=True)
    args.ae_bf16, ae_precision = cli.precision(device, args.ae_bf16, evaluation=True, flag="--ae-bf16")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    error = None
    try:
        check_cli(args)
        ckpt, ae = load(args, device)
        objective = diffusion.make_objective(models.MODELS[ckpt.name].objective)
        check_args(args, ckpt, objective)
        if rank == 0:  # one run per folder, as the trainers (the kernel drops the lock however this process ends)
            error = run.lock_run(args.out)
        if args.num_samples and rank == 0 and not error:
            check_run_config(args.out, run_config(args, ckpt))
    except (ValueError, FileNotFoundError) as e:
        error = str(e)
    fsdp.stop_if(error, rank)  # one line, exit status 2, before any sampling
    _, h, w = ckpt.latent_shape
    image_shape = (h * ae.model.f, w * ae.model.f, 3)
    if rank == 0:
        print(f"{protocol(args, ckpt, objective, ae)} -> {image_shape[0]}x{image_shape[1]}; {world_size} rank(s) on "
              f"{device}", flush=True)
        print(f"precision: denoiser {precision}, AE decode {ae_precision}; {cli.machine(device)}", flush=True)
    timer = Timer(device, args.profile)
    sampling = dict(sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
                    guidance_interval=args.guidance_interval, c_prime=args.c_prime)
    generate = functools.partial(generate_chunk, ckpt.model, objective, sampling, ae.model, ckpt.scaling_factor,
                                 ckpt.latent_shape, device=device, bf16=args.bf16, ae_bf16=args.ae_bf16, timer=timer)

    if not args.num_samples:  # a grid: rows = classes, --per-class columns
        classes = args.classes or (DEMO_CLASSES if ckpt.num_classes == 1000 else
                                   list(range(min(ckpt.num_classes, 16))))  # every class, up to 16
        images = None
        if rank == 0:
            images = grid(generate, classes, args.per_class, args.batch_size, args.seed, args.out)
            timer.report(len(images), rank, 1)
        run.release_locks()
        fsdp.cleanup()  # barriers first: no rank tears down while another still samples
        return {"grid": os.path.join(args.out, "grid.png"), "images": images}

    # The evaluation: N samples with labels uniform over the classes, then FID, IS, precision and recall.
    labels = sample_labels(args.num_samples, args.seed, args.classes or list(range(ckpt.num_classes)))  # (N,)
    out_npz = evaluate(generate, labels, args.batch_size, args.seed, args.out, image_shape, rank, world_size, timer,
                       args.keep_shards)
    metrics = None
    if args.fid:  # every rank computes Inception features of its share of the .npz (fid.py shards by rank)
        fsdp.barrier()  # the other ranks wait for the file only if they read it (no NCCL timeout otherwise)
        metrics = fid.compute_metrics(out_npz, args.fid, weights=args.inception_weights, batch_size=args.fid_batch_size,
                                      device=device, num_workers=0, progress=rank == 0)
        if rank == 0:
            print(f"FID {metrics['fid']:.4f}  IS {metrics['is_mean']:.2f} +- {metrics['is_std']:.2f}  "
                  f"precision {metrics['precision']}  recall {metrics['recall']}  ({metrics['n_samples']} samples)")
            with open(os.path.join(args.out, "metrics.json"), "w") as fh:
                json.dump(dict(metrics, ref=args.fid, inception_weights=args.inception_weights), fh, indent=2)
    run.release_locks()
    fsdp.cleanup()
    return {"npz": out_npz, "metrics": metrics}


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", required=True, help="required: a train_diffusion.py checkpoint or run "
                        "folder, a released DC-Gen folder, or random:<model> for speed runs")
    parser.add_argument("--ae", default=None, help="the AE (default: the one the checkpoint trained on; required for DC-Gen "
                        "folders): a train_ae.py .pt / folder, a diffusers or DC-Gen folder, or random:NAME")
    parser.add_argument("--model", default=None, choices=sorted(models.MODELS), help="refuse a checkpoint of another model (default: accept any)")
    parser.add_argument("--weights", choices=["ema", "model"], default="ema", help="which weights of a train_diffusion.py "
                        "checkpoint")
    parser.add_argument("--out", default="runs/samples", help="folder for grid.png, or the shards, samples.npz and "
                        "metrics.json")
    parser.add_argument("--num-samples", type=int, default=0, help="0: a grid; e.g. 50000: OUT/samples.npz for FID")
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="grid rows; with --num-samples the labels "
                        "are drawn uniformly from these (default: all classes, the DC-AE protocol)")
    parser.add_argument("--per-class", type=int, default=8, help="grid columns")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per chunk and per forward pass (x2 with "
                        "CFG); keep it fixed to reproduce or resume a run")
    samplers = sorted({name for objective in diffusion.OBJECTIVES.values() for name in objective.samplers})
    parser.add_argument("--sampler", default=None, choices=samplers,
                        help="default: the paper's protocol: ddpm (DiT), dpm-solver (UViT), dopri5 (SiT/USiT)")
    parser.add_argument("--steps", type=int, default=None, help="default: 250 DDPM, 30 DPM-Solver, 250 euler/heun/"
                        "euler_maruyama; dopri5 is adaptive")
    parser.add_argument("--cfg-scale", type=cli.real(0), default=1.0, help="1.0 = no guidance (the paper's headline numbers); "
                        "DC-Gen documents 1.3 for DiT-XL, 1.5 for the others")
    parser.add_argument("--guidance-interval", type=cli.real(0, 1), nargs=2, default=None, metavar=("LO", "HI"),
                        help="guide only at noise levels in [LO, HI] (1 = pure noise), e.g. 0.2 0.8 (default: "
                        "every step)")
    parser.add_argument("--c-prime", type=int, default=None, help="generate only the first c' latent channels (default: all c)")
    parser.add_argument("--seed", type=int, default=0, help="labels and the noise of every chunk")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for the denoiser, faster (default: fp32, the evaluation protocol)")
    parser.add_argument("--ae-bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for the AE decode (default: fp32, the evaluation protocol)")
    parser.add_argument("--profile", action="store_true", help="synchronise and report denoise / decode / copy / write")
    parser.add_argument("--keep-shards", action="store_true", help="keep OUT/shards after assembling samples.npz")
    parser.add_argument("--fid", default=None, metavar="REF", help="run fid.py on samples.npz against REF, a statistics .npz, image .npz or "
                        "folder (default: no FID)")
    parser.add_argument("--inception-weights", default=None, help="fid.py's --inception-weights: a .pth, 'random' for smoke runs "
                        "(default: the torch hub cache)")
    parser.add_argument("--fid-batch-size", type=int, default=50, help="images per Inception forward pass, per rank")
    parser.add_argument("--resolution", type=int, default=512, help="random:<model> only")
    parser.add_argument("--num-classes", type=int, default=1000, help="random:<model> only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
