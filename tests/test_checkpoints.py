"""formats.py and checkpoints.py: the released AE formats (diffusers' AutoencoderDC, DC-Gen's
DCAE_HF) load into our modules and compute the same function, strictly (missing and unexpected
keys are named), and the scripts' --ae resolves run folders, .pt files, released folders, hub ids
(from a cache on disk, offline) and registry names; our models export to both formats and load
back to the same function. Weights are random (nothing is downloaded).

    python -m pytest -q tests/test_checkpoints.py
"""
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import ae as ae_lib
from conftest import randomize_norms
import checkpoints
import export
import formats
import models
from ae import AE_CONFIGS, build_ae


def diffusers_config(name, **overrides):
    """A diffusers AutoencoderDC config.json for one of our entries, written independently of
    formats.py."""
    cfg = AE_CONFIGS[name]
    S = len(cfg.widths)
    return {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.0", "in_channels": 3,
            "latent_channels": cfg.c, "attention_head_dim": 32,
            "encoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock"
                                    for b in cfg.enc_blocks],
            "decoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock"
                                    for b in cfg.dec_blocks],
            "encoder_block_out_channels": list(cfg.widths),
            "decoder_block_out_channels": list(cfg.widths),
            "encoder_layers_per_block": list(cfg.enc_depths),
            "decoder_layers_per_block": list(cfg.dec_depths),
            "encoder_qkv_multiscales": [[]] * S, "decoder_qkv_multiscales": [[]] * S,
            "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
            "decoder_norm_types": ["rms_norm" if n == "rms" else "batch_norm"
                                   for n in cfg.dec_norms],
            "decoder_act_fns": list(cfg.dec_acts), "encoder_out_shortcut": cfg.latent_shortcut,
            "decoder_in_shortcut": cfg.latent_shortcut, "decoder_conv_act_fn": cfg.out_act,
            "scaling_factor": 0.77,
            **overrides}


def diffusers_folder(folder, name, src, **overrides):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(diffusers_config(name, **overrides)))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()},
              str(folder / "diffusion_pytorch_model.safetensors"))
    return str(folder)


@pytest.mark.parametrize("name", ["dc-ae-f8c16-tiny", "dc-ae-f8c16-tiny-1.0"])
def test_diffusers_folder_round_trip(tmp_path, name):
    torch.manual_seed(1)
    src = randomize_norms(build_ae(name)).eval()
    # named after its folder
    ae = checkpoints.load_ae(diffusers_folder(tmp_path / name, name, src))
    assert ae.scaling_factor == 0.77 and ae.name == name and not ae.model.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    # fp32 rounding only: frozen weights may take other CPU kernels than trainable ones
    with torch.no_grad():
        torch.testing.assert_close(ae.model.decode(ae.model.encode(x)), src.decode(src.encode(x)),
                                   rtol=0, atol=1e-5)


def test_diffusers_config_with_another_head_dim_is_refused(tmp_path):
    src = build_ae("dc-ae-f8c16-tiny-1.0")
    with pytest.raises(ValueError, match="attention_head_dim 16: every DC-AE model uses 32"):
        checkpoints.load_ae(diffusers_folder(tmp_path / "ae", "dc-ae-f8c16-tiny-1.0", src,
                                             attention_head_dim=16))


def dcgen_key(k):
    """Our (diffusers) key -> DC-Gen's module path for a DC-AE 1.5 model (ResBlocks, no latent
    shortcuts)."""
    rules = [
        (r"^encoder\.conv_in\.conv\.(.*)$", r"encoder.project_in.conv.conv.\1"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv1\.(.*)$",
         r"encoder.stages.\1.op_list.\2.main.conv1.conv.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv2\.(.*)$",
         r"encoder.stages.\1.op_list.\2.main.conv2.conv.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.norm\.(.*)$",
         r"encoder.stages.\1.op_list.\2.main.conv2.norm.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv\.(.*)$",
         r"encoder.stages.\1.op_list.\2.main.conv.conv.\3"),
        (r"^encoder\.conv_out\.(.*)$", r"encoder.project_out.op_list.0.conv.\1"),
        (r"^decoder\.conv_in\.(.*)$", r"decoder.project_in.conv.\1"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv1\.(.*)$",
         r"decoder.stages.\1.op_list.\2.main.conv1.conv.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv2\.(.*)$",
         r"decoder.stages.\1.op_list.\2.main.conv2.conv.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.norm\.(.*)$",
         r"decoder.stages.\1.op_list.\2.main.conv2.norm.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv\.(.*)$",
         r"decoder.stages.\1.op_list.\2.main.conv.conv.\3"),
        (r"^decoder\.norm_out\.(.*)$", r"decoder.project_out.op_list.0.\1"),
        (r"^decoder\.conv_out\.conv\.(.*)$", r"decoder.project_out.op_list.2.conv.conv.\1"),
    ]
    for pattern, repl in rules:
        if re.match(pattern, k):
            return re.sub(pattern, repl, k)
    raise AssertionError(f"no DC-Gen rule for {k}")


