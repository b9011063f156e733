"""Every model on disk that is not a run folder's own state, in and out (paper Sec. 4.1, Tables 1, 3-4; DESIGN.md
§4, §5b): the released DC-AEs in diffusers' and DC-Gen's formats, DC-Gen's class-to-image folders, Hugging Face hub
ids of any of them, what the scripts' --ae, --ckpt and --init name (a run folder, a .pt, a released folder, a hub id,
a registry name), and the export of our AEs and diffusion models to diffusers and DC-Gen. Every loader returns one
`Loaded`, built in one place (`loaded`), and every load is strict: missing, unexpected and misshapen keys are named.

    python -c "import checkpoints; print(checkpoints.load_ae('dc-ai/dc-ae-f64c128-1.5'))"             # a hub id
    python -c "import checkpoints; print(checkpoints.load_ae('runs/ae'))"                            # a train_ae.py run
    python checkpoints.py export runs/ae --to diffusers --out exports/ae-diffusers --scaling-factor 0.5
    python checkpoints.py export runs/ae --to dcgen --out exports/ae-dcgen
    python checkpoints.py export runs/diffusion --to dcgen --out exports/usit-dcgen      # DC-Gen's class-to-image
"""
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save

import ae as ae_lib
import cli
import models
import run


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


# A Hugging Face hub id: `org/name` (e.g. dc-ai/dc-ae-f64c128-1.5, mit-han-lab/dc-ae-f32c32-in-1.0-diffusers).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def resolve(spec, option):
    """What a script's --ae / --ckpt / --init names -> (a local path, the hub id or None). A path that exists
    is taken as it is, and so is one under an existing folder; any other `org/name` is a Hugging Face hub id, resolved
    by huggingface_hub into its normal cache (HF_HOME, HF_HUB_OFFLINE=1 and tokens for gated repositories work as they
    do everywhere), with only its config and safetensors weights fetched."""
    if os.path.exists(spec) or not HUB_ID.fullmatch(spec) or os.path.isdir(spec.split("/")[0]):
        return spec, None
    import huggingface_hub  # only for hub ids
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    try:
        return huggingface_hub.snapshot_download(spec, allow_patterns=["*.json", "*.safetensors"]), spec
    except GatedRepoError as e:
        raise ValueError(f"{option} {spec}: the hub refuses access to this gated repository; accept its terms on "
                         f"huggingface.co and log in (`hf auth login`) or set HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise ValueError(f"{option} {spec}: not found: no such file or folder here, and no such repository on the "
                         f"Hugging Face hub (or a private one: log in or set HF_TOKEN)") from e
    except (FileNotFoundError, HfHubHTTPError, OSError) as e:  # offline (LocalEntryNotFoundError), or the hub failed
        offline = "HF_HUB_OFFLINE=1 keeps the hub off" if huggingface_hub.constants.HF_HUB_OFFLINE else \
            "the hub cannot be reached"
        raise ValueError(f"{option} {spec}: not found: no such file or folder here, and the hub id is not in the "
                         f"Hugging Face cache ({huggingface_hub.constants.HF_HUB_CACHE}) while {offline}. "
                         f"Fetch it once with a network: python -c \"import huggingface_hub; "
                         f"huggingface_hub.snapshot_download('{spec}')\" (HF_HOME / HF_HUB_CACHE choose the cache), then "
                         f"run with HF_HUB_OFFLINE=1; or pass a local folder") from e


def newest_checkpoint(folder, option, script):
    """A run folder -> its newest ckpt_*.pt (what --ae / --ckpt take for a run of `script`)."""
    path = run.latest_checkpoint(folder)
    if path is None:
        raise ValueError(f"{option} {folder}: no ckpt_*.pt in this folder (run `python {script} --out {folder}` "
                         f"first) and no config.json (a released folder)")
    return path


# ------------------------------------------------------------------------------------------------
# The released DC-AE formats: diffusers' AutoencoderDC and DC-Gen's (efficientvit's) DCAE_HF
# ------------------------------------------------------------------------------------------------

