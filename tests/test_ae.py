"""Tests for ae.py: registry, parameter counts, the channel mask (Eq. 1), the masked AE forward
(Fig. 4) and loss.
(Released formats and loading: tests/test_checkpoints.py.)"""
import pytest
import torch

import ae as ae_lib
import ae_loss
from conftest import randomize_norms
import train_ae
from ae import AE_CONFIGS, build_ae, channel_candidates, channel_mask

TINY = ["dc-ae-f8c16-tiny", "dc-ae-f8c64-tiny", "dc-ae-f8c16-tiny-1.0"]
PAPER_PARAMS_M = {  # DESIGN.md §4
    "dc-ae-f32c32-in-1.0": 323.36, "dc-ae-f64c128-in-1.0": 676.90, "dc-ae-f32c128-1.1": 523.61,
    "dc-ae-f32c128-1.5": 523.61, "dc-ae-f64c128-1.5": 714.74,
}


def masks(m, c_primes, n):
    """The (K, N, c, 1, 1) masks of Eq. 1 for K values of c', each for all N images, as train_ae.py
    builds them."""
    return torch.stack([channel_mask(m.c, [cp] * n) for cp in c_primes])


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_full_size_parameter_counts(name):
    with torch.device("meta"):
        m = build_ae(name)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == PAPER_PARAMS_M[name]


def test_registry_has_the_five_paper_models_and_scaling_factors():
    assert set(PAPER_PARAMS_M) <= set(AE_CONFIGS)
    assert AE_CONFIGS["dc-ae-f32c32-in-1.0"].scaling_factor == 0.3189
    assert AE_CONFIGS["dc-ae-f64c128-in-1.0"].scaling_factor == 0.2889
    assert AE_CONFIGS["dc-ae-f64c128-1.5"].scaling_factor == 0.5935
    # structured (trained with Eq. 1's mask): the 1.5 models; their baselines are not
    assert ([n for n in PAPER_PARAMS_M if AE_CONFIGS[n].structured]
            == ["dc-ae-f32c128-1.5", "dc-ae-f64c128-1.5"])
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
    x_rec = m(x, masks(m, [m.c_prime_candidates[0], m.c], 2))  # one encode, K = 2 decodes
    assert x_rec.shape == (4, 3, 32, 48)


