"""Tests for diffusion.py (Sec. 3.3, Eq. 2; Sec. 4.1): forward processes, Eq. 2 masking, the three
objectives with IDDPM's tables and DiT's hybrid loss, DiT's respacing, samplers against analytic
solutions (DPM-Solver at its orders), CFG and the guidance interval, overfitting.

    python -m pytest -q tests/test_diffusion.py
"""

import math

import pytest
import torch
import torch.nn as nn

import diffusion
import models
from ae import channel_mask
from conftest import randomize_

C, S = 8, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# DDPM's tables under IDDPM's names: the one place that knows diffusion.py's keys (update it if
# they move).
def iddpm_tables(ddpm):
    t = ddpm.tables
    return dict(alphas_cumprod=t["alpha_bar"], log_betas=t["log_betas"],
                posterior_log_variance_clipped=t["post_logvar"], posterior_mean_coef1=t["coef_x0"],
                posterior_mean_coef2=t["coef_xt"])


VB_TERM = "vb"  # the name of DDPM.loss's variational-bound term in its `terms`


def mask_of(c_prime):
    """Eq. 1's mask of an int or per-sample c' (the callers build it), None: all channels."""
    return None if c_prime is None else channel_mask(C, c_prime)


def tiny(name, **kwargs):
    return models.create_model(name, in_channels=C, input_size=S, num_classes=10, **kwargs)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, S, S, generator=g), torch.randint(0, 10, (n,), generator=g)


class GaussianOptimal(nn.Module):
    """The exact denoiser for data x0 ~ N(mu, s^2) (per element), for each objective's model
    contract."""

    def __init__(self, objective, mu, s, c=1):
        super().__init__()
        (self.objective, self.mu, self.s,
         self.in_channels, self.num_classes) = objective, mu, s, c, 10
        self.eval()

    def forward(self, x, t, y):
        mu, s2 = self.mu, self.s ** 2
        t = t.reshape(-1, 1, 1, 1)
        if isinstance(self.objective, diffusion.Flow):
            var_t = t ** 2 * s2 + (1 - t) ** 2  # x_t ~ N(t mu, var_t)
            return mu + (t * s2 - (1 - t)) / var_t * (x - t * mu)  # E[x0 - eps | x_t]
        if isinstance(self.objective, diffusion.DDPM):
            ab = (iddpm_tables(self.objective)["alphas_cumprod"][t.long().flatten()].float()
                  .reshape(-1, 1, 1, 1))
        else:  # EpsSD: continuous time n in [1, N]
            ab = torch.tensor([
                self.objective.alpha_sigma_lambda(float(n) / self.objective.num_steps)[0] ** 2
                for n in t.flatten()]).reshape(-1, 1, 1, 1)
        eps = (1 - ab).sqrt() / (ab * s2 + 1 - ab) * (x - ab.sqrt() * mu)  # E[eps | x_t]
        if isinstance(self.objective, diffusion.DDPM):
            # v = 0: midway in the learned range
            return torch.cat([eps, torch.zeros_like(eps)], dim=1)
        return eps


# -------------------------------------------------------------------------------------------------
# Channel mask (Eq. 1) and bad inputs.

def test_channel_mask_values():
    model = tiny("USiT-tiny")
    x = torch.zeros(3, C, 2, 2)
    mask = channel_mask(C, torch.tensor([1, 3, 8]))
    assert mask.shape == (3, C, 1, 1)
    assert mask[:, :, 0, 0].tolist() == [[1] + [0] * 7, [1, 1, 1] + [0] * 5, [1] * 8]
    # no mask: all channels
    assert torch.equal(diffusion.check_latent(model, x, None), torch.ones(1, C, 1, 1))
    assert torch.equal(channel_mask(C, 2)[0, :, 0, 0], torch.tensor([1.0, 1] + [0] * 6))


@pytest.mark.parametrize("mask", [torch.ones(C, 1, 1), torch.ones(6, C + 1, 1, 1),
                                  torch.ones(4, C, 1, 1), torch.ones(6, C, 2, 1)])
def test_a_mask_that_does_not_fit_raises(mask):
    model = tiny("USiT-tiny")
    x0, y = batch()
    with pytest.raises(ValueError, match="mask must be"):
        diffusion.Flow().loss(model, x0, y, mask=mask)
    with pytest.raises(ValueError, match="mask must be"):
        diffusion.Flow().sample(model.eval(), x0, y, "euler", 2, mask=mask)


@pytest.mark.parametrize("objective", [diffusion.DDPM(), diffusion.EpsSD(), diffusion.Flow()])
def test_wrong_channel_count_raises(objective):
    model = tiny("DiT-tiny")
    x0 = torch.randn(2, C + 1, S, S)
    with pytest.raises(ValueError, match="x0 must be"):
        objective.loss(model, x0, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="z must be"):
        objective.sample(model.eval(), x0, torch.zeros(2, dtype=torch.long))


def test_bad_sampling_inputs_raise():
    model = tiny("USiT-tiny")
    z, y = batch(2)
    with pytest.raises(ValueError, match="eval"):
        diffusion.Flow().sample(model.train(), z, y)
    with pytest.raises(ValueError, match="unknown sampler 'rk4'"):
        diffusion.Flow().sample(model.eval(), z, y, "rk4")
    with pytest.raises(ValueError, match="adaptive"):
        diffusion.Flow().sample(model.eval(), z, y, "dopri5", steps=10)
    with pytest.raises(ValueError, match="steps=1 is out of range for euler_maruyama"):
        diffusion.Flow().sample(model.eval(), z, y, "euler_maruyama", steps=1)
    with pytest.raises(ValueError, match="steps"):
        diffusion.DDPM().respaced_timesteps(1001)
    with pytest.raises(ValueError, match="objective"):
        diffusion.make_objective("edm")


# -------------------------------------------------------------------------------------------------
# Forward processes.