def config_from_diffusers(d, name):
    """Our AEConfig from a diffusers `AutoencoderDC` config.json dict (keys it lacks take diffusers' defaults). A
    registry name supplies what the format does not hold: whether the AE is structured, and a released scaling factor
    where the config says 1.0 (diffusers' "none")."""
    widths = tuple(d.get("encoder_block_out_channels", (128, 256, 512, 512, 1024, 1024)))
    S = len(widths)
    if tuple(d.get("decoder_block_out_channels", widths)) != widths:
        raise ValueError("encoder and decoder widths differ: no DC-AE does that, ae.py does not implement it")
    if d.get("attention_head_dim", 32) != 32:
        raise ValueError(f"attention_head_dim {d['attention_head_dim']}: every DC-AE model uses 32, the only value ae.py "
                         f"implements")
    if d.get("encoder_out_shortcut", True) != d.get("decoder_in_shortcut", True):
        raise ValueError("encoder_out_shortcut and decoder_in_shortcut must agree")
    per_stage = lambda v: (v,) * S if isinstance(v, str) else tuple(v)  # noqa: E731  diffusers: one value or one each
    scales = lambda v: tuple(tuple(k) for k in v) if any(v) else None  # noqa: E731  None: no extra scale anywhere
    blocks = {v: k for k, v in BLOCKS.items()}
    norms = {v: k for k, v in NORMS.items()}
    released = ae_lib.AE_CONFIGS.get(name)
    factor = d.get("scaling_factor")
    return ae_lib.AEConfig(
        c=d.get("latent_channels", 32), widths=widths,
        enc_depths=tuple(d.get("encoder_layers_per_block", (2, 2, 2, 3, 3, 3))),
        dec_depths=tuple(d.get("decoder_layers_per_block", (3, 3, 3, 3, 3, 3))),
        enc_blocks=tuple(blocks[b] for b in per_stage(d.get("encoder_block_types", "ResBlock"))),
        dec_blocks=tuple(blocks[b] for b in per_stage(d.get("decoder_block_types", "ResBlock"))),
        enc_scales=scales(d.get("encoder_qkv_multiscales", ((),) * 3 + ((5,),) * 3)),
        dec_scales=scales(d.get("decoder_qkv_multiscales", ((),) * 3 + ((5,),) * 3)),
        # diffusers tests only `== "pixel_unshuffle"` / `== "interpolate"`: anything else is a conv / a pixel-shuffle
        downsample="pixel_unshuffle" if d.get("downsample_block_type", "pixel_unshuffle") == "pixel_unshuffle" else
        "conv", upsample="interpolate" if d.get("upsample_block_type") == "interpolate" else "pixel_shuffle",
        dec_norms=tuple(norms[n] for n in per_stage(d.get("decoder_norm_types", "rms_norm"))),
        dec_acts=per_stage(d.get("decoder_act_fns", "silu")), out_act=d.get("decoder_conv_act_fn", "relu"),
        latent_shortcut=d.get("encoder_out_shortcut", True),
        scaling_factor=released.scaling_factor if released and factor in (None, 1.0) else factor,
        # the format does not say these; only a known name does
        structured=released.structured if released else False, recipe=released.recipe if released else "paper",
        c_prime_start=released.c_prime_start if released else 16, c_prime_step=released.c_prime_step if released else 4)


BLOCKS = {"res": "ResBlock", "evit": "EfficientViTBlock"}  # ours -> diffusers' names
NORMS = {"rms": "rms_norm", "bn": "batch_norm"}
RESAMPLING = {"pixel_unshuffle": "pixel_unshuffle", "conv": "Conv", "pixel_shuffle": "pixel_shuffle",
              "interpolate": "interpolate"}


