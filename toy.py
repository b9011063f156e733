"""The paper's two claims on a laptop, in one command: structured latent space (Sec. 3.2, Eq. 1,
Fig. 2-3, Table 1) and augmented diffusion training (Sec. 3.3, Eq. 2, Fig. 5b, Table 5), on the
procedural toy dataset of data.py.

It drives the project's scripts (train_ae.py, eval_ae.py, train_diffusion.py, sample.py) and
reimplements none:
1. trains a tiny AE with many latent channels per latent pixel (f8c64 on 32 px: 4x4x64, a toy
   analogue of f32c128) three times: without the channel mask (the DC-AE baseline), with it and one
   c' per step (DC-Gen's default and the recipe's), and with it and two c' per step, c always among
   them;
2. measures reconstruction from the first c' channels for several c' (PSNR; LPIPS when VGG
   weights are present): the quantitative Fig. 3 / Table 1, with each AE's own, shared decoder,
   and for the unstructured and the K = 1 AE also as the paper measures it, each c' with a
   decoder fine-tuned for it on the frozen encoder (Fig. 3's caption; train_ae.py
   --finetune-decoder); the Fig. 3 grid (rows: model x image; columns: c', shared and fine-tuned)
   and the channel-averaged latent of Fig. 2a;
3. trains a tiny USiT on the unstructured and the K = 1 structured AE's latents, with and without
   augmented diffusion training (Table 5's four cells, three seeds each, the same forward passes
   per step in every cell), and tracks generation quality against training steps (Fig. 5b);
4. writes OUT/toy_results.md (tables with seeds, budgets and wall time) and PNG grids, and prints
   the tables. Inception weights cannot be downloaded here, so generation quality is a Frechet
   distance in the feature space of a small classifier trained on the toy data
   ("FD_toy", lower is better), plus that classifier's accuracy on the class-conditional samples
   ("acc", higher is better). With --inception-weights the real FID is added.

    python toy.py                  # the full run (the README quotes its output and its time)
    python toy.py --quick          # a smoke run of ~25 s on 2 idle CPU cores (CI): not evidence
    python toy.py --ae dc-ae-f8c16-tiny   # the knob "latent channels per pixel": 4x fewer
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ae as ae_lib
import ae_loss
import checkpoints
import cli
import curves
import data as data_lib
import eval_ae
import fid as fid_lib
import fsdp
import run
import sample
import toydata
import train_ae
import train_diffusion

# 4x4x64 latents at 32 px: many channels per latent pixel, like f32c128.
DEFAULT_AE = "dc-ae-f8c64-tiny"
# Steps are optimizer steps; evals: points on the Fig. 5b curve. ft_steps: fine-tuning one
# decoder for one c' (Fig. 3's protocol), measured at c' = 8 on the 500 held-out images: the
# structured AE's lead over the unstructured one is 1.82, 1.23, 1.00, 0.89, 0.94 dB after 50,
# 200, 500, 800, 1200 steps, and 500 steps give the unstructured AE 90% of its 1200-step gain
# (17.2 -> 22.4 of 23.0 dB).
SETTINGS = {
    "full": dict(ae_steps=1500, ft_steps=500, diff_steps=2000, evals=4, seeds=[0, 1, 2],
                 samples=400, eval_images=500, clf_steps=400, toy_size=5000),
    "quick": dict(ae_steps=20, ft_steps=5, diff_steps=10, evals=2, seeds=[0, 1, 2], samples=40,
                  eval_images=32, clf_steps=20, toy_size=200),
}
# The three AEs: unstructured (DC-AE), structured with DC-Gen's default of one c' per step (the
# recipe's too), and the toy default.
AES = {"unstructured": ["--no-structured", "--num-c-primes", "1", "--always", "none"],
       "structured, K = 1": ["--structured", "--num-c-primes", "1", "--always", "none"],
       "structured, K = 2 with c": ["--structured", "--num-c-primes", "2", "--always", "max"]}
# Table 5: structured latent space off / on (DC-Gen's K).
DIFFUSION_AES = ["unstructured", "structured, K = 1"]
FINETUNED_AES = DIFFUSION_AES  # Fig. 3's comparison as the paper measures it: a decoder per c'
# Forward samples per diffusion step in every cell: --aug extra runs 32 images twice
# (c' = c and drawn).
BATCH = 64


# ------------------------------------------------------------------------------------------------
# The quality measure: a small classifier trained on the toy data (features for a Frechet distance)
# ------------------------------------------------------------------------------------------------

class ToyClassifier(nn.Module):
    """x (N, 3, 32, 32) in [-1, 1] -> (features (N, 128), logits (N, K))."""

    def __init__(self, num_classes=10, width=32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.GroupNorm(8, width), nn.SiLU(),  # 16x16
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.GroupNorm(8, 2 * width), nn.SiLU(),  # 8x8
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.GroupNorm(8, 4 * width), nn.SiLU(),  # 4x4
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        h = self.body(x).mean(dim=(2, 3))  # (N, 4 width): global average pool
        return h, self.head(h)


def train_classifier(setting):
    torch.manual_seed(0)
    clf = ToyClassifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3)
    # Other seeds than the AE / diffusion data.
    train = toydata.ToyShapes(n=100_000, resolution=32, seed=100)
    g = torch.Generator().manual_seed(0)
    for step in range(setting["clf_steps"]):
        idx = torch.randint(len(train), (64,), generator=g).tolist()
        x = torch.stack([train[i][0] for i in idx])
        y = torch.tensor([train[i][1] for i in idx])
        loss = F.cross_entropy(clf(x)[1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    clf.eval()
    test = toydata.ToyShapes(n=1000, resolution=32, seed=101)
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        feats, logits = clf(x)
    acc = (logits.argmax(1) == y).float().mean().item()
    return clf, feats.double().numpy(), acc


def frechet(f1, f2):
    return fid_lib.frechet_distance(f1.mean(0), np.cov(f1, rowvar=False),
                                    f2.mean(0), np.cov(f2, rowvar=False))


# ------------------------------------------------------------------------------------------------
# Steps 1-2: the autoencoders and their reconstruction from the first c' channels
# ------------------------------------------------------------------------------------------------

def eval_argv(ae_dir, out, setting, args):
    """eval_ae.py's arguments for one AE: the held-out toy images, the table's c', into `out`."""
    fid = ["--inception-weights", args.inception_weights] if args.inception_weights else \
        ["--no-rfid"]
    return (["--ae", ae_dir, "--images", str(setting["eval_images"]), "--c-primes",
             *map(str, args.c_primes), "--num-workers", "0", "--out", out] + fid +
            ([] if args.lpips else ["--no-lpips"]))


