"""TIDE error analysis: tidecv's figures on a committed fixture, hand-worked error types and dAPs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from odkit.cli.main import main
from odkit.errors import ConfigError
from odkit.eval.tide import BKG, BOTH, CLS, DUPE, ERROR_TYPES, LOC, SPECIAL_TYPES, TRUE_POSITIVE, tide_errors

FIX = Path(__file__).parent / "fixtures" / "tide"


def test_fixture_equals_tidecv() -> None:
    """Generated data with every error type (benchmarks/tide_parity.py): tidecv's AP and dAPs."""
    ref = json.loads((FIX / "tidecv.json").read_text())
    res = tide_errors(str(FIX / "gt.json"), str(FIX / "dt.json"))
    assert res.ap == pytest.approx(ref["ap"], abs=1e-9)
    for t in ERROR_TYPES:
        assert res.main[t] == pytest.approx(ref["main"][t], abs=1e-9), t
    for t in SPECIAL_TYPES:
        assert res.special[t] == pytest.approx(ref["special"][t], abs=1e-9), t
    assert all(res.counts[t] > 0 for t in ERROR_TYPES)  # the fixture exercises every type


def _coco(tmp: Path, gts: list[tuple], dets: list[tuple], n_img: int = 1) -> tuple[str, list[dict]]:
    """A COCO json under ``tmp`` and a results list. gts: (image, class, xywh[, crowd]);
    dets: (image, class, xywh, score)."""
    gt = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(n_img)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": k + 1, "image_id": g[0], "category_id": g[1], "bbox": list(g[2]),
             "area": g[2][2] * g[2][3], "iscrowd": int(len(g) > 3 and g[3])}
            for k, g in enumerate(gts)
        ],
    }
    (tmp / "gt.json").write_text(json.dumps(gt))
    return str(tmp / "gt.json"), [{"image_id": d[0], "category_id": d[1], "bbox": list(d[2]), "score": d[3]} for d in dets]


def test_error_types_hand_worked(tmp_path) -> None:
    box = (10.0, 10.0, 40.0, 40.0)
    gt, dt = _coco(
        tmp_path,
        [(0, 1, box), (0, 2, (60.0, 60.0, 30.0, 30.0)), (1, 1, (0.0, 0.0, 50.0, 50.0), True)],
        [
            (0, 1, box, 0.9),                          # true positive
            (0, 1, (12.0, 10.0, 40.0, 40.0), 0.8),     # IoU 38/42 with a matched gt: duplicate
            (0, 1, (60.0, 75.0, 30.0, 30.0), 0.7),     # other-class gt at IoU 1/3: both
            (0, 1, (60.0, 60.0, 30.0, 30.0), 0.6),     # other class, IoU 1: classification
            (0, 2, (60.0, 80.0, 30.0, 30.0), 0.5),     # same class, IoU 10/50 = 0.2: localisation
            (0, 2, (0.0, 95.0, 5.0, 5.0), 0.4),        # nothing near: background
            (1, 1, (5.0, 5.0, 20.0, 20.0), 0.3),       # inside a crowd region: ignored, no gt: background
            (1, 2, (5.0, 5.0, 20.0, 20.0), 0.2),       # other class than the crowd: background
        ],
        n_img=2,
    )
    r = tide_errors(gt, dt)
    assert r.det_error.tolist() == [TRUE_POSITIVE, DUPE, BOTH, CLS, LOC, BKG, BKG, BKG]
    assert r.det_ignored.tolist() == [False] * 6 + [True, False]
    # the gt of class b is pointed at by the Cls (0.6) and Loc (0.5) errors: not missed
    assert r.gt_missed.tolist() == [False, False, False] and r.gt_unmatched.tolist() == [False, True, False]
    assert r.counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 3, "Miss": 0, "FalsePos": 6, "FalseNeg": 1}


def _ap(tp_in_score_order: list[bool], n_gt: int) -> float:
    """COCO 101-point AP (percent), by hand."""
    tp = np.cumsum(tp_in_score_order)
    prec = tp / np.arange(1, len(tp) + 1)
    rec = tp / n_gt
    total = 0.0
    for r in np.arange(101) / 100:
        ok = rec >= r
        total += prec[ok].max() if ok.any() else 0.0
    return 100 * total / 101


def test_dap_hand_worked(tmp_path) -> None:
    # class a: two objects, a TP (0.9), a background FP (0.95) and a localisation error (0.5)
    # pointing at the second object; class b: one object, missed.
    gt, dt = _coco(
        tmp_path,
        [(0, 1, (0.0, 0.0, 20.0, 20.0)), (0, 1, (50.0, 50.0, 20.0, 20.0)), (0, 2, (0.0, 60.0, 20.0, 20.0))],
        [(0, 1, (0.0, 0.0, 20.0, 20.0), 0.9), (0, 1, (80.0, 0.0, 10.0, 10.0), 0.95),
         (0, 1, (60.0, 50.0, 20.0, 20.0), 0.5)],
    )
    r = tide_errors(gt, dt)
    base = (_ap([False, True, False], 2) + 0.0) / 2
    assert r.ap == pytest.approx(base)
    assert r.main["Loc"] == pytest.approx((_ap([False, True, True], 2) + 0) / 2 - base)
    assert r.main["Bkg"] == pytest.approx((_ap([True, False], 2) + 0) / 2 - base)
    # the missed object of class b: fixing it leaves class b with no gt and no detection (out of the mean)
    assert r.main["Miss"] == pytest.approx(_ap([False, True, False], 2) - base)
    assert r.main["Cls"] == r.main["Both"] == r.main["Dupe"] == 0.0
    assert r.special["FalsePos"] == pytest.approx((_ap([True, False, False], 2) + 0) / 2 - base)
    assert r.special["FalseNeg"] == pytest.approx(_ap([False, True, False], 1) - base)


def test_max_dets_and_bad_arguments(tmp_path) -> None:
    gt, dt = _coco(tmp_path, [(0, 1, (0.0, 0.0, 20.0, 20.0))], [(0, 1, (0.0, 0.0, 20.0, 20.0), s) for s in (0.3, 0.2, 0.1)])
    r = tide_errors(gt, dt, max_dets=2)
    assert r.det_error.tolist() == [TRUE_POSITIVE, DUPE, -2]
    with pytest.raises(ConfigError, match="bg_thr"):
        tide_errors(gt, dt, bg_thr=0.6)


def test_eval_cli_errors(capsys) -> None:
    rc = main(["eval", "--gt", str(FIX / "gt.json"), "--dt", str(FIX / "dt.json"), "--errors"])
    assert rc == 0
    out = capsys.readouterr().out
    ref = json.loads((FIX / "tidecv.json").read_text())
    assert f"AP50 = {ref['ap']:.2f}" in out
    row = next(line for line in out.splitlines() if line.startswith("dAP"))
    got = [float(v) for v in row.split()[1:]]
    want = [ref["main"][t] for t in ERROR_TYPES] + [ref["special"][t] for t in SPECIAL_TYPES]
    np.testing.assert_allclose(got, want, atol=0.006)