def config_to_diffusers(cfg):
    """The diffusers `AutoencoderDC` config (its __init__ arguments) of an AEConfig: the inverse of config_from_diffusers,
    every field written (a field missing from a config.json takes diffusers' default, which is no released model's)."""
    none = ((),) * len(cfg.widths)
    return dict(in_channels=3, latent_channels=cfg.c, attention_head_dim=32,
                encoder_block_types=[BLOCKS[b] for b in cfg.enc_blocks],
                decoder_block_types=[BLOCKS[b] for b in cfg.dec_blocks],
                encoder_block_out_channels=list(cfg.widths), decoder_block_out_channels=list(cfg.widths),
                encoder_layers_per_block=list(cfg.enc_depths), decoder_layers_per_block=list(cfg.dec_depths),
                encoder_qkv_multiscales=[list(k) for k in cfg.enc_scales or none],
                decoder_qkv_multiscales=[list(k) for k in cfg.dec_scales or none],
                upsample_block_type=RESAMPLING[cfg.upsample], downsample_block_type=RESAMPLING[cfg.downsample],
                decoder_norm_types=[NORMS[n] for n in cfg.dec_norms], decoder_act_fns=list(cfg.dec_acts),
                encoder_out_shortcut=cfg.latent_shortcut, decoder_in_shortcut=cfg.latent_shortcut,
                decoder_conv_act_fn=cfg.out_act, scaling_factor=cfg.scaling_factor if cfg.scaling_factor else 1.0)


# DC-Gen's (efficientvit's) names of a block's tensors, from ours (= diffusers'). A ResBlock's parts sit under
# `main.` (a ResidualBlock), an EfficientViT block's attention under `context_module.main.`, its GLUMBConv under
# `local_module.main.`; ConvLayer wraps each conv as `.conv` (and its norm as `.norm`).
DCGEN_BLOCK = [
    ("conv1.", "main.conv1.conv."), ("conv2.", "main.conv2.conv."), ("norm.", "main.conv2.norm."),  # ResBlock
    ("attn.to_qkv_multiscale.", "context_module.main.aggreg."), ("attn.to_out.", "context_module.main.proj.conv."),
    ("attn.norm_out.", "context_module.main.proj.norm."), ("attn.qkv.", "context_module.main.qkv.conv."),
    ("conv_out.conv_inverted.", "local_module.main.inverted_conv.conv."),
    ("conv_out.conv_depth.", "local_module.main.depth_conv.conv."),
    ("conv_out.conv_point.", "local_module.main.point_conv.conv."),
    ("conv_out.norm.", "local_module.main.point_conv.norm."),
]


def dcgen_key(k, cfg):
    """Our key -> DC-Gen's, for an AE of config `cfg` (the layer kinds decide: a plain conv or a resampling block at
    the ends, the down / up block of a stage, ResidualBlock wrappers where the latent shortcuts are). The attention's
    to_q / to_k / to_v map to one `qkv.conv.weight`, named here as `attn.qkv.weight` first."""
    part, rest = k.split(".", 1)  # "encoder" / "decoder"
    depths = cfg.enc_depths if part == "encoder" else cfg.dec_depths
    shortcut = "main." if cfg.latent_shortcut else ""  # the latent convs are ResidualBlocks where shortcuts are
    if k.startswith("encoder.conv_in."):  # a plain conv (a ConvLayer), or a down layer without shortcut
        leaf = rest[len("conv_in."):]  # "weight" / "bias", or "conv.weight" of a DownBlock
        if cfg.enc_depths[0] or cfg.downsample == "conv":
            return "encoder.project_in.conv." + leaf.removeprefix("conv.")
        return "encoder.project_in.conv." + leaf  # ConvPixelUnshuffle nests a ConvLayer
    if k.startswith("encoder.conv_out."):
        return f"encoder.project_out.{shortcut}op_list.0.conv." + rest[len("conv_out."):]
    if k.startswith("decoder.conv_in."):
        return f"decoder.project_in.{shortcut}conv." + rest[len("conv_in."):]
    if k.startswith("decoder.norm_out."):
        return "decoder.project_out.op_list.0." + rest[len("norm_out."):]
    if k.startswith("decoder.conv_out."):  # a plain conv, or an up layer without shortcut (both nest a ConvLayer)
        return "decoder.project_out.op_list.2.conv." + rest[len("conv_out."):]
    _, s, i, leaf = rest.split(".", 3)  # down_blocks / up_blocks . stage . index . the block's own key
    s, i = int(s), int(i)
    prefix = f"{part}.stages.{s}.op_list.{i}."
    has_resampler = depths[s] and s < len(depths) - 1
    resampler = (i == depths[s]) if part == "encoder" else (i == 0 and has_resampler)
    if resampler:  # a down block (ConvPixelUnshuffle nests a ConvLayer, Conv is one) or an up block (both nest one)
        nested = part == "decoder" or cfg.downsample == "pixel_unshuffle"
        return prefix + "main.conv." + ("conv." + leaf[5:] if nested else leaf[5:])
    leaf = leaf.replace(".proj_in.", ".0.").replace(".proj_out.", ".1.")  # the multiscale aggregation convs
    for ours, theirs in DCGEN_BLOCK:
        if leaf.startswith(ours):
            return prefix + theirs + leaf[len(ours):]
    raise ValueError(f"no DC-Gen name for {k}")


