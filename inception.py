"""The InceptionV3 of the FID literature: pytorch-fid's port of the TensorFlow graph of 2015-12-05,
whose features every FID, sFID, Inception Score and precision/recall number of the paper is
computed from (Sec. 4.1, App. B; fid.py).

Same module names and shapes as torchvision's Inception3 (num_classes=1008, no AuxLogits), so the
released weights `pt_inception-2015-12-05-6726825d.pth` load with strict key checking; the FID
graph differs in its pool branches (average pools exclude the padding, Mixed_7c's pool branch is a
max pool), and FID numbers depend on that.

One forward gives the three outputs the ADM evaluator reads from the TF graph: pool_3 (FID,
precision/recall), the logits without bias (Inception Score) and the spatial features of
`mixed_6/conv` (sFID). Two input pipelines: pytorch-fid's (FID, the default) and torch-fidelity's
TF1-style one (DC-Gen's Inception Score).

    python -c "import inception; m = inception.load_inception('random'); print(sum(p.numel()
        for p in m.parameters()))"
"""
import os
import warnings

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
DIMS = 2048  # pool3 features
NUM_CLASSES = 1008  # the TF graph's 1000 ImageNet classes + 8 unused
SPATIAL_CHANNELS = 7  # sFID: the first 7 channels of mixed_6/conv (ADM's `spatial[..., :7]`)
SPATIAL_DIMS = 17 * 17 * SPATIAL_CHANNELS  # 2023
RANDOM_SEED = 0  # load_inception("random"): the same network in every process and on every rank

#################################################################################
#                    InceptionV3 of the FID literature (TF 2015-12-05)          #
#################################################################################
# Same module names and shapes as torchvision's Inception3 (num_classes=1008, no AuxLogits); the
# FID graph differs in its pool branches: average pools exclude the padding
# (count_include_pad=False) and Mixed_7c's pool branch is a max pool (a quirk of the TF graph that
# FID numbers depend on).


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def pool_branch(x, pool):
    # "avg": 3x3 average that divides by the number of real (unpadded) pixels, as in TF;
    # "max": Mixed_7c.
    if pool == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # Mixed_5b, 5c, 5d: 35x35
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(pool_branch(x, "avg"))
        return torch.cat([b1, b5, b3, bp], dim=1)  # (N, 224 + pool_features, 35, 35)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], dim=1)  # (N, 768, 17, 17)


class InceptionC(nn.Module):  # Mixed_6b..6e: 17x17, factorized 7x7
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            b7d = conv(b7d)
        bp = self.branch_pool(pool_branch(x, "avg"))
        return torch.cat([b1, b7, b7d, bp], dim=1)  # (N, 768, 17, 17)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)  # (N, 1280, 8, 8)


class InceptionE(nn.Module):  # Mixed_7b (avg pool branch), Mixed_7c (max pool branch): 8x8
    def __init__(self, in_channels, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)  # (N, 768, 8, 8)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        # (N, 768, 8, 8)
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], dim=1)
        bp = self.branch_pool(pool_branch(x, self.pool))
        return torch.cat([b1, b3, b3d, bp], dim=1)  # (N, 2048, 8, 8)


#################################################################################
#     Input pipelines: pytorch-fid's (FID) and torch-fidelity's (DC-Gen's IS)   #
#################################################################################

def resize_tf1(x, size):
    """Bilinear resize as TensorFlow 1.x's resize_bilinear (align_corners=False, no half-pixel
    centres), which the TF graph and torch-fidelity's `inception-v3-compat` use: output pixel i
    reads the input at i * in / out (F.interpolate: at (i + 0.5) * in / out - 0.5), the
    right/bottom neighbour clamped to the last pixel. x (N, C, H, W) float -> (N, C, size, size).
    The float32 operations of torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`
    ("slow"), in the same order, so that the results agree to the last bit on CPU."""
    def grid(n_in):
        scale = torch.tensor(n_in / size, dtype=torch.float32)
        pos = torch.arange(size, dtype=x.dtype, device=x.device) * scale  # (size,)
        lo = pos.long()  # floor: pos >= 0
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(x.dtype)  # (size,) each
    y_lo, y_hi, dy = grid(x.shape[2])
    x_lo, x_hi, dx = grid(x.shape[3])
    top, bottom = x[:, :, y_lo], x[:, :, y_hi]  # (N, C, size, W)
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx  # (N, C, size, size)
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy[:, None]


def preprocess(x, pipeline="pytorch-fid"):
    """images (N, 3, H, W), uint8 in [0, 255] or float in [0, 1] -> the network's input
    (N, 3, 299, 299).

    "pytorch-fid" (FID, sFID, ADM's IS, precision/recall; DC-Gen's FID): [0, 1] images,
    F.interpolate bilinear (align_corners=False) to 299, then 2x - 1. "torch-fidelity" (DC-Gen's
    IS, the paper's): the uint8 values as floats, TF1-style bilinear to 299, then (x - 128) / 128,
    as the TF graph does after its ResizeBilinear. A float image is first rounded to uint8 as
    DC-Gen rounds it for torch-fidelity (255 x + 0.5, clamped)."""
    if pipeline == "torch-fidelity":
        if x.is_floating_point():
            x = (255 * x + 0.5).clamp(0, 255).to(torch.uint8)
        x = x.float()
        if x.shape[-2:] != (299, 299):
            x = resize_tf1(x, 299)
        return (x - 128) / 128
    if pipeline != "pytorch-fid":
        raise ValueError(f"unknown input pipeline {pipeline!r}: 'pytorch-fid' or "
                         f"'torch-fidelity'")
    if x.dtype == torch.uint8:
        x = x.float() / 255
    # At 299 the resize is the identity, so it is skipped.
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


