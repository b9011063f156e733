"""Class-conditional generation with classifier-free guidance: image grids to look at,
50,000-sample `.npz` files for FID (paper Sec. 4.2, Tables 2-4, Fig. 7; evaluation protocol
Sec. 4.1 / DESIGN.md §5b-6).

--ckpt takes a train_diffusion.py checkpoint (or its run folder), a released DC-Gen class-to-image
folder (checkpoints.load_diffusion; its AE goes to --ae), or "random:<model>" for speed runs. The
defaults are the paper's evaluation protocol (DC-Gen's eval_dc_ae_diffusion_model.py), printed in
the header line:
- SiT/USiT: adaptive dopri5 on t 0 -> 1 (atol 1e-6, rtol 1e-3); UViT: DPM-Solver "fast"
  (singlestep, order 3, 30 evaluations, t 1 -> 1e-3); DiT: 250-step DDPM with the learned
  variance (diffusion.py, `.samplers`);
- no CFG (the paper's headline numbers); DC-Gen documents scale 1.3 for DiT-XL and 1.5 for the
  others;
- denoiser and AE in fp32 (TF32 matmuls, as DC-Gen's amp=fp32 + allow_tf32); --bf16 / --ae-bf16
  trade accuracy for speed; labels = torch.randint(0, 1000, (N,)) from a CPU generator seeded
  --seed; uint8 = clamp(127.5 x + 128).

Determinism that does not depend on the number of GPUs: the unit of work is a *chunk* of global
sample indices, chunk k = [k B, (k + 1) B) with B = --batch-size. Its labels are a slice of the N
seeded labels, its initial noise and any SDE noise come from a generator seeded by (seed, k), and
chunks go round-robin to ranks, so 1 or 8 GPUs give the same images for the same --batch-size. Each
finished chunk is written atomically to OUT/shards/; a rerun skips the chunks already there
(resume), then rank 0 assembles OUT/samples.npz (`arr_0` uint8 (N, H, W, 3), `arr_1` labels: the
ADM evaluator format that fid.py reads) without holding all images in memory.

--search-cfg LO HI finds the CFG scale that minimises FID (cfg_search.py).

    python sample.py --ckpt runs/diffusion                                  # grid.png, newest step
    python sample.py --ckpt runs/diffusion --num-samples 1000 --fid ref.npz \\
        --inception-weights random                                          # smoke
    torchrun --nproc_per_node 8 sample.py --ckpt dc-ae-f64c128-1.5-usit-2b-in-512px \\
        --ae dc-ae-f64c128-1.5 --num-samples 50000 --batch-size 64 \\
        --out runs/usit2b-15/fid50k --fid in512_train.npz \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth            # Table 4: 2.18 w/o CFG
    python sample.py --ckpt runs/diffusion --c-prime 16 --out runs/grid_c16 # partial-channel grid
    python sample.py --ckpt random:USiT-2B --ae dc-ae-f64c128-1.5 --resolution 512 \\
        --num-samples 500 --batch-size 125 \\
        --sampler euler --steps 50 --profile                                # speed only
"""
import argparse
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

import cfg_search
import checkpoints
import cli
import data as data_lib
import diffusion
import evaluation
import fid
import fsdp
import models
import run

# ImageNet classes of DC-AE's demo grid (the official demo_dc_ae_diffusion_model prompts).
DEMO_CLASSES = [279, 333, 979, 936, 933, 145, 497, 1, 248, 360, 793, 12, 387, 437, 938, 978]


# ------------------------------------------------------------------------------------------------
# The two programs: a grid to look at, and the 50K evaluation (shards, resume, the .npz, FID)
# ------------------------------------------------------------------------------------------------

