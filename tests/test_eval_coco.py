"""COCO evaluation against pycocotools on generated scenarios (every stat and the full arrays)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from odkit.data import AnnotationSet
from odkit.errors import DataError
from odkit.eval.coco import IOU_THRESHOLDS, RECALL_THRESHOLDS, STAT_NAMES, evaluate_coco

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def make_scenario(
    seed: int,
    n_img: int = 12,
    n_cls: int = 4,
    max_gt: int = 6,
    max_dt: int = 25,
    crowd: float = 0.0,
    empty_gt: float = 0.0,
    empty_dt: float = 0.0,
    absent_cls: bool = False,
    ties: bool = False,
    many_dets: bool = False,
    boundary: bool = False,
    area_field: bool = False,
    grid: bool = False,
    noncontig: bool = True,
    shuffle_ids: bool = False,
) -> tuple[AnnotationSet, list[dict]]:
    """A small random ground truth and predictions (xyxy float32) exercising the given features."""
    rng = np.random.default_rng(seed)
    boxes, labels, crowds, areas, preds = [], [], [], [], []
    gt_cls = n_cls - 1 if absent_cls else n_cls  # last class never in the gt
    for _ in range(n_img):
        g = 0 if rng.random() < empty_gt else int(rng.integers(0, max_gt + 1))
        if grid:
            xy = rng.integers(0, 20, (g, 2)) * 4.0
            wh = rng.integers(1, 12, (g, 2)) * 4.0
        elif boundary:
            xy = rng.uniform(0, 300, (g, 2))
            side = rng.choice([32.0, 96.0, 16.0, 128.0], g)
            wh = np.stack([side, side], 1)
        else:
            xy = rng.uniform(0, 300, (g, 2))
            wh = np.exp(rng.uniform(np.log(4), np.log(200), (g, 2)))
        b = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        lab = rng.integers(0, gt_cls, g)
        if g >= 3 and grid:  # equal-IoU ties between ground truths: a duplicate and a half-shifted copy
            b[1] = b[0]
            b[2] = b[0] + np.array([1, 0, 1, 0], np.float32) * (b[0, 2] - b[0, 0]) / 2
            lab[1:3] = lab[0]
        c = rng.random(g) < crowd
        if area_field:
            ar = np.where(
                rng.random(g) < 0.5, rng.choice([32.0**2, 96.0**2, 500.0, 5000.0, 20000.0], g), np.nan
            )
        else:
            ar = np.full(g, np.nan)
        boxes.append(b)
        labels.append(lab)
        crowds.append(c)
        areas.append(ar.astype(np.float32))
        if rng.random() < empty_dt:
            d = 0
        elif many_dets:
            d = int(rng.integers(90, 160))
        else:
            d = int(rng.integers(0, max_dt + 1))
        if g:
            src = rng.integers(0, g, d)
            if grid:
                db = b[src] + rng.integers(-2, 3, (d, 4)) * 2.0
            else:
                db = b[src] + rng.normal(0, 1, (d, 4)) * np.repeat(wh[src] * 0.15, 2, axis=1)
            dl = np.where(rng.random(d) < 0.75, lab[src], rng.integers(0, n_cls, d))
        else:
            xy2 = rng.uniform(0, 300, (d, 2))
            db = np.concatenate([xy2, xy2 + rng.uniform(4, 150, (d, 2))], 1)
            dl = rng.integers(0, n_cls, d)
        if boundary and d:
            side = rng.choice([32.0, 96.0], d)
            pick = rng.random(d) < 0.5
            db[pick, 2] = db[pick, 0] + side[pick]
            db[pick, 3] = db[pick, 1] + side[pick]
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        sc = rng.integers(0, 5, d) / 4.0 if ties else rng.random(d)
        preds.append(
            {"boxes": db.astype(np.float32), "scores": sc.astype(np.float32), "labels": dl.astype(np.int64)}
        )
    cids = [17, 3, 90, 5, 44, 8][:n_cls] if noncontig else list(range(1, n_cls + 1))
    image_ids = np.arange(n_img) * 7 + 2
    if shuffle_ids:
        image_ids = rng.permutation(image_ids)
    aset = AnnotationSet.from_lists(
        "/",
        [f"{i}.jpg" for i in range(n_img)],
        [400] * n_img,
        [400] * n_img,
        boxes,
        labels,
        [f"cls{c}" for c in cids],
        class_ids=cids,
        image_ids=image_ids,
        iscrowd=crowds,
        areas=areas,
    )
    return aset, preds


def to_coco(aset: AnnotationSet, preds: list[dict]) -> tuple[dict, list[dict]]:
    """The same data for pycocotools: gt dict (ids from 1) and a results list (float64 xywh)."""
    images = [
        {"id": int(i), "width": 400, "height": 400, "file_name": f}
        for i, f in zip(aset.image_ids, aset.files)
    ]
    anns = []
    for r in aset:
        b = r.boxes.astype(np.float64)
        for j in range(len(b)):
            w, h = b[j, 2] - b[j, 0], b[j, 3] - b[j, 1]
            area = float(r.areas[j]) if not np.isnan(r.areas[j]) else float(w * h)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": int(r.image_id),
                    "category_id": int(aset.class_ids[r.labels[j]]),
                    "bbox": [float(b[j, 0]), float(b[j, 1]), float(w), float(h)],
                    "area": area,
                    "iscrowd": int(r.iscrowd[j]),
                }
            )
    cats = [{"id": int(c), "name": n} for c, n in zip(aset.class_ids, aset.class_names)]
    res = []
    for i, p in enumerate(preds):
        b = p["boxes"].astype(np.float64)
        for j in range(len(b)):
            res.append(
                {
                    "image_id": int(aset.image_ids[i]),
                    "category_id": int(aset.class_ids[p["labels"][j]]),
                    "bbox": [
                        float(b[j, 0]),
                        float(b[j, 1]),
                        float(b[j, 2] - b[j, 0]),
                        float(b[j, 3] - b[j, 1]),
                    ],
                    "score": float(p["scores"][j]),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, res


def run_pycocotools(gt: dict, res: list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        if res:
            dt = coco.loadRes(res)
        else:  # loadRes cannot take an empty list
            dt = COCO()
            dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ev.summary_text = out.getvalue()
    return ev


def assert_same(ours, ev: COCOeval) -> None:
    np.testing.assert_allclose(ours.stats, ev.stats, atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.precision, ev.eval["precision"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.recall, ev.eval["recall"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.scores, ev.eval["scores"], atol=1e-12, rtol=0)
    np.testing.assert_array_equal(ours.precision == -1, ev.eval["precision"] == -1)
    np.testing.assert_array_equal(ours.recall == -1, ev.eval["recall"] == -1)


SCENARIOS = {
    "plain": dict(),
    "crowd": dict(crowd=0.3),
    "crowd_heavy_many_dets": dict(crowd=0.6, max_dt=60),
    "images_without_gt": dict(empty_gt=0.4),
    "images_without_dets": dict(empty_dt=0.4),
    "empty_gt_and_dt": dict(empty_gt=0.3, empty_dt=0.3, crowd=0.2),
    "category_without_gt": dict(absent_cls=True),
    "category_without_gt_crowd": dict(absent_cls=True, crowd=0.3, n_cls=5),
    "score_ties": dict(ties=True),
    "score_ties_crowd": dict(ties=True, crowd=0.3, max_dt=40),
    "more_than_100_dets": dict(many_dets=True, n_img=5, max_gt=10),
    "more_than_100_dets_ties": dict(many_dets=True, ties=True, n_img=4, crowd=0.2),
    "area_boundaries": dict(boundary=True),
    "area_boundaries_field": dict(boundary=True, area_field=True),
    "area_field_differs": dict(area_field=True, crowd=0.1),
    "contiguous_ids": dict(noncontig=False),
    "shuffled_image_ids": dict(shuffle_ids=True, ties=True),
    "integer_grid_iou_ties": dict(grid=True, max_dt=20),
    "integer_grid_ties_crowd": dict(grid=True, ties=True, crowd=0.25),
    "one_class": dict(n_cls=1, max_gt=8),
    "six_classes_sparse": dict(n_cls=6, max_gt=3, max_dt=10, n_img=20),
    "dense": dict(max_gt=15, max_dt=80, n_img=6, crowd=0.1),
    "everything": dict(
        crowd=0.2,
        empty_gt=0.2,
        empty_dt=0.2,
        absent_cls=True,
        ties=True,
        boundary=True,
        area_field=True,
        shuffle_ids=True,
        n_cls=5,
    ),
    "everything_many": dict(crowd=0.2, many_dets=True, ties=True, area_field=True, n_img=4, max_gt=12),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_pycocotools(name: str, seed: int) -> None:
    aset, preds = make_scenario(seed + 100 * sorted(SCENARIOS).index(name), **SCENARIOS[name])
    gt, res = to_coco(aset, preds)
    ev = run_pycocotools(gt, res)
    ours = evaluate_coco(aset, preds)
    assert_same(ours, ev)
    # The same detections as a COCO results list give the same numbers.
    ours_res = evaluate_coco(aset, res)
    np.testing.assert_array_equal(ours_res.precision, ours.precision)
    np.testing.assert_array_equal(ours_res.stats, ours.stats)


def test_scenario_features_present() -> None:
    """The generator really produces the cases the scenarios are named after."""
    aset, preds = make_scenario(1, many_dets=True, n_img=5, max_gt=10)
    assert max(len(p["scores"]) for p in preds) > 100
    aset, preds = make_scenario(3, boundary=True)
    wh = aset.boxes[:, 2:] - aset.boxes[:, :2]
    areas = wh[:, 0] * wh[:, 1]
    assert (areas == 32.0**2).any() and (areas == 96.0**2).any()
    aset, _ = make_scenario(0, absent_cls=True)
    assert (aset.labels != aset.num_classes - 1).all()
    aset, _ = make_scenario(0, crowd=0.3)
    assert aset.iscrowd.any()


def test_gt_tie_goes_to_the_last_ground_truth() -> None:
    """A detection equally close to two ground truths takes the later one (pycocotools' >= rule)."""
    boxes = [np.array([[0, 0, 8, 8], [4, 0, 12, 8]], np.float32)]
    aset = AnnotationSet.from_lists("/", ["a.jpg"], [20], [20], boxes, [np.array([0, 0])], ["a"])
    dets = np.array([[2, 0, 10, 8], [0, 0, 8, 8]], np.float32)  # IoU 0.6 with both; then 1.0 with the first
    preds = [{"boxes": dets, "scores": np.array([0.9, 0.8]), "labels": np.array([0, 0])}]
    r = evaluate_coco(aset, preds)
    assert_same(r, run_pycocotools(*to_coco(aset, preds)))
    assert r.recall[0, 0, 0, 2] == 1.0  # both ground truths found at IoU 0.5


def test_summary_text_matches_pycocotools() -> None:
    aset, preds = make_scenario(7, crowd=0.2)
    ev = run_pycocotools(*to_coco(aset, preds))
    ours = evaluate_coco(aset, preds)
    expected = [ln for ln in ev.summary_text.splitlines() if ln.startswith(" Average")]
    assert ours.summary.splitlines() == expected


def test_per_class_and_axes() -> None:
    aset, preds = make_scenario(5, absent_cls=True, n_cls=4)
    r = evaluate_coco(aset, preds)
    assert r.cat_ids == sorted(aset.class_ids)
    assert len(r.stats) == len(STAT_NAMES) == 12
    assert r.precision.shape == (10, 101, 4, 4, 3)
    np.testing.assert_array_equal(IOU_THRESHOLDS, np.linspace(0.5, 0.95, 10))
    assert len(RECALL_THRESHOLDS) == 101
    absent = aset.class_names[-1]
    assert r.per_class[absent] == {"AP": -1.0, "AP50": -1.0, "AP75": -1.0}
    k = r.class_names.index(aset.class_names[0])
    p = r.precision[:, :, k, 0, 2]
    assert r.per_class[aset.class_names[0]]["AP"] == pytest.approx(p[p > -1].mean())
    assert r.per_class[aset.class_names[0]]["AP50"] == pytest.approx(p[0][p[0] > -1].mean())
    d = r.to_dict()
    assert set(STAT_NAMES) <= d.keys() and len(d["per_class"]) == 4


def test_perfect_and_empty_detections() -> None:
    aset, _ = make_scenario(2, crowd=0.0)
    perfect = [{"boxes": r.boxes, "scores": np.ones(len(r.boxes)), "labels": r.labels} for r in aset]
    r = evaluate_coco(aset, perfect)
    assert r.stats[0] == pytest.approx(1.0) and r.stats[8] == pytest.approx(1.0)
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)} for _ in aset]
    r = evaluate_coco(aset, empty)
    assert r.stats[0] == 0.0


