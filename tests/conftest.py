"""Shared test fixtures."""
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
