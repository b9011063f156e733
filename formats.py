"""The two released DC-AE formats and the reader that checks a released folder (paper Sec. 4.1,
Tables 1, 3-4; DESIGN.md §4, §5b). diffusers' AutoencoderDC is described by its config.json, whose
fields this file turns into our AEConfig and back; its weights carry our key names. DC-Gen's
(efficientvit's) DCAE_HF names only the model in its config.json, and its weights carry other key
names: one rename table, (ours, theirs), serves both directions. read_folder checks a released
folder whole (its config.json, its weights file's safetensors header, the kind of model) before
any model is built, with one line per fault. checkpoints.py builds the models from what it reads;
export.py writes ours in both formats.

    python export.py random:dc-ae-f8c16-tiny --to dcgen --out /tmp/dcgen   # DC-Gen's key names
    python export.py random:dc-ae-f8c16-tiny --to diffusers --out /tmp/diffusers --scaling-factor 1
    python -c "import formats; print(formats.read_folder('/tmp/dcgen', 'PATH'))"   # no model built
"""
import json
import math
import os
from dataclasses import dataclass

import torch

import ae as ae_lib
import releases


# ------------------------------------------------------------------------------------------------
# diffusers' AutoencoderDC: its config.json to our AEConfig and back
# ------------------------------------------------------------------------------------------------

# diffusers' AutoencoderDC arguments where a config.json leaves them out (its __init__ defaults).
DIFFUSERS_DEFAULTS = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32, encoder_block_types="ResBlock",
    decoder_block_types="ResBlock", encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    decoder_qkv_multiscales=[[], [], [], [5], [5], [5]], upsample_block_type="pixel_shuffle",
    downsample_block_type="pixel_unshuffle", decoder_norm_types="rms_norm", decoder_act_fns="silu",
    encoder_out_shortcut=True, decoder_in_shortcut=True, decoder_conv_act_fn="relu")
BLOCKS = {"res": "ResBlock", "evit": "EfficientViTBlock"}  # ours -> diffusers' names
NORMS = {"rms": "rms_norm", "bn": "batch_norm"}
RESAMPLING = {"pixel_unshuffle": "pixel_unshuffle", "conv": "Conv",
              "pixel_shuffle": "pixel_shuffle", "interpolate": "interpolate"}
ACTS = ("silu", "relu")  # ae.make_act's


