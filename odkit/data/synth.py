"""A synthetic shapes detection data set (COCO json + odkit dataset YAML), deterministic per seed.

Each image is a noisy, textured background (two-colour gradient, low-frequency blotches, random
lines, Gaussian noise) with 0-6 filled shapes (``circle``, ``rectangle``, ``triangle``), each
class in its own family of three saturated colours. Object sizes span the COCO small / medium / large ranges, rectangles and
triangles are rotated, objects may overlap, and a few images are negatives (no objects).

Boxes are computed from the drawn pixels: the tight ``xyxy`` box (continuous coordinates, pixel
``i`` covers ``[i, i + 1)``) of the part of each shape that stays visible after the later shapes
are painted over it. A placement that would hide too much of an earlier shape is rejected, so
every drawn shape is annotated and every annotation has a sensible visible part.

Layout written by :func:`synthesize`::

    DIR/images/train/000001.jpg ...   (JPEG quality 95)
    DIR/images/val/000007.jpg ...
    DIR/train.json, DIR/val.json      (COCO; file_name relative to DIR)
    DIR/data.yaml                     ({format: coco, train: train.json, val: val.json, names: [...]})
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odkit.errors import ConfigError, DataError
from odkit.ops import rle as rle_ops

log = logging.getLogger(__name__)

CLASS_NAMES: list[str] = ["circle", "rectangle", "triangle"]

# Saturated RGB fill colours. Each class has its own family of three colours (so colour is a
# cue, as it often is in real data, but never the only one: shapes still differ in outline).
PALETTE: np.ndarray = np.array(
    [
        (220, 30, 30),  # red        circle
        (250, 125, 15),  # orange    circle
        (245, 215, 20),  # yellow    circle
        (30, 60, 220),  # blue       rectangle
        (20, 205, 215),  # cyan      rectangle
        (20, 20, 20),  # black       rectangle
        (30, 170, 40),  # green      triangle
        (215, 40, 205),  # magenta   triangle
        (240, 240, 240),  # white    triangle
    ],
    dtype=np.float32,
)
# Indices into PALETTE of the colours each class is drawn in.
CLASS_COLORS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 5), (6, 7, 8))

MAX_OBJECTS = 6
NEGATIVE_FRACTION = 0.075
# Side (sqrt of box area, pixels) ranges of the COCO size buckets we sample, with margins around
# the 32 / 96 thresholds so that a drawn box falls in the intended bucket.
SIZE_BUCKETS: tuple[tuple[float, float], ...] = ((16.0, 29.0), (35.0, 90.0), (102.0, 170.0))
SIZE_PROBS = (0.3, 0.35, 0.35)
MIN_VISIBLE_FRACTION = 0.6  # an occluded shape must keep this share of its pixels
MIN_VISIBLE_SIDE = 12  # ... and every box is at least this many pixels wide and high
MAX_PAIR_IOU = 0.5  # boxes of two objects never overlap more than this (IoU)


@dataclass
class SynthImage:
    """One rendered image: ``image`` HxWx3 uint8 RGB; ``boxes`` [N,4] float32 xyxy pixels of
    the visible part of each shape; ``labels`` [N] int64 class indices; ``masks`` [N,H,W] bool
    full (unoccluded) shape masks in drawing order (later shapes paint over earlier ones);
    ``colors`` [N,3] uint8 RGB fill colours; ``visible`` [N,H,W] bool the visible part of each shape
    (what ``boxes`` bound, the instance masks of ``synthesize(masks=True)``)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    colors: np.ndarray
    visible: np.ndarray | None = None


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight xyxy box (continuous coordinates) of the True pixels of ``mask``, None if empty."""
    cols = mask.any(axis=0)
    if not cols.any():
        return None
    rows = mask.any(axis=1)
    w, h = mask.shape[1], mask.shape[0]
    x1 = int(np.argmax(cols))
    x2 = w - int(np.argmax(cols[::-1]))
    y1 = int(np.argmax(rows))
    y2 = h - int(np.argmax(rows[::-1]))
    return x1, y1, x2, y2


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Float32 HxWx3 background: gradient + low-frequency blotches + random lines."""
    import cv2

    c0 = rng.uniform(75, 180) + rng.uniform(-25, 25, 3)
    c1 = rng.uniform(75, 180) + rng.uniform(-25, 25, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(ang) + yy * math.sin(ang)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c0[None, None, :].astype(np.float32) + (c1 - c0)[None, None, :].astype(np.float32) * t[..., None]
    gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    blotch = rng.normal(0.0, 14.0, (gh, gw, 3)).astype(np.float32)
    img += cv2.resize(blotch, (w, h), interpolation=cv2.INTER_CUBIC)
    mean = img.reshape(-1, 3).mean(axis=0)
    for _ in range(int(rng.integers(3, 11))):
        p1 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        p2 = (int(rng.integers(-w // 4, w + w // 4)), int(rng.integers(-h // 4, h + h // 4)))
        col = tuple(float(c) for c in np.clip(mean + rng.uniform(-60, 60, 3), 0, 255))
        cv2.line(img, p1, p2, col, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return img


def _shape_polygon(rng: np.random.Generator, label: int) -> np.ndarray:
    """Unit-scale polygon [K,2] (centred at 0) of a rectangle or triangle, randomly rotated."""
    if label == 1:  # rectangle, aspect 0.45..2.2, axis-aligned 60% of the time
        aspect = math.exp(rng.uniform(math.log(0.45), math.log(2.2)))
        hw, hh = math.sqrt(aspect) / 2, 1 / math.sqrt(aspect) / 2
        pts = np.array([(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)])
        ang = 0.0 if rng.random() < 0.6 else rng.uniform(-35, 35) * math.pi / 180
    else:  # triangle: three vertices around a circle, angles jittered
        base = rng.uniform(0, 2 * math.pi)
        angs = base + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([np.cos(angs), np.sin(angs)], axis=1)
        ang = 0.0
    c, s = math.cos(ang), math.sin(ang)
    return pts @ np.array([[c, s], [-s, c]])


def _sample_side(rng: np.random.Generator, limit: float) -> float:
    """Box side (sqrt of area) in pixels: a COCO size bucket, then log-uniform inside it."""
    bucket = int(rng.choice(3, p=SIZE_PROBS))
    lo, hi = SIZE_BUCKETS[bucket]
    while lo > limit and bucket > 0:  # image too small for this bucket
        bucket -= 1
        lo, hi = SIZE_BUCKETS[bucket]
    hi = max(min(hi, limit), lo)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _shape_mask(
    rng: np.random.Generator, label: int, side: float, center: tuple[float, float], w: int, h: int
) -> np.ndarray:
    """Full-image uint8 mask (0/1) of one shape whose box has about ``side**2`` pixels area."""
    import cv2

    mask = np.zeros((h, w), np.uint8)
    cx, cy = center
    if label == 0:
        r = max(int(round((side - 1) / 2)), 6)
        cv2.circle(mask, (int(round(cx)), int(round(cy))), r, 1, thickness=-1, lineType=cv2.LINE_8)
        return mask
    poly = _shape_polygon(rng, label)
    span = poly.max(axis=0) - poly.min(axis=0)
    poly = poly * (side / math.sqrt(float(span[0] * span[1])))
    poly = poly - (poly.max(axis=0) + poly.min(axis=0)) / 2 + np.array([cx, cy])
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask


def render_image(seed: int, index: int, size: int = 320, negative: bool = False) -> SynthImage:
    """Render image ``index`` of the data set with ``seed`` (independent of the other images).

    The image is ``round(size * U(0.75, 1.25))`` pixels wide and high (each side drawn
    separately). ``negative`` renders the background only; otherwise 1-6 shapes are drawn.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    w = int(round(size * rng.uniform(0.75, 1.25)))
    h = int(round(size * rng.uniform(0.75, 1.25)))
    img = _background(rng, w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    n_obj = 0 if negative else int(rng.integers(1, MAX_OBJECTS + 1))
    full: list[np.ndarray] = []  # full masks (bool)
    vis: list[np.ndarray] = []  # visible masks (bool)
    boxes: list[tuple[int, int, int, int]] = []
    labels: list[int] = []
    colors: list[np.ndarray] = []
    limit = 0.7 * min(w, h)
    for _ in range(n_obj):
        for attempt in range(45):
            if attempt % 15 == 0:  # class and size, re-drawn only after many failed placements
                label = int(rng.integers(0, len(CLASS_NAMES)))
                side = _sample_side(rng, limit)
            if boxes and rng.random() < 0.35:  # next to an existing object, likely overlapping
                j = int(rng.integers(0, len(boxes)))
                b = boxes[j]
                d = (max(b[2] - b[0], b[3] - b[1]) + side) / 2 * rng.uniform(0.45, 0.95)
                a = rng.uniform(0, 2 * math.pi)
                cx, cy = (b[0] + b[2]) / 2 + d * math.cos(a), (b[1] + b[3]) / 2 + d * math.sin(a)
            else:
                mx, my = min(side / 2, w / 2), min(side / 2, h / 2)
                cx, cy = rng.uniform(mx, w - mx), rng.uniform(my, h - my)
            m = _shape_mask(rng, label, side, (cx, cy), w, h).astype(bool)
            box = _mask_box(m)
            # keep the whole shape inside the image with a 1 px margin (no truncated shapes)
            if box is None or box[0] < 1 or box[1] < 1 or box[2] > w - 1 or box[3] > h - 1:
                continue
            if min(box[2] - box[0], box[3] - box[1]) < MIN_VISIBLE_SIDE:
                continue
            new_vis, new_boxes, ok = [], [], True
            for k in range(len(vis)):
                v = vis[k] & ~m
                vb = _mask_box(v)
                if (
                    vb is None
                    or v.sum() < MIN_VISIBLE_FRACTION * full[k].sum()
                    or min(vb[2] - vb[0], vb[3] - vb[1]) < MIN_VISIBLE_SIDE
                    or _iou(vb, box) > MAX_PAIR_IOU
                ):
                    ok = False
                    break
                new_vis.append(v)
                new_boxes.append(vb)
            if not ok or any(
                _iou(a, b) > MAX_PAIR_IOU for i, a in enumerate(new_boxes) for b in new_boxes[i + 1 :]
            ):
                continue
            # a colour that differs from the overlapped shapes and contrasts with what lies beneath
            under = img[m].mean(axis=0)
            touching = {
                tuple(colors[k]) for k in range(len(full)) if (full[k] & m).any() or _iou(boxes[k], box) > 0
            }
            choices = CLASS_COLORS[label]
            order = [choices[i] for i in rng.permutation(len(choices))]
            color = None
            for ci in order:
                c = PALETTE[ci]
                if tuple(c) not in touching and np.abs(c - under).mean() >= 60:
                    color = c
                    break
            if color is None:
                continue
            # paint with a gentle shading ramp across the shape
            ang = rng.uniform(0, 2 * math.pi)
            strength = rng.uniform(0.0, 0.15)
            ramp = ((xx[m] - cx) * math.cos(ang) + (yy[m] - cy) * math.sin(ang)) / max(side, 1.0)
            img[m] = np.clip(color[None, :] * (1.0 + strength * ramp[:, None]), 0, 255)
            vis = new_vis + [m]
            boxes = new_boxes + [box]
            full.append(m)
            labels.append(label)
            colors.append(color)
            break

    img += rng.normal(0.0, rng.uniform(3.0, 9.0), img.shape).astype(np.float32)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return SynthImage(
        image=out,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        masks=np.asarray(full, dtype=bool).reshape(-1, h, w),
        colors=np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
        visible=np.asarray(vis, dtype=bool).reshape(-1, h, w),
    )


def _split_plan(n: int, seed: int, val_fraction: float) -> tuple[list[int], list[int], set[int]]:
    """(train indices, val indices, negative indices): a seeded split, negatives in each split."""
    rng = np.random.default_rng([int(seed), 2**31 - 1])
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    val = sorted(int(i) for i in perm[:n_val])
    train = sorted(int(i) for i in perm[n_val:])
    negatives: set[int] = set()
    for part in (train, val):
        k = int(round(len(part) * NEGATIVE_FRACTION))
        if k == 0 and len(part) >= 5:
            k = 1
        if k:
            negatives.update(int(i) for i in rng.choice(part, size=k, replace=False))
    return train, val, negatives


def _coco(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "info": {"description": "odkit synthetic shapes", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)],
    }


def synthesize(
    out: str | Path,
    n: int = 200,
    seed: int = 0,
    size: int = 320,
    val_fraction: float = 0.2,
    overwrite: bool = False,
    masks: bool = False,
) -> Path:
    """Write the synthetic shapes data set to ``out`` and return the path of its ``data.yaml``.

    ``n`` images in total, each about ``size`` pixels a side (0.75x-1.25x, non-square);
    ``val_fraction`` of them (rounded) go to the val split. The output is byte-identical for the
    same arguments. ``out`` must be empty or absent unless ``overwrite`` is True, in which case
    a previous synthetic data set there (images/, train.json, val.json, data.yaml) is replaced.
    ``masks``: each annotation also gets the exact pixel mask of its visible part as a compressed
    RLE ``segmentation`` (and that mask's pixel count as ``area``).
    """
    import cv2
    import yaml
    from tqdm import tqdm

    if int(n) < 1:
        raise ConfigError(f"synth: --n must be at least 1, got {n}")
    if int(size) < 64:
        raise ConfigError(f"synth: --size must be at least 64 pixels, got {size}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"synth: --val-fraction must be in [0, 1), got {val_fraction}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"synth: output {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"synth: output directory {out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in ("train.json", "val.json", "data.yaml"):
            (out / name).unlink(missing_ok=True)

    train, val, negatives = _split_plan(int(n), int(seed), float(val_fraction))
    split_of = {i: "train" for i in train} | {i: "val" for i in val}
    coco: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {"train": ([], []), "val": ([], [])}
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
    ann_id = 0
    for i in tqdm(range(int(n)), desc="synth", unit="img", leave=False, disable=n < 50):
        split = split_of[i]
        s = render_image(seed, i, size, negative=i in negatives)
        rel = f"images/{split}/{i + 1:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", s.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise DataError(f"synth: could not encode {rel}")
        (out / rel).write_bytes(buf.tobytes())
        h, w = s.image.shape[:2]
        images, anns = coco[split]
        images.append({"id": i + 1, "file_name": rel, "width": w, "height": h})
        rles = rle_ops.encode(s.visible) if masks and len(s.boxes) else []
        for k, (box, label) in enumerate(zip(s.boxes.tolist(), s.labels.tolist())):
            ann_id += 1
            bw, bh = box[2] - box[0], box[3] - box[1]
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": i + 1,
                "category_id": int(label) + 1,
                "bbox": [box[0], box[1], bw, bh],
                "area": bw * bh,
                "iscrowd": 0,
            }
            if masks:
                ann["segmentation"] = rle_ops.to_coco(rles[k])
                ann["area"] = rle_ops.area(rles[k])
            anns.append(ann)
    spec: dict[str, Any] = {"format": "coco", "train": "train.json"}
    for split in ("train", "val"):
        images, anns = coco[split]
        if split == "val" and not images:
            continue
        with open(out / f"{split}.json", "w", encoding="utf-8") as f:
            json.dump(_coco(images, anns), f)
        spec[split] = f"{split}.json"
    spec["names"] = list(CLASS_NAMES)
    yaml_path = out / "data.yaml"
    with open(yaml_path, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    log.info(
        "synth: %d images (%d train, %d val, %d negatives), %d boxes -> %s",
        n,
        len(train),
        len(val),
        len(negatives),
        ann_id,
        yaml_path,
    )
    return yaml_path
