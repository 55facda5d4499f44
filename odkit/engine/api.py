"""Python API: ``odkit.train(...)`` and ``odkit.load(path)``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from odkit.arguments import RENAMED_TRAIN, renamed_keywords
from odkit.engine.config import TrainConfig
from odkit.engine.predictor import Predictor, build_from_meta
from odkit.engine.trainer import TrainResult
from odkit.errors import OdkitError
from odkit.weights.format import load_weights


@contextmanager
def shown_logs() -> Iterator[None]:
    """While a program that has configured no logging runs odkit, odkit's INFO messages (the data
    check, the recipe, progress) go to stderr as on the command line; configured logging is left alone."""
    log = logging.getLogger("odkit")
    if logging.getLogger().handlers or log.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def train(data: str | Path | TrainConfig | None = None, callbacks: dict[str, Any] | None = None,
          **kwargs: Any) -> TrainResult:
    """Train a detector; keyword arguments are :class:`~odkit.engine.config.TrainConfig` fields
    (the ``odkit train`` flags: ``model``, ``img_size`` (``--img``), ``epochs``, ``batch``, ``time``
    minutes, ``weights``, ``freeze``, ``conf`` / ``iou`` / ``max_det`` of validation, ...; ``img``,
    ``conf_thr`` and ``iou_thr`` are deprecated names).

    Values not given come from the model's recipe adapted to the data set and budget
    (:func:`odkit.engine.recipe.resolve`; the effective recipe is logged and kept in
    ``result.recipe``); a complete ``TrainConfig`` passed as ``data`` is used as it is.
    Returns a :class:`~odkit.engine.trainer.TrainResult` (``run_dir``, ``best``, ``last``,
    ``metrics``, ``recipe``). Example: ``odkit.train("data.yaml", time=10)``. Without logging
    configured, the data check, recipe and progress are shown on stderr as by ``odkit train``
    (:func:`shown_logs`).
    """
    from odkit.engine.trainer import Trainer

    if isinstance(data, TrainConfig):
        if kwargs:
            raise OdkitError("train: pass either a complete TrainConfig or keyword arguments, not both")
        request: TrainConfig | dict[str, Any] = data
    else:
        if data is not None:
            kwargs["data"] = str(data)
        kwargs = renamed_keywords(kwargs, "odkit.train", RENAMED_TRAIN)
        TrainConfig.check_names(kwargs)
        if not kwargs.get("data") and not kwargs.get("resume"):
            raise OdkitError("train: a dataset (data=...) is required unless resuming")
        request = kwargs
    with shown_logs():
        return Trainer(request, callbacks).fit()


def load(path: str | Path, device: str | torch.device = "cpu", compile: bool = False) -> Predictor:
    """Rebuild a trained model from ``<name>.safetensors`` + its JSON sidecar (or a run directory,
    meaning its ``weights/best.safetensors``). Never unpickles: ``.pt`` / pickle files are refused.
    ``compile``: run the network through ``torch.compile`` (eager with a warning where it fails)."""
    p = Path(path)
    if p.is_dir():
        cand = p / "weights" / "best.safetensors"
        p = cand if cand.exists() else p / "best.safetensors"
    state, meta = load_weights(p)
    model = build_from_meta(meta)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OdkitError(
            f"{p}: weights do not fit model {meta['model_config']['name']!r} with "
            f"{meta['model_config']['num_classes']} classes "
            f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})"
        )
    return Predictor(model, meta, device, compile=compile)
