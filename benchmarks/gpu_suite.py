"""`python benchmarks/bench.py gpu`: Table 4's setting on one GPU with the real scripts, each part
with its own timeout, every number read from the runs' metrics.jsonl, the table written into its
section of docs/benchmarks.md (the rest of the file is kept). `--tiny` runs the same parts on CPU
with tiny models: it checks the plumbing and measures nothing.

    python benchmarks/bench.py gpu           # one H100: under 8 minutes of device time in all
    python benchmarks/bench.py gpu --tiny    # CPU, about 30 s
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, argv, timeout, procs=None):
    """Run a script as users do (python or torchrun); -> (exit status or 'timeout', seconds,
    stdout + stderr)."""
    launch = ([sys.executable] if procs is None
              else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={procs}"])
    t0 = time.time()
    try:
        p = subprocess.run(launch + [os.path.join(REPO, name)] + [str(a) for a in argv],
                           cwd=REPO, capture_output=True, text=True, timeout=timeout)
        return p.returncode, time.time() - t0, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        # TimeoutExpired keeps the partial output as bytes, even under text=True
        output = e.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        return "timeout", time.time() - t0, output


def records(out):
    """The JSON records of a run's metrics.jsonl (the trainers' and sample.py's),
    [] when there is none."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def training_rates(out, skip=1):
    """Median img/s, MFU and the peak memory of a run's metrics.jsonl,
    leaving out the first `skip` records (compile)."""
    recs = [r for r in records(out) if "img_per_s" in r and "step" in r][skip:]
    if not recs:
        return None
    med = lambda k: statistics.median(r[k] for r in recs) if k in recs[0] else None  # noqa: E731
    return dict(img_per_s=med("img_per_s"), mfu=med("mfu"),
                mem_gib=max(r["mem_gib"] for r in recs))


def flags(**kw):
    """--key value flags from keyword arguments (True: the bare flag)."""
    return [x for k, v in kw.items()
            for x in ([f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)]))]


