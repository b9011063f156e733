"""
Training objectives and samplers for latent diffusion with DC-AE 1.5, including augmented diffusion training.

Paper: Sec. 3.3 (augmented diffusion training, Eq. 2, Fig. 5a), Sec. 4.1 (the four settings), Tables 2-5.

Three objectives, one per backbone family (models.objective_of(name) says which):
  DDPM   DiT:        linear betas 1e-4..0.02, t in {0..999}, eps-prediction + learned-range variance trained by
                     the variational bound (DiT's "hybrid" loss); ancestral sampling respaced to 250 steps.
  EpsSD  UViT:       SD scaled-linear betas, t in {1..1000}, eps-prediction; DPM-Solver++ (2M) sampling.
  Flow   SiT, USiT:  x_t = t x0 + (1 - t) eps (t = 0 noise, t = 1 data), velocity v = x0 - eps, t ~ U[0, 1];
                     Euler / Heun ODE, Euler-Maruyama SDE, dopri5 (only if torchdiffeq is installed).

Each has `.loss(model, x0, y, c_prime=None) -> (loss, terms)` and `.sample(model, z, y, steps, cfg_scale,
guidance_interval, c_prime, generator)`. c_prime (c') is None (plain loss), an int, or a per-sample (N,)
tensor; sample_c_prime / augment_batch draw it for the two ways to combine Eq. 2 with the plain loss:

  "replace"  each sample's c' uniform over the candidates (which include c): the paper's literal Eq. 2.
  "extra"    the batch twice, once with c' = c and once with a drawn c'; the loss is the mean of the two
             halves, i.e. the official `always_sample_max_channel` (full-channel loss + masked loss) / 2.

    python -m pytest -q tests/test_diffusion.py
    python -c "import diffusion, models, torch; m = models.create_model('USiT-tiny', in_channels=8, input_size=4); \
print(diffusion.Flow().loss(m, torch.randn(4, 8, 4, 4), torch.zeros(4, dtype=torch.long), c_prime=4))"
"""

import math

import torch


#################################################################################
#                   Channel mask and augmented diffusion training                #
#################################################################################

# Channel mask (Eq. 1), one row per sample.
def channel_mask(c_prime, x):
    """mask (N, c, 1, 1) keeping the first c' channels of x (N, c, H, W); c_prime None, int, or (N,) tensor."""
    N, c = x.shape[:2]
    if c_prime is None:
        c_prime = torch.full((N,), c)
    elif isinstance(c_prime, int):
        if not 1 <= c_prime <= c:
            raise ValueError(f"c_prime={c_prime} is outside [1, c={c}]")
        c_prime = torch.full((N,), c_prime)
    elif isinstance(c_prime, torch.Tensor):
        if c_prime.shape != (N,) or c_prime.is_floating_point():
            raise ValueError(f"c_prime must be an integer tensor of shape ({N},), got {c_prime.dtype} "
                             f"{tuple(c_prime.shape)}")
        if c_prime.min() < 1 or c_prime.max() > c:  # a host sync, negligible next to a training step
            raise ValueError(f"c_prime values {c_prime.tolist()} are outside [1, c={c}]")
    else:
        raise ValueError(f"c_prime must be None, an int or a tensor, got {type(c_prime).__name__}")
    mask = torch.arange(c, device=x.device) < c_prime.to(x.device)[:, None]  # (N, c)
    return mask.to(x.dtype)[:, :, None, None]  # (N, c, 1, 1)


def masked_mean(err, mask):
    """Mean over each sample's kept elements, then over the batch (err (N, c, H, W), mask (N, c, 1, 1)).

    Per sample this is the official code's loss on x0[:, :c'] (a mean over N c' H W elements); averaging
    samples with equal weight makes one mixed-c' batch equal the mean of separate passes of equal size.
    """
    kept = mask.sum(dim=(1, 2, 3)) * err.shape[2] * err.shape[3]  # (N,) c' H W
    return ((err * mask).sum(dim=(1, 2, 3)) / kept).mean()


def sample_c_prime(n, candidates, generator=None, device=None):
    """(n,) long tensor, each entry uniform over `candidates` (e.g. ae.channel_candidates(c, 16, 4))."""
    if len(candidates) == 0 or min(candidates) < 1:
        raise ValueError(f"candidates must be a non-empty list of positive channel counts, got {candidates}")
    idx = torch.randint(len(candidates), (n,), generator=generator, device=device)  # (n,)
    return torch.tensor(candidates, device=device)[idx]


