"""releases.py and what names mean (issue 25): the release table agrees with the registries and
DC-Gen's zoo; a released name resolves to its hub id through the hub cache, like the id itself; a
class-to-image release brings its record and its AE, so that sample.py needs no --ae; a name
without released weights is refused with its random: form; random networks (the random: AE and
backbone, LPIPS's random trunk) are the same in every process.

    python -m pytest -q tests/test_releases.py
"""
import pytest
import torch

import ae as ae_lib
import ae_loss
import checkpoints
import diffusion
import export
import models
import releases
from test_checkpoints import FIXTURES, diffusers_folder
from test_checkpoints import family_names, hub  # noqa: F401  fixtures
from test_pretrained import RELEASED  # the 14 names of DC-Gen's c2i_model_zoo.py
from test_pretrained import tiny_releases  # noqa: F401  a fixture


def test_the_table_holds_dc_gens_releases_and_agrees_with_the_registries():
    assert set(releases.RELEASES) == set(RELEASED)
    for r in releases.RELEASES.values():
        assert r.hub_id == f"mit-han-lab/{r.name}" and r.resolution == 512  # c2icore/trainer.py
        assert r.backbone in models.MODELS and r.ae in ae_lib.AE_CONFIGS
        assert r.ae_hub_id == releases.AE_RELEASES[r.ae].hub_id and r.name.startswith(r.ae + "-")
        objective = diffusion.make_objective(models.MODELS[r.backbone].objective)
        assert diffusion.resolve_sampler(objective) == (r.sampler, r.steps)  # its protocol
        assert r.reported and all(x.source for x in r.reported)
        assert r.cfg_scale is not None or r.note  # an unpublished scale says why
        if r.variant_of:
            base = releases.RELEASES[r.variant_of]
            assert (base.backbone, base.ae, base.variant_of) == (r.backbone, r.ae, None)
    for name, r in releases.AE_RELEASES.items():
        assert name == r.name and name in ae_lib.AE_CONFIGS
    # The registry names without released weights: the unstructured baseline, the tiny entries.
    assert sorted(set(ae_lib.AE_CONFIGS) - set(releases.AE_RELEASES)) == [
        "dc-ae-f32c128-1.1", "dc-ae-f8c16-tiny", "dc-ae-f8c16-tiny-1.0", "dc-ae-f8c64-tiny"]


def test_the_paper_numbers_are_table_4s():
    """The releases in Table 4 (ImageNet 512x512): gFID without / with CFG, IS, precision and
    recall."""
    table_4 = {"dc-ae-f32c32-in-1.0-sit-xl-in-512px": (7.47, 2.41, 131.37, 0.77, 0.65),
               "dc-ae-f32c32-in-1.0-usit-h-in-512px": (3.80, 1.89, 174.58, 0.78, 0.64),
               "dc-ae-f32c32-in-1.0-usit-2b-in-512px": (2.90, 1.72, 187.68, 0.79, 0.63),
               "dc-ae-f64c128-1.5-usit-2b-in-512px": (2.18, 1.84, 237.11, 0.80, 0.62),
               "dc-ae-f64c128-1.5-usit-3b-in-512px": (1.70, 1.63, 262.04, 0.80, 0.61)}
    for name, numbers in table_4.items():
        first = releases.RELEASES[name].reported[0]
        assert first.source == "paper Table 4"
        assert (first.gfid, first.gfid_cfg, first.inception_score, first.precision,
                first.recall) == numbers
    from_table_4 = [r.name for r in releases.RELEASES.values()
                    if r.reported[0].source == "paper Table 4"]
    assert from_table_4 == list(table_4)


def test_a_released_ae_name_resolves_to_its_hub_id_through_the_cache(hub, family_names,
                                                                     monkeypatch):
    """The name stands for the id: loaded from the hub cache, recorded as the id."""
    monkeypatch.setitem(releases.AE_RELEASES, "dc15-fixture",
                        releases.AERelease("dc15-fixture", "dc-ai/dc15-fixture", None))
    hub("dc-ai/dc15-fixture", FIXTURES / "dc15" / "dcgen")
    ae = checkpoints.load_ae("dc15-fixture")
    assert (ae.name, ae.source, ae.resolution) == ("dc15-fixture", "dc-ai/dc15-fixture", None)
    # A released name not in the cache, offline: one line with the name, its id, how to fetch it.
    with pytest.raises(ValueError) as e:
        checkpoints.load_ae("dc-ae-f64c128-1.5")
    assert str(e.value).startswith("--ae dc-ae-f64c128-1.5 (hub id dc-ai/dc-ae-f64c128-1.5): "
                                   "not found")
    assert "snapshot_download('dc-ai/dc-ae-f64c128-1.5')" in str(e.value)


