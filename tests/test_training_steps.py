"""What one training step computes (Sec. 3.2, Fig. 4; Sec. 4.1), through the code the trainers run:
the EMA update, the K c' of an AE step (one encode, K masked decodes), the trainable parameters of
the DC-AE phases, and the latent scaling of the diffusion trainer. The trainers run for 1 step on
the toy data with tiny settings (a few seconds in all).

    python -m pytest -q tests/test_training_steps.py
"""
import math

import pytest
import torch
import torch.nn as nn

import ae as ae_lib
import diffusion
import fsdp
import train_ae
import train_diffusion
from conftest import checkpoints, records

AE = "dc-ae-f8c16-tiny"  # c = 16, c' in [4, 8, 12, 16], 4 stages (f = 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def last_checkpoint(out):
    """The newest checkpoint of a run folder, read with plain torch.load:
    {"model": ..., "ema": ..., ...}."""
    return torch.load(checkpoints(out)[-1], map_location="cpu", weights_only=False)


def train_ae_argv(out, *extra):
    return ["--model", AE, "--steps", "1", "--batch-size", "4", "--num-workers", "0",
            "--grid-every", "0", "--log-every", "1", "--toy-size", "8", "--no-bf16",
            "--out", str(out), *extra]


# ------------------------------------------------------------------------------------------------
# EMA

def test_ema_update_is_one_step_of_the_moving_average_with_dc_gens_warmup():
    """DiT / U-ViT: ema <- d ema + (1 - d) model with a constant d (warmup 0). DC-Gen
    (apps/utils/ema.py) warms the decay up: d = decay (1 - exp(-step / W)) at optimizer step
    1, 2, ..., so early EMAs follow the model."""
    torch.manual_seed(0)
    model, ema = (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)),
                  nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    with torch.no_grad():
        for p in ema[1].parameters():
            p.normal_()  # LayerNorm starts at 1 / 0 in both: make every parameter differ

    def params(m):
        return [p.detach().clone() for p in m.parameters()]
    e0, m0 = params(ema), params(model)
    fsdp.ema_update(ema, model, 0.9, step=1, warmup=0)
    for e, a, b in zip(ema.parameters(), e0, m0):
        torch.testing.assert_close(e.detach(), 0.9 * a + 0.1 * b, rtol=1e-6, atol=1e-7)
    for step in (1, 2):  # warm-up W = 10: d = 0.095 at step 1, 0.181 at step 2
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))  # the model moves between updates
        e0, m0 = params(ema), params(model)
        d = 0.999 * (1 - math.exp(-step / 10))
        fsdp.ema_update(ema, model, 0.999, step=step, warmup=10)
        for e, a, b in zip(ema.parameters(), e0, m0):
            torch.testing.assert_close(e.detach(), d * a + (1 - d) * b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------
# The AE step: K c' from one encode (DC-Gen's num_sample_latent_channels)

@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """One train_ae.py step with K = 3 c' (--always min-max: the first two are the smallest and c,
    so the blocks differ), recording the images the encoder receives and the latent rows the
    decoder receives and returns."""
    out = tmp_path_factory.mktemp("ae_phase1")
    seen = dict(x=[], z_enc=[], z=[], x_rec=[])
    encode, decode = ae_lib.Encoder.forward, ae_lib.Decoder.forward

    def recording_encoder(self, x):
        z = encode(self, x)
        seen["x"].append(x.detach().clone())
        seen["z_enc"].append(z.detach().clone())
        return z

    def recording_decoder(self, z):
        x_rec = decode(self, z)
        seen["z"].append(z.detach().clone())
        seen["x_rec"].append(x_rec.detach().clone())
        return x_rec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ae_lib.Encoder, "forward", recording_encoder)
        mp.setattr(ae_lib.Decoder, "forward", recording_decoder)
        train_ae.main(train_ae.parse_args(train_ae_argv(out, "--num-c-primes", "3",
                                                        "--always", "min-max")))
    return out, {k: torch.cat(v) for k, v in seen.items()}