def test_forward_process_statistics():
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1, 1, 1), 2.0)
    eps = torch.randn(x0.shape, generator=g)
    ddpm, eps_sd = diffusion.DDPM(), diffusion.EpsSD()
    for t in [0, 500, 999]:
        ab = iddpm_tables(ddpm)["alphas_cumprod"][t].item()
        x_t = ddpm.q_sample(x0, torch.full((len(x0),), t), eps)
        assert abs(x_t.mean() - 2 * math.sqrt(ab)) < 0.01 and abs(x_t.var() - (1 - ab)) < 0.01
    abar = iddpm_tables(ddpm)["alphas_cumprod"]
    assert math.isclose(abar[0].item(), 1 - 1e-4) and abar[-1] < 5e-5  # linear 1e-4..0.02
    assert (math.isclose(eps_sd.alpha_bar[0].item(), 1 - 0.00085, rel_tol=1e-9)
            and 0.004 < eps_sd.alpha_bar[-1] < 0.005)
    x_t = eps_sd.q_sample(x0, torch.full((len(x0),), 1000), eps)  # n = 1000 is the last SD step
    ab = eps_sd.alpha_bar[-1].item()
    assert abs(x_t.mean() - 2 * math.sqrt(ab)) < 0.01 and abs(x_t.var() - (1 - ab)) < 0.01
    for t in [0.0, 0.3, 1.0]:
        x_t = diffusion.Flow().q_sample(x0, torch.full((len(x0),), t), eps)
        assert abs(x_t.mean() - 2 * t) < 0.01 and abs(x_t.var() - (1 - t) ** 2) < 0.01


# -------------------------------------------------------------------------------------------------
# Losses: a perfect predictor, Eq. 2's masks, mixed batches.

class DiracVelocity(nn.Module):
    """For data that is one point X, the exact velocity is (X - x_t) / (1 - t)."""

    def __init__(self, X):
        super().__init__()
        self.X, self.in_channels, self.num_classes = X, X.shape[1], 10

    def forward(self, x, t, y):
        return (self.X - x) / (1 - t.reshape(-1, 1, 1, 1))


@pytest.mark.parametrize("c_prime", [None, 3, torch.tensor([1, 2, 8, 8, 5, 3])])
def test_perfect_velocity_gives_zero_flow_loss(c_prime):
    X = torch.randn(1, C, S, S).expand(6, C, S, S)
    model = DiracVelocity(X)
    loss, _ = diffusion.Flow().loss(model, X, torch.zeros(6, dtype=torch.long),
                                    mask=mask_of(c_prime), t=torch.rand(6) * 0.99,
                                    generator=torch.Generator().manual_seed(0))
    assert loss.item() < 1e-10
    wrong = diffusion.Flow().loss(DiracVelocity(X + 0.1), X, torch.zeros(6, dtype=torch.long),
                                  mask=mask_of(c_prime))[0]
    assert wrong.item() > 1e-3


