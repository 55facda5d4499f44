"""Value rules for user arguments, shared by the command line and the Python API.

One table, :data:`RULES`, says what each kind of argument accepts (sizes, counts, thresholds, ...).
The CLI turns a rule into an argparse ``type=`` (:func:`odkit.cli.args.arg_type`); the Python API
checks values with :func:`check_value`, raising :class:`~odkit.errors.ConfigError`. Input sizes are
fitted to a model's size divisor with :func:`fit_input_size` (rounded to the nearest multiple, with a
warning naming the argument).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from odkit.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """What one kind of argument accepts: ``number`` is ``int`` or ``float``, ``ok`` the range test
    on a parsed number, ``wants`` the phrase for messages ("a positive integer")."""

    number: type
    ok: Callable[[float], bool]
    wants: str


RULES: dict[str, Rule] = {
    "size": Rule(int, lambda v: v >= 1, "a positive integer number of pixels"),
    "count": Rule(int, lambda v: v >= 1, "an integer >= 1"),
    "count0": Rule(int, lambda v: v >= 0, "an integer >= 0"),
    "positive": Rule(float, lambda v: v > 0, "a finite number > 0"),
    "nonneg": Rule(float, lambda v: v >= 0, "a finite number >= 0"),
    "unit": Rule(float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "fraction": Rule(float, lambda v: 0 < v < 1, "a number in (0, 1)"),
}


def parse_value(kind: str, text: str) -> int | float:
    """``text`` parsed and checked by rule ``kind``; ``ValueError`` with the reason otherwise."""
    rule = RULES[kind]
    try:
        value: int | float = rule.number(text)
    except (TypeError, ValueError):
        raise ValueError(f"must be {rule.wants}, got {text!r}") from None
    if (isinstance(value, float) and not math.isfinite(value)) or not rule.ok(value):
        raise ValueError(f"must be {rule.wants}, got {text!r}")
    return value


def check_value(name: str, value: Any, kind: str) -> int | float:
    """``value`` if rule ``kind`` accepts it (an ``int`` rule takes integral numbers, never bools);
    otherwise ``ConfigError`` naming ``name`` (e.g. ``--img``)."""
    rule = RULES[kind]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok and rule.number is int:
        ok = float(value).is_integer()
        value = int(value) if ok else value
    if not ok or not rule.ok(float(value)):
        raise ConfigError(f"{name} must be {rule.wants}, got {value!r}")
    return value


def fit_input_size(size: Any, divisor: int, name: str = "img_size", model: str = "the model") -> int:
    """A positive input size in pixels that is a multiple of ``divisor``: ``size`` itself, or the
    nearest multiple (at least ``divisor``) with a warning naming ``name``; ``ConfigError`` for a
    size that is not a positive integer."""
    size = int(check_value(name, size, "size"))
    divisor = max(int(divisor), 1)
    if size % divisor == 0:
        return size
    fitted = max(divisor, (size + divisor // 2) // divisor * divisor)
    log.warning("%s %d is not a multiple of %s's size divisor %d: using %d", name, size, model, divisor, fitted)
    return fitted


# Keyword spellings of earlier odkit versions and today's: thresholds are ``conf`` / ``iou`` and the
# input size ``img_size`` everywhere in the Python API (``--conf``, ``--iou``, ``--img`` on the command
# line). The old names work for one release, with a DeprecationWarning.
RENAMED_SETTINGS = {"conf_thr": "conf", "iou_thr": "iou"}
RENAMED_TRAIN = {**RENAMED_SETTINGS, "img": "img_size"}


def renamed_keywords(kwargs: dict[str, Any], where: str, names: dict[str, str] = RENAMED_SETTINGS,
                     warn: bool = True) -> dict[str, Any]:
    """``kwargs`` with each old keyword of ``names`` under its new name. ``warn``: a DeprecationWarning
    naming ``where`` (off for files written by earlier versions, read silently); an old and a new
    name given together is a ``ConfigError``."""
    import warnings

    out = dict(kwargs)
    for old, new in names.items():
        if old not in out:
            continue
        if out[old] is None:  # not given
            del out[old]
            continue
        if new in out and out[new] is not None and out[old] is not None:
            raise ConfigError(f"{where}: {old}= is the old name of {new}=; give only {new}=")
        value = out.pop(old)
        if new not in out or out[new] is None:
            out[new] = value
        if warn:
            warnings.warn(f"{where}: {old}= is deprecated, use {new}= (the old name goes in the next release)",
                          DeprecationWarning, stacklevel=3)
    return out
