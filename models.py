"""Diffusion backbones of DC-AE 1.5: DiT, UViT, and their flow-matching twins SiT (= DiT) and
USiT (= UViT).

Paper: Sec. 4.1 (the four settings DiT, UViT, SiT, USiT and the new USiT-3B), Tables 2-4. All DC-AE
backbones use patch size 1, `in_channels = c` and an input size of resolution / f: a 512 px image
through DC-AE-1.5-f64c128 is an 8x8 grid of 128-channel tokens. One contract, so objectives and
samplers never look inside:

    # x_t (N, c, H, W), t float (N,), y long (N,) -> out (N, c or 2c, H, W)
    out = model(x_t, t, y)

and these attributes and methods, which the objectives, samplers, trainers and loaders use (a new
backbone is one class that has them, and one MODELS entry):

    model.in_channels         c: the latent channels it denoises (diffusion.check_latent checks
                              x_t against it)
    model.num_classes         K: labels 0..K-1; label K is the null class of
                              classifier-free guidance
    model.input_size          the latent side H = W (= resolution / f)
    model.fsdp_units()        the blocks `fully_shard` wraps one by one before the root
                              (fsdp.shard)
    model.flops_per_image()   forward FLOPs of one image, for the MFU in the training log

The objective decides the scale of t (diffusion.py): DDPM 0..999, U-ViT's eps objective 1..1000
(fractional while sampling), flow matching t in [0, 1] unscaled, as SiT and DC-Gen's USiT; all
through one sinusoidal embedding. Key names are the released code's: DiT/SiT facebookresearch/DiT's
(`x_embedder.proj`, `t_embedder.mlp`, `blocks.N.attn.qkv`, ...), UViT/USiT DC-Gen's `uvit.py`
(`patch_embed.proj`, `label_emb.embedding_table`, `in_blocks.N`, `mid_block`,
`out_blocks.N.skip_linear`, `decoder_pred`), so the released DC-Gen class-to-image folders load
strictly (checkpoints.py, Tables 3-4). In reading order: embeddings -> shared blocks -> DiT ->
UViT -> counting -> the registry.

    python -c "import models; m = models.create_model('USiT-H',
        device='meta'); print(models.count_params(m))"
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


#################################################################################
#                     Embedding layers for timesteps and labels                  #
#################################################################################

def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding (N,) -> (N, dim),
    [cos | sin] halves as in DiT/UViT (GLIDE's layout)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period)
                      * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (N, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * (dim//2))
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # (N, dim)
    return emb


class TimestepEmbedder(nn.Module):
    """DiT: 256-d sinusoid -> Linear -> SiLU -> Linear."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size)
                        .to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Class embedding with one extra row, the null class (id = num_classes): in training a
    fraction dropout_prob of labels becomes it (DiT: "important! this enables CFG"); samplers pass
    y = num_classes for the unconditional."""

    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, y):
        if self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob  # (N,)
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)  # (N, D)


class PatchEmbed(nn.Module):
    """p x p patches -> tokens by a strided conv (timm's PatchEmbed; key `proj`)."""

    def __init__(self, patch_size, in_channels, hidden_size):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)  # (N, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (N, T, D)


def sincos_pos_embed_2d(dim, grid_size):
    """DiT's fixed 2-D sin-cos table (T, dim): column (x), then row (y),
    each [sin | cos] at 1/10000^(k/(dim/4))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (dim/4,)
    coords = torch.arange(grid_size, dtype=torch.float64)
    # (g, g) each, token order is row-major
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def embed_1d(pos):
        out = pos.reshape(-1)[:, None] * omega[None]  # (T, dim/4)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (T, dim/2)

    return torch.cat([embed_1d(cols), embed_1d(rows)], dim=1).float()  # (T, dim)


def unpatchify(x, p, c):
    """(N, T, p*p*c) -> (N, c, h*p, w*p) for a square grid;
    the channel index is the fastest (DiT/UViT)."""
    N, T, _ = x.shape
    h = w = int(T ** 0.5)
    x = x.reshape(N, h, w, p, p, c)  # (N, h, w, p, p, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (N, c, h, p, w, p)
    return x.reshape(N, c, h * p, w * p)  # (N, c, H, W)


#################################################################################
#                                 Shared blocks                                  #
#################################################################################

class Attention(nn.Module):
    """Multi-head self-attention by F.scaled_dot_product_attention (flash kernels on GPU); qkv as
    timm and U-ViT."""

    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        N, T, D = x.shape
        # (N, T, 3, h, D/h)
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, h, T, D/h)
        x = F.scaled_dot_product_attention(q, k, v)  # (N, h, T, D/h)
        x = x.transpose(1, 2).reshape(N, T, D)  # (N, T, D)
        return self.proj(x)


class Mlp(nn.Module):
    """timm's Mlp (keys fc1, fc2); DiT uses tanh-GELU, UViT exact GELU."""

    def __init__(self, dim, hidden, approximate):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


