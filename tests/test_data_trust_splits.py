"""Splits that cannot leak or vanish, and evaluation where the user is: overlap by file or by
content, split names only from folders / yaml keys, unknown yaml keys, the test split used for
validation, ``val --split all`` and a run's hold-out reused by ``val``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from odkit.cli.main import main
from odkit.data.formats import list_splits, load_dataset
from odkit.data.formats.walk import walk_files
from odkit.data.validate import check_dataset
from odkit.errors import DataError
from tests._trust_corpus import build_linked_splits, build_zip_splits, jpeg, voc_xml


def _flat(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    n = seed
    for split, count in splits.items():
        for i in range(count):
            d = root / split if split else root
            jpeg(d / f"{split}{i}.jpg", 40, 30, n)
            (d / f"{split}{i}.xml").write_text(voc_xml(f"{split}{i}.jpg", 40, 30, [("a" if n % 3 else "b", (1, 1, 9, 9))]))
            n += 1
    return root


def test_same_bytes_in_two_splits_is_an_error_naming_both(tmp_path):
    root = _flat(tmp_path / "d", {"train": 3, "val": 2})
    shutil.copyfile(root / "train" / "train1.jpg", root / "val" / "copy.jpg")  # renamed copy in val
    (root / "val" / "copy.xml").write_text(voc_xml("copy.jpg", 40, 30, [("a", (1, 1, 9, 9))]))
    rep = check_dataset(root)
    [p] = [p for p in rep.problems if p.kind == "split_overlap"]
    assert p.file.endswith("val/copy.jpg") and "train/train1.jpg" in p.message and p.severity == "error"
    assert rep.exit_code() == 1
    assert main(["data", "check", str(root), "--allow-overlap"]) == 0


def test_trainval_contains_train_and_val_by_definition(tmp_path):
    root = _flat(tmp_path / "d", {"train": 2, "val": 1, "test": 1})
    a = load_dataset(root)
    import numpy as np

    a.splits["trainval"] = np.sort(np.concatenate([a.splits["train"], a.splits["val"]]))
    assert "split_overlap" not in check_dataset(a).counts()
    a.splits["trainval"] = np.arange(len(a))  # trainval holding the test image is a leak
    [p] = [p for p in check_dataset(a).problems if p.kind == "split_overlap"]
    assert "'test', 'trainval'" in p.message


def test_split_folders_two_levels_down_and_links(tmp_path):
    a = load_dataset(build_zip_splits(tmp_path / "z"))
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 4, "test": 2}
    root = build_linked_splits(tmp_path / "l", all_links=True)
    assert list_splits(root) == ["test", "train"]
    files = walk_files(root)  # the loop back to root is visited once
    assert len(files) == 10 and len({f.resolve() for f in files}) == 10


def test_coco_json_named_after_no_split_is_not_a_split(tmp_path):
    from odkit.data.formats import save_dataset

    src = load_dataset(_flat(tmp_path / "src", {"": 3}))
    for name in ("train", "val", "raccoon"):
        save_dataset(src.select_images([0, 1] if name != "val" else [2]), tmp_path / "coco" / f"{name}.json", "coco")
    assert list_splits(tmp_path / "coco") == ["train", "val"]
    (tmp_path / "coco" / "train.json").unlink()
    (tmp_path / "coco" / "val.json").rename(tmp_path / "coco" / "other.json")
    with pytest.raises(DataError, match="none names a split"):
        list_splits(tmp_path / "coco")


def test_unknown_yaml_key_is_an_error_naming_the_closest(tmp_path):
    root = _flat(tmp_path / "d", {"train": 2})
    (root / "data.yaml").write_text("train: train\nnames: [a, b]\nnamez: [x]\n")
    with pytest.raises(DataError, match=r"unknown key 'namez' \(did you mean 'names'\?\)"):
        load_dataset(root / "data.yaml")
    (root / "data.yaml").write_text("train: train\nnames: [a, b]\nzzzq: 1\n")
    with pytest.raises(DataError, match=r"unknown key 'zzzq'; known keys"):
        load_dataset(root / "data.yaml")


# ---------------------------------------------------------------- training and evaluation
def _cfg(data: Path, **kw):
    from odkit.engine.config import TrainConfig

    return TrainConfig(data=str(data), img_size=64, epochs=1, batch=2, workers=0, device="cpu", **kw)


def test_training_uses_the_test_split_when_there_is_no_val(tmp_path, caplog):
    from odkit.engine.data import prepare_data

    root = _flat(tmp_path / "d", {"train": 4, "test": 2})
    with caplog.at_level("WARNING"):
        plan = prepare_data(_cfg(root))
    assert plan.holdout is None and len(plan.train) == 4 and len(plan.val) == 2
    assert sorted(Path(f).name for f in plan.val.files) == ["test0.jpg", "test1.jpg"]
    assert "the 'test' split is used for validation" in caplog.text
    assert plan.val_from == "split 'test' (the data set has no val split)"


def test_train_val_leak_refused_and_holdout_duplicates_kept_out(tmp_path):
    from odkit.engine.data import prepare_data

    root = _flat(tmp_path / "d", {"train": 4, "val": 2})
    shutil.copyfile(root / "train" / "train0.jpg", root / "val" / "val0.jpg")
    with pytest.raises(DataError, match=r"1 image\(s\) are in both the train and the val data") as e:
        prepare_data(_cfg(root), report=False)
    assert "val0.jpg" in str(e.value)
    assert len(prepare_data(_cfg(root, allow_overlap=True), report=False).val) == 2
    # a hold-out split never puts two copies of one image on both sides
    from odkit.data.checks.splits import file_hash

    flat = _flat(tmp_path / "flat", {"": 10})
    for i in range(1, 10, 2):
        shutil.copyfile(flat / f"{i - 1}.jpg", flat / f"{i}.jpg")  # five pairs of identical images
    for seed in range(4):
        plan = prepare_data(_cfg(flat, seed=seed), report=False)
        digests = [{file_hash(s.path(i)) for i in range(len(s))} for s in (plan.train, plan.val)]
        assert len(plan.val) >= 1 and not digests[0] & digests[1]
        held = json.loads(json.dumps([str(plan.source.path(int(i))) for i in plan.holdout.val]))
        assert sorted(held) == sorted(str(plan.val.path(i)) for i in range(len(plan.val)))


def test_val_split_all_and_a_runs_holdout(tmp_path, capsys):
    from odkit.models.zoo import build
    from odkit.weights.format import save_weights

    root = _flat(tmp_path / "flat", {"": 6})
    model = build("yolox-nano", num_classes=2, class_names=["a", "b"], img_size=64)
    run = tmp_path / "runs" / "exp"
    meta = {"model": "yolox-nano", "num_classes": 2, "class_names": ["a", "b"], "img_size": 64,
            "model_config": model.config}
    w = save_weights(run / "weights" / "best.safetensors", model.state_dict(), meta)
    base = ["val", "--weights", str(w), "--data", str(root), "--img", "64", "--device", "cpu"]
    assert main(base) == 2  # no val split, no hold-out: the error says what to do
    assert "--split all" in capsys.readouterr().err
    import argparse

    from odkit.cli.val import eval_set

    ns = argparse.Namespace(data=str(root), weights=str(w), split="all", format=None, images=None, labels=None,
                            columns=None, delimiter=None, one_based=False)
    assert len(eval_set(ns)) == 6  # --split all: every image
    held = [str(root / "2.jpg"), str(root / "5.jpg")]
    (run / "holdout.json").write_text(json.dumps({"fraction": 0.2, "seed": 0, "train": [], "val": held}))
    (run / "args.yaml").write_text(f"data: {root}\n")
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "evaluating the 2 hold-out images of run" in out and "Average Precision" in out
    (run / "args.yaml").write_text(f"data: {tmp_path / 'elsewhere'}\n")  # another data set: not reused
    assert main(base) == 2
