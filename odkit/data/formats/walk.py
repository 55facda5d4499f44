"""Listing the files of a data set folder: symbolic links followed, each real folder visited once.

``Path.rglob`` does not descend into linked folders (a split folder that is a link would vanish);
:func:`walk_files` does, and keeps a set of the real folders seen so a link back up the tree (a
loop) or a second link to the same folder is visited once. Paths are returned as reached (through
the link), sorted, so file names stay the user's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk_files(root: str | Path, exts: tuple[str, ...] | None = None, max_depth: int | None = None) -> list[Path]:
    """Files under ``root`` (any depth, or up to ``max_depth`` folder levels below it) whose suffix
    (lower-cased) is in ``exts`` (all files when ``None``), sorted; linked folders are followed once."""
    root = Path(root)
    if not root.is_dir():
        return []
    seen: set[tuple[int, int]] = set()
    rid = _dir_id(str(root))
    if rid is not None:
        seen.add(rid)
    out: list[Path] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        depth = len(Path(dirpath).parts) - base_depth
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            did = _dir_id(os.path.join(dirpath, d))
            if did is None or did in seen:
                if did is not None:
                    log.debug("%s: folder already visited (a link loop or a second link); skipped",
                              os.path.join(dirpath, d))
                continue
            seen.add(did)
            keep.append(d)
        dirnames[:] = keep if max_depth is None or depth < max_depth else []
        for f in filenames:
            if exts is None or os.path.splitext(f)[1].lower() in exts:
                p = Path(dirpath) / f
                if p.is_file():
                    out.append(p)
    return sorted(out)


def sub_dirs(d: Path) -> list[Path]:
    """The folders directly inside ``d`` (links to folders included), sorted, hidden ones skipped."""
    try:
        return sorted(q for q in d.iterdir() if not q.name.startswith(".") and q.is_dir())
    except OSError:
        return []
