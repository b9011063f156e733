"""Helpers of tests/test_fid_adm.py: a stand-in for the FID Inception, cheap enough for hundreds of
images, and the body of its torchrun test (run as a script under torch.distributed.run).

TinyInception has the FID Inception's interface and output shapes (pool (N, 2048), logits
(N, 1008), spatial (N, 7, 17, 17), `fc.weight`, both input pipelines, lists of images of different
sizes), and each image's features depend on that image alone, through fixed random projections of
its 16 x 16 thumbnail. It tests what fid.py does with features (statistics, gathering, order, the
metrics); tests/test_fid.py and the parity tests test the network itself.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/fid_helper.py DIR
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fid  # noqa: E402
import fsdp  # noqa: E402
import inception  # noqa: E402


class TinyInception(torch.nn.Module):
    """images -> pool (N, 2048), logits (N, 1008), spatial (N, 7, 17, 17), as
    inception.InceptionV3, from fixed random projections of each image's 16 x 16 thumbnail
    (seeded: the same everywhere)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = 3 * 16 * 16
        self.register_buffer("P", torch.randn(inception.DIMS, d, generator=g) / d ** 0.5)
        self.register_buffer("Q", torch.randn(inception.SPATIAL_DIMS, d, generator=g) / d ** 0.5)
        self.fc = torch.nn.Linear(inception.DIMS, inception.NUM_CLASSES)
        with torch.no_grad():  # logits that differ between images by O(1): IS well above 1
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.1)

    def thumbnail(self, x, pipeline):
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        if pipeline == "torch-fidelity":  # another input pipeline gives other features, as in IS
            x = x.flip(-1) ** 2
        return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False) - 0.5

    def forward(self, x, pipeline="pytorch-fid"):
        if isinstance(x, (list, tuple)):
            x = torch.cat([self.thumbnail(image[None], pipeline) for image in x])
        else:
            x = self.thumbnail(x, pipeline)  # (N, 3, 16, 16)
        x = x.flatten(1).double()  # float64: each row's result is independent of the batch
        pool = F.relu(x @ self.P.double().T).float()  # (N, 2048)
        spatial = F.relu(x @ self.Q.double().T).float()  # (N, 17 * 17 * 7), taken as (H, W, C)
        spatial = spatial.reshape(-1, 17, 17, 7).permute(0, 3, 1, 2)  # (N, 7, 17, 17) as the model
        return pool, pool @ self.fc.weight.T, spatial


def smooth_images(n, size, seed):
    """n smooth random uint8 images (n, size, size, 3): upsampled 4 x 4 noise."""
    coarse = np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    x = F.interpolate(torch.from_numpy(coarse).permute(0, 3, 1, 2), size=(size, size),
                      mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).numpy().astype(np.uint8)


def chunks_of(n, chunk):
    """sample.py's evaluation chunks: chunk k holds the global indices [k chunk, (k + 1) chunk)."""
    return [np.arange(k, min(k + chunk, n)) for k in range(0, n, chunk)]


def main(folder):
    """Under torchrun: a reference loaded once, then two evaluations fed as sample.py feeds them
    (chunk k on rank k % world, with its global indices), and compute_metrics on the .npz files;
    rank 0 writes the results and the gathered features to FOLDER/ranks.json."""
    rank, world, device = fsdp.setup()
    model = TinyInception()
    samples = np.load(os.path.join(folder, "samples.npz"))["arr_0"]  # (N, H, W, 3)
    ref = fid.load_reference(os.path.join(folder, "ref.npz"), model, batch_size=3, num_workers=0)
    results = {}
    for protocol, chunk, batch_size in (("adm", 5, 2), ("torch-fidelity", 7, 4)):
        features = fid.Features(model, device, batch_size, protocol)
        for k, index in enumerate(chunks_of(len(samples), chunk)):
            if k % world == rank:
                x = torch.from_numpy(samples[index]).permute(0, 3, 1, 2)  # (n, 3, H, W)
                features.update(x, index)
        results[protocol] = fid.metrics(features, ref)
        results[protocol + " again"] = fid.metrics(features, ref)  # reused: the same numbers
        index, pool, _ = features.gathered()
        results[protocol + " gathered"] = {"index": index.tolist(),
                                           "pool_sum": pool.sum(1).tolist()}
    # In-memory shards without indices (compute_metrics' images): rank r holds the r-th contiguous
    # part, and the ranks follow each other.
    shard = samples[len(samples) * rank // world:len(samples) * (rank + 1) // world]
    features = fid.Features(model, device, 4, "torch-fidelity")
    features.update(torch.from_numpy(shard).permute(0, 3, 1, 2))
    results["in memory"] = fid.metrics(features, ref)
    results["compute_metrics"] = fid.compute_metrics(
        os.path.join(folder, "samples.npz"), os.path.join(folder, "ref.npz"), model=model,
        batch_size=3, num_workers=0, progress=False, is_protocol="torch-fidelity")
    if rank == 0:
        with open(os.path.join(folder, "ranks.json"), "w") as fh:
            json.dump({"world": world, **results}, fh)
    fsdp.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