def grid(generate, classes, per_class, batch_size, out):
    """One row per class, per_class columns (rank 0 only: a few dozen images) -> OUT/grid.png.
    Returns the images. `generate(y, k)` samples chunk k."""
    y_all = torch.tensor(classes).repeat_interleave(per_class)  # (rows * cols,)
    images = [generate(y_all[chunk.start:chunk.stop], k)
              for k, chunk in enumerate(evaluation.chunks(len(y_all), batch_size))]
    images = np.concatenate(images)  # (rows * cols, H, W, 3)
    path = os.path.join(out, "grid.png")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # lossless uint8
    data_lib.save_grid(x, path, nrow=per_class, row_labels=[f"class {y}" for y in classes])
    print(f"wrote {path}")
    return images


def shard_path(out, k):
    return os.path.join(out, "shards", f"chunk_{k:06d}.npz")


def write_shard(path, images, labels):
    """Atomic: a crash leaves at most a temp file, never a truncated chunk that resume would
    trust."""
    run.atomic_write(path, lambda fh: np.savez(fh, images=images, labels=labels))


def read_shards(paths):
    for path in paths:
        with np.load(path) as shard:
            yield shard["images"], shard["labels"]


def stop(signum, frame):
    """SIGTERM / SIGINT while sampling: leave through SystemExit(128 + signal), so that a chunk
    being written removes its temp file (run.atomic_write) and the finished chunks stay for the
    rerun."""
    raise SystemExit(128 + signum)


def assemble(out, num_chunks, n, image_shape):
    """OUT/samples.npz from the shards (rank 0), streamed; -> None, or one line of what went wrong.
    The space is checked first: a full disk would leave a temp file as large as the samples
    (39 GB at 50K x 512 px)."""
    out_npz = os.path.join(out, "samples.npz")
    shards = [shard_path(out, k) for k in range(num_chunks)]
    missing = [p for p in shards if not os.path.isfile(p)]
    if missing:
        return f"{len(missing)} chunks are missing after sampling, e.g. {missing[0]}"
    # arr_0 uint8, arr_1 int64 labels, zip headers.
    needed = n * int(np.prod(image_shape)) + 8 * n + 2 ** 16
    free = shutil.disk_usage(out).free
    keep = (f"the {num_chunks} chunks stay in {out}/shards: "
            "free some space and run the same command")
    if free < needed:
        return f"cannot write {out_npz}: {needed} bytes needed, {free} free; {keep}"
    t0 = time.perf_counter()
    try:
        fid.write_npz(out_npz, read_shards(shards), (n, *image_shape))  # ADM's format, streamed
    except OSError as e:
        for tmp in glob.glob(f"{out_npz}.*.tmp"):  # the temp file write_npz was filling
            os.remove(tmp)
        return f"{run.write_error(out_npz, e, needed)}; {keep}"
    shape = "x".join(map(str, image_shape))
    print(f"wrote {out_npz} ({n} x {shape} uint8) in {time.perf_counter() - t0:.1f}s", flush=True)
    return None


def evaluate(generate, labels, batch_size, out, image_shape, rank, world_size, timer,
             keep_shards=False):
    """The N samples of an evaluation (N = len(labels)): chunk k of global indices [k B, (k + 1) B)
    on rank k % world_size with the noise seed evaluation.chunk_seed(seed, k), each finished chunk
    written atomically to OUT/shards/ (a rerun samples only the missing ones), then OUT/samples.npz
    in ADM's format, streamed. Rank 0 appends the rate to OUT/metrics.jsonl. -> the .npz path.
    `generate(y, k)` samples chunk k."""
    out_npz = os.path.join(out, "samples.npz")
    if os.path.isfile(out_npz):
        if rank == 0:
            print(f"{out_npz} exists with this configuration: nothing to sample")
        return out_npz
    chunks = evaluation.chunks(len(labels), batch_size)
    todo = [k for k in range(rank, len(chunks), world_size)
            if not os.path.isfile(shard_path(out, k))]
    mine = sum(len(chunks[k]) for k in todo)
    # To one rank or the whole process group: stop at once, finished chunks stay, a chunk being
    # written leaves nothing.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        with tqdm(total=mine, unit="img", disable=rank != 0 or None,
                  desc=f"sampling (rank 0 of {world_size})") as bar:
            for k in todo:
                y = labels[chunks[k].start:chunks[k].stop]  # (n,)
                images = generate(y, k)
                timer("write", write_shard, shard_path(out, k), images, y.numpy())
                bar.update(len(y))
    except SystemExit as e:
        done = len(glob.glob(os.path.join(out, "shards", "chunk_*.npz")))
        if rank == 0:
            print(f"stopped by {signal.Signals(e.code - 128).name}: {done} of {len(chunks)} "
                  f"chunks are in {out}/shards; run the same command to sample the rest",
                  file=sys.stderr, flush=True)
        raise
    except OSError as e:  # a full or lost disk: the finished chunks stay
        needed = batch_size * int(np.prod(image_shape))  # bytes of one chunk
        fsdp.fail(run.write_error(shard_path(out, k), e, needed), rank, 4)
    finally:
        # main() may run again in this process (toy.py).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rate = timer.report(mine, rank, world_size) if timer.sync or rank == 0 else None
    fsdp.barrier()  # every chunk is on disk
    error = None
    if rank == 0:
        with open(os.path.join(out, "metrics.jsonl"), "a") as fh:  # for benchmarks/bench.py
            fh.write(json.dumps({"sampled": rate, "world_size": world_size}) + "\n")
        error = assemble(out, len(chunks), len(labels), image_shape)
        if error is None and not keep_shards:
            shutil.rmtree(os.path.join(out, "shards"))
    fsdp.stop_if(error, rank, code=4)
    return out_npz


