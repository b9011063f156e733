"""Tests for models.py (Sec. 4.1, Tables 3-4): paper parameter counts, shape contracts, official
key names, init, UViT's long skips, compile, FLOPs.

    python -m pytest -q tests/test_models.py
"""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import models
from conftest import randomize_

C, S = 8, 4  # tiny latent: 8 channels, 4x4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_inputs(n=3, c=C, s=S, num_classes=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, s, s, generator=g)
    t = torch.rand(n, generator=g) * 1000
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, t, y


# ------------------------------------------------------------------------------------------------
# Parameter counts of the paper's backbones (Sec. 4.1, Table 4), c = 32, 16x16 tokens,
# 1000 classes.

@pytest.mark.parametrize("name, expected_m", [
    ("DiT-XL", 674.89), ("UViT-H", 500.87), ("USiT-H", 500.87), ("UViT-2B", 1580.40),
    ("USiT-2B", 1580.40), ("USiT-3B", 3107.7),
])
def test_param_counts(name, expected_m):
    model = models.create_model(name, in_channels=32, input_size=16, device="meta")
    n = models.count_params(model) / 1e6
    assert abs(n - expected_m) / expected_m < 5e-4, f"{name}: {n:.2f}M vs paper {expected_m}M"


def test_dit_official_param_count_and_frozen_pos_embed():
    # The original DiT-XL/2 (SD-VAE f8c4 latent 32x32, patch 2): 675M including the frozen
    # positions.
    model = models.create_model("DiT-XL", in_channels=4, input_size=32, patch_size=2,
                                device="meta")
    assert models.count_params(model) == 674_834_720
    assert not model.pos_embed.requires_grad
    assert (models.count_params(model, trainable_only=False) - models.count_params(model)
            == 256 * 1152)


# ------------------------------------------------------------------------------------------------
# Shape contracts for every registry entry: real forward for tiny ones, meta forward for full-size
# ones.

@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_shape_contract(name):
    tiny = name.endswith("tiny")
    device = "cpu" if tiny else "meta"
    c, s = (C, S) if tiny else (128, 8)  # full-size ones at the paper's f64c128 512 px shape
    model = models.create_model(name, in_channels=c, input_size=s, device=device)
    x, t, y = (v.to(device) for v in tiny_inputs(c=c, s=s))
    out = model(x, t, y)
    c_out = 2 * c if models.MODELS[name].objective == "ddpm" else c
    assert out.shape == (3, c_out, s, s)
    assert out.device.type == device
    if tiny:
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["DiT-tiny", "UViT-tiny"])
def test_patch_size_2(name):
    model = models.create_model(name, in_channels=C, input_size=8, patch_size=2)
    x, t, y = tiny_inputs(s=8)
    assert model.num_tokens == 16
    assert model(x, t, y).shape[2:] == (8, 8)


def test_registry_objectives():
    assert models.MODELS["DiT-XL"].objective == "ddpm"
    assert models.MODELS["UViT-H"].objective == "eps"
    assert all(models.MODELS[n].objective == "flow"
               for n in ["SiT-XL", "USiT-H", "USiT-2B", "USiT-3B"])
    with pytest.raises(ValueError, match="unknown model"):
        models.create_model("DiT-XXL")


def test_wrong_channel_count_raises():
    model = models.create_model("USiT-tiny", in_channels=C, input_size=S)
    x, t, y = tiny_inputs(c=C + 1)
    with pytest.raises(ValueError, match="input channels"):
        model(x, t, y)
    with pytest.raises(ValueError, match="even"):
        models.UViT(depth=3, hidden_size=64, num_heads=4)


# ------------------------------------------------------------------------------------------------
# Official key names: DiT's released state dicts and DC-AE's UViT load strictly.

def official_dit_shapes(depth, D, c, p, T, num_classes=1000, learn_sigma=True):
    """facebookresearch/DiT's state dict, written out from the architecture
    (timm PatchEmbed/Attention/Mlp)."""
    out = 2 * c if learn_sigma else c
    shapes = {
        "pos_embed": (1, T, D),
        "x_embedder.proj.weight": (D, c, p, p), "x_embedder.proj.bias": (D,),
        "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (num_classes + 1, D),
        "final_layer.linear.weight": (p * p * out, D), "final_layer.linear.bias": (p * p * out,),
        "final_layer.adaLN_modulation.1.weight": (2 * D, D),
        "final_layer.adaLN_modulation.1.bias": (2 * D,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "mlp.fc1.weight": (4 * D, D), b + "mlp.fc1.bias": (4 * D,),
            b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,),
            b + "adaLN_modulation.1.weight": (6 * D, D), b + "adaLN_modulation.1.bias": (6 * D,),
        })
    return shapes


