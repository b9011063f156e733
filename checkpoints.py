"""Every model on disk that is not a run folder's own state, read into our modules (paper Sec. 4.1, Tables 1, 3-4;
DESIGN.md §4, §5b): the released DC-AEs in diffusers' and DC-Gen's formats, DC-Gen's released class-to-image folders,
and what the scripts' --ae and --ckpt name (a run folder, a .pt, a released folder, a registry name). Every loader
returns one `Loaded`, built in one place (`loaded`), and every load is strict: missing, unexpected and misshapen keys
are named.

    python -c "import checkpoints; print(checkpoints.load_ae('runs/ae'))"                    # a train_ae.py run
    python -c "import checkpoints; print(checkpoints.load_ae('path/to/dc-ae-f64c128-1.5'))"  # a DC-Gen folder
    python -c "import checkpoints; print(checkpoints.load_diffusion('path/to/dc-ae-f64c128-1.5-usit-2b-in-512px'))"
"""
import glob
import json
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors.torch import load_file

import ae as ae_lib
import models


@dataclass
class Loaded:
    """A model read from disk (or built with random weights for a speed run) and what the scripts need to know of it."""
    model: nn.Module  # in eval mode, without gradients, on the device
    name: str  # its registry name: ae.AE_CONFIGS or models.MODELS
    source: str  # where it came from: an absolute path, or "random:<name>"
    scaling_factor: float | None = None  # the latent scale it was released or trained with (None: not known)
    step: int | None = None  # the training step of one of our checkpoints
    latent_shape: list | None = None  # a diffusion model's latent (c, h, w)
    num_classes: int | None = None
    ae: str | None = None  # the source of the AE a diffusion model was trained on (None: pass --ae)
    ae_name: str | None = None
    release: str | None = None  # DC-Gen's name of released weights
    cfg_scale: float | None = None  # DC-Gen's documented CFG scale of a released class-to-image model


def loaded(model, name, source, device, **info):
    """The one place a Loaded is made: the model frozen, in eval mode, on the device."""
    return Loaded(model.to(device).eval().requires_grad_(False), name, source, **info)


def load_state_dict_strict(model, state_dict, source, name):
    """load_state_dict that names what is missing, unexpected or misshapen (BatchNorm's counters may be missing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not match {name}: {len(missing)} missing {missing[:8]}, "
                         f"{len(unexpected)} unexpected {unexpected[:8]}, {len(shapes)} wrong shapes {shapes[:4]}")
    model.load_state_dict(state_dict, strict=False)


def read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from e


def read_ours(path):
    """One of our own .pt checkpoints (train_ae.py / train_diffusion.py), memory-mapped: a 2B model's file also holds
    the Adam moments (~25 GB), and only the tensors used are read. Our own file, so pickle is fine."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # truncated zip, pickle garbage, ...: name the file, not the unpickler
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("args"), dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of train_ae.py / train_diffusion.py (no 'args' and 'model')")
    return ckpt


def newest_checkpoint(folder, option, script):
    """A run folder -> its newest ckpt_*.pt (what --ae / --ckpt take for a run of `script`)."""
    paths = sorted(glob.glob(os.path.join(folder, "ckpt_*.pt")))
    if not paths:
        raise ValueError(f"{option} {folder}: no ckpt_*.pt in this folder (run `python {script} --out {folder}` "
                         f"first) and no config.json (a released folder)")
    return paths[-1]


# ------------------------------------------------------------------------------------------------
# The released DC-AE formats: diffusers' AutoencoderDC and DC-Gen's (efficientvit's) DCAE_HF
# ------------------------------------------------------------------------------------------------