def test_torch_tensors_and_image_id_dicts() -> None:
    torch = pytest.importorskip("torch")
    aset, preds = make_scenario(4)
    ref = evaluate_coco(aset, preds)
    tp = [
        {
            "boxes": torch.from_numpy(p["boxes"]),
            "scores": torch.from_numpy(p["scores"]),
            "labels": torch.from_numpy(p["labels"]),
            "image_id": int(i),
        }
        for p, i in zip(preds, aset.image_ids)
    ][::-1]  # order of dicts does not matter when they carry image ids (per-image order kept)
    r = evaluate_coco(aset, tp)
    np.testing.assert_array_equal(r.precision, ref.precision)


def test_coco_json_files(tmp_path) -> None:
    aset, preds = make_scenario(9, crowd=0.2, area_field=True)
    gt, res = to_coco(aset, preds)
    (tmp_path / "res.json").write_text(json.dumps(res))
    ev = run_pycocotools(gt, res)
    assert_same(evaluate_coco(aset, tmp_path / "res.json"), ev)
    formats = pytest.importorskip("odkit.data.formats")
    if not hasattr(formats, "load_dataset"):
        pytest.skip("load_dataset not available")
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    assert_same(evaluate_coco(tmp_path / "gt.json", tmp_path / "res.json"), ev)


