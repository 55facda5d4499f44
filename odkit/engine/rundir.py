"""Run directories ``<project>/<name>/``: never overwritten silently.

If ``runs/exp`` exists, a new run goes to ``runs/exp2``, then ``runs/exp3`` and so on. With
``exist_ok=True`` an existing directory is reused as is (files in it are overwritten by the new
run); resuming always reuses the run's own directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from odkit.errors import ConfigError


def next_run_dir(project: str | Path = "runs", name: str = "train", exist_ok: bool = False) -> Path:
    """The directory a new run ``name`` under ``project`` should use (not created).

    ``runs/train`` if free (or ``exist_ok``), otherwise the first free ``runs/train2``,
    ``runs/train3``, ... .
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(f"--name {name!r} must be a plain directory name")
    project = Path(project)
    first = project / name
    if exist_ok or not first.exists():
        return first
    m = re.fullmatch(r"(.*?)(\d+)", name)
    stem, start = (m.group(1), int(m.group(2)) + 1) if m and m.group(1) else (name, 2)
    for k in range(start, start + 100000):
        cand = project / f"{stem}{k}"
        if not cand.exists():
            return cand
    raise ConfigError(f"no free run directory name for {name!r} under {project}")


def make_run_dir(project: str | Path = "runs", name: str = "train", exist_ok: bool = False) -> Path:
    """Create and return the run directory chosen by :func:`next_run_dir` (with weights/ and plots/)."""
    d = next_run_dir(project, name, exist_ok)
    (d / "weights").mkdir(parents=True, exist_ok=True)
    (d / "plots").mkdir(parents=True, exist_ok=True)
    return d


def find_resume_checkpoint(resume: str | Path | bool, project: str | Path = "runs") -> Path:
    """The ``checkpoint.pt`` to resume from.

    ``resume`` may be a checkpoint file, a run directory, or ``True`` (the most recently modified
    ``checkpoint.pt`` under ``project``).
    """
    if resume is True or resume == "":
        cands = sorted(Path(project).glob("*/checkpoint.pt"), key=lambda p: p.stat().st_mtime)
        if not cands:
            raise ConfigError(f"--resume: no run with a checkpoint.pt under {project}/")
        return cands[-1]
    p = Path(str(resume))
    if p.is_dir():
        p = p / "checkpoint.pt"
    if not p.is_file():
        raise ConfigError(f"--resume: checkpoint {p} does not exist")
    return p
