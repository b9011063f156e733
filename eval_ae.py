"""Reconstruction from the first c' latent channels: the quantitative Fig. 3 / Table 1 (PSNR, LPIPS
and rFID per c') and the pictures of Fig. 2a (the channel-averaged latent) and Fig. 3 (decodes of
partial latents), for any AE: a train_ae.py run, a released DC-Gen or diffusers folder (paper
Sec. 3.2, Sec. 4.1, App. B).

Fig. 3's protocol: "The decoder is fine-tuned for all settings to fully reveal the information
encoded in the (partial) latent space" (DC-Gen registers such decoders: dc-ae-f32c128-1.5-c16 ...
-c112). `--decoders c'=RUN ...` decodes each of those c' with its own decoder, fine-tuned by
`train_ae.py --init AE --finetune-decoder c'` and checked (fine-tuned for that c', on this --ae's
encoder, bit for bit). Every other c' uses the AE's own, shared decoder; the table, eval.json and
the picture say which decoder made each column, and "shared decoder (not the paper's protocol)"
where a c' < c was decoded by the shared one.

rFID follows the DC-AE protocol: the reconstructions of the validation images against the
validation images themselves, Inception statistics streamed per c' (no image is kept in memory).
The AE runs in fp32 (--bf16 to compare). Under torchrun every rank evaluates its shard with its own
copy of the AE and the sums are reduced. SIGTERM / Ctrl-C stop it with one line and exit status
128 + the signal; eval.json and the figures are written once every metric is known, as one set of
atomic renames, so a stopped evaluation leaves --out as it was.

    python eval_ae.py --ae runs/ae --data toy --images 256 --no-rfid   # train_ae.py's tiny run
    python eval_ae.py --ae runs/ae --images 256 --no-rfid --c-primes 8 16 64 \\
        --decoders 8=runs/ae-decoder-c8 16=runs/ae-decoder-c16 --out runs/ae/eval_finetuned
    torchrun --nproc_per_node 8 eval_ae.py --ae ckpt/dc-ae-f32c128-1.5 --data /data/imagenet/val \\
        --resolution 256 --inception-weights pt_inception-2015-12-05-6726825d.pth   # Table 1
"""
import argparse
import json
import math
import os
import signal
import sys
import tempfile
import textwrap

import torch
import torch.nn.functional as F

import ae_loss
import checkpoints
import cli
import data as data_lib
import evaluation
import fid as fid_lib
import fsdp
import run

SHARED = "shared decoder (not the paper's protocol)"  # a c' < c decoded by the AE's own decoder


def check_args(args):
    bad_resolution = args.resolution is not None and args.resolution < 1
    if args.images < 1 or args.batch_size < 1 or bad_resolution:
        raise ValueError(f"--images {args.images}, --batch-size {args.batch_size} "
                         f"and --resolution {args.resolution} must be positive")
    if args.data != "toy" and not os.path.isdir(args.data):
        raise ValueError(f"--data folder not found: {args.data}")
    file_given = args.inception_weights not in (None, "random")
    if file_given and not os.path.isfile(args.inception_weights):
        raise ValueError(f"--inception-weights not found: {args.inception_weights}")
    # Each c' is one row, measured once: a repeat would only ask for it twice.
    repeated = sorted({cp for cp in args.c_primes or [] if args.c_primes.count(cp) > 1})
    if repeated:
        raise ValueError(f"--c-primes {' '.join(map(str, args.c_primes))}: c' = {repeated} given "
                         f"more than once")


def default_out(spec):
    """A train_ae.py run keeps its evaluation; anything else writes to runs/eval_ae."""
    if spec.endswith(".pt"):
        return os.path.dirname(os.path.abspath(spec))
    return spec if os.path.isdir(spec) and run.latest_checkpoint(spec) else "runs/eval_ae"


# ------------------------------------------------------------------------------------------------
# The decoders: the AE's own (shared by every c'), or one fine-tuned per c' (Fig. 3)
# ------------------------------------------------------------------------------------------------

