"""Deterministic synthetic weights for a reference state-dict layout (key names and shapes), used to
compare odkit with a reference implementation without downloading weights.

Values come from NumPy's legacy ``RandomState`` (stable across NumPy and PyTorch versions): convs and
linears ~ N(0, gain / fan_in), norm scales ~ U(0.5, 1.5), shifts and biases ~ N(0, 0.1), running
means ~ N(0, 0.1), running variances ~ U(0.5, 1.5). Class-logit biases (keys ending ``cls_logits.bias``)
~ N(-2, 1), so that scores spread around the usual score thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def layout(path: str | Path) -> dict[str, list[int]]:
    """``{key: shape}`` of a committed key fixture (``tests/fixtures/torchvision_keys/*.json``)."""
    return json.loads(Path(path).read_text())["state_dict"]


def synthetic_state_dict(shapes: dict[str, list[int]], seed: int = 0, gain: float = 0.5) -> dict[str, torch.Tensor]:
    """A state dict with the given keys and shapes filled deterministically (see the module docstring)."""
    rng = np.random.RandomState(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0, dtype=torch.long)
            continue
        n = int(np.prod(shape)) if shape else 1
        if key.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, n)
        elif key.endswith("running_mean"):
            v = rng.normal(0.0, 0.1, n)
        elif key.endswith("cls_logits.bias"):
            v = rng.normal(-2.0, 1.0, n)
        elif key.endswith("weight") and len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, np.sqrt(gain / fan_in), n)
        elif key.endswith("weight"):
            v = rng.uniform(0.5, 1.5, n)
        else:
            v = rng.normal(0.0, 0.1, n)
        out[key] = torch.from_numpy(v.astype(np.float32).reshape(shape))
    return out
