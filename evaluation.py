"""Class-conditional generation as the paper evaluates it (Sec. 4.1-4.2, Tables 2-4, App. B;
DESIGN.md §5b-6), in one place, so that sample.py (grids, 50K-sample .npz files, the CFG search)
and train_diffusion.py (FID during training) compute the same images and therefore the same
numbers.

- Labels (Sec. 4.1: 50,000 samples): `random` is DC-Gen's protocol, torch.randint(0, K, (N,)) from
  a CPU generator seeded `seed`; `balanced` gives N / K samples of each class in a seeded order, as
  RAE and REPA-E report headline FIDs. Both are a function of (N, classes, seed) alone: the same on
  any number of ranks.
- Noise: chunk k of global indices [k B, (k + 1) B) draws from a generator seeded by (seed, k), so
  1 or 8 GPUs give the same images for the same batch size B.
- `generate`: noise -> the objective's sampler with classifier-free guidance
  (Table 4 †: a guidance interval) and optionally only the first c' channels -> the latent scale
  undone -> the AE's decode -> uint8 = clamp(127.5 x + 128).
- `generation_metrics`: the images of N labels streamed through fid.py's features on every rank
  (chunk k on rank k % world), never held, then FID, sFID, IS, precision and recall against a
  reference loaded once.
- `reconstruction_metrics`: PSNR, LPIPS and rFID of decodes from the first c' channels
  (Table 1, Fig. 3), each c' by its own decoder where one was fine-tuned for it; eval_ae.py and
  train_ae.py --eval-every.

    python sample.py --ckpt runs/diffusion --num-samples 1000 --fid ref.npz        # .npz + fid.py
    python train_diffusion.py --eval-every 1000 --eval-samples 1000 --fid ref.npz  # same, online
"""
import time

import torch
from tqdm import tqdm

import ae as ae_lib
import data as data_lib
import fid
import fsdp

LABELS = ("random", "balanced")
# Samples per chunk: sample.py's --batch-size default, and the chunks of train_diffusion.py's FID.
BATCH = 64


# ------------------------------------------------------------------------------------------------
# Labels and seeds: functions of the global sample index alone
# ------------------------------------------------------------------------------------------------

