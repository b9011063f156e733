"""
Training objectives and samplers for latent diffusion with DC-AE 1.5, augmented training included.

Paper: Sec. 3.3 (augmented diffusion training, Eq. 2, Fig. 5a), Sec. 4.1 (the four settings),
Tables 2-5.

Three objectives, one per backbone family (models.MODELS[name].objective says which):
  DDPM   DiT:        linear betas 1e-4..0.02, t in {0..999}, eps-prediction + learned-range
                     variance trained by the variational bound (DiT's "hybrid" loss); ancestral
                     sampling respaced to 250 steps.
  EpsSD  UViT:       SD scaled-linear betas, t in {1..1000}, eps-prediction; DPM-Solver "fast"
                     (singlestep, order 3, 30 model evaluations), as U-ViT and DC-Gen evaluate.
  Flow   SiT, USiT:  x_t = t x0 + (1 - t) eps (t = 0 noise, t = 1 data), velocity v = x0 - eps,
                     t ~ U[0, 1]; adaptive dopri5 (SiT's and DC-Gen's evaluation), or Euler /
                     Heun / Euler-Maruyama.

Each has `.loss(model, x0, y, mask=None) -> (loss, terms)` and
`.sample(model, z, y, sampler=None, steps=None, cfg_scale, guidance_interval, mask, generator)`;
`.samplers` maps each sampler to its default steps, the first being the paper's evaluation
protocol, and `.describe(sampler, steps)` says it in words. `mask` is Eq. 1's
ae.channel_mask(c, c'), built by the caller from c' (an int, or one per sample), or None for all c
channels; augment_batch draws the c' of the two ways to combine Eq. 2 with the plain loss:

  "replace"  each sample's c' uniform over the candidates (which include c): the paper's
             literal Eq. 2.
  "extra"    the batch twice, once with c' = c and once with a drawn c'; the loss is the mean of
             the two halves, i.e. the official `always_sample_max_channel` (full-channel loss +
             masked loss) / 2.

    python -m pytest -q tests/test_diffusion.py
    python -c "import ae, diffusion, models, torch; m = models.create_model('USiT-tiny', \
        in_channels=8, input_size=4); print(diffusion.Flow().loss(m, torch.randn(4, 8, 4, 4), \
        torch.zeros(4, dtype=torch.long), mask=ae.channel_mask(8, 4)))"
"""

import math

import numpy as np
import torch
from torchdiffeq import odeint

from ae import sample_c_prime


#################################################################################
#                     Augmented diffusion training (Eq. 2)                       #
#################################################################################

# Augmented diffusion loss (Eq. 2): || eps * mask - eps_theta(x_t * mask, t) * mask ||^2,
# averaged over the kept elements.
def augmented_loss(err, mask):
    """err (N, c, H, W): the per-element squared error of any objective; mask (N or 1, c, 1, 1)
    from channel_mask.

    Mean over each sample's kept elements, then over the batch. Per sample this is the official
    code's loss on x0[:, :c'] (a mean over c' H W elements); equal sample weights make one mixed-c'
    batch equal the mean of separate passes of equal size (tested).
    """
    kept = mask.sum(dim=(1, 2, 3)) * err.shape[2] * err.shape[3]  # (N,) c' H W
    return ((err * mask).sum(dim=(1, 2, 3)) / kept).mean()


def augment_batch(x0, y, candidates, mode, generator=None):
    """Fig. 5a: (x0, y, c_prime), c_prime a CPU tensor (N,) of the c' of each sample, for the
    trainer's Eq. 1 mask channel_mask(c, c_prime) (drawn on the host: no step waits for the
    device).

    mode "off": c_prime None (no mask). "replace": one c' per sample (Eq. 2 as written). "extra":
    the batch twice, the first copy with c' = c and the second with drawn c' - the official
    always_sample_max_channel runs these as two separate passes with their own noise and t; one
    pass over the doubled batch with per-sample masks computes the same loss (augmented_loss gives
    both halves equal weight) at the same cost.
    """
    N, c = x0.shape[:2]
    if mode == "off":
        return x0, y, None
    if max(candidates) > c:
        raise ValueError(f"candidates {candidates} exceed the latent's c={c} channels")
    if mode == "replace":
        return x0, y, sample_c_prime(candidates, N, generator)
    if mode == "extra":
        c_prime = torch.cat([torch.full((N,), c),
                             sample_c_prime(candidates, N, generator)])  # (2N,)
        return torch.cat([x0, x0]), torch.cat([y, y]), c_prime
    raise ValueError(f"mode must be 'off', 'replace' or 'extra', got {mode!r}")


