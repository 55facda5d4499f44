"""Machine-level setup for training and inference: device, threads, seeds, determinism, autocast."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch

from odkit.errors import ConfigError

log = logging.getLogger(__name__)


def select_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (``cuda:<local_rank>``) if available else CPU; otherwise as given
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"0"``)."""
    if isinstance(device, torch.device):
        return device
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if d.isdigit():
        d = f"cuda:{d}"
    if d == "cuda":
        d = f"cuda:{local_rank}"
    try:
        dev = torch.device(d)
    except RuntimeError as e:
        raise ConfigError(f"--device {device!r} is not a device (use cpu, cuda, cuda:N or auto)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return dev


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None = None, local_world_size: int = 1) -> int:
    """``torch.set_num_threads``: ``threads`` if given, else the machine's cores shared among the
    processes of this node. Returns the number set."""
    n = int(threads) if threads else max(1, cpu_count() // max(local_world_size, 1))
    torch.set_num_threads(n)
    return n


def default_workers(device: torch.device, processes: int = 1, cores: int | None = None) -> int:
    """Data loader worker processes per training process when ``--workers`` is not given.

    CUDA: cores - 1, at most 8. CPU: the loader's processes take cores from the training threads,
    and one busy core stalls all of them at each parallel region, so up to 2 cores per training
    process the main process loads the batches itself (measured faster on a 2-core machine);
    with more, a quarter of the cores (at most 4)."""
    cores = (cpu_count() if cores is None else int(cores)) // max(processes, 1)
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 2 else min(4, cores // 4)


# glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Ask glibc's malloc to keep freed blocks up to ``limit_bytes`` in the process for reuse
    instead of returning them to the system (``mallopt`` M_MMAP_THRESHOLD and M_TRIM_THRESHOLD).

    A CPU training step allocates and frees the same large activation tensors every step; by
    default each block above 128 KiB is a fresh ``mmap`` whose pages are faulted in and zeroed again
    on every step (thousands of page faults, a few percent of a small model's step). With this
    setting the memory stays at its peak and is reused. Process-wide, values unchanged; returns
    False (and does nothing) where the C library is not glibc."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # older glibc refuses an mmap threshold above 32 MiB: take the largest it accepts
        ok = any(libc.mallopt(_M_MMAP_THRESHOLD, int(v)) == 1 for v in (limit_bytes, 32 << 20))
        ok = libc.mallopt(_M_TRIM_THRESHOLD, int(limit_bytes)) == 1 and ok
    except (OSError, AttributeError):  # pragma: no cover - no mallopt
        return False
    if ok:
        log.debug("malloc keeps freed blocks up to %d MiB for reuse", limit_bytes >> 20)
    return ok


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    """``torch.use_deterministic_algorithms`` (and cuDNN flags) on or off."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=False)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on and torch.cuda.is_available()


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True if the CPU has AVX512-BF16 or AMX-BF16 (fast bf16 matmul/conv)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype for ``--amp``: fp16 on CUDA, bf16 on CPU; None when off. Warns when bf16 is
    chosen on a CPU without native bf16 support (it then runs slower than fp32)."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if not cpu_has_native_bf16():
        log.warning(
            "--amp on CPU uses bf16 autocast, but this CPU has no native bf16 (no AVX512-BF16 / AMX): "
            "expect it to be SLOWER than fp32 here; drop --amp for speed"
        )
    return torch.bfloat16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op when ``dtype`` is None."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
