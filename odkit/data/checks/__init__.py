"""The families of data set checks run by :func:`odkit.data.validate.check_dataset`.

Each family is one function taking a :class:`Context` (the set being checked, the problems and
repairs found so far, the per-image sizes and the per-box repair state) and adding to it:

- :func:`odkit.data.checks.images.check_images`: files, headers, damage tiers, colour modes, sizes;
- :func:`odkit.data.checks.boxes.check_boxes`: non-finite, unknown class, size, bounds, negatives;
- :func:`odkit.data.checks.masks.check_masks`: empty masks, degenerate or out-of-image polygons,
  RLEs of another size than the image, masks outside their box;
- :func:`odkit.data.checks.duplicates.check_duplicates`: repeated entries, near-duplicate boxes,
  byte-identical images;
- :func:`odkit.data.checks.splits.check_splits`: images shared between splits, empty splits,
  images in no split.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.probe import ImageInfo
from odkit.data.structures import AnnotationSet, Problem

# Image-level errors that make an image unusable: training and evaluation leave it out.
UNUSABLE_KINDS = ("missing_image", "empty_file", "unreadable_image", "truncated_image")


@dataclass
class Context:
    """State shared by the check families.

    ``widths``/``heights``: per image, pixels (unknown sizes filled from the image header);
    ``boxes``: float64 copy of the boxes; ``new_boxes``: float32 boxes after repairs; ``keep``:
    per box, False when a repair drops it; ``infos``: header probe per image (None when images
    are not checked or for repeated entries); ``unusable`` / ``recovered``: image indices that
    cannot be decoded / were decoded from a truncated file; ``hashes``: SHA-1 per image file
    already computed (shared by the duplicate and split checks).
    """

    aset: AnnotationSet
    workers: int
    problems: list[Problem] = field(default_factory=list)
    repairs: dict[str, int] = field(default_factory=dict)
    unusable: set[int] = field(default_factory=set)
    recovered: set[int] = field(default_factory=set)
    hashes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = self.aset
        self.paths = [a.path(i) for i in range(len(a))]
        self.fnames = [str(p) for p in self.paths]
        self.afiles = annotation_files(a, self.paths)
        self.img_of = a.image_index()
        self.widths = a.widths.astype(np.int64).copy()
        self.heights = a.heights.astype(np.int64).copy()
        self.boxes = a.boxes.astype(np.float64)
        self.new_boxes = a.boxes.copy()
        self.keep = np.ones(a.num_annotations, dtype=bool)
        self.infos: list[ImageInfo | None] = [None] * len(a)

    def ref(self, r: int) -> Any:
        """How a box is named in problems: the COCO annotation id, the CSV line, else its index
        among the boxes of its image."""
        a = self.aset
        if a.source == "coco":
            return int(a.ann_ids[r])
        if a.source == "csv":
            return f"line {int(a.ann_ids[r])}"
        return int(r - a.offsets[self.img_of[r]])

    def cname(self, r: int) -> str:
        lab = int(self.aset.labels[r])
        return self.aset.class_names[lab] if lab >= 0 else self.aset.raw_names.get(r, "?")

    def add(self, *args: Any, **kw: Any) -> Problem:
        p = Problem(*args, **kw)
        self.problems.append(p)
        return p


def annotation_files(aset: AnnotationSet, paths: list[Path]) -> list[str]:
    """Per image, the file that holds its annotations (VOC / LabelMe / CVAT xml or json, YOLO label
    txt, CSV file); the image itself for COCO, whose annotations are identified by id."""
    if aset.ann_files and len(aset.ann_files) == len(paths):
        return [f or str(p) for f, p in zip(aset.ann_files, paths)]
    if aset.source == "voc":
        out = []
        for p in paths:
            xml = aset.root / "Annotations" / f"{p.stem}.xml"
            out.append(str(xml) if xml.exists() else str(p))
        return out
    if aset.source == "yolo":
        from odkit.data.formats.yolo import label_path

        return [str(label_path(p)) for p in paths]
    return [str(p) for p in paths]


def pmap(fn: Any, items: list[Any], workers: int, desc: str) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread pool, in chunks (low overhead), with a progress bar."""
    from tqdm import tqdm

    chunk = max(1, min(256, len(items) // (4 * workers) or 1))
    parts = [items[k : k + chunk] for k in range(0, len(items), chunk)]
    out: list[Any] = []
    with (
        ThreadPoolExecutor(max_workers=workers) as ex,
        tqdm(total=len(items), desc=desc, unit="img", disable=len(items) < 500, leave=False) as bar,
    ):
        for res in ex.map(lambda part: [fn(x) for x in part], parts):
            out += res
            bar.update(len(res))
    return out
