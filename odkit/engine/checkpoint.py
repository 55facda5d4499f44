"""Resume checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain Python values (dicts, lists, tuples, numbers,
strings), so it loads without unpickling arbitrary objects. RNG states of ``random`` and
``numpy`` are converted to such values by :func:`rng_state` and restored by
:func:`set_rng_state`.
"""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odkit.errors import OdkitError
from odkit.weights.format import atomic_write_bytes

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors and plain values only) atomically to ``path``."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def snapshot(state: Any) -> Any:
    """A copy of ``state`` whose tensors are detached clones (containers copied, other values shared)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return state


class CheckpointSaver:
    """Writes checkpoints on a background thread, so training goes on while the file is
    serialised and synced to disk (a tenth of a second or more per epoch).

    :meth:`submit` takes a snapshot of the state at once (later training steps do not change what
    is written) after waiting for the previous write; :meth:`wait` waits for the pending write
    and raises its error, if any. At most one write is in flight.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, path: str | Path, state: dict[str, Any]) -> None:
        self.wait()
        snap = snapshot(state)

        def work() -> None:
            try:
                save_checkpoint(path, snap)
            except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
                self._error = e

        self._thread = threading.Thread(target=work, name="odkit-checkpoint", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the write in flight; raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        """Wait for the write in flight; log (not raise) its error (for cleanup paths)."""
        try:
            self.wait()
        except Exception as e:  # noqa: BLE001 - cleanup must not mask the error being handled
            log.error("writing the checkpoint failed: %s", e)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises :class:`OdkitError` naming the file if it is missing, truncated, corrupt, or holds
    anything other than tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise OdkitError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one clear message
        size = path.stat().st_size
        raise OdkitError(
            f"checkpoint {path} ({size} bytes) cannot be read: it is truncated, corrupt or holds "
            f"objects other than tensors and plain values ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from e
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise OdkitError(f"checkpoint {path} is not an odkit training checkpoint (no 'model'/'epoch' entries)")
    return state


def rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states of python ``random``, numpy, torch (CPU and CUDA) and the loader's generator,
    as tensors and plain values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore the states saved by :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])