def config_from_diffusers(d, name):
    """Our AEConfig from a diffusers `AutoencoderDC` config.json dict."""
    widths = tuple(d["encoder_block_out_channels"])
    if tuple(d["decoder_block_out_channels"]) != widths:
        raise ValueError("encoder and decoder widths differ: not supported")
    if any(len(m) for m in list(d.get("encoder_qkv_multiscales", [])) + list(d.get("decoder_qkv_multiscales", []))):
        raise ValueError("multi-scale attention (qkv_multiscales) is not used by any DC-AE ImageNet model: not supported")
    if d.get("attention_head_dim", 32) != 32 and "EfficientViTBlock" in str(d.get("encoder_block_types", "")) + \
            str(d.get("decoder_block_types", "")):
        raise ValueError(f"attention_head_dim {d['attention_head_dim']}: every DC-AE model uses 32, the only value ae.py "
                         f"implements")
    if d.get("downsample_block_type", "pixel_unshuffle") != "pixel_unshuffle" or \
            d.get("upsample_block_type", "pixel_shuffle") != "pixel_shuffle":
        raise ValueError("only pixel_unshuffle / pixel_shuffle resampling is supported")
    if d.get("encoder_out_shortcut", True) != d.get("decoder_in_shortcut", True):
        raise ValueError("encoder_out_shortcut and decoder_in_shortcut must agree")
    S = len(widths)
    per_stage = lambda v: (v,) * S if isinstance(v, str) else tuple(v)  # noqa: E731  diffusers: one value or one each
    kind = {"ResBlock": "res", "EfficientViTBlock": "evit"}
    norm = {"rms_norm": "rms", "batch_norm": "bn"}
    released = ae_lib.AE_CONFIGS.get(name)
    return ae_lib.AEConfig(
        c=d["latent_channels"], widths=widths, enc_depths=tuple(d["encoder_layers_per_block"]),
        dec_depths=tuple(d["decoder_layers_per_block"]),
        enc_blocks=tuple(kind[b] for b in per_stage(d.get("encoder_block_types", "ResBlock"))),
        dec_blocks=tuple(kind[b] for b in per_stage(d.get("decoder_block_types", "ResBlock"))),
        dec_norms=tuple(norm[n] for n in per_stage(d.get("decoder_norm_types", "rms_norm"))),
        dec_acts=per_stage(d.get("decoder_act_fns", "silu")), out_act=d.get("decoder_conv_act_fn", "relu"),
        latent_shortcut=d.get("encoder_out_shortcut", True),
        # diffusers writes 1.0 where nothing was published; a registry name knows the released factor
        scaling_factor=released.scaling_factor if released and d.get("scaling_factor") in (None, 1.0) else
        d.get("scaling_factor"),
        structured=released.structured if released else not d.get("encoder_out_shortcut", True))


def config_to_diffusers(cfg):
    """The diffusers `AutoencoderDC` config (its __init__ arguments) of an AEConfig: the inverse of
    config_from_diffusers, every field written (a field missing from a config.json takes diffusers' default, which
    is no released model's)."""
    kind, norm, S = {"res": "ResBlock", "evit": "EfficientViTBlock"}, {"rms": "rms_norm", "bn": "batch_norm"}, \
        len(cfg.widths)
    return dict(in_channels=3, latent_channels=cfg.c, attention_head_dim=32,
                encoder_block_types=[kind[b] for b in cfg.enc_blocks],
                decoder_block_types=[kind[b] for b in cfg.dec_blocks],
                encoder_block_out_channels=list(cfg.widths), decoder_block_out_channels=list(cfg.widths),
                encoder_layers_per_block=list(cfg.enc_depths), decoder_layers_per_block=list(cfg.dec_depths),
                encoder_qkv_multiscales=[[]] * S, decoder_qkv_multiscales=[[]] * S,
                upsample_block_type="pixel_shuffle", downsample_block_type="pixel_unshuffle",
                decoder_norm_types=[norm[n] for n in cfg.dec_norms], decoder_act_fns=list(cfg.dec_acts),
                encoder_out_shortcut=cfg.latent_shortcut, decoder_in_shortcut=cfg.latent_shortcut,
                decoder_conv_act_fn=cfg.out_act, scaling_factor=cfg.scaling_factor or 1.0)


# DC-Gen / efficientvit module paths -> ours (= diffusers'). Prefixes first, then block internals.
DCGEN_RENAMES = [
    ("main.", ""), ("op_list.", ""),
    ("encoder.project_in.", "encoder.conv_in."), ("encoder.stages.", "encoder.down_blocks."),
    ("encoder.project_out.0.conv.", "encoder.conv_out."),
    ("decoder.project_in.conv.", "decoder.conv_in."), ("decoder.stages.", "decoder.up_blocks."),
    ("decoder.project_out.0.", "decoder.norm_out."), ("decoder.project_out.2.", "decoder.conv_out."),
    ("context_module.", "attn."), ("local_module.", "conv_out."),
    ("conv1.conv.", "conv1."), ("conv2.conv.", "conv2."), ("conv2.norm.", "norm."),
    ("inverted_conv.conv.", "conv_inverted."), ("depth_conv.conv.", "conv_depth."),
    ("point_conv.conv.", "conv_point."), ("point_conv.norm.", "norm."),
    ("proj.conv.", "to_out."), ("proj.norm.", "norm_out."), ("conv.conv.", "conv."),
]


