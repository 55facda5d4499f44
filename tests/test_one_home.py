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
    assert TrainConfig(model=name).img == zoo.MODELS[name].img_size == zoo.recipe(name)["img"]


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
