"""Sidecars hold each fact once (the architecture in ``model_config``), and the layout of earlier odkit
versions (``model``, ``num_classes``, ``class_names``, ``img_size`` also at the top level) still loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import odkit
from odkit.errors import OdkitError
from odkit.models import build
from odkit.weights.format import canonical_meta, save_weights

NAMES = ["cell", "platelet"]
ARCH_TOP = {"model", "num_classes", "class_names", "img_size"}


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.full((90, 120, 3), 90, np.uint8)
    img[20:60, 30:80] = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2, class_names=NAMES, img_size=96, conf=0.0)
    path = save_weights(tmp_path_factory.mktemp("w") / "best.safetensors", model.state_dict(),
                        {"model_config": model.config, "epoch": 1})
    return path, model.config


def test_new_sidecar_stores_architecture_once(weights):
    path, cfg = weights
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["format_version"] == 3 and not ARCH_TOP & set(side)
    assert side["model_config"]["name"] == "yolox-nano" and side["model_config"]["class_names"] == NAMES
    assert side["model_config"]["img_size"] == 96 and side["model_config"]["num_classes"] == 2


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert len(p["scores"]) > 0
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(p[k], q[k])


@pytest.mark.parametrize("with_config", [True, False])
def test_version1_sidecar_loads_the_same(weights, tmp_path, with_config):
    path, cfg = weights
    new = odkit.load(path)
    old = tmp_path / "old.safetensors"
    old.write_bytes(path.read_bytes())  # its embedded metadata is ignored: the sidecar is preferred
    v1 = {"format_version": 1, "model": "yolox-nano", "num_classes": 2, "class_names": NAMES, "img_size": 96,
          "epoch": 1}
    if with_config:  # odkit 0.1 copied these into model_config too; the earliest sidecars had none
        v1["model_config"] = dict(cfg)
    else:
        v1["model_config"] = None
    old.with_suffix(".json").write_text(json.dumps(v1))
    got = odkit.load(old)
    assert got.class_names == NAMES and got.img_size == 96 and got.name == "yolox-nano"
    if with_config:
        _same(got.predict(_image()), new.predict(_image()))
    else:  # the earliest layout has no prediction overrides: the model's own defaults apply
        assert got.model.postprocess_defaults["max_det"] == new.model.postprocess_defaults["max_det"]


def test_canonical_meta_rules():
    v1 = {"model": "yolox-s", "num_classes": 3, "img_size": [320, 320], "model_config": {"img_size": 640}}
    assert canonical_meta(v1)["model_config"] == {"name": "yolox-s", "num_classes": 3, "img_size": 640}
    # an export sidecar's top-level size was the exported one: it wins over the training size
    assert canonical_meta(v1, top_level_wins=True)["model_config"]["img_size"] == [320, 320]
    with pytest.raises(OdkitError, match="model_config.num_classes"):
        canonical_meta({"model": "yolox-s"}, "w.json")


def test_export_sidecar_once_and_version1_reads_the_same(weights, tmp_path):
    pytest.importorskip("onnxruntime")
    from odkit.export.onnx import export_onnx
    from odkit.export.runtime import load_predictor

    path, cfg = weights
    model = odkit.load(path).model
    with pytest.warns(DeprecationWarning, match="conf_thr= is deprecated"):
        onnx_path = export_onnx(model, tmp_path / "m.onnx", img_size=64, nms=True, conf_thr=0.0, iou=0.5)
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert not ARCH_TOP & set(info) and info["model_config"]["img_size"] == 64
    assert info["model_config"]["class_names"] == NAMES and (info["conf"], info["iou"]) == (0.0, 0.5)
    new = load_predictor(onnx_path)
    # the same file with the sidecar of an earlier odkit: exported size at the top level, training size
    # inside, the in-graph settings spelled conf_thr / iou_thr
    old = {k: v for k, v in info.items() if k not in ("model_config", "conf", "iou")}
    old.update(model="yolox-nano", num_classes=2, class_names=NAMES, img_size=[64, 64], conf_thr=0.0,
               iou_thr=0.5, model_config={**info["model_config"], "img_size": 96})
    (tmp_path / "m.onnx.json").write_text(json.dumps(old))
    got = load_predictor(onnx_path)
    assert got.img_size == new.img_size == 64 and got.class_names == NAMES and got.name == "yolox-nano"
    _same(got.predict(_image()), new.predict(_image()))


def test_background_slot_sidecars_before_version3_count_object_classes(tmp_path):
    """Versions 1 and 2 counted a background-slot model's classes with the slot (torchvision's 91);
    they read as object classes (90), once, and a model written now is read back unchanged."""
    cfg = {"name": "ssdlite320-mobilenetv3", "num_classes": 91, "background_slot": True}
    for old in ({"format_version": 2, "model_config": cfg}, {"model": "ssdlite320-mobilenetv3", "num_classes": 91,
                                                          "model_config": {"background_slot": True}}):
        meta = canonical_meta(old)
        assert meta["model_config"]["num_classes"] == 90 and meta["format_version"] == 3
        assert canonical_meta(meta)["model_config"]["num_classes"] == 90  # reading again changes nothing
    # a meta built in memory is current: never shifted
    assert canonical_meta({"model_config": {**cfg, "num_classes": 90}})["model_config"]["num_classes"] == 90
    model = build("ssdlite320-mobilenetv3", num_classes=3, background_slot=True, class_names=["bg", "a", "b", "c"])
    path = save_weights(tmp_path / "w.safetensors", model.state_dict(), {"model_config": model.config})
    loaded = odkit.load(path)
    assert loaded.model.num_classes == 3 and loaded.model.num_labels == 4
    assert loaded.class_names == ["bg", "a", "b", "c"]
    with pytest.raises(OdkitError, match="4 labels"):
        build("ssdlite320-mobilenetv3", num_classes=3, background_slot=True, class_names=["a", "b", "c"])
