"""Reconstruction from the first c' latent channels: the quantitative Fig. 3 / Table 1 (PSNR, LPIPS and rFID per c')
and the pictures of Fig. 2a (the channel-averaged latent) and Fig. 3 (decodes of partial latents), for any AE: a
train_ae.py run, a released DC-Gen or diffusers folder (paper Sec. 3.2, Sec. 4.1, App. B).

rFID follows the DC-AE protocol: the reconstructions of the validation images against the validation images
themselves, Inception statistics streamed per c' (no image is kept in memory). The AE runs in fp32 (--bf16 to
compare). Under torchrun every rank evaluates its shard with its own copy of the AE and the sums are reduced.

    python eval_ae.py --ae runs/ae --data toy --images 256 --no-rfid      # the tiny run of train_ae.py
    torchrun --nproc_per_node 8 eval_ae.py --ae ckpt/dc-ae-f32c128-1.5 --data /data/imagenet/val --resolution 256 \\
        --inception-weights pt_inception-2015-12-05-6726825d.pth          # Table 1: rFID per c'
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

import ae as ae_lib
import checkpoints
import cli
import data as data_lib
import fid as fid_lib
import fsdp
import run


def check_args(args):
    if args.images < 1 or args.batch_size < 1 or (args.resolution is not None and args.resolution < 1):
        raise ValueError(f"--images {args.images}, --batch-size {args.batch_size} and --resolution "
                         f"{args.resolution} must be positive")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    if args.inception_weights not in (None, "random") and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")


def default_out(spec):
    """A train_ae.py run keeps its evaluation; anything else writes to runs/eval_ae."""
    if spec.endswith(".pt"):
        return os.path.dirname(os.path.abspath(spec))
    return spec if os.path.isdir(spec) and run.latest_checkpoint(spec) else "runs/eval_ae"


@torch.no_grad()
def evaluate(model, loader, c_primes, lp, inception, args, device):
    """-> ({c': {"psnr", "lpips" sums}}, {c': InceptionStats} or None, reference InceptionStats, images, skipped)."""
    sums = {cp: {"psnr": 0.0, "lpips": 0.0} for cp in c_primes}
    stats = {cp: fid_lib.InceptionStats(device=device) for cp in c_primes} if inception is not None else None
    ref = fid_lib.InceptionStats(device=device) if inception is not None else None
    count, skipped = 0, 0
    for x, _, bad in loader:
        x = x.to(device)  # (N, 3, H, W) in [-1, 1]
        count, skipped = count + len(x), skipped + int(bad.sum())
        if ref is not None:
            fid_lib.features_from_images(inception, data_lib.to_uint8(x).permute(0, 3, 1, 2), device=device,
                                         stats=ref, keep=False)
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            z = model.encode(x)  # (N, c, h, w)
        for cp in c_primes:
            with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                x_rec = model.decode(z[:, :cp]).float().clamp(-1, 1)  # decode(z * mask_{c,c'}) (Eq. 1)
            mse = ((x_rec - x) ** 2).flatten(1).mean(1)  # (N,) in [-1, 1] units: peak-to-peak 2
            sums[cp]["psnr"] += float((10 * torch.log10(4.0 / mse.clamp_min(1e-10))).sum())
            sums[cp]["lpips"] += float(lp(x_rec, x).sum()) if lp is not None else float("nan")
            if stats is not None:
                fid_lib.features_from_images(inception, data_lib.to_uint8(x_rec).permute(0, 3, 1, 2), device=device,
                                             stats=stats[cp], keep=False)
    return sums, stats, ref, count, skipped


@torch.no_grad()
def save_figures(model, x, c_primes, out):
    """Fig. 3: rows = images, columns = [input, decode(z[:, :c']) for each c']. Fig. 2a: the channel-averaged z."""
    z = model.encode(x)  # (n, c, h, w)
    cols = [x] + [model.decode(z[:, :cp]).float().clamp(-1, 1) for cp in c_primes]
    data_lib.save_grid(torch.stack(cols, 1).flatten(0, 1), os.path.join(out, "fig3_partial_channels.png"),
                       nrow=len(cols), col_labels=["input"] + [f"c'={cp}" for cp in c_primes])  # row-major by image
    avg = z.float().mean(1, keepdim=True)  # (n, 1, h, w): the channel-wise average feature of Fig. 2a
    lo, hi = avg.amin(dim=(1, 2, 3), keepdim=True), avg.amax(dim=(1, 2, 3), keepdim=True)
    avg = ((avg - lo) / (hi - lo + 1e-8) * 2 - 1).expand(-1, 3, -1, -1)  # per image to [-1, 1], grey
    avg = F.interpolate(avg, size=x.shape[-2:], mode="nearest")
    data_lib.save_grid(torch.stack([x, avg], 1).flatten(0, 1), os.path.join(out, "fig2a_latent_mean.png"), nrow=2,
                       col_labels=["input", "channel mean"])


def main(args):
    # Setup: the AE (EMA weights of a train_ae.py run), the data, the metric networks; bad input fails first.
    rank, world_size, device = fsdp.setup()
    args.bf16, precision = cli.precision(device, args.bf16, evaluation=True)  # fp32 unless --bf16: the protocol
    error, model = None, None
    try:
        check_args(args)
        frozen = checkpoints.load_ae(args.ae, device)
        model, source = frozen.model, frozen.source
        c_primes = args.c_primes or model.c_prime_candidates
        if any(not 1 <= cp <= model.c for cp in c_primes):
            raise ValueError(f"--c-primes {c_primes} must lie in [1, c={model.c}]")
        resolution = args.resolution or (32 if model.config.recipe == "tiny" else 256)
        if resolution % model.f:
            raise ValueError(f"--resolution {resolution} is not a multiple of {model.name}'s f={model.f}")
        # Toy: a held-out set (seed 1); train_ae.py trains on seed 0.
        dataset = data_lib.build_dataset(args.data, resolution, toy_size=args.images, seed=1)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    out = args.out or default_out(args.ae)
    dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.images)))
    loader = data_lib.make_loader(dataset, args.batch_size, rank, world_size, args.num_workers, device.type == "cuda")
    lp, inception, notes = None, None, []
    try:
        lp = None if args.no_lpips else ae_lib.build_lpips(random_weights=args.lpips_random).to(device)
    except RuntimeError as e:
        notes.append(f"LPIPS not measured: {e}, or pass --no-lpips")
    if not args.no_rfid:
        try:
            inception = fid_lib.load_inception(args.inception_weights, device)
        except FileNotFoundError as e:
            notes.append(f"rFID not measured: {e}")

    # Metrics per c'; the shards are padded by repeating images (at most world_size - 1 extra ones).
    sums, stats, ref, count, skipped = evaluate(model, loader, c_primes, lp, inception, args, device)
    total, skipped = fsdp.all_sum(count), fsdp.all_sum(skipped)
    results = []
    if ref is not None:
        ref.all_reduce()
    for cp in c_primes:
        row = {"c_prime": cp, "psnr": fsdp.all_sum(sums[cp]["psnr"]) / total,
               "lpips": fsdp.all_sum(sums[cp]["lpips"]) / total}
        if stats is not None:
            stats[cp].all_reduce()
            row["rfid"] = fid_lib.frechet_distance(*stats[cp].mu_sigma(), *ref.mu_sigma())
        results.append(row)

    # Report: the table (stdout), eval.json (strict JSON: an unmeasured LPIPS is null) and the two figures.
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        for note in notes:
            print(note, file=sys.stderr)
        flags = (" (LPIPS with a RANDOM VGG: not meaningful)" if args.lpips_random else "") + \
                (" (RANDOM Inception: rFID not meaningful)" if args.inception_weights == "random" else "")
        print(f"\n{model.name} ({source}): reconstruction from the first c' channels, {total} images at "
              f"{resolution}px ({skipped} unreadable skipped), AE in {precision}{flags}")
        print("| c' | PSNR (dB) | LPIPS | rFID |\n|---:|---:|---:|---:|")
        for r in results:
            lpips = "-" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
            print(f"| {r['c_prime']} | {r['psnr']:.2f} | {lpips} | {r['rfid']:.2f} |" if "rfid" in r else
                  f"| {r['c_prime']} | {r['psnr']:.2f} | {lpips} | - |")
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in results]
        report = {"ae": source, "images": total, "resolution": resolution, "skipped": skipped, "bf16": args.bf16,
                  "results": rows}
        run.atomic_write(os.path.join(out, "eval.json"), lambda fh: fh.write(json.dumps(report, indent=2).encode()))
        x = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
        save_figures(model, x, c_primes, out)
        print(f"wrote {out}/eval.json, fig3_partial_channels.png, fig2a_latent_mean.png")
    fsdp.cleanup()
    return results


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--ae", default="runs/ae", help="train_ae.py run folder / .pt, a DC-Gen or diffusers folder, or a "
                        "random:NAME (random weights of a registry AE)")
    parser.add_argument("--data", default="toy", help="'toy' (a held-out set) or a validation image folder")
    parser.add_argument("--images", type=int, default=50_000, help="evaluate the first N images (DC-AE: 50,000 val)")
    parser.add_argument("--resolution", type=int, default=None, help="ADM center crop (default: 256; 32 for tiny AEs)")
    parser.add_argument("--c-primes", type=int, nargs="+", default=None, help="default: the AE's candidate list")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for the AE (default: fp32, the evaluation protocol)")
    parser.add_argument("--lpips-random", action="store_true", help="random VGG for LPIPS (smoke runs; not meaningful)")
    parser.add_argument("--inception-weights", default=None, help="pt_inception-2015-12-05-6726825d.pth for rFID "
                        "(default: the torch hub cache, downloaded when online; 'random' for smoke runs)")
    parser.add_argument("--no-rfid", action="store_true", help="skip rFID (no Inception weights at hand)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (no VGG16 weights at hand)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--out", default=None, help="where eval.json and the figures go (default: the AE's run folder, "
                        "else runs/eval_ae)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