def check_diffusers_config(d):
    """Raise ValueError for the first field of a diffusers AutoencoderDC config.json that
    config_from_diffusers cannot build from (a wrong type, a per-stage list of another length, an
    unknown name), naming what it found and what it expected."""
    def whole(v, least):  # a JSON integer (not a bool) >= least
        return isinstance(v, int) and not isinstance(v, bool) and v >= least

    def ints(least, shortest=0):
        return lambda v: (isinstance(v, list) and len(v) >= shortest
                          and all(whole(x, least) for x in v))

    def kernels(v):  # per stage, the kernel sizes of its extra attention scales
        return isinstance(v, list) and all(ints(1)(k) for k in v)

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf

    def flag(v):
        return isinstance(v, bool)
    types = {"in_channels": ("3 (RGB)", lambda v: whole(v, 3) and v == 3),
             "latent_channels": ("an integer >= 1", lambda v: whole(v, 1)),
             "attention_head_dim": ("an integer >= 1", lambda v: whole(v, 1)),
             "encoder_block_out_channels": ("a list of 2 or more integers >= 1", ints(1, 2)),
             "decoder_block_out_channels": ("a list of 2 or more integers >= 1", ints(1, 2)),
             "encoder_layers_per_block": ("a list of integers >= 0", ints(0)),
             "decoder_layers_per_block": ("a list of integers >= 0", ints(0)),
             "encoder_qkv_multiscales": ("a list of lists of kernel sizes", kernels),
             "decoder_qkv_multiscales": ("a list of lists of kernel sizes", kernels),
             "encoder_out_shortcut": ("true or false", flag),
             "decoder_in_shortcut": ("true or false", flag),
             "scaling_factor": ("a number > 0", number)}
    for key, (expected, ok) in types.items():
        if key in d and not ok(d[key]):
            raise ValueError(f"config.json: {key} is {json.dumps(d[key])}, expected {expected}")
    if d.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
        raise ValueError(f"config.json: _class_name {d['_class_name']!r} is not AutoencoderDC")
    d = {**DIFFUSERS_DEFAULTS, **d}
    per_stage = {"encoder_block_types": BLOCKS.values(), "decoder_block_types": BLOCKS.values(),
                 "decoder_norm_types": NORMS.values(), "decoder_act_fns": ACTS}  # or one for all
    single = {"decoder_conv_act_fn": ACTS, "downsample_block_type": ("pixel_unshuffle", "Conv"),
              "upsample_block_type": ("pixel_shuffle", "interpolate")}
    for key, known in {**per_stage, **single}.items():
        for v in d[key] if key in per_stage and isinstance(d[key], list) else [d[key]]:
            if v not in known:
                raise ValueError(f"config.json: {key} has {json.dumps(v)}, expected one of "
                                 f"{sorted(known)}")
    S = len(d["encoder_block_out_channels"])
    for key in ("decoder_block_out_channels", "encoder_layers_per_block",
                "decoder_layers_per_block", "encoder_qkv_multiscales", "decoder_qkv_multiscales",
                *per_stage):
        if isinstance(d[key], list) and len(d[key]) != S:
            raise ValueError(f"config.json: {key} has {len(d[key])} entries, expected {S}, "
                             f"one per stage of encoder_block_out_channels")
    if d["decoder_block_out_channels"] != d["encoder_block_out_channels"]:
        raise ValueError("encoder and decoder widths differ: no DC-AE does that, ae.py does not "
                         "implement it")
    if d["attention_head_dim"] != 32:
        raise ValueError(f"attention_head_dim {d['attention_head_dim']}: every DC-AE model uses "
                         f"32, the only value ae.py implements")
    if d["encoder_out_shortcut"] != d["decoder_in_shortcut"]:
        raise ValueError("encoder_out_shortcut and decoder_in_shortcut must agree")
    for key in ("encoder_block_types", "decoder_block_types"):
        blocks = d[key] if isinstance(d[key], list) else [d[key]] * S
        for s, (block, width) in enumerate(zip(blocks, d["encoder_block_out_channels"])):
            if block == "EfficientViTBlock" and width % 32:
                raise ValueError(f"config.json: {key} puts an EfficientViTBlock in stage {s} of "
                                 f"width {width}, expected a multiple of attention_head_dim 32")


def config_from_diffusers(d, name):
    """Our AEConfig from a diffusers `AutoencoderDC` config.json dict (checked by
    check_diffusers_config; keys it lacks take diffusers' defaults). A registry name supplies what
    the format does not hold: whether the AE is structured, its recipe and c' list, and a released
    scaling factor where the config says 1.0 (diffusers' "none")."""
    factor = d.get("scaling_factor")  # absent: not known
    d = {**DIFFUSERS_DEFAULTS, **d}
    S = len(d["encoder_block_out_channels"])

    def per_stage(v):  # diffusers: one value for every stage, or one each
        return (v,) * S if isinstance(v, str) else tuple(v)
    scales = tuple(tuple(k) for k in d["encoder_qkv_multiscales"])
    dec_scales = tuple(tuple(k) for k in d["decoder_qkv_multiscales"])
    blocks = {v: k for k, v in BLOCKS.items()}
    norms = {v: k for k, v in NORMS.items()}
    released = ae_lib.AE_CONFIGS.get(name)
    return ae_lib.AEConfig(
        c=d["latent_channels"], widths=tuple(d["encoder_block_out_channels"]),
        enc_depths=tuple(d["encoder_layers_per_block"]),
        dec_depths=tuple(d["decoder_layers_per_block"]),
        enc_blocks=tuple(blocks[b] for b in per_stage(d["encoder_block_types"])),
        dec_blocks=tuple(blocks[b] for b in per_stage(d["decoder_block_types"])),
        enc_scales=scales if any(scales) else None,  # None: no extra scale anywhere
        dec_scales=dec_scales if any(dec_scales) else None,
        downsample=("pixel_unshuffle" if d["downsample_block_type"] == "pixel_unshuffle"
                    else "conv"),
        upsample="interpolate" if d["upsample_block_type"] == "interpolate" else "pixel_shuffle",
        dec_norms=tuple(norms[n] for n in per_stage(d["decoder_norm_types"])),
        dec_acts=per_stage(d["decoder_act_fns"]), out_act=d["decoder_conv_act_fn"],
        latent_shortcut=d["encoder_out_shortcut"],
        scaling_factor=released.scaling_factor if released and factor in (None, 1.0) else factor,
        # The format does not say these; only a known name does.
        structured=released.structured if released else False,
        recipe=released.recipe if released else "paper",
        c_prime_start=released.c_prime_start if released else 16,
        c_prime_step=released.c_prime_step if released else 4)


