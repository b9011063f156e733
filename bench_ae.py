"""Benchmark and parity check of ae.py against diffusers' AutoencoderDC (same config, same weights).

diffusers is not a dependency of this project: run this in a scratch environment that has it, e.g.

    python -m venv /tmp/scratch && . /tmp/scratch/bin/activate
    pip install torch==2.14.1 torchvision==0.29.1 diffusers safetensors
    python bench_ae.py --model dc-ae-f32c128-1.5 --image-size 256 --batch 1 --repeats 3
    python bench_ae.py --model dc-ae-f8c16-tiny-1.0 --image-size 64     # EfficientViT / BatchNorm path

It prints the max |difference| of latents and reconstructions, and encode+decode seconds for both (best of
`--repeats`, measured alternately in one process so machine noise hits both alike). Without diffusers it
times ours alone. Also measures what bf16 autocast changes (decode PSNR against fp32, latent error) and checks
(with --compile) torch.compile(fullgraph=True).
"""
import argparse
import time

import torch

import ae as ae_lib


def diffusers_kwargs(cfg):
    """The AutoencoderDC config equivalent to one of our registry entries (inverse of config_from_diffusers)."""
    kind = {"res": "ResBlock", "evit": "EfficientViTBlock"}
    norm = {"rms": "rms_norm", "bn": "batch_norm"}
    S = len(cfg["widths"])
    return dict(in_channels=3, latent_channels=cfg["c"], attention_head_dim=32,
                encoder_block_types=[kind[b] for b in cfg["enc_blocks"]],
                decoder_block_types=[kind[b] for b in cfg["dec_blocks"]],
                encoder_block_out_channels=cfg["widths"], decoder_block_out_channels=cfg["widths"],
                encoder_layers_per_block=cfg["enc_depths"], decoder_layers_per_block=cfg["dec_depths"],
                encoder_qkv_multiscales=[[]] * S, decoder_qkv_multiscales=[[]] * S,
                decoder_norm_types=[norm[n] for n in cfg["dec_norms"]], decoder_act_fns=cfg["dec_acts"],
                encoder_out_shortcut=cfg["latent_shortcut"], decoder_in_shortcut=cfg["latent_shortcut"],
                decoder_conv_act_fn=cfg["out_act"], scaling_factor=cfg["scaling_factor"] or 1.0)


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def main(args):
    torch.manual_seed(0)
    ours = ae_lib.build_ae(args.model).eval()
    for m in ours.modules():  # non-trivial norm statistics so that parity is a real check
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        if isinstance(m, (ae_lib.RMSNorm2d, torch.nn.BatchNorm2d)):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size) * 2 - 1
    run_ours = lambda: ours.decode(ours.encode(x))  # noqa: E731
    print(f"{args.model}: {ae_lib.count_params(ours) / 1e6:.2f}M params, x {tuple(x.shape)}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    try:
        from diffusers import AutoencoderDC
    except ImportError:
        AutoencoderDC = None
        print("diffusers is not installed: timing ours only (see the docstring for a scratch environment)")
    if AutoencoderDC is not None:
        theirs = AutoencoderDC(**diffusers_kwargs(ae_lib.AE_CONFIGS[args.model])).eval()
        theirs.load_state_dict(ours.state_dict(), strict=True)  # same key names: no renaming
        z_ours, z_theirs = ours.encode(x), theirs.encode(x).latent
        y_ours, y_theirs = ours.decode(z_ours), theirs.decode(z_ours).sample
        print(f"parity: max|z - z_diffusers| = {(z_ours - z_theirs).abs().max():.3e}, "
              f"max|x_rec - x_rec_diffusers| = {(y_ours - y_theirs).abs().max():.3e} "
              f"(|x_rec| max {y_ours.abs().max():.2f})")
        run_theirs = lambda: theirs.decode(theirs.encode(x).latent).sample  # noqa: E731
        run_ours(), run_theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(args.repeats):  # alternate so that drift hits both alike
            t_ours.append(best_time(run_ours, 1))
            t_theirs.append(best_time(run_theirs, 1))
        print(f"encode+decode, best of {args.repeats}: ours {min(t_ours):.3f}s, diffusers {min(t_theirs):.3f}s, "
              f"speed ratio diffusers/ours = {min(t_theirs) / min(t_ours):.2f}x")
    else:
        run_ours()
        print(f"encode+decode, best of {args.repeats}: ours {best_time(run_ours, args.repeats):.3f}s")
    # What --ae-bf16 changes (sample.py, the latent cache, rFID): bf16 autocast against fp32 on the same weights.
    z = ours.encode(x)
    y = ours.decode(z).clamp(-1, 1)
    with torch.autocast("cpu", torch.bfloat16):
        z_bf16, y_bf16 = ours.encode(x).float(), ours.decode(z).float().clamp(-1, 1)
    psnr = 10 * torch.log10(4 / (y_bf16 - y).pow(2).mean())  # images in [-1, 1]: peak-to-peak 2
    print(f"bf16 autocast vs fp32 (these weights): decode PSNR {psnr:.1f} dB (outputs std {y.std():.3f}), latent "
          f"relative error {(z_bf16 - z).norm() / z.norm():.2e}, finite={bool(torch.isfinite(y_bf16).all())}")
    if args.compile:
        compiled = torch.compile(ours.decoder, fullgraph=True)
        compiled(ours.encode(x))
        print("torch.compile(decoder, fullgraph=True): ok (no graph breaks)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(ae_lib.AE_CONFIGS), default="dc-ae-f32c128-1.5")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also check torch.compile(fullgraph=True)")
    main(p.parse_args())