#################################################################################
#                                      DiT                                       #
#################################################################################

def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (N, T, D)


class DiTBlock(nn.Module):
    """adaLN-Zero block: the condition c regresses shift/scale/gate for attention and MLP."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        (shift_msa, scale_msa, gate_msa,
         shift_mlp, scale_mlp, gate_mlp) = self.adaLN_modulation(c).chunk(6, dim=1)
        # (N, T, D)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        # (N, T, D)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (N, T, p*p*out)


class DiT(nn.Module):
    """DiT (Peebles & Xie). With learn_sigma the output has 2c
    channels: [eps | variance interpolation v]."""

    def __init__(self, input_size=16, patch_size=1, in_channels=32,
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
                 class_dropout_prob=0.1, num_classes=1000, learn_sigma=True):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by "
                             f"patch_size {patch_size}")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.num_heads, self.num_classes = hidden_size, num_heads, num_classes
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_tokens = (input_size // patch_size) ** 2

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        # Fixed sin-cos positions: a frozen Parameter, not a buffer, so DiT's released state dicts
        # (which contain `pos_embed`) load strictly and optimizers skip it (requires_grad=False).
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size),
                                      requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio)
                                     for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self):
        # DiT's initialisation: xavier for all linears, zero biases ...
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.pos_embed.device.type != "meta":
            self.pos_embed.copy_(sincos_pos_embed_2d(self.hidden_size,
                                                     self.input_size // self.patch_size)[None])
        # ... the patch embedding treated like a linear layer ...
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # ... and adaLN-Zero: every block starts as the identity and the output starts at zero.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def fsdp_units(self):
        """The modules a trainer wraps with `fully_shard` one by one (before the root)."""
        return list(self.blocks)

    def flops_per_image(self):
        # The timestep MLP and the adaLN regressions act once per image on the condition c (N, D).
        return count_flops(self, self.num_tokens, per_image=("t_embedder", "adaLN_modulation"))

    def forward(self, x, t, y):
        """x (N, c, H, W), t (N,) float, y (N,) long -> (N, c or 2c, H, W)."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, "
                             f"got x of shape {tuple(x.shape)}")
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t) + self.y_embedder(y)  # (N, D)
        for block in self.blocks:
            x = block(x, c)  # (N, T, D)
        x = self.final_layer(x, c)  # (N, T, p*p*out)
        return unpatchify(x, self.patch_size, self.out_channels)  # (N, out, H, W)


#################################################################################
#                                      UViT                                      #
#################################################################################

