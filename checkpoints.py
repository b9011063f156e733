"""What the scripts' --ae, --ckpt and --init name, read in as a model (paper Sec. 4.1, Tables 1,
3-4; DESIGN.md §4, §5b): a run folder or .pt of ours, a released folder, name or hub id, or
random:NAME. The released DC-AEs come in diffusers' and DC-Gen's formats (formats.py, which checks
a released folder whole before any model is built); DC-Gen's class-to-image folders are converted
here; hub ids resolve through the Hugging Face cache, released names through releases.py. Every
loader returns one `Loaded`, built in one place (`loaded`), and every load is strict: missing,
unexpected and misshapen keys are named. export.py writes our models in those formats.

    python -c "import checkpoints; print(checkpoints.load_ae('dc-ae-f64c128-1.5'))"   # a release
    python -c "import checkpoints; print(checkpoints.load_ae('dc-ai/dc-ae-f64c128-1.5'))"  # its id
    python -c "import checkpoints; print(checkpoints.load_ae('runs/ae'))"  # a train_ae.py run
"""
import dataclasses
import os
import re
import sys
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors.torch import load_file

import ae as ae_lib
import formats
import models
import releases
import run


@dataclass
class Loaded:
    """A model read from disk (or built with random weights for a speed run) and what the scripts
    need to know of it."""
    model: nn.Module  # in eval mode, without gradients, on the device
    name: str  # its registry name: ae.AE_CONFIGS or models.MODELS
    source: str  # where it came from: an absolute path, a hub id, or "random:<name>"
    scaling_factor: float | None = None  # the latent scale it was released or trained with
    step: int | None = None  # the training step of one of our checkpoints
    resolution: int | None = None  # an AE's training image side (ours and our exports); else None
    latent_shape: list | None = None  # a diffusion model's latent (c, h, w)
    num_classes: int | None = None
    ae: str | None = None  # the source of the AE a diffusion model was trained on (a release's id)
    ae_name: str | None = None
    release: releases.Release | None = None  # a released class-to-image model's record


def loaded(model, name, source, device, **info):
    """The one place a Loaded is made: the model frozen, in eval mode, on the device."""
    return Loaded(model.to(device).eval().requires_grad_(False), name, source, **info)


