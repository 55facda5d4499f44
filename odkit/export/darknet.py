"""``odkit export --format darknet``: odkit weights of yolov2, yolov2-tiny, yolov3 or yolov3-tiny as a
darknet ``.weights`` file and its ``.cfg`` (what darknet and PyTorch darknet readers load)."""

from __future__ import annotations

import logging
from pathlib import Path

from odkit.errors import ConfigError, OdkitError

log = logging.getLogger(__name__)


def export_darknet_files(weights: str | Path, out: str | Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write ``<out>.weights`` and ``<out>.cfg`` (default: beside the weights, same stem) from odkit
    ``weights``; returns both paths. The cfg's input size is the weights' ``img_size``."""
    from odkit.engine.predictor import build_from_meta
    from odkit.export import check_trained, resolve_weights
    from odkit.weights.darknet_cfg import darknet_cfg
    from odkit.weights.darknet_import import export_darknet
    from odkit.weights.format import load_weights

    src = resolve_weights(weights)
    state, meta = load_weights(src)
    check_trained(meta, src)
    model = build_from_meta(meta)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise OdkitError(f"{src}: weights do not fit model {model.config.get('name')!r}")
    path = Path(out) if out is not None else src.with_suffix(".weights")
    if path.is_dir():
        path = path / f"{src.stem}.weights"
    if path.suffix != ".weights":
        raise ConfigError(f"--out {path}: a darknet export ends in .weights (the .cfg is written beside it)")
    cfg_path = path.with_suffix(".cfg")
    for p in (path, cfg_path):
        if p.exists() and not force:
            raise ConfigError(f"{p} exists; pass --force to replace it (or choose another --out)")
    text = darknet_cfg(model)
    export_darknet(model.eval(), path)
    cfg_path.write_text(text)
    log.info("wrote %s and %s", path, cfg_path)
    return path, cfg_path