#################################################################################
#                                  The network                                  #
#################################################################################

class InceptionV3(nn.Module):
    """images -> pool (N, 2048), logits (N, 1008), spatial (N, 7, 17, 17): see forward."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(DIMS, NUM_CLASSES)

    def forward(self, x, pipeline="pytorch-fid"):
        """x: images (N, 3, H, W), uint8 in [0, 255] or float in [0, 1], or a list of N (3, H, W)
        images of different sizes (each resized to 299 alone). pipeline: see preprocess.
        -> pool (N, 2048): pool_3 of the TF graph, the FID features;
           logits (N, 1008): pool_3 @ fc.weight.T without the bias (ADM's IS; torch-fidelity's
           "logits_unbiased");
           spatial (N, 7, 17, 17): the first 7 channels of mixed_6/conv (sFID)."""
        if isinstance(x, (list, tuple)):
            x = torch.cat([preprocess(image[None], pipeline) for image in x])
        else:
            x = preprocess(x, pipeline)  # (N, 3, 299, 299)
        # ~20% faster convs on CPU (oneDNN) at batch 50
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d):
            x = block(x)  # ... -> (N, 768, 17, 17)
        # sFID's features, ADM's `mixed_6/conv:0`, are Mixed_6d.branch1x1's output. The TF graph
        # names its blocks in order: mixed, mixed_1, mixed_2 = Mixed_5b, 5c, 5d (35x35); mixed_3 =
        # Mixed_6a (to 17x17); mixed_4, 5, 6, 7 = Mixed_6b, 6c, 6d, 6e (17x17); mixed_8 = Mixed_7a
        # (to 8x8); mixed_9, 10 = Mixed_7b, 7c. Inside a block, `conv` is the 1x1 branch (our
        # branch1x1) and `tower`, `tower_1`, `tower_2` the others; `X/conv:0` is the output of that
        # scope: conv, batch norm, ReLU (our BasicConv2d). So mixed_6/conv = Mixed_6d.branch1x1,
        # 192 channels at 17x17, of which ADM keeps the first 7. Mixed_6d concatenates branch1x1
        # first, so these are the first 7 channels of its output: no extra computation.
        spatial = x[:, :SPATIAL_CHANNELS]  # (N, 7, 17, 17)
        for block in (self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)  # ... -> (N, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (N, 2048): "pool_3" of the TF graph, the FID features
        # IS logits: the TF graph's softmax input without its bias (ADM: `softmax/logits/MatMul`).
        logits = pool @ self.fc.weight.T  # (N, 1008)
        return pool, logits, spatial


def load_inception(weights=None, device="cpu"):
    """The FID Inception in eval mode: weights = a local .pth (or its state dict), None (torch.hub
    cache, download when online) or "random" (tests and smoke runs only: metrics are meaningless;
    the same network in every process, seed RANDOM_SEED)."""
    if weights == "random":
        warnings.warn("fid.py: Inception has RANDOM weights: "
                      "FID/IS/precision/recall are meaningless")
        # Seeded, so that every process and every rank builds the same network (a --save-stats
        # run and a later comparison must use one network), in a forked RNG: the caller's random
        # streams do not move.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = InceptionV3()
            # Kaiming init keeps activations O(1) through the 94 conv+BN layers (PyTorch's default
            # init shrinks them towards 0), so features of different images differ, as tests need.
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    else:
        model = InceptionV3()
        if weights is None:
            cached = os.path.join(torch.hub.get_dir(), "checkpoints",
                                  os.path.basename(FID_WEIGHTS_URL))
            rank, world = ((dist.get_rank(), dist.get_world_size()) if dist.is_initialized()
                           else (0, 1))
            if world > 1 and rank != 0:
                # under torchrun rank 0 downloads alone, the others then read its file
                dist.barrier()
            try:
                state = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu",
                                                           progress=True)
            except Exception as e:  # offline: URLError, socket errors, HTTP errors
                raise FileNotFoundError(
                    f"could not download the FID Inception weights ({e}); "
                    f"download {FID_WEIGHTS_URL} elsewhere and put it at {cached}, "
                    f"or pass --inception-weights PATH") from e
            finally:  # also on failure: then every rank tries, fails and raises alike (no hang)
                if world > 1 and rank == 0:
                    dist.barrier()
        elif isinstance(weights, dict):
            state, weights = weights, "state dict"
        else:
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"Inception weights not found: {weights}")
            state = torch.load(weights, map_location="cpu", weights_only=True)
        # Strict, except for num_batches_tracked: the released file predates that buffer.
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatch
            raise ValueError(f"{weights}: not the FID Inception state dict: {e}") from e
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"{weights}: not the FID Inception state dict: "
                             f"missing keys {missing[:5]} ({len(missing)}), "
                             f"unexpected keys {unexpected[:5]} ({len(unexpected)})")
    return model.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)
