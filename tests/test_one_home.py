"""One home per fact: the default input size is the model config's (its zoo entry's), read by
``zoo.input_size`` for training, prediction and export."""

from __future__ import annotations

import json

import pytest
import torch

from odkit.engine.config import TrainConfig
from odkit.engine.predictor import Predictor
from odkit.errors import ConfigError
from odkit.models import build, zoo


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-s", "ssd300-vgg16", "retinanet-r50-fpn"])
def test_train_default_size_is_the_zoo_entry(name):
    assert TrainConfig(model=name).img_size == zoo.MODELS[name].img_size == zoo.recipe(name)["img_size"]


def test_input_size_reads_the_config():
    assert zoo.input_size({"name": "yolox-s"}) == 640  # no img_size: the zoo entry's
    assert zoo.input_size({"name": "yolox-s", "img_size": 320}) == 320
    assert zoo.input_size({"img_size": [256, 320]}) == 320  # [h, w]: the longer side
    with pytest.raises(ConfigError, match="img_size"):
        zoo.input_size({})


def test_predictor_and_export_use_the_model_config(tmp_path):
    torch.manual_seed(0)
    model = build("yolox-nano", num_classes=2, img_size=96)
    assert Predictor(model).img_size == 96 and Predictor(build("yolox-s", num_classes=1)).img_size == 640
    pytest.importorskip("onnx")
    from odkit.export.onnx import export_onnx

    export_onnx(model, tmp_path / "m.onnx")
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert info["model_config"]["img_size"] == 96 and info["input"]["shape"][2:] == [96, 96]


# ------------------------------------------------------------- one spelling: img_size, conf, iou


def test_old_keywords_warn_and_mean_the_same():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="conf_thr= is deprecated, use conf="):
        old = build("yolox-nano", num_classes=2, conf_thr=0.3, iou_thr=0.4)
    new = build("yolox-nano", num_classes=2, conf=0.3, iou=0.4)
    assert old.postprocess_defaults == new.postprocess_defaults
    assert new.postprocess_defaults["conf"] == 0.3 and new.postprocess_defaults["iou"] == 0.4
    assert old.config == new.config  # stored under today's names
    new.load_state_dict(old.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(DeprecationWarning, match="Detector.predict"):
        a = old.predict(x, conf_thr=0.0, iou_thr=0.5)[0]
    b = new.predict(x, conf=0.0, iou=0.5)[0]
    assert len(b["scores"]) > 0 and all(torch.equal(a[k], b[k]) for k in b)
    with pytest.raises(ConfigError, match="give only conf="):
        build("yolox-nano", num_classes=2, conf_thr=0.3, conf=0.2)


def test_files_of_earlier_versions_read_silently(recwarn):
    # an earlier run's args.yaml / checkpoint config, and a model config with the old setting names
    cfg = TrainConfig.from_dict({"model": "yolox-s", "img": 320, "conf_thr": 0.1, "iou_thr": 0.5})
    assert (cfg.img_size, cfg.conf, cfg.iou) == (320, 0.1, 0.5)
    model = zoo.from_config({"name": "yolox-nano", "num_classes": 1, "conf_thr": 0.2})
    assert model.postprocess_defaults["conf"] == 0.2 and "conf_thr" not in model.config
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_train_old_keywords_warn(tmp_path):
    import odkit
    from odkit.errors import OdkitError

    with pytest.warns(DeprecationWarning, match="odkit.train: img= is deprecated, use img_size="):
        with pytest.raises(OdkitError):
            odkit.train(data=str(tmp_path / "missing.yaml"), img=64, project=str(tmp_path))
