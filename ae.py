"""DC-AE autoencoders with the structured latent space of DC-AE 1.5
(paper Sec. 3.2, Eq. 1, Fig. 3-4).

A deep compression autoencoder maps an image x (N, 3, H, W) in [-1, 1] to a latent
z (N, c, H/f, W/f) and back. DC-AE 1.5 trains it to reconstruct from the first c' latent channels
only (the channel mask of Eq. 1), so that the front channels carry object structure and the later
ones add detail (Fig. 3). In reading order: building blocks -> Encoder / Decoder -> channel mask
(Eq. 1) -> DCAE -> latent scaling -> the registry. The loss (L1, LPIPS, GAN) is in ae_loss.py;
released weights load through checkpoints.py. Module names mirror diffusers' `AutoencoderDC`, so
its state dicts load as they are.

    python ae.py   # parameter counts of every registry entry (meta device)
    python -c "import ae, torch; m = ae.build_ae('dc-ae-f8c64-tiny'); \
        print(m.encode(torch.zeros(1, 3, 32, 32)).shape)"
"""
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

class RMSNorm2d(nn.Module):
    """RMSNorm over the channel dimension with weight and bias (DC-AE's `trms2d`), in fp32."""

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):  # (N, C, H, W)
        # Normalising over dim 1 directly avoids the two transposes of a last-dim RMSNorm.
        h = x.float()
        # (N, C, H, W) / (N, 1, H, W)
        h = h * torch.rsqrt(h.pow(2).mean(1, keepdim=True) + self.eps)
        h = torch.addcmul(self.bias.float()[:, None, None], h, self.weight.float()[:, None, None])
        return h.to(x.dtype)


def make_norm(kind, channels):
    # "bn": DC-AE 1.0 decoder
    return RMSNorm2d(channels) if kind == "rms" else nn.BatchNorm2d(channels)


def make_act(kind):
    return nn.SiLU() if kind == "silu" else nn.ReLU()