def augment_batch(x0, y, candidates, mode, generator=None):
    """Augmented diffusion training (Sec. 3.3): (x0, y, c_prime) for the objectives' loss.

    mode "none": c_prime None. "replace": one c' per sample (Eq. 2 as written). "extra": the batch twice,
    the first copy with c' = c and the second with drawn c' - the official always_sample_max_channel runs
    these as two separate passes with their own noise and t; one pass over the doubled batch with
    per-sample masks computes the same loss (masked_mean gives both halves equal weight) at the same cost.
    """
    N, c = x0.shape[:2]
    if mode == "none":
        return x0, y, None
    if max(candidates) > c:
        raise ValueError(f"candidates {candidates} exceed the latent's c={c} channels")
    if mode == "replace":
        return x0, y, sample_c_prime(N, candidates, generator, x0.device)
    if mode == "extra":
        c_prime = torch.cat([torch.full((N,), c, device=x0.device),
                             sample_c_prime(N, candidates, generator, x0.device)])  # (2N,)
        return torch.cat([x0, x0]), torch.cat([y, y]), c_prime
    raise ValueError(f"mode must be 'none', 'replace' or 'extra', got {mode!r}")


def _check(model, x0, c_prime):
    c = getattr(model, "in_channels", x0.shape[1])
    if x0.ndim != 4 or x0.shape[1] != c:
        raise ValueError(f"x0 must be (N, {c}, H, W) for this model, got {tuple(x0.shape)}")
    return channel_mask(c_prime, x0)


#################################################################################
#                          Classifier-free guidance                              #
#################################################################################

def _in_interval(level, guidance_interval):
    """Guidance interval (Kynkaanniemi et al.) on the noise level in [0, 1], 1 = pure noise."""
    return guidance_interval is None or guidance_interval[0] <= level <= guidance_interval[1]


def guided_output(model, x, t, y, cfg_scale=1.0, guide=True):
    """model(x, t, y) with classifier-free guidance, t a Python float for the whole batch.

    uncond + s (cond - uncond) on all c latent channels (DC-AE guides every channel, DiT only its first 3);
    s = 1 is the conditional prediction. A learned-variance half (DiT) is taken from the conditional branch.
    """
    N, c = x.shape[:2]
    t_vec = torch.full((N,), float(t), device=x.device)
    if cfg_scale == 1.0 or not guide:
        return model(x, t_vec, y)
    null = torch.full_like(y, model.num_classes)  # the null class the label dropout trained
    out = model(torch.cat([x, x]), torch.cat([t_vec, t_vec]), torch.cat([y, null]))  # (2N, C_out, H, W)
    cond, uncond = out.chunk(2)
    guided = uncond[:, :c] + cfg_scale * (cond[:, :c] - uncond[:, :c])  # (N, c, H, W)
    return torch.cat([guided, cond[:, c:]], dim=1)


def _check_sampling(model, z):
    if getattr(model, "training", False):
        raise ValueError("call model.eval() before sampling: label dropout would drop the class condition")
    if z.ndim != 4 or z.shape[1] != getattr(model, "in_channels", z.shape[1]):
        raise ValueError(f"z must be (N, {model.in_channels}, H, W), got {tuple(z.shape)}")


#################################################################################
#                 DDPM with learned variance (DiT, Ho et al. / IDDPM)            #
#################################################################################