def to_dcgen(state_dict, cfg):
    """Our AE state dict -> DC-Gen's (DCAE_HF): renamed, to_q / to_k / to_v stacked into the 1x1 qkv conv, linear
    layers back to 1x1 convs."""
    out = {}
    for k, v in state_dict.items():
        if k.endswith(("attn.to_k.weight", "attn.to_v.weight")):
            continue
        if k.endswith("attn.to_q.weight"):
            base = k[: -len("to_q.weight")]
            v = torch.cat([v, state_dict[base + "to_k.weight"], state_dict[base + "to_v.weight"]])  # (3C, C)
            k = base + "qkv.weight"
        if k.endswith(("attn.qkv.weight", "attn.to_out.weight")):
            v = v[:, :, None, None]  # linear (C_out, C_in) -> 1x1 conv (C_out, C_in, 1, 1)
        out[dcgen_key(k, cfg)] = v
    return out


def from_dcgen_ae(dcgen_sd, model):
    """A DC-Gen AE state dict -> ours for `model`, by the same names as to_dcgen (one mapping, both ways); a key of
    theirs that none of ours maps to is left for the strict load to name."""
    out, used = {}, set()
    for k in model.state_dict():
        if k.endswith(("attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight")):
            theirs = dcgen_key(k[: -len("to_q.weight")] + "qkv.weight", model.config)
            if theirs in dcgen_sd:
                third = "qkv".index(k[-len("q.weight")])
                out[k] = dcgen_sd[theirs].flatten(1).chunk(3)[third]  # (3C, C, 1, 1) -> its third, (C, C)
                used.add(theirs)
            continue
        theirs = dcgen_key(k, model.config)
        if theirs in dcgen_sd:
            out[k] = dcgen_sd[theirs].flatten(1) if k.endswith("attn.to_out.weight") else dcgen_sd[theirs]
            used.add(theirs)
    out.update({f"(DC-Gen) {k}": v for k, v in dcgen_sd.items() if k not in used})  # named as unexpected
    return out


