"""Darknet's ``.weights`` files: reading, writing, and the convolutions of odkit models in cfg order.

The layout is darknet's ``src/parser.c`` (``save_weights_upto`` / ``load_weights_upto``), little-endian:

- header: ``int32 major, int32 minor, int32 revision``, then the number of images seen during
  training, a ``uint64`` when ``major * 10 + minor >= 2`` (and both under 1000), else an ``int32``;
  darknet writes ``0, 2, 0``;
- then, for each convolutional layer of the cfg in layer order (``load_convolutional_weights``):
  ``n`` float32 biases (the BatchNorm beta when the layer has ``batch_normalize=1``), with BatchNorm
  ``n`` scales (gamma), ``n`` rolling means and ``n`` rolling variances, then the kernel
  ``n x c x k x k`` (PyTorch's ``[out, in, kh, kw]`` order). Other layers (max-pool, route, shortcut,
  upsample, reorg, yolo, region) hold nothing. A file may stop after any layer (``darknet partial``:
  ``darknet53.conv.74``, ``darknet19_448.conv.23``).

BatchNorm: darknet's GPU code (with which the published weights were trained) normalises with
``sqrt(var + 1e-5)``; odkit's BatchNorm has its own ``eps`` (1e-3 in the ``odkit.nn`` blocks). The
conversion keeps the eval-mode function exactly: ``var' = var + 1e-5 - eps``, and where that would be
negative ``var' = 0`` with gamma scaled by ``sqrt(eps / (var + 1e-5))`` (:func:`convert_bn`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odkit.errors import ConfigError, DataError

DARKNET_BN_EPS = 1e-5
HEADER_VERSION = (0, 2, 0)


@dataclass(frozen=True)
class Unit:
    """One darknet convolutional layer as odkit state-dict keys.

    ``weight``: the conv kernel key; ``bias``: the conv bias key (layers without BatchNorm), else
    ``None``; ``bn``: the BatchNorm prefix (``<bn>.weight``, ``.bias``, ``.running_mean``,
    ``.running_var``) or ``None``; ``bn_eps``: that norm's eps; ``shape``: kernel ``(n, c, k, k)``;
    ``stride`` of the convolution."""

    weight: str
    bias: str | None
    bn: str | None
    bn_eps: float
    shape: tuple[int, int, int, int]
    stride: int

    @property
    def size(self) -> int:
        """float32 values of the layer in a weights file."""
        n = self.shape[0]
        return n * (4 if self.bn else 1) + int(np.prod(self.shape))


@dataclass
class DarknetWeights:
    """A parsed weights file: header fields and the float32 values after it."""

    major: int
    minor: int
    revision: int
    seen: int
    values: np.ndarray


def _is_norm(m: nn.Module | None) -> bool:
    return m is not None and all(hasattr(m, k) for k in ("weight", "bias", "running_mean", "running_var"))


def _walk(module: nn.Module, prefix: str, out: list[Unit]) -> None:
    conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
    if isinstance(conv, nn.Conv2d) and (bn is None or _is_norm(bn)) and not isinstance(module, nn.Conv2d):
        if bn is None and conv.bias is None:
            raise ConfigError(f"{prefix}conv: a convolution without bias or BatchNorm has no darknet layout")
        out.append(_unit(conv, prefix + "conv", bn, prefix + "bn"))
        return
    if isinstance(module, nn.Conv2d):
        if module.bias is None:
            raise ConfigError(f"{prefix[:-1]}: a convolution without bias or BatchNorm has no darknet layout")
        out.append(_unit(module, prefix[:-1], None, ""))
        return
    if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.Linear)):
        raise ConfigError(f"{prefix[:-1]}: {type(module).__name__} outside a conv block has no darknet layout")
    for name, child in module.named_children():
        _walk(child, f"{prefix}{name}.", out)


def _unit(conv: nn.Conv2d, key: str, bn: nn.Module | None, bn_key: str) -> Unit:
    if conv.groups != 1 or conv.dilation != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
        raise ConfigError(f"{key}: only square, ungrouped, undilated convolutions have a darknet layout")
    if bn is not None and not hasattr(bn, "eps"):
        raise ConfigError(f"{bn_key}: norm without eps")
    return Unit(f"{key}.weight", None if bn is not None else f"{key}.bias", bn_key if bn is not None else None,
                float(getattr(bn, "eps", DARKNET_BN_EPS)), tuple(conv.weight.shape), int(conv.stride[0]))


def model_units(model: nn.Module, order: Sequence[str]) -> list[Unit]:
    """The darknet convolutional layers of ``model`` in cfg order: the convolutions under each module
    path of ``order`` (see :mod:`odkit.weights.tables.darknet`), walked in module order."""
    modules = dict(model.named_modules())
    units: list[Unit] = []
    for path in order:
        if path not in modules:
            raise ConfigError(f"darknet layout: the model has no module {path!r}")
        _walk(modules[path], f"{path}.", units)
    return units


def read_darknet(path: str | Path) -> DarknetWeights:
    """Read a darknet weights file (``DataError`` for a file too short for its header or whose
    payload is not whole float32 values)."""
    p = Path(path)
    data = p.read_bytes()
    if len(data) < 16:
        raise DataError(f"{p}: {len(data)} bytes, too short for a darknet weights header")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000:
        if len(data) < 20:
            raise DataError(f"{p}: {len(data)} bytes, too short for a darknet weights header (version {major}.{minor})")
        (seen,), start = struct.unpack_from("<Q", data, 12), 20
    else:
        (seen,), start = struct.unpack_from("<i", data, 12), 16
    if major < 0 or minor < 0 or revision < 0:
        raise DataError(f"{p}: header version {major}.{minor}.{revision} is not a darknet weights file")
    if (len(data) - start) % 4:
        raise DataError(f"{p}: {len(data) - start} bytes after the header, not a whole number of float32 values")
    values = np.frombuffer(data, dtype="<f4", offset=start).astype(np.float32)
    return DarknetWeights(major, minor, revision, int(seen), values)


def convert_bn(gamma: torch.Tensor, var: torch.Tensor, eps_from: float, eps_to: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gamma', var')`` with ``gamma' / sqrt(var' + eps_to) == gamma / sqrt(var + eps_from)`` and
    ``var' >= 0`` (the same eval-mode BatchNorm under another eps)."""
    g, v = gamma.double(), var.double()
    v2 = v + eps_from - eps_to
    low = v2 < 0
    v2 = torch.where(low, torch.zeros_like(v2), v2)
    g2 = torch.where(low, g * torch.sqrt(eps_to / (v + eps_from)), g)
    return g2.to(gamma.dtype), v2.to(var.dtype)