# ------------------------------------------------------------------------------------------------
# The command line: checks, the model and its AE, the protocol in words
# ------------------------------------------------------------------------------------------------

def run_config(args, ckpt, device, sampler, steps, cfg_scale):
    """What determines the images: a rerun into the same --out must match it to reuse shards or
    samples."""
    return dict(ckpt=ckpt.source, step=ckpt.step, weights=args.weights, ae=args.ae or ckpt.ae,
                num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed,
                classes=args.classes, labels=args.labels,
                sampler=sampler, steps=steps, cfg_scale=cfg_scale,
                guidance_interval=args.guidance_interval, c_prime=args.c_prime,
                bf16=args.bf16, ae_bf16=args.ae_bf16, device=device.type)


def check_run_config(out, config):
    path = os.path.join(out, "sample_config.json")
    if os.path.isfile(path):
        with open(path) as fh:
            old = json.load(fh)
        old.setdefault("labels", "random")  # folders from before --labels
        diff = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        done = (glob.glob(os.path.join(out, "shards", "chunk_*.npz"))
                or os.path.isfile(os.path.join(out, "samples.npz")))
        if diff and done:
            raise ValueError(f"--out {out} holds samples of another configuration "
                             f"(old, new: {diff}); pass another --out or delete it")
    os.makedirs(os.path.join(out, "shards"), exist_ok=True)
    run.atomic_write(path, lambda fh: fh.write(json.dumps(config, indent=2).encode()))


def check_cli(args):
    """What needs no checkpoint: checked before loading one (a 2B model takes a while)."""
    interval = args.guidance_interval
    if interval is not None and not interval[0] < interval[1]:
        raise ValueError(f"--guidance-interval {interval} must be 0 <= lo < hi <= 1 (noise level)")
    if args.batch_size < 1 or args.num_samples < 0 or args.per_class < 1:
        raise ValueError(f"--batch-size {args.batch_size}, --num-samples {args.num_samples} and "
                         f"--per-class {args.per_class} must be positive")
    if (args.fid or args.search_cfg) and not args.num_samples:
        raise ValueError("--fid and --search-cfg need --num-samples "
                         "(they evaluate samples, not the grid)")
    if args.search_cfg and not args.fid:
        raise ValueError("--search-cfg needs --fid REF: it minimises FID against REF")
    if args.search_cfg and not 0 <= args.search_cfg[0] <= args.search_cfg[1]:
        raise ValueError(f"--search-cfg {args.search_cfg} must be 0 <= LO <= HI")
    if args.fid and not os.path.exists(args.fid):
        raise ValueError(f"--fid {args.fid}: reference not found "
                         "(a reference batch or statistics .npz, or a folder)")
    run.check_out(args.out)