def load_ae(spec, device="cpu", option="--ae"):
    """The scripts' --ae (and train_ae.py's --init) -> Loaded. spec: a train_ae.py run folder (its newest ckpt_*.pt) or
    .pt (its EMA weights), a diffusers folder (config.json + diffusion_pytorch_model.safetensors), a DC-Gen folder
    (config.json {"model_name": ...} + model.safetensors), a hub id of either (dc-ai/dc-ae-f64c128-1.5,
    mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers), or random:NAME (random weights of a registry AE: smoke runs, said loudly)."""
    if spec.startswith("random:"):  # asked for by name: random weights, for smoke runs and tests
        name = spec[len("random:"):]
        if name not in ae_lib.AE_CONFIGS:
            raise ValueError(f"{option} {spec}: unknown AE {name!r}; choose from {sorted(ae_lib.AE_CONFIGS)}")
        print(f"WARNING: {option} {spec}: the AE has RANDOM weights, its latents carry no image content; use a "
              "trained checkpoint for real runs.", file=sys.stderr)
        with torch.random.fork_rng(devices=[]):  # the same random AE every time, without touching the caller's RNG
            torch.manual_seed(0)
            model = ae_lib.build_ae(name)
        return loaded(model, name, spec, device)
    if spec in ae_lib.AE_CONFIGS and not os.path.exists(spec):
        raise ValueError(f"{option} {spec}: no weights of this name here. Pass a train_ae.py run folder or .pt, a "
                         f"released folder or hub id, or `{option} random:{spec}` for random weights (smoke runs)")
    spec, repo = resolve(spec, option)
    if os.path.isdir(spec) and not os.path.isfile(os.path.join(spec, "config.json")):
        spec = newest_checkpoint(spec, option, "train_ae.py")
    if not os.path.exists(spec):
        raise ValueError(f"{option} {spec}: not found. Train one with `python train_ae.py` (writes runs/ae), pass a "
                         f"released checkpoint folder or hub id, or random:NAME for a random-weight smoke run")
    path = os.path.abspath(spec)
    if os.path.isfile(path):
        ckpt = run.read_checkpoint(path, mmap=True)
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
    source = repo or path  # a hub id is recorded as the id: it resolves again on any machine
    if "model_name" in config:  # DC-Gen: the registry name is in config.json
        name = config["model_name"].split("/")[-1]
        model = ae_lib.build_ae(name)
        weights = os.path.join(path, "model.safetensors")
        load_state_dict_strict(model, from_dcgen_ae(load_file(weights), model), weights, name)
    else:  # diffusers: the name is the repo's or the folder's (never a snapshot's hash), without "-diffusers"
        if config.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
            raise ValueError(f"{path}/config.json: _class_name {config['_class_name']!r} is not AutoencoderDC")
        name = (repo.split("/")[1] if repo else os.path.basename(os.path.normpath(path))).removesuffix("-diffusers")
        model = ae_lib.DCAE(name, config_from_diffusers(config, name))
        weights = os.path.join(path, "diffusion_pytorch_model.safetensors")
        load_state_dict_strict(model, load_file(weights), weights, name)
    return loaded(model, name, source, device, scaling_factor=model.scaling_factor)


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
    spec, repo = resolve(spec, "--ckpt")
    if os.path.isfile(os.path.join(spec, "config.json")):  # a DC-Gen class-to-image folder (released or exported)
        path = repo or os.path.abspath(spec)
        release = read_json(os.path.join(spec, "config.json")).get("model_name", "").split("/")[-1]
        weights_file = os.path.join(spec, "model.safetensors")
        if not os.path.isfile(weights_file):
            raise ValueError(f"--ckpt {spec}: a DC-Gen model folder holds config.json and model.safetensors")
        with safe_open(weights_file, "pt") as fh:
            ours = json.loads((fh.metadata() or {}).get(METADATA, "null"))  # an export of train_diffusion.py's
        if ours:  # our metadata states the latent, classes and scaling factor the weights were trained with
            return from_export(ours, load_file(weights_file), path, device, release if release in DCGEN_MODELS else None)
        return from_dcgen(release, load_file(weights_file), path, device)
    if os.path.isdir(spec):
        spec = newest_checkpoint(spec, "--ckpt", "train_diffusion.py")
    if not os.path.isfile(spec):
        raise ValueError(f"--ckpt {spec}: checkpoint not found")
    path = os.path.abspath(spec)
    ckpt = run.read_checkpoint(path, mmap=True)
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