def config_to_diffusers(cfg):
    """The diffusers `AutoencoderDC` config (its __init__ arguments) of an AEConfig: the inverse of
    config_from_diffusers, every field written (a field missing from a config.json takes diffusers'
    default, which is no released model's)."""
    none = ((),) * len(cfg.widths)
    return dict(in_channels=3, latent_channels=cfg.c, attention_head_dim=32,
                encoder_block_types=[BLOCKS[b] for b in cfg.enc_blocks],
                decoder_block_types=[BLOCKS[b] for b in cfg.dec_blocks],
                encoder_block_out_channels=list(cfg.widths),
                decoder_block_out_channels=list(cfg.widths),
                encoder_layers_per_block=list(cfg.enc_depths),
                decoder_layers_per_block=list(cfg.dec_depths),
                encoder_qkv_multiscales=[list(k) for k in cfg.enc_scales or none],
                decoder_qkv_multiscales=[list(k) for k in cfg.dec_scales or none],
                upsample_block_type=RESAMPLING[cfg.upsample],
                downsample_block_type=RESAMPLING[cfg.downsample],
                decoder_norm_types=[NORMS[n] for n in cfg.dec_norms],
                decoder_act_fns=list(cfg.dec_acts), encoder_out_shortcut=cfg.latent_shortcut,
                decoder_in_shortcut=cfg.latent_shortcut, decoder_conv_act_fn=cfg.out_act,
                scaling_factor=cfg.scaling_factor if cfg.scaling_factor else 1.0)


# ------------------------------------------------------------------------------------------------
# DC-Gen's (efficientvit's) DCAE_HF: its AE key names to ours and back
# ------------------------------------------------------------------------------------------------

# The rename table between our module names (= diffusers') and DC-Gen's (efficientvit's), per
# block kind. A ResBlock's parts sit under `main.` (a ResidualBlock), an EfficientViT block's
# attention under `context_module.main.`, its GLUMBConv under `local_module.main.`; ConvLayer wraps
# each conv as `.conv` (and its norm as `.norm`).
RES_BLOCK = [("conv1.", "main.conv1.conv."), ("conv2.", "main.conv2.conv."),
             ("norm.", "main.conv2.norm.")]
EVIT_BLOCK = [
    ("attn.qkv.", "context_module.main.qkv.conv."),  # our to_q | to_k | to_v, stacked (QKV)
    ("attn.to_out.", "context_module.main.proj.conv."),
    ("attn.norm_out.", "context_module.main.proj.norm."),
    ("conv_out.conv_inverted.", "local_module.main.inverted_conv.conv."),
    ("conv_out.conv_depth.", "local_module.main.depth_conv.conv."),
    ("conv_out.conv_point.", "local_module.main.point_conv.conv."),
    ("conv_out.norm.", "local_module.main.point_conv.norm."),
]
QKV = ("to_q", "to_k", "to_v")  # diffusers' thirds of DC-Gen's one 1x1 qkv conv, in its order


def multiscale(k):
    """Extra attention scale k (SANA): its depthwise and grouped 1x1 convs, DC-Gen's aggreg.k."""
    return [(f"attn.to_qkv_multiscale.{k}.proj_in.", f"context_module.main.aggreg.{k}.0."),
            (f"attn.to_qkv_multiscale.{k}.proj_out.", f"context_module.main.aggreg.{k}.1.")]


