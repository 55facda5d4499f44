"""Reading foreign checkpoints safely: ``torch.load(weights_only=True)`` or safetensors, nothing else.

A ``.pth`` / ``.pt`` / ``.tar`` file is unpickled only by PyTorch's restricted ``weights_only``
unpickler, which builds tensors and plain containers and refuses any other object before creating
it; such a refusal becomes a :class:`~odkit.errors.ConfigError` naming the file and the objects it
asks for. ``.safetensors`` files hold no code at all. The state dict is then taken out of the usual
wrappers (``"model"``, ``"state_dict"``, ``"model_state_dict"``, a DDP ``module.`` prefix).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from odkit.errors import ConfigError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pth", ".pt", ".tar")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Keys under which training code commonly nests the state dict, in the order they are tried.
NESTING_KEYS = ("model", "state_dict", "model_state_dict")

StateDict = dict[str, torch.Tensor]


def _unsafe_globals(path: Path) -> list[str]:
    """Names of the objects a pickle asks for beyond what ``weights_only`` allows (scan only)."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if scan is None:
        return []
    try:
        return list(scan(str(path)))
    except Exception:  # noqa: BLE001 - the scan is only used to word the error
        return []


def read_pickle_checkpoint(path: Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a refusal becomes ``ConfigError``."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needed = _unsafe_globals(path)
        what = f" (it asks for {', '.join(needed[:8])})" if needed else ""
        raise ConfigError(
            f"{path}: refused; the checkpoint holds objects other than tensors and plain containers{what}. "
            f"odkit reads .pth/.pt/.tar files only with torch.load(weights_only=True) and never runs code "
            f"from them. If you trust the file, re-save just its state dict (or save it as .safetensors)."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from e


def read_safetensors(path: Path) -> StateDict:
    """All tensors of a ``.safetensors`` file (``ConfigError`` when it is not one)."""
    from safetensors.torch import load_file

    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise ConfigError(f"{path}: named .safetensors but is a pickle / torch zip file; refused")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ConfigError(f"{path}: cannot be read as safetensors ({e})") from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and any(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, name: str = "checkpoint") -> StateDict:
    """The tensor state dict inside a loaded checkpoint.

    Descends into ``"model"`` / ``"state_dict"`` / ``"model_state_dict"`` (repeatedly) until a mapping
    of tensors is found, keeps only tensor values and strips a ``module.`` prefix shared by all keys.
    """
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        inner = next((obj[k] for k in NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
        seen += 1
    if not _is_state_dict(obj):
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ConfigError(
            f"{name}: no state dict found (looked under {', '.join(NESTING_KEYS)}); top-level content: {keys}"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    skipped = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if skipped:
        log.debug("%s: ignoring %d non-tensor entries: %s", name, len(skipped), skipped[:5])
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _scalars(obj: Any) -> dict[str, Any]:
    """Top-level plain values of a checkpoint container (epoch counters and the like)."""
    if not isinstance(obj, Mapping) or _is_state_dict(obj):
        return {}
    return {str(k): v for k, v in obj.items() if isinstance(v, (int, float, str, bool))}


def read_checkpoint(src: str | Path | Mapping[str, Any]) -> tuple[StateDict, dict[str, Any]]:
    """``(state_dict, info)`` of ``src``: a ``.pth`` / ``.pt`` / ``.tar`` (``weights_only`` only), a
    ``.safetensors`` file, or an in-memory mapping (unwrapped like a loaded file). ``info`` holds the
    container's top-level plain values (e.g. YOLOX's ``start_epoch``)."""
    if isinstance(src, Mapping):
        return unwrap_state_dict(src, "state dict"), _scalars(src)
    path = Path(src)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return unwrap_state_dict(read_safetensors(path), str(path)), {}
    if suffix in PICKLE_SUFFIXES:
        obj = read_pickle_checkpoint(path)
        return unwrap_state_dict(obj, str(path)), _scalars(obj)
    raise ConfigError(
        f"{path}: unsupported checkpoint type {suffix or '(no suffix)'}; expected one of "
        f"{', '.join(PICKLE_SUFFIXES + SAFETENSORS_SUFFIXES)}"
    )


def read_state_dict(src: str | Path | Mapping[str, Any]) -> StateDict:
    """The state dict of ``src`` (see :func:`read_checkpoint`)."""
    return read_checkpoint(src)[0]
