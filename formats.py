"""The formats of the released DC-AE checkpoints, turned into ae.py's (paper Sec. 4.1; DESIGN.md §4): a diffusers
`AutoencoderDC` config.json read as our DCAE arguments, DC-Gen's (efficientvit's) key names renamed to ours (which
are diffusers'), and a strict load that names every missing, unexpected or misshapen key. ae.load_pretrained uses
them; the released class-to-image models need no renaming (models.convert_dcgen_state_dict).

    python -c "import ae; m, s = ae.load_pretrained('path/to/dc-ae-f64c128-1.5')"     # a DC-Gen folder
    python -c "import ae; m, s = ae.load_pretrained('path/to/dc-ae-f32c32-in-1.0-diffusers')"
"""


def config_from_diffusers(d):
    """Our DCAE kwargs from a diffusers `AutoencoderDC` config.json dict."""
    widths = list(d["encoder_block_out_channels"])
    if list(d["decoder_block_out_channels"]) != widths:
        raise ValueError("encoder and decoder widths differ: not supported")
    if any(len(m) for m in list(d.get("encoder_qkv_multiscales", [])) + list(d.get("decoder_qkv_multiscales", []))):
        raise ValueError("multi-scale attention (qkv_multiscales) is not used by any DC-AE ImageNet model: not supported")
    if d.get("attention_head_dim", 32) != 32 and "EfficientViTBlock" in str(d.get("encoder_block_types", "")) + \
            str(d.get("decoder_block_types", "")):
        raise ValueError(f"attention_head_dim {d['attention_head_dim']}: every DC-AE model uses 32, the only value ae.py "
                         f"implements")
    if d.get("downsample_block_type", "pixel_unshuffle") != "pixel_unshuffle" or \
            d.get("upsample_block_type", "pixel_shuffle") != "pixel_shuffle":
        raise ValueError("only pixel_unshuffle / pixel_shuffle resampling is supported")
    S = len(widths)
    per_stage = lambda v: [v] * S if isinstance(v, str) else list(v)  # noqa: E731
    kind = {"ResBlock": "res", "EfficientViTBlock": "evit"}
    norm = {"rms_norm": "rms", "batch_norm": "bn"}
    if d.get("encoder_out_shortcut", True) != d.get("decoder_in_shortcut", True):
        raise ValueError("encoder_out_shortcut and decoder_in_shortcut must agree")
    return dict(c=d["latent_channels"], widths=widths, enc_depths=list(d["encoder_layers_per_block"]),
                dec_depths=list(d["decoder_layers_per_block"]),
                enc_blocks=[kind[b] for b in per_stage(d.get("encoder_block_types", "ResBlock"))],
                dec_blocks=[kind[b] for b in per_stage(d.get("decoder_block_types", "ResBlock"))],
                dec_norms=[norm[n] for n in per_stage(d.get("decoder_norm_types", "rms_norm"))],
                dec_acts=per_stage(d.get("decoder_act_fns", "silu")),
                latent_shortcut=d.get("encoder_out_shortcut", True), out_act=d.get("decoder_conv_act_fn", "relu"),
                scaling_factor=d.get("scaling_factor"))


# DC-Gen / efficientvit module paths -> ours (= diffusers'). Prefixes first, then block internals.
DCGEN_RENAMES = [
    ("main.", ""), ("op_list.", ""),
    ("encoder.project_in.", "encoder.conv_in."), ("encoder.stages.", "encoder.down_blocks."),
    ("encoder.project_out.0.conv.", "encoder.conv_out."),
    ("decoder.project_in.conv.", "decoder.conv_in."), ("decoder.stages.", "decoder.up_blocks."),
    ("decoder.project_out.0.", "decoder.norm_out."), ("decoder.project_out.2.", "decoder.conv_out."),
    ("context_module.", "attn."), ("local_module.", "conv_out."),
    ("conv1.conv.", "conv1."), ("conv2.conv.", "conv2."), ("conv2.norm.", "norm."),
    ("inverted_conv.conv.", "conv_inverted."), ("depth_conv.conv.", "conv_depth."),
    ("point_conv.conv.", "conv_point."), ("point_conv.norm.", "norm."),
    ("proj.conv.", "to_out."), ("proj.norm.", "norm_out."), ("conv.conv.", "conv."),
]


def rename_dcgen(state_dict):
    """Rename a DC-Gen state dict to our keys; split EfficientViT's qkv 1x1 conv into to_q/to_k/to_v."""
    out = {}
    for k, v in state_dict.items():
        for old, new in DCGEN_RENAMES:
            k = k.replace(old, new)
        if k.endswith("qkv.conv.weight"):
            q, kk, vv = v.flatten(1).chunk(3, dim=0)  # (3C, C, 1, 1) -> three (C, C)
            base = k[: -len("qkv.conv.weight")]
            out.update({base + "to_q.weight": q, base + "to_k.weight": kk, base + "to_v.weight": vv})
        elif k.endswith("to_out.weight"):
            out[k] = v.flatten(1)  # 1x1 conv (C, C, 1, 1) -> linear (C, C)
        else:
            out[k] = v
    return out


def load_state_dict_strict(model, state_dict, source):
    """load_state_dict(strict=True) that names what is missing or unexpected (BatchNorm counters excepted)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{source} does not match {model.name}: {len(missing)} missing {missing[:8]}, "
                         f"{len(unexpected)} unexpected {unexpected[:8]}, {len(shapes)} wrong shapes {shapes[:4]}")
    model.load_state_dict(state_dict, strict=False)