def dcgen_names(cfg):
    """The (ours, theirs) module prefixes of an AE of config `cfg`: one table for both directions
    (to_dcgen, from_dcgen_ae). The layer kinds decide: a plain conv or a resampling block at the
    ends, each stage's blocks and its down / up block, and ResidualBlock wrappers (`main.`) around
    the latent convs where the latent shortcuts are."""
    wrap = "main." if cfg.latent_shortcut else ""
    # DC-Gen's project_in is one ConvLayer: our plain conv3x3 (stage 0 with blocks) or the conv of
    # a stride-2 DownBlock; a pixel-unshuffle DownBlock nests it, as ours does.
    stride_2 = not cfg.enc_depths[0] and cfg.downsample == "conv"
    conv_in = "encoder.conv_in.conv." if stride_2 else "encoder.conv_in."
    pairs = [(conv_in, "encoder.project_in.conv."),
             ("encoder.conv_out.", f"encoder.project_out.{wrap}op_list.0.conv."),
             ("decoder.conv_in.", f"decoder.project_in.{wrap}conv."),
             ("decoder.norm_out.", "decoder.project_out.op_list.0."),
             ("decoder.conv_out.", "decoder.project_out.op_list.2.conv.")]  # a conv or an UpBlock
    S = len(cfg.widths)
    sides = [("encoder", "down_blocks", cfg.enc_depths, cfg.enc_blocks, cfg.enc_scales),
             ("decoder", "up_blocks", cfg.dec_depths, cfg.dec_blocks, cfg.dec_scales)]
    for part, stages, depths, kinds, scales in sides:
        for s in range(S):
            ours, theirs = f"{part}.{stages}.{s}.", f"{part}.stages.{s}.op_list."
            resampler = depths[s] > 0 and s < S - 1
            # The encoder's down block ends its stage (index depths[s]); the decoder's up block
            # begins it (index 0).
            first = 1 if part == "decoder" and resampler else 0
            extra = [p for k in range(len(scales[s]) if scales else 0) for p in multiscale(k)]
            block = RES_BLOCK if kinds[s] == "res" else EVIT_BLOCK + extra
            for i in range(first, first + depths[s]):
                pairs += [(f"{ours}{i}.{a}", f"{theirs}{i}.{b}") for a, b in block]
            if resampler:
                i = depths[s] if part == "encoder" else 0
                # Each up block and the pixel-unshuffle down block nest a ConvLayer; the stride-2
                # down block is one.
                nested = part == "decoder" or cfg.downsample == "pixel_unshuffle"
                pairs.append((f"{ours}{i}.conv.", f"{theirs}{i}.main.conv." + "conv." * nested))
    return pairs


def rename(key, table):
    """key with its longest module prefix found in `table` ({from: to}) replaced; None if none."""
    prefixes = [p for p in table if key.startswith(p)]
    if not prefixes:
        return None
    prefix = max(prefixes, key=len)
    return table[prefix] + key.removeprefix(prefix)


def attentions(model):
    """The module prefixes of a DCAE's linear attentions, e.g. "encoder.down_blocks.3.0.attn."."""
    return [f"{name}." for name, module in model.named_modules()
            if isinstance(module, ae_lib.LinearAttention)]


def to_dcgen(state_dict, cfg):
    """Our AE state dict -> DC-Gen's (DCAE_HF): to_q / to_k / to_v stacked into the 1x1 qkv conv,
    linear layers back to 1x1 convs, then renamed by dcgen_names."""
    with torch.device("meta"):  # the layout only: where the attentions are
        layout = ae_lib.DCAE("layout", cfg)
    sd = dict(state_dict)
    for attn in attentions(layout):
        qkv = torch.cat([sd.pop(f"{attn}{q}.weight") for q in QKV])  # (3C, C)
        sd[f"{attn}qkv.weight"] = qkv[:, :, None, None]  # (3C, C, 1, 1)
        sd[f"{attn}to_out.weight"] = sd[f"{attn}to_out.weight"][:, :, None, None]  # (C, C', 1, 1)
    table = dict(dcgen_names(cfg))
    out = {}
    for k, v in sd.items():
        theirs = rename(k, table)
        if theirs is None:
            raise ValueError(f"no DC-Gen name for {k}")
        out[theirs] = v
    return out