class PerturbOutput(nn.Module):
    """Adds a large value to the output channels >= k (both halves for learned sigma)."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k, self.in_channels, self.num_classes = (model, k, model.in_channels,
                                                                  model.num_classes)

    def forward(self, x, t, y):
        out = self.model(x, t, y)
        bump = torch.zeros_like(out)
        bump[:, self.k:C] = 5.0
        bump[:, C + self.k:] = 5.0
        return out + bump


@pytest.mark.parametrize("name", ["DiT-tiny", "USiT-tiny", "UViT-tiny"])
def test_masked_channels_change_neither_loss_nor_gradients(name):
    model = randomize_(tiny(name)).eval()
    objective = diffusion.make_objective(models.MODELS[name].objective)
    x0, y = batch()
    k = 3
    # t = 0: the vb's NLL term
    t = torch.tensor([0, 1, 10, 500, 999, 999]) if name.startswith("DiT") else None
    if name.startswith("UViT"):
        t = torch.tensor([1, 2, 10, 500, 999, 1000])

    def loss_and_grads(model, x0):
        model_params = [p for p in model.parameters() if p.requires_grad]
        loss, _ = objective.loss(model, x0, y, mask=mask_of(k), t=t,
                                 generator=torch.Generator().manual_seed(3))
        grads = torch.autograd.grad(loss, model_params)
        return loss, grads

    ref_loss, ref_grads = loss_and_grads(model, x0)
    x0_bumped = x0.clone()
    x0_bumped[:, k:] += 3.0  # masked input channels
    for m, x in [(model, x0_bumped), (PerturbOutput(model, k), x0)]:
        loss, grads = loss_and_grads(m, x)
        assert torch.allclose(loss, ref_loss, rtol=1e-6, atol=1e-7)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads, ref_grads))
    # ... while a kept channel does change the loss (the test can fail).
    x0_kept = x0.clone()
    x0_kept[:, 0] += 3.0
    assert not torch.allclose(loss_and_grads(model, x0_kept)[0], ref_loss)


@pytest.mark.parametrize("name", ["DiT-tiny", "USiT-tiny", "UViT-tiny"])
def test_per_sample_masks_equal_mean_of_separate_passes(name):
    model = randomize_(tiny(name)).eval()
    objective = diffusion.make_objective(models.MODELS[name].objective)
    x0, y = batch(4)
    g = torch.Generator().manual_seed(5)
    eps = torch.randn(8, C, S, S, generator=g)
    t = torch.tensor([3, 70, 400, 999, 0, 5, 600, 800]) if name.startswith("DiT") else None
    t = torch.tensor([1, 70, 400, 1000, 2, 5, 600, 800]) if name.startswith("UViT") else t
    t = torch.rand(8, generator=g) if t is None else t
    # The official "extra" mode: a full-channel pass and a c' = 3 pass, averaged ...
    full, _ = objective.loss(model, x0, y, mask=mask_of(None), t=t[:4], eps=eps[:4])
    part, _ = objective.loss(model, x0, y, mask=mask_of(3), t=t[4:], eps=eps[4:])
    # ... equals one pass over the doubled batch with per-sample masks (augment_batch's layout).
    x0_2, y_2, c_prime = diffusion.augment_batch(x0, y, [3], "extra")
    assert c_prime.tolist() == [C] * 4 + [3] * 4 and torch.equal(x0_2[4:], x0)
    mixed, _ = objective.loss(model, x0_2, y_2, mask=mask_of(c_prime), t=t, eps=eps)
    assert torch.allclose(mixed, (full + part) / 2, rtol=1e-5)


def test_sample_c_prime_and_augment_batch():
    """sample_c_prime draws uniformly over the candidates, reproducibly; augment_batch's "replace"
    and "extra" layouts: test_augment_batch_layouts_draw_per_sample."""
    candidates = [2, 4, 6, 8]
    a = diffusion.sample_c_prime(candidates, 2000, torch.Generator().manual_seed(0))
    b = diffusion.sample_c_prime(candidates, 2000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.long
    counts = torch.bincount(a, minlength=9)[candidates]
    # uniform over the candidates, nothing else
    assert (counts > 400).all() and counts.sum() == 2000
    x0, y = batch()
    assert diffusion.augment_batch(x0, y, candidates, "off")[2] is None
    with pytest.raises(ValueError, match="mode"):
        diffusion.augment_batch(x0, y, candidates, "both")
    with pytest.raises(ValueError, match="exceed"):
        diffusion.augment_batch(x0, y, [4, 16], "replace")
    with pytest.raises(ValueError, match="candidates"):
        diffusion.sample_c_prime([], 3)


def test_vb_terms():
    # KL of identical Gaussians is 0; the decoder likelihood of a sharp Gaussian at a bin
    # centre is ~1.
    m, lv = torch.randn(10), torch.randn(10)
    assert diffusion.normal_kl(m, lv, m, lv).abs().max() < 1e-6
    assert math.isclose(diffusion.normal_kl(torch.tensor(1.0), torch.tensor(0.0),
                                            torch.tensor(0.0), torch.tensor(0.0)).item(), 0.5)
    x = torch.tensor([-1.0, 0.0, 1.0])
    logp = diffusion.discretized_gaussian_log_likelihood(x, x, torch.full((3,), math.log(1e-4)))
    assert (logp > -1e-6).all()
    # N(x, 1): bin mass 2/255 pdf
    wide = diffusion.discretized_gaussian_log_likelihood(x, x, torch.zeros(3))
    assert math.isclose(wide[1].item(), math.log(2 / 255 / math.sqrt(2 * math.pi)), abs_tol=1e-3)


# -------------------------------------------------------------------------------------------------
# Samplers.

SAMPLERS = [  # (objective, steps, kwargs, stochastic)
    (diffusion.DDPM, 250, {}, True),
    (diffusion.EpsSD, 30, {}, False),
    (diffusion.Flow, 30, dict(sampler="euler"), False),
    (diffusion.Flow, 30, dict(sampler="heun"), False),
    (diffusion.Flow, 250, dict(sampler="euler_maruyama"), True),
]


@pytest.mark.parametrize("objective_cls, steps, kwargs",
                         [(o, s, k) for o, s, k, stochastic in SAMPLERS if stochastic])
def test_stochastic_samplers_recover_gaussian_data(objective_cls, steps, kwargs):
    """With the exact denoiser for x0 ~ N(mu, s^2), the SDE samplers must return that
    distribution."""
    objective = objective_cls()
    mu, s = 1.5, 0.5
    model = GaussianOptimal(objective, mu, s)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 1, 1, 1, generator=g)
    y = torch.zeros(20_000, dtype=torch.long)
    x = objective.sample(model, z, y, steps=steps, generator=g, **kwargs)
    assert abs(x.mean().item() - mu) < 0.03, x.mean()
    assert abs(x.std().item() - s) < 0.03, x.std()


def gaussian_ode_solution(objective, z, mu, s):
    """The probability-flow ODE keeps (x - mean_t) / std_t fixed for Gaussian data: the exact end
    point."""
    if isinstance(objective, diffusion.Flow):
        return mu + s * z  # t = 0 is exactly N(0, 1)
    # SD betas end at alpha-bar = 0.0047, not 0: z ~ N(0, 1) is mapped from the
    # marginal at s = 1 to s = 1/N.
    a_T, a_0 = (objective.alpha_sigma_lambda(1.0)[0],
                objective.alpha_sigma_lambda(1.0 / objective.num_steps)[0])
    std_T, std_0 = (math.sqrt(a_T ** 2 * s ** 2 + 1 - a_T ** 2),
                    math.sqrt(a_0 ** 2 * s ** 2 + 1 - a_0 ** 2))
    return a_0 * mu + std_0 / std_T * (z - a_T * mu)


@pytest.mark.parametrize("objective_cls, method, steps, tol", [
    (diffusion.EpsSD, None, 90, 0.03), (diffusion.Flow, "euler", 30, 0.1),
    (diffusion.Flow, "heun", 30, 0.002)])
def test_ode_samplers_solve_gaussian_flow(objective_cls, method, steps, tol):
    objective, mu, s = objective_cls(), 1.5, 0.5
    model = GaussianOptimal(objective, mu, s)
    z = torch.linspace(-3, 3, 61).reshape(-1, 1, 1, 1)
    y = torch.zeros(61, dtype=torch.long)
    kwargs = {} if method is None else dict(sampler=method)
    exact = gaussian_ode_solution(objective, z, mu, s)
    err = (objective.sample(model, z, y, steps=steps, **kwargs) - exact).abs().max().item()
    assert err < tol, err
    # Heun (second order) / Euler (first): the error falls by > 4x / > 2x when the steps triple.
    # DPM-Solver's time-uniform grid leaves a large lambda step near t = 1/N whatever the count:
    # it falls by > 3x.
    err_coarse = ((objective.sample(model, z, y, steps=steps // 3, **kwargs) - exact)
                  .abs().max().item())
    assert err_coarse > {"euler": 2.0, "heun": 4.0, None: 3.0}[method] * err, (err_coarse, err)


@pytest.mark.parametrize("objective_cls, steps, kwargs, stochastic", SAMPLERS)
def test_samplers_deterministic_under_seed_and_partial_channels(objective_cls, steps, kwargs,
                                                                stochastic):
    model = randomize_(tiny("DiT-tiny" if objective_cls is diffusion.DDPM else "USiT-tiny"),
                       std=0.05).eval()
    objective = objective_cls()
    z, y = batch(2)
    steps = min(steps, 8)

    def run(seed, c_prime=None):
        return objective.sample(model, z, y, steps=steps, cfg_scale=1.5, mask=mask_of(c_prime),
                                generator=torch.Generator().manual_seed(seed), **kwargs)

    a, b, other = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert torch.isfinite(a).all()
    # a different seed changes exactly the stochastic samplers
    assert torch.equal(a, other) != stochastic
    partial = run(0, c_prime=3)
    # dropped channels stay zero
    assert torch.equal(partial[:, 3:], torch.zeros_like(partial[:, 3:]))
    assert partial[:, :3].abs().sum() > 0


def test_heun_beats_euler_on_known_ode():
    # Gaussian data: the probability-flow ODE maps z to mu + s z exactly (x_t = t mu + sigma_t z).
    objective, mu, s = diffusion.Flow(), 1.5, 0.5
    model = GaussianOptimal(objective, mu, s)
    z = torch.linspace(-2, 2, 9).reshape(9, 1, 1, 1)
    y = torch.zeros(9, dtype=torch.long)
    exact = mu + s * z
    err = {m: (objective.sample(model, z, y, m, steps=10) - exact).abs().max().item()
           for m in ["euler", "heun"]}
    assert err["heun"] < 0.1 * err["euler"], err
    assert err["euler"] > 1e-3  # the problem is not trivially solved by Euler


def test_dopri5_is_the_flow_protocol_and_matches_a_fine_euler_integration():
    # large weights: a velocity field that bends
    model = randomize_(tiny("USiT-tiny"), std=0.2).eval()
    z, y = batch(2)
    flow = diffusion.Flow()
    # adaptive, the default
    assert next(iter(flow.samplers)) == "dopri5" and flow.samplers["dopri5"] is None
    x = flow.sample(model, z, y)
    fine = flow.sample(model, z, y, "euler", 1000)
    # Euler's own error at 1000 steps is ~1e-4
    assert (x - fine).abs().max() < 2e-3, (x - fine).abs().max()
    assert (flow.sample(model, z, y, "euler", 2) - fine).abs().max() > 10 * (x - fine).abs().max()


def test_dopri5_end_point_does_not_depend_on_the_output_points():
    """DC-Gen asks torchdiffeq for 250 output points; the adaptive steps ignore them, so [0, 1]
    gives its end point."""
    from torchdiffeq import odeint
    model = randomize_(tiny("USiT-tiny"), std=0.05).eval()
    z, y = batch(2)
    with torch.no_grad():
        official = odeint(lambda t, x: model(x, t.expand(len(x)), y), z, torch.linspace(0, 1, 250),
                          method="dopri5", atol=1e-6, rtol=1e-3)[-1]
    assert torch.equal(diffusion.Flow().sample(model, z, y), official)


def test_fast_orders_spend_exactly_the_steps():
    assert diffusion.fast_orders(30) == [3] * 9 + [2, 1]  # U-ViT / DC-Gen: 30 evaluations
    for steps in range(1, 40):
        assert (sum(diffusion.fast_orders(steps)) == steps
                and set(diffusion.fast_orders(steps)) <= {1, 2, 3})


class LinearInLambda(nn.Module):
    """An eps-model whose data prediction is D(t) = a + b lambda_t, whatever x: DPM-Solver's
    updates of order >= 2 integrate the exact ODE
    x_t = (sigma_t / sigma_s) x_s + sigma_t int e^lambda D dlambda without error."""

    def __init__(self, objective, a=0.7, b=0.3):
        super().__init__()
        (self.objective, self.a, self.b,
         self.in_channels, self.num_classes) = objective, a, b, 1, 10
        self.eval()

    def forward(self, x, t, y):
        alpha, sigma, lam = self.objective.alpha_sigma_lambda(float(t[0])
                                                              / self.objective.num_steps)
        # eps such that (x - sigma eps) / alpha = D
        return (x - alpha * (self.a + self.b * lam)) / sigma

    def exact(self, x, s, t):
        (_, sig_s, lam_s), (_, sig_t, lam_t) = (self.objective.alpha_sigma_lambda(s),
                                                self.objective.alpha_sigma_lambda(t))
        primitive = lambda lam: math.exp(lam) * (self.a + self.b * lam - self.b)  # noqa: E731
        return sig_t / sig_s * x + sig_t * (primitive(lam_t) - primitive(lam_s))


@pytest.mark.parametrize("s, t", [(1.0, 0.5), (0.3, 0.001), (1.0, 0.001)])
def test_dpm_solver_order_3_update_is_exact_when_the_data_prediction_is_linear_in_lambda(s, t):
    objective = diffusion.EpsSD()
    model = LinearInLambda(objective)
    x = torch.linspace(-2, 2, 5, dtype=torch.float64).reshape(5, 1, 1, 1)
    y = torch.zeros(5, dtype=torch.long)

    def x0_theta(x, t):
        alpha, sigma, _ = objective.alpha_sigma_lambda(t)
        return (x - sigma * model(x, torch.full((5,), t * objective.num_steps), y)) / alpha
    exact = model.exact(x, s, t)
    third = objective.update(x, s, t, [1 / 3, 2 / 3], x0_theta)
    # float32 t in the model
    assert (third - exact).abs().max() < 1e-7, (third - exact).abs().max()
    # the lower orders are not exact on this problem (the test can tell them apart), only close
    for r in ([], [0.5]):
        err = (objective.update(x, s, t, r, x0_theta) - exact).abs().max()
        assert err > 1e-5, (r, err)


def test_dpm_solver_is_exact_for_point_data():
    """Data that is one point mu: the data prediction is the constant mu and every update order is
    exact."""
    objective, mu = diffusion.EpsSD(), 1.5
    model = GaussianOptimal(objective, mu, 0.0)
    z = torch.linspace(-3, 3, 13).reshape(-1, 1, 1, 1)
    # the protocol: 30 evaluations
    x = objective.sample(model, z, torch.zeros(13, dtype=torch.long))
    assert (x - gaussian_ode_solution(objective, z, mu, 0.0)).abs().max() < 1e-5


# -------------------------------------------------------------------------------------------------
# Classifier-free guidance.

@pytest.mark.parametrize("name", ["DiT-tiny", "USiT-tiny"])
def test_cfg(name):
    model = randomize_(tiny(name)).eval()
    x, y = batch(3)
    t, t_vec = 0.3, torch.full((3,), 0.3)
    cond = model(x, t_vec, y)
    uncond = model(x, t_vec, torch.full_like(y, 10))
    assert not torch.allclose(cond, uncond)
    # scale 1 is the conditional prediction
    assert torch.equal(diffusion.guided_output(model, x, t, y, 1.0), cond)
    # scale s is uncond + s (cond - uncond) on all c channels, with the variance half
    # from the cond branch
    out = diffusion.guided_output(model, x, t, y, 3.0)
    assert torch.allclose(out[:, :C], uncond[:, :C] + 3.0 * (cond[:, :C] - uncond[:, :C]),
                          rtol=1e-4, atol=1e-5)
    assert torch.allclose(out[:, C:], cond[:, C:], rtol=1e-4, atol=1e-5)
    # linear in s: extrapolating two guided outputs back to s = 1 gives the conditional prediction
    s15, s2 = (diffusion.guided_output(model, x, t, y, 1.5),
               diffusion.guided_output(model, x, t, y, 2.0))
    assert torch.allclose(2 * s15[:, :C] - s2[:, :C], cond[:, :C], rtol=1e-4, atol=1e-4)
    # outside the guidance interval the sampler asks for no guidance
    assert not diffusion.in_interval(0.9, (0.2, 0.8)) and diffusion.in_interval(0.5, (0.2, 0.8))
    assert torch.equal(diffusion.guided_output(model, x, t, y, 3.0, guide=False), cond)


# -------------------------------------------------------------------------------------------------
# Overfitting one batch.

@pytest.mark.parametrize("name, c_prime",
                         [("USiT-tiny", None), ("USiT-tiny", "mixed"), ("DiT-tiny", None)])
def test_overfit_one_batch(name, c_prime):
    torch.manual_seed(0)
    model = tiny(name, class_dropout_prob=0.0)
    objective = diffusion.make_objective(models.MODELS[name].objective)
    x0, y = batch(8)
    if c_prime == "mixed":
        c_prime = torch.tensor([8, 8, 4, 4, 2, 2, 6, 6])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        # the same noise and t every step, so the loss can go to ~0 on this batch
        loss, _ = objective.loss(model, x0, y, mask=mask_of(c_prime),
                                 generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.3 * first, (first, last)


# =================================================================================================
# Statements of the paper and of the official code, each written so that a plausible slip breaks it
# (tests/README.md lists the bugs planted to check that these tests catch them).

class Fixed(nn.Module):
    """A model whose output is a given tensor whatever its input; records what the objective fed
    it."""

    def __init__(self, out, c=C):
        super().__init__()
        self.out, self.in_channels, self.num_classes, self.seen = out, c, 10, []

    def forward(self, x, t, y):
        self.seen.append((x.detach().clone(), t.detach().clone()))
        return self.out


class OffsetVelocity(DiracVelocity):
    """The exact velocity of point data plus a per-sample offset delta_i: every kept element's
    error is delta_i^2."""

    def __init__(self, X, delta):
        super().__init__(X)
        self.delta = delta

    def forward(self, x, t, y):
        return super().forward(x, t, y) + self.delta.reshape(-1, 1, 1, 1)


def test_augmented_loss_is_the_mean_over_each_samples_kept_elements():
    """Eq. 2 per sample: ||(eps - eps_theta) * mask_{c,c'}||^2 / (c' H W), i.e. the official code's
    mean over the kept x0[:, :c'] (DESIGN.md §5), then the mean over the batch. Unequal per-sample
    errors and c' tell the mean over the c' H W kept elements from a mean over all c H W
    elements."""
    c_prime = torch.tensor([1, 3, 8, 5])
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    err = torch.rand(4, C, S, S, generator=g, dtype=torch.float64) * scale  # (N, c, H, W)
    expected = sum(err[i, :cp].mean() for i, cp in enumerate(c_prime.tolist())) / 4
    got = diffusion.augmented_loss(err, channel_mask(C, c_prime).double())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # Through an objective: a velocity off by delta_i on sample i has the loss mean_i delta_i^2,
    # whatever c'_i.
    X = torch.randn(1, C, S, S, generator=g).expand(4, C, S, S)
    delta = torch.tensor([0.1, 0.2, 0.3, 0.4])
    loss, _ = diffusion.Flow().loss(OffsetVelocity(X, delta), X, torch.zeros(4, dtype=torch.long),
                                    mask=mask_of(c_prime), t=torch.tensor([0.1, 0.5, 0.3, 0.8]))
    assert math.isclose(loss.item(), (delta ** 2).mean().item(), rel_tol=1e-5), loss


class RecordGuidance(nn.Module):
    """Records each call's model time and whether it was a guided call (the batch holds the null
    class)."""

    def __init__(self, c_out):
        super().__init__()
        self.in_channels, self.num_classes, self.c_out, self.calls = 1, 10, c_out, []
        self.eval()

    def forward(self, x, t, y):
        self.calls.append((float(t[0]), bool((y == self.num_classes).any())))
        return torch.zeros(x.shape[0], self.c_out, *x.shape[2:])


@pytest.mark.parametrize("objective_cls, sampler, steps, noise_level", [
    # flow t = 0 is noise: the noise level is 1 - t
    (diffusion.Flow, "euler", 10, lambda t: 1 - t),
    (diffusion.Flow, "heun", 10, lambda t: 1 - t),
    (diffusion.Flow, "euler_maruyama", 10, lambda t: 1 - t),
    # the model sees n = 1000 t, t = 1 is noise
    (diffusion.EpsSD, "dpm-solver", 12, lambda t: t / 1000),
    (diffusion.DDPM, "ddpm", 20, lambda t: t / 1000),  # the model sees the original step 0..999
])
def test_asymmetric_guidance_interval_guides_exactly_the_steps_whose_noise_level_lies_inside(
        objective_cls, sampler, steps, noise_level):
    """Guidance interval (Kynkaanniemi et al. 2024; DESIGN.md §5: t in [lo, hi] on the noise level,
    1 = pure noise): CFG is applied at a step iff its noise level is in [lo, hi]. (0.15, 0.45) is
    not symmetric about 1/2, so testing the interval on the flow time t instead of 1 - t guides
    other steps."""
    lo, hi = 0.15, 0.45
    model = RecordGuidance(2 if objective_cls is diffusion.DDPM else 1)
    z = torch.randn(3, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    objective_cls().sample(model, z, torch.tensor([1, 2, 3]), sampler, steps,
                           cfg_scale=2.0, guidance_interval=(lo, hi),
                           generator=torch.Generator().manual_seed(1))
    levels = [(noise_level(t), guided) for t, guided in model.calls]
    assert all(guided == (lo <= level <= hi) for level, guided in levels), levels
    # the interval splits the trajectory
    assert any(g for _, g in levels) and not all(g for _, g in levels)


class GaussianDataPrediction:
    """x0 ~ N(mu, s^2) per element under EpsSD's schedule: the exact data prediction and
    probability-flow ODE."""

    def __init__(self, objective, mu=1.5, s=0.5):
        self.objective, self.mu, self.s = objective, mu, s

    def std(self, t):
        alpha, sigma, _ = self.objective.alpha_sigma_lambda(t)
        # x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2)
        return alpha, math.sqrt(alpha ** 2 * self.s ** 2 + sigma ** 2)

    def __call__(self, x, t):  # E[x0 | x_t] = mu + alpha s^2 / std_t^2 (x_t - alpha mu)
        alpha, std = self.std(t)
        return self.mu + alpha * self.s ** 2 / std ** 2 * (x - alpha * self.mu)

    def flow(self, x, s, t):  # the ODE keeps (x - alpha mu) / std fixed: the exact map x_s -> x_t
        (a_s, std_s), (a_t, std_t) = self.std(s), self.std(t)
        return a_t * self.mu + std_t / std_s * (x - a_s * self.mu)


@pytest.mark.parametrize("order, r", [(1, []), (2, [0.5]), (3, [1 / 3, 2 / 3])])
def test_dpm_solver_updates_converge_at_their_order(order, r):
    """DPM-Solver (Lu et al. 2022, Thm. 3.2; data prediction as DPM-Solver++): one singlestep
    update of order k over a step h in lambda has local error O(h^(k+1)), so halving h divides the
    error by 2^(k+1) (4, 8, 16). A smooth problem with a known solution: Gaussian data, whose data
    prediction is not linear in lambda. The fast schedule's intermediate points: r1 = 1/2
    (order 2), r1, r2 = 1/3, 2/3 (order 3)."""
    objective = diffusion.EpsSD()
    D = GaussianDataPrediction(objective)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(-1, 1, 1, 1)
    for s in (0.9, 0.5, 0.2):
        lam_s = objective.alpha_sigma_lambda(s)[2]
        errors = []
        for h in (0.1, 0.05):
            t = objective.t_of_lambda(lam_s + h)
            errors.append((objective.update(x, s, t, r, D) - D.flow(x, s, t)).abs().max().item())
        observed = math.log2(errors[0] / errors[1])
        assert abs(observed - (order + 1)) < 0.25, (s, errors, observed)


def dit_space_timesteps(num_timesteps, count):
    """facebookresearch/DiT diffusion/respace.py, space_timesteps(T, str(count)): one section,
    frac_stride = (T - 1) / (count - 1), taken = round(cur_idx) with cur_idx += frac_stride
    (a float sum, Python's round)."""
    frac_stride = (num_timesteps - 1) / (count - 1) if count > 1 else 1
    cur_idx, taken = 0.0, []
    for _ in range(count):
        taken.append(round(cur_idx))
        cur_idx += frac_stride
    return sorted(set(taken))


def test_ddpm_respacing_250_is_dits_list():
    """DiT samples with space_timesteps(1000, "250"): 250 steps from 0 to 999 with stride 999/249
    (~4.012), so the chain starts at the last training step t = 999 (a stride of 1000/250 = 4 would
    end at 996)."""
    ours = diffusion.DDPM().respaced_timesteps(250)
    assert ours == dit_space_timesteps(1000, 250)
    assert len(ours) == 250 and ours[:4] == [0, 4, 8, 12] and ours[-2:] == [995, 999]


def test_ddpm_respacing_matches_dit_for_every_count():
    """DiT rounds a running float sum of (T - 1) / (n - 1): its ties (x.5) fall where the sum's
    round-off puts them (n = 21 and 999 differ from rounding i (T - 1) / (n - 1) directly)."""
    bad = [n for n in range(2, 1001)
           if diffusion.DDPM().respaced_timesteps(n) != dit_space_timesteps(1000, n)]
    assert bad == []


def test_iddpm_variance_tables():
    """IDDPM (Nichol & Dhariwal 2021) / DiT gaussian_diffusion.py, linear betas 1e-4..0.02
    (T = 1000), written from the formulas at t = 0, 1, 500, 999:
      alphas_cumprod_t = prod_{i<=t} (1 - beta_i),  alphas_cumprod_prev_0 = 1
      posterior_variance_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)        (0 at t = 0)
      posterior_log_variance_clipped = log(append(posterior_variance[1], posterior_variance[1:]))
      posterior_mean_coef1 = beta_t sqrt(abar_{t-1}) / (1 - abar_t)
      posterior_mean_coef2 = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
    """
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    abar = lambda t: math.prod(1 - b for b in betas[:t + 1])  # noqa: E731
    abar_prev = lambda t: abar(t - 1) if t > 0 else 1.0  # noqa: E731
    post_var = lambda t: betas[t] * (1 - abar_prev(t)) / (1 - abar(t))  # noqa: E731
    tables = iddpm_tables(diffusion.DDPM())
    for t in (0, 1, 500, 999):
        expected = dict(
            alphas_cumprod=abar(t), log_betas=math.log(betas[t]),
            # t = 0 takes t = 1's
            posterior_log_variance_clipped=math.log(post_var(1) if t == 0 else post_var(t)),
            posterior_mean_coef1=betas[t] * math.sqrt(abar_prev(t)) / (1 - abar(t)),
            posterior_mean_coef2=(1 - abar_prev(t)) * math.sqrt(1 - betas[t]) / (1 - abar(t)))
        for name, value in expected.items():
            assert math.isclose(tables[name][t].item(), value, rel_tol=1e-9), (
                name, t, tables[name][t].item(), value)


def iddpm_vb_bits(x0, x_t, t, eps_theta, v, betas):
    """IDDPM's _vb_terms_bpd per element, float64, written from the paper:
    KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) in bits for t > 0, the discretized decoder NLL
    -log p(x0|x1) (256 bins on [-1, 1]) for t = 0. Learned range:
    log var = frac log beta_t + (1 - frac) log beta-tilde_t, frac = (v + 1) / 2 (IDDPM Eq. 15)."""
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    col = lambda a: a[t].reshape(-1, 1, 1, 1)  # noqa: E731
    coef1, coef2 = (col(betas * abar_prev.sqrt() / (1 - abar)),
                    col((1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)))
    true_mean, true_logvar = coef1 * x0 + coef2 * x_t, col(post_logvar)
    frac = (v + 1) / 2
    logvar = frac * col(torch.log(betas)) + (1 - frac) * col(post_logvar)
    x0_pred = (x_t - (1 - col(abar)).sqrt() * eps_theta) / col(abar).sqrt()
    mean = coef1 * x0_pred + coef2 * x_t
    kl = 0.5 * (-1 + logvar - true_logvar + torch.exp(true_logvar - logvar)
                + (true_mean - mean) ** 2 * torch.exp(-logvar))

    def cdf(u):  # IDDPM's approx_standard_normal_cdf
        return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
    inv_std = torch.exp(-0.5 * logvar)
    plus, minus = cdf(inv_std * (x0 - mean + 1 / 255)), cdf(inv_std * (x0 - mean - 1 / 255))
    log_p = torch.where(x0 < -0.999, torch.log(plus.clamp(min=1e-12)),
                        torch.where(x0 > 0.999, torch.log((1 - minus).clamp(min=1e-12)),
                                    torch.log((plus - minus).clamp(min=1e-12))))
    return torch.where(col(torch.arange(len(betas))) == 0, -log_p, kl) / math.log(2)


def test_ddpm_loss_is_dits_hybrid_loss_on_the_kept_elements():
    """DiT's loss (IDDPM "hybrid" with learn_sigma): MSE(eps, eps_theta) + the variational bound in
    bits, both averaged over the kept elements of Eq. 2. t = 0 takes the decoder NLL, t > 0 the KL;
    the bound sees a stop-gradient eps_theta (DiT's frozen_out), so it trains only the variance:
    the gradient reaching eps_theta is the MSE's alone."""
    g = torch.Generator().manual_seed(0)
    N = 6
    x0 = (torch.rand(N, C, S, S, generator=g) * 2 - 1)
    x0[0, 0, 0, 0], x0[4, 1, 0, 0] = -1.0, 1.0  # the open outer bins of the decoder NLL
    eps = torch.randn(N, C, S, S, generator=g)
    t = torch.tensor([0, 1, 500, 999, 0, 250])
    c_prime = torch.tensor([8, 3, 8, 5, 2, 8])
    eps_theta = eps + 0.3 * torch.randn(N, C, S, S, generator=g)
    v = torch.rand(N, C, S, S, generator=g) * 1.6 - 0.8  # inside the learned range
    out = torch.cat([eps_theta, v], 1).requires_grad_(True)
    model = Fixed(out)
    ddpm = diffusion.DDPM()
    loss, terms = ddpm.loss(model, x0, torch.zeros(N, dtype=torch.long), mask=mask_of(c_prime),
                            t=t, eps=eps)
    mask = channel_mask(C, c_prime).double()
    kept = mask.sum(dim=(1, 2, 3)) * S * S  # (N,) c' H W

    def mean_kept(e):
        return ((e * mask).sum(dim=(1, 2, 3)) / kept).mean()
    # the masked x_t the model saw (the forward process is tested elsewhere)
    x_t = model.seen[0][0].double()
    vb = mean_kept(iddpm_vb_bits(x0.double(), x_t, t, eps_theta.double(), v.double(), ddpm.betas))
    mse = mean_kept((eps.double() - eps_theta.double()) ** 2)
    assert math.isclose(terms[VB_TERM].item(), vb.item(), rel_tol=1e-4), (terms, vb)
    assert math.isclose(loss.item(), (mse + vb).item(), rel_tol=1e-4)
    loss.backward()
    mse_grad = (-2 * (eps - eps_theta.detach()) * mask.float()
                / (N * kept.float().reshape(-1, 1, 1, 1)))
    torch.testing.assert_close(out.grad[:, :C], mse_grad, rtol=1e-4, atol=1e-9)
    v_grad = out.grad[:, C:]  # the bound trains v on the kept channels only
    assert ((v_grad * (1 - mask)).abs().max() == 0
            and ((v_grad * mask).abs().sum(dim=(1, 2, 3)) > 0).all())


@pytest.mark.parametrize("objective_cls", [diffusion.DDPM, diffusion.EpsSD, diffusion.Flow])
def test_each_objective_feeds_its_forward_process_and_regresses_its_target(objective_cls):
    """The three objectives of DESIGN.md §5, written from their papers:
      DDPM (DiT):   t ~ U{0..999}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, linear betas
                    1e-4..0.02, target eps
      EpsSD (UViT): n ~ U{1..1000}, abar_n = prod_{i<=n} (1 - beta_i), SD betas
                    linspace(0.00085^.5, 0.012^.5)^2, the model sees n, target eps
      Flow (SiT):   t ~ U[0, 1], x_t = t x0 + (1 - t) eps (t = 0 noise), the model sees t,
                    target v = x0 - eps
    The model input is x_t * mask (Eq. 2) and the loss the mean squared error on the kept
    channels."""
    objective = objective_cls()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, C, S, S, generator=g), torch.randn(4, C, S, S, generator=g)
    c_prime = torch.tensor([8, 2, 5, 8])
    mask = channel_mask(C, c_prime)
    if objective_cls is diffusion.Flow:
        t = torch.tensor([0.0, 0.25, 0.6, 1.0])
        x_t, target = t.reshape(-1, 1, 1, 1) * x0 + (1 - t.reshape(-1, 1, 1, 1)) * eps, x0 - eps
    else:
        T = 1000
        if objective_cls is diffusion.DDPM:
            t, betas = (torch.tensor([0, 1, 500, 999]),
                        [1e-4 + (0.02 - 1e-4) * i / (T - 1) for i in range(T)])
            abar = [math.prod(1 - b for b in betas[:k + 1]) for k in t.tolist()]
        else:
            t = torch.tensor([1, 2, 500, 1000])
            betas = [(0.00085 ** 0.5 + (0.012 ** 0.5 - 0.00085 ** 0.5) * i / (T - 1)) ** 2
                     for i in range(T)]
            # n = 1 is the first beta
            abar = [math.prod(1 - b for b in betas[:n]) for n in t.tolist()]
        abar = torch.tensor(abar).reshape(-1, 1, 1, 1)
        x_t, target = abar.sqrt() * x0 + (1 - abar).sqrt() * eps, eps
    out = torch.randn(4, 2 * C if objective_cls is diffusion.DDPM else C, S, S, generator=g)
    model = Fixed(out)
    loss, _ = objective.loss(model, x0, torch.zeros(4, dtype=torch.long), mask=mask_of(c_prime),
                             t=t, eps=eps)
    seen_x, seen_t = model.seen[0]
    torch.testing.assert_close(seen_x, x_t * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen_t.double(), t.double())
    # DDPM adds the bound: test_ddpm_loss_is_dits_hybrid_loss...
    if objective_cls is not diffusion.DDPM:
        expected = sum(((target - out)[i, :cp] ** 2).mean()
                       for i, cp in enumerate(c_prime.tolist())) / 4
        assert math.isclose(loss.item(), expected.item(), rel_tol=1e-5), (loss, expected)
    # Drawn times cover the objective's whole range, and nothing outside it.
    model = Fixed(torch.zeros(6000, 2 if objective_cls is diffusion.DDPM else 1, 1, 1), c=1)
    objective.loss(model, torch.zeros(6000, 1, 1, 1), torch.zeros(6000, dtype=torch.long),
                   generator=torch.Generator().manual_seed(0))
    drawn = model.seen[0][1]
    if objective_cls is diffusion.Flow:
        assert (0 <= drawn.min() < 0.01 and 0.99 < drawn.max() <= 1
                and abs(drawn.mean() - 0.5) < 0.02)
    else:
        lo, hi = (0, 999) if objective_cls is diffusion.DDPM else (1, 1000)
        assert drawn.min() == lo and drawn.max() == hi and torch.equal(drawn, drawn.round())