def rename_dcgen(state_dict):
    """Rename a DC-Gen state dict to our keys; split EfficientViT's qkv 1x1 conv into to_q/to_k/to_v."""
    out = {}
    for k, v in state_dict.items():
        for old, new in DCGEN_RENAMES:
            k = k.replace(old, new)
        if k.endswith("qkv.conv.weight"):
            q, kk, vv = v.flatten(1).chunk(3, dim=0)  # (3C, C, 1, 1) -> three (C, C)
            base = k[: -len("qkv.conv.weight")]
            out.update({base + "to_q.weight": q, base + "to_k.weight": kk, base + "to_v.weight": vv})
        elif k.endswith("to_out.weight"):
            out[k] = v.flatten(1)  # 1x1 conv (C, C, 1, 1) -> linear (C, C)
        else:
            out[k] = v
    return out


def load_ae(spec, device="cpu"):
    """The scripts' --ae -> Loaded. spec: a train_ae.py run folder (its newest ckpt_*.pt) or .pt (its EMA weights), a
    diffusers folder (config.json + diffusion_pytorch_model.safetensors, e.g. mit-han-lab/dc-ae-f32c32-in-1.0-diffusers),
    a DC-Gen folder (config.json {"model_name": ...} + model.safetensors, e.g. dc-ai/dc-ae-f64c128-1.5), or a
    registry name (random weights: smoke runs only, said loudly)."""
    if spec in ae_lib.AE_CONFIGS:
        print(f"WARNING: --ae {spec} is a registry name: the AE has RANDOM weights, its latents carry no image "
              "content; use a trained checkpoint for real runs.", file=sys.stderr)
        with torch.random.fork_rng(devices=[]):  # the same random AE every time, without touching the caller's RNG
            torch.manual_seed(0)
            model = ae_lib.build_ae(spec)
        return loaded(model, spec, f"random:{spec}", device)
    if os.path.isdir(spec) and not os.path.isfile(os.path.join(spec, "config.json")):
        spec = newest_checkpoint(spec, "--ae", "train_ae.py")
    if not os.path.exists(spec):
        raise ValueError(f"--ae {spec}: not found. Train one with `python train_ae.py` (writes runs/ae), pass a "
                         f"released checkpoint folder, or a registry name for a random-weight smoke run")
    path = os.path.abspath(spec)
    if os.path.isfile(path):
        ckpt = read_ours(path)
        name, args = ckpt["args"].get("model"), ckpt["args"]
        if name not in ae_lib.AE_CONFIGS:
            raise ValueError(f"{path} is a checkpoint of {name!r}, not of an AE of ae.py"
                             + (" (a diffusion checkpoint: pass it to --ckpt)" if "latent_shape" in ckpt else ""))
        model = ae_lib.build_ae(name, **{k: args[k] for k in ("c_prime_start", "c_prime_step") if k in args})
        load_state_dict_strict(model, ckpt.get("ema") or ckpt["model"], path, name)
        # A released factor belongs to the released weights: our own training gives other latents, so the factor is
        # the one measured on them, or None (then train_diffusion.py uses 1 / std of its latent cache).
        return loaded(model, name, path, device, scaling_factor=ckpt.get("scaling_factor"), step=ckpt.get("step"))
    config = read_json(os.path.join(path, "config.json"))
    if "model_name" in config:  # DC-Gen
        name = config["model_name"].split("/")[-1]
        model = ae_lib.build_ae(name)
        weights = os.path.join(path, "model.safetensors")
        load_state_dict_strict(model, rename_dcgen(load_file(weights)), weights, name)
    else:  # diffusers
        if config.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
            raise ValueError(f"{path}/config.json: _class_name {config['_class_name']!r} is not AutoencoderDC")
        name = os.path.basename(os.path.normpath(path)).removesuffix("-diffusers")
        model = ae_lib.DCAE(name, config_from_diffusers(config, name))
        weights = os.path.join(path, "diffusion_pytorch_model.safetensors")
        load_state_dict_strict(model, load_file(weights), weights, name)
    return loaded(model, name, path, device, scaling_factor=model.scaling_factor)


# ------------------------------------------------------------------------------------------------
# Released class-to-image models (DC-Gen's DCAE_Diffusion_HF, Tables 3-4) and the scripts' --ckpt
# ------------------------------------------------------------------------------------------------

