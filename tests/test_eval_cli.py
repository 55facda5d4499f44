"""``odkit eval``: summary, per-class table, --json at full precision, errors on malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from odkit.cli.main import main
from tests.test_eval_coco import make_scenario, run_pycocotools, to_coco

formats = pytest.importorskip("odkit.data.formats")
if not hasattr(formats, "load_dataset"):
    pytest.skip("load_dataset not available", allow_module_level=True)


@pytest.fixture()
def files(tmp_path):
    aset, preds = make_scenario(11, crowd=0.2, area_field=True, absent_cls=True)
    gt, res = to_coco(aset, preds)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(res))
    return tmp_path, gt, res


def test_coco_json_output(files, capsys) -> None:
    tmp, gt, res = files
    rc = main(
        ["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "dt.json"), "--json", str(tmp / "o.json")]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    assert "cls17" in out
    d = json.loads((tmp / "o.json").read_text())
    ev = run_pycocotools(gt, res)
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    np.testing.assert_allclose([d[k] for k in keys], ev.stats, atol=1e-12, rtol=0)
    assert set(d["per_class"]) == {c["name"] for c in gt["categories"]}
    assert d["per_class"]["cls5"]["AP"] == -1.0  # the class without gt


def test_voc_metric_and_plots(files, capsys) -> None:
    tmp, _, _ = files
    rc = main(
        [
            "eval",
            "--gt",
            str(tmp / "gt.json"),
            "--dt",
            str(tmp / "dt.json"),
            "--metric",
            "voc07",
            "--iou",
            "0.6",
            "--plus-one",
            "--plots",
            str(tmp / "plots"),
            "--json",
            str(tmp / "v.json"),
        ]
    )
    assert rc == 0
    d = json.loads((tmp / "v.json").read_text())
    assert d["metric"] == "voc07" and d["iou_threshold"] == 0.6 and d["legacy_plus_one"] is True
    aps = [v["AP"] for v in d["per_class"].values() if v["AP"] is not None]
    assert d["mAP"] == pytest.approx(np.mean(aps))
    assert (tmp / "plots" / "confusion_matrix.png").exists() and (tmp / "plots" / "pr_curves.png").exists()
    assert "mAP@0.6" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("[{not json", "json"),
        ('[{"image_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}]', "category_id"),
        ('[{"image_id": 2, "category_id": 17, "bbox": [0, 0, 1], "score": 0.5}]', "bbox"),
        ('[{"image_id": 2, "category_id": 17, "bbox": [0, 0, 1, 1], "score": NaN}]', "score"),
        ('[{"image_id": 31337, "category_id": 17, "bbox": [0, 0, 1, 1], "score": 0.5}]', "31337"),
        ('[{"image_id": 2, "category_id": 4242, "bbox": [0, 0, 1, 1], "score": 0.5}]', "4242"),
    ],
)
def test_malformed_detections_exit_2(files, capsys, content, message) -> None:
    tmp, _, _ = files
    (tmp / "bad.json").write_text(content)
    rc = main(["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "bad.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and message in err


def test_plus_one_with_coco_is_rejected(files, capsys) -> None:
    tmp, _, _ = files
    assert main(["eval", "--gt", str(tmp / "gt.json"), "--dt", str(tmp / "dt.json"), "--plus-one"]) == 2
    assert "plus_one" in capsys.readouterr().err