class ResBlock(nn.Module):
    """x + Norm(Conv3x3_nobias(Act(Conv3x3_bias(x))))."""

    def __init__(self, channels, norm="rms", act="silu"):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.nonlinearity = make_act(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = make_norm(norm, channels)

    def forward(self, x):
        return x + self.norm(self.conv2(self.nonlinearity(self.conv1(x))))


class DownBlock(nn.Module):
    """Halve H and W: a conv3x3 to c_out / 4 channels + pixel-unshuffle (DC-AE 1.0 / 1.5), or a
    stride-2 conv3x3 to c_out (SANA's "conv"), plus a free residual: a space-to-channel shortcut
    that pixel-unshuffles the input and averages groups of channels down to c_out."""

    def __init__(self, c_in, c_out, shortcut=True, mode="pixel_unshuffle"):
        super().__init__()
        self.mode, self.shortcut, self.group = mode, shortcut, 4 * c_in // c_out
        pixel = mode == "pixel_unshuffle"
        self.conv = (nn.Conv2d(c_in, c_out // 4, 3, 1, 1) if pixel
                     else nn.Conv2d(c_in, c_out, 3, 2, 1))  # stride 2

    def forward(self, x):  # (N, c_in, H, W)
        h = self.conv(x)  # (N, c_out / 4, H, W), or (N, c_out, H/2, W/2) for "conv"
        if self.mode == "pixel_unshuffle":
            h = F.pixel_unshuffle(h, 2)  # (N, c_out, H/2, W/2)
        if self.shortcut:
            s = F.pixel_unshuffle(x, 2)  # (N, 4 c_in, H/2, W/2)
            s = s.unflatten(1, (-1, self.group)).mean(2)  # (N, c_out, H/2, W/2)
            h = h + s
        return h


class UpBlock(nn.Module):
    """Double H and W: a conv3x3 to 4 c_out channels + pixel-shuffle (DC-AE 1.0 / 1.5), or nearest
    upsampling then a conv3x3 to c_out (SANA's "interpolate"), plus a shortcut that duplicates
    channels and pixel-shuffles them (the mirror of DownBlock's averaging shortcut)."""

    def __init__(self, c_in, c_out, shortcut=True, mode="pixel_shuffle"):
        super().__init__()
        self.mode, self.shortcut, self.repeats = mode, shortcut, 4 * c_out // c_in
        self.conv = nn.Conv2d(c_in, 4 * c_out if mode == "pixel_shuffle" else c_out, 3, 1, 1)

    def forward(self, x):  # (N, c_in, H, W)
        if self.mode == "pixel_shuffle":
            h = F.pixel_shuffle(self.conv(x), 2)  # (N, 4 c_out, H, W) -> (N, c_out, 2H, 2W)
        else:
            h = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # (N, c_out, 2H, 2W)
        if self.shortcut:
            s = x.repeat_interleave(self.repeats, dim=1)  # (N, 4 c_out, H, W)
            h = h + F.pixel_shuffle(s, 2)  # (N, c_out, 2H, 2W)
        return h


class MultiScaleProjection(nn.Module):
    """One more scale of queries, keys and values (SANA's EfficientViT blocks,
    `qkv_multiscales = (5,)`): a depthwise k x k conv over the [q | k | v] channels, then a 1x1
    conv that mixes channels only within groups of head_dim (3 * heads groups: the q, the k and
    the v of each head)."""

    def __init__(self, channels, heads, kernel):
        super().__init__()
        self.proj_in = nn.Conv2d(3 * channels, 3 * channels, kernel, padding=kernel // 2,
                                 groups=3 * channels, bias=False)
        self.proj_out = nn.Conv2d(3 * channels, 3 * channels, 1, groups=3 * heads, bias=False)

    def forward(self, qkv):  # (N, 3C, H, W)
        return self.proj_out(self.proj_in(qkv))  # (N, 3C, H, W)


class LinearAttention(nn.Module):
    """EfficientViT's ReLU linear attention (the deep stages of DC-AE 1.0 and SANA), residual, in
    fp32, with optional extra scales (MultiScaleProjection): each scale adds `heads` more heads,
    attending over its own q, k, v. The official 1x1 qkv conv is read per head as [q | k | v]
    groups of head_dim; diffusers' to_q / to_k / to_v are its thirds, concatenated back here. The
    official code switches to the (equal) quadratic form when H*W <= head_dim; we never do."""

    def __init__(self, channels, head_dim=32, norm="rms", scales=(), eps=1e-15):
        super().__init__()
        self.head_dim, self.eps = head_dim, eps
        heads = channels // head_dim
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_qkv_multiscale = nn.ModuleList([MultiScaleProjection(channels, heads, k)
                                                for k in scales])
        self.to_out = nn.Linear(channels * (1 + len(scales)), channels, bias=False)
        self.norm_out = make_norm(norm, channels)

    def forward(self, x):  # (N, C, H, W)
        N, C, H, W = x.shape
        h = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        # (N, 3C, H, W)
        qkv = torch.cat([self.to_q(h), self.to_k(h), self.to_v(h)], dim=-1).permute(0, 3, 1, 2)
        # (N, 3C (1 + n), H, W)
        qkv = torch.cat([qkv] + [scale(qkv) for scale in self.to_qkv_multiscale], dim=1)
        # fp32 at least: bf16 sums overflow the ratio
        qkv = qkv.to(torch.promote_types(qkv.dtype, torch.float32))
        # (N, G, 3d, HW): G heads of [q | k | v]
        qkv = qkv.reshape(N, -1, 3 * self.head_dim, H * W)
        q, k, v = qkv.chunk(3, dim=2)  # each (N, G, d, HW)
        q, k = F.relu(q), F.relu(k)
        # out_i = sum_j v_j (k_j . q_i) / sum_j (k_j . q_i): one (d x d) summary instead of an
        # HW x HW matrix.
        kv = v @ k.transpose(-1, -2)  # (N, G, d, d)
        num = kv @ q  # (N, G, d, HW)
        den = k.sum(-1, keepdim=True).transpose(-1, -2) @ q  # (N, G, 1, HW)
        out = (num / (den + self.eps)).to(x.dtype).reshape(N, -1, H, W)  # (N, C (1 + n), H, W)
        out = self.to_out(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (N, C, H, W)
        return x + self.norm_out(out)


class GLUMBConv(nn.Module):
    """Gated inverted-bottleneck conv, residual:
    1x1 expand x4 -> depthwise 3x3 -> GLU gate -> 1x1."""

    def __init__(self, channels, expand=4):
        super().__init__()
        hidden = expand * channels
        self.conv_inverted = nn.Conv2d(channels, 2 * hidden, 1)
        self.conv_depth = nn.Conv2d(2 * hidden, 2 * hidden, 3, 1, 1, groups=2 * hidden)
        self.conv_point = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = RMSNorm2d(channels)

    def forward(self, x):
        h = self.conv_depth(F.silu(self.conv_inverted(x)))  # (N, 2 hidden, H, W)
        h, gate = h.chunk(2, dim=1)  # (N, hidden, H, W) each
        return x + self.norm(self.conv_point(h * F.silu(gate)))


class EfficientViTBlock(nn.Module):
    """Global context (linear attention) followed by local mixing (GLUMBConv): the deep stages of
    DC-AE 1.0 and SANA."""

    def __init__(self, channels, norm="rms", scales=()):
        super().__init__()
        self.attn = LinearAttention(channels, norm=norm, scales=scales)
        self.conv_out = GLUMBConv(channels)

    def forward(self, x):
        return self.conv_out(self.attn(x))


def make_block(kind, channels, norm, act, scales=()):
    return (ResBlock(channels, norm, act) if kind == "res"
            else EfficientViTBlock(channels, norm, scales))


# ------------------------------------------------------------------------------------------------
# Encoder, decoder, autoencoder
# ------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """x (N, 3, H, W) -> z (N, c, H/f, W/f), f = 2 ** (len(widths) - 1), for an AEConfig `cfg`.

    Stage s runs depths[s] blocks at widths[s], then (if not last) a DownBlock to widths[s+1].
    Stage 0 is empty in the DC-AE 1.0 and 1.5 configs, where `conv_in` downsamples
    (3 -> widths[1], H/2); SANA's has blocks at full resolution after a plain conv3x3 `conv_in`
    (3 -> widths[0]).
    """

    def __init__(self, cfg):
        super().__init__()
        widths, depths, S = cfg.widths, cfg.enc_depths, len(cfg.widths)
        scales = cfg.enc_scales or ((),) * S
        self.conv_in = nn.Conv2d(3, widths[0], 3, 1, 1) if depths[0] else \
            DownBlock(3, widths[1], shortcut=False, mode=cfg.downsample)
        self.down_blocks = nn.ModuleList()
        for s in range(S):
            stage = [make_block(cfg.enc_blocks[s], widths[s], "rms", "silu", scales[s])
                     for _ in range(depths[s])]
            if depths[s] and s < S - 1:
                stage.append(DownBlock(widths[s], widths[s + 1], mode=cfg.downsample))
            self.down_blocks.append(nn.Sequential(*stage))
        self.conv_out = nn.Conv2d(widths[-1], cfg.c, 3, 1, 1)
        # DC-AE 1.0, SANA: average channel groups into the latent
        self.out_shortcut = cfg.latent_shortcut
        self.group = widths[-1] // cfg.c

    def forward(self, x):
        # (N, widths[0], H, W), or (N, widths[1], H/2, W/2) when stage 0 is empty
        h = self.conv_in(x)
        for stage in self.down_blocks:
            h = stage(h)  # (N, widths[-1], H/f, W/f) after the last stage
        z = self.conv_out(h)  # (N, c, H/f, W/f)
        if self.out_shortcut:
            z = z + h.unflatten(1, (-1, self.group)).mean(2)  # (N, c, H/f, W/f)
        return z


class Decoder(nn.Module):
    """z (N, c, H/f, W/f) -> x (N, 3, H, W): the mirror of Encoder, then RMSNorm -> act -> the
    output conv (an UpBlock to 3 channels when stage 0 is empty, else a plain conv3x3)."""

    def __init__(self, cfg):
        super().__init__()
        widths, depths, S = cfg.widths, cfg.dec_depths, len(cfg.widths)
        scales = cfg.dec_scales or ((),) * S
        self.conv_in = nn.Conv2d(cfg.c, widths[-1], 3, 1, 1)
        # DC-AE 1.0, SANA: duplicate latent channels up to widths[-1]
        self.in_shortcut = cfg.latent_shortcut
        self.repeats = widths[-1] // cfg.c
        up = []
        for s in range(S):
            stage = ([UpBlock(widths[s + 1], widths[s], mode=cfg.upsample)]
                     if depths[s] and s < S - 1 else [])
            stage += [make_block(cfg.dec_blocks[s], widths[s],
                                 cfg.dec_norms[s], cfg.dec_acts[s], scales[s])
                      for _ in range(depths[s])]
            up.append(nn.Sequential(*stage))
        self.up_blocks = nn.ModuleList(up)  # indexed by stage like the encoder; run last to first
        top = widths[0] if depths[0] else widths[1]  # the widest stage with blocks
        self.norm_out = RMSNorm2d(top)
        self.conv_act = make_act(cfg.out_act)
        self.conv_out = nn.Conv2d(top, 3, 3, 1, 1) if depths[0] else \
            UpBlock(top, 3, shortcut=False, mode=cfg.upsample)

    def forward(self, z):
        h = self.conv_in(z)  # (N, widths[-1], H/f, W/f)
        if self.in_shortcut:
            h = h + z.repeat_interleave(self.repeats, dim=1)
        for stage in reversed(self.up_blocks):
            h = stage(h)  # (N, top, H or H/2, W or W/2) after the first stage that has blocks
        return self.conv_out(self.conv_act(self.norm_out(h)))  # (N, 3, H, W)


# Channel mask (Eq. 1).
def channel_mask(c, c_prime):
    """mask_{c,c'} = (1, ..., 1 [c'], 0, ..., 0 [c - c']): c_prime (N,) -> (N, c, 1, 1), one mask
    per sample, to multiply latents (N, c, H, W); an int gives (1, c, 1, 1). Values are checked on
    entry (the command lines; diffusion.check_latent checks a mask against the model), not here."""
    c_prime = torch.as_tensor(c_prime).reshape(-1, 1)  # (N, 1)
    # (N, c, 1, 1)
    return (torch.arange(c, device=c_prime.device) < c_prime).float()[:, :, None, None]


def sample_c_prime(candidates, n, generator=None):
    """A CPU tensor (n,) of c' drawn uniformly from the candidate list (Sec. 4.1), with
    replacement as DC-Gen's trainers do; generator: a CPU torch.Generator or None (the
    global RNG, saved in every checkpoint)."""
    if len(candidates) == 0 or min(candidates) < 1:
        raise ValueError(f"candidates must be a non-empty list of positive channel counts, "
                         f"got {candidates}")
    # (n,)
    return torch.tensor(candidates)[torch.randint(len(candidates), (n,), generator=generator)]


def channel_candidates(c, start=16, step=4):
    """The c' the AE is trained to support: [start, start + step, ..., c]
    (Sec. 4.1: [16, 20, 24, ..., c]), c always included, so full-channel reconstruction is one of
    the training objectives."""
    if not (1 <= start <= c and step >= 1):
        raise ValueError(f"need 1 <= start <= c and step >= 1, "
                         f"got start={start}, step={step}, c={c}")
    return sorted(set(range(start, c + 1, step)) | {c})


class DCAE(nn.Module):
    """Deep compression autoencoder with an optional structured latent space (DC-AE 1.5,
    Sec. 3.2), built from one registry entry (AEConfig)."""

    def __init__(self, name, config):
        super().__init__()
        cfg = config
        if min(cfg.enc_depths[1:] + cfg.dec_depths[1:]) < 1:
            raise ValueError(f"{name}: every stage after the first needs >= 1 block "
                             f"(as in all released DC-AE configs), "
                             f"got {cfg.enc_depths} / {cfg.dec_depths}")
        self.name, self.config, self.c, self.f = name, cfg, cfg.c, 2 ** (len(cfg.widths) - 1)
        # None where no value is published: see estimate_scaling_factor
        self.scaling_factor = cfg.scaling_factor
        # c < 16: [c]
        self.c_prime_candidates = channel_candidates(cfg.c, min(cfg.c_prime_start, cfg.c),
                                                     cfg.c_prime_step)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def fsdp_units(self):
        """The modules a trainer wraps one by one with `fully_shard`
        (before the root): the non-empty stages."""
        return [s for s in list(self.encoder.down_blocks) + list(self.decoder.up_blocks) if len(s)]

    def check_image(self, x):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects images (N, 3, H, W), "
                             f"got shape {tuple(x.shape)}")
        if x.shape[2] % self.f or x.shape[3] % self.f:
            raise ValueError(f"{self.name} has f={self.f}: H and W must be multiples of {self.f}, "
                             f"got {x.shape[2]}x{x.shape[3]}")

    def encode(self, x):
        """x (N, 3, H, W) in [-1, 1] -> z (N, c, H/f, W/f), unscaled."""
        self.check_image(x)
        return self.encoder(x)

    def decode(self, z):
        """z (N, c', h, w) with c' <= c -> x (N, 3, f h, f w). Missing trailing channels count as
        zero, so decode(z[:, :c']) == decode(z * mask_{c,c'}): a structured AE decodes coarse
        images from few channels."""
        if z.ndim != 4 or not 1 <= z.shape[1] <= self.c:
            raise ValueError(f"{self.name} decodes latents (N, c', h, w) "
                             f"with 1 <= c' <= c={self.c}, got shape {tuple(z.shape)}")
        if z.shape[1] < self.c:
            # (N, c, h, w), zeros after channel c'
            z = F.pad(z, (0, 0, 0, 0, 0, self.c - z.shape[1]))
        return self.decoder(z)

    def forward(self, x, mask):
        """Training forward of Fig. 4: one encode, K decodes of z * mask_k. x (N, 3, H, W),
        mask (K, N, c, 1, 1) of Eq. 1 -> x_rec (K N, 3, H, W), block k reconstructed from the
        channels mask[k] keeps (DC-Gen's num_sample_latent_channels; K = 1 is the paper's one c'
        per image). The official code slices the weights instead (conv_out.weight[:c'],
        conv_in.weight[:, :c']); a zeroed channel contributes nothing to the next conv and gets no
        gradient through it, so slicing and masking are the same function, and the mask lets one
        batch mix several c'."""
        z = self.encode(x)  # (N, c, h, w)
        z = (z[None] * mask).flatten(0, 1)  # (K, N, c, h, w) -> (K N, c, h, w)
        return self.decoder(z)


# ------------------------------------------------------------------------------------------------
# Latent scaling
# ------------------------------------------------------------------------------------------------

@torch.no_grad()
def estimate_scaling_factor(latents, reduce=None):
    """The latent scaling (z_diffusion = factor * z, one scalar) where no factor is published:
    1 / std of the latents over data, as the official code. latents: an iterable of z (N, c, h, w),
    e.g. (model.encode(x) for x in images); reduce: sums a float over ranks (fsdp.all_sum)."""
    n, s1, s2 = 0, 0.0, 0.0
    for z in latents:
        # device sums: no sync per batch
        n, s1, s2 = n + z.numel(), s1 + z.double().sum(), s2 + z.double().pow(2).sum()
    n, s1, s2 = float(n), float(s1), float(s2)
    if reduce is not None:
        n, s1, s2 = reduce(n), reduce(s1), reduce(s2)
    if n == 0:
        raise ValueError("estimate_scaling_factor got no latents")
    return 1.0 / max(s2 / n - (s1 / n) ** 2, 1e-24) ** 0.5


# ------------------------------------------------------------------------------------------------
# Registry: the paper's models (DESIGN.md §4) and tiny entries for tests and CPU runs
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AEConfig:
    """One DC-AE: per-stage tuples run from stage 0 (full resolution) to the latent."""
    c: int  # latent channels
    widths: tuple  # channels per stage; f = 2 ** (len(widths) - 1)
    # blocks per encoder stage; stage 0 empty: conv_in downsamples (all but SANA's encoder)
    enc_depths: tuple
    dec_depths: tuple
    # "res" (ResBlock) or "evit" (EfficientViT: linear attention + GLUMBConv) per stage
    enc_blocks: tuple
    dec_blocks: tuple
    # "rms" or "bn" (BatchNorm: DC-AE 1.0's shallow decoder stages) per decoder stage
    dec_norms: tuple
    dec_acts: tuple  # "silu" or "relu" per decoder stage
    out_act: str  # before the decoder's last conv
    # DC-AE 1.0, SANA: channel averaging into z and duplication out of it; 1.5 drops them
    latent_shortcut: bool
    # published with the released weights; None: 1 / std of the latents
    scaling_factor: float | None
    # trained with the channel mask of Eq. 1 (1.5); the 1.0, 1.1 and SANA AEs are not
    structured: bool
    c_prime_start: int = 16  # the c' list [start, start + step, ..., c] (Sec. 4.1)
    c_prime_step: int = 4
    # train_ae.py's recipe: "paper" (the three DC-AE phases) or "tiny" (CPU runs)
    recipe: str = "paper"
    downsample: str = "pixel_unshuffle"  # or "conv" (SANA: a stride-2 conv)
    upsample: str = "pixel_shuffle"  # or "interpolate" (SANA: nearest x2, then a conv)
    # per stage, kernel sizes of extra attention scales (SANA: (5,)); None: none
    enc_scales: tuple | None = None
    dec_scales: tuple | None = None


def dc_ae_10(widths, **fields):
    """DC-AE 1.0: ResBlocks in the first three stages, EfficientViT blocks after; BatchNorm + ReLU
    in the shallow decoder stages; latent shortcuts; trained without the mask."""
    k = len(widths) - 3
    return AEConfig(widths=widths, enc_blocks=("res",) * 3 + ("evit",) * k,
                    dec_blocks=("res",) * 3 + ("evit",) * k,
                    dec_norms=("bn",) * 3 + ("rms",) * k, dec_acts=("relu",) * 3 + ("silu",) * k,
                    out_act="relu", latent_shortcut=True, structured=False, **fields)


def dc_ae_sana(**fields):
    """SANA's DC-AE (f32c32; 1.0 and 1.1 share the architecture) and its encoder: stage 0 not
    empty, stride-2 conv downsampling, EfficientViT blocks with a second attention scale (5x5) in
    the three deepest stages, latent shortcuts, RMSNorm + SiLU; trained without the mask."""
    res, evit, scales = ("res",) * 3, ("evit",) * 3, ((),) * 3 + ((5,),) * 3
    return AEConfig(c=32, widths=(128, 256, 512, 512, 1024, 1024), enc_depths=(2, 2, 2, 3, 3, 3),
                    enc_blocks=res + evit, enc_scales=scales, downsample="conv",
                    dec_norms=("rms",) * 6, dec_acts=("silu",) * 6,
                    latent_shortcut=True, scaling_factor=0.41407, structured=False, **fields)


def dc_ae_15(widths, depths, **fields):
    """DC-AE 1.5 (and its unstructured 1.1 baseline):
    ResBlocks only, RMSNorm + SiLU, no latent shortcuts."""
    S = len(widths)
    return AEConfig(widths=widths, enc_depths=depths, dec_depths=depths, enc_blocks=("res",) * S,
                    dec_blocks=("res",) * S, dec_norms=("rms",) * S, dec_acts=("silu",) * S,
                    out_act="silu", latent_shortcut=False, **fields)


W6 = (128, 256, 512, 512, 1024, 1024)
AE_CONFIGS = {
    "dc-ae-f32c32-in-1.0": dc_ae_10(c=32, widths=W6, enc_depths=(0, 4, 8, 2, 2, 2),
                                    dec_depths=(0, 5, 10, 2, 2, 2), scaling_factor=0.3189),
    "dc-ae-f64c128-in-1.0": dc_ae_10(c=128, widths=W6 + (2048,), enc_depths=(0, 4, 8, 2, 2, 2, 2),
                                     dec_depths=(0, 5, 10, 2, 2, 2, 2), scaling_factor=0.2889),
    # The unstructured baseline of Tables 2 and 5 ("DC-AE-f32c128"): the 1.5 architecture, trained
    # without the mask.
    "dc-ae-f32c128-1.1": dc_ae_15(c=128, widths=W6, depths=(0, 5, 10, 4, 4, 4),
                                  scaling_factor=None, structured=False),
    "dc-ae-f32c128-1.5": dc_ae_15(c=128, widths=W6, depths=(0, 5, 10, 4, 4, 4),
                                  scaling_factor=None, structured=True),
    "dc-ae-f64c128-1.5": dc_ae_15(c=128, widths=W6 + (1024,), depths=(0, 5, 10, 4, 4, 4, 4),
                                  scaling_factor=0.5935, structured=True),
    # The rest of the released family (DC-Gen's ae_model_zoo.py; factors from diffusers'
    # convert_dcae_to_diffusers.py).
    "dc-ae-f32c32-mix-1.0": dc_ae_10(c=32, widths=W6, enc_depths=(0, 4, 8, 2, 2, 2),
                                     dec_depths=(0, 5, 10, 2, 2, 2), scaling_factor=0.4552),
    "dc-ae-f64c128-mix-1.0": dc_ae_10(c=128, widths=W6 + (2048,), enc_depths=(0, 4, 8, 2, 2, 2, 2),
                                      dec_depths=(0, 5, 10, 2, 2, 2, 2), scaling_factor=0.4538),
    "dc-ae-f128c512-in-1.0": dc_ae_10(c=512, widths=W6 + (2048, 2048),
                                      enc_depths=(0, 4, 8, 2, 2, 2, 2, 2),
                                      dec_depths=(0, 5, 10, 2, 2, 2, 2, 2),
                                      scaling_factor=0.4883),
    "dc-ae-f128c512-mix-1.0": dc_ae_10(c=512, widths=W6 + (2048, 2048),
                                       enc_depths=(0, 4, 8, 2, 2, 2, 2, 2),
                                       dec_depths=(0, 5, 10, 2, 2, 2, 2, 2),
                                       scaling_factor=0.3620),
    "dc-ae-f32c32-sana-1.0": dc_ae_sana(dec_depths=(3, 3, 3, 3, 3, 3),
                                        dec_blocks=("res",) * 3 + ("evit",) * 3,
                                        dec_scales=((),) * 3 + ((5,),) * 3,
                                        out_act="relu", upsample="interpolate"),
    "dc-ae-f32c32-sana-1.1": dc_ae_sana(dec_depths=(3, 3, 3, 3, 3, 3),
                                        dec_blocks=("res",) * 3 + ("evit",) * 3,
                                        dec_scales=((),) * 3 + ((5,),) * 3,
                                        out_act="relu", upsample="interpolate"),
    # DC-AE-Lite: SANA's encoder, a decoder of ResBlocks only (stage 0 empty, pixel-shuffle
    # upsampling).
    "dc-ae-lite-f32c32-sana-1.1": dc_ae_sana(dec_depths=(0, 3, 5, 4, 4, 4),
                                             dec_blocks=("res",) * 6, out_act="silu"),
    # Tiny entries (CPU runs, tests). f8c64 is the toy analogue of f32c128: many channels per
    # latent pixel.
    "dc-ae-f8c16-tiny": dc_ae_15(c=16, widths=(16, 32, 64, 64), depths=(0, 1, 1, 1),
                                 scaling_factor=None, structured=True,
                                 c_prime_start=4, c_prime_step=4, recipe="tiny"),
    "dc-ae-f8c64-tiny": dc_ae_15(c=64, widths=(16, 32, 64, 128), depths=(0, 1, 1, 1),
                                 scaling_factor=None, structured=True,
                                 c_prime_start=8, c_prime_step=8, recipe="tiny"),
    "dc-ae-f8c16-tiny-1.0": dc_ae_10(c=16, widths=(16, 32, 64, 64), enc_depths=(0, 1, 1, 1),
                                     dec_depths=(0, 1, 1, 1), scaling_factor=None,
                                     c_prime_start=4, recipe="tiny"),
}


def build_ae(name, **fields):
    """Build a registry entry: build_ae('dc-ae-f64c128-1.5');
    keyword arguments replace AEConfig fields."""
    if name not in AE_CONFIGS:
        raise ValueError(f"unknown AE {name!r}; choose from {sorted(AE_CONFIGS)}")
    return DCAE(name, dataclasses.replace(AE_CONFIGS[name], **fields))


@torch.no_grad()
def main():
    """The registry on the meta device (no memory): f, c, parameters, scaling factor, c' list."""
    for name in AE_CONFIGS:
        with torch.device("meta"):
            m = build_ae(name)
        print(f"{name:27s} f{m.f:<4d} c{m.c:<4d} "
              f"{sum(p.numel() for p in m.parameters()) / 1e6:8.2f}M params  "
              f"scaling_factor={m.scaling_factor}  c' in {m.c_prime_candidates[:3]}...{m.c}")


if __name__ == "__main__":
    main()