def load_state_dict_strict(model, state_dict, source, name):
    """load_state_dict that names what is missing, unexpected or misshapen (BatchNorm's counters
    may be missing)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not match {name}: {len(missing)} missing {missing[:8]}, "
                         f"{len(unexpected)} unexpected {unexpected[:8]}, {len(shapes)} wrong "
                         f"shapes {shapes[:4]}")
    model.load_state_dict(state_dict, strict=False)


# A Hugging Face hub id: `org/name` (e.g. dc-ai/dc-ae-f64c128-1.5).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def resolve(spec, option):
    """What a script's --ae / --ckpt / --init names -> (a local path, the hub id or None). A path
    that exists is taken as it is, and so is one under an existing folder; a released name
    (releases.py) stands for its hub id; any other `org/name` is a Hugging Face hub id, resolved by
    huggingface_hub into its normal cache (HF_HOME, HF_HUB_OFFLINE=1 and tokens for gated
    repositories work as they do everywhere), with only its config and safetensors weights."""
    shown = spec
    if not os.path.exists(spec) and releases.hub_id(spec):
        spec = releases.hub_id(spec)
        shown = f"{shown} (hub id {spec})"
    if os.path.exists(spec) or not HUB_ID.fullmatch(spec) or os.path.isdir(spec.split("/")[0]):
        return spec, None
    import huggingface_hub  # only for hub ids
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    try:
        files = ["*.json", "*.safetensors"]
        return huggingface_hub.snapshot_download(spec, allow_patterns=files), spec
    except GatedRepoError as e:
        raise ValueError(f"{option} {shown}: the hub refuses access to this gated repository; "
                         f"accept its terms on huggingface.co and log in (`hf auth login`) or set "
                         f"HF_TOKEN") from e
    except RepositoryNotFoundError as e:
        raise ValueError(f"{option} {shown}: not found: no such file or folder here, and no such "
                         f"repository on the Hugging Face hub (or a private one: log in or set "
                         f"HF_TOKEN)") from e
    except (FileNotFoundError, HfHubHTTPError, OSError) as e:  # offline, or the hub failed
        offline = ("HF_HUB_OFFLINE=1 keeps the hub off" if huggingface_hub.constants.HF_HUB_OFFLINE
                   else "the hub cannot be reached")
        cache = huggingface_hub.constants.HF_HUB_CACHE
        raise ValueError(f"{option} {shown}: not found: no such file or folder here, and the hub "
                         f"id is not in the Hugging Face cache ({cache}) while {offline}. Fetch "
                         f"it once with a network: python -c \"import huggingface_hub; "
                         f"huggingface_hub.snapshot_download('{spec}')\" (HF_HOME / HF_HUB_CACHE "
                         f"choose the cache), then run with HF_HUB_OFFLINE=1; or pass a local "
                         f"folder") from e


def newest_checkpoint(folder, option, script):
    """A run folder -> its newest ckpt_*.pt (what --ae / --ckpt take for a run of `script`)."""
    path = run.latest_checkpoint(folder)
    if path is None:
        raise ValueError(f"{option} {folder}: no ckpt_*.pt in this folder (run `python {script} "
                         f"--out {folder}` first) and no config.json (a released folder)")
    return path


# ------------------------------------------------------------------------------------------------
# AEs: the scripts' --ae and train_ae.py's --init
# ------------------------------------------------------------------------------------------------

def load_ae(spec, device="cpu", option="--ae"):
    """The scripts' --ae (and train_ae.py's --init) -> Loaded. spec: a train_ae.py run folder (its
    newest ckpt_*.pt) or .pt (its EMA weights), a diffusers folder (config.json +
    diffusion_pytorch_model.safetensors), a DC-Gen folder (config.json {"model_name": ...} +
    model.safetensors), a hub id of either (dc-ai/dc-ae-f64c128-1.5), a released name
    (releases.AE_RELEASES: its hub id), or random:NAME (random weights of a registry AE: smoke
    runs, said loudly)."""
    if spec.startswith("random:"):  # asked for by name: random weights, for smoke runs and tests
        name = spec[len("random:"):]
        if name not in ae_lib.AE_CONFIGS:
            raise ValueError(f"{option} {spec}: unknown AE {name!r}; choose from "
                             f"{sorted(ae_lib.AE_CONFIGS)}")
        print(f"WARNING: {option} {spec}: the AE has RANDOM weights, its latents carry no image "
              "content; use a trained checkpoint for real runs.", file=sys.stderr)
        with torch.random.fork_rng(devices=[]):  # the same AE every time; the caller's RNG intact
            torch.manual_seed(0)
            model = ae_lib.build_ae(name)
        return loaded(model, name, spec, device)
    if spec in ae_lib.AE_CONFIGS and not os.path.exists(spec) and not releases.hub_id(spec):
        raise ValueError(f"{option} {spec}: no weights of this name were released. Pass a "
                         f"train_ae.py run folder or .pt, a released name, folder or hub id, or "
                         f"`{option} random:{spec}` for random weights (smoke runs)")
    spec, repo = resolve(spec, option)
    if os.path.isdir(spec) and not os.path.isfile(os.path.join(spec, "config.json")):
        spec = newest_checkpoint(spec, option, "train_ae.py")
    if not os.path.exists(spec):
        raise ValueError(f"{option} {spec}: not found. Train one with `python train_ae.py` "
                         f"(writes runs/ae), pass a released checkpoint folder or hub id, or "
                         f"random:NAME for a random-weight smoke run")
    path = os.path.abspath(spec)
    if os.path.isfile(path):
        ckpt = run.read_checkpoint(path, mmap=True)
        name, args = ckpt["args"].get("model"), ckpt["args"]
        if name not in ae_lib.AE_CONFIGS:
            kind = " (a diffusion checkpoint: pass it to --ckpt)" if "latent_shape" in ckpt else ""
            raise ValueError(f"{path} is a checkpoint of {name!r}, not of an AE of ae.py{kind}")
        # The run's own c' list and structure (train_ae.py --c-prime-start, --no-structured).
        own = {k: args[k] for k in formats.IDENTITY if args.get(k) is not None}
        model = ae_lib.build_ae(name, **own)
        load_state_dict_strict(model, ckpt.get("ema") or ckpt["model"], path, name)
        # A released factor belongs to the released weights: our own training gives other latents,
        # so the factor is the one measured on them, or None (then train_diffusion.py uses 1 / std
        # of its latent cache).
        return loaded(model, name, path, device, scaling_factor=ckpt.get("scaling_factor"),
                      step=ckpt.get("step"), resolution=args.get("resolution"))
    folder = formats.read_folder(path, option, repo, expect="ae")
    ours = folder.ours or {}  # an export of ours: its identity (export.py)
    identity = {k: ours[k] for k in formats.IDENTITY if k in ours}
    if folder.kind == "dcgen":
        # the registry name builds it: DC-Gen's folder holds no architecture
        model = ae_lib.build_ae(folder.name, **identity)
        theirs = formats.from_dcgen_ae(load_file(folder.weights), model)
        load_state_dict_strict(model, theirs, folder.weights, folder.name)
        factor = ours["scaling_factor"] if "scaling_factor" in ours else model.scaling_factor
    else:
        cfg = formats.config_from_diffusers(folder.config, folder.name)
        model = ae_lib.DCAE(folder.name, dataclasses.replace(cfg, **identity))
        load_state_dict_strict(model, load_file(folder.weights), folder.weights, folder.name)
        factor = model.scaling_factor
    # A hub id is recorded as the id: it resolves again on any machine.
    return loaded(model, folder.name, repo or path, device, scaling_factor=factor,
                  step=ours.get("step"), resolution=ours.get("resolution"))


# ------------------------------------------------------------------------------------------------
# Released class-to-image models (DC-Gen's DCAE_Diffusion_HF, Tables 3-4) and the scripts' --ckpt
# ------------------------------------------------------------------------------------------------

def convert_dcgen_state_dict(state_dict):
    """A DC-Gen class-to-image state dict -> ours: strip `diffusion_model.`; key names are
    otherwise the same (DiT's for DiT/SiT, DC-Gen's uvit.py for UViT/USiT). Strict for any size:
    the architecture and depth are read from the keys, and every key outside that architecture or
    missing from it is named."""
    outside = [k for k in state_dict if not k.startswith(formats.PREFIX)]
    sd = {k.removeprefix(formats.PREFIX): v for k, v in state_dict.items()
          if k.startswith(formats.PREFIX)}
    with torch.device("meta"):  # a tiny reference of the same architecture and depth, for its keys
        if "x_embedder.proj.weight" in sd:  # DiT / SiT
            depth = 1 + max([int(k.split(".")[1]) for k in sd if k.startswith("blocks.")],
                            default=-1)
            out = sd.get("final_layer.linear.weight", torch.empty(0, 0)).shape[0]
            learn_sigma = out == 2 * sd["x_embedder.proj.weight"].shape[1]
            reference = models.DiT(1, 1, 1, 4, depth, 1, learn_sigma=learn_sigma)
        elif "patch_embed.proj.weight" in sd:  # UViT / USiT
            depth = 2 * (1 + max([int(k.split(".")[1]) for k in sd if k.startswith("in_blocks.")],
                                 default=-1))
            reference = models.UViT(1, 1, 1, 4, depth, 1)
        else:
            raise ValueError(f"not a DC-Gen DiT or UViT state dict: no "
                             f"{formats.PREFIX}x_embedder.proj.weight or "
                             f"{formats.PREFIX}patch_embed.proj.weight among its "
                             f"{len(state_dict)} keys")
    expected = reference.state_dict().keys()
    unknown = outside + [formats.PREFIX + k for k in sd if k not in expected]
    missing = [formats.PREFIX + k for k in expected if k not in sd]
    if unknown or missing:
        raise ValueError(f"state dict does not match {type(reference).__name__} of depth {depth}: "
                         f"{len(unknown)} unknown keys {unknown[:8]}, {len(missing)} missing keys "
                         f"{missing[:8]}")
    return sd


def from_dcgen(name, state_dict, source, device="cpu"):
    """A released name and its state dict -> Loaded: the backbone, the latent, and the release's
    record (releases.py): its AE's hub id, which sample.py loads, its protocol and numbers."""
    release = releases.RELEASES.get(name)
    if release is None:
        raise ValueError(f"unknown DC-Gen model {name!r}; released: {sorted(releases.RELEASES)}")
    ae = ae_lib.AE_CONFIGS[release.ae]
    c, side = ae.c, release.resolution // 2 ** (len(ae.widths) - 1)
    model = models.create_model(release.backbone, in_channels=c, input_size=side, num_classes=1000,
                                device="meta")
    try:
        model.load_state_dict(convert_dcgen_state_dict(state_dict), strict=True, assign=True)
    except RuntimeError as e:  # shapes: another width, channel count or resolution
        raise ValueError(f"{name}: weights do not fit {release.backbone} at c={c}, {side}x{side}: "
                         f"{str(e)[:400]}") from e
    return loaded(model, release.backbone, source, device, scaling_factor=ae.scaling_factor,
                  latent_shape=[c, side, side], num_classes=1000, ae=release.ae_hub_id,
                  ae_name=release.ae, release=release)


