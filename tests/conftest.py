"""Suite-wide settings: ``odkit.load`` runs PyTorch unless a test asks for a graph runtime (the
default ``auto`` would export a graph per loaded model; the backend tests pass ``backend=``)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ODKIT_BACKEND", "torch")


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (small tensors: as fast, and immune to a busy second core)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