def sample_labels(n, seed, classes, protocol="random"):
    """The n labels (n,) of an evaluation over `classes`. random: uniform, from a CPU generator
    seeded `seed` (with all 1000 classes, DC-Gen's torch.randint(0, 1000, (n,)) of sample_class.py,
    label for label). balanced: n / K of each class, shuffled by the same generator
    (n must be a multiple of K)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.as_tensor(classes)
    if protocol == "random":
        return classes[torch.randint(len(classes), (n,), generator=g)]
    if protocol != "balanced":
        raise ValueError(f"labels must be one of {LABELS}, got {protocol!r}")
    if n % len(classes):
        raise ValueError(f"balanced labels need a number of samples divisible by the "
                         f"{len(classes)} classes, got {n}")
    return classes.repeat(n // len(classes))[torch.randperm(n, generator=g)]


def chunk_seed(seed, k):
    """Seed of chunk k. seed * 1,000,003 + k (every sample's noise is a function of
    (seed, its index) for a fixed B), taken modulo 2^64, the range of a torch.Generator seed:
    unchanged for every seed below 9.2e12, and no seed in [0, 2^63 - 1] overflows."""
    return (seed * 1_000_003 + k) % 2 ** 64


def chunks(n, batch_size):
    """Chunk k of an evaluation of n samples: global indices [k B, min((k + 1) B, n))."""
    count = (n + batch_size - 1) // batch_size
    return [range(k * batch_size, min((k + 1) * batch_size, n)) for k in range(count)]


# ------------------------------------------------------------------------------------------------
# One chunk: noise -> sampler (CFG) -> latent scale undone -> AE decode -> uint8
# ------------------------------------------------------------------------------------------------

class Timer:
    """Wall time per phase (sample.py --profile); with sync=True the GPU is drained at each
    boundary, so that the split is honest. Timer(None, False) only adds up."""

    def __init__(self, device=None, sync=False):
        self.device, self.sync, self.t = device, sync, {}

    def __call__(self, name, fn, *a):
        drain = self.sync and self.device is not None and self.device.type == "cuda"
        if drain:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn(*a)
        if drain:
            torch.cuda.synchronize(self.device)
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
        return out

    def report(self, n, rank, world_size):
        """Print and return the rate and the split of the phases:
        {"images", "seconds", "img_per_s", phase: s}."""
        total = sum(self.t.values())
        split = ", ".join(f"{k} {v:.2f}s ({100 * v / max(total, 1e-9):.0f}%)"
                          for k, v in self.t.items())
        print(f"rank {rank}: {n} images in {total:.2f}s = {n / max(total, 1e-9):.2f} img/s "
              f"per rank (x{world_size} ranks); {split}", flush=True)
        return {"images": n, "seconds": total, "img_per_s": n / max(total, 1e-9), **self.t}


@torch.no_grad()
def generate(model, objective, ae, scale, latent_shape, y, seed, *, sampler, steps, cfg_scale=1.0,
             guidance_interval=None, c_prime=None, bf16=False, ae_bf16=False, timer=None):
    """uint8 images (n, H, W, 3) on the host for labels y (n,): the initial noise from a generator
    seeded `seed`, the objective's sampler (cfg_scale 1 = no guidance; guidance only at noise
    levels inside guidance_interval; c_prime: only the first c' latent channels), the latent scale
    undone, the AE's decode. fp32 unless bf16 / ae_bf16 (the decoder's precision moves FID: the
    evaluation protocol decodes in fp32)."""
    timer = timer or Timer()
    device = next(model.parameters()).device
    # Channel mask (Eq. 1), (1, c, 1, 1).
    mask = None if c_prime is None else ae_lib.channel_mask(latent_shape[0], c_prime)
    g = torch.Generator(device).manual_seed(seed)
    # (n, c, h, w) initial noise
    z = torch.randn(len(y), *latent_shape, generator=g, device=device)

    def denoise(z):
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            x0 = objective.sample(model, z, y.to(device), sampler=sampler, steps=steps,
                                  cfg_scale=cfg_scale, guidance_interval=guidance_interval,
                                  mask=mask, generator=g)
        return x0.float()  # (n, c, h, w)

    def decode(x0):
        # With c_prime the channels after c' are exactly zero (a structured AE decodes them).
        with torch.autocast(device.type, torch.bfloat16, enabled=ae_bf16):
            return ae.decode(x0 / scale).float()  # (n, 3, H, W)
    x = timer("decode", decode, timer("denoise", denoise, z))
    # Quantise on the device, then copy uint8: a quarter of the bytes of a float32 copy.
    return timer("to_uint8+copy", lambda x: data_lib.to_uint8(x).numpy(), x)  # (n, H, W, 3)


# ------------------------------------------------------------------------------------------------
# Metrics of generated images, streamed on every rank (the CFG search, FID during training)
# ------------------------------------------------------------------------------------------------

def generation_metrics(generate, labels, batch_size, inception, reference, rank, world_size,
                       is_protocol="adm", stop=None, progress=False):
    """FID, sFID, IS, precision and recall (fid.py) of the N = len(labels) images that
    `generate(y, k)` makes for chunk k, against `reference` (fid.load_reference, loaded once).
    Chunk k runs on rank k % world_size, as in sample.py's evaluate; its images go straight into
    fid.py's features with their global indices (no image is kept), so the numbers equal fid.py's
    on the .npz of the same images. Collective: every rank calls it. `stop()` is asked between
    rounds of chunks, all ranks together; -> None if it said yes on any rank, else the metrics."""
    device = next(inception.parameters()).device
    features = fid.Features(inception, device, is_protocol=is_protocol)
    parts = chunks(len(labels), batch_size)
    # The same number of rounds on every rank: the collectives stay paired.
    rounds = (len(parts) + world_size - 1) // world_size
    with tqdm(total=len(labels), unit="img", desc="evaluating",
              disable=not progress or None) as bar:
        for r in range(rounds):
            k = r * world_size + rank
            if k < len(parts):
                images = generate(labels[parts[k].start:parts[k].stop], k)  # (n, H, W, 3) uint8
                x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)  # (n, 3, H, W)
                features.update(x, index=torch.arange(parts[k].start, parts[k].stop))
            bar.update(sum(len(p) for p in parts[r * world_size:(r + 1) * world_size]))
            if stop is not None and fsdp.all_sum(int(bool(stop()))):
                return None
    return fid.metrics(features, reference)


# ------------------------------------------------------------------------------------------------
# Reconstruction from the first c' channels (Table 1, Fig. 3): eval_ae.py, train_ae.py --eval-every
# ------------------------------------------------------------------------------------------------

def reconstruction_metrics(ae, decoders, loader, device, lp=None, inception=None, bf16=False):
    """Reconstruction from the first c' channels (Table 1, Fig. 3): for each c' of `decoders`,
    x_rec = decoders[c'].decode(z * mask_{c,c'}) (Eq. 1) with z = ae.encode(x), over the images of
    `loader` (this rank's shard of (x, y, bad) batches; every rank calls this, and the sums are
    reduced over the ranks here).

    ae: the AE whose latents are evaluated (its .encode). decoders: {c': the AE whose .decode
    reconstructs at that c'}, `ae` itself (its shared decoder) or one fine-tuned for c'; each c' is
    measured once, in whatever order the keys come. lp: an LPIPS network or None; inception: the
    FID Inception or None (no rFID); bf16: autocast the AEs.
    -> (rows {"c_prime", "psnr" (dB), "lpips" (NaN without lp), "rfid" (with inception)} by
    increasing c', images, unreadable images skipped), the same on every rank."""
    c_primes = sorted(decoders)
    sums = {cp: {"psnr": 0.0, "lpips": 0.0} for cp in c_primes}
    stats, ref = None, None  # Inception statistics per c' and of the images themselves (rFID)
    if inception is not None:
        stats = {cp: fid.InceptionStats(device=device) for cp in c_primes}
        ref = fid.InceptionStats(device=device)
    count, skipped = 0, 0
    for x, _, bad in loader:
        x = x.to(device)  # (N, 3, H, W) in [-1, 1]
        count, skipped = count + len(x), skipped + int(bad.sum())
        if ref is not None:
            fid.features_from_images(inception, data_lib.to_uint8(x).permute(0, 3, 1, 2),
                                         device=device, stats=ref, keep=False)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            z = ae.encode(x)  # (N, c, h, w)
        for cp in c_primes:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                # decode(z[:, :c']) == decode(z * mask_{c,c'}) (Eq. 1), by c''s own decoder
                x_rec = decoders[cp].decode(z[:, :cp]).float().clamp(-1, 1)
            mse = ((x_rec - x) ** 2).flatten(1).mean(1)  # (N,) in [-1, 1] units: peak-to-peak 2
            sums[cp]["psnr"] += float((10 * torch.log10(4.0 / mse.clamp_min(1e-10))).sum())
            sums[cp]["lpips"] += float(lp(x_rec, x).sum()) if lp is not None else float("nan")
            if stats is not None:
                images = data_lib.to_uint8(x_rec).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
                fid.features_from_images(inception, images, device=device, stats=stats[cp],
                                             keep=False)
    # The shards are padded by repeating images (at most world_size - 1 extra ones).
    total, skipped = fsdp.all_sum(count), fsdp.all_sum(skipped)
    if ref is not None:
        ref.all_reduce()
    rows = []
    for cp in c_primes:
        row = {"c_prime": cp, "psnr": fsdp.all_sum(sums[cp]["psnr"]) / total,
               "lpips": fsdp.all_sum(sums[cp]["lpips"]) / total}
        if stats is not None:
            stats[cp].all_reduce()
            row["rfid"] = fid.frechet_distance(*stats[cp].mu_sigma(), *ref.mu_sigma())
        rows.append(row)
    return rows, total, skipped