def load_diffusion(spec, device="cpu", weights="ema", ae=None, resolution=512, num_classes=1000):
    """The scripts' --ckpt -> Loaded. spec: a train_diffusion.py checkpoint or its run folder
    (newest ckpt_*.pt), a released DC-Gen folder (config.json {"model_name": ...} +
    model.safetensors with keys `diffusion_model.<key>`), its hub id or released name
    (releases.RELEASES), an export of ours, or "random:<model>" (random weights, speed runs; the
    latent comes from `ae` and `resolution`)."""
    if spec.startswith("random:"):
        name = spec[len("random:"):]
        if name not in models.MODELS:
            raise ValueError(f"--ckpt {spec}: unknown model {name!r}; choose from "
                             f"{sorted(models.MODELS)}")
        print(f"WARNING: --ckpt {spec}: the diffusion model has RANDOM weights (speed runs only)",
              file=sys.stderr)
        side = resolution // ae.f
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = models.create_model(name, in_channels=ae.c, input_size=side,
                                        num_classes=num_classes)
        return loaded(model, name, spec, device, step=0, latent_shape=[ae.c, side, side],
                      num_classes=num_classes)
    if spec in models.MODELS and not os.path.exists(spec):
        raise ValueError(f"--ckpt {spec}: a backbone of models.py, no weights. Pass a "
                         f"train_diffusion.py run folder or .pt, a released name, folder or hub "
                         f"id, or `--ckpt random:{spec}` for random weights (speed runs)")
    spec, repo = resolve(spec, "--ckpt")
    if os.path.isfile(os.path.join(spec, "config.json")):  # a DC-Gen class-to-image folder
        folder = formats.read_folder(spec, "--ckpt", repo, expect="diffusion")
        source = repo or os.path.abspath(spec)
        if folder.ours:  # an export of ours: the latent, classes and scale it was trained with
            return from_export(folder.ours, load_file(folder.weights), source, device,
                               releases.RELEASES.get(folder.name))
        return from_dcgen(folder.name, load_file(folder.weights), source, device)
    if os.path.isdir(spec):
        spec = newest_checkpoint(spec, "--ckpt", "train_diffusion.py")
    if not os.path.isfile(spec):
        raise ValueError(f"--ckpt {spec}: checkpoint not found")
    path = os.path.abspath(spec)
    ckpt = run.read_checkpoint(path, mmap=True)
    keys = ("ema", "latent_shape", "scaling_factor", "num_classes", "ae")
    if any(k not in ckpt for k in keys):
        raise ValueError(f"--ckpt {path} is not a train_diffusion.py checkpoint (needs keys "
                         f"{list(keys)}); an AE checkpoint goes to --ae")
    name = ckpt["args"].get("model")
    if name not in models.MODELS:
        raise ValueError(f"--ckpt {path}: recorded model {name!r} is not a diffusion backbone of "
                         f"models.py")
    c, h, w = ckpt["latent_shape"]
    # Build on the meta device and adopt the checkpoint's tensors (no random init of 1.6B
    # parameters first).
    model = models.create_model(name, in_channels=c, input_size=h, num_classes=ckpt["num_classes"],
                                patch_size=ckpt["args"].get("patch_size", 1), device="meta")
    try:
        model.load_state_dict(ckpt[weights], strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"--ckpt {path}: its {weights!r} weights do not match {name} at c={c}, "
                         f"{h}x{w}: {str(e)[:400]}") from e
    return loaded(model, name, path, device, scaling_factor=ckpt["scaling_factor"],
                  step=ckpt.get("step"), latent_shape=[c, h, w], num_classes=ckpt["num_classes"],
                  ae=ckpt["ae"], ae_name=ckpt.get("ae_name"))


def from_export(ours, state_dict, source, device="cpu", release=None):
    """A class-to-image folder exported by export.py: the facts it wrote into the safetensors
    metadata (formats.METADATA) rebuild it, whether or not its name is a release's (release: that
    record; the AE stays the one it was trained on)."""
    name, (c, h, w) = ours["model"], ours["latent_shape"]
    model = models.create_model(name, in_channels=c, input_size=h, num_classes=ours["num_classes"],
                                patch_size=ours.get("patch_size", 1), device="meta")
    try:
        model.load_state_dict(convert_dcgen_state_dict(state_dict), strict=True, assign=True)
    except RuntimeError as e:
        raise ValueError(f"{source}: weights do not fit {name} at c={c}, {h}x{w}: "
                         f"{str(e)[:400]}") from e
    return loaded(model, name, source, device, scaling_factor=ours["scaling_factor"],
                  step=ours.get("step"), latent_shape=[c, h, w], num_classes=ours["num_classes"],
                  ae=ours.get("ae"), ae_name=ours.get("ae_name"), release=release)