def run_ae(out, flags, setting, args):
    """Train one AE, then measure reconstruction from the first c' channels with its own, shared
    decoder: -> (eval.json rows, training seconds)."""
    t0 = time.time()
    train_ae.main(train_ae.parse_args([
        "--model", args.ae, "--out", out, "--steps", str(setting["ae_steps"]), "--lr", "3e-4",
        "--grid-every", str(setting["ae_steps"]), "--log-every", "50", "--num-workers", "0",
        "--seed", str(args.seed), *flags]))
    seconds = time.time() - t0
    eval_ae.main(eval_ae.parse_args(eval_argv(out, out, setting, args)))
    with open(os.path.join(out, "eval.json")) as fh:
        return json.load(fh)["results"], seconds


def finetune_decoders(ae_dir, setting, args):
    """Fig. 3's protocol on one AE: a decoder fine-tuned for each c' of the table on its frozen
    encoder (train_ae.py --finetune-decoder, the tiny recipe, ft_steps steps each), then the
    reconstruction with them (eval_ae.py --decoders). DC-Gen's per-c' decoders stop below c; ours
    include c' = c, because the toy AEs' decoders are not trained to the end: the same extra
    steps at c' = c show what fine-tuning gains without a partial latent.
    -> (eval.json rows, {c': its fine-tuning run}, fine-tuning seconds)."""
    t0 = time.time()
    runs = {cp: os.path.join(ae_dir, f"decoder_c{cp}") for cp in args.c_primes}
    for cp, folder in runs.items():
        train_ae.main(train_ae.parse_args([
            "--model", args.ae, "--init", ae_dir, "--finetune-decoder", str(cp), "--out", folder,
            "--steps", str(setting["ft_steps"]), "--grid-every", "0", "--log-every", "50",
            "--num-workers", "0", "--seed", str(args.seed)]))
    seconds = time.time() - t0
    out = os.path.join(ae_dir, "eval_finetuned")
    decoders = [f"{cp}={folder}" for cp, folder in runs.items()]
    eval_ae.main(eval_ae.parse_args(eval_argv(ae_dir, out, setting, args) +
                                    ["--decoders", *decoders]))
    with open(os.path.join(out, "eval.json")) as fh:
        return json.load(fh)["results"], runs, seconds


