"""Benchmarks whose numbers the README and docs/benchmarks.md quote (paper Table 4's throughput and
Fig. 1a's fewer tokens; the parity and speed of our AE and FID against diffusers and pytorch-fid),
one subcommand each. Speed lives here, never in tests; every command prints the machine, the
precision and the settings. It runs the project's files from the folder above.

    # fwd+bwd of one small USiT on both 512 px latents: Table 4's 4x
    python benchmarks/bench.py tokens --threads 1
    # training steps (AdamW): images/s, peak memory, MFU on GPU
    python benchmarks/bench.py train
    # parity and speed vs diffusers, bf16
    python benchmarks/bench.py ae --model dc-ae-f32c128-1.5 --image-size 256
    # Inception features vs pytorch-fid, FID by eigenvalues vs sqrtm
    python benchmarks/bench.py fid
    # where a training step's time goes
    python benchmarks/bench.py profile --device cuda --model USiT-2B --batch 128
    # Table 4 on one H100 with the real scripts -> docs/benchmarks.md
    python benchmarks/bench.py gpu
    # the same suite on CPU with tiny models: checks the plumbing
    python benchmarks/bench.py gpu --tiny

diffusers and pytorch-fid are not dependencies: `ae` and `fid` compare against them when they are
installed (a scratch environment: pip install diffusers pytorch-fid) and time ours alone otherwise.
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's files sit one folder up
import ae as ae_lib  # noqa: E402
import batches  # noqa: E402
import cli  # noqa: E402
import data  # noqa: E402
import diffusion  # noqa: E402
import fid  # noqa: E402
import formats  # noqa: E402
import fsdp  # noqa: E402
from benchmarks import gpu_suite  # noqa: E402  (the gpu subcommand)
import inception  # noqa: E402
import models  # noqa: E402
import runlog  # noqa: E402
import train_diffusion  # noqa: E402

SHAPES = {"f64c128": (128, 8), "f32c32": (32, 16)}  # the two 512 px latents: name -> (c, side)
USIT = [name for name, entry in models.MODELS.items()
        if entry.arch is models.UViT and entry.objective == "flow"]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ------------------------------------------------------------------------------------------------
# tokens / train: the backbone on both latents
# ------------------------------------------------------------------------------------------------

def small_usit(name, c, side, device, width=256, depth=6, heads=4):
    """The registry model, or (for USiT-tiny) a CPU-sized USiT
    wide enough that matmuls, not Python, dominate."""
    kw = (dict(hidden_size=width, depth=depth, num_heads=heads)
          if models.MODELS[name].recipe is models.TINY else {})
    torch.manual_seed(0)
    return models.create_model(name, in_channels=c, input_size=side, device=device, **kw)


def tokens(args):
    """Forward + backward of the flow loss on both latents,
    interleaved round by round (load hits both alike)."""
    device = torch.device(args.device)
    args.bf16, precision = cli.precision(device, args.bf16)
    objective = diffusion.Flow()
    runs, rates = {}, {name: [] for name in SHAPES}
    for name, (c, side) in SHAPES.items():
        model = small_usit(args.model, c, side, device)
        x0, y = (torch.randn(args.batch, c, side, side, device=device),
                 torch.randint(0, 1000, (args.batch,), device=device))
        runs[name] = (model, x0, y)
        print(f"{name}: latent {side}x{side}x{c}, {model.num_tokens} tokens, "
              f"{models.count_params(model) / 1e6:.2f}M params, "
              f"{3 * model.flops_per_image() / 1e9:.2f} GFLOP per training image")

    def step(model, x0, y):
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            loss, _ = objective.loss(model, x0, y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    for model, x0, y in runs.values():
        for _ in range(args.warmup):
            step(model, x0, y)
    for _ in range(args.rounds):
        for name, (model, x0, y) in runs.items():
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(model, x0, y)
            synchronize(device)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{cli.machine(device)}, batch {args.batch}, {precision}, "
          f"median of {args.rounds} rounds")
    for name in SHAPES:
        print(f"{name}: {med[name]:8.2f} images/s  "
              f"(rounds: {', '.join(f'{r:.2f}' for r in rates[name])})")
    flop_ratio = runs["f32c32"][0].flops_per_image() / runs["f64c128"][0].flops_per_image()
    print(f"speed-up f64c128 / f32c32: {med['f64c128'] / med['f32c32']:.2f}x "
          f"(FLOP ratio {flop_ratio:.2f}x)")


def train(args):
    """Full training steps (autocast forward, backward, AdamW) of backbones on both latents and
    of the AE."""
    device = torch.device(args.device)
    args.bf16, precision = cli.precision(device, args.bf16)
    peak = next((v for k, v in runlog.PEAK_BF16_FLOPS.items() if k in cli.machine(device)), None)
    print(f"{cli.machine(device)}, {precision}, batch {args.batch}, median of {args.steps}")
    print("| model | latent | params | images/s | peak mem (GiB) | MFU |\n"
          "|---|---|---:|---:|---:|---:|")
    for name in args.models:
        rate = {}
        for shape, (c, side) in SHAPES.items():
            model = small_usit(name, c, side, device)
            objective = diffusion.make_objective(models.MODELS[name].objective)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
            fwd = torch.compile(model) if args.compile else model
            x0, y = (torch.randn(args.batch, c, side, side, device=device),
                     torch.randint(0, 1000, (args.batch,), device=device))

            def step():  # train_diffusion.py's loss of one micro-batch (Eq. 2), AdamW
                loss, _ = train_diffusion.step_loss(
                    objective, fwd, x0, y, ae_lib.channel_candidates(c), "replace", args.bf16)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            for _ in range(args.warmup):
                step()
            times = []
            for _ in range(args.steps):
                synchronize(device)
                t0 = time.perf_counter()
                step()
                synchronize(device)
                times.append(time.perf_counter() - t0)
            rate[shape] = args.batch / statistics.median(times)
            mfu = f"{3 * model.flops_per_image() * rate[shape] / peak:.1%}" if peak else "-"
            print(f"| {name} | {side}x{side}x{c} ({shape}) | "
                  f"{models.count_params(model) / 1e6:.1f}M | "
                  f"{rate[shape]:.1f} | {runlog.peak_memory_gib(device):.2f} | {mfu} |",
                  flush=True)
        print(f"| {name} | f64c128 / f32c32 throughput ratio | | "
              f"**{rate['f64c128'] / rate['f32c32']:.2f}x** | | |")
    # FSDP2 state per rank: fp32 params, grads, AdamW moments, EMA = 20 bytes
    for name in ("USiT-2B", "USiT-3B"):
        n = models.count_params(models.create_model(name, in_channels=128, input_size=8,
                                                    device="meta"))
        print(f"FSDP2 state of {name} ({n / 1e9:.2f}B params): "
              f"{20 * n / 2 ** 30:.1f} GiB in one process, "
              f"{20 * n / 2 ** 30 / 8:.1f} GiB per GPU on 8 GPUs (+ activations)")


# ------------------------------------------------------------------------------------------------
# ae: parity and speed against diffusers, and what bf16 changes
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def ae(args):
    torch.manual_seed(0)
    ours = ae_lib.build_ae(args.model).eval()
    for m in ours.modules():  # non-trivial norm statistics so that parity is a real check
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, (ae_lib.RMSNorm2d, torch.nn.BatchNorm2d)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    run_ours = lambda: ours.decode(ours.encode(x))  # noqa: E731
    n = sum(p.numel() for p in ours.parameters())
    print(f"{args.model}: {n / 1e6:.2f}M params, x {tuple(x.shape)}, {cli.machine(x.device)}")
    try:
        from diffusers import AutoencoderDC
    except ImportError:
        AutoencoderDC = None
        print("diffusers is not installed: timing ours only "
              "(see the docstring for a scratch environment)")
    if AutoencoderDC is not None:
        config = formats.config_to_diffusers(ae_lib.AE_CONFIGS[args.model])
        theirs = AutoencoderDC(**config).eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)  # same key names: no renaming
        z_ours, z_theirs = ours.encode(x), theirs.encode(x).latent
        y_ours, y_theirs = ours.decode(z_ours), theirs.decode(z_ours).sample
        print(f"parity: max|z - z_diffusers| = {(z_ours - z_theirs).abs().max():.3e}, "
              f"max|x_rec - x_rec_diffusers| = {(y_ours - y_theirs).abs().max():.3e}")
        run_theirs = lambda: theirs.decode(theirs.encode(x).latent).sample  # noqa: E731
        run_ours(), run_theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # alternate so that drift hits both alike
            t_ours.append(best_time(run_ours, 1))
            t_theirs.append(best_time(run_theirs, 1))
        print(f"encode+decode, best of {args.repeats}: ours {min(t_ours):.3f}s, "
              f"diffusers {min(t_theirs):.3f}s, "
              f"speed ratio diffusers/ours = {min(t_theirs) / min(t_ours):.2f}x")
    else:
        run_ours()
        print(f"encode+decode, best of {args.repeats}: "
              f"ours {best_time(run_ours, args.repeats):.3f}s")
    # What --ae-bf16 changes (sample.py, the latent cache, eval_ae.py):
    # bf16 autocast against fp32, same weights.
    z = ours.encode(x)
    y = ours.decode(z).clamp(-1, 1)
    with torch.autocast("cpu", torch.bfloat16):
        z_bf16, y_bf16 = ours.encode(x).float(), ours.decode(z).float().clamp(-1, 1)
    psnr = 10 * torch.log10(4 / (y_bf16 - y).pow(2).mean())  # images in [-1, 1]: peak-to-peak 2
    print(f"bf16 autocast vs fp32 (these weights): "
          f"decode PSNR {psnr:.1f} dB (outputs std {y.std():.3f}), "
          f"latent relative error {(z_bf16 - z).norm() / z.norm():.2e}, "
          f"finite={bool(torch.isfinite(y_bf16).all())}")
    if args.compile:
        torch.compile(ours.decoder, fullgraph=True)(z)
        print("torch.compile(decoder, fullgraph=True): ok (no graph breaks)")


# ------------------------------------------------------------------------------------------------
# fid: features against pytorch-fid, FID by eigenvalues against sqrtm
# ------------------------------------------------------------------------------------------------

def fid_bench(args):
    try:
        import pytorch_fid.fid_score
        import pytorch_fid.inception
    except ImportError:
        pytorch_fid = None
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = inception.load_inception("random").state_dict()
    ours = inception.load_inception(state)
    print(f"{cli.machine(torch.device('cpu'))}, {args.num_images} images of {args.image_size}^2, "
          f"batch {args.batch_size}, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)  # smooth random images: upsampled noise
        coarse = torch.from_numpy(
            rng.uniform(0, 255, (args.num_images, 3, 8, 8)).astype(np.float32))
        x = torch.nn.functional.interpolate(coarse, size=(args.image_size,) * 2,
                                            mode="bicubic").clamp(0, 255)
        # (N, H, W, 3)
        for i, a in enumerate(x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
            Image.fromarray(a).save(os.path.join(folder, f"{i:05d}.png"))
        files = data.list_images(folder)
        images = batches.Folder(folder, files, num_workers=1)  # fid.py's reader of a folder
        run_ours = lambda: fid.features_from_images(  # noqa
            ours, (x for _, x, _ in images.batches(0, len(files), args.batch_size)),
            args.batch_size)[0].numpy()
        run_ours()  # warm-up: oneDNN builds its kernels for each new shape
        t_ours = best_time(run_ours, args.repeats)
        print(f"features  fid.py:      {t_ours:7.2f} s")
        if pytorch_fid is not None:
            # same weights, offline
            pytorch_fid.inception.load_state_dict_from_url = lambda *a, **k: state
            theirs = pytorch_fid.inception.InceptionV3([3], use_fid_inception=True).eval()
            run_theirs = lambda: pytorch_fid.fid_score.get_activations(  # noqa: E731
                files, theirs, args.batch_size, 2048, "cpu", 1)
            run_theirs()
            t_theirs = best_time(run_theirs, args.repeats)
            print(f"features  pytorch-fid: {t_theirs:7.2f} s "
                  f"-> fid.py is {t_theirs / t_ours:.2f}x as fast; "
                  f"max |feature difference| {np.abs(run_ours() - run_theirs()).max():.2e}")
    stats = []
    for shift in (0.0, 0.5):
        a = rng.standard_normal((5000, 2048)) @ rng.standard_normal((2048, 2048)) / 45 + shift
        stats += [a.mean(0), np.cov(a, rowvar=False)]

    def sqrtm_fid():  # the textbook formula, as pytorch-fid computes it
        import scipy.linalg
        covmean = scipy.linalg.sqrtm(stats[1] @ stats[3]).real
        return float((stats[0] - stats[2]) @ (stats[0] - stats[2])
                     + np.trace(stats[1] + stats[3] - 2 * covmean))
    t_eig, t_sqrtm = (best_time(lambda: fid.frechet_distance(*stats), args.repeats),
                      best_time(sqrtm_fid, args.repeats))
    f_eig, f_sqrtm = fid.frechet_distance(*stats), sqrtm_fid()
    print(f"FID d=2048 eigenvalues: {t_eig:6.2f} s, sqrtm: {t_sqrtm:6.2f} s "
          f"-> {t_sqrtm / t_eig:.1f}x faster; "
          f"relative difference {abs(f_eig - f_sqrtm) / f_sqrtm:.1e}")


# ------------------------------------------------------------------------------------------------
# profile: where a training step's time goes
# ------------------------------------------------------------------------------------------------

def profile(args):
    """Where a training step's time goes (train_diffusion.py's loss function and its step's clip,
    AdamW, EMA; compiled on CUDA): matmul, attention, elementwise/norms, optimizer + EMA, and the
    host (data, Python, syncs: wall time the device is idle)."""
    from torch.profiler import ProfilerActivity
    device = torch.device(args.device)
    args.bf16, precision = cli.precision(device, args.bf16)
    print(f"{cli.machine(device)}, {precision}, batch {args.batch}", file=sys.stderr)
    c, side = SHAPES[args.latent]
    model = small_usit(args.model, c, side, device)
    ema = small_usit(args.model, c, side, device).requires_grad_(False)
    opt = fsdp.adamw(model, 1e-4, 0.0, (0.99, 0.99))
    objective, fwd = diffusion.Flow(), torch.compile(model) if device.type == "cuda" else model
    x0, y = (torch.randn(args.batch, c, side, side, device=device),
             torch.randint(0, 1000, (args.batch,), device=device))

    def step(i):  # train_diffusion.py's step: its loss function, then clip, AdamW, EMA
        loss, _ = train_diffusion.step_loss(objective, fwd, x0, y, ae_lib.channel_candidates(c),
                                            "replace", args.bf16)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        fsdp.ema_update(ema, model, 0.9999, i + 1, 2000)
    for i in range(3):
        step(i)
    synchronize(device)
    cuda = device.type == "cuda"
    with torch.profiler.profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        synchronize(device)
        wall = time.perf_counter() - t0
    kinds = {"matmul": r"gemm|cutlass|xmma|nvjet|cublas|aten::(mm|addmm|bmm|linear)$",
             "attention": r"flash|fmha|attention|scaled_dot_product",
             "optimizer + EMA": r"adam|multi_tensor|foreach|lerp"}
    split = {k: 0.0 for k in [*kinds, "elementwise, norms, other"]}
    for e in prof.key_averages():
        # seconds per step
        t = (e.self_device_time_total if cuda else e.self_cpu_time_total) / 1e6 / args.steps
        if ((cuda and e.self_device_time_total == 0)
                or (not cuda and not e.key.startswith("aten::"))):
            continue
        kind = next((k for k, pattern in kinds.items() if re.search(pattern, e.key, re.I)),
                    "elementwise, norms, other")
        split[kind] += t
    split["host: data, Python, syncs (device idle)"] = max(
        wall / args.steps - sum(split.values()), 0.0)
    total = sum(split.values())
    shares = {k: round(100 * v / total, 1) for k, v in split.items()}
    print(json.dumps(shares))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(shares, fh)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tokens", help="fwd+bwd of a USiT on both 512 px latents")
    t.add_argument("--model", default="USiT-tiny", choices=USIT,
                   help="USiT-tiny is widened to 256 x 6 layers")
    t.add_argument("--batch", type=int, default=8, help="images per step")
    t.add_argument("--steps", type=int, default=3, help="steps per timed round")
    t.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds (the median is reported)")
    t.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on with CUDA, fp32 on CPU: cli.precision)")
    r = sub.add_parser("train", help="training steps with AdamW")
    r.add_argument("--device", default="cpu", help="cpu or cuda")
    r.add_argument("--models", nargs="+", default=["USiT-tiny"], choices=sorted(models.MODELS),
                   help="backbones")
    r.add_argument("--batch", type=int, default=8, help="images per step")
    r.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    r.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    r.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    r.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on with CUDA, fp32 on CPU: cli.precision)")
    r.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    a = sub.add_parser("ae", help="AE parity and speed vs diffusers, bf16 vs fp32")
    a.add_argument("--model", choices=sorted(ae_lib.AE_CONFIGS), default="dc-ae-f32c128-1.5",
                   help="registry AE")
    a.add_argument("--image-size", type=int, default=256, help="image side")
    a.add_argument("--batch", type=int, default=1, help="images")
    a.add_argument("--repeats", type=int, default=3, help="timed repeats (the best is reported)")
    a.add_argument("--compile", action="store_true",
                   help="also check torch.compile(fullgraph=True)")
    f = sub.add_parser("fid", help="Inception features and FID")
    f.add_argument("--num-images", type=int, default=100, help="PNG images to read")
    f.add_argument("--image-size", type=int, default=256, help="their side")
    f.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    f.add_argument("--repeats", type=int, default=3, help="timed repeats (the best is reported)")
    q = sub.add_parser("profile", help="where a training step's time goes")
    q.add_argument("--device", default="cpu", help="cpu or cuda")
    q.add_argument("--model", default="USiT-tiny", choices=USIT,
                   help="USiT-tiny is widened to 256 x 6 layers")
    q.add_argument("--latent", choices=sorted(SHAPES), default="f64c128", help="the 512 px latent")
    q.add_argument("--batch", type=int, default=8, help="images per step")
    q.add_argument("--steps", type=int, default=5, help="profiled steps")
    q.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on with CUDA, fp32 on CPU: cli.precision)")
    q.add_argument("--json", default=None,
                   help="also write the shares to this file (default: print only)")
    g = sub.add_parser("gpu", help="the real scripts on one GPU -> docs/benchmarks.md")
    g.add_argument("--tiny", action="store_true",
                   help="tiny models on CPU: check the plumbing, measure nothing")
    g.add_argument("--report", default=None,
                   help="the Markdown report (default: its section of docs/benchmarks.md; "
                   "runs/bench_gpu_tiny.md with --tiny)")
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return args


if __name__ == "__main__":
    args = parse_args()
    {"tokens": tokens, "train": train, "ae": ae, "fid": fid_bench, "profile": profile,
     "gpu": gpu_suite.gpu}[args.command](args)