class UViTBlock(nn.Module):
    """Pre-LN ViT block (no qkv bias, exact GELU). Out-blocks first fuse their long skip:
    Linear(2D -> D)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, skip=False):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate="none")

    def forward(self, x, skip=None):
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (N, T, 2D) -> (N, T, D)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class UViT(nn.Module):
    """U-ViT (Bao et al.) as in DC-AE: tokens [label, time, patches], learned positions, long
    skips.

    The time token is the raw D-dim sinusoid of t (ImageNet configs use no time MLP); the label
    token comes from an embedding table with a null row, as in DiT (DC-AE moved U-ViT's label
    dropout into the model).
    """

    def __init__(self, input_size=16, patch_size=1, in_channels=32,
                 hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
                 class_dropout_prob=0.1, num_classes=1000):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by "
                             f"patch_size {patch_size}")
        if depth % 2:
            raise ValueError(f"UViT depth must be even (depth//2 in-blocks + mid + depth//2 out), "
                             f"got {depth}")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.num_heads, self.num_classes = hidden_size, num_heads, num_classes
        self.learn_sigma = False
        self.out_channels = in_channels
        self.num_tokens = (input_size // patch_size) ** 2
        self.extras = 2  # label and time tokens in front of the patches

        self.patch_embed = PatchEmbed(patch_size, in_channels, hidden_size)
        self.label_emb = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extras + self.num_tokens, hidden_size))
        self.in_blocks = nn.ModuleList([UViTBlock(hidden_size, num_heads, mlp_ratio)
                                        for _ in range(depth // 2)])
        self.mid_block = UViTBlock(hidden_size, num_heads, mlp_ratio)
        self.out_blocks = nn.ModuleList(
            [UViTBlock(hidden_size, num_heads, mlp_ratio, skip=True) for _ in range(depth // 2)])
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder_pred = nn.Linear(hidden_size, patch_size * patch_size * in_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self):
        # U-ViT's initialisation: truncated normal (std 0.02) for linears and positions, zero
        # biases; the patch conv and the label table keep PyTorch's defaults.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def fsdp_units(self):
        """The modules a trainer wraps with `fully_shard` one by one (before the root)."""
        return [*self.in_blocks, self.mid_block, *self.out_blocks]

    def flops_per_image(self):
        # the label and time tokens run through every block
        return count_flops(self, self.num_tokens + self.extras)

    def forward(self, x, t, y):
        """x (N, c, H, W), t (N,) float, y (N,) long -> (N, c, H, W)."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, "
                             f"got x of shape {tuple(x.shape)}")
        x = self.patch_embed(x)  # (N, T, D)
        time_token = timestep_embedding(t, self.hidden_size).to(x.dtype)[:, None]  # (N, 1, D)
        label_token = self.label_emb(y).to(x.dtype)[:, None]  # (N, 1, D)
        x = torch.cat([label_token, time_token, x], dim=1) + self.pos_embed  # (N, 2 + T, D)
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())  # (N, 2 + T, D)
        x = self.decoder_pred(self.norm(x))  # (N, 2 + T, p*p*c)
        x = x[:, self.extras:]  # (N, T, p*p*c)
        # (N, c, H, W); FSDP2 warns on views
        return unpatchify(x, self.patch_size, self.out_channels).contiguous()


#################################################################################
#                      Counting, FLOPs and the registry                          #
#################################################################################