@torch.no_grad()
def ae_figures(ae_dirs, tuned, args):
    """Fig. 3 (rows: model x image; columns: the input, then each c' decoded by the AE's own,
    shared decoder and, beside it, by the decoder fine-tuned for that c', for the AEs of `tuned`:
    {AE name: {c': run}}) and Fig. 2a (the channel-averaged latent of every AE)."""
    ds = toydata.ToyShapes(n=100, resolution=32, seed=7)
    x = torch.stack([ds[i][0] for i in (0, 2, 4, 7)])  # 4 classes (item i has class i % 10)
    columns = [(cp, kind) for cp in args.c_primes for kind in ("shared", "fine-tuned")]
    rows, latents = [], [x]
    for name, folder in ae_dirs.items():
        model = checkpoints.load_ae(folder).model  # its EMA weights
        z = model.encode(x)  # (4, c, 4, 4); the fine-tuned decoders' encoder, bit for bit
        if name in tuned:
            own = {cp: checkpoints.load_ae(run).model for cp, run in tuned[name].items()}
            decoded = [(model if kind == "shared" else own[cp]).decode(z[:, :cp]).clamp(-1, 1)
                       for cp, kind in columns]
            rows.append(torch.stack([x] + decoded, 1))  # (4, 1 + columns, 3, 32, 32)
        avg = z.mean(1, keepdim=True)  # (4, 1, 4, 4): Fig. 2a
        lo, hi = avg.amin(dim=(2, 3), keepdim=True), avg.amax(dim=(2, 3), keepdim=True)
        stretched = (avg - lo) / (hi - lo + 1e-8) * 2 - 1  # (4, 1, 4, 4) in [-1, 1]
        latents.append(F.interpolate(stretched, size=32, mode="nearest").expand(-1, 3, -1, -1))
    big = lambda x: F.interpolate(x, scale_factor=3, mode="nearest")  # noqa: E731  32 px is small
    label = lambda name: name.replace(", ", "\n").replace(" with", "\nwith")  # noqa: E731
    groups = [label(name) for name in ae_dirs if name in tuned for _ in x]  # as `rows` were made
    data_lib.save_grid(big(torch.cat(rows).flatten(0, 1)),
                       output(args, "toy_fig3_partial_channels", "png"),
                       nrow=1 + len(columns), row_labels=groups,
                       col_labels=["input"] + [f"c'={cp}\n{kind}" for cp, kind in columns])
    data_lib.save_grid(big(torch.stack(latents, 1).flatten(0, 1)),
                       output(args, "toy_fig2a_latent_mean", "png"),
                       nrow=len(latents), col_labels=["input"] + [label(name) for name in ae_dirs])


# ------------------------------------------------------------------------------------------------
# Step 3: diffusion on each AE's latents, with and without augmented diffusion training
# ------------------------------------------------------------------------------------------------