def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) per element, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log-probability of x's bin among 256 bins on [-1, 1] (outer bins open) under N(mean, e^(2 log_scale)):
    DDPM's decoder term L_0. Uses the tanh approximation of the normal CDF, as DiT/IDDPM do."""
    def cdf(v):
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    inv_std = torch.exp(-log_scale)
    cdf_plus = cdf(inv_std * (x - mean + 1.0 / 255))
    cdf_min = cdf(inv_std * (x - mean - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _gaussian_tables(betas):
    """float64 tables of q(x_t | x0) and the posterior q(x_{t-1} | x_t, x0) for a beta schedule (K,)."""
    ab = torch.cumprod(1.0 - betas, dim=0)  # alpha-bar_t
    ab_prev = torch.cat([torch.ones(1, dtype=betas.dtype), ab[:-1]])
    post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
    return dict(
        ab=ab,
        log_betas=torch.log(betas),
        # the posterior variance is 0 at t = 0: clip its log to the t = 1 value (IDDPM)
        post_logvar=torch.log(torch.cat([post_var[1:2], post_var[1:]])),
        coef_x0=betas * ab_prev.sqrt() / (1.0 - ab),
        coef_xt=(1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab),
    )


def _at(table, t, like):
    """table[t] shaped to broadcast against like (N, c, H, W); t an int or a (N,) long tensor."""
    return table.to(like.device)[t].to(torch.float32).reshape(-1, 1, 1, 1)


class DDPM:
    """DiT's objective: eps-prediction MSE + the variational bound for the learned-range variance."""

    def __init__(self, num_steps=1000, beta_start=1e-4, beta_end=0.02):
        self.T = num_steps
        self.betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        self.tab = _gaussian_tables(self.betas)

    def q_sample(self, x0, t, eps):
        ab = _at(self.tab["ab"], t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def p_mean_logvar(self, tab, t, x_t, eps_theta, v):
        """Mean and log-variance of p(x_{t-1} | x_t). Learned range: log var = frac log beta_t +
        (1 - frac) log beta-tilde_t with frac = (v + 1) / 2 (IDDPM Eq. 15)."""
        frac = (v + 1) / 2
        logvar = frac * _at(tab["log_betas"], t, x_t) + (1 - frac) * _at(tab["post_logvar"], t, x_t)
        ab = _at(tab["ab"], t, x_t)
        x0_pred = (x_t - (1 - ab).sqrt() * eps_theta) / ab.sqrt()
        mean = _at(tab["coef_x0"], t, x_t) * x0_pred + _at(tab["coef_xt"], t, x_t) * x_t
        return mean, logvar

    def loss(self, model, x0, y, c_prime=None, t=None, eps=None, generator=None):
        """(loss, terms) for x0 (N, c, H, W), y (N,); c_prime None / int / (N,) (Eq. 2). t (long, 0..T-1) and eps
        are drawn unless given (tests, variance reduction); the same signature holds for EpsSD and Flow."""
        mask = _check(model, x0, c_prime)  # (N, c, 1, 1)
        N, c = x0.shape[:2]
        t = torch.randint(0, self.T, (N,), generator=generator, device=x0.device) if t is None else t
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, t, eps) * mask
        out = model(x_t, t.float(), y).float()  # (N, 2c, H, W)
        if out.shape[1] != 2 * c:
            raise ValueError(f"DDPM needs a learned-sigma model with 2c={2 * c} outputs, got {out.shape[1]}")
        eps_theta, v = out[:, :c], out[:, c:]
        # Augmented diffusion loss (Eq. 2): masked eps, masked input, masked output.
        mse = masked_mean((eps - eps_theta) ** 2, mask)
        # Variational bound, in bits per dim; the mean is detached so it only trains the variance (IDDPM).
        mean, logvar = self.p_mean_logvar(self.tab, t, x_t, eps_theta.detach(), v)
        true_mean = _at(self.tab["coef_x0"], t, x0) * x0 + _at(self.tab["coef_xt"], t, x0) * x_t
        kl = normal_kl(true_mean, _at(self.tab["post_logvar"], t, x0), mean, logvar)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)
        vb = masked_mean(torch.where(t.reshape(-1, 1, 1, 1) == 0, nll, kl) / math.log(2.0), mask)
        return mse + vb, {"mse": mse.detach(), "vb": vb.detach()}

    def respaced_timesteps(self, steps):
        """The original timesteps kept when sampling with `steps` steps, evenly strided from 0 to T - 1."""
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps={steps} is outside [1, {self.T}]")
        if steps == 1:
            return [0]
        return [round(i * (self.T - 1) / (steps - 1)) for i in range(steps)]

    @torch.no_grad()
    def sample(self, model, z, y, steps=250, cfg_scale=1.0, guidance_interval=None, c_prime=None, generator=None):
        """Ancestral sampling on the respaced chain; z (N, c, H, W) is the initial noise."""
        _check_sampling(model, z)
        mask = channel_mask(c_prime, z)
        c = z.shape[1]
        use = self.respaced_timesteps(steps)
        ab = self.tab["ab"][use]
        tab = _gaussian_tables(1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]]))  # respaced betas
        x = z * mask
        for i in reversed(range(steps)):
            guide = _in_interval(use[i] / self.T, guidance_interval)
            out = guided_output(model, x, use[i], y, cfg_scale, guide).float()  # the model sees original t
            mean, logvar = self.p_mean_logvar(tab, i, x, out[:, :c], out[:, c:])
            if i > 0:
                mean = mean + torch.exp(0.5 * logvar) * torch.randn(z.shape, generator=generator, device=z.device)
            x = mean * mask  # partial-channel generation: dropped channels stay exactly zero
        return x


