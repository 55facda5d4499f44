"""odkit's weights file format, read and written here only: ``<name>.safetensors`` plus a
``<name>.json`` sidecar.

The sidecar (also embedded in the safetensors header as ``metadata["odkit"]``) holds each fact once:
``model_config`` is the architecture (``name``, ``num_classes``, ``class_names``, ``img_size`` and the
builder overrides; what :func:`odkit.models.zoo.from_config` rebuilds the model from), the top level
is the record (``epoch``, ``metrics``, ``train_args``, ``recipe``, ``init``, ``class_ids``,
``imported``). Format version 1 (odkit 0.1 before this layout) also kept ``model``, ``num_classes``,
``class_names`` and ``img_size`` at the top level; :func:`canonical_meta` reads both. Nothing here unpickles anything: a pickle or ``.pt`` file is
refused with a clear error. Files are written atomically (:func:`atomic_write_bytes`, also used for
training checkpoints).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from odkit.errors import OdkitError

FORMAT_VERSION = 3
# version-1 sidecars also held these at the top level: sidecar key -> model_config key
LEGACY_TOP_LEVEL = {"model": "name", "num_classes": "num_classes", "class_names": "class_names",
                    "img_size": "img_size"}


def canonical_meta(meta: Mapping[str, Any], where: str = "weights metadata", top_level_wins: bool = False,
                   strict: bool = True) -> dict[str, Any]:
    """``meta`` in the current layout: the architecture in ``model_config`` only.

    A version-1 sidecar's top-level ``model`` / ``num_classes`` / ``class_names`` / ``img_size`` fill
    the ``model_config`` keys it lacks (``top_level_wins``: replace them; an export sidecar's
    top-level ``img_size`` was the exported size) and are dropped from the top level. Before version
    3, ``num_classes`` of a ``background_slot`` model counted the background slot too; it counts
    object classes now (one less). ``strict``:
    ``OdkitError`` naming ``where`` unless the config names the model and its number of classes.
    """
    out = dict(meta)
    cfg = dict(out.get("model_config") or {})
    # a file's layout version (version 1 had no number but top-level model facts); a meta built in
    # memory (no number, no legacy keys) is current
    version = int(out.get("format_version") or (1 if any(k in out for k in LEGACY_TOP_LEVEL) else FORMAT_VERSION))
    for top, key in LEGACY_TOP_LEVEL.items():
        if top not in out:
            continue
        value = out.pop(top)
        if value is not None and (top_level_wins or cfg.get(key) is None):
            cfg[key] = value
    if version < 3 and cfg.get("background_slot") and cfg.get("num_classes"):
        cfg["num_classes"] = int(cfg["num_classes"]) - 1
    if strict:
        for key in ("name", "num_classes"):
            if cfg.get(key) is None:
                raise OdkitError(f"{where} lacks model_config.{key} (the model it belongs to)")
    out["model_config"] = cfg
    if "format_version" in out or version < FORMAT_VERSION:
        out["format_version"] = FORMAT_VERSION  # migrated: reading it again changes nothing
    return out


def atomic_write_bytes(path: str | Path, write: Any) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file in the same directory, fsync,
    then rename over ``path`` (a crash leaves either the old or the new file, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def sidecar_path(path: str | Path) -> Path:
    """``weights/best.safetensors`` -> ``weights/best.json``."""
    return Path(path).with_suffix(".json")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        try:
            return x.item()
        except (ValueError, RuntimeError):
            return str(x)
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``state_dict`` to ``path`` (.safetensors) and ``meta`` to the JSON sidecar, atomically.

    ``meta`` must contain ``model_config`` (``model.config``: ``name``, ``num_classes``, ``class_names``,
    ``img_size``, overrides); ``epoch``, ``train_args`` and ``metrics`` are recommended. Returns the
    safetensors path.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise OdkitError(f"weights file {path} must end in .safetensors")
    meta = _jsonable({**canonical_meta(meta, f"weights metadata for {path}"), "format_version": FORMAT_VERSION})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    blob = save(tensors, metadata={"odkit": json.dumps(meta)})
    atomic_write_bytes(path, lambda f: f.write(blob))
    text = json.dumps(meta, indent=2).encode()
    atomic_write_bytes(sidecar_path(path), lambda f: f.write(text))
    return path


def _check_safetensors(path: Path) -> None:
    """Raise a clear error unless ``path`` starts like a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return  # an 8-byte header length then a JSON header: safetensors (checked before the pickle test)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise OdkitError(
            f"{path} is a pickle / torch .pt file; odkit does not unpickle weight files. "
            f"Load a .safetensors file with its JSON sidecar (runs/<name>/weights/best.safetensors)"
        )
    if len(head) < 9:
        raise OdkitError(f"{path} is too short to be a safetensors file ({len(head)} bytes)")
    raise OdkitError(f"{path} is not a safetensors file (or is truncated): bad header")


def _check_file(path: Path) -> None:
    """Raise a clear error unless ``path`` is an existing safetensors file (never a pickle)."""
    if not path.is_file():
        raise OdkitError(f"weights file {path} does not exist")
    if path.suffix in (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"):
        raise OdkitError(
            f"{path}: {path.suffix} files are pickles; odkit loads only .safetensors weights "
            f"(with their JSON sidecar) and never unpickles user files"
        )
    _check_safetensors(path)


def _meta(path: Path, embedded: str | None) -> dict[str, Any]:
    """The sidecar of ``path`` if present, else its ``embedded`` metadata, in the current layout
    (:func:`canonical_meta`); must name model and classes."""
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise OdkitError(f"weights sidecar {side} is not valid JSON: {e}") from e
    elif embedded:
        meta = json.loads(embedded)
    else:
        raise OdkitError(
            f"{path} has no JSON sidecar ({side.name}) and no embedded odkit metadata; "
            f"cannot tell which model it belongs to"
        )
    return canonical_meta(meta, f"weights metadata of {path}")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a ``.safetensors`` weights file (its sidecar, else the copy embedded in the
    file) without reading the tensors."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            embedded = (f.metadata() or {}).get("odkit")
    except Exception as e:  # noqa: BLE001
        raise OdkitError(f"{path} cannot be read as safetensors: {e}") from e
    return _meta(path, embedded)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, meta)`` from a ``.safetensors`` file and its sidecar.

    The sidecar is preferred; if it is absent the metadata embedded in the file is used.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    _check_file(path)
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            embedded = (f.metadata() or {}).get("odkit")
    except Exception as e:  # noqa: BLE001
        raise OdkitError(f"{path} cannot be read as safetensors: {e}") from e
    return state, _meta(path, embedded)