def test_ae_step_decodes_block_k_with_its_own_c_prime(ae_run):
    """DC-Gen's aecore trainer (prepare_batch): one encode z of the N images, then block k of the
    K N decoded rows is decode(z * mask_{c, c'_k}) (Eq. 1), c'_k the k-th value the step drew and
    logged: row k N + i holds the first c'_k channels of z_i and zeros after them. Checked on the
    decoder's input, so it holds however the step lays out the K blocks (one batched decode or
    K decodes). The step's loss is the mean of the K losses, each against the same N images (the
    tiny recipe's loss is L1)."""
    out, seen = ae_run
    record = [r for r in records(out) if "c_prime" in r][0]
    c_primes = record["c_prime"]
    assert len(c_primes) == 3 and c_primes[:2] == [4, 16]  # always_sample_min_max_channel
    x, z_enc, z = seen["x"], seen["z_enc"], seen["z"]
    N = 4
    assert x.shape[0] == N and z.shape[0] == 3 * N  # one encode, K N decoded rows
    nonzero = (z != 0).flatten(2).any(2)  # (K N, c): channels that are not all zero
    for k, cp in enumerate(c_primes):
        for row in nonzero[k * N:(k + 1) * N].tolist():
            assert row == [True] * cp + [False] * (16 - cp), (k, cp, nonzero.int())
        # sample i's latent
        torch.testing.assert_close(z[k * N:(k + 1) * N, :cp], z_enc[:, :cp], rtol=0, atol=0)
    # L1 of block k vs the images
    blocks = [(seen["x_rec"][k * N:(k + 1) * N] - x).abs().mean() for k in range(3)]
    assert math.isclose(record["loss"], (sum(blocks) / 3).item(), rel_tol=1e-5), (record, blocks)


@pytest.mark.parametrize("phase, trained", [
    # DC-AE phase 2, high-resolution latent adaptation: only the layers next to the latent (the
    # deepest stage on each side and the latent convs).
    (2, ("encoder.down_blocks.3.", "encoder.conv_out.", "decoder.conv_in.",
         "decoder.up_blocks.3.")),
    # DC-AE phase 3, low-resolution local refinement (+ GAN): only the decoder head (its
    # highest-resolution stage and the output layers).
    (3, ("decoder.up_blocks.1.", "decoder.norm_out.", "decoder.conv_out.")),
])
def test_phase_trains_exactly_its_parameters(ae_run, tmp_path, phase, trained):
    """DC-AE's decoupled high-resolution adaptation (Chen et al. 2025; DC-AE 1.5 Sec. 4.1 follows
    its three phases, DESIGN.md §4): after one step of a phase started from the previous phase's
    weights (--init), exactly the parameters of that phase have moved."""
    init = last_checkpoint(ae_run[0])["ema"]  # --init loads the previous phase's EMA
    train_ae.main(train_ae.parse_args(train_ae_argv(tmp_path, "--phase", str(phase),
                                                    "--init", str(ae_run[0]))))
    after = last_checkpoint(tmp_path)["model"]
    reference = ae_lib.build_ae(AE)
    names = [k for k, _ in reference.named_parameters()]
    assert len(reference.encoder.down_blocks) == 4  # stage 3 is the deepest (next to the latent)
    moved = {k for k in names if not torch.equal(after[k], init[k])}
    expected = {k for k in names if k.startswith(trained)}
    assert expected and moved == expected, (sorted(moved ^ expected))


# ------------------------------------------------------------------------------------------------
# The diffusion step: the latent scaling

def test_diffusion_trainer_feeds_unit_scale_latents(tmp_path, monkeypatch):
    """Latent scaling (DESIGN.md §4; Rombach et al.'s scale factor): the diffusion model trains on
    factor * z, with factor = 1 / std of the latents over the data where none is published (the
    official code's estimate). With the whole toy set in one batch, the x0 the objective receives
    has std 1."""
    seen = []
    loss = diffusion.Flow.loss

    def recording(self, model, x0, *args, **kwargs):
        seen.append(x0.detach().clone())
        return loss(self, model, x0, *args, **kwargs)
    monkeypatch.setattr(diffusion.Flow, "loss", recording)
    train_diffusion.main(train_diffusion.parse_args([
        "--model", "USiT-tiny", "--ae", "random:" + AE, "--steps", "1", "--batch-size", "8",
        "--toy-size", "8", "--aug", "off", "--grid-every", "0", "--log-every", "1",
        "--num-workers", "0", "--no-bf16", "--out", str(tmp_path)]))
    (x0,) = seen
    assert x0.shape == (8, 16, 4, 4)
    assert abs(x0.double().std(unbiased=False).item() - 1) < 1e-2, x0.std()


