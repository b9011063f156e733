"""checkpoints.py: the released AE formats (diffusers' AutoencoderDC, DC-Gen's DCAE_HF) load into our modules and
compute the same function, strictly (missing and unexpected keys are named), and the scripts' --ae resolves run
folders, .pt files, released folders and registry names. Weights are random (nothing is downloaded).

    python -m pytest -q tests/test_checkpoints.py
"""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

import ae as ae_lib
import checkpoints
from ae import AE_CONFIGS, build_ae


def randomize_norms(model):
    """Give norms non-trivial affine parameters and statistics, so that round trips are a real check."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (ae_lib.RMSNorm2d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def diffusers_config(name, **overrides):
    """A diffusers AutoencoderDC config.json for one of our entries, written independently of checkpoints.py."""
    cfg = AE_CONFIGS[name]
    S = len(cfg.widths)
    return {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.0", "in_channels": 3,
            "latent_channels": cfg.c, "attention_head_dim": 32,
            "encoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock" for b in cfg.enc_blocks],
            "decoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock" for b in cfg.dec_blocks],
            "encoder_block_out_channels": list(cfg.widths), "decoder_block_out_channels": list(cfg.widths),
            "encoder_layers_per_block": list(cfg.enc_depths), "decoder_layers_per_block": list(cfg.dec_depths),
            "encoder_qkv_multiscales": [[]] * S, "decoder_qkv_multiscales": [[]] * S,
            "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
            "decoder_norm_types": ["rms_norm" if n == "rms" else "batch_norm" for n in cfg.dec_norms],
            "decoder_act_fns": list(cfg.dec_acts), "encoder_out_shortcut": cfg.latent_shortcut,
            "decoder_in_shortcut": cfg.latent_shortcut, "decoder_conv_act_fn": cfg.out_act, "scaling_factor": 0.77,
            **overrides}


def diffusers_folder(folder, name, src, **overrides):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(diffusers_config(name, **overrides)))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    return str(folder)


@pytest.mark.parametrize("name", ["dc-ae-f8c16-tiny", "dc-ae-f8c16-tiny-1.0"])
def test_diffusers_folder_round_trip(tmp_path, name):
    torch.manual_seed(1)
    src = randomize_norms(build_ae(name)).eval()
    ae = checkpoints.load_ae(diffusers_folder(tmp_path / f"{name}-diffusers", name, src))
    assert ae.scaling_factor == 0.77 and ae.name == name and not ae.model.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():  # fp32 rounding only: frozen weights may take other CPU kernels than trainable ones
        torch.testing.assert_close(ae.model.decode(ae.model.encode(x)), src.decode(src.encode(x)), rtol=0, atol=1e-5)


def test_diffusers_config_with_another_head_dim_is_refused(tmp_path):
    src = build_ae("dc-ae-f8c16-tiny-1.0")
    with pytest.raises(ValueError, match="attention_head_dim 16: every DC-AE model uses 32"):
        checkpoints.load_ae(diffusers_folder(tmp_path / "ae", "dc-ae-f8c16-tiny-1.0", src, attention_head_dim=16))


def dcgen_key(k):
    """Our (diffusers) key -> DC-Gen's module path for a DC-AE 1.5 model (ResBlocks, no latent shortcuts)."""
    rules = [
        (r"^encoder\.conv_in\.conv\.(.*)$", r"encoder.project_in.conv.conv.\1"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv1\.(.*)$", r"encoder.stages.\1.op_list.\2.main.conv1.conv.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv2\.(.*)$", r"encoder.stages.\1.op_list.\2.main.conv2.conv.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.norm\.(.*)$", r"encoder.stages.\1.op_list.\2.main.conv2.norm.\3"),
        (r"^encoder\.down_blocks\.(\d+)\.(\d+)\.conv\.(.*)$", r"encoder.stages.\1.op_list.\2.main.conv.conv.\3"),
        (r"^encoder\.conv_out\.(.*)$", r"encoder.project_out.op_list.0.conv.\1"),
        (r"^decoder\.conv_in\.(.*)$", r"decoder.project_in.conv.\1"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv1\.(.*)$", r"decoder.stages.\1.op_list.\2.main.conv1.conv.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv2\.(.*)$", r"decoder.stages.\1.op_list.\2.main.conv2.conv.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.norm\.(.*)$", r"decoder.stages.\1.op_list.\2.main.conv2.norm.\3"),
        (r"^decoder\.up_blocks\.(\d+)\.(\d+)\.conv\.(.*)$", r"decoder.stages.\1.op_list.\2.main.conv.conv.\3"),
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
        torch.testing.assert_close(ae.model.decode(ae.model.encode(x)), src.decode(src.encode(x)), rtol=0, atol=1e-5)
    # strict: a missing key and an extra key are both named
    sd.pop(next(iter(sd)))
    sd["decoder.extra.weight"] = torch.zeros(1)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing.*encoder\.conv_in.*1 unexpected.*decoder\.extra"):
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
    a, b = checkpoints.load_ae("dc-ae-f8c16-tiny"), checkpoints.load_ae("dc-ae-f8c16-tiny")
    assert "RANDOM weights" in capsys.readouterr().err and a.source == "random:dc-ae-f8c16-tiny"
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert not any(p.requires_grad for p in a.model.parameters())
