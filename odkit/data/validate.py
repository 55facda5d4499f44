"""Dataset validation: find, count and name every problem; repair only what is safe.

``check_dataset`` runs the families of checks of :mod:`odkit.data.checks`: images (missing,
empty, damage tiers, content type vs extension, size vs annotation, grayscale / alpha / palette /
CMYK / 16-bit, EXIF orientation; skipped with ``check_images=False``), boxes (non-finite, unknown
class, zero / negative size, out of bounds, negatives), instance masks (empty, degenerate or
out-of-image polygons, RLE of another size than the image, mask outside its box), duplicates (repeated entries, near-duplicate
boxes, byte-identical images) and splits (shared images, empty splits, images in no split).
Image checks read headers only (thread pool), so 10k images take seconds; damaged files are decoded.

Safe repairs, each reported: a box at most ``max(oob_tol_px, oob_tol_frac * side)`` pixels
outside the image is clipped; a zero-area box is dropped; an unknown annotation size (0x0) is
taken from the image header. Boxes are checked in the displayed frame of the image (EXIF
orientation applied, as :mod:`odkit.data.imageio` decodes it). Images that cannot be decoded are
errors for that image: :meth:`Report.usable` gives the set without them (training leaves them out).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.checks import UNUSABLE_KINDS, Context
from odkit.data.checks.boxes import NEGATIVE, check_boxes
from odkit.data.checks.duplicates import check_duplicates
from odkit.data.checks.images import check_images as _check_images
from odkit.data.checks.masks import check_masks
from odkit.data.checks.splits import check_splits
from odkit.data.structures import AnnotationSet, Problem

log = logging.getLogger(__name__)

# Kinds the validator recomputes from the arrays (the reader's copies are replaced).
RECOMPUTED = {"unknown_class", "non_finite_box", "size_unknown"}
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
@dataclass
class Report:
    """Result of :func:`check_dataset`.

    ``problems``: every finding; ``dataset``: the repaired set (boxes clipped, zero-area boxes
    dropped, unknown sizes filled; nothing else changed); ``repairs``: repair name -> count;
    ``unusable``: indices of images that cannot be decoded (missing, empty, undecodable);
    ``recovered``: indices of truncated images decoded as far as their data goes.
    """

    problems: list[Problem]
    dataset: AnnotationSet
    name: str = ""
    num_images: int = 0
    num_boxes: int = 0
    repairs: dict[str, int] = field(default_factory=dict)
    unusable: list[int] = field(default_factory=list)
    recovered: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        out: dict[str, int] = defaultdict(int)
        for p in self.problems:
            out[p.kind] += 1
        return dict(out)

    @property
    def has_errors(self) -> bool:
        """Whether a problem that cannot be repaired (severity ``error``) is present."""
        return any(p.severity == "error" and p.repaired is None for p in self.problems)

    def exit_code(self, strict: bool = False) -> int:
        """1 when there are unrepairable errors, or (``strict``) any warning; else 0 (info notes,
        such as negatives or bytes after an end marker, never fail)."""
        if self.has_errors:
            return 1
        if strict and any(p.severity != "info" and p.kind != NEGATIVE for p in self.problems):
            return 1
        return 0

    @property
    def unusable_files(self) -> list[str]:
        """Paths of the images that cannot be decoded."""
        return [str(self.dataset.path(i)) for i in self.unusable]

    @property
    def has_other_errors(self) -> bool:
        """Whether an unrepairable error remains once the unusable images are left out."""
        bad = set(self.unusable_files)
        return any(
            p.severity == "error" and p.repaired is None and not (p.kind in UNUSABLE_KINDS and p.file in bad)
            for p in self.problems
        )

    def usable(self) -> AnnotationSet:
        """The repaired set without its unusable images (``splits`` re-indexed)."""
        if not self.unusable:
            return self.dataset
        bad = set(self.unusable)
        keep = [i for i in range(len(self.dataset)) if i not in bad]
        out = self.dataset.select_images(keep)
        out.problems = self.dataset.problems
        return out

    def text(self, examples: int = 3) -> str:
        """A table of counts by kind, the first few instances of each kind and a repair summary."""
        by_kind: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        kinds = sorted(
            by_kind, key=lambda k: (SEVERITY_ORDER.get(by_kind[k][0].severity, 3), -len(by_kind[k]), k)
        )
        lines = [f"{self.name}: {self.num_images} images, {self.num_boxes} boxes"]
        if not kinds:
            lines.append("no problems found")
            return "\n".join(lines)
        w = max(24, *(len(k) for k in kinds))
        lines.append(f"{'problem':<{w}}  {'severity':<8}  {'count':>6}  {'repaired':>8}")
        for k in kinds:
            ps = by_kind[k]
            rep = sum(p.repaired is not None for p in ps)
            lines.append(f"{k:<{w}}  {ps[0].severity:<8}  {len(ps):>6}  {rep:>8}")
        lines.append("")
        for k in kinds:
            ps = by_kind[k]
            lines.append(f"{k} ({len(ps)}):")
            for p in ps[:examples]:
                a = p.annotation
                if isinstance(a, list | tuple):
                    a = ", ".join(str(x) for x in a)
                ann = f" [{a}]" if a is not None else ""
                rep = f" -> {p.repaired}" if p.repaired else ""
                lines.append(f"  {p.file}{ann}: {p.message}{rep}")
            if len(ps) > examples:
                lines.append(f"  ... and {len(ps) - examples} more")
        lines.append("")
        if self.repairs:
            lines.append("repairs: " + "; ".join(f"{v} {k}" for k, v in self.repairs.items()))
        else:
            lines.append("repairs: none")
        n_err = sum(p.severity == "error" and p.repaired is None for p in self.problems)
        n_warn = sum(p.severity == "warning" for p in self.problems)
        lines.append(f"{n_err} errors that cannot be repaired, {n_warn} warnings")
        return "\n".join(lines)

    def to_json(self, path: str | Path) -> None:
        """Write every problem (kind, severity, file, annotation, message, repaired) and the counts."""
        doc = {
            "dataset": self.name,
            "images": self.num_images,
            "boxes": self.num_boxes,
            "counts": self.counts(),
            "repairs": self.repairs,
            "has_errors": self.has_errors,
            "problems": [p.to_dict() for p in self.problems],
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1, default=_jsonable)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


def check_dataset(
    aset_or_path: AnnotationSet | str | Path,
    *,
    format: str | None = None,
    split: str | None = None,
    check_images: bool = True,
    near_dup_iou: float = 0.9,
    decode: bool = False,
    oob_tol_px: float = 4.0,
    oob_tol_frac: float = 0.05,
    workers: int | None = None,
    allow_overlap: bool = False,
) -> Report:
    """Validate a dataset (an :class:`AnnotationSet` or a path for ``load_dataset``).

    ``near_dup_iou``: same-class box pairs with IoU above it are reported. ``decode``: also
    decode every image with OpenCV (slower; headers and end markers are always checked, and
    damaged files are always decoded to place them in a tier). A box more than
    ``max(oob_tol_px, oob_tol_frac * image side)`` pixels outside the image is an error; closer
    boxes are clipped. An image in two splits (same file or same bytes) is an error unless
    ``allow_overlap`` (then a warning). Returns a :class:`Report`.
    """
    if isinstance(aset_or_path, AnnotationSet):
        aset = aset_or_path
        name = str(aset.root)
    else:
        from odkit.data.formats import load_dataset

        aset = load_dataset(aset_or_path, format=format, split=split)
        name = f"{aset_or_path}" + (f" [{split}]" if split else "")
    ctx = Context(aset, workers or min(16, 2 * (os.cpu_count() or 1)))
    ctx.problems = [p for p in aset.problems if p.kind not in RECOMPUTED]
    if check_images:
        _check_images(ctx, decode=decode)
    else:
        for i in np.flatnonzero((ctx.widths <= 0) | (ctx.heights <= 0)):
            ctx.add("size_unknown", ctx.fnames[i], f"image size unknown ({ctx.widths[i]}x{ctx.heights[i]})",
                     severity="warning")
    candidates = check_boxes(ctx, oob_tol_px, oob_tol_frac)
    check_masks(ctx)
    check_duplicates(ctx, candidates, near_dup_iou, images=check_images)
    check_splits(ctx, allow_overlap)
    fixed = _repaired(ctx)
    log.debug("checked %s: %d problems", name, len(ctx.problems))
    return Report(
        problems=ctx.problems,
        dataset=fixed,
        name=name,
        num_images=len(aset),
        num_boxes=aset.num_annotations,
        repairs=ctx.repairs,
        unusable=sorted(ctx.unusable),
        recovered=sorted(ctx.recovered),
    )



def _repaired(ctx: Context) -> AnnotationSet:
    """The set with the safe repairs applied (boxes clipped, zero-area boxes dropped, sizes filled)."""
    a = ctx.aset
    fixed = AnnotationSet(
        root=a.root,
        files=list(a.files),
        image_ids=a.image_ids.copy(),
        widths=ctx.widths,
        heights=ctx.heights,
        offsets=a.offsets.copy(),
        boxes=ctx.new_boxes,
        labels=a.labels.copy(),
        iscrowd=a.iscrowd.copy(),
        difficult=a.difficult.copy(),
        ann_ids=a.ann_ids.copy(),
        areas=a.areas.copy(),
        class_names=list(a.class_names),
        class_ids=list(a.class_ids),
        source=a.source,
        raw_names=dict(a.raw_names),
        problems=[],
        splits={k: v.copy() for k, v in a.splits.items()},
        ann_files=list(a.ann_files),
        masks=list(a.masks) if a.masks is not None else None,
    )
    if not ctx.keep.all():
        fixed = fixed.select_annotations(ctx.keep)
    fixed.problems = ctx.problems
    return fixed
