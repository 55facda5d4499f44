"""Splits: carried through every conversion, checked for leaks, and a deterministic stratified
hold-out split (written into the run directory) for data sets without a val split. Also: export
output names, one per distinct graph, never replaced without --force."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from odkit.cli.main import main
from odkit.data import AnnotationSet
from odkit.data.formats import list_splits, load_dataset
from odkit.data.splits import holdout_split
from odkit.data.validate import check_dataset
from odkit.errors import ConfigError, DataError
from tests.test_data_layouts import _jpeg as jpeg
from tests.test_data_layouts import _voc_xml as voc_xml
from tests.test_data_layouts import build_voc_flat, canon, expected


def voc_root(root: Path, extra_unlisted: bool = False) -> Path:
    """A VOC root with train and val ImageSets (and, optionally, an xml listed in no split)."""
    src = load_dataset(build_voc_flat(root.parent / "flat", splits=True))
    from odkit.data.formats import save_splits

    save_splits(src, root, "voc")
    if extra_unlisted:
        jpeg(root / "JPEGImages" / "z.jpg", 20, 20, 77)
        (root / "Annotations" / "z.xml").write_text(voc_xml("z", "z.jpg", 20, 20, [("dog", (1, 1, 9, 9))]))
    return root


def test_voc_root_exposes_its_splits(tmp_path):
    root = voc_root(tmp_path / "voc")
    assert list_splits(root) == ["train", "val"]
    assert canon(load_dataset(root)) == expected()


@pytest.mark.parametrize("to", ["yolo", "coco"])
def test_two_split_voc_to_yolo_coco_and_back_keeps_splits_and_boxes(tmp_path, to, capsys):
    root = voc_root(tmp_path / "voc")
    out = tmp_path / to
    assert main(["data", "convert", str(root), str(out), "--to", to]) == 0
    assert "train 4, val 2" in capsys.readouterr().out
    mid = load_dataset(out)
    assert sorted(list_splits(out)) == ["train", "val"]
    assert canon(mid) == expected()
    back = tmp_path / "back"
    assert main(["data", "convert", str(out), str(back), "--to", "voc"]) == 0
    assert canon(load_dataset(back)) == expected()
    for s in ("train", "val"):  # split by split too
        assert canon(load_dataset(back, split=s))[0] == {k: v for k, v in expected()[0].items() if k in expected()[1][s]}


def test_convert_split_narrows_and_unassigned_images_are_written(tmp_path, capsys):
    root = voc_root(tmp_path / "voc", extra_unlisted=True)
    assert main(["data", "convert", str(root), str(tmp_path / "y1"), "--to", "yolo", "--split", "val"]) == 0
    assert list_splits(tmp_path / "y1") == ["val"] and len(load_dataset(tmp_path / "y1")) == 2
    capsys.readouterr()
    assert main(["data", "convert", str(root), str(tmp_path / "y2"), "--to", "csv"]) == 0
    assert "1 image(s) are in no split of the source: written as split 'unassigned'" in capsys.readouterr().out
    a = load_dataset(tmp_path / "y2")
    assert sorted(a.splits) == ["train", "unassigned", "val"] and canon(a)[1]["unassigned"] == ["z"]
    # many splits do not fit one COCO json
    assert main(["data", "convert", str(root), str(tmp_path / "one.json"), "--to", "coco"]) == 2


def test_same_file_name_in_two_splits_does_not_collide(tmp_path):
    root = tmp_path / "d"
    for split, box in (("train", (1, 1, 9, 9)), ("val", (2, 2, 8, 8))):
        jpeg(root / split / "img.jpg", 20, 20, len(split))
        (root / split / "img.xml").write_text(voc_xml("img", "img.jpg", 20, 20, [("dog", box)]))
    assert main(["data", "convert", str(root), str(tmp_path / "voc"), "--to", "voc"]) == 0
    back = load_dataset(tmp_path / "voc")
    assert len(back) == 2 and sorted(len(v) for v in back.splits.values()) == [1, 1]
    boxes = sorted(tuple(b) for b in back.boxes.tolist())
    assert boxes == [(1, 1, 9, 9), (2, 2, 8, 8)]


def test_split_checks(tmp_path):
    aset = load_dataset(build_voc_flat(tmp_path / "d", splits=True))
    rep = check_dataset(aset)
    assert "split_overlap" not in rep.counts()
    aset.splits["test"] = np.array([0, 4])  # one train image and one val image: leaks
    aset.splits["trainval"] = np.arange(len(aset))  # contains the others: by design
    aset.splits["empty"] = np.zeros(0, np.int64)
    rep = check_dataset(aset)
    leaks = [p for p in rep.problems if p.kind == "split_overlap"]
    assert len(leaks) == 2 and all("'test'" in p.message for p in leaks)
    assert sorted(Path(p.file).stem for p in leaks) == sorted(Path(aset.files[i]).stem for i in (0, 4))
    assert rep.counts()["split_empty"] == 1
    assert rep.exit_code() == 1  # a leak is an error ...
    rep = check_dataset(aset, allow_overlap=True)  # ... unless allowed
    assert {p.severity for p in rep.problems if p.kind == "split_overlap"} == {"warning"}
    assert rep.exit_code() == 0 and rep.exit_code(strict=True) == 1


# ---------------------------------------------------------------- hold-out split
def _many(n: int = 40) -> AnnotationSet:
    rng = np.random.default_rng(0)
    labels = [np.array([0, 0]) if i % 10 else np.array([2]) for i in range(n)]  # class 2 is rare
    if n > 7:
        labels[3] = np.array([1])
        labels[7] = np.zeros(0, np.int64)
    boxes = [np.tile([1.0, 1.0, 5.0, 5.0], (len(lab), 1)) + rng.uniform(0, 3, (len(lab), 4)) for lab in labels]
    return AnnotationSet.from_lists("/x", [f"i{i:02d}.jpg" for i in range(n)], [20] * n, [20] * n, boxes, labels,
                                    ["a", "b", "c"])


def test_holdout_is_deterministic_stratified_and_seeded():
    a = _many()
    h = holdout_split(a, 0.2, seed=0)
    assert len(h.val) == 8 and len(h.train) == 32 and not set(h.val) & set(h.train)
    same = holdout_split(a, 0.2, seed=0)
    assert h.val.tolist() == same.val.tolist()
    assert holdout_split(a, 0.2, seed=1).val.tolist() != h.val.tolist()
    # the rare class (4 images) has one image in val
    rare = {i for i in range(40) if i % 10 == 0}
    assert len(rare & set(h.val.tolist())) == 1
    assert len(holdout_split(_many(3), 0.2).val) == 1  # at least one each side
    with pytest.raises(DataError):
        holdout_split(_many(1), 0.2)


def _cfg(data: Path, **kw):
    from odkit.engine.config import TrainConfig

    return TrainConfig(data=str(data), img_size=64, epochs=1, batch=2, workers=0, device="cpu", **kw)


def test_training_without_val_split_holds_out_and_writes_it(tmp_path, caplog):
    from odkit.engine.data import prepare_data, write_data_notes

    flat = build_voc_flat(tmp_path / "flat", splits=False)
    with caplog.at_level("WARNING"):
        plan = prepare_data(_cfg(flat, seed=3))
    assert "defines no splits" in caplog.text and "held out" in caplog.text
    assert len(plan.val) == 1 and len(plan.train) == 5
    again = prepare_data(_cfg(flat, seed=3), report=False)
    assert again.val.files == plan.val.files
    write_data_notes(tmp_path, plan)
    doc = json.loads((tmp_path / "holdout.json").read_text())
    assert doc["seed"] == 3 and len(doc["val"]) == 1 and len(doc["train"]) == 5
    assert "held out" in (tmp_path / "data_report.txt").read_text()
    # a data set with a val split uses it; one with only train holds out from train
    split = build_voc_flat(tmp_path / "split", splits=True)
    plan = prepare_data(_cfg(split), report=False)
    assert plan.holdout is None and len(plan.train) == 4 and len(plan.val) == 2
    with pytest.raises(DataError, match="in both the train and the val data"):
        prepare_data(_cfg(split, val_split="train"), report=False)  # a leak ...
    plan = prepare_data(_cfg(split, val_split="train", allow_overlap=True), report=False)  # ... unless allowed
    assert len(plan.val) == 4
    import shutil

    shutil.rmtree(split / "val")
    plan = prepare_data(_cfg(split), report=False)
    assert plan.holdout is not None and len(plan.train) + len(plan.val) == 4


# ---------------------------------------------------------------- export output names
def test_export_names_distinct_graphs_and_refuses_to_replace(tmp_path):
    from odkit.cli.export import output_path

    w = tmp_path / "weights" / "best.safetensors"
    w.parent.mkdir()
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(w))
    w.with_suffix(".json").write_text(json.dumps({"model": "yolox-nano", "num_classes": 3, "img_size": 416}))

    def ns(**kw):
        base = dict(weights=str(w), format="onnx", img=None, nms=False, dynamic=False, half=False, out=None,
                    force=False)
        base.update(kw)
        return argparse.Namespace(**base)

    assert output_path(ns()).name == "best-416.onnx"
    assert output_path(ns(nms=True)).name == "best-nms-416.onnx"
    assert output_path(ns(nms=True, img=320, half=True)).name == "best-nms-fp16-320.onnx"
    assert output_path(ns(format="openvino", dynamic=True)).name == "best-dynamic-416.xml"
    assert output_path(ns(out=str(tmp_path))).parent == tmp_path
    (w.parent / "best-nms-416.onnx").write_bytes(b"old")
    with pytest.raises(ConfigError, match="--force"):
        output_path(ns(nms=True))
    assert output_path(ns(nms=True, force=True)).name == "best-nms-416.onnx"
    (tmp_path / "mine.onnx").write_bytes(b"old")
    with pytest.raises(ConfigError, match="exists"):
        output_path(ns(out=str(tmp_path / "mine.onnx")))