def from_export(ours, state_dict, source, device="cpu", release=None):
    """A class-to-image folder exported by `python checkpoints.py export`: the facts the export wrote into the
    safetensors metadata (METADATA) rebuild it, whether or not its name is a release's (release: that name)."""
    name, (c, h, w) = ours["model"], ours["latent_shape"]
    model = models.create_model(name, in_channels=c, input_size=h, num_classes=ours["num_classes"],
                                patch_size=ours.get("patch_size", 1), device="meta")
    try:
        model.load_state_dict(convert_dcgen_state_dict(state_dict), strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: weights do not fit {name} at c={c}, {h}x{w}: {str(e)[:400]}") from e
    return loaded(model, name, source, device, scaling_factor=ours["scaling_factor"], step=ours.get("step"),
                  latent_shape=[c, h, w], num_classes=ours["num_classes"], ae=ours.get("ae"),
                  ae_name=ours.get("ae_name"), release=release,
                  cfg_scale=(1.3 if name == "DiT-XL" else 1.5) if release else None)


# ------------------------------------------------------------------------------------------------
# Export: our AEs to diffusers and DC-Gen folders, our diffusion checkpoints to DC-Gen's class-to-image folders
# ------------------------------------------------------------------------------------------------

METADATA = "dc-ae-1.5-reference"  # the safetensors metadata key of what our loader needs and DC-Gen's format lacks
DIFFUSERS_VERSION = "0.42.1"  # the version whose AutoencoderDC the export was checked against (tests)


def write_folder(out, files):
    """files: {name: bytes}, each written atomically (run.atomic_write) into a new folder `out` (an existing non-empty
    one is refused: nothing a user made is overwritten)."""
    run.check_out(out)
    if os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"--out {out} is not empty: pass a new folder")
    os.makedirs(out, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(out, name)
        try:
            run.atomic_write(path, lambda fh: fh.write(content))
        except OSError as e:
            raise ValueError(run.write_error(path, e)) from e


def config_bytes(config):
    return json.dumps(config, indent=2).encode()


def export_ae(ae, to, out, scaling_factor=None):
    """An AE (Loaded) -> a diffusers AutoencoderDC folder (config.json with every field and the scaling factor,
    diffusion_pytorch_model.safetensors in our keys, which are diffusers') or a DC-Gen folder (config.json
    {"model_name"} + model.safetensors in DC-Gen's keys; DC-Gen keeps the scaling factor in its class-to-image
    registry)."""
    sd = {k: v.detach().cpu().contiguous() for k, v in ae.model.state_dict().items()}
    if to == "diffusers":
        factor = scaling_factor or ae.scaling_factor
        if factor is None:
            raise ValueError(f"{ae.source} has no known latent scaling factor and diffusers' config needs one: pass "
                             f"--scaling-factor (train_diffusion.py logs it: 'latent std S x scale F')")
        config = {"_class_name": "AutoencoderDC", "_diffusers_version": DIFFUSERS_VERSION,
                  **config_to_diffusers(ae.model.config), "scaling_factor": factor}
        write_folder(out, {"config.json": config_bytes(config), "diffusion_pytorch_model.safetensors": save(sd)})
    else:
        dcgen = {k: v.contiguous() for k, v in to_dcgen(sd, ae.model.config).items()}
        write_folder(out, {"config.json": config_bytes({"model_name": ae.name}), "model.safetensors": save(dcgen)})


def release_name(ckpt):
    """DC-Gen's name for a class-to-image model: a released one where the backbone, the AE, the 512 px latent, the
    1000 classes and the scaling factor are those of a release (DC-Gen reads the factor from its AE, so a model
    trained on latents scaled otherwise would be sampled wrongly under that name), else a name of ours,
    <ae>-<model>-<px>px (DC-Gen's own code does not know it; ours reads the metadata)."""
    ae = ae_lib.AE_CONFIGS.get(ckpt.ae_name)
    side = 512 // 2 ** (len(ae.widths) - 1) if ae else None
    factors = (ckpt.scaling_factor, ae.scaling_factor if ae else None)
    same_factor = None not in factors and math.isclose(*factors, rel_tol=1e-6)
    for release, (name, ae_name) in DCGEN_MODELS.items():
        if (name, ae_name) == (ckpt.name, ckpt.ae_name) and ckpt.latent_shape[1] == side and \
                ckpt.num_classes == 1000 and "-train" not in release and same_factor:
            return release
    px = ckpt.latent_shape[1] * 2 ** (len(ae.widths) - 1) if ae else ckpt.latent_shape[1]
    return f"{ckpt.ae_name}-{ckpt.name.lower()}-{px}px"


def export_diffusion(ckpt, out):
    """A diffusion checkpoint (Loaded) -> DC-Gen's class-to-image folder: config.json {"model_name"} and
    model.safetensors with keys `diffusion_model.<key>` (DCAE_Diffusion_HF), plus what our loader needs in the
    safetensors metadata (DC-Gen ignores it)."""
    sd = {PREFIX + k: v.detach().cpu().contiguous() for k, v in ckpt.model.state_dict().items()}
    ours = dict(model=ckpt.name, latent_shape=ckpt.latent_shape, num_classes=ckpt.num_classes,
                scaling_factor=ckpt.scaling_factor, ae=ckpt.ae, ae_name=ckpt.ae_name, step=ckpt.step)
    name = release_name(ckpt)
    write_folder(out, {"config.json": config_bytes({"model_name": name}),
                       "model.safetensors": save(sd, metadata={METADATA: json.dumps(ours)})})
    return name


def is_diffusion(spec):
    """Whether --ckpt-like spec (after resolve) is a diffusion model: our checkpoint with a latent shape, or a DC-Gen
    class-to-image folder (its weights under `diffusion_model.`)."""
    if os.path.isdir(spec) and not os.path.isfile(os.path.join(spec, "config.json")):
        spec = newest_checkpoint(spec, "SRC", "train_ae.py or train_diffusion.py")
    if os.path.isfile(spec):
        return "latent_shape" in run.read_checkpoint(spec, mmap=True)
    weights = os.path.join(spec, "model.safetensors")
    if not os.path.isfile(weights):
        return False
    with safe_open(weights, "pt") as fh:
        return any(k.startswith(PREFIX) for k in fh.keys())


def main(args):
    """python checkpoints.py export SRC --to diffusers|dcgen --out DIR"""
    try:
        src, _ = resolve(args.src, "SRC")
        if args.src not in ae_lib.AE_CONFIGS and is_diffusion(src):
            if args.to == "diffusers":
                raise ValueError(f"{args.src} is a class-to-image diffusion model: diffusers has no format for these "
                                 f"backbones; export it with --to dcgen")
            ckpt = load_diffusion(args.src, weights=args.weights)  # the id itself: the loaders keep it (the name)
            name = export_diffusion(ckpt, args.out)
            print(f"wrote {args.out}: DC-Gen class-to-image folder {name!r} ({ckpt.name}, {args.weights} weights, "
                  f"latent {ckpt.latent_shape}, scale {ckpt.scaling_factor:.4g}; AE {ckpt.ae_name}: pass it to "
                  f"--ae, it is not in the folder)")
        else:
            ae = load_ae(args.src, option="SRC")
            export_ae(ae, args.to, args.out, args.scaling_factor)
            print(f"wrote {args.out}: {args.to} folder of {ae.name} (from {ae.source}"
                  f"{', its EMA weights' if os.path.isfile(ae.source) else ''}; scaling factor "
                  f"{args.scaling_factor or ae.scaling_factor})")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a model in diffusers' or DC-Gen's format")
    e.add_argument("src", metavar="SRC", help="required: a train_ae.py or train_diffusion.py run folder or .pt, a "
                   "released folder or hub id, or random:NAME (a registry AE with random weights)")
    e.add_argument("--to", choices=["diffusers", "dcgen"], required=True,
                   help="required: diffusers (AutoencoderDC, AEs only) or dcgen (DCAE_HF / DCAE_Diffusion_HF)")
    e.add_argument("--out", required=True, help="required: a new folder")
    e.add_argument("--weights", choices=["ema", "model"], default="ema", help="which weights of a train_diffusion.py "
                   "checkpoint (AEs: always the EMA's)")
    e.add_argument("--scaling-factor", type=cli.real(0, above=True), default=None,
                   help="the latent scale for diffusers' config (default: the AE's own, if known)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