def test_channel_mask_zeroes_exactly_the_trailing_channels(monkeypatch):
    # (1, c, 1, 1): multiplies (N, c, h, w)
    assert channel_mask(8, 3).flatten().tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert (channel_mask(8, 8).shape == (1, 8, 1, 1)
            and channel_mask(8, [3] * 5).shape == (5, 8, 1, 1))
    per_sample = channel_mask(6, torch.tensor([1, 4, 6]))
    assert per_sample.shape == (3, 6, 1, 1)
    assert per_sample[:, :, 0, 0].tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1] * 6]
    m = build_ae("dc-ae-f8c16-tiny").eval()
    seen = []  # the latents the decoder receives
    real = ae_lib.Decoder.forward
    monkeypatch.setattr(ae_lib.Decoder, "forward", lambda self, z: seen.append(z) or real(self, z))
    # K = 1, c' per image
    m(torch.rand(3, 3, 16, 16) * 2 - 1, channel_mask(16, torch.tensor([4, 8, 16]))[None])
    for i, cp in enumerate([4, 8, 16]):
        assert (seen[0][i, cp:] == 0).all() and (seen[0][i, :cp].abs().sum(dim=(1, 2)) > 0).all()


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
    x_rec = m(x, masks(m, [m.c // 2], 2))
    torch.testing.assert_close(x_rec, m.decode(m.encode(x)[:, : m.c // 2]), rtol=0, atol=1e-6)


def test_masked_channels_get_zero_gradient():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny")
    cp = 6
    x_rec = m(torch.rand(2, 3, 16, 16) * 2 - 1, masks(m, [cp], 2))
    x_rec.square().mean().backward()
    # rows produce latent channels
    w, b = m.encoder.conv_out.weight.grad, m.encoder.conv_out.bias.grad
    assert (w[cp:] == 0).all() and (b[cp:] == 0).all()
    assert (w[:cp].abs().sum(dim=(1, 2, 3)) > 0).all()
    # decoder never sees the masked channels
    assert (m.decoder.conv_in.weight.grad[:, cp:] == 0).all()


def test_loss_runs_backward_with_offline_lpips_and_gan_after_start():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny")
    disc = train_ae.PatchDiscriminator(width=8)
    loss_fn = train_ae.AELoss(ae_loss.build_lpips(random_weights=True), disc, gan_start=10)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_rec = m(x, masks(m, [8], 2))
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
    """Offline without the VGG16 file: one line naming the file and where to put it; the network is
    tried once."""
    tries = []

    def offline(url, path, progress=True):
        tries.append(url)
        raise OSError("no network")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(ae_loss.vgg16_weights, "failed", None)
    for _ in range(2):
        with pytest.raises(RuntimeError) as e:
            ae_loss.build_lpips(random_weights=False)
        assert str(e.value) == (f"LPIPS needs the VGG16 weights vgg16-397923af.pth "
                                f"(download failed: OSError); put the file at "
                                f"{tmp_path}/checkpoints/vgg16-397923af.pth "
                                f"(from {ae_loss.VGG16_URL})")
    assert tries == [ae_loss.VGG16_URL]


def test_estimate_scaling_factor():
    torch.manual_seed(0)
    m = build_ae("dc-ae-f8c16-tiny").eval()
    batches = [torch.rand(4, 3, 16, 16) * 2 - 1 for _ in range(3)]
    with torch.no_grad():
        z = torch.cat([m.encode(b) for b in batches])
    with torch.no_grad():
        s = ae_lib.estimate_scaling_factor(m.encode(b) for b in batches)
    assert abs(s - 1 / z.double().std(unbiased=False).item()) < 1e-6 * s
    # a "reduce" over two equal ranks
    halves = ae_lib.estimate_scaling_factor([z[:6]], reduce=lambda v: 2 * v)
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
    with pytest.raises(ValueError, match="unknown AE"):
        build_ae("dc-ae-f99")
    with pytest.raises(ValueError):
        channel_candidates(16, start=0)


# ---- bf16 autocast and torch.compile ----

@pytest.mark.parametrize("name", TINY)
def test_bf16_autocast(name):
    torch.manual_seed(0)
    m = build_ae(name).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        ref = m(x, masks(m, [m.c_prime_candidates[0]], 2))
        with torch.autocast("cpu", torch.bfloat16):
            out = m(x, masks(m, [m.c_prime_candidates[0]], 2))
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1  # bf16 rounding, not a different function


def test_compiles_without_graph_breaks():
    m = build_ae("dc-ae-f8c16-tiny").eval()
    # fullgraph: any graph break raises
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, masks(m, [4, 16], 2)), m(x, masks(m, [4, 16], 2)))


def test_k_decodes_from_one_encode_equal_k_separate_masked_decodes():
    """DC-Gen's num_sample_latent_channels: one encoder pass, K masked decodes, the mean of the K
    losses."""
    torch.manual_seed(0)
    m = randomize_norms(build_ae("dc-ae-f8c16-tiny"))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    c_primes = [16, 4, 8]
    # L1 (the LPIPS and GAN terms are means over the batch as well)
    loss_fn = train_ae.AELoss(None)
    x_rec = m(x, masks(m, c_primes, 3))  # (K N, 3, H, W)
    loss, _ = loss_fn(x.repeat(3, 1, 1, 1), x_rec)
    grads = torch.autograd.grad(loss, list(m.parameters()))
    separate = [loss_fn(x, m(x, masks(m, [cp], 3)))[0] for cp in c_primes]
    reference = sum(separate) / len(separate)
    ref_grads = torch.autograd.grad(reference, list(m.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=0)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    for k, cp in enumerate(c_primes):  # block k is decode(z[:, :c']) of the one encoding
        torch.testing.assert_close(x_rec[3 * k:3 * k + 3], m.decode(m.encode(x)[:, :cp]),
                                   rtol=0, atol=1e-6)


def test_step_c_primes_follow_dc_gens_options():
    cands, g = [4, 8, 12, 16], torch.Generator().manual_seed(0)
    draws = [train_ae.sample_step_c_primes(cands, 3, generator=g) for _ in range(200)]
    assert all(len(d) == 3 and set(d) <= set(cands) for d in draws)
    assert any(len(set(d)) < 3 for d in draws)  # with replacement, as DC-Gen's torch.randint
    assert all(train_ae.sample_step_c_primes(cands, 2, always="max", generator=g)[0] == 16
               for _ in range(20))
    assert all(train_ae.sample_step_c_primes(cands, 3, always="min-max", generator=g)[:2]
               == [4, 16] for _ in range(20))
    assert train_ae.sample_step_c_primes(cands, 1, always="max") == [16]
    with pytest.raises(ValueError):
        train_ae.sample_step_c_primes(cands, 1, always="min-max")