# DC-Gen's c2i_model_zoo.py: folder name -> (our model, its AE). All ImageNet 512 px, 1000 classes (+ null), patch
# size 1, the AE's scaling factor. The 1.5 USiTs have "adaptive channels": the patch embedding sliced to the input's
# c' channels and decoder_pred to c' rows, which at patch size 1 is our zero-masking (tests/test_pretrained.py).
F32C32, F64C128, F64C128_15 = "dc-ae-f32c32-in-1.0", "dc-ae-f64c128-in-1.0", "dc-ae-f64c128-1.5"
DCGEN_MODELS = {
    "dc-ae-f32c32-in-1.0-dit-xl-in-512px": ("DiT-XL", F32C32),
    "dc-ae-f32c32-in-1.0-dit-xl-in-512px-trainbs1024": ("DiT-XL", F32C32),
    "dc-ae-f32c32-in-1.0-sit-xl-in-512px": ("SiT-XL", F32C32),
    "dc-ae-f32c32-in-1.0-uvit-s-in-512px": ("UViT-S", F32C32),
    "dc-ae-f32c32-in-1.0-uvit-h-in-512px": ("UViT-H", F32C32),
    "dc-ae-f32c32-in-1.0-uvit-2b-in-512px": ("UViT-2B", F32C32),
    "dc-ae-f32c32-in-1.0-usit-h-in-512px": ("USiT-H", F32C32),
    "dc-ae-f32c32-in-1.0-usit-2b-in-512px": ("USiT-2B", F32C32),
    "dc-ae-f64c128-in-1.0-uvit-h-in-512px": ("UViT-H", F64C128),
    "dc-ae-f64c128-in-1.0-uvit-h-in-512px-train2000k": ("UViT-H", F64C128),
    "dc-ae-f64c128-in-1.0-uvit-2b-in-512px": ("UViT-2B", F64C128),
    "dc-ae-f64c128-in-1.0-uvit-2b-in-512px-train2000k": ("UViT-2B", F64C128),
    "dc-ae-f64c128-1.5-usit-2b-in-512px": ("USiT-2B", F64C128_15),
    "dc-ae-f64c128-1.5-usit-3b-in-512px": ("USiT-3B", F64C128_15),
}
PREFIX = "diffusion_model."  # DC-Gen wraps the backbone as DCAE_Diffusion_HF.diffusion_model


def convert_dcgen_state_dict(state_dict):
    """A DC-Gen class-to-image state dict -> ours: strip `diffusion_model.`; key names are otherwise the same (DiT's
    for DiT/SiT, DC-Gen's uvit.py for UViT/USiT). Strict for any size: the architecture and depth are read from the
    keys, and every key outside that architecture or missing from it is named."""
    outside = [k for k in state_dict if not k.startswith(PREFIX)]
    sd = {k[len(PREFIX):]: v for k, v in state_dict.items() if k.startswith(PREFIX)}
    with torch.device("meta"):  # a tiny reference of the same architecture and depth, for its key names
        if "x_embedder.proj.weight" in sd:  # DiT / SiT
            depth = 1 + max([int(k.split(".")[1]) for k in sd if k.startswith("blocks.")], default=-1)
            out = sd.get("final_layer.linear.weight", torch.empty(0, 0)).shape[0]
            reference = models.DiT(1, 1, 1, 4, depth, 1, learn_sigma=out == 2 * sd["x_embedder.proj.weight"].shape[1])
        elif "patch_embed.proj.weight" in sd:  # UViT / USiT
            depth = 2 * (1 + max([int(k.split(".")[1]) for k in sd if k.startswith("in_blocks.")], default=-1))
            reference = models.UViT(1, 1, 1, 4, depth, 1)
        else:
            raise ValueError(f"not a DC-Gen DiT or UViT state dict: no {PREFIX}x_embedder.proj.weight or "
                             f"{PREFIX}patch_embed.proj.weight among its {len(state_dict)} keys")
    expected = reference.state_dict().keys()
    unknown = outside + [PREFIX + k for k in sd if k not in expected]
    missing = [PREFIX + k for k in expected if k not in sd]
    if unknown or missing:
        raise ValueError(f"state dict does not match {type(reference).__name__} of depth {depth}: {len(unknown)} "
                         f"unknown keys {unknown[:8]}, {len(missing)} missing keys {missing[:8]}")
    return sd


