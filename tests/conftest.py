"""Suite-wide settings: ``odkit.load`` runs PyTorch unless a test asks for a graph runtime (the
default ``auto`` would export a graph per loaded model; the backend tests pass ``backend=``)."""

from __future__ import annotations

import os

os.environ.setdefault("ODKIT_BACKEND", "torch")