def load(args, device):
    """(the diffusion model, its AE) as checkpoints.Loaded. The AE is --ae, or the one the
    checkpoint trained on or the release was published with; its latent must have the checkpoint's
    channels; the latent scale is the checkpoint's (the one it trained with)."""
    # Speed runs: the AE gives the latent shape and the scaling factor.
    if args.ckpt.startswith("random:"):
        if not args.ae:
            raise ValueError("--ckpt random:<model> needs --ae (its latent shape)")
        ae = checkpoints.load_ae(args.ae, device)
        ckpt = checkpoints.load_diffusion(args.ckpt, device, ae=ae.model,
                                          resolution=args.resolution, num_classes=args.num_classes)
        ckpt.scaling_factor = ae.scaling_factor or 1.0
        return ckpt, ae
    ckpt = checkpoints.load_diffusion(args.ckpt, device, args.weights)
    if args.model is not None and args.model != ckpt.name:
        what = ckpt.release.name if ckpt.release else "a checkpoint"
        raise ValueError(f"--ckpt {args.ckpt} is {what} of {ckpt.name}, not --model {args.model}")
    spec = args.ae or ckpt.ae
    if spec is None:
        raise ValueError(f"{args.ckpt} records no AE weights: "
                         f"pass --ae (the folder or hub id of {ckpt.ae_name})")
    # random:NAME is rebuilt as training built it (seeded).
    option = "--ae" if args.ae else "the checkpoint's AE"
    ae = checkpoints.load_ae(spec, device, option=option)
    if ae.model.c != ckpt.latent_shape[0]:
        raise ValueError(f"AE {ae.name} has c={ae.model.c} latent channels, the diffusion model "
                         f"was trained on c={ckpt.latent_shape[0]} ({ckpt.ae_name})")
    if ckpt.ae_name and ae.name != ckpt.ae_name:
        paired = f"released with {ckpt.ae}" if ckpt.release else f"trained on {ckpt.ae_name}"
        print(f"note: --ae {args.ae} ({ae.name}) replaces the AE the model was {paired}",
              file=sys.stderr)
    return ckpt, ae


def check_args(args, ckpt, objective):
    """What depends on the checkpoint -> (sampler, steps, cfg_scale): the objective's protocol
    sampler unless given, the release's published CFG scale for --cfg-scale release; c' and the
    classes in range."""
    c, num_classes = ckpt.latent_shape[0], ckpt.num_classes
    try:
        sampler, steps = diffusion.resolve_sampler(objective, args.sampler, args.steps)
    except ValueError as e:
        raise ValueError(f"--sampler {args.sampler} --steps {args.steps} does not fit {ckpt.name} "
                         f"({models.MODELS[ckpt.name].objective}): {e}") from e
    cfg_scale = args.cfg_scale
    if cfg_scale == "release":
        if ckpt.release is None:
            raise ValueError(f"--cfg-scale release: {args.ckpt} is not a release; pass a number")
        if ckpt.release.cfg_scale is None:
            raise ValueError(f"--cfg-scale release: the authors published no CFG scale "
                             f"for {ckpt.release.name}; "
                             f"pass a number, or find one with --search-cfg LO HI")
        cfg_scale = ckpt.release.cfg_scale
    if args.c_prime is not None and not 1 <= args.c_prime <= c:
        raise ValueError(f"--c-prime {args.c_prime} is outside [1, c={c}]")
    classes = args.classes
    if classes is not None and (not classes or min(classes) < 0 or max(classes) >= num_classes):
        raise ValueError(f"--classes {classes} must lie in [0, {num_classes}) "
                         f"(the model's classes)")
    n_classes = len(classes or range(num_classes))
    if args.labels == "balanced" and args.num_samples % n_classes:
        raise ValueError(f"--labels balanced: --num-samples {args.num_samples} "
                         f"is not a multiple of the {n_classes} classes")
    return sampler, steps, cfg_scale