def check_latent(model, x, mask, what="x0"):
    """x (N, c, H, W) must have the model's c channels, and mask (Eq. 1's channel_mask:
    (N or 1, c, 1, 1), or None for all channels) fit it. -> the mask to multiply by: the given one,
    or ones (1, c, 1, 1)."""
    c = getattr(model, "in_channels", x.shape[1])
    if x.ndim != 4 or x.shape[1] != c:
        raise ValueError(f"{what} must be (N, {c}, H, W) for this model, got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(1, c, 1, 1, device=x.device)
    if mask.ndim != 4 or mask.shape[1:] != (c, 1, 1) or mask.shape[0] not in (1, len(x)):
        raise ValueError(f"mask must be (N or 1, {c}, 1, 1) for {what} of shape {tuple(x.shape)} "
                         f"(ae.channel_mask), got {tuple(mask.shape)}")
    return mask.to(x.device, non_blocking=True)  # no wait: channel_mask builds it on the host


#################################################################################
#                          Classifier-free guidance                              #
#################################################################################

def in_interval(level, guidance_interval):
    """Guidance interval (Kynkaanniemi et al.) on the noise level in [0, 1], 1 = pure noise."""
    return guidance_interval is None or guidance_interval[0] <= level <= guidance_interval[1]


def guided_output(model, x, t, y, cfg_scale=1.0, guide=True):
    """model(x, t, y) with classifier-free guidance, t a Python float for the whole batch.

    uncond + s (cond - uncond) on all c latent channels (DC-Gen guides every channel, DiT only its
    first 3); s = 1 is the conditional prediction. A learned-variance half (DiT) is taken from the
    conditional branch.
    """
    N, c = x.shape[:2]
    t_vec = torch.full((N,), float(t), device=x.device)
    if cfg_scale == 1.0 or not guide:
        return model(x, t_vec, y)
    null = torch.full_like(y, model.num_classes)  # the null class the label dropout trained
    # (2N, C_out, H, W)
    out = model(torch.cat([x, x]), torch.cat([t_vec, t_vec]), torch.cat([y, null]))
    cond, uncond = out.chunk(2)
    guided = uncond[:, :c] + cfg_scale * (cond[:, :c] - uncond[:, :c])  # (N, c, H, W)
    return torch.cat([guided, cond[:, c:]], dim=1)


def resolve_sampler(objective, sampler=None, steps=None):
    """(sampler, steps) with the objective's protocol defaults (its first sampler, that sampler's
    steps); a sampler of another objective, steps for an adaptive one or steps out of range raise
    ValueError."""
    sampler = next(iter(objective.samplers)) if sampler is None else sampler
    if sampler not in objective.samplers:
        raise ValueError(f"unknown sampler {sampler!r} for {type(objective).__name__}; "
                         f"choose from {list(objective.samplers)}")
    default = objective.samplers[sampler]
    if default is None and steps is not None:
        raise ValueError(f"sampler {sampler} is adaptive: steps do not apply (got {steps}); "
                         f"fixed steps: {[name for name, n in objective.samplers.items() if n]}")
    steps = default if steps is None else steps
    if steps is not None and not (objective.min_steps.get(sampler, 1) <= steps
                                  <= objective.max_steps.get(sampler, steps)):
        raise ValueError(f"steps={steps} is out of range for {sampler}")
    return sampler, steps


def check_sampling(objective, model, z, mask, sampler, steps):
    """-> (mask, sampler, steps) with the objective's defaults filled in; bad values raise before
    any compute."""
    if getattr(model, "training", False):
        raise ValueError("call model.eval() before sampling: "
                         "label dropout would drop the class condition")
    return (check_latent(model, z, mask, "z"), *resolve_sampler(objective, sampler, steps))


#################################################################################
#                 DDPM with learned variance (DiT, Ho et al. / IDDPM)            #
#################################################################################

def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log-probability of x's bin among 256 bins on [-1, 1] (outer bins open) under N(mean,
    e^(2 log_scale)): DDPM's decoder term L_0. Uses the tanh approximation of the normal CDF, as
    DiT/IDDPM do."""
    def cdf(v):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    inv_std = torch.exp(-log_scale)
    cdf_plus = cdf(inv_std * (x - mean + 1.0 / 255))
    cdf_min = cdf(inv_std * (x - mean - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def gaussian_tables(betas):
    """float64 tables of q(x_t | x0) and the posterior q(x_{t-1} | x_t, x0) for a beta schedule
    (K,)."""
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=betas.dtype), alpha_bar[:-1]])
    post_var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    return dict(
        alpha_bar=alpha_bar,
        log_betas=torch.log(betas),
        # the posterior variance is 0 at t = 0: clip its log to the t = 1 value (IDDPM)
        post_logvar=torch.log(torch.cat([post_var[1:2], post_var[1:]])),
        coef_x0=betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
        coef_xt=(1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar),
    )


def at(table, t, like):
    """table[t] shaped to broadcast against like (N, c, H, W); t an int or a (N,) long tensor."""
    return table.to(like.device)[t].to(torch.float32).reshape(-1, 1, 1, 1)


class DDPM:
    """DiT's objective: eps-prediction MSE + the variational bound for the learned-range
    variance."""

    samplers = {"ddpm": 250}  # DiT's FID protocol: ancestral sampling respaced to 250 steps
    min_steps = {"ddpm": 2}  # IDDPM's clipped variance takes its value at t = 0 from t = 1
    preview = "ddpm"  # the sampler of training-time grids

    def __init__(self, num_steps=1000, beta_start=1e-4, beta_end=0.02):
        self.num_steps = num_steps
        # the respaced chain keeps at most every original step
        self.max_steps = {"ddpm": num_steps}
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.tables = gaussian_tables(self.betas)

    def q_sample(self, x0, t, eps):
        alpha_bar = at(self.tables["alpha_bar"], t, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps

    def p_mean_logvar(self, tables, t, x_t, eps_theta, v):
        """Mean and log-variance of p(x_{t-1} | x_t). Learned range: log var = frac log beta_t +
        (1 - frac) log beta-tilde_t with frac = (v + 1) / 2 (IDDPM Eq. 15)."""
        frac = (v + 1) / 2
        logvar = (frac * at(tables["log_betas"], t, x_t)
                  + (1 - frac) * at(tables["post_logvar"], t, x_t))
        alpha_bar = at(tables["alpha_bar"], t, x_t)
        x0_pred = (x_t - (1 - alpha_bar).sqrt() * eps_theta) / alpha_bar.sqrt()
        mean = at(tables["coef_x0"], t, x_t) * x0_pred + at(tables["coef_xt"], t, x_t) * x_t
        return mean, logvar

    def loss(self, model, x0, y, mask=None, t=None, eps=None, generator=None):
        """(loss, terms) for x0 (N, c, H, W), y (N,); mask: Eq. 1's (N or 1, c, 1, 1) for Eq. 2,
        None for all c channels. t (long, 0..T-1) and eps are drawn unless given
        (tests, variance reduction); the same signature holds for EpsSD and Flow."""
        mask = check_latent(model, x0, mask)
        N, c = x0.shape[:2]
        t = (torch.randint(0, self.num_steps, (N,), generator=generator, device=x0.device)
             if t is None else t)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, t, eps) * mask
        out = model(x_t, t.float(), y).float()  # (N, 2c, H, W)
        if out.shape[1] != 2 * c:
            raise ValueError(f"DDPM needs a learned-sigma model with 2c={2 * c} outputs, "
                             f"got {out.shape[1]}")
        eps_theta, v = out[:, :c], out[:, c:]
        mse = augmented_loss((eps - eps_theta) ** 2, mask)
        # Variational bound, in bits per dim; the mean is detached so it only trains the variance
        # (IDDPM).
        mean, logvar = self.p_mean_logvar(self.tables, t, x_t, eps_theta.detach(), v)
        true_mean = (at(self.tables["coef_x0"], t, x0) * x0
                     + at(self.tables["coef_xt"], t, x0) * x_t)
        kl = normal_kl(true_mean, at(self.tables["post_logvar"], t, x0), mean, logvar)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)
        vb = augmented_loss(torch.where(t.reshape(-1, 1, 1, 1) == 0, nll, kl) / math.log(2.0),
                            mask)
        return mse + vb, {"mse": mse.detach(), "vb": vb.detach()}

    def respaced_timesteps(self, num_steps):
        """The original timesteps kept when sampling with num_steps steps, evenly strided from 0 to
        T - 1 exactly as DiT's space_timesteps(T, [n]) strides them: a running float sum of (T - 1)
        / (n - 1), each rounded (the sum's round-off decides the ties that a direct i (T - 1) /
        (n - 1) would round otherwise, e.g. for n = 21)."""
        if not 2 <= num_steps <= self.num_steps:
            raise ValueError(f"steps={num_steps} is outside [2, {self.num_steps}] (the chain's "
                             f"clipped posterior variance needs two steps)")
        stride, t, kept = (self.num_steps - 1) / (num_steps - 1), 0.0, []
        for _ in range(num_steps):
            kept.append(round(t))
            t += stride
        return kept

    def describe(self, sampler="ddpm", steps=250):
        return f"DDPM ancestral sampling, {steps} respaced steps, learned variance"

    @torch.no_grad()
    def sample(self, model, z, y, sampler=None, steps=None,
               cfg_scale=1.0, guidance_interval=None, mask=None, generator=None):
        """Ancestral sampling on the respaced chain; z (N, c, H, W) is the initial noise."""
        mask, sampler, steps = check_sampling(self, model, z, mask, sampler, steps)
        c = z.shape[1]
        use = self.respaced_timesteps(steps)
        alpha_bar = self.tables["alpha_bar"][use]
        tables = gaussian_tables(1 - alpha_bar / torch.cat([torch.ones(1, dtype=alpha_bar.dtype),
                                                            alpha_bar[:-1]]))
        x = z * mask
        for i in reversed(range(steps)):
            guide = in_interval(use[i] / self.num_steps, guidance_interval)
            # the model sees original t
            out = guided_output(model, x, use[i], y, cfg_scale, guide).float()
            mean, logvar = self.p_mean_logvar(tables, i, x, out[:, :c], out[:, c:])
            if i > 0:
                mean = mean + torch.exp(0.5 * logvar) * torch.randn(z.shape, generator=generator,
                                                                    device=z.device)
            x = mean * mask  # partial-channel generation: dropped channels stay exactly zero
        return x


#################################################################################
#             eps-prediction with SD betas and DPM-Solver "fast" (UViT)          #
#################################################################################

def fast_orders(num_steps):
    """DPM-Solver "fast" with order 3: singlestep updates of order 3, 3, ..., ending in (2, 1), (1)
    or (2), so that the orders add up to num_steps model evaluations (U-ViT's dpm_solver_pp.py; 30
    -> [3] * 9 + [2, 1])."""
    K = num_steps // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[num_steps % 3]
    return [3] * (K - len(tail)) + tail


class EpsSD:
    """U-ViT's latent objective: alpha-bar_n from SD's scaled-linear betas, n ~ U{1..N}, MSE on
    eps."""

    samplers = {"dpm-solver": 30}  # U-ViT / DC-Gen: DPM-Solver "fast", 30 model evaluations
    min_steps, max_steps = {}, {}
    preview = "dpm-solver"

    def __init__(self, num_steps=1000):
        self.num_steps = num_steps
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, num_steps, dtype=torch.float64) ** 2
        # alpha_bar[n - 1] = alpha-bar_n, n = 1..N
        self.alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        # DPM-Solver's discrete schedule: log alpha at the knots t = n / N, piecewise linear in t
        # between them.
        self.knots = np.arange(1, num_steps + 1) / num_steps
        self.log_alpha = 0.5 * np.log(self.alpha_bar.numpy())

    def q_sample(self, x0, n, eps):
        alpha_bar = at(self.alpha_bar, n - 1, x0)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps

    def loss(self, model, x0, y, mask=None, t=None, eps=None, generator=None):
        """As DDPM.loss; t here is the step n in 1..N (long), fed to the model as is."""
        mask = check_latent(model, x0, mask)
        N, c = x0.shape[:2]
        n = (torch.randint(1, self.num_steps + 1, (N,), generator=generator, device=x0.device)
             if t is None else t)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, n, eps) * mask
        eps_theta = model(x_t, n.float(), y)[:, :c].float()
        mse = augmented_loss((eps - eps_theta) ** 2, mask)
        return mse, {"mse": mse.detach()}

    def alpha_sigma_lambda(self, t):
        """alpha_t, sigma_t and lambda_t = log(alpha_t / sigma_t) at continuous t in [1/N, 1]."""
        log_alpha = float(np.interp(t, self.knots, self.log_alpha))
        alpha, sigma = math.exp(log_alpha), math.sqrt(-math.expm1(2 * log_alpha))
        return alpha, sigma, log_alpha - math.log(sigma)

    def t_of_lambda(self, lam):
        """The inverse of lambda_t: log alpha = -log(1 + e^(-2 lambda)) / 2, then t by the same
        interpolation."""
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lam)
        # log alpha falls with t
        return float(np.interp(log_alpha, self.log_alpha[::-1], self.knots[::-1]))

    def describe(self, sampler="dpm-solver", steps=30):
        return (f"DPM-Solver fast (singlestep, order 3, data prediction, time-uniform "
                f"t 1 -> {1 / self.num_steps:g}), {steps} model evaluations, SD betas")

    @torch.no_grad()
    def sample(self, model, z, y, sampler=None, steps=None,
               cfg_scale=1.0, guidance_interval=None, mask=None, generator=None):
        """DPM-Solver "fast" (Lu et al. 2022) with data prediction, as U-ViT and DC-Gen evaluate: a
        time-uniform grid of steps + 1 points from t = 1 to 1/N, walked in singlestep updates of
        order 3 (fast_orders) whose intermediate points are the grid points in between, so the
        model runs exactly `steps` times. Deterministic (`generator` is accepted for a uniform
        interface)."""
        mask, sampler, steps = check_sampling(self, model, z, mask, sampler, steps)
        c = z.shape[1]

        def x0_theta(x, t):  # data prediction D = (x - sigma_t eps_theta) / alpha_t, masked like x
            alpha, sigma, _ = self.alpha_sigma_lambda(t)
            guide = in_interval(t, guidance_interval)
            eps_theta = guided_output(model, x, t * self.num_steps, y,
                                      cfg_scale, guide)[:, :c].float()
            return (x - sigma * eps_theta) / alpha * mask

        grid = np.linspace(1.0, 1.0 / self.num_steps, steps + 1)
        x, i = z * mask, 0
        for order in fast_orders(steps):
            lam = [self.alpha_sigma_lambda(t)[2] for t in grid[i:i + order + 1]]
            # the grid points in between
            r = [(lam[k] - lam[0]) / (lam[-1] - lam[0]) for k in range(1, order)]
            x, i = self.update(x, grid[i], grid[i + order], r, x0_theta), i + order
        return x

    def update(self, x, s, t, r, x0_theta):
        """One singlestep DPM-Solver update from time s to t < s of order len(r) + 1, data
        prediction (U-ViT's dpm_solver_pp.py, solver_type "dpm_solver"). r: the intermediate points
        as fractions of h = lambda_t - lambda_s (r1, or r1 < r2). The order-3 update integrates
        data predictions linear in lambda exactly."""
        (_, sig_s, lam_s), (a_t, sig_t, lam_t) = (self.alpha_sigma_lambda(s),
                                                  self.alpha_sigma_lambda(t))
        h = lam_t - lam_s
        D_s = x0_theta(x, s)
        phi_1 = math.expm1(-h)
        x_t = (sig_t / sig_s) * x - a_t * phi_1 * D_s  # first order (= DDIM)
        if not r:
            return x_t
        s1 = self.t_of_lambda(lam_s + r[0] * h)
        a_s1, sig_s1, _ = self.alpha_sigma_lambda(s1)
        D_s1 = x0_theta((sig_s1 / sig_s) * x - a_s1 * math.expm1(-r[0] * h) * D_s, s1)
        if len(r) == 1:
            return x_t - (0.5 / r[0]) * a_t * phi_1 * (D_s1 - D_s)
        r1, r2 = r
        s2 = self.t_of_lambda(lam_s + r2 * h)
        a_s2, sig_s2, _ = self.alpha_sigma_lambda(s2)
        phi_22 = math.expm1(-r2 * h) / (r2 * h) + 1
        x_s2 = ((sig_s2 / sig_s) * x - a_s2 * math.expm1(-r2 * h) * D_s
                + (r2 / r1) * a_s2 * phi_22 * (D_s1 - D_s))
        D_s2 = x0_theta(x_s2, s2)
        phi_2 = phi_1 / h + 1
        return x_t + (1 / r2) * a_t * phi_2 * (D_s2 - D_s)  # D_s1 enters only through x_s2


#################################################################################
#                Flow matching, linear interpolant (SiT, USiT)                   #
#################################################################################

class Flow:
    """x_t = t x0 + (1 - t) eps, v = dx_t/dt = x0 - eps; the model sees t in [0, 1] unscaled
    (SiT)."""

    # SiT / DC-Gen evaluation: adaptive dopri5 (no fixed steps); the fixed-step samplers default to
    # 250 steps.
    samplers = {"dopri5": None, "euler": 250, "heun": 250, "euler_maruyama": 250}
    min_steps, max_steps = {"euler_maruyama": 2}, {}
    preview = "euler"
    atol, rtol = 1e-6, 1e-3  # SiT's sample_ode defaults, used by DC-Gen

    def q_sample(self, x0, t, eps):
        t = t.reshape(-1, 1, 1, 1)
        return t * x0 + (1 - t) * eps

    def loss(self, model, x0, y, mask=None, t=None, eps=None, generator=None):
        mask = check_latent(model, x0, mask)
        N, c = x0.shape[:2]
        t = torch.rand(N, generator=generator, device=x0.device) if t is None else t
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, t, eps) * mask
        v_theta = model(x_t, t, y)[:, :c].float()
        # Eq. 2 with the velocity as the target
        mse = augmented_loss((x0 - eps - v_theta) ** 2, mask)
        return mse, {"mse": mse.detach()}

    def describe(self, sampler="dopri5", steps=None):
        if sampler == "dopri5":
            tol = lambda v: f"{v:.0e}".replace("e-0", "e-")  # noqa: E731  1e-06 -> 1e-6
            return f"dopri5 atol {tol(self.atol)} rtol {tol(self.rtol)} (adaptive), t 0 -> 1"
        return f"{sampler} {steps} steps, t 0 -> 1"

    @torch.no_grad()
    def sample(self, model, z, y, sampler=None, steps=None,
               cfg_scale=1.0, guidance_interval=None, mask=None, generator=None,
               last_step_size=0.04):
        """Integrate from t = 0 (z, noise) to t = 1 (data).

        dopri5: torchdiffeq's adaptive Dormand-Prince with SiT's tolerances. The official call asks
        for 250 output points (linspace(0, 1, 250)); they do not move the adaptive steps, so asking
        for [0, 1] gives the same end point bit for bit (tested) without holding 250 copies of the
        batch. euler / heun: `steps` uniform steps (heun: 2 evaluations per step). euler_maruyama:
        SiT's SDE with diffusion w(t) = 1 - t: `steps` points on [0, 1 - last_step_size], then a
        noise-free "mean" step of size last_step_size.
        """
        mask, sampler, steps = check_sampling(self, model, z, mask, sampler, steps)
        c = z.shape[1]

        def velocity(x, t):
            guide = in_interval(1.0 - t, guidance_interval)
            return guided_output(model, x, t, y, cfg_scale, guide)[:, :c].float() * mask

        x = z * mask
        if sampler == "dopri5":
            ends = torch.tensor([0.0, 1.0], device=z.device)
            return odeint(lambda t, x: velocity(x, float(t)), x, ends,
                          method="dopri5", atol=self.atol, rtol=self.rtol)[-1]
        if sampler in ("euler", "heun"):
            ts = [i / steps for i in range(steps + 1)]
            for t0, t1 in zip(ts[:-1], ts[1:]):
                d = velocity(x, t0)
                if sampler == "euler":
                    x = x + (t1 - t0) * d
                else:  # Heun: trapezoid of the slopes at both ends of the Euler step
                    x = x + (t1 - t0) / 2 * (d + velocity(x + (t1 - t0) * d, t1))
            return x
        assert sampler == "euler_maruyama"  # check_sampling admits only this objective's samplers

        # Euler-Maruyama on SiT's SDE: dx = [v + w(t) score] dt + sqrt(2 w(t)) dW, w(t) = 1 - t;
        # the score from the velocity for this path:
        # score = (t v - x) / (1 - t) = -eps_hat / sigma_t.
        def drift(x, t):
            v = velocity(x, t)
            score = (t * v - x) / (1 - t)
            return v + (1 - t) * score
        t_end = 1.0 - last_step_size
        ts = [t_end * i / (steps - 1) for i in range(steps)]
        for t0, t1 in zip(ts[:-1], ts[1:]):
            noise = torch.randn(z.shape, generator=generator, device=z.device) * mask
            x = x + drift(x, t0) * (t1 - t0) + math.sqrt(2 * (1 - t0) * (t1 - t0)) * noise
        return x + drift(x, t_end) * last_step_size


#################################################################################
#                                   Registry                                     #
#################################################################################

OBJECTIVES = {"ddpm": DDPM, "eps": EpsSD, "flow": Flow}


def make_objective(name):
    """"ddpm" | "eps" | "flow" (models.MODELS[name].objective) -> an objective with .loss and
    .sample."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]()