def parse_decoders(items):
    """--decoders c'=RUN ... -> {c': RUN}; ValueError for an item of another form or a c' given
    twice."""
    specs = {}
    for item in items:
        cp, sep, spec = item.partition("=")
        if not sep or not cp.strip().isdigit() or not spec:
            raise ValueError(f"--decoders {item}: expected c'=RUN, e.g. 8=runs/ae-decoder-c8 (a "
                             f"train_ae.py --finetune-decoder 8 run or its .pt)")
        if int(cp) in specs:
            raise ValueError(f"--decoders: c' = {int(cp)} is given twice ({specs[int(cp)]} and "
                             f"{spec})")
        specs[int(cp)] = spec
    return specs


def load_decoders(specs, ae, ae_source, device):
    """{c': RUN} -> {c': checkpoints.Loaded, the fine-tuned AE whose .decode serves c'}, each
    checked before any image is read: a train_ae.py --finetune-decoder checkpoint, fine-tuned for
    that c', whose frozen encoder (the checkpoint holds it) is `ae`'s encoder bit for bit. Only the
    decoder is kept. Raises ValueError with one line."""
    own = ae.encoder.state_dict()
    decoders = {}
    for cp, spec in sorted(specs.items()):
        option = f"--decoders {cp}={spec}"
        path = run.latest_checkpoint(spec) if os.path.isdir(spec) else spec
        if path is None or not os.path.isfile(path):
            raise ValueError(f"{option}: no train_ae.py checkpoint there (run train_ae.py --init "
                             f"{ae_source} --finetune-decoder {cp} --out {spec} first)")
        record = run.read_checkpoint(path, mmap=True).get("finetuned_decoder")
        if record is None:
            raise ValueError(f"{option}: {path} is not a decoder fine-tuned with train_ae.py "
                             f"--finetune-decoder (it records no c')")
        if record["c_prime"] != cp:
            raise ValueError(f"{option}: {path} was fine-tuned for c' = {record['c_prime']}, "
                             f"not c' = {cp}")
        tuned = checkpoints.load_ae(path, device, option=option)
        theirs = tuned.model.encoder.state_dict()
        if tuned.name != ae.name or theirs.keys() != own.keys() or \
                any(not torch.equal(theirs[k], own[k]) for k in own):
            raise ValueError(f"{option}: {path} was fine-tuned on another encoder "
                             f"({record['encoder']}), not the one of --ae {ae_source}")
        tuned.model.encoder = None  # only its decoder is used: the latents come from `ae`
        decoders[cp] = tuned
    return decoders


def protocol(c, c_primes, tuned):
    """How the c' were decoded, in words, for the table, eval.json and the picture. At c' = c the
    AE's own decoder is the protocol too: it was trained for c' = c, and DC-Gen's per-c' decoders
    stop below c."""
    shared = [cp for cp in c_primes if cp < c and cp not in tuned]
    if shared:
        return f"{SHARED} at c' = {shared}; fine-tuned at c' = {sorted(tuned)}" if tuned else \
            SHARED
    own = c in c_primes and c not in tuned
    return "Fig. 3's protocol: a decoder fine-tuned for each c'" + \
        (" < c, the AE's own at c' = c" if own else "")