def paper_number(release, key, cfg_scale):
    """' (paper Table 4: 2.18)' beside one of our numbers, where the release has the paper's for
    this setting."""
    # The first: the paper's, if any.
    paper = release.reported[0] if release and release.reported else None
    guided = cfg_scale not in (None, 1.0)
    field = {"fid": "gfid_cfg" if guided else "gfid", "is_mean": "inception_score",
             "precision": "precision", "recall": "recall"}[key]
    value = getattr(paper, field, None) if paper else None
    # IS, precision and recall: the paper's are without CFG.
    if value is None or (guided and key != "fid"):
        return ""
    return f" ({paper.source}: {value:g})"


def protocol(args, ckpt, objective, ae, sampler, steps, cfg_scale, bf16, ae_bf16):
    """The header line: everything that decides the numbers, in words."""
    release = ckpt.release
    published = ""
    if release is not None:
        published = (f"; the authors' scale {release.cfg_scale:g}" if release.cfg_scale
                     else "; the authors' scale: not published")
    cfg = "off" if cfg_scale == 1.0 else f"{cfg_scale:g}"
    interval = ("off" if args.guidance_interval is None
                else f"[{args.guidance_interval[0]:g}, {args.guidance_interval[1]:g}]")
    classes = (f"{len(args.classes)} given classes" if args.classes
               else f"{ckpt.num_classes} classes")
    c = ckpt.latent_shape[0]
    return (f"{release.name if release else ckpt.name} (step {ckpt.step}) + {ae.name}: "
            f"{objective.describe(sampler, steps)}; "
            f"CFG {cfg}{published}, guidance interval {interval}; "
            f"c' {args.c_prime or c}/{c}; labels {args.labels} over {classes}, seed {args.seed}; "
            f"denoiser {'bf16' if bf16 else 'fp32'}, AE decode {'bf16' if ae_bf16 else 'fp32'}; "
            f"latent scale {ckpt.scaling_factor:.4g}")


def report(metrics, release, cfg_scale):
    """The final lines: ADM's names, ours beside the paper's where the release has them."""
    lines = [f"gFID {metrics['fid']:.4f}{paper_number(release, 'fid', cfg_scale)}"]
    if metrics.get("sfid") is not None:
        lines.append(f"sFID {metrics['sfid']:.4f}")
    lines.append(f"Inception Score {metrics['is_mean']:.2f} +- {metrics['is_std']:.2f}"
                 f"{paper_number(release, 'is_mean', cfg_scale)}")
    for key in ("precision", "recall"):
        if metrics.get(key) is not None:
            lines.append(f"{key.capitalize()} {metrics[key]:.4f}"
                         f"{paper_number(release, key, cfg_scale)}")
    return "\n".join(lines) + f"\n({metrics['n_samples']} samples)"


