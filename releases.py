"""The authors' released weights and the paper's numbers for them (paper Tables 3-4; DESIGN.md §4,
§5b): one record per release, data only. checkpoints.py resolves a released name to its hub id
through this table, and a loaded class-to-image release carries its record (`Loaded.release`): the
AE it was trained on, its sampler, the authors' CFG scale and guidance interval where they were
published (None where not), and the numbers published for it.

    python releases.py        # the table: name, backbone + AE, protocol, published numbers
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class AERelease:
    """A released DC-AE: its registry name (ae.AE_CONFIGS) and where it is on the hub."""
    name: str
    hub_id: str  # DC-Gen's format: config.json {"model_name"} + model.safetensors (DCAE_HF)
    diffusers_id: str | None  # the same weights as a diffusers AutoencoderDC folder (None: none)


@dataclass(frozen=True)
class Reported:
    """Numbers published for one release: gFID of 50K samples against ImageNet train statistics
    (512 px), and Inception Score, precision and recall without CFG (paper Sec. 4.1: "we do not use
    classifier-free guidance except stated explicitly"). None: not published there."""
    source: str  # where: "paper Table 4", or the authors' README
    gfid: float | None  # without CFG
    gfid_cfg: float | None = None  # with CFG, at the release's cfg_scale where that is published
    inception_score: float | None = None
    precision: float | None = None
    recall: float | None = None


@dataclass(frozen=True)
class Release:
    """A released class-to-image model (DC-Gen's DCAE_Diffusion_HF) and the protocol of its
    published numbers."""
    name: str  # DC-Gen's name: its config.json {"model_name"} and c2i_model_zoo.py key
    hub_id: str
    backbone: str  # models.MODELS key
    ae: str  # the AE it was trained on (ae.AE_CONFIGS key); not in the folder
    ae_hub_id: str
    resolution: int  # image side; the latent side is resolution / f
    sampler: str  # the protocol's sampler (diffusion.py): "ddpm", "dpm-solver" or "dopri5"
    steps: int | None  # its steps (None: adaptive)
    cfg_scale: float | None  # the authors' published scale; None: not published (note)
    guidance_interval: tuple | None  # (lo, hi) noise levels of CFG; None: off, or not published
    reported: tuple  # Reported, the number to compare with first
    variant_of: str | None = None  # the release this one trains longer or with a larger batch
    note: str = ""


# ------------------------------------------------------------------------------------------------
# The AEs (DC-Gen ae_model_zoo.py, projects/DC-AE.md, DC-AE-Lite.md, assets/docs/dc_ae_sana_1.1.md)
# ------------------------------------------------------------------------------------------------

def mit_han_lab(name):
    """DC-AE 1.0 and SANA's AEs: both formats under mit-han-lab/ (diffusers': <name>-diffusers)."""
    return AERelease(name, f"mit-han-lab/{name}", f"mit-han-lab/{name}-diffusers")


AE_RELEASES = {r.name: r for r in [
    *map(mit_han_lab, ["dc-ae-f32c32-in-1.0", "dc-ae-f64c128-in-1.0", "dc-ae-f128c512-in-1.0",
                       "dc-ae-f32c32-mix-1.0", "dc-ae-f64c128-mix-1.0", "dc-ae-f128c512-mix-1.0",
                       "dc-ae-f32c32-sana-1.0", "dc-ae-f32c32-sana-1.1"]),
    # The ids DC-Gen's release note links (projects/DC-AE-Lite.md); its zoo lists mit-han-lab.
    AERelease("dc-ae-lite-f32c32-sana-1.1", "dc-ai/dc-ae-lite-f32c32",
              "dc-ai/dc-ae-lite-f32c32-diffusers"),
    # DC-AE 1.5, in DC-Gen's format only. The unstructured baseline of Tables 2 and 5,
    # dc-ae-f32c128-1.1, is not released.
    AERelease("dc-ae-f32c128-1.5", "dc-ai/dc-ae-f32c128-1.5", None),
    AERelease("dc-ae-f64c128-1.5", "dc-ai/dc-ae-f64c128-1.5", None),
]}


# ------------------------------------------------------------------------------------------------
# The class-to-image models (DC-Gen c2i_model_zoo.py): ImageNet 512 px, 1000 classes, each at
# mit-han-lab/<name> (DC-Gen's c2icore/trainer.py: DCAE_Diffusion_HF.from_pretrained)
# ------------------------------------------------------------------------------------------------

# The sampler of each objective's numbers (DC-Gen's evaluation, DESIGN.md §5b): DiT 250-step DDPM,
# UViT DPM-Solver "fast" with 30 model evaluations, SiT / USiT adaptive dopri5.
DDPM, DPM_SOLVER, DOPRI5 = ("ddpm", 250), ("dpm-solver", 30), ("dopri5", None)
TABLE_4 = "paper Table 4"
# The authors' README: a table of FIDs without / with CFG and a note on the scales, "cfg=1.3 for
# mit-han-lab/dc-ae-f32c32-in-1.0-dit-xl-in-512px and cfg=1.5 for all other models"; its
# evaluation commands add USiT-H at 1.2 and USiT-2B at 1.15 (both on f32c32).
README = "efficientvit applications/dc_ae/README.md, table"
COMMANDS = "efficientvit applications/dc_ae/README.md, evaluation commands"
DC_GEN = "DC-Gen projects/DC-AE.md, evaluation commands"
F32, F64, F64_15 = "dc-ae-f32c32-in-1.0", "dc-ae-f64c128-in-1.0", "dc-ae-f64c128-1.5"


def c2i(name, backbone, ae, protocol, cfg_scale, *reported, variant_of=None, note=""):
    """A record at mit-han-lab/<name>, 512 px, with its AE's hub id from AE_RELEASES."""
    sampler, steps = protocol
    return Release(name, f"mit-han-lab/{name}", backbone, ae, AE_RELEASES[ae].hub_id, 512,
                   sampler, steps, cfg_scale, None, reported, variant_of, note)


RELEASES = {r.name: r for r in [
    c2i(f"{F32}-dit-xl-in-512px", "DiT-XL", F32, DDPM, 1.3, Reported(README, 9.56, 2.84)),
    c2i(f"{F32}-dit-xl-in-512px-trainbs1024", "DiT-XL", F32, DDPM, None,
        Reported(README, 6.88, 2.41), variant_of=f"{F32}-dit-xl-in-512px",
        note="scale not published unambiguously: the README gives 1.3 to the batch-256 DiT-XL "
             "by its id and 1.5 to 'all other models'; which one gave 2.41 is not said"),
    c2i(f"{F32}-sit-xl-in-512px", "SiT-XL", F32, DOPRI5, None,
        Reported(TABLE_4, 7.47, 2.41, 131.37, 0.77, 0.65),
        note="2.41 with CFG at a scale that is not published"),
    c2i(f"{F32}-uvit-s-in-512px", "UViT-S", F32, DPM_SOLVER, 1.5, Reported(README, 46.12, 18.08)),
    c2i(f"{F32}-uvit-h-in-512px", "UViT-H", F32, DPM_SOLVER, 1.5, Reported(README, 9.83, 2.53)),
    c2i(f"{F32}-uvit-2b-in-512px", "UViT-2B", F32, DPM_SOLVER, 1.5, Reported(README, 8.13, 2.30)),
    c2i(f"{F32}-usit-h-in-512px", "USiT-H", F32, DOPRI5, 1.2,
        Reported(TABLE_4, 3.80, 1.89, 174.58, 0.78, 0.64), Reported(COMMANDS, 3.79, 1.88)),
    c2i(f"{F32}-usit-2b-in-512px", "USiT-2B", F32, DOPRI5, 1.15,
        Reported(TABLE_4, 2.90, 1.72, 187.68, 0.79, 0.63)),
    # Table 3's DC-AE-f64c128 + UViT-H row (17.34, IS 88.47) is the paper's own run for its
    # convergence comparison; the authors' evaluation of this release gives 13.91.
    c2i(f"{F64}-uvit-h-in-512px", "UViT-H", F64, DPM_SOLVER, 1.5, Reported(DC_GEN, 13.91, 2.96),
        Reported(README, 13.96, 3.01),
        Reported("paper Table 3 (the paper's run, not this release's number)",
                 17.34, None, 88.47)),
    c2i(f"{F64}-uvit-h-in-512px-train2000k", "UViT-H", F64, DPM_SOLVER, 1.5,
        Reported(README, 12.26, 2.66), variant_of=f"{F64}-uvit-h-in-512px"),
    c2i(f"{F64}-uvit-2b-in-512px", "UViT-2B", F64, DPM_SOLVER, 1.5, Reported(README, 7.78, 2.47)),
    c2i(f"{F64}-uvit-2b-in-512px-train2000k", "UViT-2B", F64, DPM_SOLVER, 1.5,
        Reported(README, 6.50, 2.25), variant_of=f"{F64}-uvit-2b-in-512px"),
    # DC-AE 1.5, the paper's models: no scale was published (DC-Gen searches one with
    # search_optimal_cfg_scale).
    c2i(f"{F64_15}-usit-2b-in-512px", "USiT-2B", F64_15, DOPRI5, None,
        Reported(TABLE_4, 2.18, 1.84, 237.11, 0.80, 0.62),
        note="1.84 with CFG at a scale that is not published"),
    c2i(f"{F64_15}-usit-3b-in-512px", "USiT-3B", F64_15, DOPRI5, None,
        Reported(TABLE_4, 1.70, 1.63, 262.04, 0.80, 0.61),
        note="1.63 with CFG in a guidance interval (Table 4's dagger) whose range and scale are "
             "not published"),
]}


def hub_id(name):
    """The hub id of a released name (an AE's or a class-to-image model's), or None."""
    release = RELEASES.get(name) or AE_RELEASES.get(name)
    return release.hub_id if release else None


def ae_of_diffusers_repo(repo):
    """The registry name of the AE released as the diffusers folder `repo` (its id, or the id's
    name part, which a local clone has as its folder's name), or None."""
    for r in AE_RELEASES.values():
        if r.diffusers_id and repo in (r.diffusers_id, r.diffusers_id.split("/")[1]):
            return r.name
    return None


def main():
    for r in RELEASES.values():
        numbers = "; ".join(f"{x.gfid} / {x.gfid_cfg or '-'} ({x.source})" for x in r.reported)
        scale = "not published" if r.cfg_scale is None else r.cfg_scale
        print(f"{r.name}: {r.backbone} + {r.ae_hub_id}, {r.sampler}, CFG {scale}; gFID {numbers}")


if __name__ == "__main__":
    main()