def test_a_released_diffusers_twin_is_named_by_the_table(hub, tmp_path, monkeypatch):
    """A diffusers folder of a release, by id or as a local clone named like the repository: the
    registry name (its structure and c' list), not the repository's."""
    monkeypatch.setitem(releases.AE_RELEASES, "dc-ae-f8c16-tiny",
                        releases.AERelease("dc-ae-f8c16-tiny", "me/tiny", "me/tiny-diffusers"))
    src = ae_lib.build_ae("dc-ae-f8c16-tiny")
    folder = diffusers_folder(tmp_path / "tiny-diffusers", "dc-ae-f8c16-tiny", src)
    hub("me/tiny-diffusers", folder)
    for spec in (folder, "me/tiny-diffusers"):
        ae = checkpoints.load_ae(spec)
        assert ae.name == "dc-ae-f8c16-tiny" and ae.model.config.structured
        assert ae.model.c_prime_candidates == [4, 8, 12, 16]


def test_a_released_class_to_image_name_resolves_and_brings_its_record(hub, tiny_releases):
    hub("dc-ai/test-usit", tiny_releases["test-usit"])
    ckpt = checkpoints.load_diffusion("test-usit")
    assert ckpt.source == "dc-ai/test-usit" and ckpt.release is releases.RELEASES["test-usit"]
    assert (ckpt.ae, ckpt.ae_name, ckpt.release.sampler) == ("dc-ai/test-ae", "test-ae", "dopri5")
    with pytest.raises(ValueError) as e:  # the real name, offline
        checkpoints.load_diffusion("dc-ae-f64c128-1.5-usit-2b-in-512px")
    assert str(e.value).startswith("--ckpt dc-ae-f64c128-1.5-usit-2b-in-512px (hub id "
                                   "mit-han-lab/dc-ae-f64c128-1.5-usit-2b-in-512px): not found")


def test_an_export_takes_a_releases_name_never_a_variants(monkeypatch):
    """UViT-H on f64c128-in-1.0 was released twice (-train2000k trains longer): an export of that
    pairing is named as the first release, wherever the table lists the variant."""
    f64 = "dc-ae-f64c128-in-1.0"
    ckpt = checkpoints.Loaded(None, "UViT-H", "x", latent_shape=[128, 8, 8], num_classes=1000,
                              ae_name=f64, scaling_factor=ae_lib.AE_CONFIGS[f64].scaling_factor)
    monkeypatch.setattr(releases, "RELEASES", dict(reversed(releases.RELEASES.items())))
    assert export.release_name(ckpt) == f"{f64}-uvit-h-in-512px"


@pytest.mark.parametrize("name", ["dc-ae-f8c16-tiny", "dc-ae-f32c128-1.1"])
def test_an_ae_name_without_released_weights_is_refused_with_its_random_form(name):
    with pytest.raises(ValueError) as e:
        checkpoints.load_ae(name, option="--init")
    assert str(e.value).startswith(f"--init {name}: no weights of this name were released")
    assert f"`--init random:{name}` for random weights" in str(e.value)


def test_a_bare_backbone_name_is_refused_with_its_random_form():
    with pytest.raises(ValueError) as e:
        checkpoints.load_diffusion("USiT-tiny")
    assert str(e.value).startswith("--ckpt USiT-tiny: a backbone of models.py, no weights")
    assert "`--ckpt random:USiT-tiny` for random weights" in str(e.value)


def test_sample_py_takes_a_release_without_ae(hub, tiny_releases, tmp_path, capsys):
    """--ckpt NAME of a release: the model from the hub cache, and its AE too (the record's hub
    id), without --ae."""
    import sample
    export.export_ae(checkpoints.load_ae("random:test-ae"), "dcgen", str(tmp_path / "test-ae"))
    hub("dc-ai/test-ae", tmp_path / "test-ae")
    hub("dc-ai/test-usit", tiny_releases["test-usit"])
    res = sample.main(sample.parse_args(["--ckpt", "test-usit", "--out", str(tmp_path / "s"),
                                         "--classes", "3", "--per-class", "1", "--sampler",
                                         "euler", "--steps", "2"]))
    assert res["images"].shape == (1, 512, 512, 3)  # f = 64: the release's AE
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("test-usit (step None) + test-ae: ")
    assert "is not the checkpoint's" not in out.err


def built_twice(build):
    """Two builds from callers whose RNGs differ (two processes, two ranks), and whether the
    caller's RNG stream went on as if nothing had been built."""
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        expected = torch.rand(3)
        torch.manual_seed(seed)
        nets.append(build().state_dict())
        assert torch.equal(torch.rand(3), expected)
    return nets


def test_random_networks_are_the_same_in_every_process():
    """LPIPS's random trunk, random:NAME AEs and backbones (seeded): one network wherever built."""
    ae = checkpoints.load_ae("random:dc-ae-f8c16-tiny").model
    for build in (lambda: ae_loss.build_lpips(random_weights=True),
                  lambda: checkpoints.load_ae("random:dc-ae-f8c16-tiny").model,
                  lambda: checkpoints.load_diffusion("random:USiT-tiny", ae=ae,
                                                     resolution=32).model):
        a, b = built_twice(build)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