def test_augment_batch_layouts_draw_per_sample():
    """Fig. 5a / Sec. 3.3: "replace" draws one c' per sample, uniformly over [c1, ..., c]; "extra"
    (the official always_sample_max_channel) is the batch with c' = c followed by the same batch
    (same x0 and labels) with per-sample drawn c'."""
    g = torch.Generator().manual_seed(0)
    x0, y = torch.randn(800, C, 1, 1, generator=g), torch.randint(0, 10, (800,), generator=g)
    candidates = [2, 4, 6, 8]
    x0_r, y_r, c_r = diffusion.augment_batch(x0, y, candidates, "replace", generator=g)
    assert torch.equal(x0_r, x0) and torch.equal(y_r, y)
    counts = torch.bincount(c_r, minlength=9)[candidates]
    # every candidate, about 200 times each
    assert counts.sum() == 800 and (counts > 150).all(), counts
    x0_e, y_e, c_e = diffusion.augment_batch(x0, y, candidates, "extra", generator=g)
    assert torch.equal(x0_e, torch.cat([x0, x0])) and torch.equal(y_e, torch.cat([y, y]))
    assert (c_e[:800] == C).all()
    counts = torch.bincount(c_e[800:], minlength=9)[candidates]
    assert counts.sum() == 800 and (counts > 150).all(), counts


