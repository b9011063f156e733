"""Convergence curves: a metric against training steps, images seen and device-hours, one line per
run (paper Fig. 5b: the training curves with and without augmented diffusion training; Fig. 1c:
DC-AE-f32c32 against DC-AE-1.5-f64c128 at equal cost). The numbers come from the runs' own
metrics.jsonl: the evaluations that `train_diffusion.py --eval-every` writes (fid, sfid, is_mean,
precision, recall, fid_c16, ...), or any other metric logged the same way (toy.py's fd_toy). Runs
given as `LABEL=DIR,DIR,...` are drawn as one line, the mean over the folders (seeds) with a band
of +- one standard deviation.

    python curves.py runs/usit-h-aug runs/usit-h-plain   # FID against steps, images, hours
    python curves.py "structured=runs/s0,runs/s1,runs/s2" "plain=runs/p0,runs/p1,runs/p2" \
        --metric fid_c16
    python curves.py runs/usit2b-f32c32 runs/usit2b-f64c128 --paper fig1 --out fig1.png
"""
import json
import os
import sys

import numpy as np

import cli

AXES = {"step": "training steps", "images_seen": "images seen",
        "device_hours": "device-hours (GPU or CPU process)"}

# The paper's numbers a curve may approach, as horizontal lines (the paper gives end points, not
# curves; the step at which each was reached is not published, so none is made up). Table 5's cells
# are confirmed by its text for "neither technique" and "both"; the text does not say which single
# technique gave which of the other two.
PAPER = {
    "table5-dit": [("Table 5, DiT-XL f32c128: neither technique", 26.44),
                   ("Table 5, DiT-XL: both", 17.31)],
    "table5-usit": [("Table 5, USiT-H f32c128: neither technique", 8.45),
                    ("Table 5, USiT-H: both", 6.10)],
    "fig1": [("Table 4, USiT-2B + DC-AE-f32c32 (112 img/s)", 2.90),
             ("Table 4, USiT-2B + DC-AE-1.5-f64c128 (450 img/s)", 2.18)],
}


def read_curve(folder, metric):
    """The records of one run that hold `metric`: {"step", "images_seen", "device_hours", metric}
    each, in step order; a step logged twice (a resumed run whose log kept both) counts once, the
    later record."""
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        raise ValueError(f"{folder}: no metrics.jsonl "
                         f"(not a run folder of train_diffusion.py or toy.py)")
    points = {}
    with open(path) as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a kill
                continue
            if record.get(metric) is not None and "step" in record:
                points[record["step"]] = record
    if not points:
        raise ValueError(f"{folder}/metrics.jsonl holds no {metric!r}: "
                         f"evaluate with train_diffusion.py --eval-every")
    return [points[s] for s in sorted(points)]


def parse_run(spec):
    """`LABEL=DIR,DIR,...` or `DIR` -> (label, [folders])."""
    label, _, folders = spec.rpartition("=")
    folders = folders.split(",")
    return label or os.path.basename(os.path.normpath(folders[0])), folders


def group_curve(folders, metric, x):
    """-> (x, mean, std) over the folders (seeds) at the steps every one of them was evaluated at;
    x is the mean over the folders too (images seen agree; device-hours differ a little from run to
    run)."""
    curves = [{r["step"]: r for r in read_curve(f, metric) if r.get(x) is not None}
              for f in folders]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        raise ValueError(f"{', '.join(folders)}: no step at which every run was evaluated")
    xs = np.array([[c[s][x] for s in steps] for c in curves]).mean(0)  # (points,)
    values = np.array([[c[s][metric] for s in steps] for c in curves])  # (runs, points)
    std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(len(steps))
    return xs, values.mean(0), std


def plot(runs, metric, path, axes=tuple(AXES), paper=None, title=None):
    """runs: [(label, [folders])] -> one PNG with a panel per x axis; paper: a key of PAPER
    (horizontal lines)."""
    import matplotlib  # plots only: no training code imports it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 4.0), dpi=120,
                               squeeze=False)
    for ax, x in zip(panels[0], axes):
        for label, folders in runs:
            xs, mean, std = group_curve(folders, metric, x)
            suffix = f" ({len(folders)} runs)" if len(folders) > 1 else ""
            line, = ax.plot(xs, mean, marker="o", label=label + suffix)
            if len(folders) > 1:
                ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        for text, value in PAPER.get(paper, []):
            ax.axhline(value, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"{text}: {value:g}", (0.01, value), xycoords=("axes fraction", "data"),
                        fontsize=7, color="dimgrey", va="bottom")
        ax.set_xlabel(AXES[x])
        # 1e-4 device-hours: an offset, not 0.0001.
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 5))
        lower_is_better = metric.startswith(("fid", "sfid", "fd"))
        ax.set_ylabel(f"{metric} (lower is better)" if lower_is_better else metric)
        ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(args):
    try:
        runs = [parse_run(spec) for spec in args.runs]
        for _, folders in runs:
            for folder in folders:
                read_curve(folder, args.metric)  # every folder checked before drawing
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    plot(runs, args.metric, args.out, tuple(args.x), args.paper)
    print(f"wrote {args.out}: {args.metric} of {len(runs)} run(s) against {', '.join(args.x)}")


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="a run folder, or LABEL=DIR,DIR,... "
                             "(seeds, drawn as their mean +- std)")
    parser.add_argument("--metric", default="fid",
                        help="a key of the evaluation records, "
                             "e.g. fid, sfid, is_mean, fid_c16, fd_toy")
    parser.add_argument("--x", nargs="+", choices=list(AXES), default=list(AXES),
                        help="the x axes, one panel each")
    parser.add_argument("--paper", choices=sorted(PAPER), default=None,
                        help="the paper's end points as lines (default: none)")
    parser.add_argument("--out", default="curves.png", help="the PNG to write")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