def count_params(model, trainable_only=True):
    """Parameter count; trainable_only skips DiT's frozen pos_embed (the paper's convention)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model, tokens, per_image=()):
    """Forward FLOPs for one image (multiply-add = 2) of a backbone whose blocks see `tokens`
    tokens; training is about 3x. Counted: every matmul as 2 * in * out per row (a token, or the
    image for linears whose name contains a `per_image` part), and attention's two T x T products,
    4 T^2 D per block; not norms, activations, softmax, embeddings (< 1%). Equals
    torch.utils.flop_counter (test_models.py). MFU = 3 * FLOPs * images/s / peak."""
    flops = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            rows = 1 if any(part in name for part in per_image) else tokens
            flops += 2 * rows * m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):  # patch embedding: one (c p p -> D) matmul per patch token
            flops += 2 * model.num_tokens * m.weight[0].numel() * m.out_channels
        elif isinstance(m, Attention):
            flops += 4 * tokens * tokens * model.hidden_size  # q k^T and attn v, each 2 T^2 D
    return flops


# Training recipes (DESIGN.md §5). Global batch 1024 for every model (Sec. 4.1: "we increase the
# training batch size from 256 to 1024 for all DiT and SiT models"). EMA: decay 0.9999 with
# DC-Gen's warm-up decay * (1 - e^(-step / W)), W = 2000 (apps/utils/ema.py); --ema-warmup 0 gives
# the constant decay of the DiT and U-ViT repositories.
USIT = dict(lr=1e-4, weight_decay=0.0, betas=(0.99, 0.99), warmup=5000,
            batch_size=1024, steps=500_000, ema_decay=0.9999, ema_warmup=2000, save_minutes=30)
UVIT = dict(USIT, lr=2e-4, weight_decay=0.03)
DIT = dict(USIT, betas=(0.9, 0.999), warmup=0, steps=400_000)  # DiT and SiT
# CPU runs: a shorter EMA horizon for runs of a few thousand steps
TINY = dict(lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99), warmup=50,
            batch_size=64, steps=1000, ema_decay=0.999, ema_warmup=200, save_minutes=2)
RECIPES = {"DiT/SiT": DIT, "UViT": UVIT, "USiT": USIT, "tiny": TINY}  # by name, for --help


@dataclass(frozen=True)
class Backbone:
    """One registry entry: the architecture and its size,
    the objective it trains with, and its training recipe."""
    arch: type  # DiT or UViT
    depth: int
    hidden_size: int
    num_heads: int
    # diffusion.make_objective: "ddpm" (DiT's DDPM + learned variance), "eps" (U-ViT), "flow" (SiT)
    objective: str
    recipe: dict  # RECIPES
    # DiT's variance output (out = 2c); SiT drops it (the SiT repo keeps it unused)
    learn_sigma: bool = False

    def build(self, **kwargs):
        """The model: input_size, patch_size, in_channels, num_classes
        (create_model) go to the constructor."""
        kwargs.update(depth=self.depth, hidden_size=self.hidden_size, num_heads=self.num_heads)
        if self.arch is DiT:
            kwargs["learn_sigma"] = self.learn_sigma
        return self.arch(**kwargs)


MODELS = {
    "DiT-XL": Backbone(DiT, depth=28, hidden_size=1152, num_heads=16,
                       objective="ddpm", recipe=DIT, learn_sigma=True),
    "SiT-XL": Backbone(DiT, depth=28, hidden_size=1152, num_heads=16,
                       objective="flow", recipe=DIT),
    "UViT-S": Backbone(UViT, depth=12, hidden_size=512, num_heads=8,
                       objective="eps", recipe=UVIT),
    "UViT-H": Backbone(UViT, depth=28, hidden_size=1152, num_heads=16,
                       objective="eps", recipe=UVIT),
    "UViT-2B": Backbone(UViT, depth=28, hidden_size=2048, num_heads=32,
                        objective="eps", recipe=UVIT),
    "USiT-H": Backbone(UViT, depth=28, hidden_size=1152, num_heads=16,
                       objective="flow", recipe=USIT),
    "USiT-2B": Backbone(UViT, depth=28, hidden_size=2048, num_heads=32,
                        objective="flow", recipe=USIT),
    "USiT-3B": Backbone(UViT, depth=56, hidden_size=2048, num_heads=32,
                        objective="flow", recipe=USIT),
    # Tiny entries for tests and CPU runs.
    "DiT-tiny": Backbone(DiT, depth=2, hidden_size=64, num_heads=4,
                         objective="ddpm", recipe=TINY, learn_sigma=True),
    "SiT-tiny": Backbone(DiT, depth=2, hidden_size=64, num_heads=4,
                         objective="flow", recipe=TINY),
    "UViT-tiny": Backbone(UViT, depth=2, hidden_size=64, num_heads=4,
                          objective="eps", recipe=TINY),
    "USiT-tiny": Backbone(UViT, depth=2, hidden_size=64, num_heads=4,
                          objective="flow", recipe=TINY),
}


def create_model(name, in_channels=32, input_size=16, num_classes=1000, patch_size=1,
                 device=None, **kwargs):
    """Build a registry model. Defaults are the paper's counting setting: c = 32, 16x16 latent
    (f32 at 512 px). device='meta' builds a full-size model without allocating memory; kwargs
    replace the entry's sizes (benchmarks/bench.py)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    with torch.device(device or "cpu"):
        size = {k: kwargs.pop(k) for k in ("depth", "hidden_size", "num_heads") if k in kwargs}
        return dataclasses.replace(MODELS[name], **size).build(
            input_size=input_size, patch_size=patch_size, in_channels=in_channels,
            num_classes=num_classes, **kwargs)