class Recording(nn.Module):
    """Wraps a model and records each call's (x, t, output)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.in_channels, self.num_classes, self.calls = (model, model.in_channels,
                                                                      model.num_classes, [])
        self.eval()

    def forward(self, x, t, y):
        out = self.model(x, t, y)
        self.calls.append((x.clone(), t.clone(), out.clone()))
        return out


def test_ddpm_last_step_is_the_noise_free_x0_prediction():
    """IDDPM p_sample: x_{t-1} = mean + nonzero_mask * exp(0.5 log var) * noise with
    nonzero_mask = (t != 0). At t = 0 the posterior mean is coef1 x0_pred + coef2 x_t with
    coef1 = 1, coef2 = 0 (abar_prev = 1), so the sample is the model's x0 prediction
    (x_t - sqrt(1 - abar_0) eps_theta) / sqrt(abar_0) exactly, abar_0 = 1 - beta_0 = 1 - 1e-4."""
    model = Recording(randomize_(tiny("DiT-tiny"), std=0.05))
    z, y = batch(2)
    x = diffusion.DDPM().sample(model, z, y, steps=3, generator=torch.Generator().manual_seed(0))
    x_t, t, out = model.calls[-1]
    assert t.tolist() == [0.0, 0.0]
    abar_0 = 1 - 1e-4
    torch.testing.assert_close(x, (x_t - math.sqrt(1 - abar_0) * out[:, :C]) / math.sqrt(abar_0),
                               rtol=1e-5, atol=1e-6)


def test_ddpm_one_step_samples_or_refuses():
    """IDDPM's clipped variance takes its t = 0 value from t = 1, so a chain needs two steps: one
    step is refused."""
    model = randomize_(tiny("DiT-tiny"), std=0.05).eval()
    z, y = batch(2)
    with pytest.raises(ValueError, match="steps=1 is out of range for ddpm"):
        diffusion.DDPM().sample(model, z, y, steps=1)
