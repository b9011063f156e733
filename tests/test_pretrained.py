"""The released DC-Gen class-to-image checkpoints (checkpoints.load_diffusion, Tables 3-4): the
official key layout loads strictly, and the loaded model computes the official function. The
reference forwards below are written from the facts of DESIGN.md §5b (DC-Gen's dit.py / uvit.py),
independently of models.py. Weights are random (no download).

    python -m pytest -q tests/test_pretrained.py
"""
import dataclasses
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ae as ae_lib  # noqa: E402
import checkpoints  # noqa: E402
import models  # noqa: E402
import releases  # noqa: E402
from test_checkpoints import hub  # noqa: E402, F401  a Hugging Face cache on disk, offline

# The 14 released names -> (architecture, depth, hidden, heads, c, tokens per side), read from
# DC-Gen's c2i_model_zoo.py / uvit.py / dit.py (all 512 px: f32 -> 16x16, f64 -> 8x8 latents).
F32, F64, F15 = (32, 16), (128, 8), (128, 8)
RELEASED = {
    "dc-ae-f32c32-in-1.0-dit-xl-in-512px": ("dit", 28, 1152, 16, *F32),
    "dc-ae-f32c32-in-1.0-dit-xl-in-512px-trainbs1024": ("dit", 28, 1152, 16, *F32),
    "dc-ae-f32c32-in-1.0-sit-xl-in-512px": ("sit", 28, 1152, 16, *F32),
    "dc-ae-f32c32-in-1.0-uvit-s-in-512px": ("uvit", 12, 512, 8, *F32),
    "dc-ae-f32c32-in-1.0-uvit-h-in-512px": ("uvit", 28, 1152, 16, *F32),
    "dc-ae-f32c32-in-1.0-uvit-2b-in-512px": ("uvit", 28, 2048, 32, *F32),
    "dc-ae-f32c32-in-1.0-usit-h-in-512px": ("uvit", 28, 1152, 16, *F32),
    "dc-ae-f32c32-in-1.0-usit-2b-in-512px": ("uvit", 28, 2048, 32, *F32),
    "dc-ae-f64c128-in-1.0-uvit-h-in-512px": ("uvit", 28, 1152, 16, *F64),
    "dc-ae-f64c128-in-1.0-uvit-h-in-512px-train2000k": ("uvit", 28, 1152, 16, *F64),
    "dc-ae-f64c128-in-1.0-uvit-2b-in-512px": ("uvit", 28, 2048, 32, *F64),
    "dc-ae-f64c128-in-1.0-uvit-2b-in-512px-train2000k": ("uvit", 28, 2048, 32, *F64),
    "dc-ae-f64c128-1.5-usit-2b-in-512px": ("uvit", 28, 2048, 32, *F15),
    "dc-ae-f64c128-1.5-usit-3b-in-512px": ("uvit", 56, 2048, 32, *F15),
}


