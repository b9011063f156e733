"""Released folders are checked whole before any model is built (formats.read_folder:
config.json's fields, types, per-stage lengths and names; the weights file and its safetensors
header), each fault one line naming the folder, the field or file, and for a hub snapshot how to
fetch it again; a script turns it into `error:` and exit status 2. Exports keep their identity
(name, structure, recipe, c' list, resolution, scaling factor, step) in both formats, and an
explicit --scaling-factor wins over the AE's own.

    python -m pytest -q tests/test_folders.py
"""
import json
import os
import shutil

import pytest
import torch

import ae as ae_lib
import checkpoints
import export
import formats
from ae import build_ae
from conftest import randomize_norms
from test_checkpoints import FIXTURES, diffusers_folder, same_function
from test_checkpoints import family_names, hub  # noqa: F401  fixtures


@pytest.fixture
def no_model_built(monkeypatch):
    """arm(): from then on, building a DC-AE fails the test (the reader must stop first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built before the folder was checked")
    return lambda: monkeypatch.setattr(ae_lib, "DCAE", refuse)


# The faults of a diffusers config.json users met (issue 28: TypeError, IndexError, KeyError) and
# their kin: the field, what was found, what was expected.
CONFIG_FAULTS = [
    (dict(latent_channels="64"), 'latent_channels is "64", expected an integer >= 1'),
    (dict(encoder_layers_per_block=[0, 1, 1]),
     "encoder_layers_per_block has 3 entries, expected 4, one per stage"),
    (dict(decoder_act_fns=["silu"] * 3), "decoder_act_fns has 3 entries, expected 4"),
    (dict(encoder_block_types=["ResBlock", "FooBlock", "ResBlock", "ResBlock"]),
     "encoder_block_types has \"FooBlock\", expected one of ['EfficientViTBlock', 'ResBlock']"),
    (dict(decoder_norm_types="layer_norm"), 'decoder_norm_types has "layer_norm", expected one'),
    (dict(decoder_conv_act_fn="gelu"),
     "decoder_conv_act_fn has \"gelu\", expected one of ['relu'"),
    (dict(encoder_out_shortcut="no"), 'encoder_out_shortcut is "no", expected true or false'),
    (dict(scaling_factor=-1), "scaling_factor is -1, expected a number > 0"),
    (dict(encoder_block_out_channels=[16, 32, 64, 64.5]),
     "encoder_block_out_channels is [16, 32, 64, 64.5], expected a list of 2 or more integers"),
    (dict(downsample_block_type="unshuffle"), 'downsample_block_type has "unshuffle", expected'),
    (dict(encoder_block_types="EfficientViTBlock"),
     "puts an EfficientViTBlock in stage 0 of width 16, expected a multiple of "
     "attention_head_dim"),
]


@pytest.mark.parametrize("fault, message", CONFIG_FAULTS, ids=[m.split()[0] for _, m in
                                                                CONFIG_FAULTS])
def test_a_diffusers_config_we_cannot_build_is_one_line(tmp_path, fault, message, no_model_built):
    src = build_ae("dc-ae-f8c16-tiny")
    folder = diffusers_folder(tmp_path / "ae", "dc-ae-f8c16-tiny", src, **fault)
    no_model_built()
    with pytest.raises(ValueError) as e:
        checkpoints.load_ae(folder)
    assert str(e.value).startswith(f"--ae {folder}: config.json: ") and message in str(e.value)
    assert "\n" not in str(e.value) and "snapshot_download" not in str(e.value)  # not the hub's


def test_a_config_that_is_no_object_or_no_name_is_one_line(tmp_path, no_model_built):
    no_model_built()
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"config.json holds a list, expected a JSON object"):
        checkpoints.load_ae(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": 7}))
    with pytest.raises(ValueError, match=r"config.json: model_name is 7, expected a name"):
        checkpoints.load_ae(str(tmp_path))


def truncate(path, nbytes):
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) - nbytes)


def append(path, data):
    with open(path, "ab") as fh:
        fh.write(data)


def overwrite_header(path):
    with open(path, "r+b") as fh:
        fh.write((16).to_bytes(8, "little") + b"not json{{{{{{{{")


def inconsistent(path):
    """A file whose header gives a tensor fewer bytes than its dtype and shape need."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).encode()
    with open(path, "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header + bytes(4))


# What can happen to a safetensors file (a half-finished download, a damaged disk), and the
# message.
WEIGHTS_FAULTS = [(os.remove, "is missing"), (lambda p: truncate(p, 10), "truncated: "),
                  (lambda p: truncate(p, os.path.getsize(p) - 20), "shorter than its header"),
                  (lambda p: append(p, b"xyz"), "3 bytes after the"),
                  (overwrite_header, "its header is not JSON"),
                  (inconsistent, "tensor 'w' holds 4 bytes, its F32 shape [2] needs 8")]


@pytest.mark.parametrize("fmt", ["diffusers", "dcgen"])
@pytest.mark.parametrize("fault", range(len(WEIGHTS_FAULTS)))
def test_a_missing_or_damaged_weights_file_is_one_line(tmp_path, fmt, fault, family_names,
                                                        no_model_built):
    folder = tmp_path / "dc15"
    shutil.copytree(FIXTURES / "dc15" / fmt, folder)
    weights = folder / formats.WEIGHTS[fmt]
    damage, message = WEIGHTS_FAULTS[fault]
    damage(str(weights))
    no_model_built()
    with pytest.raises(ValueError) as e:
        checkpoints.load_ae(str(folder))
    assert str(e.value).startswith(f"--ae {folder}: {weights.name}") and message in str(e.value)


def test_a_damaged_hub_snapshot_says_how_to_fetch_it_again(hub, tmp_path, family_names,
                                                           no_model_built):
    """By id and by the snapshot's path: one line, ending in the command that fetches it again."""
    folder = tmp_path / "dc15"
    shutil.copytree(FIXTURES / "dc15" / "dcgen", folder)
    truncate(folder / "model.safetensors", 100)
    snapshot = hub("dc-ai/dc15-fixture", folder)
    no_model_built()
    for spec in ("dc-ai/dc15-fixture", snapshot):
        with pytest.raises(ValueError) as e:
            checkpoints.load_ae(spec)
        assert "model.safetensors: truncated" in str(e.value) and "\n" not in str(e.value)
        assert str(e.value).endswith("huggingface_hub.snapshot_download('dc-ai/dc15-fixture', "
                                     "force_download=True)\"")


def test_a_folder_of_the_other_kind_is_named_for_its_option(tmp_path, family_names):
    import test_sample
    pt = test_sample.make_ckpt(tmp_path / "ckpt_0000007.pt", "UViT-tiny")
    export.main(export.parse_args([pt, "--to", "dcgen", "--out", str(tmp_path / "c2i")]))
    with pytest.raises(ValueError, match=r"a DC-Gen class-to-image model "
                                         r"\(dc-ae-f8c16-tiny-uvit-tiny-32px\): "
                                         r"pass it to --ckpt"):
        checkpoints.load_ae(str(tmp_path / "c2i"))
    with pytest.raises(ValueError, match="a diffusers AutoencoderDC folder is an AE: pass it to"):
        checkpoints.load_diffusion(str(FIXTURES / "dc15" / "diffusers"))
    with pytest.raises(ValueError, match="'dc15-fixture' is an AE: pass it to --ae"):
        checkpoints.load_diffusion(str(FIXTURES / "dc15" / "dcgen"))


def test_scripts_turn_a_damaged_folder_into_one_error_line(tmp_path, capsys):
    """eval_ae.py --ae and export.py SRC in-process: `error: ...` on one line, exit status 2."""
    import eval_ae
    src = build_ae("dc-ae-f8c16-tiny")
    folder = diffusers_folder(tmp_path / "ae", "dc-ae-f8c16-tiny", src, latent_channels="64")
    evaluate = ["--ae", folder, "--images", "4", "--no-rfid", "--no-lpips",
                "--out", str(tmp_path / "e")]
    for main, argv in [(lambda a: eval_ae.main(eval_ae.parse_args(a)), evaluate),
                       (lambda a: export.main(export.parse_args(a)),
                        [folder, "--to", "dcgen", "--out", str(tmp_path / "x")])]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert e.value.code == 2 and len(errors) == 1, errors
        assert errors[0].startswith(f"error: --ae {folder}: ") or \
            errors[0].startswith(f"error: SRC {folder}: ")
        assert 'config.json: latent_channels is "64"' in errors[0]
    assert not (tmp_path / "e").exists() and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# Exports keep their identity
# ------------------------------------------------------------------------------------------------

def trained_ae(path, **args):
    """A train_ae.py checkpoint of the tiny f8c16 AE (EMA weights differ from the raw ones)."""
    torch.manual_seed(4)
    model = randomize_norms(build_ae("dc-ae-f8c16-tiny"))
    ema = {k: v + 0.01 * torch.randn(v.shape) if v.is_floating_point() else v
           for k, v in model.state_dict().items()}
    torch.save(dict(model=model.state_dict(), ema=ema, step=9, scaling_factor=0.61, rng=[],
                    args=dict(model="dc-ae-f8c16-tiny", **args)), path)
    return str(path)


def identity(ae):
    cfg = ae.model.config
    return (ae.name, cfg.structured, cfg.recipe, cfg.c_prime_start, cfg.c_prime_step,
            ae.model.c_prime_candidates, ae.resolution, ae.scaling_factor, ae.step)


@pytest.mark.parametrize("to", ["diffusers", "dcgen"])
def test_an_export_loads_back_with_its_identity(tmp_path, to):
    """A tiny AE trained unstructured at 24 px with the c' list 6, 11, 16, exported into a folder
    of another name and loaded back by path, twice (an export of an export): the same AE in name,
    structure, recipe, c' list, training resolution, scaling factor and step, and the same
    function."""
    pt = trained_ae(tmp_path / "ckpt_0000009.pt", resolution=24, c_prime_start=6, c_prime_step=5,
                    structured=False)
    src = checkpoints.load_ae(pt)
    assert identity(src) == ("dc-ae-f8c16-tiny", False, "tiny", 6, 5, [6, 11, 16], 24, 0.61, 9)
    export.main(export.parse_args([src.source, "--to", to, "--out", str(tmp_path / "first")]))
    back = checkpoints.load_ae(str(tmp_path / "first"))
    assert identity(back) == identity(src)
    same_function(back.model, src.model, torch.rand(2, 3, 16, 16) * 2 - 1)
    export.export_ae(back, to, str(tmp_path / "second"))
    assert identity(checkpoints.load_ae(str(tmp_path / "second"))) == identity(src)


@pytest.mark.parametrize("to", ["diffusers", "dcgen"])
def test_an_explicit_scaling_factor_replaces_the_aes_own(tmp_path, to, capsys):
    """The AE has its own factor (0.61, measured in training); --scaling-factor 0.5 is what the
    export writes, says and loads back."""
    pt = trained_ae(tmp_path / "ckpt_0000009.pt")
    out = str(tmp_path / to)
    export.main(export.parse_args([pt, "--to", to, "--out", out, "--scaling-factor", "0.5"]))
    assert "scaling factor 0.5)" in capsys.readouterr().out
    assert checkpoints.load_ae(out).scaling_factor == 0.5
    if to == "diffusers":
        assert json.loads((tmp_path / to / "config.json").read_text())["scaling_factor"] == 0.5