@pytest.mark.parametrize("aug", ["replace", "extra"])
def test_the_diffusion_step_masks_each_sample_to_its_drawn_c_prime(aug, tmp_path, monkeypatch):
    """Eq. 2 in the trainer (train_diffusion.step_loss): the objective receives Eq. 1's mask
    of each sample's drawn c', and with --aug extra the batch twice, its first copy at c' = c."""
    seen = []
    loss = diffusion.Flow.loss

    def recording(self, model, x0, y, mask=None, **kwargs):
        seen.append((x0.detach().clone(), mask))
        return loss(self, model, x0, y, mask=mask, **kwargs)
    monkeypatch.setattr(diffusion.Flow, "loss", recording)
    train_diffusion.main(train_diffusion.parse_args([
        "--model", "USiT-tiny", "--ae", "random:" + AE, "--steps", "1", "--batch-size", "8",
        "--toy-size", "8", "--aug", aug, "--aug-c-primes", "4", "8", "--grid-every", "0",
        "--log-every", "1", "--num-workers", "0", "--no-bf16", "--out", str(tmp_path)]))
    (x0, mask), = seen
    n = 16 if aug == "extra" else 8
    assert x0.shape == (n, 16, 4, 4) and mask is not None and mask.shape == (n, 16, 1, 1)
    c_prime = mask.flatten(1).sum(1).long()  # (n,): the channels each sample keeps
    torch.testing.assert_close(mask, ae_lib.channel_mask(16, c_prime).to(mask.dtype))
    drawn = c_prime[8:] if aug == "extra" else c_prime
    assert set(drawn.tolist()) == {4, 8}  # one c' per sample: run seed 0 draws both for 8 samples
    if aug == "extra":
        assert (c_prime[:8] == 16).all()
        torch.testing.assert_close(x0[:8], x0[8:])


