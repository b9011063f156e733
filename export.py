"""Our models in the other codebases' formats (DESIGN.md §4, §5b): an AE to a diffusers
AutoencoderDC folder or a DC-Gen DCAE_HF folder, a train_diffusion.py checkpoint to DC-Gen's
class-to-image folder (DCAE_Diffusion_HF). EMA weights; a new --out folder, written file by file
atomically. What a format cannot hold and our loader needs rides in the safetensors metadata (the
other codebases ignore it): an AE keeps its name, structure, recipe, c' list, training resolution,
scaling factor and step; a diffusion model its latent, classes, scale and AE. checkpoints.py reads
each of them back.

    python export.py runs/ae --to diffusers --out exports/ae-diffusers --scaling-factor 0.61
    python export.py runs/ae --to dcgen --out exports/ae-dcgen
    python export.py runs/diffusion --to dcgen --out exports/usit-dcgen   # DC-Gen's class-to-image
"""
import json
import math
import os
import sys

from safetensors.torch import save

import ae as ae_lib
import checkpoints
import cli
import formats
import releases
import run

DIFFUSERS_VERSION = "0.42.1"  # the version whose AutoencoderDC the export was checked against


def write_folder(out, files):
    """files: {name: bytes}, each written atomically (run.atomic_write) into a new folder `out` (an
    existing non-empty one is refused: nothing a user made is overwritten)."""
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
    """An AE (Loaded) -> a diffusers AutoencoderDC folder (config.json with every field and the
    scaling factor, diffusion_pytorch_model.safetensors in our keys, which are diffusers') or a
    DC-Gen folder (config.json {"model_name"} + model.safetensors in DC-Gen's keys; DC-Gen keeps
    factors in its class-to-image registry). Both carry the AE's identity in the safetensors
    metadata. scaling_factor, when given, replaces the AE's own. Returns the factor written."""
    factor = scaling_factor if scaling_factor is not None else ae.scaling_factor
    cfg = ae.model.config
    identity = {k: getattr(cfg, k) for k in formats.IDENTITY}  # what the format cannot say
    identity.update(name=ae.name, resolution=ae.resolution, scaling_factor=factor, step=ae.step)
    metadata = {formats.METADATA: json.dumps(identity)}
    sd = {k: v.detach().cpu().contiguous() for k, v in ae.model.state_dict().items()}
    if to == "diffusers":
        if factor is None:
            raise ValueError(f"{ae.source} has no known latent scaling factor and diffusers' "
                             f"config needs one: pass --scaling-factor (train_diffusion.py logs "
                             f"it: 'latent std S x scale F')")
        config = {"_class_name": "AutoencoderDC", "_diffusers_version": DIFFUSERS_VERSION,
                  **formats.config_to_diffusers(cfg), "scaling_factor": factor}
        write_folder(out, {"config.json": config_bytes(config),
                           "diffusion_pytorch_model.safetensors": save(sd, metadata=metadata)})
    else:
        dcgen = {k: v.contiguous() for k, v in formats.to_dcgen(sd, cfg).items()}
        write_folder(out, {"config.json": config_bytes({"model_name": ae.name}),
                           "model.safetensors": save(dcgen, metadata=metadata)})
    return factor


def release_name(ckpt):
    """DC-Gen's name for a class-to-image model: a release's (not a variant's) where the backbone,
    the AE, the latent side, the 1000 classes and the scaling factor are the release's (DC-Gen
    reads the factor from its AE, so a model trained on latents scaled otherwise would be sampled
    wrongly under that name), else a name of ours, <ae>-<model>-<px>px (DC-Gen's own code does not
    know it; ours reads the metadata)."""
    ae = ae_lib.AE_CONFIGS.get(ckpt.ae_name)
    f = 2 ** (len(ae.widths) - 1) if ae else 1
    factors = (ckpt.scaling_factor, ae.scaling_factor if ae else None)
    same_factor = None not in factors and math.isclose(*factors, rel_tol=1e-6)
    for r in releases.RELEASES.values():
        if (r.backbone, r.ae, r.variant_of) == (ckpt.name, ckpt.ae_name, None) and same_factor \
                and ckpt.latent_shape[1] == r.resolution // f and ckpt.num_classes == 1000:
            return r.name
    return f"{ckpt.ae_name}-{ckpt.name.lower()}-{ckpt.latent_shape[1] * f}px"


