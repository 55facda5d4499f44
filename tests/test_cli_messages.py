"""Command-line messages: ``key=value`` arguments, the zoo listing (``odkit models``, ``info --list``),
``odkit export``'s result line, sizes fitted to the model's divisor, and the Python API's logs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from odkit.cli.args import key_value_hint
from odkit.cli.main import build_parser, main
from odkit.errors import ConfigError
from odkit.models import zoo


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------- key=value words


def test_key_value_words_get_the_equivalent_command(capsys):
    assert main(["train", "data=x.yaml", "model=y", "epochs=3"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.endswith("odkit train --data x.yaml --model y --epochs 3")
    # other tools' spellings, booleans, unknown keys named
    assert main(["predict", "source=a.jpg", "imgsz=640", "conf=0.5"]) == 2
    assert _one_line(capsys.readouterr().err).endswith("odkit predict --source a.jpg --img 640 --conf 0.5")
    hint = key_value_hint(build_parser(), ["train", "amp=True", "multiscale=false", "colour=red"])
    assert "odkit train --amp --no-multiscale colour=red" in hint and "has no option colour" in hint


def test_values_of_options_are_not_key_value_words():
    parser = build_parser()
    assert key_value_hint(parser, ["train", "--aug", "scale=[0.5,1.5]", "degrees=0", "--data", "d"]) is None
    assert key_value_hint(parser, ["train", "--name", "a=b"]) is None
    assert key_value_hint(parser, ["train", "--data", "d", "colour=red"]) is None  # no option: argparse says so
    # a numeric list cannot hold key=value: it ends there
    assert key_value_hint(parser, ["train", "--lr-steps", "0.5", "epochs=3"]).endswith(
        "odkit train --lr-steps 0.5 --epochs 3")


# ------------------------------------------------------------------------------------ zoo listing


def test_info_without_a_model_lists_the_zoo_and_help_names_list(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in zoo.available():
        assert f"\n{name} " in "\n" + out
    assert "odkit models" in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["info", "--help"])
    assert "--list" in capsys.readouterr().out


def test_models_rows_count_parameters_and_flops(capsys):
    from torch.utils.flop_counter import FlopCounterMode

    from odkit.cli.info import count_flops

    def real_flops(model, size):  # reference: the counter on a real forward
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.forward_export(torch.zeros(1, 3, size, size))
        return counter.get_total_flops()

    assert main(["models", "yolox-nano", "retinanet-lite", "--num-classes", "3"]) == 0
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[1:3]}
    for name in ("yolox-nano", "retinanet-lite"):
        model = zoo.build(name, num_classes=3).eval()
        assert rows[name][1] == str(zoo.spec(name).img_size)
        assert float(rows[name][2]) == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0.005)
    assert float(rows["yolox-nano"][3]) == pytest.approx(real_flops(zoo.build("yolox-nano", num_classes=3), 416) / 1e9,
                                                         abs=0.005)
    assert rows["yolox-nano"][4:] == ["official", "YOLOX", "(Megvii)"] and rows["retinanet-lite"][4] == "-"
    # a two-stage model needs real values (its proposals): counted again on the copy rebuild() gives
    net = zoo.build("fasterrcnn-mobilenetv3-fpn", num_classes=3).eval()
    expected = real_flops(net, 64)
    assert count_flops(zoo.build("fasterrcnn-mobilenetv3-fpn", num_classes=3).eval(), 64, 64, lambda: net) == expected


def test_models_refuses_an_unknown_name(capsys):
    assert main(["models", "yolox-huge"]) == 2
    assert "unknown model 'yolox-huge'" in _one_line(capsys.readouterr().err)


@pytest.mark.slow
def test_models_lists_every_zoo_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in zoo.available():
        assert f"\n{name} " in out


# ----------------------------------------------------------------------------- sizes and export


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from odkit.weights.format import save_weights

    torch.manual_seed(0)
    model = zoo.build("yolox-nano", num_classes=2, img_size=64)
    meta = {"model": "yolox-nano", "num_classes": 2, "img_size": 64, "epoch": 1, "class_names": ["a", "b"],
            "model_config": model.config}
    return save_weights(tmp_path_factory.mktemp("w") / "best.safetensors", model.state_dict(), meta)


def test_export_says_exported_once_and_fits_img(weights, tmp_path, capsys, caplog):
    pytest.importorskip("onnx")
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--img", "70", "--out", str(out)]) == 0
    std = capsys.readouterr()
    assert std.out.count("exported ") == 1 and "exported" not in std.err  # one line ...
    assert [r for r in caplog.records if r.levelno >= logging.INFO and "exported" in r.getMessage()] == []
    assert std.out.startswith(f"exported {out} (onnx, yolox-nano, img 64x64")  # ... at 70 -> 64
    assert "--img 70 is not a multiple of yolox-nano's size divisor 32: using 64" in caplog.text


def test_predictor_fits_and_refuses_sizes(weights, caplog):
    import odkit

    pred = odkit.load(weights)
    image = np.zeros((50, 60, 3), np.uint8)
    for bad in (-32, 0, 1.5, math.nan, "64"):
        with pytest.raises(ConfigError, match="img_size"):
            pred(image, img_size=bad)
    for kw, name in (({"batch": 0}, "batch"), ({"conf": 1.5}, "conf"), ({"iou": -0.1}, "iou"),
                     ({"max_det": 0}, "max_det")):
        with pytest.raises(ConfigError, match=name):
            pred(image, **kw)
    with caplog.at_level(logging.WARNING):
        fitted = pred(image, img_size=70, conf=0.0)
    assert "img_size 70 is not a multiple of yolox-nano's size divisor 32: using 64" in caplog.text
    assert all(torch.equal(a[k], b[k]) for a, b in zip(fitted, pred(image, img_size=64, conf=0.0)) for k in a)


def test_train_config_uses_the_same_rules():
    from odkit.engine.config import TrainConfig

    for kw, flag in (({"img_size": -32}, "--img"), ({"lr": math.nan}, "--lr"), ({"batch": 0}, "--batch"),
                     ({"conf": 2.0}, "--conf"), ({"time": math.inf}, "--time"),
                     ({"lr_steps": [0.5, 1.5]}, "--lr-steps"), ({"cache": -1.0}, "--cache")):
        with pytest.raises(ConfigError, match=flag):
            TrainConfig(**kw)


# ------------------------------------------------------------------------ Python API train logs


def test_python_train_shows_the_data_check_and_recipe_as_the_cli(tmp_path, capsys, monkeypatch):
    """With no logging configured (pytest's own handlers removed), odkit.train shows the data check,
    the recipe and the fitted --img on stderr, as `odkit train` does; afterwards nothing is left
    attached."""
    import odkit
    from odkit.data.synth import synthesize

    data = synthesize(tmp_path / "d", n=20, seed=0, size=64, val_fraction=0.2)  # one negative image
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    odkit.train(data=str(data), img_size=70, epochs=1, batch=8, workers=0, device="cpu", threads=1, plots=False,
                project=str(tmp_path / "runs"))
    err = capsys.readouterr().err
    assert f"data check of {data} [train]:" in err and "negative_image" in err
    assert "--img 70 is not a multiple of yolox-nano's size divisor 32: using 64" in err
    assert "training recipe for yolox-nano" in err and "img_size       64" in err
    assert logging.getLogger("odkit").handlers == []