def evaluate_samples(run_dir, step, batch, clf, real_feats, setting, args, seed):
    """FD_toy and the classifier's accuracy of `setting["samples"]` samples of the run's
    step-`step` checkpoint (sample.py, 25 Euler steps), appended to the run's metrics.jsonl as
    train_diffusion.py --eval-every appends its FID: with the step, images seen, training time and
    device-hours, so curves.py draws either. -> the record."""
    out = os.path.join(run_dir, f"samples_{step:07d}")
    sample.main(sample.parse_args([
        "--ckpt", run_dir, "--out", out, "--num-samples", str(setting["samples"]),
        "--batch-size", "100", "--sampler", "euler", "--steps", str(args.sample_steps),
        "--seed", str(seed)]))
    with np.load(os.path.join(out, "samples.npz")) as npz:
        images, labels = torch.from_numpy(npz["arr_0"]), torch.from_numpy(npz["arr_1"])
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, 32, 32)
    with torch.no_grad():
        feats, logits = clf(x)
    # Training seconds, one process.
    elapsed = run.read_checkpoint(run.latest_checkpoint(run_dir))["elapsed"]
    row = {"step": step, "images_seen": step * batch,
           "elapsed_s": elapsed, "device_hours": elapsed / 3600,
           "fd_toy": frechet(feats.double().numpy(), real_feats),
           "acc": (logits.argmax(1) == labels).float().mean().item()}
    if args.inception_weights:
        held_out = toydata.ToyShapes(n=setting["samples"], resolution=32, seed=101)
        real = torch.stack([held_out[i][0] for i in range(len(held_out))])
        row["fid"] = fid_lib.compute_metrics(os.path.join(out, "samples.npz"),
                                             data_lib.to_uint8(real).permute(0, 3, 1, 2),
                                             weights=args.inception_weights,
                                             pr=False, progress=False)["fid"]
    # The run is stopped: no writer but us.
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def run_diffusion(ae_dir, aug, seed, clf, real_feats, setting, args):
    run_dir = os.path.join(args.out, f"usit_{os.path.basename(ae_dir)}_aug-{aug}_seed{seed}")
    curve = []
    # Train in segments; each re-run resumes from the newest checkpoint.
    for k in range(1, setting["evals"] + 1):
        steps = setting["diff_steps"] * k // setting["evals"]
        train_diffusion.main(train_diffusion.parse_args([
            "--model", "USiT-tiny", "--ae", ae_dir, "--out", run_dir,
            "--cache", os.path.join(ae_dir, "latents"),
            "--toy-size", str(setting["toy_size"]), "--aug", aug,
            "--batch-size", str(BATCH // 2 if aug == "extra" else BATCH),
            "--steps", str(steps), "--seed", str(seed), "--save-every", str(steps),
            "--grid-every", "0", "--log-every", "100", "--num-workers", "0"]))
        batch = BATCH // 2 if aug == "extra" else BATCH
        curve.append(evaluate_samples(run_dir, steps, batch, clf, real_feats, setting, args, seed))
    return run_dir, curve


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def mean_std(values, scale=1.0):
    a = scale * np.array(values, dtype=float)
    return f"{a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.2f}"


def output(args, name, ext):
    """OUT/name.ext, or name_f8c16.ext for another --ae: the names docs/ keeps, so results are
    copied as they are."""
    short = args.ae.removeprefix("dc-ae-").removesuffix("-tiny")  # dc-ae-f8c16-tiny -> f8c16
    suffix = "" if args.ae == DEFAULT_AE else "_" + short
    return os.path.join(args.out, f"{name}{suffix}.{ext}")


def cell_name(ae_name, aug):
    return (f"{'unstructured' if ae_name == 'unstructured' else 'structured'} AE, "
            f"{'augmented training' if aug == 'extra' else 'plain training'}")


def reconstruction(recon, ae_seconds, setting, args):
    """The report's Fig. 3 / Table 1 section: PSNR (and LPIPS) per AE, decoder and c'.
    recon: {AE name: {"shared": rows, "fine-tuned": rows (FINETUNED_AES only)}}, eval.json's rows;
    ae_seconds: {AE name: (training s, fine-tuning s or None)}."""
    words = {"shared": "shared", "fine-tuned": "fine-tuned per c'"}

    def table(metric, digits):  # one row per AE and decoder, one column per c'
        columns = " | ".join(f"{metric} c'={cp}" for cp in args.c_primes)
        rows = [f"| AE | decoder | {columns} |", "|---|---|" + "---:|" * len(args.c_primes)]
        for name, by_decoder in recon.items():
            for kind, results in by_decoder.items():
                values = " | ".join(f"{r[metric.lower()]:.{digits}f}" for r in results)
                rows.append(f"| {name} | {words[kind]} | {values} |")
        return rows

    times = ", ".join(f"{name} {train:.0f} s" + (f" + {tune:.0f} s" if tune is not None else "")
                      for name, (train, tune) in ae_seconds.items())
    decoders = (
        "Decoders: \"shared\", each AE's own decoder for every c' (not the paper's protocol "
        "below c); \"fine-tuned per c'\", Fig. 3's protocol (\"The decoder is fine-tuned for all "
        f"settings\"): for each c' a decoder fine-tuned for {setting['ft_steps']} steps of "
        "batch 32 on the AE's frozen encoder (`train_ae.py --finetune-decoder`, the tiny "
        "recipe). DC-Gen's per-c' decoders stop below c; ours include c' = c, because the toy "
        "AEs' decoders are not trained to the end, and the same extra steps at c' = c show what "
        "fine-tuning gains without a partial latent. K: c' per AE step, one encode and K masked "
        "decodes (DC-Gen's num_sample_latent_channels); \"with c\": c' = c is always one of "
        f"them. Wall time (training + fine-tuning {len(args.c_primes)} decoders): {times}.")
    fig3, fig2a = (os.path.basename(output(args, name, "png"))
                   for name in ("toy_fig3_partial_channels", "toy_fig2a_latent_mean"))
    lines = [f"## Reconstruction from the first c' channels (Fig. 3 / Table 1), "
             f"{setting['eval_images']} held-out images", "", *table("PSNR", 2), "", decoders, "",
             f"![Fig. 3 on the toy data]({fig3})", "",
             "Fig. 3: reconstructions from the first c' channels, by each AE's shared decoder "
             "and, beside it, by the decoder fine-tuned for that c'.", "",
             f"![Fig. 2a on the toy data]({fig2a})", "",
             "Fig. 2a: the channel-averaged latent of each AE (4x4, stretched per image), next to "
             "its input.", ""]
    if all(r["lpips"] is not None for by in recon.values() for rows in by.values() for r in rows):
        return lines + table("LPIPS", 4)
    return lines + ["LPIPS: not measured (no pretrained VGG16 weights on this machine)."]  # null


def report(recon, ae_seconds, cells, run_dirs, clf_acc, setting, args, wall):
    # Where the scripts ran (fsdp.setup).
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    quick, precision = " --quick" if args.quick else "", "training in " + cli.precision(device)[1]
    lines = [f"# Toy reproduction ({'quick' if args.quick else 'full'} run)", ""]
    if args.quick:
        lines += ["**A smoke run: a few dozen steps per model. These numbers show that the "
                  "pipeline runs; they are not evidence for or against the paper.**", ""]
    ae_flag = "" if args.ae == DEFAULT_AE else " --ae " + args.ae
    lines += [f"`python toy.py{quick}{ae_flag}` — {args.ae} on 32 px toy images, "
              f"AE seed {args.seed}, {setting['ae_steps']} AE steps of batch 32; "
              f"USiT-tiny {setting['diff_steps']} steps of {BATCH} forward samples, "
              f"diffusion seeds {setting['seeds']}, {setting['samples']} samples per evaluation "
              f"({args.sample_steps} Euler steps); {precision}; wall time {wall / 60:.1f} min on "
              f"{cli.machine(device)}.", "",
              *reconstruction(recon, ae_seconds, setting, args)]
    fid_col = args.inception_weights is not None
    lines += ["", "## Generation (Table 5): FD_toy and classifier accuracy of "
              "class-conditional samples", "",
              f"FD_toy is a Frechet distance in the 128-d feature space of a small classifier "
              f"trained on the toy data (test accuracy {clf_acc:.1%}), **not** the Inception FID. "
              f"Mean ± std over seeds {setting['seeds']} at the last step "
              f"({setting['diff_steps']}). Every cell has the same budget: "
              f"{setting['diff_steps']} steps of {BATCH} forward samples; without augmented "
              f"training these are {BATCH} images, with it (`--aug extra`, the official "
              f"always_sample_max_channel) {BATCH // 2} images each at c' = c and at a drawn c'. "
              f"The structured AE is the \"{DIFFUSION_AES[1]}\" one.", "",
              "| structured AE | augmented training | FD_toy ↓ | acc ↑ |"
              + (" FID ↓ |" if fid_col else ""),
              "|---|---|---:|---:|" + ("---:|" if fid_col else "")]
    for (ae_name, aug), runs in cells.items():
        last = [curve[-1] for curve in runs]
        structured = "✓" if ae_name != "unstructured" else ""
        augmented = "✓" if aug == "extra" else ""
        lines.append(f"| {structured} | {augmented} | {mean_std([r['fd_toy'] for r in last])} | "
                     f"{mean_std([r['acc'] for r in last], 100)}% |"
                     + (f" {mean_std([r['fid'] for r in last])} |" if fid_col else ""))
    steps = [r["step"] for r in next(iter(cells.values()))[0]]
    lines += ["", "## Training curves (Fig. 5b): FD_toy, mean ± std over seeds, "
              "against diffusion steps", "",
              "| structured AE | augmented | " + " | ".join(str(t) for t in steps) + " |",
              "|---|---|" + "---:|" * len(steps)]
    for (ae_name, aug), runs in cells.items():
        structured = "✓" if ae_name != "unstructured" else ""
        augmented = "✓" if aug == "extra" else ""
        values = " | ".join(mean_std([curve[i]["fd_toy"] for curve in runs])
                            for i in range(len(steps)))
        lines.append(f"| {structured} | {augmented} | " + values + " |")
    plot = output(args, "toy_fig5b_curves", "png")  # curves.py, from the runs' metrics.jsonl
    title = f"Fig. 5b on the toy data: FD_toy, mean ± std over {len(setting['seeds'])} seeds"
    curves.plot([(cell_name(*cell), folders) for cell, folders in run_dirs.items()],
                "fd_toy", plot, axes=("step", "device_hours"), title=title)
    samples = os.path.basename(output(args, "toy_samples_structured_aug", "png"))
    lines += ["", f"![Fig. 5b on the toy data]({os.path.basename(plot)})", "",
              f"![samples]({samples})", "",
              "Samples of the structured + augmented USiT-tiny at the last step, seed 0 "
              "(rows: the classes)."]
    text = "\n".join(lines) + "\n"
    with open(output(args, "toy_results", "md"), "w") as fh:
        fh.write(text)
    print("\n" + text)


def check_args(args):
    c = ae_lib.AE_CONFIGS[args.ae].c
    args.c_primes = args.c_primes or [c // 8, c // 4, c // 2, c]
    if any(not 1 <= cp <= c for cp in args.c_primes):
        raise ValueError(f"--c-primes {args.c_primes} must lie in [1, c={c}] for {args.ae}")
    if len(set(args.c_primes)) < len(args.c_primes):  # a column each, as eval_ae.py measures them
        raise ValueError(f"--c-primes {args.c_primes}: a c' is given more than once")
    args.c_primes = sorted(args.c_primes)  # the columns in eval_ae.py's order
    if args.sample_steps < 1:
        raise ValueError(f"--sample-steps must be >= 1, got {args.sample_steps}")
    file_given = args.inception_weights not in (None, "random")
    if file_given and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")


def main(args):
    try:
        check_args(args)
    except ValueError as e:
        fsdp.fail(str(e))
    setting = SETTINGS["quick" if args.quick else "full"]
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    # LPIPS needs pretrained VGG16 weights: look (or download) once, say once what is skipped
    # without them.
    try:
        ae_loss.vgg16_weights()
        args.lpips = True
    except RuntimeError as e:
        print(f"toy.py: {e}; until then the LPIPS columns are skipped", file=sys.stderr)
        args.lpips = False
    clf, real_feats, clf_acc = train_classifier(setting)
    print(f"toy classifier: test accuracy {clf_acc:.1%} (its features define FD_toy)")
    # An AE's folder: "structured, K = 1" -> OUT/ae_structured_K1.
    folders = {name: "ae_" + name.replace(", ", "_").replace(" = ", "").replace(" ", "_")
               for name in AES}
    ae_dirs = {name: os.path.join(args.out, folder) for name, folder in folders.items()}
    trained = {name: run_ae(ae_dirs[name], flags, setting, args) for name, flags in AES.items()}
    # Fig. 3's protocol: a decoder fine-tuned per c', for the AEs Table 5 compares
    tuned = {name: finetune_decoders(ae_dirs[name], setting, args) for name in FINETUNED_AES}
    recon = {name: {"shared": trained[name][0]} for name in AES}
    ae_seconds = {name: (trained[name][1], None) for name in AES}
    for name, (rows, _, seconds) in tuned.items():
        recon[name]["fine-tuned"], ae_seconds[name] = rows, (trained[name][1], seconds)
    ae_figures(ae_dirs, {name: tuned[name][1] for name in FINETUNED_AES}, args)
    cells, runs = {}, {}
    for name in DIFFUSION_AES:  # Table 5: {unstructured, structured} x {off, extra}
        for aug in ("off", "extra"):
            results = [run_diffusion(ae_dirs[name], aug, seed, clf, real_feats, setting, args)
                       for seed in setting["seeds"]]
            runs[(name, aug)] = [d for d, _ in results]
            cells[(name, aug)] = [curve for _, curve in results]
    # The sample grid of the structured + augmented model (seed 0): rows are the ten classes.
    ckpt = runs[(DIFFUSION_AES[1], "extra")][0]
    grid = sample.main(sample.parse_args(["--ckpt", ckpt, "--out", args.out, "--sampler", "euler",
                                          "--steps", str(args.sample_steps)]))["grid"]
    os.replace(grid, output(args, "toy_samples_structured_aug", "png"))
    report(recon, ae_seconds, cells, runs, clf_acc, setting, args, time.time() - t0)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (~25 s on 2 idle CPU cores; CI): its numbers are not "
                        "evidence")
    parser.add_argument("--out", default="runs/toy",
                        help="output folder: runs, figures, toy_results.md")
    parser.add_argument("--seed", type=int, default=0, help="seed of the AE runs")
    tiny_aes = [n for n, cfg in ae_lib.AE_CONFIGS.items()
                if cfg.recipe == "tiny" and cfg.structured]
    parser.add_argument("--ae", default=DEFAULT_AE, choices=tiny_aes,
                        help="the knob 'latent channels per pixel': dc-ae-f8c16-tiny has 4x fewer")
    parser.add_argument("--c-primes", type=int, nargs="+", default=None,
                        help="c' of the reconstruction table (default: c/8, c/4, c/2, c)")
    parser.add_argument("--sample-steps", type=int, default=25, help="Euler steps per sample")
    parser.add_argument("--inception-weights", default=None,
                        help="also report the real FID: pt_inception-...pth "
                        "(default: FD_toy only)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