def official_shapes(arch, depth, D, c, side, num_classes=1000):
    """Key -> shape of DC-Gen's DCAE_Diffusion_HF state dict (patch size 1, MLP ratio 4)."""
    block = {"attn.proj.weight": (D, D), "attn.proj.bias": (D,),
             "mlp.fc1.weight": (4 * D, D), "mlp.fc1.bias": (4 * D,),
             "mlp.fc2.weight": (D, 4 * D), "mlp.fc2.bias": (D,)}
    if arch in ("dit", "sit"):
        out = 2 * c if arch == "dit" else c
        shapes = {"pos_embed": (1, side * side, D),
                  "x_embedder.proj.weight": (D, c, 1, 1), "x_embedder.proj.bias": (D,),
                  "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
                  "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
                  "y_embedder.embedding_table.weight": (num_classes + 1, D),
                  "final_layer.linear.weight": (out, D), "final_layer.linear.bias": (out,),
                  "final_layer.adaLN_modulation.1.weight": (2 * D, D),
                  "final_layer.adaLN_modulation.1.bias": (2 * D,)}
        for i in range(depth):
            shapes.update({f"blocks.{i}.{k}": v
                           for k, v in {**block, "attn.qkv.weight": (3 * D, D),
                                        "attn.qkv.bias": (3 * D,),
                                        "adaLN_modulation.1.weight": (6 * D, D),
                                        "adaLN_modulation.1.bias": (6 * D,)}.items()})
    else:
        uvit_block = {**block, "norm1.weight": (D,), "norm1.bias": (D,),
                      "attn.qkv.weight": (3 * D, D), "norm2.weight": (D,), "norm2.bias": (D,)}
        shapes = {"pos_embed": (1, 2 + side * side, D), "patch_embed.proj.weight": (D, c, 1, 1),
                  "patch_embed.proj.bias": (D,),
                  "label_emb.embedding_table.weight": (num_classes + 1, D),
                  "norm.weight": (D,), "norm.bias": (D,),
                  "decoder_pred.weight": (c, D), "decoder_pred.bias": (c,)}
        shapes.update({f"mid_block.{k}": v for k, v in uvit_block.items()})
        for i in range(depth // 2):
            shapes.update({f"in_blocks.{i}.{k}": v for k, v in uvit_block.items()})
            shapes.update({f"out_blocks.{i}.{k}": v
                           for k, v in {**uvit_block, "skip_linear.weight": (D, 2 * D),
                                        "skip_linear.bias": (D,)}.items()})
    return {"diffusion_model." + k: v for k, v in shapes.items()}


def random_official(arch, depth, D, c, side, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=g) * (0.3 if len(v) > 1 else 0.1)
            for k, v in official_shapes(arch, depth, D, c, side, num_classes).items()}


# ------------------------------------------------------------------------------------------------
# Reference forwards, from the facts (not from models.py)