def test_exact_json_values(tmp_path) -> None:
    """Ground truth read from json keeps the file's float64 numbers (not float32)."""
    formats = pytest.importorskip("odkit.data.formats")
    if not hasattr(formats, "load_dataset"):
        pytest.skip("load_dataset not available")
    # IoU exactly 0.5 in float64 arithmetic only with the exact gt numbers.
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [0.1, 0.1, 10.3, 20.7],
                "area": 213.21,
                "iscrowd": 0,
            }
        ],
    }
    res = [{"image_id": 1, "category_id": 1, "bbox": [0.1, 0.1, 10.3, 20.7 / 2], "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ev = run_pycocotools(gt, res)
    assert_same(evaluate_coco(tmp_path / "gt.json", res), ev)


@pytest.mark.parametrize(
    "res, match",
    [
        ([{"image_id": 999, "category_id": 17, "bbox": [0, 0, 1, 1], "score": 0.5}], "999"),
        ([{"image_id": 2, "category_id": 12345, "bbox": [0, 0, 1, 1], "score": 0.5}], "12345"),
        ([{"image_id": 2, "category_id": 17, "bbox": [0, 0, 1], "score": 0.5}], "bbox"),
        ([{"image_id": 2, "category_id": 17, "bbox": [0, 0, 1, "a"], "score": 0.5}], "bbox"),
        ([{"image_id": 2, "category_id": 17, "bbox": [0, 0, 1, 1], "score": float("nan")}], "score"),
        ([{"image_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}], "category_id"),
    ],
)
def test_bad_results_raise(res, match) -> None:
    aset, _ = make_scenario(0)
    with pytest.raises(DataError, match=match):
        evaluate_coco(aset, res)


def test_bad_prediction_dicts_raise(tmp_path) -> None:
    aset, preds = make_scenario(0)
    with pytest.raises(DataError, match="prediction dicts"):
        evaluate_coco(aset, preds[:-1])
    bad = [dict(p) for p in preds]
    bad[0] = {"boxes": np.zeros((1, 4)), "scores": np.array([0.5]), "labels": np.array([99])}
    with pytest.raises(DataError, match="99"):
        evaluate_coco(aset, bad)
    bad[0] = {"boxes": np.zeros((1, 4)), "scores": np.array([np.nan]), "labels": np.array([0])}
    with pytest.raises(DataError, match="NaN"):
        evaluate_coco(aset, bad)
    with_ids = [{**p, "image_id": 12345} for p in preds]
    with pytest.raises(DataError, match="12345"):
        evaluate_coco(aset, with_ids)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="json"):
        evaluate_coco(aset, tmp_path / "bad.json")


@pytest.mark.parametrize("chunk", [30, 100])
def test_category_chunks_give_the_same_result(monkeypatch, chunk: int) -> None:
    """Memory-bounded processing (several chunks of categories) changes nothing."""
    import odkit.eval.coco as coco_mod

    aset, preds = make_scenario(21, n_cls=6, crowd=0.2, ties=True, max_dt=40)
    ref = evaluate_coco(aset, preds)
    monkeypatch.setattr(coco_mod, "_CHUNK_DETS", chunk)
    r = evaluate_coco(aset, preds, show_progress=False)
    np.testing.assert_array_equal(r.precision, ref.precision)
    np.testing.assert_array_equal(r.recall, ref.recall)
    np.testing.assert_array_equal(r.stats, ref.stats)