def main(args):
    # Setup: checks, the model and its AE, the folder's lock, all before any sampling.
    rank, world_size, device = fsdp.setup()
    # fp32 denoiser and decoder by default on every device: DC-Gen's evaluation protocol
    # (cli.precision).
    bf16, precision = cli.precision(device, args.bf16, evaluation=True)
    ae_bf16, ae_precision = cli.precision(device, args.ae_bf16, evaluation=True, flag="--ae-bf16")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    error = None
    try:
        check_cli(args)
        ckpt, ae = load(args, device)
        objective = diffusion.make_objective(models.MODELS[ckpt.name].objective)
        sampler, steps, cfg_scale = check_args(args, ckpt, objective)
        # One run per folder, as the trainers
        # (the kernel drops the lock however this process ends).
        if rank == 0:
            error = run.lock_run(args.out)
        config = run_config(args, ckpt, device, sampler, steps, cfg_scale)
        if args.search_cfg:
            # The scales vary; what the reference and features are decides the numbers too.
            config = dict(config, cfg_scale=None, fid=os.path.abspath(args.fid),
                          is_protocol=args.is_protocol, inception_weights=args.inception_weights)
            searched = cfg_search.read_search(args.out, config)
        elif args.num_samples and rank == 0 and not error:
            check_run_config(args.out, config)
    except (ValueError, FileNotFoundError) as e:
        error = str(e)
    fsdp.stop_if(error, rank)  # one line, exit status 2, before any sampling
    _, h, w = ckpt.latent_shape
    image_shape = (h * ae.model.f, w * ae.model.f, 3)
    if rank == 0:
        print(f"{protocol(args, ckpt, objective, ae, sampler, steps, cfg_scale, bf16, ae_bf16)}"
              f" -> {image_shape[0]}x{image_shape[1]}; {world_size} rank(s) on {device}",
              flush=True)
        print(f"precision: denoiser {precision}, AE decode {ae_precision}; {cli.machine(device)}",
              flush=True)
    timer = evaluation.Timer(device, args.profile)

    def generate(y, k, cfg_scale=cfg_scale):  # chunk k of the protocol, every setting by name
        return evaluation.generate(ckpt.model, objective, ae.model, ckpt.scaling_factor,
                                   ckpt.latent_shape, y, evaluation.chunk_seed(args.seed, k),
                                   sampler=sampler, steps=steps,
                                   cfg_scale=cfg_scale, guidance_interval=args.guidance_interval,
                                   c_prime=args.c_prime, bf16=bf16, ae_bf16=ae_bf16, timer=timer)

    if not args.num_samples:  # a grid: rows = classes, --per-class columns
        classes = args.classes or (DEMO_CLASSES if ckpt.num_classes == 1000 else
                                   list(range(min(ckpt.num_classes, 16))))  # every class, up to 16
        images = None
        if rank == 0:
            images = grid(generate, classes, args.per_class, args.batch_size, args.out)
            timer.report(len(images), rank, 1)
        run.release_locks()
        fsdp.cleanup()  # barriers first: no rank tears down while another still samples
        return {"grid": os.path.join(args.out, "grid.png"), "images": images}

    # The evaluation: N labels (random: DC-Gen's; balanced: N / K per class), then FID, IS,
    # precision and recall.
    classes = args.classes or list(range(ckpt.num_classes))
    labels = evaluation.sample_labels(args.num_samples, args.seed, classes, args.labels)  # (N,)
    inception = fid.load_inception(args.inception_weights, device) if args.fid else None
    # Every scale streams its features (no image is kept), the same labels and noise.
    if args.search_cfg:
        reference = fid.load_reference(args.fid, inception, args.fid_batch_size, device)

        def metrics_at(scale):
            return evaluation.generation_metrics(
                lambda y, k: generate(y, k, cfg_scale=scale), labels, args.batch_size,
                inception, reference, rank, world_size,
                is_protocol=args.is_protocol, progress=rank == 0)
        best, results = cfg_search.search_cfg(metrics_at, *args.search_cfg, args.out, config,
                                              searched, rank)
        run.release_locks()
        fsdp.cleanup()
        return {"best": best, "results": results}
    out_npz = evaluate(generate, labels, args.batch_size, args.out, image_shape, rank, world_size,
                       timer, args.keep_shards)
    metrics = None
    # Every rank computes Inception features of its share of the .npz (fid.py shards by rank).
    if args.fid:
        # The other ranks wait for the file only if they read it (no NCCL timeout otherwise).
        fsdp.barrier()
        metrics = fid.compute_metrics(out_npz, args.fid, model=inception,
                                      batch_size=args.fid_batch_size, device=device, num_workers=0,
                                      is_protocol=args.is_protocol, progress=rank == 0)
        if rank == 0:
            print(report(metrics, ckpt.release, cfg_scale))
            record = dict(metrics, ref=args.fid, inception_weights=args.inception_weights,
                          cfg_scale=cfg_scale, labels=args.labels)
            run.atomic_write(os.path.join(args.out, "metrics.json"),
                             lambda fh: fh.write(json.dumps(record, indent=2).encode()))
    run.release_locks()
    fsdp.cleanup()
    return {"npz": out_npz, "metrics": metrics}


