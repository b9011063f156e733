"""toy.py --quick end to end (CI): all tables, the figures, the sample grid, a result per Table 5
cell and seed."""
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_toy_quick_produces_every_table_and_picture(tmp_path):
    out = tmp_path / "toy"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "toy.py"), "--quick",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (out / "toy_results.md").read_text()
    assert text in proc.stdout  # the tables are printed too
    assert "A smoke run" in text and "not evidence" in text
    # Table 1 / Fig. 3: one PSNR row per AE and decoder (fine-tuned decoders for the two AEs of
    # Table 5), one column per c', and eval_ae.py's record of each column's decoder
    psnr_table = text[text.index("| AE | decoder | PSNR"):].split("\n\n")[0]
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \|(.*)\|$", psnr_table, re.M)[1:]  # after the rule
    assert [(name, decoder) for name, decoder, _ in rows] == [
        ("unstructured", "shared"), ("unstructured", "fine-tuned per c'"),
        ("structured, K = 1", "shared"), ("structured, K = 1", "fine-tuned per c'"),
        ("structured, K = 2 with c", "shared")], psnr_table
    for _, _, values in rows:
        psnr = [float(v) for v in values.split("|")]
        assert len(psnr) == 4 and all(5 < p < 60 for p in psnr)
    for name in ("unstructured", "structured_K1"):
        tuned = json.loads((out / f"ae_{name}/eval_finetuned/eval.json").read_text())
        assert [(r["c_prime"], r["decoder"]) for r in tuned["results"]] == \
            [(c, "fine-tuned") for c in (8, 16, 32, 64)]
        assert tuned["decoders"] == "Fig. 3's protocol: a decoder fine-tuned for each c'"
        shared = json.loads((out / f"ae_{name}/eval.json").read_text())
        assert shared["decoders"] == "shared decoder (not the paper's protocol)"
    # Table 5: four cells (structured x augmented), FD_toy and accuracy as mean ± std over 3 seeds
    cells = re.findall(r"^\| (✓?) \| (✓?) \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+)% \|$",
                       text, re.M)
    assert sorted(c[:2] for c in cells) == [("", ""), ("", "✓"), ("✓", ""), ("✓", "✓")], text
    assert "FD_toy" in text and "not** the Inception FID" in text and "seeds [0, 1, 2]" in text
    for name in ("toy_fig3_partial_channels.png", "toy_fig2a_latent_mean.png",
                 "toy_samples_structured_aug.png", "toy_fig5b_curves.png"):
        # written, and shown in toy_results.md
        assert (out / name).stat().st_size > 0 and f"({name})" in text
    # every diffusion run was evaluated at each point of the curve
    runs = [d for d in os.listdir(out) if d.startswith("usit_")]
    assert len(runs) == 12
    for d in runs:
        assert len([s for s in os.listdir(out / d) if s.startswith("samples_")]) == 2
    # Offline: one line says what is missing and what is skipped; no download chatter, no
    # deprecation warnings.
    assert "Downloading" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    lpips = [line for line in proc.stderr.splitlines() if "LPIPS" in line]
    assert len(lpips) <= 1 and all("vgg16-397923af.pth" in line and "skipped" in line
                                   for line in lpips), lpips
