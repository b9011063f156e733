"""The CFG search: the classifier-free guidance scale that minimises FID, for a model whose
scale was not published (paper Table 4, "w/ CFG" column, Sec. 4.2; DESIGN.md §5b: DC-Gen picks
unpublished scales with `search_optimal_cfg_scale`, `c2icore/trainer.py`). A ternary search over
DC-Gen's candidate scales in [LO, HI], assuming FID falls, then rises; each scale is evaluated
once, by a metrics_at(scale) that sample.py builds (the same labels and noise at every scale).
Resumable: each finished scale goes to OUT/cfg_search.json at once; the end is OUT/cfg_search.md
(FID and IS per scale) and OUT/cfg_search.png (FID against the scale, the best marked).

    python sample.py --ckpt dc-ae-f64c128-1.5-usit-2b-in-512px --search-cfg 1.0 2.0 \\
        --num-samples 10000 --fid stats/in512_train.npz --out runs/cfg  # the release brings its AE
"""
import json
import os

import run

# DC-Gen's candidate scales (c2icore/trainer.py); --search-cfg LO HI searches those in [LO, HI].
CFG_CANDIDATES = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0,
                  2.2, 2.4, 2.6, 2.8, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def ternary_search(candidates, fid_of):
    """The candidate that minimises fid_of, for a FID that falls, then rises with the scale
    (as DC-Gen assumes): the interval shrinks by a third per two evaluations; each scale is
    evaluated at most once. -> the best scale."""
    lo, hi = 0, len(candidates) - 1
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3  # lo < m1 < m2 < hi
        if fid_of(candidates[m1]) < fid_of(candidates[m2]):
            hi = m2  # the minimum is not right of m2
        else:
            lo = m1  # ... nor left of m1
    return min(candidates[lo:hi + 1], key=fid_of)


def read_search(out, config):
    """The finished scales of an earlier run of the same CFG search in OUT/cfg_search.json
    ({scale: metrics}); a search of another configuration (`config`: what decides the numbers) in
    that folder is refused."""
    path = os.path.join(out, "cfg_search.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as fh:
        old = json.load(fh)
    if old["config"] != config:
        diff = {k: (old["config"].get(k), v) for k, v in config.items()
                if old["config"].get(k) != v}
        raise ValueError(f"--out {out} holds a CFG search of another configuration "
                         f"(old, new: {diff}); pass another --out or delete it")
    return {float(k): v for k, v in old["results"].items()}


def search_cfg(metrics_at, lo, hi, out, config, results, rank):
    """metrics_at(scale) -> the metrics dict of one evaluation at that CFG scale. Each finished
    scale is written to OUT/cfg_search.json at once (with the `config` that decides the numbers),
    so a rerun of the command evaluates only the scales it has not (`results`: read_search's);
    then the table (stdout, OUT/cfg_search.md) and the plot of FID against the scale
    (OUT/cfg_search.png). -> (best scale, {scale: metrics})."""
    path = os.path.join(out, "cfg_search.json")

    def fid_of(scale):
        if scale not in results:
            results[scale] = metrics_at(scale)
            if rank == 0:
                record = {"config": config, "results": results}
                run.atomic_write(path, lambda fh: fh.write(json.dumps(record, indent=2).encode()))
                print(f"CFG {scale:g}: FID {results[scale]['fid']:.4f}", flush=True)
        return results[scale]["fid"]
    candidates = [s for s in CFG_CANDIDATES if lo <= s <= hi] or [lo]
    best = ternary_search(candidates, fid_of)
    if rank == 0:
        rows = [f"| {s:g} | {r['fid']:.4f} | {r['is_mean']:.2f} |{' best' if s == best else ''}"
                for s, r in sorted(results.items())]
        table = "\n".join(["| CFG scale | FID | IS |", "|---:|---:|---:|", *rows])
        run.atomic_write(os.path.join(out, "cfg_search.md"),
                         lambda fh: fh.write((table + "\n").encode()))
        plot_search(results, best, os.path.join(out, "cfg_search.png"))
        print(f"{table}\nbest CFG scale in [{lo:g}, {hi:g}]: {best:g} "
              f"(FID {results[best]['fid']:.4f}); wrote {out}/cfg_search.md and cfg_search.png")
    return best, results


def plot_search(results, best, path):
    """FID against the CFG scale, the best one marked."""
    import matplotlib  # plots only
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scales = sorted(results)
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    ax.plot(scales, [results[s]["fid"] for s in scales], marker="o")
    ax.plot([best], [results[best]["fid"]], marker="*", markersize=14, color="tab:red",
            linestyle="", label=f"best: {best:g}")
    ax.set_xlabel("CFG scale")
    ax.set_ylabel("FID (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