#################################################################################
#              eps-prediction with SD betas and DPM-Solver++ (UViT)              #
#################################################################################

class EpsSD:
    """U-ViT's latent objective: alpha-bar_n from SD's scaled-linear betas, n ~ U{1..N}, MSE on eps."""

    def __init__(self, num_steps=1000):
        self.N = num_steps
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, num_steps, dtype=torch.float64) ** 2
        self.ab = torch.cumprod(1.0 - betas, dim=0)  # ab[n - 1] = alpha-bar_n, n = 1..N
        self.log_alpha = (0.5 * torch.log(self.ab)).tolist()  # at continuous times n / N

    def q_sample(self, x0, n, eps):
        ab = _at(self.ab, n - 1, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def loss(self, model, x0, y, c_prime=None, t=None, eps=None, generator=None):
        """As DDPM.loss; t here is the step n in 1..N (long)."""
        mask = _check(model, x0, c_prime)  # (N, c, 1, 1)
        N, c = x0.shape[:2]
        n = torch.randint(1, self.N + 1, (N,), generator=generator, device=x0.device) if t is None else t
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, n, eps) * mask
        eps_theta = model(x_t, n.float(), y)[:, :c].float()
        mse = masked_mean((eps - eps_theta) ** 2, mask)  # Augmented diffusion loss (Eq. 2).
        return mse, {"mse": mse.detach()}

    def alpha_sigma_lambda(self, s):
        """alpha_s, sigma_s, lambda_s = log(alpha/sigma) at continuous s in [1/N, 1]: log alpha linearly
        interpolated between the discrete steps (DPM-Solver's discrete NoiseScheduleVP)."""
        pos = min(max(s * self.N - 1, 0.0), self.N - 1.0)
        lo = min(int(pos), self.N - 2)
        log_alpha = self.log_alpha[lo] + (pos - lo) * (self.log_alpha[lo + 1] - self.log_alpha[lo])
        alpha = math.exp(log_alpha)
        sigma = math.sqrt(1.0 - alpha ** 2)
        return alpha, sigma, log_alpha - math.log(sigma)

    @torch.no_grad()
    def sample(self, model, z, y, steps=30, cfg_scale=1.0, guidance_interval=None, c_prime=None, generator=None):
        """DPM-Solver++(2M), data prediction, time-uniform steps from s = 1 to 1/N (no stochasticity:
        `generator` is accepted for a uniform interface). U-ViT/DC-AE use the same solver family (their
        default is the singlestep 3rd-order variant; 2M is the common multistep one)."""
        _check_sampling(model, z)
        mask = channel_mask(c_prime, z)
        c = z.shape[1]
        ts = [1.0 + (1.0 / self.N - 1.0) * i / steps for i in range(steps + 1)]
        x, x0_prev, h_prev = z * mask, None, None
        for i in range(steps):
            a_s, sig_s, lam_s = self.alpha_sigma_lambda(ts[i])
            a_t, sig_t, lam_t = self.alpha_sigma_lambda(ts[i + 1])
            guide = _in_interval(ts[i], guidance_interval)
            eps_theta = guided_output(model, x, ts[i] * self.N, y, cfg_scale, guide)[:, :c].float()
            x0_theta = (x - sig_s * eps_theta) / a_s
            h = lam_t - lam_s
            if x0_prev is None or (i == steps - 1 and steps < 15):
                D = x0_theta  # first-order (DPM-Solver++1 = DDIM) on the first and, for short runs, last step
            else:
                r = h_prev / h
                D = (1 + 1 / (2 * r)) * x0_theta - (1 / (2 * r)) * x0_prev
            x = ((sig_t / sig_s) * x - a_t * math.expm1(-h) * D) * mask
            x0_prev, h_prev = x0_theta, h
        return x


