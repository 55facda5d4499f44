"""Parity of odkit's box fusion (``odkit.ops.fusion``) with the ensemble-boxes package: weighted box
fusion (each ``conf_type``), soft-NMS (linear, gaussian) and non-maximum weighted, on random cases.

Runs in a reference environment with ensemble-boxes (never an odkit dependency):

    REF=$(../shared/tools/reference-env ~/.refenv-fusion sahi ensemble-boxes | tail -1)
    $REF benchmarks/fusion_parity.py [--cases 100] [--write-fixture]

Each case: an image of random size, 1-4 sources (models) with random weights (or none), each with
jittered copies of a few random objects plus clutter, 1-3 labels, random scores and thresholds. Boxes
are in pixels for odkit and divided by the image size for ensemble-boxes (which wants [0, 1]); results
are compared in pixels after sorting both by (label, -score, x1, y1): same count, boxes within 0.01
px, scores within 1e-5. ``--write-fixture`` stores 20 cases with ensemble-boxes' outputs in
``tests/fixtures/fusion_parity.json`` for ``tests/test_ops_fusion.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from odkit.ops import fusion

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "fusion_parity.json"
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def make_case(rng: np.random.Generator, k: int) -> dict:
    """One random case (plain lists, JSON-ready); the method and its settings rotate with ``k``."""
    w, h = int(rng.integers(200, 2000)), int(rng.integers(200, 2000))
    n_src, n_lab = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    objs = rng.uniform(0, 1, (int(rng.integers(1, 8)), 4)) * [w, h, w, h]
    objs = np.concatenate([np.minimum(objs[:, :2], objs[:, 2:]), np.maximum(objs[:, :2], objs[:, 2:])], 1)
    obj_lab = rng.integers(0, n_lab, len(objs))
    boxes, scores, labels = [], [], []
    for _ in range(n_src):
        pick = rng.integers(0, len(objs), int(rng.integers(0, 12)))
        size = (objs[pick, 2:] - objs[pick, :2]).repeat(2, 0).reshape(-1, 4) if len(pick) else np.zeros((0, 4))
        b = objs[pick] + rng.normal(0, 0.08, (len(pick), 4)) * size
        clutter = rng.uniform(0, 1, (int(rng.integers(0, 4)), 4)) * [w, h, w, h]
        b = np.concatenate([b, clutter])
        b = np.clip(np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1), 0, [w, h, w, h])
        lab = np.concatenate([obj_lab[pick], rng.integers(0, n_lab, len(clutter))])
        boxes.append(np.round(b, 3).tolist())
        scores.append(np.round(rng.uniform(0.01, 1.0, len(b)), 6).tolist())
        labels.append(lab.tolist())
    method = ("wbf", "soft-nms", "nmw")[k % 3]
    params: dict = {"weights": None if rng.random() < 0.4 else np.round(rng.uniform(0.5, 3, n_src), 3).tolist()}
    if method == "wbf":
        params.update(iou_thr=float(np.round(rng.uniform(0.3, 0.7), 3)), skip_box_thr=float(np.round(rng.uniform(0, 0.2), 3)),
                      conf_type=CONF_TYPES[(k // 3) % 4], allows_overflow=bool(rng.random() < 0.3))
    elif method == "soft-nms":
        params.update(method=("linear", "gaussian")[(k // 3) % 2], iou_thr=float(np.round(rng.uniform(0.3, 0.7), 3)),
                      sigma=float(np.round(rng.uniform(0.3, 1.0), 3)), thresh=float(np.round(rng.uniform(0.001, 0.2), 3)))
    else:
        params.update(iou_thr=float(np.round(rng.uniform(0.3, 0.7), 3)), skip_box_thr=float(np.round(rng.uniform(0, 0.2), 3)))
    return {"size": [w, h], "boxes": boxes, "scores": scores, "labels": labels, "method": method, "params": params}


def run_odkit(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = dict(case["params"])
    args = (case["boxes"], case["scores"], case["labels"])
    if case["method"] == "wbf":
        out = fusion.weighted_boxes_fusion(*args, **p)
    elif case["method"] == "nmw":
        out = fusion.non_maximum_weighted(*args, **p)
    else:
        out = fusion.soft_nms_fusion(*args, **p)
    return tuple(t.numpy().astype(np.float64) for t in out)  # type: ignore[return-value]


def run_reference(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import ensemble_boxes as eb

    w, h = case["size"]
    scale = np.array([w, h, w, h], np.float64)
    boxes = [np.array(b, np.float64).reshape(-1, 4) / scale for b in case["boxes"]]
    scores = [np.array(s, np.float64) for s in case["scores"]]
    labels = [np.array(lab, np.float64) for lab in case["labels"]]
    p = dict(case["params"])
    if case["method"] == "wbf":
        b, s, lab = eb.weighted_boxes_fusion(boxes, scores, labels, **p)
    elif case["method"] == "nmw":
        b, s, lab = eb.non_maximum_weighted(boxes, scores, labels, **p)
    else:
        p["method"] = {"linear": 1, "gaussian": 2}[p["method"]]
        if sum(len(x) for x in boxes) == 0:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0)
        b, s, lab = eb.soft_nms(boxes, scores, labels, **p)
    return np.asarray(b, np.float64).reshape(-1, 4) * scale, np.asarray(s, np.float64), np.asarray(lab, np.float64)


def canonical(out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, s, lab = (np.asarray(x, np.float64) for x in out)
    b = b.reshape(-1, 4)
    order = np.lexsort((b[:, 1], b[:, 0], -np.round(s, 5), lab))
    return b[order], s[order], lab[order]


def compare(a: tuple, b: tuple) -> tuple[bool, float, float]:
    """(same count and labels, max box difference px, max score difference)."""
    a, b = canonical(a), canonical(b)
    if len(a[1]) != len(b[1]) or not np.array_equal(a[2], b[2]):
        return False, float("inf"), float("inf")
    if len(a[1]) == 0:
        return True, 0.0, 0.0
    return True, float(np.abs(a[0] - b[0]).max()), float(np.abs(a[1] - b[1]).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-fixture", action="store_true")
    a = ap.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(a.seed)
    cases = [make_case(rng, k) for k in range(a.cases)]
    rows: dict[str, list] = {}
    fixture = []
    for c in cases:
        ref = run_reference(c)
        ok, db, ds = compare(run_odkit(c), ref)
        key = c["method"] + (f" {c['params'].get('conf_type') or c['params'].get('method')}" if c["method"] != "nmw" else "")
        rows.setdefault(key, []).append((ok and db <= 0.01 and ds <= 1e-5, db, ds, len(ref[1])))
        if len(fixture) < 20:
            fixture.append({**c, "expected": {"boxes": ref[0].tolist(), "scores": ref[1].tolist(), "labels": ref[2].tolist()}})
    print(f"{'method':<32} {'cases':>5} {'equal':>5} {'max |box| px':>13} {'max |score|':>12} {'boxes':>6}")
    for key, r in sorted(rows.items()):
        print(f"{key:<32} {len(r):>5} {sum(x[0] for x in r):>5} {max(x[1] for x in r):>13.2e} "
              f"{max(x[2] for x in r):>12.2e} {sum(x[3] for x in r):>6}")
    total = sum(len(r) for r in rows.values())
    equal = sum(x[0] for r in rows.values() for x in r)
    print(f"all: {equal}/{total} cases equal (same count and labels, boxes within 0.01 px, scores within 1e-5)")
    if a.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(fixture))
        print(f"fixture: {FIXTURE} ({len(fixture)} cases)")
    return 0 if equal == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
