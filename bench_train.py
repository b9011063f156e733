"""Training-step benchmark (paper Table 4's throughput column, Fig. 1a): images/s, peak memory and, on GPU, MFU.

Times full training steps (bf16 autocast forward, backward, AdamW step) of
  - USiT backbones on the two 512 px latents: DC-AE(-1.5)-f64c128 -> 8x8x128 (64 tokens) and DC-AE-f32c32 ->
    16x16x32 (256 tokens), and their throughput ratio (paper: 450 / 112 images/s for USiT-2B on an H100);
  - the autoencoder (masked reconstruction, Eq. 1, L1 loss) at its training resolution.
It also prints the FSDP2 memory budget per GPU (fp32 params + grads + AdamW moments + EMA, divided by N ranks).

    python bench_train.py                                        # CPU: tiny models, ~1-2 minutes
    python bench_train.py --device cuda --models USiT-H USiT-2B --batch 64 --ae dc-ae-f64c128-1.5 --ae-res 256
"""
import argparse
import resource
import statistics
import time

import torch

import ae as ae_lib
import diffusion
import models

SHAPES = {"f64c128": (128, 8), "f32c32": (32, 16)}  # 512 px latents: name -> (c, side)
PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


def peak_memory_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # process peak RSS (KiB -> GiB)


def time_steps(step, args, device):
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_backbone(name, c, side, args, device):
    kw = dict(hidden_size=256, depth=6, num_heads=4) if name.endswith("-tiny") else {}  # a CPU-sized USiT
    torch.manual_seed(0)
    model = models.create_model(name, in_channels=c, input_size=side, device=device, **kw)
    objective = diffusion.make_objective(models.MODELS[name].objective)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if args.compile else model
    x0 = torch.randn(args.batch, c, side, side, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    candidates = list(range(16, c + 1, 4))

    def step():
        x, yy, cp = diffusion.augment_batch(x0, y, candidates, "replace")  # Eq. 2: per-sample masks, same cost
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            loss, _ = objective.loss(fwd, x, yy, c_prime=cp)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dt = time_steps(step, args, device)
    flops = 3 * models.flops_per_image(model) * args.batch / dt
    return args.batch / dt, flops, models.count_params(model)


def bench_ae(args, device):
    torch.manual_seed(0)
    m = ae_lib.build_ae(args.ae).to(device)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(m) if args.compile else m
    x = torch.rand(args.ae_batch, 3, args.ae_res, args.ae_res, device=device) * 2 - 1
    g = torch.Generator().manual_seed(0)

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            x_rec, _ = fwd(x, c_prime=ae_lib.sample_c_prime(m.c_prime_candidates, generator=g))
            loss = (x_rec.float() - x).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    dt = time_steps(step, args, device)
    return args.ae_batch / dt


def main(args):
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = next((v for k, v in PEAK.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}, bf16 autocast {args.bf16}, batch {args.batch}, median of {args.steps}")
    print("| model | latent | params | images/s | peak mem (GiB) | MFU |\n|---|---|---:|---:|---:|---:|")
    for name in args.models:
        rate = {}
        for shape, (c, side) in SHAPES.items():
            rate[shape], flops, n = bench_backbone(name, c, side, args, device)
            mfu = f"{flops / peak:.1%}" if peak else "-"
            print(f"| {name} | {side}x{side}x{c} ({shape}) | {n / 1e6:.1f}M | {rate[shape]:.1f} | "
                  f"{peak_memory_gb(device):.2f} | {mfu} |", flush=True)
        print(f"| {name} | f64c128 / f32c32 throughput ratio | | **{rate['f64c128'] / rate['f32c32']:.2f}x** | | |")
    if args.ae:
        print(f"| {args.ae} | {args.ae_res}px images, masked recon | | {bench_ae(args, device):.1f} | "
              f"{peak_memory_gb(device):.2f} | - |")
    # FSDP2 memory per rank: fp32 params (4 B) + grads (4 B) + AdamW moments (8 B) + EMA (4 B), all sharded 1/N.
    for name in ("USiT-2B", "USiT-3B"):
        n = models.count_params(models.create_model(name, in_channels=128, input_size=8, device="meta"))
        print(f"FSDP2 state of {name} ({n / 1e9:.2f}B params): {20 * n / 2 ** 30:.1f} GiB in one process, "
              f"{20 * n / 2 ** 30 / 8:.1f} GiB per GPU on 8 GPUs (+ activations)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["USiT-tiny"], choices=sorted(models.MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ae", default="dc-ae-f8c64-tiny", help="AE to time ('' to skip)")
    p.add_argument("--ae-res", type=int, default=64)
    p.add_argument("--ae-batch", type=int, default=8)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    main(p.parse_args())
