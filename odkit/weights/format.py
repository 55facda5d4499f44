"""odkit's weights file format, read and written here only: ``<name>.safetensors`` plus a
``<name>.json`` sidecar.

The sidecar (also embedded in the safetensors header as ``metadata["odkit"]``) holds the model
name, number of classes, class names, image size, training arguments and metrics, which is all
that is needed to rebuild the model. Nothing here unpickles anything: a pickle or ``.pt`` file is
refused with a clear error. Files are written atomically (:func:`atomic_write_bytes`, also used for
training checkpoints).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

from odkit.errors import OdkitError

FORMAT_VERSION = 1


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

    ``meta`` must contain ``model`` (zoo name) and ``num_classes``; ``class_names``, ``img_size``,
    ``train_args`` and ``metrics`` are recommended. Returns the safetensors path.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise OdkitError(f"weights file {path} must end in .safetensors")
    for key in ("model", "num_classes"):
        if key not in meta:
            raise OdkitError(f"weights metadata for {path} lacks {key!r}")
    meta = _jsonable({"format_version": FORMAT_VERSION, **meta})
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
    """The sidecar of ``path`` if present, else its ``embedded`` metadata; must name model and classes."""
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
    for key in ("model", "num_classes"):
        if key not in meta:
            raise OdkitError(f"weights metadata of {path} lacks {key!r}")
    return meta


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