def sinusoid(t, dim):
    half = dim // 2
    # fp32, as the official
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def attention(h, w_qkv, b_qkv, w_proj, b_proj, heads):
    N, T, D = h.shape
    q, k, v = F.linear(h, w_qkv, b_qkv).reshape(N, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // heads), dim=-1)
    return F.linear((a @ v).transpose(1, 2).reshape(N, T, D), w_proj, b_proj)


def reference_dit(sd, x, t, y, heads):
    """facebookresearch/DiT at patch size 1: adaLN-Zero blocks, tanh-GELU, 256-d time sinusoid
    through an MLP."""
    sd = {k[len("diffusion_model."):]: v for k, v in sd.items()}
    N, c, H, W = x.shape
    D = sd["x_embedder.proj.weight"].shape[0]
    h = F.conv2d(x, sd["x_embedder.proj.weight"],
                 sd["x_embedder.proj.bias"]).flatten(2).transpose(1, 2) + sd["pos_embed"]
    temb = F.linear(F.silu(F.linear(sinusoid(t, 256).to(x.dtype), sd["t_embedder.mlp.0.weight"],
                                    sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    cond = temb + sd["y_embedder.embedding_table.weight"][y]
    norm = lambda v: F.layer_norm(v, (D,), eps=1e-6)  # noqa: E731
    i = 0
    while f"blocks.{i}.attn.qkv.weight" in sd:
        p = f"blocks.{i}."
        m = F.linear(F.silu(cond), sd[p + "adaLN_modulation.1.weight"],
                     sd[p + "adaLN_modulation.1.bias"]).chunk(6, 1)
        a = attention(norm(h) * (1 + m[1][:, None]) + m[0][:, None],
                      sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"],
                      sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"], heads)
        h = h + m[2][:, None] * a
        z = norm(h) * (1 + m[4][:, None]) + m[3][:, None]
        z = F.linear(F.gelu(F.linear(z, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]),
                            approximate="tanh"),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        h, i = h + m[5][:, None] * z, i + 1
    shift, scale = F.linear(F.silu(cond), sd["final_layer.adaLN_modulation.1.weight"],
                            sd["final_layer.adaLN_modulation.1.bias"]).chunk(2, 1)
    out = F.linear(norm(h) * (1 + scale[:, None]) + shift[:, None],
                   sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])  # (N, T, c_out)
    return out.transpose(1, 2).reshape(N, -1, H, W)


def reference_uvit(sd, x, t, y, heads):
    """DC-Gen's UViT at patch size 1, with its adaptive channels: x may hold c' <= c channels; the
    patch embedding uses weight[:, :c'] and decoder_pred its first c' rows. Tokens [label, time,
    patches], time = raw sinusoid."""
    sd = {k[len("diffusion_model."):]: v for k, v in sd.items()}
    N, c_prime, H, W = x.shape
    D = sd["patch_embed.proj.weight"].shape[0]
    h = F.conv2d(x, sd["patch_embed.proj.weight"][:, :c_prime],
                 sd["patch_embed.proj.bias"]).flatten(2).transpose(1, 2)
    h = torch.cat([sd["label_emb.embedding_table.weight"][y][:, None],
                   sinusoid(t, D).to(x.dtype)[:, None], h], 1) + sd["pos_embed"]

    def block(h, p):
        if p + "skip_linear.weight" in sd:
            h = F.linear(torch.cat([h, skips.pop()], -1), sd[p + "skip_linear.weight"],
                         sd[p + "skip_linear.bias"])
        h = h + attention(F.layer_norm(h, (D,), sd[p + "norm1.weight"], sd[p + "norm1.bias"]),
                          sd[p + "attn.qkv.weight"], None,
                          sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"], heads)
        z = F.layer_norm(h, (D,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        z = F.linear(F.gelu(F.linear(z, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        return h + z
    skips, n = [], sum(k.startswith("in_blocks.") and k.endswith("norm1.weight") for k in sd)
    for i in range(n):
        h = block(h, f"in_blocks.{i}.")
        skips.append(h)
    h = block(h, "mid_block.")
    for i in range(n):
        h = block(h, f"out_blocks.{i}.")  # pops the newest skip first
    out = F.linear(F.layer_norm(h, (D,), sd["norm.weight"], sd["norm.bias"]),
                   sd["decoder_pred.weight"][:c_prime],
                   sd["decoder_pred.bias"][:c_prime])[:, 2:]  # (N, T, c')
    return out.transpose(1, 2).reshape(N, c_prime, H, W)


# ------------------------------------------------------------------------------------------------
# Tiny synthetic releases, loaded from a folder in the released layout

# name -> (our registry entry, architecture, depth). The UViTs get depth 6: three long skips, whose
# order (last in, first out, DESIGN.md §5b) a single skip could not show.
TINY = {"test-dit": ("DiT-tiny", "dit", 2), "test-sit": ("SiT-tiny", "sit", 2),
        "test-uvit": ("UViT-tiny", "uvit", 6), "test-usit": ("USiT-tiny", "uvit", 6)}
C, SIDE = 16, 8  # a fake AE with f = 64 at 512 px: 8x8x16 latents


def with_depth(entry, depth):
    """A copy of a registry entry (models.Backbone) with another depth."""
    return dataclasses.replace(entry, depth=depth)


def registered(name):
    """The registry name under which tiny_releases registers the release `name`."""
    ours, _, depth = TINY[name]
    return ours if depth == 2 else f"{ours}-depth{depth}"


# The protocol of each objective, as the release table writes it.
PROTOCOL = {"ddpm": releases.DDPM, "eps": releases.DPM_SOLVER, "flow": releases.DOPRI5}


@pytest.fixture
def tiny_releases(monkeypatch, tmp_path):
    test_ae = ae_lib.dc_ae_15(c=C, widths=(4,) * 7, depths=(0,) + (1,) * 6, scaling_factor=0.5,
                              structured=True)
    monkeypatch.setitem(ae_lib.AE_CONFIGS, "test-ae", test_ae)
    folders = {}
    for name, (ours, arch, depth) in TINY.items():
        if registered(name) != ours:
            monkeypatch.setitem(models.MODELS, registered(name),
                                with_depth(models.MODELS[ours], depth))
        objective = models.MODELS[ours].objective
        record = releases.Release(name, f"dc-ai/{name}", registered(name), "test-ae",
                                  "dc-ai/test-ae", 512, *PROTOCOL[objective], 1.5, None,
                                  (releases.Reported("a test", None),))
        monkeypatch.setitem(releases.RELEASES, name, record)
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_name": f"dc-ai/{name}"}))
        save_file(random_official(arch, depth, 64, C, SIDE, 1000),
                  str(folder / "model.safetensors"))
        folders[name] = str(folder)
    return folders


@pytest.mark.parametrize("name", list(TINY))
def test_synthetic_release_loads_strictly_and_computes_the_official_function(tiny_releases, name):
    from safetensors.torch import load_file
    ckpt = checkpoints.load_diffusion(tiny_releases[name])
    model, objective = ckpt.model, models.MODELS[ckpt.name].objective
    assert (ckpt.name == registered(name) and ckpt.latent_shape == [C, SIDE, SIDE]
            and ckpt.scaling_factor == 0.5)
    assert ckpt.num_classes == 1000 and ckpt.release.name == name and ckpt.ae_name == "test-ae"
    assert ckpt.ae == "dc-ai/test-ae"  # the release's AE, by its hub id
    sd = load_file(os.path.join(tiny_releases[name], "model.safetensors"))
    assert (sum(k.endswith("skip_linear.weight") for k in sd)
            == (3 if TINY[name][1] == "uvit" else 0))  # 3 long skips
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, C, SIDE, SIDE, generator=g)
    y = torch.tensor([3, 999, 1000])  # 1000: the null class of CFG
    # The objectives' time scales: DDPM 0..999, U-ViT's t * 1000 in [1, 1000],
    # flow raw t in [0, 1].
    t = {"ddpm": torch.tensor([0.0, 500.0, 999.0]), "eps": torch.tensor([1.0, 333.3, 1000.0]),
         "flow": torch.tensor([0.0, 0.4, 1.0])}[objective]
    reference = reference_dit if TINY[name][1] in ("dit", "sit") else reference_uvit
    # float64: no round-off
    sd, model, x = {k: v.double() for k, v in sd.items()}, model.double(), x.double()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), reference(sd, x, t, y, heads=4),
                                   rtol=1e-9, atol=1e-9)


def test_adaptive_channels_are_zero_padding(tiny_releases):
    """The 1.5 models slice their input and output projections to c': ours zero-pads the latent and
    keeps the first c' output channels, which must be the official adaptive function (16 of 128
    channels in the paper's models)."""
    from safetensors.torch import load_file
    model = checkpoints.load_diffusion(tiny_releases["test-usit"]).model
    sd = load_file(os.path.join(tiny_releases["test-usit"], "model.safetensors"))
    c_prime = 4
    x = torch.randn(2, c_prime, SIDE, SIDE)
    t, y = torch.tensor([0.2, 0.9]), torch.tensor([5, 7])
    padded = torch.cat([x, torch.zeros(2, C - c_prime, SIDE, SIDE)], dim=1)  # (N, c, H, W)
    sd, model, x, padded = ({k: v.double() for k, v in sd.items()}, model.double(), x.double(),
                            padded.double())
    with torch.no_grad():
        torch.testing.assert_close(model(padded, t, y)[:, :c_prime],
                                   reference_uvit(sd, x, t, y, heads=4), rtol=1e-9, atol=1e-9)


def test_wrong_or_extra_keys_are_named(tiny_releases):
    sd = random_official("uvit", 6, 64, C, SIDE, 1000)
    assert (set(checkpoints.convert_dcgen_state_dict(sd))
            == {k[len("diffusion_model."):] for k in sd})
    extra = dict(sd, **{"diffusion_model.time_embed.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError,
                       match=r"1 unknown keys \['diffusion_model.time_embed.0.weight'\]"):
        checkpoints.convert_dcgen_state_dict(extra)
    missing = {k: v for k, v in sd.items() if k != "diffusion_model.out_blocks.0.skip_linear.bias"}
    with pytest.raises(ValueError, match=r"1 missing keys "
                                         r"\['diffusion_model.out_blocks.0.skip_linear.bias'\]"):
        checkpoints.convert_dcgen_state_dict(missing)
    unprefixed = dict(sd, **{"autoencoder.conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="autoencoder.conv.weight"):
        checkpoints.convert_dcgen_state_dict(unprefixed)
    with pytest.raises(ValueError, match="not a DC-Gen DiT or UViT"):
        checkpoints.convert_dcgen_state_dict({"diffusion_model.foo": torch.zeros(1)})
    # same keys, other width: named by load_state_dict
    wide = random_official("uvit", 6, 32, C, SIDE, 1000)
    with pytest.raises(ValueError, match="do not fit USiT-tiny"):
        checkpoints.from_dcgen("test-usit", wide, "wide")


def test_bad_folders(tmp_path):
    with pytest.raises(ValueError,
                       match=r"no ckpt_\*\.pt in this folder .* and no config\.json"):  # empty
        checkpoints.load_diffusion(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "dc-ai/dc-ae-f99-usit-9b"}))
    with pytest.raises(ValueError, match="config.json and model.safetensors"):
        checkpoints.load_diffusion(str(tmp_path))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="unknown DC-Gen model 'dc-ae-f99-usit-9b'"):
        checkpoints.load_diffusion(str(tmp_path))


# The authors' published CFG scales (efficientvit applications/dc_ae/README.md: "cfg=1.3 for
# mit-han-lab/dc-ae-f32c32-in-1.0-dit-xl-in-512px and cfg=1.5 for all other models", and its
# evaluation commands with 1.2 and 1.15 for the two f32c32 USiTs); absent: none published (SiT-XL,
# the 1.5 USiTs), or not unambiguously (the batch-1024 DiT-XL).
PUBLISHED_CFG = {"dc-ae-f32c32-in-1.0-dit-xl-in-512px": 1.3,
                 "dc-ae-f32c32-in-1.0-uvit-s-in-512px": 1.5,
                 "dc-ae-f32c32-in-1.0-uvit-h-in-512px": 1.5,
                 "dc-ae-f32c32-in-1.0-uvit-2b-in-512px": 1.5,
                 "dc-ae-f32c32-in-1.0-usit-h-in-512px": 1.2,
                 "dc-ae-f32c32-in-1.0-usit-2b-in-512px": 1.15,
                 "dc-ae-f64c128-in-1.0-uvit-h-in-512px": 1.5,
                 "dc-ae-f64c128-in-1.0-uvit-h-in-512px-train2000k": 1.5,
                 "dc-ae-f64c128-in-1.0-uvit-2b-in-512px": 1.5,
                 "dc-ae-f64c128-in-1.0-uvit-2b-in-512px-train2000k": 1.5}
AE_IDS = {"dc-ae-f32c32-in-1.0": "mit-han-lab/dc-ae-f32c32-in-1.0",
          "dc-ae-f64c128-in-1.0": "mit-han-lab/dc-ae-f64c128-in-1.0",
          "dc-ae-f64c128-1.5": "dc-ai/dc-ae-f64c128-1.5"}  # DESIGN.md §4


@pytest.mark.parametrize("name", list(RELEASED))
def test_every_released_name_loads_its_official_layout(name):
    """Meta-device state dicts with the released keys and shapes (no memory): all 14 load strictly
    by name."""
    arch, depth, D, heads, c, side = RELEASED[name]
    sd = {k: torch.empty(v, device="meta")
          for k, v in official_shapes(arch, depth, D, c, side).items()}
    ckpt = checkpoints.from_dcgen(name, sd, name, device="meta")
    model = ckpt.model
    assert ckpt.latent_shape == [c, side, side] and ckpt.release.name == name
    assert ckpt.scaling_factor == {"dc-ae-f32c32-in-1.0": 0.3189, "dc-ae-f64c128-in-1.0": 0.2889,
                                   "dc-ae-f64c128-1.5": 0.5935}[ckpt.ae_name]
    assert ckpt.release.cfg_scale == PUBLISHED_CFG.get(name)
    assert ckpt.ae == AE_IDS[ckpt.ae_name]
    assert model.num_heads == heads and model.hidden_size == D
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in sd.values())


def test_sample_py_runs_a_release_with_the_paper_protocol(tiny_releases, hub, tmp_path, capsys):
    import sample
    argv = ["--ckpt", tiny_releases["test-usit"], "--out", str(tmp_path), "--classes", "1", "2",
            "--per-class", "2"]
    with pytest.raises(SystemExit):  # the release's AE, offline and not in the cache
        sample.main(sample.parse_args(argv))
    assert "error: the checkpoint's AE dc-ai/test-ae: not found" in capsys.readouterr().err
    # c = 16 like the fake AE
    res = sample.main(sample.parse_args(argv + ["--ae", "random:dc-ae-f8c16-tiny"]))
    assert res["images"].shape == (4, 64, 64, 3)
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("test-usit (step None) + dc-ae-f8c16-tiny: dopri5 atol 1e-6 "
                             "rtol 1e-3 (adaptive)")
    assert "CFG off; the authors' scale 1.5, guidance interval off" in header
    assert "denoiser fp32, AE decode fp32; latent scale 0.5" in header
    sample.main(sample.parse_args(["--ckpt", tiny_releases["test-uvit"],
                                   "--ae", "random:dc-ae-f8c16-tiny", "--out", str(tmp_path),
                                   "--classes", "1", "--per-class", "1"]))
    assert ("DPM-Solver fast (singlestep, order 3, data prediction, time-uniform t 1 -> 0.001), "
            "30 model evaluations" in capsys.readouterr().out)


def test_a_release_brings_its_cfg_scale_and_the_papers_numbers(tiny_releases, tmp_path,
                                                                monkeypatch, capsys):
    """--cfg-scale release: the authors' scale of the table (1.5 here); the report prints ours
    beside the paper's number of the same setting (gFID with CFG here), and a release whose scale
    is unpublished refuses in one line."""
    import sample
    name = "test-usit"
    record = releases.RELEASES[name]
    monkeypatch.setitem(releases.RELEASES, name, dataclasses.replace(
        record, reported=(releases.Reported("Table 9", 7.0, gfid_cfg=3.25,
                                            inception_score=99.0),)))
    ref = tmp_path / "ref.npz"
    np.savez(ref, np.random.default_rng(0).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))
    argv = ["--ckpt", tiny_releases[name], "--ae", "random:dc-ae-f8c16-tiny",
            "--num-samples", "12", "--batch-size", "6", "--sampler", "euler", "--steps", "2",
            "--fid", str(ref), "--inception-weights", "random", "--cfg-scale", "release"]
    res = sample.main(sample.parse_args(argv + ["--out", str(tmp_path / "a")]))
    out = capsys.readouterr().out
    assert "; CFG 1.5; the authors' scale 1.5," in out.splitlines()[0]
    assert f"gFID {res['metrics']['fid']:.4f} (Table 9: 3.25)" in out
    assert "(Table 9: 99" not in out  # the paper's IS is without CFG: not beside a guided one
    monkeypatch.setitem(releases.RELEASES, name, dataclasses.replace(record, cfg_scale=None))
    with pytest.raises(SystemExit) as e:
        sample.main(sample.parse_args(argv + ["--out", str(tmp_path / "b")]))
    assert (e.value.code == 2
            and "--cfg-scale release: the authors published no CFG scale for test-usit"
            in capsys.readouterr().err)