def test_dcgen_folder_round_trip(tmp_path):
    torch.manual_seed(2)
    name = "dc-ae-f8c16-tiny"
    src = randomize_norms(build_ae(name)).eval()
    folder = tmp_path / "dc-ae-tiny-dcgen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_name": name}))
    sd = {dcgen_key(k): v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    ae = checkpoints.load_ae(str(folder))
    assert ae.scaling_factor is None  # not published for this entry
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ae.model.decode(ae.model.encode(x)), src.decode(src.encode(x)),
                                   rtol=0, atol=1e-5)
    # strict: a missing key and an extra key are both named
    sd.pop(next(iter(sd)))
    sd["decoder.extra.weight"] = torch.zeros(1)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ValueError,
                       match=r"1 missing.*encoder\.conv_in.*1 unexpected.*decoder\.extra"):
        checkpoints.load_ae(str(folder))


def test_bad_ae_specs(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        checkpoints.load_ae(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no ckpt_\\*.pt in this folder"):
        checkpoints.load_ae(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "dc-ae-unknown"}))
    with pytest.raises(ValueError, match="unknown AE"):
        checkpoints.load_ae(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not readable JSON"):
        checkpoints.load_ae(str(tmp_path))


def test_a_registry_name_gives_the_same_random_ae_and_says_so(capsys):
    a, b = (checkpoints.load_ae("random:dc-ae-f8c16-tiny"),
            checkpoints.load_ae("random:dc-ae-f8c16-tiny"))
    assert "RANDOM weights" in capsys.readouterr().err and a.source == "random:dc-ae-f8c16-tiny"
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert not any(p.requires_grad for p in a.model.parameters())


# ------------------------------------------------------------------------------------------------
# The whole released family: parity with diffusers' AutoencoderDC and DC-Gen's DCAE
# (tests/fixtures/ae)
# ------------------------------------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "ae"
# README.md there: which models
FAMILIES = {"sana": ["io", "io_64"], "in": ["io"], "dc15": ["io"], "lite": ["io"]}


@pytest.fixture
def family_names(monkeypatch):
    """Register each fixture's AEConfig under the name its DC-Gen folder's config.json carries
    ("<family>-fixture")."""
    for family in FAMILIES:
        config = json.loads((FIXTURES / family / "diffusers/config.json").read_text())
        monkeypatch.setitem(AE_CONFIGS, f"{family}-fixture",
                            formats.config_from_diffusers(config, f"{family}-fixture"))


@pytest.mark.parametrize("fmt", ["diffusers", "dcgen"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_computes_what_diffusers_and_dc_gen_compute(family, fmt, family_names):
    """Tiny analogues of every released architecture (SANA: stage 0 with blocks, stride-2 conv
    down, nearest up, 5x5 multi-scale attention on both of diffusers' attention paths; in / mix 1.0
    at 5 stages with BatchNorm; 1.5; Lite), with outputs computed by diffusers 0.42.1 and DC-Gen:
    both formats load, strictly, into the same function; the c' < c decode is diffusers' decode of
    the zero-padded latent."""
    ae = checkpoints.load_ae(str(FIXTURES / family / fmt)).model
    for io in FAMILIES[family]:
        t = load_file(str(FIXTURES / family / f"{io}.safetensors"))
        c = t["z"].shape[1]
        with torch.no_grad():
            torch.testing.assert_close(ae.encode(t["x"]), t["z"], rtol=0, atol=2e-5)
            torch.testing.assert_close(ae.decode(t["z"]), t["x_rec"], rtol=0, atol=1e-5)
            torch.testing.assert_close(ae.decode(t["z"][:, : c // 2]), t["x_rec_half"],
                                       rtol=0, atol=1e-5)
            torch.testing.assert_close(ae.decode(ae.encode(t["x"])), t["x_rec_dcgen"],
                                       rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_dc_gen_names_both_ways_are_dc_gens_own(family, family_names):
    """to_dcgen writes exactly the keys and tensors of DC-Gen's own state dict; from_dcgen_ae reads
    them back to diffusers' (= ours): one mapping, checked on each architecture's real layout."""
    ours = load_file(str(FIXTURES / family / "diffusers/diffusion_pytorch_model.safetensors"))
    theirs = load_file(str(FIXTURES / family / "dcgen/model.safetensors"))
    model = build_ae(f"{family}-fixture")
    assert set(model.state_dict()) == set(ours)  # our module names are diffusers'
    exported = formats.to_dcgen(ours, model.config)
    assert (set(exported) == set(theirs)
            and all(torch.equal(exported[k], theirs[k]) for k in theirs))
    back = formats.from_dcgen_ae(theirs, model)
    assert set(back) == set(ours) and all(torch.equal(back[k], ours[k]) for k in ours)


def reference_attention(x, attn, d=32):
    """diffusers' SanaMultiscaleAttnProcessor2_0 written from its shapes (tests/fixtures/ae, the
    facts in DESIGN.md): heads are runs of 3d channels of [q | k | v | each scale's q | k | v]; the
    linear path pads v with a row of ones for the normaliser, the quadratic one (H W <= d)
    normalises k^T q; then to_out, norm_out and the residual."""
    N, C, H, W = x.shape
    w = [attn.to_q.weight, attn.to_k.weight, attn.to_v.weight]
    qkv = torch.cat([torch.einsum("oc,nchw->nohw", wi, x) for wi in w], dim=1)  # (N, 3C, H, W)
    parts = [qkv] + [F.conv2d(F.conv2d(qkv, s.proj_in.weight, padding=s.proj_in.padding,
                                       groups=3 * C),
                              s.proj_out.weight, groups=3 * (C // d))
                     for s in attn.to_qkv_multiscale]
    h = torch.cat(parts, dim=1).reshape(N, -1, 3 * d, H * W)  # (N, G, 3d, HW)
    q, k, v = F.relu(h[:, :, :d]), F.relu(h[:, :, d:2 * d]), h[:, :, 2 * d:]
    if H * W > d:
        o = (F.pad(v, (0, 0, 0, 1), value=1.0) @ k.transpose(-1, -2)) @ q  # (N, G, d + 1, HW)
        o = o[:, :, :-1] / (o[:, :, -1:] + 1e-15)
    else:
        s = k.transpose(-1, -2) @ q  # (N, G, HW, HW)
        o = v @ (s / (s.sum(dim=2, keepdim=True) + 1e-15))
    o = torch.einsum("oc,nchw->nohw", attn.to_out.weight, o.reshape(N, -1, H, W))
    return x + attn.norm_out(o)


# 4x4 = 16 <= 32: diffusers' quadratic path; 8x8: the linear one
@pytest.mark.parametrize("side", [4, 8])
def test_multiscale_attention_with_several_heads_is_diffusers(side):
    """The fixtures have one head per attention stage; here 64 channels = 2 heads, and 2 extra
    scales: a wrong head grouping of q, k, v or of the scales' channels shows."""
    torch.manual_seed(0)
    attn = ae_lib.LinearAttention(64, scales=(5, 3)).double()
    # RMSNorm2d computes in fp32: leave it out of a float64 comparison
    attn.norm_out = torch.nn.Identity()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.2)
    x = torch.randn(2, 64, side, side, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), reference_attention(x, attn), rtol=1e-10, atol=1e-10)


# name -> million parameters (DC-Gen's configs built on the meta device:
# tests/fixtures/ae/README.md)
RELEASED_AES = {
    "dc-ae-f32c32-sana-1.0": 312.25, "dc-ae-f32c32-sana-1.1": 312.25,
    "dc-ae-f32c32-in-1.0": 323.36, "dc-ae-f32c32-mix-1.0": 323.36,
    "dc-ae-f64c128-in-1.0": 676.90, "dc-ae-f64c128-mix-1.0": 676.90,
    "dc-ae-f128c512-in-1.0": 1120.68, "dc-ae-f128c512-mix-1.0": 1120.68,
    "dc-ae-f32c128-1.5": 523.61, "dc-ae-f64c128-1.5": 714.74, "dc-ae-lite-f32c32-sana-1.1": 421.18,
}
FACTORS = {"dc-ae-f32c32-sana-1.0": 0.41407, "dc-ae-f32c32-sana-1.1": 0.41407,
           "dc-ae-lite-f32c32-sana-1.1": 0.41407,
           "dc-ae-f32c32-in-1.0": 0.3189, "dc-ae-f32c32-mix-1.0": 0.4552,
           "dc-ae-f64c128-in-1.0": 0.2889, "dc-ae-f64c128-mix-1.0": 0.4538,
           "dc-ae-f128c512-in-1.0": 0.4883, "dc-ae-f128c512-mix-1.0": 0.3620,
           "dc-ae-f64c128-1.5": 0.5935, "dc-ae-f32c128-1.5": None}


@pytest.mark.parametrize("name", sorted(RELEASED_AES))
def test_released_names_are_registry_entries_with_their_factors(name):
    with torch.device("meta"):
        model = build_ae(name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == RELEASED_AES[name]
    assert model.scaling_factor == FACTORS[name]
    config = formats.config_to_diffusers(AE_CONFIGS[name])
    # every field survives diffusers' format
    assert formats.config_from_diffusers(config, name) == AE_CONFIGS[name]


# ------------------------------------------------------------------------------------------------
# Hub ids: a cache on disk, offline
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def hub(tmp_path, monkeypatch):
    """put(repo_id, folder) -> a Hugging Face cache on disk (models--org--name/snapshots/<rev>/...,
    refs/main), as huggingface_hub reads it, with the hub offline (HF_HUB_OFFLINE): no test touches
    the network."""
    import huggingface_hub.constants
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def put(repo_id, folder):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        revision = format(abs(hash(repo_id)), "x").rjust(40, "0")[:40]
        shutil.copytree(folder, repo / "snapshots" / revision)
        (repo / "refs").mkdir()
        # no newline: huggingface_hub reads it as it is
        (repo / "refs" / "main").write_text(revision)
        return str(repo / "snapshots" / revision)
    return put


def test_hub_ids_load_from_the_cache_offline_and_are_named_by_the_id(hub, family_names, capsys):
    snapshot = hub("mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers", FIXTURES / "sana" / "diffusers")
    ae = checkpoints.load_ae("mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers")
    assert ae.name == "dc-ae-f32c32-sana-1.0"  # the repo's name, not the snapshot folder's hash
    assert (ae.source == "mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers"
            and ae.scaling_factor == 0.41407)
    assert os.path.basename(snapshot) not in ae.name
    # DC-Gen's format: the name is in config.json
    hub("dc-ai/dc15-fixture", FIXTURES / "dc15" / "dcgen")
    assert checkpoints.load_ae("dc-ai/dc15-fixture").name == "dc15-fixture"
    with pytest.raises(ValueError) as e:
        checkpoints.load_ae("dc-ai/dc-ae-f99c9-1.5", option="--ae")
    assert (str(e.value).startswith("--ae dc-ai/dc-ae-f99c9-1.5: not found: no such file or "
                                    "folder here, and the hub id is not in the Hugging Face cache")
            and "HF_HUB_OFFLINE=1 keeps the hub off" in str(e.value)
            and "snapshot_download('dc-ai/dc-ae-f99c9-1.5')" in str(e.value))


def test_an_export_from_a_hub_id_is_named_by_the_id(hub, family_names, tmp_path, capsys):
    """python export.py ORG/NAME: the export carries the model's name, never the snapshot's
    hash."""
    snapshot = hub("mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers", FIXTURES / "sana" / "diffusers")
    export.main(export.parse_args(["mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers", "--to", "dcgen",
                                   "--out", str(tmp_path / "dcgen")]))
    assert (json.loads((tmp_path / "dcgen/config.json").read_text())
            == {"model_name": "dc-ae-f32c32-sana-1.0"})
    assert os.path.basename(snapshot) not in capsys.readouterr().out


def test_scripts_take_hub_ids_for_ae_ckpt_and_init(hub, family_names, tmp_path, capsys):
    """train_diffusion.py --ae, sample.py --ckpt / --ae and train_ae.py --init resolve ids like
    folders; offline without the id, a script stops with one line and exit status 2."""
    import sample
    import train_ae
    import train_diffusion
    hub("dc-ai/dc15-fixture", FIXTURES / "dc15" / "dcgen")
    small = ["--steps", "1", "--batch-size", "4", "--num-workers", "0", "--grid-every", "0",
             "--toy-size", "8"]
    train_diffusion.main(train_diffusion.parse_args(["--ae", "dc-ai/dc15-fixture",
                                                     "--out", str(tmp_path / "d"), *small]))
    ckpt = torch.load(tmp_path / "d/ckpt_0000001.pt", map_location="cpu", weights_only=False)
    # the id resolves anywhere
    assert ckpt["ae"] == "dc-ai/dc15-fixture" and ckpt["ae_name"] == "dc15-fixture"
    trained = checkpoints.load_diffusion(str(tmp_path / "d"))
    out = export.export_diffusion(trained, str(tmp_path / "c2i"))
    hub("me/usit-tiny-c2i", tmp_path / "c2i")
    res = sample.main(sample.parse_args(["--ckpt", "me/usit-tiny-c2i",
                                         "--out", str(tmp_path / "s"),
                                         "--sampler", "euler", "--steps", "2",
                                         "--per-class", "1", "--classes", "0"]))
    assert res["images"].shape == (1, 32, 32, 3) and out.startswith("dc15-fixture-usit-tiny-")
    train_ae.main(train_ae.parse_args(["--model", "dc15-fixture", "--init", "dc-ai/dc15-fixture",
                                       "--out", str(tmp_path / "a"), "--resolution", "32",
                                       "--w-lpips", "0", *small]))
    assert ("initialised from dc-ai/dc15-fixture (phase 1)"
            in (tmp_path / "a/metrics.jsonl").read_text())
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        sample.main(sample.parse_args(["--ckpt", "dc-ai/not-cached",
                                       "--out", str(tmp_path / "t")]))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert (e.value.code == 2 and len(errors) == 1
            and errors[0].startswith("error: --ckpt dc-ai/not-cached: not found"))


# ------------------------------------------------------------------------------------------------
# Export: to diffusers and DC-Gen, and back
# ------------------------------------------------------------------------------------------------

def our_ae_checkpoint(path, name="dc-ae-f8c16-tiny-1.0", seed=3):
    """A train_ae.py checkpoint (its EMA weights are the ones exported), random weights and
    BatchNorm statistics."""
    torch.manual_seed(seed)
    model = randomize_norms(build_ae(name))
    ema = {k: v + 0.01 * torch.randn(v.shape) if v.is_floating_point() else v
           for k, v in model.state_dict().items()}
    torch.save(dict(model=model.state_dict(), ema=ema, step=5, args=dict(model=name), rng=[]),
               path)
    return str(path)


def same_function(a, b, x):
    with torch.no_grad():
        za, zb = a.encode(x), b.encode(x)
        torch.testing.assert_close(za, zb, rtol=0, atol=1e-5)
        # c' < c too
        torch.testing.assert_close(a.decode(za[:, :4]), b.decode(za[:, :4]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("to", ["diffusers", "dcgen"])
def test_an_ae_we_trained_exports_and_loads_back_the_same_function(tmp_path, to, capsys):
    src = checkpoints.load_ae(our_ae_checkpoint(tmp_path / "ckpt_0000005.pt"))
    argv = [src.source, "--to", to, "--out", str(tmp_path / to)]
    if to == "diffusers":  # a self-trained AE has no published factor: diffusers' config needs one
        with pytest.raises(SystemExit) as e:
            export.main(export.parse_args(argv))
        assert (e.value.code == 2
                and "has no known latent scaling factor" in capsys.readouterr().err)
        argv += ["--scaling-factor", "0.61"]
    export.main(export.parse_args(argv))
    back = checkpoints.load_ae(str(tmp_path / to))
    assert back.name == "dc-ae-f8c16-tiny-1.0" or to == "diffusers"
    same_function(back.model, src.model, torch.rand(2, 3, 16, 16) * 2 - 1)
    if to == "diffusers":
        config = json.loads((tmp_path / to / "config.json").read_text())
        assert (config["_class_name"] == "AutoencoderDC"
                and config["scaling_factor"] == 0.61 == back.scaling_factor)
    else:
        assert (json.loads((tmp_path / to / "config.json").read_text())
                == {"model_name": "dc-ae-f8c16-tiny-1.0"})
    with pytest.raises(SystemExit):  # nothing is overwritten
        export.main(export.parse_args(argv))
    assert "is not empty: pass a new folder" in capsys.readouterr().err


def test_a_diffusion_checkpoint_exports_to_dc_gens_class_to_image_folder(tmp_path):
    """--to dcgen of a train_diffusion.py checkpoint: DC-Gen's folder (config.json {"model_name"},
    model.safetensors with `diffusion_model.` keys, the EMA weights), which our loader reads back
    to the same function and facts; a released combination gets its released name."""
    import test_sample
    pt = test_sample.make_ckpt(tmp_path / "ckpt_0000007.pt", "UViT-tiny")
    export.main(export.parse_args([pt, "--to", "dcgen", "--out", str(tmp_path / "c2i")]))
    theirs = load_file(str(tmp_path / "c2i/model.safetensors"))
    assert all(k.startswith("diffusion_model.") for k in theirs)
    src, back = checkpoints.load_diffusion(pt), checkpoints.load_diffusion(str(tmp_path / "c2i"))
    assert ((back.name, back.latent_shape, back.num_classes, back.scaling_factor, back.step)
            == (src.name, src.latent_shape, src.num_classes, src.scaling_factor, src.step))
    x, t, y = torch.randn(2, 16, 4, 4), torch.tensor([3.0, 500.0]), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(back.model(x, t, y), src.model(x, t, y), rtol=0, atol=0)
    ema = torch.load(pt, map_location="cpu", weights_only=False)["ema"]
    # EMA by default
    assert torch.equal(theirs["diffusion_model.decoder_pred.weight"], ema["decoder_pred.weight"])
    factor = ae_lib.AE_CONFIGS["dc-ae-f64c128-1.5"].scaling_factor
    released = checkpoints.Loaded(models.create_model("USiT-2B", in_channels=128, input_size=8,
                                                      device="meta"),
                                  "USiT-2B", "x", latent_shape=[128, 8, 8], num_classes=1000,
                                  ae_name="dc-ae-f64c128-1.5", scaling_factor=factor)
    assert export.release_name(released) == "dc-ae-f64c128-1.5-usit-2b-in-512px"
    # Latents scaled otherwise: DC-Gen would sample it with the release's factor, so it gets a
    # name of ours.
    assert export.release_name(dataclasses.replace(released, scaling_factor=factor * 1.1)) == \
        "dc-ae-f64c128-1.5-usit-2b-512px"


def test_an_export_under_a_released_name_keeps_its_own_facts(tmp_path):
    """A folder with our metadata is read from it even under a released name (the latent, the
    classes and the scaling factor it was trained with), and still knows the release and its
    published CFG scale."""
    import test_sample
    pt = test_sample.make_ckpt(tmp_path / "ckpt_0000007.pt", "UViT-tiny")
    export.main(export.parse_args([pt, "--to", "dcgen", "--out", str(tmp_path / "c2i")]))
    release = "dc-ae-f32c32-in-1.0-uvit-s-in-512px"
    (tmp_path / "c2i/config.json").write_text(json.dumps({"model_name": release}))
    src, back = checkpoints.load_diffusion(pt), checkpoints.load_diffusion(str(tmp_path / "c2i"))
    assert (back.name, back.latent_shape, back.scaling_factor, back.release.name,
            back.release.cfg_scale) == \
        (src.name, src.latent_shape, src.scaling_factor, release, 1.5)
    assert back.ae == src.ae  # the AE it was trained on, not the release's


def test_diffusers_loads_our_export_when_it_is_installed(tmp_path):
    diffusers = pytest.importorskip("diffusers",
                                    reason="diffusers is not a dependency: pip install diffusers "
                                           "to run the round trip through AutoencoderDC")
    src = checkpoints.load_ae(our_ae_checkpoint(tmp_path / "ckpt_0000005.pt", "dc-ae-f8c16-tiny"))
    export.export_ae(src, "diffusers", str(tmp_path / "out"), scaling_factor=0.5)
    theirs = diffusers.AutoencoderDC.from_pretrained(str(tmp_path / "out"),
                                                     local_files_only=True).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x).latent, src.model.encode(x), rtol=0, atol=1e-5)
    assert theirs.config.scaling_factor == 0.5