def official_uvit_shapes(depth, D, c, p, T, num_classes=1000):
    """DC-AE's diffusioncore UViT state dict (U-ViT's names, label table inside `label_emb`)."""
    shapes = {
        "pos_embed": (1, 2 + T, D),
        "patch_embed.proj.weight": (D, c, p, p), "patch_embed.proj.bias": (D,),
        "label_emb.embedding_table.weight": (num_classes + 1, D),
        "norm.weight": (D,), "norm.bias": (D,),
        "decoder_pred.weight": (p * p * c, D), "decoder_pred.bias": (p * p * c,),
    }
    blocks = [f"in_blocks.{i}." for i in range(depth // 2)] + ["mid_block."]
    blocks += [f"out_blocks.{i}." for i in range(depth // 2)]
    for b in blocks:
        shapes.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "mlp.fc1.weight": (4 * D, D), b + "mlp.fc1.bias": (4 * D,),
            b + "mlp.fc2.weight": (D, 4 * D), b + "mlp.fc2.bias": (D,),
        })
        if b.startswith("out_blocks"):
            shapes.update({b + "skip_linear.weight": (D, 2 * D), b + "skip_linear.bias": (D,)})
    return shapes


def test_dit_xl_2_state_dict_matches_official():
    model = models.create_model("DiT-XL", in_channels=4, input_size=32, patch_size=2,
                                device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_dit_shapes(depth=28, D=1152, c=4, p=2, T=256)


def test_uvit_h_state_dict_matches_dc_ae():
    model = models.create_model("UViT-H", in_channels=32, input_size=16, device="meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_uvit_shapes(depth=28, D=1152, c=32, p=1, T=256)


@pytest.mark.parametrize("name, shapes_fn", [("DiT-tiny", official_dit_shapes),
                                             ("UViT-tiny", official_uvit_shapes)])
def test_official_state_dict_loads_strictly(name, shapes_fn):
    model = models.create_model(name, in_channels=C, input_size=S)
    g = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(shape, generator=g)
          for k, shape in shapes_fn(depth=2, D=64, c=C, p=1, T=S * S).items()}
    model.load_state_dict(sd, strict=True)
    # positions are loaded, not recomputed
    assert torch.equal(model.state_dict()["pos_embed"], sd["pos_embed"])


# ------------------------------------------------------------------------------------------------
# Initialisation and embeddings.

def test_dit_adaln_zero_init():
    model = models.create_model("DiT-tiny", in_channels=C, input_size=S)
    x, t, y = tiny_inputs()
    assert torch.equal(model(x, t, y), torch.zeros(3, 2 * C, S, S))  # zero-initialised final layer
    block = model.blocks[0]
    h = torch.randn(3, S * S, 64)
    # gates start at zero: each block is the identity
    assert torch.equal(block(h, torch.randn(3, 64)), h)


def test_sincos_pos_embed():
    pe = models.sincos_pos_embed_2d(16, 4)  # (T, D)
    assert pe.shape == (16, 16)
    # token 0 is (row 0, col 0): sin parts 0, cos parts 1
    assert torch.allclose(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4))
    # token 1 is (row 0, col 1): the first half (column) changes, the second half (row) does not
    assert torch.allclose(pe[1, 8:], pe[0, 8:]) and not torch.allclose(pe[1, :8], pe[0, :8])
    assert math.isclose(pe[1, 0].item(), math.sin(1.0), rel_tol=1e-6)
    # token 4 is (row 1, col 0)
    assert (torch.allclose(pe[4, :8], pe[0, :8])
            and math.isclose(pe[4, 8].item(), math.sin(1.0), rel_tol=1e-6))
    model = models.create_model("DiT-tiny", in_channels=C, input_size=S)
    assert torch.allclose(model.pos_embed[0], models.sincos_pos_embed_2d(64, S))


def test_timestep_embedding_layout_and_flow_scale():
    t = torch.tensor([0.0, 0.5, 1.0])  # flow times go in unscaled (SiT)
    emb = models.timestep_embedding(t, 8)
    assert torch.allclose(emb[:, 0], torch.cos(t)) and torch.allclose(emb[:, 4], torch.sin(t))
    assert torch.allclose(emb[:, 3], torch.cos(t * 10000 ** (-3 / 4)))


def test_label_dropout_uses_null_class():
    emb = models.LabelEmbedder(num_classes=10, hidden_size=4, dropout_prob=1.0)
    y = torch.arange(5)
    null_row = emb.embedding_table.weight[10]
    assert torch.equal(emb(y), null_row.expand(5, 4))  # training: every label dropped
    emb.eval()
    assert torch.equal(emb(y), emb.embedding_table.weight[:5])  # eval: never dropped


# ------------------------------------------------------------------------------------------------
# Compile, autocast, FSDP units, FLOPs.

@pytest.mark.parametrize("name", ["DiT-tiny", "UViT-tiny"])
def test_compile_fullgraph(name):
    torch._dynamo.reset()
    model = models.create_model(name, in_channels=C, input_size=S)
    x, t, y = tiny_inputs()
    # fullgraph: any graph break raises
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    out = compiled(x, t, y)  # training mode: includes the random label dropout
    assert out.shape[0] == 3
    model.eval()
    assert torch.allclose(compiled(x, t, y), model(x, t, y))


@pytest.mark.parametrize("name", ["DiT-tiny", "UViT-tiny"])
def test_bf16_autocast(name):
    model = randomize_(models.create_model(name, in_channels=C, input_size=S)).eval()
    x, t, y = tiny_inputs()
    ref = model(x, t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_fsdp_units_cover_all_blocks():
    dit = models.create_model("DiT-XL", device="meta")
    assert len(dit.fsdp_units()) == 28
    uvit = models.create_model("USiT-3B", device="meta")
    units = uvit.fsdp_units()
    assert len(units) == 57 and all(isinstance(u, models.UViTBlock) for u in units)
    in_units = sum(p.numel() for u in units for p in u.parameters())
    assert in_units / models.count_params(uvit) > 0.99  # almost everything is sharded per block


@pytest.mark.parametrize("name, patch", [("DiT-tiny", 1), ("SiT-tiny", 2), ("UViT-tiny", 1),
                                         ("USiT-tiny", 2)])
def test_flops_per_image_matches_flop_counter(name, patch):
    model = models.create_model(name, in_channels=C, input_size=8, patch_size=patch)
    x, t, y = tiny_inputs(n=2, s=8)
    # The math SDPA backend decomposes attention into matmuls that the counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    assert counter.get_total_flops() == 2 * model.flops_per_image()


def test_flops_scale_with_tokens():
    # The paper's Table 4 argument: f64c128 (8x8 tokens) vs f32c32 (16x16) at 512 px, same
    # backbone.
    f64 = models.create_model("USiT-2B", in_channels=128, input_size=8,
                              device="meta").flops_per_image()
    f32 = models.create_model("USiT-2B", in_channels=32, input_size=16,
                              device="meta").flops_per_image()
    assert 3.8 < f32 / f64 < 4.5


# ------------------------------------------------------------------------------------------------
# U-ViT's long skips (with depth 2 there is one skip, so its order could not be wrong).

def test_uvit_long_skips_are_last_in_first_out():
    """U-ViT (Bao et al. 2023) and DC-Gen's uvit.py: each in-block's output is pushed on a stack
    and each out-block pops the newest, so out_blocks[j] fuses in_blocks[n - 1 - j]'s output,
    skip_linear(cat([x, skip])): the first in-block feeds the last out-block. Depth 6: three
    skips."""
    model = randomize_(models.UViT(input_size=S, in_channels=C, hidden_size=32, depth=6,
                                   num_heads=4, num_classes=10)).eval()
    n = len(model.in_blocks)
    assert n == 3 and len(model.out_blocks) == 3
    pushed, fused = {}, {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: pushed.__setitem__(k, o))
             for k, b in enumerate(model.in_blocks)]
    # the input of skip_linear is cat([x, skip]) (N, T, 2D)
    hooks += [b.skip_linear.register_forward_hook(
                  lambda m, i, o, j=j: fused.__setitem__(j, i[0][..., 32:]))
              for j, b in enumerate(model.out_blocks)]
    with torch.no_grad():
        model(*tiny_inputs(num_classes=10))
    for h in hooks:
        h.remove()
    for j in range(n):
        assert torch.equal(fused[j], pushed[n - 1 - j]), j
    assert not torch.equal(pushed[0], pushed[2])  # the three skips can be told apart


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_backbone_keeps_the_contract_of_the_docstring(name):
    """models.py's docstring: in_channels, num_classes, input_size, fsdp_units(),
    flops_per_image()."""
    model = models.create_model(name, in_channels=12, input_size=4, num_classes=7, device="meta")
    assert (model.in_channels, model.num_classes, model.input_size) == (12, 7, 4)
    assert model.fsdp_units() and all(isinstance(m, torch.nn.Module) for m in model.fsdp_units())
    assert model.flops_per_image() > 0