def gpu(args):
    """Table 4's setting on one GPU with the real scripts (USiT-2B on f64c128 and f32c32 latents,
    FSDP2, AE training, sampling with the evaluation protocol), every number read from the runs'
    metrics.jsonl. --tiny runs the same plumbing on CPU with tiny models."""
    tiny = args.tiny
    work = tempfile.mkdtemp(prefix="bench_gpu_")
    rows, t_start = [], time.time()
    # seconds per part; the whole suite stays under 8 minutes of device time
    limit = 120 if tiny else 240

    def part(label, name, argv, procs=None, out=None):
        code, seconds, log = script(name, argv, limit, procs)
        rates = training_rates(out) if out else None
        last = [line for line in log.strip().splitlines() if line.strip()][-1:] or [""]
        launch = f"torchrun --nproc_per_node {procs}" if procs else "python"
        rows.append(dict(part=label, status="ok" if code == 0 else f"{code}: {last[0][:150]}",
                         seconds=seconds, note="", command=f"{launch} {name} " + " ".join(argv),
                         **(rates or {})))
        print(f"{label}: {rows[-1]['status']} in {seconds:.0f}s {rates or ''}", flush=True)
        return log

    def diffusion_run(label, out, latent="f64c128", procs=None, **kw):
        ae = "random:" + {"f64c128": "dc-ae-f8c64-tiny" if tiny else "dc-ae-f64c128-1.5",
                          "f32c32": "dc-ae-f8c16-tiny" if tiny else "dc-ae-f32c32-in-1.0"}[latent]
        base = dict(model="USiT-tiny" if tiny else "USiT-2B", ae=ae, data="toy",
                    toy_size=64 if tiny else 512, resolution=32 if tiny else 512, aug="replace",
                    steps=6 if tiny else 30, log_every=2 if tiny else 5, grid_every=0,
                    save_every=10 ** 6, cache=os.path.join(work, f"latents_{latent}"),
                    out=os.path.join(work, out))
        return part(label, "train_diffusion.py", flags(**{**base, **kw}), procs,
                    os.path.join(work, out))

    # 1. USiT-2B on f64c128 latents (8x8x128): eager against compiled (the default on CUDA),
    #    batch 128 -> 256.
    for batch, compiled in ([(8, False)] if tiny
                            else [(128, False), (128, True), (192, True), (256, True)]):
        diffusion_run(f"USiT f64c128, batch {batch}, {'compiled' if compiled else 'eager'}",
                      f"f64_{batch}_{compiled}", batch_size=batch,
                      **({"compile": True} if compiled else {"no_compile": True}))
    # 2. The same backbone on f32c32 latents (16x16x32): the ratio of Table 4
    #    (450 / 112 images/s = 4.0).
    diffusion_run("USiT f32c32, batch %d, compiled on CUDA" % (8 if tiny else 64), "f32",
                  latent="f32c32", batch_size=8 if tiny else 64)
    # 3. FSDP2 + NCCL through torchrun with one rank; the checkpoint it writes (size, time),
    #    then a resume.
    fsdp_batch = 8 if tiny else 128
    diffusion_run("USiT f64c128, torchrun 1 rank (FSDP2)", "fsdp1", procs=1, batch_size=fsdp_batch,
                  save_every=6 if tiny else 30)
    saved = [r for r in records(os.path.join(work, "fsdp1")) if "saved" in r]
    rows[-1]["note"] = (f"checkpoint {saved[-1]['bytes'] / 2 ** 30:.2f} GiB "
                        f"written in {saved[-1]['seconds']:.1f} s"
                        if saved else "no checkpoint")
    diffusion_run("resume of that checkpoint, 2 more steps", "fsdp1", procs=1,
                  batch_size=fsdp_batch, steps=8 if tiny else 32)
    # 4. AE training, phase 1 of dc-ae-f32c128-1.5 at 256 px with LPIPS
    #    (random VGG: the device cannot download).
    out = os.path.join(work, "ae")
    part("AE phase 1 (L1 + LPIPS)", "train_ae.py", flags(
        model="dc-ae-f8c64-tiny" if tiny else "dc-ae-f32c128-1.5", resolution=32 if tiny else 256,
        batch_size=8 if tiny else 32, steps=6 if tiny else 20, log_every=2 if tiny else 5,
        w_lpips=1, lpips_random=True, grid_every=0, save_every=10 ** 6,
        toy_size=64 if tiny else 640, out=out), out=out)
    # 5. Sampling with the paper's protocol (dopri5 for USiT)
    #    on random weights in the released layout.
    for sampler in ["dopri5"] + ([] if tiny else ["euler"]):
        n = 16 if tiny else 256
        out = os.path.join(work, f"samples_{sampler}")
        part(f"sample.py, {sampler}", "sample.py", flags(
            ckpt="random:" + ("USiT-tiny" if tiny else "USiT-2B"),
            ae="random:" + ("dc-ae-f8c64-tiny" if tiny else "dc-ae-f64c128-1.5"),
            resolution=32 if tiny else 512, num_samples=n, batch_size=n // 2, sampler=sampler,
            profile=True, out=out, **({} if sampler == "dopri5" else {"steps": 250})))
        sampled = [r["sampled"] for r in records(out) if "sampled" in r]
        if sampled:
            rate = sampled[-1]["img_per_s"]
            rows[-1]["img_per_s"] = rate
            rows[-1]["note"] = (f"50K samples on 8 GPUs: {50_000 / (8 * rate) / 60:.1f} min "
                                "(random weights)")
    # 6. Where the time of a USiT-2B f64c128 training step goes (compiled, batch 128).
    shares = os.path.join(work, "profile.json")
    part("profile of a training step (share of the time)", "benchmarks/bench.py",
         ["profile", *flags(device="cpu" if tiny else "cuda",
                            model="USiT-tiny" if tiny else "USiT-2B",
                            batch=8 if tiny else 128, json=shares)])
    if os.path.isfile(shares):
        with open(shares) as fh:
            rows[-1]["note"] = ", ".join(f"{k} {v}%" for k, v in json.load(fh).items())
    write_report(rows, args, time.time() - t_start)


def write_report(rows, args, seconds):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    what = ("tiny models on CPU: the plumbing only, no measurement" if args.tiny
            else "the real scripts")
    lines = [f"## GPU benchmarks ({what})",
             "", f"`python benchmarks/bench.py gpu{' --tiny' if args.tiny else ''}` "
             f"on {cli.machine(device)}, {time.strftime('%Y-%m-%d')}, "
             f"{seconds / 60:.1f} min in all. "
             f"Medians of the logged intervals after the first (compilation).", "",
             "| part | status | images/s | MFU | peak mem (GiB) | seconds | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ips = f"{r['img_per_s']:.1f}" if r.get("img_per_s") is not None else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        mem = f"{r['mem_gib']:.1f}" if r.get("mem_gib") is not None else "-"
        lines.append(f"| {r['part']} | {r['status']} | {ips} | {mfu} | {mem} | "
                     f"{r['seconds']:.0f} | {r['note']} |")
    lines += (["", "Commands (in a temporary folder):", ""]
              + [f"- {r['part']}: `{r['command']}`" for r in rows])
    text = "\n".join(lines) + "\n"
    print(text)
    report = args.report or os.path.join(
        REPO, "runs/bench_gpu_tiny.md" if args.tiny else "docs/benchmarks.md")
    old = open(report).read() if os.path.isfile(report) else ""
    begin, end = "<!-- bench.py gpu: begin -->\n", "<!-- bench.py gpu: end -->\n"
    # docs/benchmarks.md: replace this suite's section, keep the rest
    if begin in old and end in old:
        text = old[:old.index(begin)] + begin + text + old[old.index(end):]
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    # written whole, then renamed: the rest of the file is never lost
    with open(report + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(report + ".tmp", report)
