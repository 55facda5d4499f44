"""Split checks: an image in two splits (a leak between train and val/test), an empty split, and
images in no split of a set that defines splits.

An image is in two splits when the same file (device and inode: links too) is listed in both, or when two files
of different splits hold the same bytes (content hash; only files of equal size are hashed). That
is an error naming the images (``allow_overlap``: a warning). A ``trainval`` split shares images
with ``train`` and ``val`` by definition and is not a leak with them (it is with ``test``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from odkit.data.checks import Context, pmap
from odkit.data.structures import Problem

_UNION = {"trainval"}
_PARTS = {"train", "training", "val", "valid", "validation", "dev"}


def _base(name: str) -> str:
    return re.sub(r"[-_]?\d+$", "", name.lower())


def _allowed(a: str, b: str) -> bool:
    """Whether splits ``a`` and ``b`` may share images (a trainval split and its train / val)."""
    x, y = _base(a), _base(b)
    return (x in _UNION and y in _PARTS) or (y in _UNION and x in _PARTS)


def _leak(splits: set[str]) -> bool:
    return any(not _allowed(a, b) for a, b in itertools.combinations(sorted(splits), 2))


def file_hash(p: str | Path) -> str:
    """SHA-1 of a file's bytes."""
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ident(p: str) -> tuple[tuple[int, int] | str, int]:
    """``((device, inode), size)`` of a file (one stat call; links resolve to their target), or
    ``(path, -1)`` when it cannot be read."""
    try:
        st = os.stat(p)
    except OSError:
        return p, -1
    return (st.st_dev, st.st_ino), st.st_size


def overlap_pairs(members: Mapping[str, Sequence[str | Path]], workers: int = 8,
                  hashes: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """Images shared by splits that may not share (see :func:`_allowed`): ``(file, other file,
    splits)`` with ``other file`` equal to ``file`` when one file is listed in two splits (by
    device and inode, so through links too), else a file of another split with the same bytes;
    ``splits`` names the splits, e.g. ``'train', 'val'``. ``members`` maps a split name to its image
    files. Only files whose size another split shares are hashed; ``hashes`` (path -> SHA-1) holds
    digests already computed and receives the new ones."""
    hashes = {} if hashes is None else hashes
    listed = [(split, str(p)) for split, paths in members.items() for p in paths]
    idents = pmap(_ident, [p for _, p in listed], workers, "reading file identities")
    files: dict[object, str] = {}
    size: dict[object, int] = {}
    where: dict[object, set[str]] = defaultdict(set)
    for (split, p), (key, n) in zip(listed, idents):
        files.setdefault(key, p)
        size[key] = n
        where[key].add(split)
    out = [(files[k], files[k], ", ".join(map(repr, sorted(sp)))) for k, sp in where.items() if len(sp) > 1 and _leak(sp)]
    by_size: dict[int, list[object]] = defaultdict(list)
    for key, n in size.items():
        if n > 0:
            by_size[n].append(key)
    todo = [k for g in by_size.values() if len(g) > 1 and len(set().union(*(where[k] for k in g))) > 1 for k in g]
    new = [files[k] for k in todo if files[k] not in hashes]
    if new:
        hashes.update(zip(new, pmap(file_hash, new, workers, "hashing images")))
    groups: dict[str, list[object]] = defaultdict(list)
    for k in todo:
        groups[hashes[files[k]]].append(k)
    for g in groups.values():
        for a, b in itertools.combinations(g, 2):
            bad = sorted({tuple(sorted((x, y))) for x in where[a] for y in where[b] if x != y and not _allowed(x, y)})
            if bad:
                out.append((files[b], files[a], "; ".join(f"{x!r}, {y!r}" for x, y in bad)))
    return out


def split_overlaps(members: Mapping[str, Sequence[str | Path]], allow: bool = False, workers: int = 8,
                   hashes: dict[str, str] | None = None) -> list[Problem]:
    """One ``split_overlap`` problem per image shared by splits (:func:`overlap_pairs`): an error
    unless ``allow`` (then a warning)."""
    sev = "warning" if allow else "error"
    tail = "" if allow else " (--allow-overlap to go on)"
    out = []
    for f, other, splits in overlap_pairs(members, workers, hashes):
        if f == other:
            msg = f"image is in splits {splits}: a leak when one of them evaluates the other{tail}"
        else:
            msg = f"same bytes as {other} (splits {splits}): one image in two splits{tail}"
        out.append(Problem("split_overlap", f, msg, severity=sev))
    return out


def check_splits(ctx: Context, allow_overlap: bool = False) -> None:
    """Splits family (nothing to check for a set without splits)."""
    splits = ctx.aset.splits
    if not splits:
        return
    for name, members in sorted(splits.items()):
        if len(members) == 0:
            ctx.add("split_empty", str(ctx.aset.root), f"split {name!r} lists no images", severity="warning")
    if len(splits) > 1:
        ctx.problems += split_overlaps(
            {k: [ctx.fnames[int(i)] for i in v] for k, v in sorted(splits.items())}, allow_overlap, ctx.workers,
            ctx.hashes,
        )
    used = np.zeros(len(ctx.aset), dtype=bool)
    for m in splits.values():
        used[m] = True
    for i in np.flatnonzero(~used):
        ctx.add(
            "not_in_split",
            ctx.fnames[int(i)],
            f"image is in none of the splits ({', '.join(sorted(splits))}); "
            "convert writes it to the split 'unassigned'",
            severity="info",
        )
