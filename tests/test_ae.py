"""Tests for ae.py: registry, parameter counts, the channel mask (Eq. 1), the masked AE loss, checkpoint import."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

import ae as ae_lib
import train_ae
from ae import AE_CONFIGS, build_ae, channel_candidates, channel_mask

TINY = ["dc-ae-f8c16-tiny", "dc-ae-f8c64-tiny", "dc-ae-f8c16-tiny-1.0"]
PAPER_PARAMS_M = {  # DESIGN.md §4
    "dc-ae-f32c32-in-1.0": 323.36, "dc-ae-f64c128-in-1.0": 676.90, "dc-ae-f32c128-1.1": 523.61,
    "dc-ae-f32c128-1.5": 523.61, "dc-ae-f64c128-1.5": 714.74,
}


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


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_full_size_parameter_counts(name):
    with torch.device("meta"):
        m = build_ae(name)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == PAPER_PARAMS_M[name]


def test_registry_has_the_five_paper_models_and_scaling_factors():
    assert set(PAPER_PARAMS_M) <= set(AE_CONFIGS)
    assert AE_CONFIGS["dc-ae-f32c32-in-1.0"]["scaling_factor"] == 0.3189
    assert AE_CONFIGS["dc-ae-f64c128-in-1.0"]["scaling_factor"] == 0.2889
    assert AE_CONFIGS["dc-ae-f64c128-1.5"]["scaling_factor"] == 0.5935
    with torch.device("meta"):
        m = build_ae("dc-ae-f64c128-1.5")
    assert (m.f, m.c) == (64, 128)
    assert m.c_prime_candidates == list(range(16, 129, 4))  # Sec. 4.1: [16, 20, 24, ..., c]


@pytest.mark.parametrize("name", TINY)
def test_encode_decode_shapes(name):
    torch.manual_seed(0)
    m = build_ae(name).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = m.encode(x)
    assert z.shape == (2, m.c, 32 // m.f, 48 // m.f)
    assert m.decode(z).shape == x.shape
    x_rec, z2 = m(x, c_prime=m.c_prime_candidates[0])
    assert x_rec.shape == x.shape and z2.shape == z.shape


def test_channel_mask_zeroes_exactly_the_trailing_channels():
    assert channel_mask(8, 3).flatten().tolist() == [1, 1, 1, 0, 0, 0, 0, 0]  # (1, c, 1, 1): multiplies (N, c, h, w)
    assert channel_mask(8, 8).shape == (1, 8, 1, 1) and channel_mask(8, 3, n=5).shape == (5, 8, 1, 1)
    per_sample = channel_mask(6, torch.tensor([1, 4, 6]))
    assert per_sample.shape == (3, 6, 1, 1)
    assert per_sample[:, :, 0, 0].tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6]
    m = build_ae("dc-ae-f8c16-tiny").eval()
    _, z = m(torch.rand(3, 3, 16, 16) * 2 - 1, c_prime=torch.tensor([4, 8, 16]))
    for i, cp in enumerate([4, 8, 16]):
        assert (z[i, cp:] == 0).all() and (z[i, :cp].abs().sum(dim=(1, 2)) > 0).all()


def test_channel_candidates():
    assert channel_candidates(128) == list(range(16, 129, 4))
    assert channel_candidates(30, 16, 4) == [16, 20, 24, 28, 30]  # c always included
    assert channel_candidates(16, 4, 4) == [4, 8, 12, 16]
    cands = channel_candidates(64, 8, 8)
    g = torch.Generator().manual_seed(0)
    draws = ae_lib.sample_c_prime(cands, 400, generator=g)
    assert set(draws.tolist()) == set(cands)  # uniform over the list: every candidate shows up
    assert draws.dtype == torch.int64 and draws.shape == (400,)


@pytest.mark.parametrize("name", TINY)
def test_decode_of_sliced_latent_equals_decode_of_masked_latent(name):
    torch.manual_seed(0)
    m = randomize_norms(build_ae(name)).eval()
    z = torch.randn(2, m.c, 4, 4)
    for cp in [1, m.c // 2, m.c]:
        a = m.decode(z[:, :cp])
        b = m.decode(z * channel_mask(m.c, cp))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # ... and the masked training forward decodes exactly decode(encode(x)[:, :c'])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    x_rec, _ = m(x, c_prime=m.c // 2)
    torch.testing.assert_close(x_rec, m.decode(m.encode(x)[:, : m.c // 2]), rtol=0, atol=1e-6)


def test_masked_channels_get_zero_gradient():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny")
    cp = 6
    x_rec, _ = m(torch.rand(2, 3, 16, 16) * 2 - 1, c_prime=cp)
    x_rec.square().mean().backward()
    w, b = m.encoder.conv_out.weight.grad, m.encoder.conv_out.bias.grad  # rows produce latent channels
    assert (w[cp:] == 0).all() and (b[cp:] == 0).all()
    assert (w[:cp].abs().sum(dim=(1, 2, 3)) > 0).all()
    assert (m.decoder.conv_in.weight.grad[:, cp:] == 0).all()  # decoder never sees the masked channels


def test_loss_runs_backward_with_offline_lpips_and_gan_after_start():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny")
    disc = train_ae.PatchDiscriminator(width=8)
    loss_fn = train_ae.AELoss(ae_lib.build_lpips(random_weights=True), disc, gan_start=10)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_rec, _ = m(x, c_prime=8)
    loss, terms = loss_fn(x, x_rec, step=0)
    assert set(terms) == {"l1", "lpips"}  # GAN off before gan_start (phase 3 only)
    loss, terms = loss_fn(x, x_rec, step=10)
    assert set(terms) == {"l1", "lpips", "gan"} and torch.isfinite(loss)
    loss.backward()
    assert m.decoder.conv_out.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.lpips.parameters())  # frozen helper net
    d_loss = loss_fn.discriminator_loss(x, x_rec)
    d_loss.backward()
    assert torch.isfinite(d_loss) and disc.main[0].weight.grad.abs().sum() > 0
    # L1 term is the real L1
    torch.testing.assert_close(terms["l1"], (x_rec - x).abs().mean().detach())


def test_lpips_without_weights_fails_clearly(monkeypatch, tmp_path):
    """Offline without the VGG16 file: one line naming the file and where to put it; the network is tried once."""
    tries = []

    def offline(url, path, progress=True):
        tries.append(url)
        raise OSError("no network")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(ae_lib.vgg16_weights, "failed", None)
    for _ in range(2):
        with pytest.raises(RuntimeError) as e:
            ae_lib.build_lpips(random_weights=False)
        assert str(e.value) == (f"LPIPS needs the VGG16 weights vgg16-397923af.pth (download failed: OSError); put the "
                                f"file at {tmp_path}/checkpoints/vgg16-397923af.pth (from {ae_lib.VGG16_URL})")
    assert tries == [ae_lib.VGG16_URL]


def test_estimate_scaling_factor():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny").eval()
    batches = [torch.rand(4, 3, 16, 16) * 2 - 1 for _ in range(3)]
    with torch.no_grad():
        z = torch.cat([m.encode(b) for b in batches])
    with torch.no_grad():
        s = ae_lib.estimate_scaling_factor(m.encode(b) for b in batches)
    assert abs(s - 1 / z.double().std(unbiased=False).item()) < 1e-6 * s
    halves = ae_lib.estimate_scaling_factor([z[:6]], reduce=lambda v: 2 * v)  # a "reduce" over two equal ranks
    assert abs(halves - 1 / z[:6].double().std(unbiased=False).item()) < 1e-6 * halves
    with pytest.raises(ValueError):
        ae_lib.estimate_scaling_factor([])


# ---- bad input: a clear error before any compute ----

def test_bad_inputs_raise():
    m = build_ae("dc-ae-f8c16-tiny")
    with pytest.raises(ValueError, match="f=8.*multiples of 8.*20x16"):
        m.encode(torch.zeros(1, 3, 20, 16))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        m.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="c'.*c=16"):
        m.decode(torch.zeros(1, 17, 2, 2))
    with pytest.raises(ValueError, match=r"\[1, c=16\]"):
        m(torch.zeros(1, 3, 16, 16), c_prime=0)
    with pytest.raises(ValueError, match=r"\[1, c=16\]"):
        m(torch.zeros(1, 3, 16, 16), c_prime=17)
    with pytest.raises(ValueError, match=r"\[1, c=16\]"):
        channel_mask(16, torch.tensor([3, 20]))
    with pytest.raises(ValueError, match="unknown AE"):
        build_ae("dc-ae-f99")
    with pytest.raises(ValueError):
        channel_candidates(16, start=0)


# ---- checkpoint import ----

def diffusers_config(name):
    """A diffusers AutoencoderDC config.json for one of our entries, written independently of ae.py."""
    cfg = AE_CONFIGS[name]
    S = len(cfg["widths"])
    return {"_class_name": "AutoencoderDC", "_diffusers_version": "0.32.0", "in_channels": 3,
            "latent_channels": cfg["c"], "attention_head_dim": 32,
            "encoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock" for b in cfg["enc_blocks"]],
            "decoder_block_types": ["ResBlock" if b == "res" else "EfficientViTBlock" for b in cfg["dec_blocks"]],
            "encoder_block_out_channels": cfg["widths"], "decoder_block_out_channels": cfg["widths"],
            "encoder_layers_per_block": cfg["enc_depths"], "decoder_layers_per_block": cfg["dec_depths"],
            "encoder_qkv_multiscales": [[]] * S, "decoder_qkv_multiscales": [[]] * S,
            "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
            "decoder_norm_types": ["rms_norm" if n == "rms" else "batch_norm" for n in cfg["dec_norms"]],
            "decoder_act_fns": cfg["dec_acts"], "encoder_out_shortcut": cfg["latent_shortcut"],
            "decoder_in_shortcut": cfg["latent_shortcut"], "decoder_conv_act_fn": cfg["out_act"],
            "scaling_factor": 0.77}


@pytest.mark.parametrize("name", ["dc-ae-f8c16-tiny", "dc-ae-f8c16-tiny-1.0"])
def test_load_pretrained_diffusers_folder_round_trip(tmp_path, name):
    torch.manual_seed(1)
    src = randomize_norms(build_ae(name)).eval()
    folder = tmp_path / f"{name}-diffusers"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(diffusers_config(name)))
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    model, scaling = ae_lib.load_pretrained(str(folder))
    assert scaling == 0.77
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.decode(model.encode(x)), src.decode(src.encode(x)), rtol=0, atol=0)


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


def test_load_pretrained_dcgen_folder_round_trip(tmp_path):
    torch.manual_seed(2)
    name = "dc-ae-f8c16-tiny"
    src = randomize_norms(build_ae(name)).eval()
    folder = tmp_path / "dc-ae-tiny-dcgen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_name": name}))
    sd = {dcgen_key(k): v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"))
    model, scaling = ae_lib.load_pretrained(str(folder))
    assert scaling is None  # not published for this entry
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], src(x)[0], rtol=0, atol=0)
    # strict: a missing key and an extra key are both named
    sd.pop(next(iter(sd)))
    sd["decoder.extra.weight"] = torch.zeros(1)
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing.*encoder\.conv_in.*1 unexpected.*decoder\.extra"):
        ae_lib.load_pretrained(str(folder))


def test_load_pretrained_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ae_lib.load_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text(json.dumps({"model_name": "dc-ae-unknown"}))
    with pytest.raises(ValueError, match="unknown AE"):
        ae_lib.load_pretrained(str(tmp_path))


# ---- bf16 autocast and torch.compile ----

@pytest.mark.parametrize("name", TINY)
def test_bf16_autocast(name):
    torch.manual_seed(0)
    m = build_ae(name).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = m(x, c_prime=m.c_prime_candidates[0])[0]
        with torch.autocast("cpu", torch.bfloat16):
            out = m(x, c_prime=m.c_prime_candidates[0])[0]
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1  # bf16 rounding, not a different function


def test_compiles_without_graph_breaks():
    m = build_ae("dc-ae-f8c16-tiny").eval()
    compiled = torch.compile(m, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, c_prime=torch.tensor([4, 16]))[0], m(x, c_prime=torch.tensor([4, 16]))[0])


def test_k_decodes_from_one_encode_equal_k_separate_masked_decodes():
    """DC-Gen's num_sample_latent_channels: one encoder pass, K masked decodes, the mean of the K losses."""
    torch.manual_seed(0)
    m = randomize_norms(build_ae("dc-ae-f8c16-tiny"))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    c_primes = [16, 4, 8]
    loss_fn = train_ae.AELoss(None)  # L1 (the LPIPS and GAN terms are means over the batch as well)
    x_rec, _ = m(x, c_prime=torch.tensor(c_primes).repeat_interleave(3))  # (K N,) -> (K N, 3, H, W)
    loss, _ = loss_fn(x.repeat(3, 1, 1, 1), x_rec)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    separate = [loss_fn(x, m(x, c_prime=cp)[0])[0] for cp in c_primes]
    reference = sum(separate) / len(separate)
    ref_grads = torch.autograd.grad(reference, list(m.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    for k, cp in enumerate(c_primes):  # block k is decode(z[:, :c']) of the one encoding
        torch.testing.assert_close(x_rec[3 * k:3 * k + 3], m.decode(m.encode(x)[:, :cp]), rtol=0, atol=1e-6)


def test_step_c_primes_follow_dc_gens_options():
    cands, g = [4, 8, 12, 16], torch.Generator().manual_seed(0)
    draws = [train_ae.sample_step_c_primes(cands, 3, generator=g) for _ in range(200)]
    assert all(len(d) == 3 and set(d) <= set(cands) for d in draws)
    assert any(len(set(d)) < 3 for d in draws)  # with replacement, as DC-Gen's torch.randint
    assert all(train_ae.sample_step_c_primes(cands, 2, always_max=True, generator=g)[0] == 16 for _ in range(20))
    assert all(train_ae.sample_step_c_primes(cands, 3, always_min_max=True, generator=g)[:2] == [4, 16] for _ in range(20))
    assert train_ae.sample_step_c_primes(cands, 1, always_max=True) == [16]
    with pytest.raises(ValueError):
        train_ae.sample_step_c_primes(cands, 1, always_min_max=True)
