"""The autoencoder's loss (paper Sec. 3.2): l(x, D(z * mask_{c,c'})) = L1 + perceptual (LPIPS) +
GAN, with the PatchGAN discriminator of the third DC-AE phase (Sec. 4.1). The official loss code is
unreleased; AELoss states each choice and its source. train_ae.py trains with it; eval_ae.py
measures LPIPS with the same network (build_lpips).

    python -c "import ae_loss, torch; print(ae_loss.PatchDiscriminator(8)(
        torch.zeros(2, 3, 32, 32)).shape)"
"""
import os
import socket
import sys
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


# LPIPS(VGG): the perceptual term of the loss, and a metric of eval_ae.py (Table 1). Its VGG16
# trunk is torchvision's, which lpips loads from the torch hub cache.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"


def vgg16_weights():
    """The path of torchvision's VGG16 weights in the torch hub cache, downloaded quietly if
    missing (LPIPS needs them). Offline without the file: one RuntimeError line that says what is
    missing and where to put it. A failure is remembered, so a process tries the network once."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(VGG16_URL))
    if not os.path.isfile(path) and not vgg16_weights.failed:
        timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # a closed network should fail in seconds, not hang
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            torch.hub.download_url_to_file(VGG16_URL, path, progress=False)
        except Exception as e:  # URLError, socket errors, HTTP errors
            vgg16_weights.failed = (f"LPIPS needs the VGG16 weights {os.path.basename(path)} "
                                    f"(download failed: {type(e).__name__}); "
                                    f"put the file at {path} (from {VGG16_URL})")
        finally:
            socket.setdefaulttimeout(timeout)
    if vgg16_weights.failed:
        raise RuntimeError(vgg16_weights.failed)
    return path


vgg16_weights.failed = None


def build_lpips(random_weights=False):
    """LPIPS(VGG) from the `lpips` package, frozen: the perceptual term of the AE
    loss (Sec. 3.2) and a metric of eval_ae.py. Its linear heads ship in the wheel;
    the VGG16 trunk is torchvision's (vgg16_weights). Offline without the file this
    raises one line, unless random_weights=True (tests, smoke runs), which warns: a
    random trunk is *not* a perceptual loss."""
    import lpips
    if random_weights:
        print("WARNING: LPIPS uses a randomly initialised VGG16 trunk (no pretrained weights): "
              "the perceptual loss is not meaningful.", file=sys.stderr)
    else:
        vgg16_weights()  # in the cache from here on: torchvision loads it without a download
    # Seeded, without touching the caller's RNG: a random trunk is the same network in every
    # process and on every rank (the pretrained one overwrites its random init).
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        # lpips passes `pretrained=`
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\.")
        torch.manual_seed(0)
        net = lpips.LPIPS(net="vgg", pnet_rand=random_weights, verbose=False)
    return net.eval().requires_grad_(False)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix's NLayerDiscriminator, as in taming/SD): 4x4 convs, LeakyReLU 0.2,
    BatchNorm. x (N, 3, H, W) -> logits (N, 1, H/8 - 2, W/8 - 2) for n_layers = 3."""

    def __init__(self, width=64, n_layers=3):
        super().__init__()
        layers = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        w = width
        for i in range(1, n_layers + 1):
            w_next = width * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(w, w_next, 4, stride, 1, bias=False), nn.BatchNorm2d(w_next),
                       nn.LeakyReLU(0.2)]
            w = w_next
        layers.append(nn.Conv2d(w, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN init, as pix2pix
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.main(x)


class AELoss(nn.Module):
    """l(x, D(z * mask)) = w_l1 * L1 + w_lpips * LPIPS + w_gan * GAN (Sec. 3.2; three DC-AE phases,
    Sec. 4.1).

    The official loss code is unreleased; defaults and their sources:
    - w_l1 = 1.0: the pixel term is the anchor; every DC-AE phase uses it
      (efficientvit issue #143).
    - w_lpips = 1.0: LPIPS(VGG) with weight 1.0, as SD's LPIPSWithDiscriminator (community DC-AE
      reproductions use 0.25-1.0); phases 1 and 2 use L1 + perceptual only (issue #143).
    - w_gan = 0.1 with a hinge loss and a PatchGAN, from gan_start on: DC-AE adds the GAN only in
      phase 3 (local refinement). A fixed weight instead of taming's adaptive one, because the
      adaptive weight needs gradients of the decoder's last layer, which FSDP shards; 0.1 is the
      common fixed choice (e.g. MaskGIT). No KL term: DC-AE is a plain autoencoder
      (efficientvit issue #155).
    """

    def __init__(self, lpips_net, discriminator=None, w_l1=1.0, w_lpips=1.0, w_gan=0.1,
                 gan_start=0):
        super().__init__()
        self.lpips = lpips_net  # frozen, outside FSDP (None: L1 only, the tiny CPU recipe)
        self.discriminator = discriminator
        self.w_l1, self.w_lpips, self.w_gan, self.gan_start = w_l1, w_lpips, w_gan, gan_start

    def forward(self, x, x_rec, step=0):
        """Generator-side loss. x, x_rec (N, 3, H, W) in [-1, 1]. Returns
        (loss, {term: float tensor})."""
        l1 = (x_rec - x).abs().mean()
        loss, terms = self.w_l1 * l1, {"l1": l1.detach()}
        if self.lpips is not None and self.w_lpips > 0:
            lp = self.lpips(x_rec.float(), x.float()).mean()  # LPIPS expects [-1, 1]
            loss = loss + self.w_lpips * lp
            terms["lpips"] = lp.detach()
        if self.discriminator is not None and step >= self.gan_start:
            gan = -self.discriminator(x_rec).mean()  # hinge generator loss
            loss = loss + self.w_gan * gan
            terms["gan"] = gan.detach()
        return loss, terms

    def discriminator_loss(self, x, x_rec):
        """Hinge loss for the PatchGAN: mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))), halved;
        x_rec is detached, so this loss trains the discriminator alone."""
        real = self.discriminator(x)
        fake = self.discriminator(x_rec.detach())
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
