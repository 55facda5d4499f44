"""Python API: ``odkit.train(...)`` and ``odkit.load(path)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from odkit.engine.config import TrainConfig
from odkit.engine.predictor import Predictor, build_from_meta
from odkit.engine.trainer import TrainResult
from odkit.engine.weights import load_weights
from odkit.errors import OdkitError


def train(data: str | Path | TrainConfig | None = None, callbacks: dict[str, Any] | None = None,
          **kwargs: Any) -> TrainResult:
    """Train a detector; keyword arguments are :class:`~odkit.engine.config.TrainConfig` fields
    (the ``odkit train`` flags: ``model``, ``img``, ``epochs``, ``batch``, ``time`` minutes, ...).

    Returns a :class:`~odkit.engine.trainer.TrainResult` (``run_dir``, ``best``, ``last``,
    ``metrics``). Example: ``odkit.train("data.yaml", epochs=30, img=320)``.
    """
    from odkit.engine.trainer import Trainer

    if isinstance(data, TrainConfig):
        cfg = data
    else:
        if data is not None:
            kwargs["data"] = str(data)
        cfg = TrainConfig.from_dict(kwargs)
    if not cfg.data and not cfg.resume:
        raise OdkitError("train: a dataset (data=...) is required unless resuming")
    return Trainer(cfg, callbacks).fit()


def load(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Rebuild a trained model from ``<name>.safetensors`` + its JSON sidecar (or a run directory,
    meaning its ``weights/best.safetensors``). Never unpickles: ``.pt`` / pickle files are refused."""
    p = Path(path)
    if p.is_dir():
        cand = p / "weights" / "best.safetensors"
        p = cand if cand.exists() else p / "best.safetensors"
    state, meta = load_weights(p)
    model = build_from_meta(meta)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OdkitError(
            f"{p}: weights do not fit model {meta['model']!r} with {meta['num_classes']} classes "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})"
        )
    return Predictor(model, meta, device)