def units_size(units: Sequence[Unit]) -> int:
    """float32 values of ``units`` in a weights file."""
    return sum(u.size for u in units)


def values_to_state(units: Sequence[Unit], values: np.ndarray, where: str = "weights") -> dict[str, torch.Tensor]:
    """State-dict tensors of ``units`` read in order from ``values`` (which must hold them exactly)."""
    if len(values) != units_size(units):
        raise DataError(f"{where}: {len(values)} values for {len(units)} convolutions of {units_size(units)}")
    out: dict[str, torch.Tensor] = {}
    pos = 0

    def take(n: int) -> torch.Tensor:
        nonlocal pos
        t = torch.from_numpy(values[pos : pos + n].copy())
        pos += n
        return t

    for u in units:
        n = u.shape[0]
        if u.bn:
            beta, gamma, mean, var = take(n), take(n), take(n), take(n)
            gamma, var = convert_bn(gamma, var, DARKNET_BN_EPS, u.bn_eps)
            out.update({f"{u.bn}.bias": beta, f"{u.bn}.weight": gamma, f"{u.bn}.running_mean": mean,
                        f"{u.bn}.running_var": var})
        else:
            out[str(u.bias)] = take(n)
        out[u.weight] = take(int(np.prod(u.shape))).view(u.shape)
    return out


def state_to_values(units: Sequence[Unit], state: Mapping[str, torch.Tensor]) -> np.ndarray:
    """The float32 values of ``units`` from a state dict, in darknet's order."""
    parts: list[torch.Tensor] = []
    for u in units:
        if u.bn:
            gamma, var = convert_bn(state[f"{u.bn}.weight"].float(), state[f"{u.bn}.running_var"].float(),
                                    u.bn_eps, DARKNET_BN_EPS)
            parts += [state[f"{u.bn}.bias"].float(), gamma, state[f"{u.bn}.running_mean"].float(), var]
        else:
            parts.append(state[str(u.bias)].float())
        parts.append(state[u.weight].float().reshape(-1))
    return torch.cat([p.detach().cpu().reshape(-1) for p in parts]).numpy().astype("<f4")


