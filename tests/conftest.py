"""Shared test fixtures and helpers: one thread for tiny tensors, random parameters and norm statistics, and the run
folder as the trainers leave it (metrics.jsonl, ckpt_*.pt)."""
import glob
import json
import os

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors: a second intra-op thread only adds synchronisation, and on a busy 2-core machine its
    spin-waits made the model and diffusion tests 20x slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomize_(model, std=0.1, seed=0):
    """DiT starts with a zero output (adaLN-Zero); give every parameter a value so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def randomize_norms(model):
    """Give norms non-trivial affine parameters and statistics, so that round trips are a real check."""
    import ae as ae_lib
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (ae_lib.RMSNorm2d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def records(out):
    """The records of a run folder's metrics.jsonl, in order."""
    with open(os.path.join(out, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def checkpoints(out):
    """A run folder's ckpt_*.pt paths, oldest first."""
    return sorted(glob.glob(os.path.join(out, "ckpt_*.pt")))