def from_dcgen_ae(dcgen_sd, model):
    """A DC-Gen AE state dict -> ours for `model`, by to_dcgen's table read the other way; a key of
    theirs that none of ours maps to is left for the strict load to name."""
    table = {theirs: ours for ours, theirs in dcgen_names(model.config)}
    out = {}
    for k, v in dcgen_sd.items():
        ours = rename(k, table)
        out[ours if ours else f"(DC-Gen) {k}"] = v  # named as unexpected
    for attn in attentions(model):
        if f"{attn}qkv.weight" in out:
            thirds = out.pop(f"{attn}qkv.weight").flatten(1).chunk(3)  # (3C, C, 1, 1) -> 3 (C, C)
            out.update({f"{attn}{q}.weight": w for q, w in zip(QKV, thirds)})
        if f"{attn}to_out.weight" in out:
            out[f"{attn}to_out.weight"] = out[f"{attn}to_out.weight"].flatten(1)  # (C, C')
    return out


# ------------------------------------------------------------------------------------------------
# The checked reader: a released folder (diffusers, DC-Gen, a hub snapshot) before any model
# ------------------------------------------------------------------------------------------------

METADATA = "dc-ae-1.5-reference"  # safetensors metadata key of what our exports add (export.py)

# The AEConfig fields an export of ours carries besides the weights (export.py): the formats hold
# the architecture only, and these make the AE come back as it was trained.
IDENTITY = ("structured", "recipe", "c_prime_start", "c_prime_step")

PREFIX = "diffusion_model."  # DC-Gen's class-to-image backbone: DCAE_Diffusion_HF.diffusion_model
WEIGHTS = {"diffusers": "diffusion_pytorch_model.safetensors", "dcgen": "model.safetensors"}
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass
class Folder:
    """A released-format folder as read_folder found it: nothing in it contradicts what the loaders
    build from."""
    path: str
    kind: str  # "diffusers" (AutoencoderDC), "dcgen" (DCAE_HF, an AE), "c2i" (DCAE_Diffusion_HF)
    name: str  # DC-Gen's model_name, or a diffusers AE's registry name (metadata, releases.py)
    config: dict
    weights: str  # the safetensors file
    ours: dict | None  # what an export of ours adds (export.py), else None