def from_dcgen(release, state_dict, source, device="cpu"):
    """A released name and its state dict -> Loaded: the backbone, the AE it needs (load that separately: --ae), the
    latent and DC-Gen's documented CFG scale (1.3 for DiT-XL, 1.5 for the others)."""
    if release not in DCGEN_MODELS:
        raise ValueError(f"unknown DC-Gen model {release!r}; released: {sorted(DCGEN_MODELS)}")
    name, ae_name = DCGEN_MODELS[release]
    ae = ae_lib.AE_CONFIGS[ae_name]
    c, side = ae.c, 512 // 2 ** (len(ae.widths) - 1)
    model = models.create_model(name, in_channels=c, input_size=side, num_classes=1000, device="meta")
    try:
        model.load_state_dict(convert_dcgen_state_dict(state_dict), strict=True, assign=True)
    except RuntimeError as e:  # shapes: another width, channel count or resolution
        raise ValueError(f"{release}: weights do not fit {name} at c={c}, {side}x{side}: {str(e)[:400]}") from e
    return loaded(model, name, source, device, scaling_factor=ae.scaling_factor, latent_shape=[c, side, side],
                  num_classes=1000, ae_name=ae_name, release=release, cfg_scale=1.3 if name == "DiT-XL" else 1.5)


def load_diffusion(spec, device="cpu", weights="ema", ae=None, resolution=512, num_classes=1000):
    """The scripts' --ckpt -> Loaded. spec: a train_diffusion.py checkpoint or its run folder (newest ckpt_*.pt), a
    released DC-Gen folder (config.json {"model_name": ...} + model.safetensors with keys `diffusion_model.<key>`),
    or "random:<model>" (random weights, speed runs; the latent comes from `ae` and `resolution`)."""
    if spec.startswith("random:"):
        name = spec[len("random:"):]
        if name not in models.MODELS:
            raise ValueError(f"--ckpt {spec}: unknown model {name!r}; choose from {sorted(models.MODELS)}")
        print(f"WARNING: --ckpt {spec}: the diffusion model has RANDOM weights (speed runs only)", file=sys.stderr)
        side = resolution // ae.f
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = models.create_model(name, in_channels=ae.c, input_size=side, num_classes=num_classes)
        return loaded(model, name, spec, device, step=0, latent_shape=[ae.c, side, side], num_classes=num_classes)
    if os.path.isfile(os.path.join(spec, "config.json")):  # a released DC-Gen class-to-image folder
        path = os.path.abspath(spec)
        release = read_json(os.path.join(path, "config.json")).get("model_name", "").split("/")[-1]
        weights_file = os.path.join(path, "model.safetensors")
        if not os.path.isfile(weights_file):
            raise ValueError(f"--ckpt {spec}: a DC-Gen model folder holds config.json and model.safetensors")
        return from_dcgen(release, load_file(weights_file), path, device)
    if os.path.isdir(spec):
        spec = newest_checkpoint(spec, "--ckpt", "train_diffusion.py")
    if not os.path.isfile(spec):
        raise ValueError(f"--ckpt {spec}: checkpoint not found")
    path = os.path.abspath(spec)
    ckpt = read_ours(path)
    keys = ("ema", "latent_shape", "scaling_factor", "num_classes", "ae")
    if any(k not in ckpt for k in keys):
        raise ValueError(f"--ckpt {path} is not a train_diffusion.py checkpoint (needs keys {list(keys)}); "
                         f"an AE checkpoint goes to --ae")
    name = ckpt["args"].get("model")
    if name not in models.MODELS:
        raise ValueError(f"--ckpt {path}: recorded model {name!r} is not a diffusion backbone of models.py")
    c, h, w = ckpt["latent_shape"]
    # Build on the meta device and adopt the checkpoint's tensors (no random init of 1.6B parameters first).
    model = models.create_model(name, in_channels=c, input_size=h, num_classes=ckpt["num_classes"],
                                patch_size=ckpt["args"].get("patch_size", 1), device="meta")
    try:
        model.load_state_dict(ckpt[weights], strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"--ckpt {path}: its {weights!r} weights do not match {name} at c={c}, {h}x{w}: "
                         f"{str(e)[:400]}") from e
    return loaded(model, name, path, device, scaling_factor=ckpt["scaling_factor"], step=ckpt.get("step"),
                  latent_shape=[c, h, w], num_classes=ckpt["num_classes"], ae=ckpt["ae"], ae_name=ckpt.get("ae_name"))