def test_adamw_decays_neither_norms_nor_biases():
    """The recipes (DESIGN.md §5, as DiT / U-ViT train): AdamW weight decay on the weight matrices
    only, none on norms and biases (every parameter with fewer than 2 dims)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv2d(4, 2, 1))
    opt = fsdp.adamw(model, 1e-3, 0.03, (0.9, 0.99))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert ({id(p) for g in opt.param_groups for p in g["params"]}
            == {id(p) for p in model.parameters()})


# ------------------------------------------------------------------------------------------------
# The lines of the step, each pinned in both trainers: LR warm-up, gradient clip, the loss division
# under --accum, the optimizer step before the EMA; the AE's discriminator: its loss sign by sign,
# and the step it starts at.

def train_diffusion_argv(out, *extra):
    return ["--model", "USiT-tiny", "--ae", "random:" + AE, "--steps", "1", "--batch-size", "8",
            "--toy-size", "8", "--aug", "off", "--grid-every", "0", "--log-every", "1",
            "--num-workers", "0", "--no-bf16", "--out", str(out), *extra]


TRAINERS = {"train_ae": (train_ae, train_ae_argv),
            "train_diffusion": (train_diffusion, train_diffusion_argv)}


def run_trainer(name, out, *extra):
    script, argv = TRAINERS[name]
    script.main(script.parse_args(argv(out, *extra)))


@pytest.mark.parametrize("name", TRAINERS)
def test_the_lr_warms_up_linearly_then_stays(name, tmp_path, monkeypatch):
    """fsdp.set_lr before each step: lr (step + 1) / W for W warm-up steps, then lr
    (the DiT / U-ViT recipes)."""
    seen, step = [], torch.optim.AdamW.step

    def recording(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    run_trainer(name, tmp_path, "--steps", "4", "--warmup", "2", "--lr", "0.004")
    assert seen == pytest.approx([0.002, 0.004, 0.004, 0.004])


@pytest.mark.parametrize("name", TRAINERS)
def test_the_gradient_is_clipped_to_grad_clip(name, tmp_path, monkeypatch):
    """--grad-clip: the norm of the gradient the optimizer steps with; 0 turns clipping off."""
    norms, clip = [], torch.nn.utils.clip_grad_norm_

    def recording(params, max_norm, *a, **k):
        params = list(params)
        total = clip(params, max_norm, *a, **k)
        norms.append((max_norm, float(total), float(torch.cat([p.grad.flatten() for p in params
                                                                 if p.grad is not None]).norm())))
        return total
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    run_trainer(name, tmp_path / "a", "--grad-clip", "1e-4")
    (max_norm, before, after), = norms
    assert max_norm == 1e-4 and before > 1e-3 and after == pytest.approx(1e-4, rel=1e-3)
    norms.clear()
    run_trainer(name, tmp_path / "b", "--grad-clip", "0")
    (max_norm, before, after), = norms
    assert max_norm == math.inf and after == pytest.approx(before, rel=1e-4)


class Deterministic:
    """A loss without randomness: the trainers' own loss functions draw noise, t, c' and label
    dropout, which differ with the batch's split into micro-batches; this one makes two
    micro-batches of B the same data as one of 2B."""

    @staticmethod
    def diffusion(self, model, x0, y, mask=None, **kwargs):
        model.eval()  # no label dropout
        out = model(x0, torch.full((len(x0),), 0.5), y)[:, :x0.shape[1]]
        model.train()
        mse = ((out - x0) ** 2).mean()
        return mse, {"mse": mse.detach()}

    @staticmethod
    def ae(self, x, x_rec, step=0):
        l1 = (x_rec - x).abs().mean()
        return l1, {"l1": l1.detach()}


@pytest.mark.parametrize("name", TRAINERS)
def test_accum_micro_batches_give_the_gradient_of_one_batch(name, tmp_path, monkeypatch):
    """--accum 2 with the batch B split in two micro-batches: the loss of each is divided by 2, so
    the summed gradient is the one of the whole batch (Adam's first step hides a wrong scale; the
    logged norm does not)."""
    if name == "train_diffusion":
        monkeypatch.setattr(diffusion.Flow, "loss", Deterministic.diffusion)
    else:
        monkeypatch.setattr(train_ae.AELoss, "forward", Deterministic.ae)
        monkeypatch.setattr(train_ae, "sample_step_c_primes",
                            lambda candidates, *a, **k: [candidates[-1]])
    run_trainer(name, tmp_path / "one", "--grad-clip", "0")
    run_trainer(name, tmp_path / "two", "--grad-clip", "0", "--accum", "2")
    one, two = (next(r for r in records(tmp_path / d) if "grad_norm" in r) for d in ("one", "two"))
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)


@pytest.mark.parametrize("name", TRAINERS)
def test_the_ema_follows_the_optimizer_step(name, tmp_path):
    """The EMA update comes after AdamW's step: with decay 0 the EMA is the model just stepped, not
    the one before."""
    run_trainer(name, tmp_path, "--ema-decay", "0", "--ema-warmup", "0", "--steps", "2")
    ckpt = last_checkpoint(tmp_path)
    for k, v in ckpt["model"].items():
        assert torch.equal(ckpt["ema"][k], v), k


class Constant(nn.Module):
    """A discriminator whose logits are `real` for the images and `fake` for the
    reconstructions."""

    def __init__(self, x, real, fake):
        super().__init__()
        self.x, self.real, self.fake = x, real, fake

    def forward(self, images):
        value = self.real if torch.equal(images, self.x) else self.fake
        return torch.full((len(images), 1, 2, 2), float(value))


@pytest.mark.parametrize("real, fake", [(-2.0, -3.0), (0.5, -0.5), (3.0, 2.0), (0.5, 2.0)])
def test_the_discriminator_and_generator_hinge_losses_sign_by_sign(real, fake):
    """Hinge GAN (Sec. 3.2's GAN loss, as SD / taming): the discriminator minimises (relu(1 - D(x))
    + relu(1 + D(x_rec))) / 2, the generator -D(x_rec); each case puts the logits on another side
    of the kinks."""
    x, x_rec = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    loss_fn = train_ae.AELoss(None, Constant(x, real, fake), w_l1=0.0, w_lpips=0.0, w_gan=1.0)
    expected = 0.5 * (max(0.0, 1 - real) + max(0.0, 1 + fake))
    assert loss_fn.discriminator_loss(x, x_rec).item() == pytest.approx(expected)
    loss, terms = loss_fn(x, x_rec, step=0)
    assert loss.item() == pytest.approx(-fake) and terms["gan"].item() == pytest.approx(-fake)


def test_the_discriminator_steps_from_gan_start_on(tmp_path, monkeypatch):
    """--gan-start S: the GAN term and the discriminator's own AdamW step from step S on (0-based),
    not before."""
    generator_steps, disc_losses, forward, disc = ([], [], train_ae.AELoss.forward,
                                                   train_ae.AELoss.discriminator_loss)

    def recording_forward(self, x, x_rec, step=0):
        loss, terms = forward(self, x, x_rec, step)
        generator_steps.append((step, "gan" in terms))
        return loss, terms

    def recording_disc(self, x, x_rec):
        disc_losses.append(generator_steps[-1][0])
        return disc(self, x, x_rec)
    monkeypatch.setattr(train_ae.AELoss, "forward", recording_forward)
    monkeypatch.setattr(train_ae.AELoss, "discriminator_loss", recording_disc)
    run_trainer("train_ae", tmp_path, "--steps", "4", "--gan-start", "2")
    assert generator_steps == [(0, False), (1, False), (2, True), (3, True)]
    assert disc_losses == [2, 3]
    assert "opt_disc" in last_checkpoint(tmp_path)