# ------------------------------------------------------------------------------------------------
# The metrics (Table 1, Fig. 3) and the pictures (Fig. 2a, Fig. 3)
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def enlarge(x, side=128):
    """Small images (N, 3, H, W) made at least `side` px by a whole nearest-neighbour factor, so
    that a picture's labels fit above its columns (a 32 px column is narrower than "c'=64")."""
    if x.shape[-1] >= side:
        return x
    return F.interpolate(x, scale_factor=-(-side // x.shape[-1]), mode="nearest")


@torch.no_grad()
def figures(ae, decoders, x, note, paths):
    """Fig. 3 at paths["fig3"] (rows: the images x; columns: the input, then each c' decoded by
    decoders[c'], labelled shared or fine-tuned; the rows' label: `note`) and Fig. 2a at
    paths["fig2a"] (the channel-averaged z beside each input)."""
    z = ae.encode(x)  # (n, c, h, w)
    c_primes = sorted(decoders)
    cols = [x] + [decoders[cp].decode(z[:, :cp]).float().clamp(-1, 1) for cp in c_primes]
    labels = ["input"] + [f"c'={cp}\n{'shared' if decoders[cp] is ae else 'fine-tuned'}"
                          for cp in c_primes]
    rows = ["\n".join(textwrap.wrap(note.replace("c' = ", "c'="), 24))] * len(x)  # one, narrow
    data_lib.save_grid(enlarge(torch.stack(cols, 1).flatten(0, 1)), paths["fig3"], nrow=len(cols),
                       col_labels=labels, row_labels=rows)  # row-major by image
    avg = z.float().mean(1, keepdim=True)  # (n, 1, h, w): Fig. 2a's channel-wise average feature
    lo, hi = avg.amin(dim=(1, 2, 3), keepdim=True), avg.amax(dim=(1, 2, 3), keepdim=True)
    avg = ((avg - lo) / (hi - lo + 1e-8) * 2 - 1).expand(-1, 3, -1, -1)  # per image in [-1, 1]
    avg = F.interpolate(avg, size=x.shape[-2:], mode="nearest")  # (n, 3, H, W)
    data_lib.save_grid(enlarge(torch.stack([x, avg], 1).flatten(0, 1)), paths["fig2a"], nrow=2,
                       col_labels=["input", "channel\nmean"])


# ------------------------------------------------------------------------------------------------
# Signals and the written files: a stopped evaluation leaves --out as it was
# ------------------------------------------------------------------------------------------------

class Stop:
    """SIGTERM / SIGINT (Ctrl-C, to the process or its whole group) leave at once through
    SystemExit(128 + signal), removing temp files on the way out. Between hold(True) and
    hold(False) a signal waits, and hold(False) then stops: while a batch is handed over by the
    DataLoader workers, and while the finished files are renamed into place."""

    def __init__(self):
        self.signum, self.holding, self.wrote = None, False, None
        self.previous = {sig: signal.signal(sig, self.handle)
                         for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(self, signum, frame):
        self.signum = signum
        if not self.holding:
            raise SystemExit(128 + signum)

    def hold(self, holding):
        self.holding = holding
        if not holding and self.signum is not None:
            raise SystemExit(128 + self.signum)

    def restore(self):
        """Python's handlers back (main() may run again in this process: toy.py, the tests)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def batches(loader, stop):
    """The batches of `loader`, each received whole: leaving halfway through the hand-over of a
    worker's shared memory makes that worker print a traceback, so a signal waits for the batch."""
    it = iter(loader)
    while True:
        stop.hold(True)
        try:
            batch = next(it, None)
        finally:
            stop.hold(False)
        if batch is None:
            return
        yield batch


def write_outputs(out, report, figure_writer, stop):
    """eval.json (the dict `report`) and the two figures into `out`, as one set: each written to a
    temp file there first, then all renamed into place while `stop` holds signals back, so an
    interrupted write leaves the folder as it was. figure_writer({"fig3", "fig2a": temp path})
    draws the PNGs. -> the paths written (also in stop.wrote)."""
    os.makedirs(out, exist_ok=True)
    names = {"eval": "eval.json", "fig3": "fig3_partial_channels.png",
             "fig2a": "fig2a_latent_mean.png"}
    temps = {}
    try:
        for key, name in names.items():  # unique to this writer; PIL reads the format from ".png"
            fd, temps[key] = tempfile.mkstemp(dir=out, prefix=name + ".",
                                              suffix=".tmp" + os.path.splitext(name)[1])
            os.close(fd)
        with open(temps["eval"], "w") as fh:
            fh.write(json.dumps(report, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        figure_writer({key: path for key, path in temps.items() if key != "eval"})
        stop.hold(True)
        for key, name in names.items():
            os.replace(temps.pop(key), os.path.join(out, name))
        stop.wrote = [os.path.join(out, name) for name in names.values()]
    finally:
        for path in temps.values():
            if os.path.exists(path):
                os.remove(path)
        stop.hold(False)  # a signal that came during the renames stops here, every file written
    return stop.wrote


# ------------------------------------------------------------------------------------------------
# The script
# ------------------------------------------------------------------------------------------------

def main(args):
    """-> the rows of evaluation.reconstruction_metrics() with the decoder of each (rank 0 also
    prints the table and writes eval.json and the two figures)."""
    stop = Stop()
    try:
        return evaluate_ae(args, stop)
    except SystemExit as e:
        by_signal = stop.signum is not None and e.code == 128 + stop.signum
        if by_signal and os.environ.get("RANK", "0") == "0":
            done = f"the results were written first: {', '.join(stop.wrote)}" if stop.wrote else \
                "nothing was written; run the same command again (an evaluation starts over)"
            print(f"stopped by {signal.Signals(stop.signum).name}: {done}", file=sys.stderr,
                  flush=True)
        raise
    finally:
        stop.restore()


def evaluate_ae(args, stop):
    # Setup: --out, the AE (EMA weights of a train_ae.py run), its decoders per c', the data, the
    # metric networks; bad input fails first, before any image is read.
    rank, world_size, device = fsdp.setup()
    args.bf16, precision = cli.precision(device, args.bf16, evaluation=True)  # fp32 unless --bf16
    error, model = None, None
    try:
        check_args(args)
        out = args.out or default_out(args.ae)
        run.check_out(out)  # created when the results are written
        specs = parse_decoders(args.decoders or [])
        frozen = checkpoints.load_ae(args.ae, device)
        model, source = frozen.model, frozen.source
        c_primes = sorted(args.c_primes or model.c_prime_candidates)
        if any(not 1 <= cp <= model.c for cp in c_primes):
            raise ValueError(f"--c-primes {c_primes} must lie in [1, c={model.c}]")
        extra = sorted(set(specs) - set(c_primes))
        if extra:
            raise ValueError(f"--decoders for c' = {extra}, which are not evaluated "
                             f"(c' = {c_primes}): add them to --c-primes")
        tuned = load_decoders(specs, model, source, device)
        # The resolution the AE was trained at (a train_ae.py run, an export of one), else the
        # protocol's.
        protocol_resolution = 32 if model.config.recipe == "tiny" else 256
        resolution = args.resolution or frozen.resolution or protocol_resolution
        if resolution % model.f:
            raise ValueError(f"--resolution {resolution} is not a multiple of {model.name}'s "
                             f"f={model.f}")
        # Toy: a held-out set (seed 1); train_ae.py trains on seed 0.
        dataset = data_lib.build_dataset(args.data, resolution, toy_size=args.images, seed=1)
    except ValueError as e:
        error = str(e)
    fsdp.stop_if(error, rank)
    decoders = {cp: tuned[cp].model if cp in tuned else model for cp in c_primes}
    note = protocol(model.c, c_primes, tuned)
    dataset = torch.utils.data.Subset(dataset, range(min(len(dataset), args.images)))
    loader = data_lib.make_loader(dataset, args.batch_size, rank, world_size, args.num_workers,
                                  device.type == "cuda")
    lp, inception, notes = None, None, []
    try:
        lp = (None if args.no_lpips
              else ae_loss.build_lpips(random_weights=args.lpips_random).to(device))
    except RuntimeError as e:
        notes.append(f"LPIPS not measured: {e}, or pass --no-lpips")
    if not args.no_rfid:
        try:
            inception = fid_lib.load_inception(args.inception_weights, device)
        except FileNotFoundError as e:
            notes.append(f"rFID not measured: {e}")

    # Metrics per c', each with its decoder.
    if rank == 0:
        print(f"evaluating {model.name} on {len(dataset)} images at {resolution}px, "
              f"c' = {c_primes}; {note}", flush=True)
    shard = batches(loader, stop)  # this rank's (x, y, bad) batches
    results, total, skipped = evaluation.reconstruction_metrics(model, decoders, shard, device,
                                                                lp, inception, args.bf16)
    for r in results:  # which decoder made each row
        r["decoder"] = "fine-tuned" if r["c_prime"] in tuned else "shared"
        r["decoder_source"] = tuned[r["c_prime"]].source if r["c_prime"] in tuned else source

    # Report: the table (stdout), eval.json (strict JSON: an unmeasured LPIPS is null) and the two
    # figures, written together once everything is known.
    if rank == 0:
        for line in notes:
            print(line, file=sys.stderr)
        vgg_note = " (LPIPS with a RANDOM VGG: not meaningful)" if args.lpips_random else ""
        random_inception = args.inception_weights == "random"
        inception_note = " (RANDOM Inception: rFID not meaningful)" if random_inception else ""
        flags = vgg_note + inception_note
        print(f"\n{model.name} ({source}): reconstruction from the first c' channels, {total} "
              f"images at {resolution}px ({skipped} unreadable skipped), AE in {precision}"
              f"{flags}; decoders: {note}")
        print("| c' | decoder | PSNR (dB) | LPIPS | rFID |\n|---:|---|---:|---:|---:|")
        for r in results:
            lpips = "-" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
            rfid = f"{r['rfid']:.2f}" if "rfid" in r else "-"
            decoder = "shared" if r["decoder"] == "shared" else f"fine-tuned for c'={r['c_prime']}"
            print(f"| {r['c_prime']} | {decoder} | {r['psnr']:.2f} | {lpips} | {rfid} |")
        rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                for r in results]
        report = {"ae": source, "images": total, "resolution": resolution, "skipped": skipped,
                  "bf16": args.bf16, "decoders": note, "results": rows}
        x = torch.stack([dataset[i][0] for i in range(min(8, len(dataset)))]).to(device)
        try:
            draw = lambda temps: figures(model, decoders, x, note, temps)  # noqa: E731
            paths = write_outputs(out, report, draw, stop)
        except OSError as e:  # a full or read-only disk: one line, and the folder is as it was
            fsdp.fail(run.write_error(os.path.join(out, "eval.json"), e), rank, code=4)
        print(f"wrote {', '.join(paths)}")
    fsdp.cleanup()
    return results


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--ae", default="runs/ae",
                        help="train_ae.py run folder / .pt, a DC-Gen or diffusers folder, "
                        "or a random:NAME (random weights of a registry AE)")
    parser.add_argument("--data", default="toy",
                        help="'toy' (a held-out set) or a validation image folder")
    parser.add_argument("--images", type=int, default=50_000,
                        help="evaluate the first N images (DC-AE: 50,000 val)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="ADM center crop (default: the AE's training resolution when known, "
                        "else 256; 32 for tiny AEs)")
    parser.add_argument("--c-primes", type=int, nargs="+", default=None,
                        help="the c' to evaluate, each once, reported in increasing order "
                        "(default: the AE's candidate list)")
    parser.add_argument("--decoders", nargs="+", default=None, metavar="C'=RUN",
                        help="decode these c' with their own decoders (Fig. 3's protocol): "
                        "train_ae.py --finetune-decoder runs on --ae's encoder, e.g. "
                        "8=runs/ae-decoder-c8 16=runs/ae-decoder-c16 (default: the AE's shared "
                        "decoder for every c', not the paper's protocol below c)")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast for the AE (default: fp32, the evaluation protocol)")
    parser.add_argument("--lpips-random", action="store_true",
                        help="random VGG for LPIPS (smoke runs; not meaningful)")
    parser.add_argument("--inception-weights", default=None,
                        help="pt_inception-2015-12-05-6726825d.pth for rFID (default: the torch "
                        "hub cache, downloaded when online; 'random' for smoke runs)")
    parser.add_argument("--no-rfid", action="store_true",
                        help="skip rFID (no Inception weights at hand)")
    parser.add_argument("--no-lpips", action="store_true",
                        help="skip LPIPS (no VGG16 weights at hand)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--out", default=None,
                        help="where eval.json and the figures go (default: the AE's run folder, "
                        "else runs/eval_ae)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