#################################################################################
#                Flow matching, linear interpolant (SiT, USiT)                   #
#################################################################################

class Flow:
    """x_t = t x0 + (1 - t) eps, v = dx_t/dt = x0 - eps; the model sees t in [0, 1] unscaled (SiT)."""

    def q_sample(self, x0, t, eps):
        t = t.reshape(-1, 1, 1, 1)
        return t * x0 + (1 - t) * eps

    def loss(self, model, x0, y, c_prime=None, t=None, eps=None, generator=None):
        mask = _check(model, x0, c_prime)  # (N, c, 1, 1)
        N, c = x0.shape[:2]
        t = torch.rand(N, generator=generator, device=x0.device) if t is None else t
        eps = torch.randn(x0.shape, generator=generator, device=x0.device) if eps is None else eps
        x_t = self.q_sample(x0, t, eps) * mask
        v_theta = model(x_t, t, y)[:, :c].float()
        mse = masked_mean((x0 - eps - v_theta) ** 2, mask)  # Augmented diffusion loss (Eq. 2), v-target.
        return mse, {"mse": mse.detach()}

    @torch.no_grad()
    def sample(self, model, z, y, steps=250, cfg_scale=1.0, guidance_interval=None, c_prime=None, generator=None,
               method="euler", last_step_size=0.04, atol=1e-6, rtol=1e-3):
        """Integrate from t = 0 (z, noise) to t = 1 (data).

        euler / heun: `steps` uniform steps (heun: 2 evaluations per step). euler_maruyama: SiT's SDE with
        diffusion w(t) = 1 - t: `steps` points on [0, 1 - last_step_size], then a noise-free "mean" step of
        size last_step_size. dopri5: adaptive, SiT's default; needs torchdiffeq (optional).
        """
        _check_sampling(model, z)
        if method not in ("euler", "heun", "euler_maruyama", "dopri5"):
            raise ValueError(f"unknown flow sampler {method!r}")
        if steps < 1 or (method == "euler_maruyama" and steps < 2):
            raise ValueError(f"steps={steps} is too few for {method}")
        mask = channel_mask(c_prime, z)
        c = z.shape[1]

        def velocity(x, t):
            guide = _in_interval(1.0 - t, guidance_interval)
            return guided_output(model, x, t, y, cfg_scale, guide)[:, :c].float() * mask

        x = z * mask
        if method in ("euler", "heun"):
            ts = [i / steps for i in range(steps + 1)]
            for t0, t1 in zip(ts[:-1], ts[1:]):
                d = velocity(x, t0)
                if method == "euler":
                    x = x + (t1 - t0) * d
                else:  # Heun: trapezoid of the slopes at both ends of the Euler step
                    x = x + (t1 - t0) / 2 * (d + velocity(x + (t1 - t0) * d, t1))
        elif method == "euler_maruyama":
            def drift(x, t):
                # dx = [v + w(t) score] dt + sqrt(2 w(t)) dW; score from the velocity for this path:
                # score = (t v - x) / (1 - t) = -eps_hat / sigma_t.
                v = velocity(x, t)
                score = (t * v - x) / (1 - t)
                return v + (1 - t) * score
            t_end = 1.0 - last_step_size
            ts = [t_end * i / (steps - 1) for i in range(steps)]
            for t0, t1 in zip(ts[:-1], ts[1:]):
                noise = torch.randn(z.shape, generator=generator, device=z.device) * mask
                x = x + drift(x, t0) * (t1 - t0) + math.sqrt(2 * (1 - t0) * (t1 - t0)) * noise
            x = x + drift(x, t_end) * last_step_size
        else:
            try:
                from torchdiffeq import odeint
            except ImportError as e:
                raise ImportError("method='dopri5' needs torchdiffeq (pip install torchdiffeq); "
                                  "use 'heun' or 'euler' otherwise") from e
            ts = torch.tensor([0.0, 1.0], device=z.device)
            x = odeint(lambda t, x: velocity(x, float(t)), x, ts, method="dopri5", atol=atol, rtol=rtol)[-1]
        return x


#################################################################################
#                                   Registry                                     #
#################################################################################

OBJECTIVES = {"ddpm": DDPM, "eps": EpsSD, "flow": Flow}


def make_objective(name):
    """"ddpm" | "eps" | "flow" (models.objective_of(model_name)) -> an objective with .loss and .sample."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose from {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]()