def cfg_scale_arg(text):
    """--cfg-scale: a finite number >= 0, or `release` (the authors' published scale of a
    release)."""
    return text if text == "release" else cli.real(0)(text)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--ckpt", required=True,
        help="required: a train_diffusion.py checkpoint or run folder, a released DC-Gen model "
        "(its name, hub id or folder), or random:<model> for speed runs")
    add("--ae", default=None,
        help="the AE (default: the one the checkpoint trained on or the release's): "
        "a train_ae.py .pt / folder, a diffusers or DC-Gen folder, a hub id, or random:NAME")
    add("--model", default=None, choices=sorted(models.MODELS),
        help="refuse a checkpoint of another model (default: accept any)")
    add("--weights", choices=["ema", "model"], default="ema",
        help="which weights of a train_diffusion.py checkpoint")
    add("--out", default="runs/samples",
        help="folder for grid.png, or the shards, samples.npz and metrics.json")
    add("--num-samples", type=int, default=0,
        help="0: a grid; e.g. 50000: OUT/samples.npz for FID")
    add("--classes", type=int, nargs="+", default=None,
        help="grid rows; with --num-samples the labels are drawn from these "
        "(default: all classes, the DC-AE protocol)")
    add("--labels", choices=evaluation.LABELS, default="random",
        help="random: uniform draws (DC-Gen's protocol, the paper's); "
        "balanced: N / classes of each class (RAE, REPA-E)")
    add("--per-class", type=int, default=8, help="grid columns")
    add("--batch-size", type=int, default=evaluation.BATCH,
        help="samples per chunk and per forward pass (x2 with CFG); "
        "keep it fixed to reproduce or resume a run")
    samplers = sorted({name for objective in diffusion.OBJECTIVES.values()
                       for name in objective.samplers})
    add("--sampler", default=None, choices=samplers,
        help="default: the paper's protocol: ddpm (DiT), dpm-solver (UViT), dopri5 (SiT/USiT)")
    add("--steps", type=int, default=None,
        help="default: 250 DDPM, 30 DPM-Solver, 250 euler/heun/euler_maruyama; dopri5 is adaptive")
    add("--cfg-scale", type=cfg_scale_arg, default=1.0,
        help="1.0 = no guidance (the paper's headline numbers); "
        "`release`: the authors' published scale of a release")
    add("--guidance-interval", type=cli.real(0, 1), nargs=2, default=None, metavar=("LO", "HI"),
        help="guide only at noise levels in [LO, HI] (1 = pure noise), e.g. 0.2 0.8 "
        "(default: every step)")
    add("--search-cfg", type=cli.real(0), nargs=2, default=None, metavar=("LO", "HI"),
        help="find the CFG scale in [LO, HI] that minimises FID over --num-samples against --fid, "
        "as DC-Gen searches (default: no search)")
    add("--c-prime", type=int, default=None,
        help="generate only the first c' latent channels (default: all c)")
    add("--seed", type=cli.integer(*cli.SEED), default=0,
        help="labels and the noise of every chunk")
    add("--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast for the denoiser, faster (default: fp32, the evaluation protocol)")
    add("--ae-bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast for the AE decode (default: fp32, the evaluation protocol)")
    add("--profile", action="store_true",
        help="synchronise and report denoise / decode / copy / write")
    add("--keep-shards", action="store_true", help="keep OUT/shards after assembling samples.npz")
    add("--fid", default=None, metavar="REF",
        help="run fid.py's metrics on the samples against REF, a reference batch or statistics "
        ".npz or an image folder (default: no FID)")
    add("--is-protocol", choices=["adm", "torch-fidelity"], default="adm",
        help="Inception Score as ADM's evaluator computes it, or as torch-fidelity does "
        "(DC-Gen's: the paper's IS numbers)")
    add("--inception-weights", default=None,
        help="fid.py's --inception-weights: a .pth, 'random' for smoke runs "
        "(default: the torch hub cache)")
    add("--fid-batch-size", type=int, default=50,
        help="images per Inception forward pass, per rank")
    add("--resolution", type=int, default=512, help="random:<model> only")
    add("--num-classes", type=int, default=1000, help="random:<model> only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