def write_darknet(path: str | Path, units: Sequence[Unit], state: Mapping[str, torch.Tensor], seen: int = 0) -> Path:
    """Write ``units`` of ``state`` as a darknet weights file (header ``0, 2, 0``, ``seen`` as uint64)."""
    p = Path(path)
    body = state_to_values(units, state).tobytes()
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<3iQ", *HEADER_VERSION, int(seen)))
        f.write(body)
    tmp.replace(p)
    return p


# ---------------------------------------------------------------------------------------------- cfg files

def parse_cfg(text: str, where: str = "cfg") -> list[dict[str, str]]:
    """Sections of a darknet cfg: ``[{"type": "convolutional", "filters": "32", ...}, ...]``
    (``#`` / ``;`` comments and blank lines skipped)."""
    sections: list[dict[str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#")[0].split(";")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            sections.append({"type": m.group(1)})
        elif "=" in line and sections:
            k, v = line.split("=", 1)
            sections[-1][k.strip()] = v.strip()
        else:
            raise DataError(f"{where}:{lineno}: expected '[section]' or 'key=value', got {raw.strip()!r}")
    if not sections:
        raise DataError(f"{where}: no sections")
    return sections


def cfg_convs(sections: Sequence[Mapping[str, str]]) -> list[tuple[int, int, int, bool]]:
    """``(filters, size, stride, batch_normalize)`` of each ``[convolutional]`` section in order."""
    out = []
    for s in sections:
        if s["type"] in ("convolutional", "conv"):
            out.append((int(s.get("filters", 1)), int(s.get("size", 1)), int(s.get("stride", 1)),
                        bool(int(s.get("batch_normalize", 0)))))
    return out


def check_cfg(sections: Sequence[Mapping[str, str]], units: Sequence[Unit], where: str, model: str) -> None:
    """``DataError`` unless the cfg's convolutions are ``units`` (filters, size, stride, BatchNorm)."""
    convs = cfg_convs(sections)
    if len(convs) != len(units):
        raise DataError(f"{where}: {len(convs)} convolutional layers, {model} has {len(units)}")
    for i, ((filters, size, stride, bn), u) in enumerate(zip(convs, units)):
        want = (u.shape[0], u.shape[2], u.stride, u.bn is not None)
        if (filters, size, stride, bn) != want:
            raise DataError(f"{where}: convolutional layer {i} is filters={filters} size={size} stride={stride} "
                            f"batch_normalize={int(bn)}; {model} has filters={want[0]} size={want[1]} "
                            f"stride={want[2]} batch_normalize={int(want[3])} ({u.weight})")


def cfg_head(sections: Sequence[Mapping[str, str]], where: str) -> dict[str, Any]:
    """``{"kind": "yolo" | "region", "num_classes": C, "anchors": [[w, h], ...]}`` from the cfg's output
    layers (yolo: pixels; region: grid cells)."""
    heads = [s for s in sections if s["type"] in ("yolo", "region")]
    if not heads:
        raise DataError(f"{where}: no [yolo] or [region] layer")
    kinds = {s["type"] for s in heads}
    classes = {int(s.get("classes", 20)) for s in heads}
    if len(kinds) > 1 or len(classes) > 1:
        raise DataError(f"{where}: output layers disagree ({sorted(kinds)}, classes {sorted(classes)})")
    try:
        nums = [float(x) for x in heads[0].get("anchors", "").split(",") if x.strip()]
    except ValueError as e:
        raise DataError(f"{where}: anchors {heads[0].get('anchors')!r} are not numbers") from e
    if not nums or len(nums) % 2:
        raise DataError(f"{where}: anchors must be w,h pairs, got {len(nums)} numbers")
    return {"kind": kinds.pop(), "num_classes": classes.pop(),
            "anchors": [[nums[i], nums[i + 1]] for i in range(0, len(nums), 2)]}
