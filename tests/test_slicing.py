"""Sliced inference, test-time augmentation and ensembles: SAHI parity on a committed fixture
(``benchmarks/sahi_parity.py`` writes SAHI's slice grids and merged results), and end-to-end runs with
a stand-in detector that finds bright rectangles exactly (so the expected boxes are known)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from odkit.engine.merging import EnsemblePredictor, TTAPredictor, merge_detections
from odkit.engine.slicing import SliceConfig, SlicedPredictor, slice_grid
from odkit.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "sahi_parity.json"


def _paired(got, exp):
    """Each expected box paired with the closest unpaired box of its label: max differences."""
    gb, gs, gl = (np.asarray(x, np.float64) for x in got)
    eb, es, el = (np.asarray(x, np.float64) for x in exp)
    assert len(gs) == len(es)
    free = np.ones(len(gs), bool)
    db = ds = 0.0
    for i in range(len(es)):
        cost = np.abs(gb.reshape(-1, 4) - eb[i]).max(1) + 1e3 * np.abs(gs - es[i])
        cost[~free | (gl != el[i])] = np.inf
        j = int(np.argmin(cost))
        assert np.isfinite(cost[j])
        free[j] = False
        db, ds = max(db, np.abs(gb[j] - eb[i]).max()), max(ds, abs(gs[j] - es[i]))
    return db, ds


def test_slice_grid_equals_sahi():
    fx = json.loads(FIXTURE.read_text())
    for g in fx["grids"]:
        assert [list(c) for c in slice_grid(g["h"], g["w"], g["size"], g["overlap"])] == g["slices"]


def test_slice_grid_covers_image():
    for h, w, s, o in ((1000, 1300, 416, 0.2), (50, 70, 640, 0.2), (2000, 2000, 640, 0.0)):
        cover = np.zeros((h, w), bool)
        for x0, y0, x1, y1 in slice_grid(h, w, s, o):
            assert x1 - x0 == min(s, w) and y1 - y0 == min(s, h)
            cover[y0:y1, x0:x1] = True
        assert cover.all()
    with pytest.raises(ConfigError, match="overlap"):
        slice_grid(100, 100, 64, 1.0)


def test_merge_equals_sahi_on_fixture():
    fx = json.loads(FIXTURE.read_text())
    parts = [{k: torch.tensor(v, dtype=torch.float64 if k != "labels" else torch.int64) for k, v in p.items()}
             for p in fx["parts"]]
    n_slices = len(parts) - 1  # the last part is the whole image's
    assert len(fx["cases"]) == 8
    for c in fx["cases"]:
        use = parts if c["full_image"] else parts[:n_slices]
        joined = {k: torch.cat([p[k] for p in use]) for k in use[0]}
        got = merge_detections([joined], c["merge"], c["match"], fx["match_thr"])
        assert len(got["scores"]) < len(joined["scores"])  # the case merges something
        e = c["expected"]
        db, ds = _paired((got["boxes"], got["scores"], got["labels"]), (e["boxes"], e["scores"], e["labels"]))
        assert db <= 0.01 and ds <= 1e-5, c


class BrightBoxes:
    """Stand-in detector: the bounding box of the pixels > 200 of each image (score 0.9, class 0)."""

    class_names, img_size, name = ["thing"], 64, "bright"
    model = SimpleNamespace(size_divisor=32, postprocess_defaults={"iou": 0.5})

    def __init__(self, shift=0.0):
        self.calls, self.shift = [], shift

    def predict(self, images, conf=None, iou=None, max_det=None, img_size=None, batch=8):
        self.calls.append((len(images), img_size))
        out = []
        for im in images:
            ys, xs = np.nonzero(np.asarray(im)[..., 0] > 200)
            if len(xs):
                b = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32) + self.shift
                out.append({"boxes": b, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])})
            else:
                out.append({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)})
        return out


def _picture():
    img = np.zeros((300, 500, 3), np.uint8)
    img[90:130, 190:230] = 255  # cut by slice borders (slices of 128, step 103), whole in none
    return img


def test_sliced_prediction_merges_cut_object_and_streams_batches():
    base = BrightBoxes()
    cfg = SliceConfig(size=128, overlap=0.2, merge="greedy-nmm", match="ios", match_thr=0.5)
    out, = SlicedPredictor(base, cfg).predict(_picture(), batch=4)
    assert out["boxes"].tolist() == [[190, 90, 230, 130]]
    n = len(slice_grid(300, 500, 128, 0.2))
    assert sum(c[0] for c in base.calls) == n and max(c[0] for c in base.calls) <= 4
    # NMS keeps the cut pieces apart (they do not overlap 50 % in IoU)
    out, = SlicedPredictor(base, SliceConfig(size=128, merge="nms", match="iou")).predict(_picture())
    assert len(out["boxes"]) > 1
    # the full-image pass adds the whole box, merged with the pieces
    out, = SlicedPredictor(BrightBoxes(), SliceConfig(size=128, full_image=True)).predict(_picture())
    assert out["boxes"].tolist() == [[190, 90, 230, 130]]


def test_tta_maps_flipped_boxes_back():
    base = BrightBoxes()
    out, = TTAPredictor(base).predict(_picture(), img_size=64)
    assert out["boxes"].tolist() == [[190, 90, 230, 130]]
    assert [c[1] for c in base.calls] == [64, 64, 32]  # 64 x (1, 0.83, 0.67) to the nearest multiple of 32
    base = BrightBoxes()
    TTAPredictor(base).predict(_picture(), img_size=640)
    assert [c[1] for c in base.calls] == [640, 544, 416]
    with pytest.raises(ConfigError, match="PyTorch"):
        TTAPredictor(SimpleNamespace(class_names=[], img_size=64, name="x"))


def test_ensemble_wbf_averages_models():
    out, = EnsemblePredictor([BrightBoxes(), BrightBoxes(shift=2.0)], merge="wbf").predict(_picture())
    np.testing.assert_allclose(out["boxes"].numpy(), [[191, 91, 231, 131]])
    np.testing.assert_allclose(out["scores"].numpy(), [0.9], rtol=1e-6)
    with pytest.raises(ConfigError, match="merge"):
        EnsemblePredictor([BrightBoxes()], merge="mean")
