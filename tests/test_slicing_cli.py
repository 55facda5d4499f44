"""``odkit predict --slice / --tta / --weights A B`` and ``odkit val --slice``: the command line runs
the same computation as the Python wrappers (results compared with them)."""

import json

import numpy as np
import pytest
import torch

from odkit.cli.main import main
from odkit.data.synth import CLASS_NAMES
from odkit.models import zoo


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from odkit.weights.format import save_weights

    torch.manual_seed(0)
    model = zoo.build("yolox-nano", num_classes=3, img_size=64)
    with torch.no_grad():  # a random network with confident outputs: many boxes to merge
        for i in range(3):
            model.head.obj_preds[i].bias.fill_(3.0)
            model.head.cls_preds[i].bias.fill_(0.0)
    meta = {"model": "yolox-nano", "num_classes": 3, "img_size": 64, "epoch": 1, "class_names": CLASS_NAMES,
            "model_config": model.config}
    return save_weights(tmp_path_factory.mktemp("w") / "best.safetensors", model.state_dict(), meta)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from odkit.data.imageio import write_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)
    p = tmp_path_factory.mktemp("img") / "a.png"
    write_image(p, img)
    return p


def _boxes(out):
    preds = json.loads((out / "predictions.json").read_text())
    return sorted((round(p["bbox"][0], 1), round(p["bbox"][1], 1), round(p["score"], 4)) for p in preds)


def test_predict_slice_tta_ensemble_match_python(weights, image, tmp_path):
    from odkit.engine.api import load
    from odkit.engine.merging import EnsemblePredictor, TTAPredictor
    from odkit.engine.slicing import SliceConfig, SlicedPredictor

    base = load(weights)
    runs = {
        "slice": (["--slice", "64", "--overlap", "0.25", "--full-image"],
                  SlicedPredictor(base, SliceConfig(size=64, overlap=0.25, full_image=True))),
        "tta": (["--tta"], TTAPredictor(base)),
        "ens": (["--merge", "nmw"], EnsemblePredictor([base, base], merge="nmw")),
    }
    for name, (flags, py) in runs.items():
        out = tmp_path / name
        w = [str(weights)] * (2 if name == "ens" else 1)
        assert main(["predict", "--weights", *w, "--source", str(image), "--out", str(out), "--max-det", "15",
                     *flags]) == 0
        d = py.predict(str(image), max_det=15)[0]
        exp = sorted((round(round(float(b[0]), 2), 1), round(round(float(b[1]), 2), 1), round(round(float(s), 5), 4))
                     for b, s in zip(d["boxes"], d["scores"]))
        assert len(exp) > 0 and _boxes(out) == exp, name


@pytest.mark.slow
def test_val_slice_runs_and_bad_overlap_is_a_clear_error(weights, tmp_path, capsys):
    from odkit.data.synth import synthesize

    synthesize(tmp_path / "d", n=4, seed=0, size=96, val_fraction=0.5)
    capsys.readouterr()
    rc = main(["val", "--weights", str(weights), "--data", str(tmp_path / "d" / "data.yaml"), "--slice", "48",
               "--split", "val"])
    assert rc == 0
    assert "Average Precision" in capsys.readouterr().out
    rc = main(["predict", "--weights", str(weights), "--source", str(tmp_path), "--slice", "48", "--overlap", "1"])
    assert rc == 2
