"""COCO segm evaluation against pycocotools on generated data sets and result files (crowd regions,
polygons with several parts, RLE ground truth, results with and without boxes)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from odkit.errors import DataError
from odkit.eval.coco import evaluate_coco

pytest.importorskip("pycocotools")
import pycocotools.mask as M  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _star(rng: np.random.Generator, cx: float, cy: float, r: float, k: int) -> list[float]:
    """A star-shaped polygon around (cx, cy) with k vertices, radius about r pixels."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = r * rng.uniform(0.5, 1.0, k)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round(2).ravel().tolist()


def make_segm_data(
    seed: int,
    n_img: int = 10,
    n_cls: int = 3,
    crowd: float = 0.15,
    with_bbox: bool = True,
    many: bool = False,
    ties: bool = False,
    big: bool = False,
) -> tuple[dict, list[dict]]:
    """COCO ground truth (polygons, multi-part polygons, crowd RLE) and segm results (compressed RLE)."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 3 * c + 1, "name": f"c{c}"} for c in range(n_cls)]
    images, anns, res = [], [], []
    for i in range(n_img):
        h, w = int(rng.integers(200 if big else 40, 320)), int(rng.integers(200 if big else 40, 320))
        iid = 7 * i + 2
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid}.jpg"})
        for _ in range(int(rng.integers(0, 7))):
            cat = cats[int(rng.integers(n_cls))]["id"]
            r = float(np.exp(rng.uniform(np.log(min(h, w) / 4 if big else 2), np.log(min(h, w) / 2))))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            is_crowd = rng.random() < crowd
            if is_crowd:  # a crowd region as uncompressed RLE, like COCO's
                m = np.zeros((h, w), dtype=np.uint8)
                y0, x0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
                m[y0 : y0 + int(rng.integers(2, h)), x0 : x0 + int(rng.integers(2, w))] = 1
                m &= (rng.random((h, w)) < 0.8).astype(np.uint8)
                unc = M.encode(np.asfortranarray(m))
                segm = {"size": [h, w], "counts": _uncompressed_counts(m)}
                area = float(M.area(unc))
            else:
                segm = [_star(rng, cx, cy, r, int(rng.integers(3, 12)))]
                if rng.random() < 0.25:  # a second part
                    segm.append(_star(rng, cx + r, cy + r / 2, r / 2, int(rng.integers(3, 8))))
                rle = M.merge(M.frPyObjects(segm, h, w))
                area = float(M.area(rle))
                if rng.random() < 0.2:
                    area *= float(rng.uniform(0.5, 2.0))  # an area field that differs from the mask
            bb = M.toBbox(M.merge(M.frPyObjects(segm, h, w)) if not is_crowd else unc).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": cat,
                    "segmentation": segm,
                    "area": area,
                    "bbox": bb,
                    "iscrowd": int(is_crowd),
                }
            )
            # Detections near this object: jittered outlines, some with another class.
            for _ in range(int(rng.integers(0, 6 if not many else 40))):
                if is_crowd:
                    poly = _star(rng, cx, cy, r, int(rng.integers(3, 12)))
                else:  # the outline moved and shaken
                    base = np.array(segm[0]) + np.tile(rng.normal(0, r / 16, 2), len(segm[0]) // 2)
                    poly = (base + rng.normal(0, r / 25, len(base))).round(2).tolist()
                dcat = cat if rng.random() < 0.85 else cats[int(rng.integers(n_cls))]["id"]
                res.append(_result(poly, iid, dcat, h, w, rng, with_bbox, ties))
        for _ in range(int(rng.integers(0, 5 if not many else 150))):  # false positives anywhere
            poly = _star(rng, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 30), int(rng.integers(3, 9)))
            res.append(_result(poly, iid, cats[int(rng.integers(n_cls))]["id"], h, w, rng, with_bbox, ties))
    return {"images": images, "annotations": anns, "categories": cats}, res


def _uncompressed_counts(m: np.ndarray) -> list[int]:
    flat = m.T.ravel()
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat])) != 0)
    return np.diff(np.concatenate([[0], change, [flat.size]])).tolist()


def _result(poly, iid, cat, h, w, rng, with_bbox, ties) -> dict:
    rle = M.merge(M.frPyObjects([poly], h, w))
    score = round(float(rng.random()), 1 if ties else 6)
    r = {"image_id": iid, "category_id": cat, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
         "score": score}
    if with_bbox:
        r["bbox"] = M.toBbox(rle).tolist()
    return r


def pycocotools_segm(gt_path, res_path) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        dt = coco.loadRes(str(res_path))
        ev = COCOeval(coco, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def assert_same(ours, ev: COCOeval) -> None:
    np.testing.assert_allclose(ours.stats, ev.stats, atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.precision, ev.eval["precision"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.recall, ev.eval["recall"], atol=1e-12, rtol=0)
    np.testing.assert_allclose(ours.scores, ev.eval["scores"], atol=1e-12, rtol=0)


SCENARIOS = {
    "plain": dict(),
    "crowd_heavy": dict(crowd=0.5, seed_shift=1),
    "results_without_boxes": dict(with_bbox=False),
    "score_ties": dict(ties=True, crowd=0.3),
    "more_than_100_dets": dict(many=True, n_img=3, ties=True),
    "large_objects": dict(big=True, n_img=6),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_segm_matches_pycocotools(tmp_path, name: str) -> None:
    kw = dict(SCENARIOS[name])
    seed = 11 + kw.pop("seed_shift", 0) + 10 * sorted(SCENARIOS).index(name)
    gt, res = make_segm_data(seed, **kw)
    assert any(a["iscrowd"] for a in gt["annotations"]) or kw.get("crowd") == 0
    gt_path, res_path = tmp_path / "instances.json", tmp_path / "segm_results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    ev = pycocotools_segm(gt_path, res_path)
    ours = evaluate_coco(gt_path, res_path, iou_type="segm")
    assert_same(ours, ev)
    assert ours.stats[0] > 0.05  # the scenario has real matches
    # The results as an in-memory list give the same numbers.
    again = evaluate_coco(gt_path, json.loads(res_path.read_text()), iou_type="segm")
    np.testing.assert_array_equal(again.precision, ours.precision)


def test_segm_differs_from_bbox(tmp_path) -> None:
    """Mask IoU is what is matched: thin diagonal shapes have a high box IoU and a low mask IoU."""
    h = w = 60
    gt_poly = [0, 0, 4, 0, 60, 56, 60, 60, 56, 60, 0, 4]  # a thick diagonal band
    det_poly = [60, 0, 60, 4, 4, 60, 0, 60, 0, 56, 56, 0]  # the other diagonal
    gt = {
        "images": [{"id": 1, "height": h, "width": w, "file_name": "a.jpg"}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [gt_poly], "area": 400.0,
                         "bbox": [0, 0, 60, 60], "iscrowd": 0}],
    }
    rle = M.merge(M.frPyObjects([det_poly], h, w))
    res = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [0, 0, 60, 60],
            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}}]
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    assert evaluate_coco(gp, rp).stats[1] > 0.99  # boxes coincide
    segm = evaluate_coco(gp, rp, iou_type="segm")
    assert segm.stats[1] == 0.0
    assert_same(segm, pycocotools_segm(gp, rp))


def test_segm_input_errors(tmp_path) -> None:
    gt, res = make_segm_data(3, n_img=2)
    del gt["annotations"][0]["segmentation"]
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    with pytest.raises(DataError, match="annotation id"):
        evaluate_coco(gp, rp, iou_type="segm")
    gt, res = make_segm_data(3, n_img=2)
    gp.write_text(json.dumps(gt))
    del res[0]["segmentation"]
    with pytest.raises(DataError, match="segmentation"):
        evaluate_coco(gp, res, iou_type="segm")


def test_cli_iou_type_segm(tmp_path, capsys) -> None:
    from odkit.cli.main import main

    gt, res = make_segm_data(5, n_img=4)
    gp, rp, out = tmp_path / "gt.json", tmp_path / "segm.json", tmp_path / "o.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    assert main(["eval", "--gt", str(gp), "--dt", str(rp), "--iou-type", "segm", "--json", str(out)]) == 0
    assert "Average Precision" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["iou_type"] == "segm"
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    np.testing.assert_allclose([d[k] for k in keys], pycocotools_segm(gp, rp).stats, atol=1e-12, rtol=0)
    # A results file without masks is a user error (exit 2), not a traceback.
    for r in res:
        del r["segmentation"]
    rp.write_text(json.dumps(res))
    assert main(["eval", "--gt", str(gp), "--dt", str(rp), "--iou-type", "segm"]) == 2