def read_header(path):
    """A safetensors file's tensor names and metadata from its header alone (no tensor is read),
    once the header is complete and the file as long as the header says. Raises ValueError with
    what was found against what was expected."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")  # the layout: header length, JSON header, data
        if size < 8 or n > size - 8:
            raise ValueError(f"truncated: {size} bytes, shorter than its header length field says "
                             f"({8 + n} bytes at least)")
        try:
            header = json.loads(fh.read(n))
        except ValueError as e:
            raise ValueError(f"its header is not JSON ({e}): not a safetensors file, or damaged") \
                from e
    if not isinstance(header, dict):
        raise ValueError("its header is not a JSON object: not a safetensors file")
    metadata = header.pop("__metadata__", None) or {}
    end = 0  # where the data the header describes ends
    for key, t in header.items():
        begin, stop = t.get("data_offsets", (-1, -1)) if isinstance(t, dict) else (-1, -1)
        if not (isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop
                and isinstance(t.get("shape"), list)):
            raise ValueError(f"its header entry {key!r} is malformed: {json.dumps(t)[:200]}")
        needed = math.prod(t["shape"]) * DTYPE_BYTES.get(t.get("dtype"), 0)
        if needed and stop - begin != needed:
            raise ValueError(f"tensor {key!r} holds {stop - begin} bytes, its {t['dtype']} shape "
                             f"{t['shape']} needs {needed}")
        end = max(end, stop)
    data = size - 8 - n
    if data != end:
        raise ValueError(f"truncated: {data} bytes of tensor data, its header describes {end}"
                         if data < end else
                         f"{data - end} bytes after the {end} its header describes")
    return list(header), metadata


def refetch(path, repo):
    """For a hub snapshot (a hub id, or a path in the Hugging Face cache,
    models--ORG--NAME/snapshots/REV): how to fetch it again; '' for any other folder."""
    parts = os.path.abspath(path).split(os.sep)
    for i, part in enumerate(parts[:-2]):
        if repo is None and part.startswith("models--") and parts[i + 1] == "snapshots":
            repo = "/".join(part.split("--")[1:])  # the cache's folder name of a repository id
    if repo is None:
        return ""
    return (f". A damaged or partial download of the hub's {repo}: fetch it again with python -c "
            f"\"import huggingface_hub; huggingface_hub.snapshot_download('{repo}', "
            f"force_download=True)\"")


def read_folder(path, option, repo=None, expect=None):
    """A released-format folder, checked before any model is built: config.json parses and holds
    the fields, types, per-stage lengths and names we build from; the weights file exists, its
    safetensors header is complete and the file as long as the header says (no tensor is read);
    the model is of the kind asked for (expect: "ae", "diffusion" or None). Else one ValueError
    line: the folder, the field or file, what was found against what was expected, and for a hub
    snapshot how to fetch it again."""
    def fail(what):
        return ValueError(f"{option} {path}: {what}{refetch(path, repo)}")
    try:
        with open(os.path.join(path, "config.json")) as fh:
            config = json.load(fh)
    except (OSError, ValueError) as e:
        raise fail(f"config.json is not readable JSON ({type(e).__name__}: {e})") from e
    if not isinstance(config, dict):
        raise fail(f"config.json holds a {type(config).__name__}, expected a JSON object")
    fmt = "dcgen" if "model_name" in config else "diffusers"
    try:
        if fmt == "diffusers":
            check_diffusers_config(config)
        elif not (isinstance(config["model_name"], str) and config["model_name"]):
            raise ValueError(f"config.json: model_name is {json.dumps(config['model_name'])}, "
                             f"expected a name")
    except ValueError as e:
        raise fail(e) from e
    name = config["model_name"].split("/")[-1] if fmt == "dcgen" else None  # tolerate an org/
    weights, keys, ours = os.path.join(path, WEIGHTS[fmt]), [], None
    if os.path.isfile(weights):
        try:
            keys, metadata = read_header(weights)
            ours = json.loads(metadata.get(METADATA, "null"))
        except ValueError as e:
            raise fail(f"{WEIGHTS[fmt]}: {e}") from e
    # A class-to-image model: a release's name, or a backbone under diffusion_model. (ours).
    c2i = fmt == "dcgen" and (name in releases.RELEASES or any(k.startswith(PREFIX) for k in keys))
    kind = "c2i" if c2i else fmt
    if expect == "ae" and kind == "c2i":
        raise fail(f"a DC-Gen class-to-image model ({name}): pass it to --ckpt")
    if expect == "ae" and kind == "dcgen" and name not in ae_lib.AE_CONFIGS:
        raise fail(f"unknown AE {name!r}; choose from {sorted(ae_lib.AE_CONFIGS)}")
    if expect == "diffusion" and kind == "diffusers":
        raise fail("a diffusers AutoencoderDC folder is an AE: pass it to --ae")
    if not os.path.isfile(weights):
        raise fail(f"{WEIGHTS[fmt]} is missing (a {'DC-Gen' if fmt == 'dcgen' else fmt} model "
                   f"folder holds config.json and {WEIGHTS[fmt]})")
    if expect == "diffusion" and not ours and name not in releases.RELEASES:
        raise fail(f"{name!r} is an AE: pass it to --ae" if name in ae_lib.AE_CONFIGS else
                   f"unknown DC-Gen model {name!r}; released: {sorted(releases.RELEASES)}")
    if fmt == "diffusers":  # our export's name, a release's, or the folder's (never a hash)
        own = repo.split("/")[1] if repo else os.path.basename(os.path.normpath(path))
        name = ours["name"] if ours else releases.ae_of_diffusers_repo(repo or own) or own
    return Folder(path, kind, name, config, weights, ours)