def export_diffusion(ckpt, out):
    """A diffusion checkpoint (Loaded) -> DC-Gen's class-to-image folder: config.json
    {"model_name"} and model.safetensors with keys `diffusion_model.<key>`
    (DCAE_Diffusion_HF), plus what our loader needs in the safetensors metadata
    (DC-Gen ignores it). Returns the name."""
    sd = {formats.PREFIX + k: v.detach().cpu().contiguous()
          for k, v in ckpt.model.state_dict().items()}
    ours = dict(model=ckpt.name, latent_shape=ckpt.latent_shape, num_classes=ckpt.num_classes,
                scaling_factor=ckpt.scaling_factor, ae=ckpt.ae, ae_name=ckpt.ae_name,
                step=ckpt.step)
    name = release_name(ckpt)
    metadata = {formats.METADATA: json.dumps(ours)}
    write_folder(out, {"config.json": config_bytes({"model_name": name}),
                       "model.safetensors": save(sd, metadata=metadata)})
    return name


def is_diffusion(spec):
    """Whether SRC is a diffusion model: our checkpoint with a latent shape, or a DC-Gen
    class-to-image folder (checked by formats.read_folder). Anything else, or nothing there,
    goes to the AE loader, which says what is wrong."""
    src, repo = checkpoints.resolve(spec, "SRC")
    if os.path.isdir(src) and not os.path.isfile(os.path.join(src, "config.json")):
        src = checkpoints.newest_checkpoint(src, "SRC", "train_ae.py or train_diffusion.py")
    if os.path.isfile(src):
        return "latent_shape" in run.read_checkpoint(src, mmap=True)
    return os.path.isdir(src) and formats.read_folder(src, "SRC", repo).kind == "c2i"


def main(args):
    """python export.py SRC --to diffusers|dcgen --out DIR"""
    try:
        if is_diffusion(args.src):
            if args.to == "diffusers":
                raise ValueError(f"{args.src} is a class-to-image diffusion model: diffusers has "
                                 f"no format for these backbones; export it with --to dcgen")
            # The id itself, not its snapshot: the loaders keep it as the source (the name).
            ckpt = checkpoints.load_diffusion(args.src, weights=args.weights)
            name = export_diffusion(ckpt, args.out)
            print(f"wrote {args.out}: DC-Gen class-to-image folder {name!r} ({ckpt.name}, "
                  f"{args.weights} weights, latent {ckpt.latent_shape}, scale "
                  f"{ckpt.scaling_factor:.4g}; AE {ckpt.ae_name}: pass it to --ae, it is not in "
                  f"the folder)")
        else:
            ae = checkpoints.load_ae(args.src, option="SRC")
            factor = export_ae(ae, args.to, args.out, args.scaling_factor)
            ema = ", its EMA weights" if os.path.isfile(ae.source) else ""
            print(f"wrote {args.out}: {args.to} folder of {ae.name} (from {ae.source}{ema}; "
                  f"scaling factor {factor})")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("src", metavar="SRC",
                        help="required: a train_ae.py or train_diffusion.py run folder or .pt, a "
                        "released folder, name or hub id, or random:NAME (a registry AE, random)")
    parser.add_argument("--to", choices=["diffusers", "dcgen"], required=True,
                        help="required: diffusers (AutoencoderDC, AEs only) or dcgen (DCAE_HF / "
                        "DCAE_Diffusion_HF)")
    parser.add_argument("--out", required=True, help="required: a new folder")
    parser.add_argument("--weights", choices=["ema", "model"], default="ema",
                        help="which weights of a train_diffusion.py checkpoint (AEs: the EMA's)")
    parser.add_argument("--scaling-factor", type=cli.real(0, above=True), default=None,
                        help="an AE's latent scale, written in diffusers' config and in both "
                        "formats' metadata (default: the AE's own, if known)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
