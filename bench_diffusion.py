"""
Training throughput of one USiT on the two 512 px latents of the paper's efficiency argument (Table 4, Fig. 1a):
DC-AE(-1.5)-f64c128 gives an 8x8x128 latent (64 tokens), DC-AE-f32c32 a 16x16x32 latent (256 tokens). With
patch size 1 the backbone is identical except for its input/output projections, so the token count sets the
cost: about 4x in the matmuls, more in attention. The paper measures 450 vs 112 images/s for USiT-2B on an H100.

Both shapes run the same flow-matching loss (forward + backward), interleaved round by round so that a
change in machine load hits both alike; the reported number is the median over rounds.

    python bench_diffusion.py                       # CPU, a small USiT (~1-2 minutes on 2 cores)
    python bench_diffusion.py --model USiT-2B --device cuda --batch 32 --bf16   # the paper's setting, one GPU
"""

import argparse
import os
import statistics
import time

import torch

import diffusion
import models

SHAPES = {"f64c128": (128, 8), "f32c32": (32, 16)}  # name -> (c, latent side) at 512 px


def build(args, c, side, device):
    kwargs = {}
    if args.model == "USiT-tiny":  # widen the test-sized entry so matmuls, not Python overhead, dominate
        kwargs = dict(hidden_size=args.hidden, depth=args.depth, num_heads=args.heads)
    torch.manual_seed(0)
    return models.create_model(args.model, in_channels=c, input_size=side, device=device, **kwargs)


def train_step(model, objective, x0, y, bf16, device):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, _ = objective.loss(model, x0, y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def main(args):
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    objective = diffusion.make_objective(models.MODELS[args.model].objective)
    runs = {}
    for name, (c, side) in SHAPES.items():
        model = build(args, c, side, device)
        x0 = torch.randn(args.batch, c, side, side, device=device)
        y = torch.randint(0, 1000, (args.batch,), device=device)
        for _ in range(args.warmup):
            train_step(model, objective, x0, y, args.bf16, device)
        runs[name] = (model, x0, y)
        print(f"{name}: latent {side}x{side}x{c}, {model.num_tokens} tokens, {models.count_params(model) / 1e6:.2f}M "
              f"params, {3 * models.flops_per_image(model) / 1e9:.2f} GFLOP per training image")

    rates = {name: [] for name in SHAPES}
    for _ in range(args.rounds):
        for name, (model, x0, y) in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, objective, x0, y, args.bf16, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - t0))

    med = {name: statistics.median(r) for name, r in rates.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device.type}, threads {torch.get_num_threads()}, batch {args.batch}, bf16 {args.bf16}, "
          f"load average {load:.1f}")
    for name in SHAPES:
        print(f"{name}: {med[name]:8.2f} images/s  (rounds: {', '.join(f'{r:.2f}' for r in rates[name])})")
    print(f"speed-up f64c128 / f32c32: {med['f64c128'] / med['f32c32']:.2f}x "
          f"(FLOP ratio {models.flops_per_image(runs['f32c32'][0]) / models.flops_per_image(runs['f64c128'][0]):.2f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="USiT-tiny", choices=[n for n in models.MODELS if n.startswith("USiT")])
    parser.add_argument("--hidden", type=int, default=256, help="width of USiT-tiny for the benchmark")
    parser.add_argument("--depth", type=int, default=6, help="depth of USiT-tiny for the benchmark")
    parser.add_argument("--heads", type=int, default=4, help="heads of USiT-tiny for the benchmark")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0: PyTorch's default)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as in the paper's training")
    main(parser.parse_args())
