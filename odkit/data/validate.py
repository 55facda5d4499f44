"""Dataset validation: find, count and name every problem; repair only what is safe.

``check_dataset`` runs annotation checks (non-finite, unknown class, zero/negative size, out of
bounds, near-duplicate boxes, negatives) and, unless ``check_images=False``, image checks
(missing, empty, unreadable, truncated, content type vs extension, size vs annotation,
grayscale/alpha/palette/CMYK/16-bit, EXIF orientation, byte-identical images with different
labels). Image checks read headers only (thread pool), so 10k images take seconds.

Safe repairs, each reported: a box at most ``max(oob_tol_px, oob_tol_frac * side)`` pixels
outside the image is clipped; a zero-area box is dropped; an unknown annotation size (0x0) is
taken from the image header. Boxes are checked in the displayed frame of the image (EXIF
orientation applied, as :mod:`odkit.data.imageio` decodes it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.probe import CV2_FORMATS, ImageInfo, decode_check, probe_image
from odkit.data.structures import AnnotationSet, Problem

log = logging.getLogger(__name__)

# Kinds the validator recomputes from the arrays (the reader's copies are replaced).
RECOMPUTED = {"unknown_class", "non_finite_box", "size_unknown"}
NEGATIVE = "negative_image"
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_MODE_KIND = {
    "gray": ("image_grayscale", "grayscale"),
    "gray_alpha": ("image_alpha", "grayscale with alpha"),
    "rgba": ("image_alpha", "RGBA (alpha channel)"),
    "palette": ("image_palette", "palette (indexed colour)"),
    "cmyk": ("image_cmyk", "CMYK"),
}
_ORIENT = {
    2: "mirrored",
    3: "rotated 180",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90 CW",
    7: "transversed",
    8: "rotated 90 CCW",
}


@dataclass
class Report:
    """Result of :func:`check_dataset`.

    ``problems``: every finding; ``dataset``: the repaired set (boxes clipped, zero-area boxes
    dropped, unknown sizes filled; nothing else changed); ``repairs``: repair name -> count.
    """

    problems: list[Problem]
    dataset: AnnotationSet
    name: str = ""
    num_images: int = 0
    num_boxes: int = 0
    repairs: dict[str, int] = field(default_factory=dict)

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
        """1 when there are unrepairable errors, or (``strict``) any problem except negatives; else 0."""
        if self.has_errors:
            return 1
        if strict and any(p.kind != NEGATIVE for p in self.problems):
            return 1
        return 0

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


def _b(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in box) + "]"


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, tuple | set):
        return list(o)
    return str(o)


def _annotation_files(aset: AnnotationSet, paths: list[Path]) -> list[str]:
    """Per image, the file that holds its annotations: the VOC xml, the YOLO label txt, or (COCO,
    whose annotations are identified by id) the image itself."""
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


# ---------------------------------------------------------------- image checks
def _probe_all(paths: list[Path], decode: bool, workers: int) -> list[ImageInfo]:
    def one(p: Path) -> ImageInfo:
        info = probe_image(p)
        if info.exists and info.nbytes and info.format == "unknown":
            # A type we cannot parse: OpenCV may still read it (e.g. PPM, JPEG 2000).
            err = decode_check(p)
            if err is None:
                import cv2

                img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                info.height, info.width = img.shape[:2]
                info.format = "other"
                info.error = None
        elif decode and info.error is None:
            err = decode_check(p)
            if err is not None:
                info.error = err
        return info

    return _pmap(one, paths, workers, "probing images")


def _pmap(fn: Any, items: list[Any], workers: int, desc: str) -> list[Any]:
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


def _file_hash(p: Path) -> str:
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
) -> Report:
    """Validate a dataset (an :class:`AnnotationSet` or a path for ``load_dataset``).

    ``near_dup_iou``: same-class box pairs with IoU above it are reported. ``decode``: also
    decode every image with OpenCV (slower; headers and end markers are always checked).
    A box more than ``max(oob_tol_px, oob_tol_frac * image side)`` pixels outside the image is
    an error; closer boxes are clipped. Returns a :class:`Report`.
    """
    if isinstance(aset_or_path, AnnotationSet):
        aset = aset_or_path
        name = str(aset.root)
    else:
        from odkit.data.formats import load_dataset

        aset = load_dataset(aset_or_path, format=format, split=split)
        name = f"{aset_or_path}" + (f" [{split}]" if split else "")
    n, a = len(aset), aset.num_annotations
    problems: list[Problem] = [p for p in aset.problems if p.kind not in RECOMPUTED]
    repairs: dict[str, int] = {}
    paths = [aset.path(i) for i in range(n)]
    fnames = [str(p) for p in paths]
    afiles = _annotation_files(aset, paths)  # where box-level problems are to be fixed
    img_of = aset.image_index()
    off = aset.offsets
    coco = aset.source == "coco"

    def ref(r: int) -> int:
        return int(aset.ann_ids[r]) if coco else int(r - off[img_of[r]])

    def cname(r: int) -> str:
        lab = int(aset.labels[r])
        return aset.class_names[lab] if lab >= 0 else aset.raw_names.get(r, "?")

    # ---------------- images
    widths = aset.widths.astype(np.int64).copy()
    heights = aset.heights.astype(np.int64).copy()
    image_ok = np.ones(n, dtype=bool)
    infos: list[ImageInfo | None] = [None] * n
    if check_images and n:
        uniq = list(dict.fromkeys(fnames))
        res = _probe_all([Path(u) for u in uniq], decode, workers or min(16, 2 * (os.cpu_count() or 1)))
        by_path = dict(zip(uniq, res))
        infos = [by_path[f] for f in fnames]
        seen_entry: dict[str, int] = {}
        filled = 0
        for i, info in enumerate(infos):
            f = fnames[i]
            if f in seen_entry:
                problems.append(
                    Problem(
                        "duplicate_entry",
                        f,
                        f"image listed twice (entries {seen_entry[f]} and {i})",
                        severity="warning",
                    )
                )
                continue
            seen_entry[f] = i
            assert info is not None
            if not info.exists:
                problems.append(Problem("missing_image", f, "image file not found"))
                image_ok[i] = False
                continue
            if info.nbytes == 0:
                problems.append(Problem("empty_file", f, "image file is empty (0 bytes)"))
                image_ok[i] = False
                continue
            if info.truncated:
                problems.append(Problem("truncated_image", f, info.error or "truncated"))
            elif info.error:
                problems.append(Problem("unreadable_image", f, info.error))
                image_ok[i] = False
                continue
            if info.format not in CV2_FORMATS and info.format != "other":
                problems.append(
                    Problem(
                        "unreadable_image", f, f"{info.format.upper()} images cannot be decoded by OpenCV"
                    )
                )
            if info.format != info.ext_format and info.format != "other":
                problems.append(
                    Problem(
                        "extension_mismatch",
                        f,
                        f"content is {info.format.upper()} but the extension says {info.ext_format}",
                        severity="warning",
                    )
                )
            if info.mode in _MODE_KIND:
                kind, desc = _MODE_KIND[info.mode]
                problems.append(
                    Problem(
                        kind,
                        f,
                        f"{desc} image; odkit converts it to 3-channel RGB when loading",
                        severity="warning",
                    )
                )
            if info.bit_depth > 8:
                problems.append(
                    Problem(
                        "image_16bit",
                        f,
                        f"{info.bit_depth}-bit image; odkit scales it to 8 bits when loading",
                        severity="warning",
                    )
                )
            W, H = info.display_size
            if info.orientation not in (None, 1):
                problems.append(
                    Problem(
                        "exif_orientation",
                        f,
                        f"EXIF orientation {info.orientation} ({_ORIENT.get(info.orientation, 'unknown')}): "
                        f"odkit's loader applies it, so boxes are taken in the displayed frame ({W}x{H}; "
                        f"stored pixels are {info.width}x{info.height})",
                        severity="warning",
                    )
                )
            w, h = int(widths[i]), int(heights[i])
            if w <= 0 or h <= 0:
                widths[i], heights[i] = W, H
                filled += 1
                problems.append(
                    Problem(
                        "size_unknown",
                        f,
                        f"annotation gives size {w}x{h}; the image is {W}x{H}",
                        severity="warning",
                        repaired=f"size set to {W}x{H}",
                    )
                )
            elif (w, h) != (W, H):
                msg = f"annotation says {w}x{h} but the image is {W}x{H}"
                if (w, h) == (info.width, info.height):
                    msg += (
                        " after its EXIF rotation (the annotation matches the stored, un-rotated pixels: "
                        "boxes were probably drawn without applying EXIF)"
                    )
                problems.append(Problem("size_mismatch", f, msg))
        if filled:
            repairs["image sizes taken from the image"] = filled
    else:
        for i in np.flatnonzero((widths <= 0) | (heights <= 0)):
            problems.append(
                Problem(
                    "size_unknown",
                    fnames[i],
                    f"image size unknown ({widths[i]}x{heights[i]})",
                    severity="warning",
                )
            )

    # ---------------- boxes
    boxes = aset.boxes.astype(np.float64)
    keep = np.ones(a, dtype=bool)
    new_boxes = aset.boxes.copy()
    finite = np.isfinite(boxes).all(axis=1)
    for r in np.flatnonzero(~finite):
        i = int(img_of[r])
        problems.append(
            Problem(
                "non_finite_box",
                afiles[i],
                f"box ({cname(r)}) has non-finite coordinates {_b(boxes[r])}",
                ref(r),
            )
        )
    for r in np.flatnonzero(aset.labels < 0):
        i = int(img_of[r])
        problems.append(
            Problem(
                "unknown_class",
                afiles[i],
                f"class {aset.raw_names.get(int(r), '?')!r} is not in the class list {aset.class_names}",
                ref(r),
            )
        )
    bw = np.where(finite, boxes[:, 2] - boxes[:, 0], 0.0)
    bh = np.where(finite, boxes[:, 3] - boxes[:, 1], 0.0)
    negative = finite & ((bw < 0) | (bh < 0))
    zero = finite & ~negative & ((bw == 0) | (bh == 0))
    for r in np.flatnonzero(negative):
        problems.append(
            Problem(
                "negative_size_box",
                afiles[int(img_of[r])],
                f"box ({cname(r)}) {_b(boxes[r])} has negative size {bw[r]:g}x{bh[r]:g} (x2 < x1 or y2 < y1)",
                ref(r),
            )
        )
    for r in np.flatnonzero(zero):
        problems.append(
            Problem(
                "zero_size_box",
                afiles[int(img_of[r])],
                f"box ({cname(r)}) {_b(boxes[r])} has zero size {bw[r]:g}x{bh[r]:g}",
                ref(r),
                severity="warning",
                repaired="dropped",
            )
        )
    keep &= ~zero
    if zero.any():
        repairs["zero-area boxes dropped"] = int(zero.sum())

    # Out of bounds: measured against the annotation's size (the image's when unknown).
    W = widths[img_of].astype(np.float64)
    H = heights[img_of].astype(np.float64)
    sized = (W > 0) & (H > 0)
    ok = finite & ~negative & ~zero & sized
    over = np.zeros((a, 4))
    over[:, 0] = -boxes[:, 0]
    over[:, 1] = -boxes[:, 1]
    over[:, 2] = boxes[:, 2] - W
    over[:, 3] = boxes[:, 3] - H
    over = np.where(ok[:, None], np.maximum(over, 0.0), 0.0)
    over[over <= 1e-3] = 0.0  # numerical noise, not a problem
    out = over.max(axis=1) > 0
    tol_x = np.maximum(oob_tol_px, oob_tol_frac * W)
    tol_y = np.maximum(oob_tol_px, oob_tol_frac * H)
    clipped = np.stack(
        [
            np.clip(boxes[:, 0], 0, W),
            np.clip(boxes[:, 1], 0, H),
            np.clip(boxes[:, 2], 0, W),
            np.clip(boxes[:, 3], 0, H),
        ],
        axis=1,
    )
    positive = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    slight = out & (over[:, [0, 2]].max(1) <= tol_x) & (over[:, [1, 3]].max(1) <= tol_y) & positive
    sides = ("left", "top", "right", "bottom")
    for r in np.flatnonzero(out):
        i = int(img_of[r])
        by = ", ".join(f"{over[r, k]:.4g} px {sides[k]}" for k in range(4) if over[r, k] > 0)
        msg = f"box ({cname(r)}) {_b(boxes[r])} extends beyond the {int(W[r])}x{int(H[r])} image by {by}"
        if slight[r]:
            new_boxes[r] = clipped[r]
            problems.append(
                Problem(
                    "box_out_of_bounds",
                    afiles[i],
                    msg,
                    ref(r),
                    severity="warning",
                    repaired="clipped to the image",
                )
            )
        else:
            if not positive[r]:
                msg += " (entirely outside the image)"
            problems.append(Problem("box_out_of_bounds", afiles[i], msg, ref(r)))
    if slight.any():
        repairs["boxes clipped to the image"] = int(slight.sum())

    # Near-duplicates: same class, IoU above the threshold. All within-image pairs of candidate
    # boxes are formed at once (in chunks of images) and compared vectorised.
    cand = np.flatnonzero(finite & ~negative & ~zero & (aset.labels >= 0) & ~aset.iscrowd)
    cimg = img_of[cand]
    # end (exclusive) of each candidate's image group within ``cand``
    grp_end = np.searchsorted(cimg, cimg, side="right")
    partners = grp_end - np.arange(len(cand)) - 1
    start_c = 0
    while start_c < len(cand):
        # grow the chunk to at most ~4M pairs (whole images only)
        cum = np.cumsum(partners[start_c:])
        stop = start_c + max(1, int(np.searchsorted(cum, 4_000_000, side="right")))
        stop = int(grp_end[stop - 1]) if stop < len(cand) else len(cand)
        left = np.repeat(np.arange(start_c, stop), partners[start_c:stop])
        first = np.repeat(np.cumsum(partners[start_c:stop]) - partners[start_c:stop], partners[start_c:stop])
        right = left + 1 + (np.arange(len(left)) - first)
        start_c = stop
        if not len(left):
            continue
        ra, rb = cand[left], cand[right]
        same = aset.labels[ra] == aset.labels[rb]
        ra, rb = ra[same], rb[same]
        ba, bb = boxes[ra], boxes[rb]
        iw = np.clip(np.minimum(ba[:, 2], bb[:, 2]) - np.maximum(ba[:, 0], bb[:, 0]), 0, None)
        ih = np.clip(np.minimum(ba[:, 3], bb[:, 3]) - np.maximum(ba[:, 1], bb[:, 1]), 0, None)
        inter = iw * ih
        union = (
            (ba[:, 2] - ba[:, 0]) * (ba[:, 3] - ba[:, 1])
            + (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
            - inter
        )
        iou = inter / union
        for k in np.flatnonzero(iou > near_dup_iou):
            rp, rq = int(ra[k]), int(rb[k])
            problems.append(
                Problem(
                    "near_duplicate_box",
                    afiles[int(img_of[rp])],
                    f"boxes {ref(rp)} and {ref(rq)} ({cname(rp)}) overlap with IoU {iou[k]:.3f} "
                    f"{_b(boxes[rp])} / {_b(boxes[rq])}",
                    [ref(rp), ref(rq)],
                    severity="warning",
                )
            )

    # Byte-identical images: hash only files sharing a byte size.
    if check_images and n:
        by_size: dict[int, list[int]] = defaultdict(list)
        first_of: dict[str, int] = {}
        for i, info in enumerate(infos):
            if info is not None and info.exists and info.nbytes and fnames[i] not in first_of:
                first_of[fnames[i]] = i
                by_size[info.nbytes].append(i)
        todo = [i for g in by_size.values() if len(g) > 1 for i in g]
        if todo:
            nw = workers or min(8, 2 * (os.cpu_count() or 1))
            hashes = dict(zip(todo, _pmap(lambda i: _file_hash(paths[i]), todo, nw, "hashing images")))
            groups: dict[str, list[int]] = defaultdict(list)
            for i in todo:
                groups[hashes[i]].append(i)

            def labelset(i: int) -> list[tuple]:
                s, e = int(off[i]), int(off[i + 1])
                return sorted(
                    (int(aset.labels[r]), *np.round(boxes[r], 1).tolist()) for r in range(s, e) if keep[r]
                )

            for g in groups.values():
                if len(g) < 2:
                    continue
                ref_i = g[0]
                base = labelset(ref_i)
                for j in g[1:]:
                    same = labelset(j) == base
                    problems.append(
                        Problem(
                            "duplicate_image" if same else "duplicate_image_conflict",
                            fnames[j],
                            f"byte-identical to {fnames[ref_i]}"
                            + (" (same labels)" if same else " but labelled differently"),
                            severity="warning",
                        )
                    )

    # Negatives (valid; reported as a count).
    per_img = np.diff(off)
    for i in np.flatnonzero(per_img == 0):
        problems.append(Problem(NEGATIVE, fnames[i], "no boxes (a valid negative image)", severity="info"))

    # ---------------- the repaired set
    fixed = AnnotationSet(
        root=aset.root,
        files=list(aset.files),
        image_ids=aset.image_ids.copy(),
        widths=widths,
        heights=heights,
        offsets=aset.offsets.copy(),
        boxes=new_boxes,
        labels=aset.labels.copy(),
        iscrowd=aset.iscrowd.copy(),
        difficult=aset.difficult.copy(),
        ann_ids=aset.ann_ids.copy(),
        areas=aset.areas.copy(),
        class_names=list(aset.class_names),
        class_ids=list(aset.class_ids),
        source=aset.source,
        raw_names=dict(aset.raw_names),
        problems=[],
    )
    if not keep.all():
        fixed = fixed.select_annotations(keep)
    fixed.problems = problems
    log.debug("checked %s: %d problems", name, len(problems))
    return Report(problems=problems, dataset=fixed, name=name, num_images=n, num_boxes=a, repairs=repairs)
