"""``odkit export`` with ``--half``, ``--dynamic`` and ``--nms`` on every zoo model: the exported graph
reproduces the fp32 PyTorch model's detections in onnxruntime within the stated tolerance, or the
command exits 2 with a one-line reason. Never a traceback.

Tolerances (detections of ``Detector.predict`` against the exported predictor, same settings):

- float32 graphs: every PyTorch detection has a partner (same label, every box coordinate within
  0.05 px, score within 1e-3), at least 95 % of them (near-equal candidates may swap places in NMS:
  with these random output layers about one detection in 40 sits on such a tie);
  Double-Head (random weights) at least 90 % (the RPN's NMS among tied objectness keeps other
  proposals); Faster R-CNN is compared on imported torchvision-layout synthetic weights;
- float16 graphs: boxes within 1 % of the input side, scores within 2e-2, at least 85 % of them.

Detections are compared above a score threshold that about 40 detections per image pass, and NMS
graphs are exported with ``--pre-topk 4000``, so that neither the pre-NMS top-k nor ``max_det``
binds: the in-graph NMS takes its top-k over all levels, ``Detector.predict`` per level, so where
the top-k binds the two keep different candidates by design.

The default suite runs one small member of each head type (the RPN + RoI head, SSD, YOLOv1, YOLOv2,
YOLOv3, YOLOX, CenterNet, EfficientDet and the four dense heads); every zoo model at its own configuration is marked ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from odkit.cli.main import main
from odkit.engine.api import load
from odkit.models import zoo
from odkit.weights.format import save_weights

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

SMALL = ["yolox-nano", "retinanet-lite", "fcos-lite", "atss-lite", "gfl-lite", "yolov3-tiny",
         "ssdlite320-mobilenetv3", "fasterrcnn-mobilenetv3-fpn", "yolov2-tiny", "yolov1-lite", "centernet-lite",
         "efficientdet-lite"]
FLAGS = {"half": ["--half"], "dynamic-nms": ["--dynamic", "--nms"], "half-dynamic-nms": ["--half", "--dynamic", "--nms"]}
TOP = 40


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


def _size(model) -> int:
    if hasattr(model.head, "grid"):  # YOLOv1: the fully connected head fixes the input size
        return model.head.grid * model.head.strides[0]
    if model.size_divisor == 1:
        return 300
    if model.size_divisor > 32:  # EfficientDet: sides multiples of 128
        return 2 * model.size_divisor
    return 320 if model.config.get("background_slot") else 160  # imported R-CNN weights: 320 px


def _spread(model: torch.nn.Module) -> None:
    """Spread the output layers' weights so that scores and boxes vary across the image (default
    initialisation scores almost every candidate alike, and NMS between equal scores is arbitrary)."""
    g = torch.Generator().manual_seed(0)
    layers = [(n, m) for n, m in model.head.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    # scores only (wild boxes would all be clipped); towers keep their width (in == out channels)
    predictors = [m for n, m in layers if getattr(m, "out_channels", getattr(m, "out_features", 0)) <= 60
                  and getattr(m, "out_channels", 0) != getattr(m, "in_channels", -1)
                  and not any(k in n for k in ("bbox", "reg", "box", "wh_", "offset"))]
    with torch.no_grad():
        fc2 = getattr(model.head, "fc2", None)
        if fc2 is not None:  # YOLOv1: every output in one linear layer; linear scores and boxes in (0, 1)
            fc2.weight.normal_(0, 0.02, generator=g)
            fc2.bias.copy_(torch.rand(fc2.bias.shape, generator=g) * 0.6 + 0.2)
        for m in predictors:  # class / box / objectness outputs (towers have more channels)
            m.weight.add_(torch.randn(m.weight.shape, generator=g) * float(m.weight.std()) * 2)
            if m.bias is not None:  # scores around 0.1-0.9 instead of the prior 0.01
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
        if type(model.head).__name__ == "YOLOv2Head":
            _vary(model, [model.head.pred])  # the region head: boxes, objectness and classes in one conv


def _vary(model: torch.nn.Module, convs: list[torch.nn.Conv2d]) -> None:
    """BatchNorm statistics of one pass over a test picture (a deep random trunk otherwise fades to
    1e-5, which float16 cannot carry), then the kernels of predictor convolutions whose outputs still
    hardly vary (spatial spread below 0.1) scaled to a spread of about 0.5: YOLOv2's random region
    head otherwise scores every cell alike to 1e-4, and float16 rounding reorders NMS among the ties."""
    size = _size(model)
    x = torch.from_numpy(_images(size)[0]).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        model.train()
        for m in norms:
            m.momentum = 1.0  # the statistics of this one batch
        model.features(x)
        for m in norms:
            m.momentum = 0.1
        model.eval()
    spread: dict[torch.nn.Module, float] = {}
    hooks = [c.register_forward_hook(lambda m, i, o: spread.__setitem__(m, float(o.flatten(2).std(2).mean())))
             for c in convs]
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        for c, sd in spread.items():
            if 0 < sd < 0.1:
                c.weight.mul_(min(0.5 / sd, 100.0))


def _imported_rcnn(name: str, root: Path) -> Path:
    """torchvision-layout synthetic weights imported as ``odkit weights import`` does (the weights of
    ``tests/test_weights_tv_parity_rcnn.py``): randomly initialised two-stage maps fade into tied
    objectness, these give detections that differ from one another."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from tv_parity_rcnn import reference_state_dict

    from odkit.weights import import_weights

    tv = {"fasterrcnn-mobilenetv3-fpn": "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn-r50-fpn": "fasterrcnn_resnet50_fpn"}
    base = name.replace("maskrcnn-", "fasterrcnn-")
    torch.save(reference_state_dict(tv[base], seed=0), root / "tv.pth")
    report = import_weights(root / "tv.pth", source="torchvision", model=base, out=root / "best.safetensors")
    if base != name:  # Mask R-CNN: the Faster R-CNN weights, the mask branch as initialised
        torch.manual_seed(0)
        model = zoo.from_config({**report.model.config, "name": name})
        assert not [k for k in model.load_state_dict(report.model.state_dict(), strict=False).missing_keys
                    if ".mask_" not in k]
        save_weights(root / "best.safetensors", model.state_dict(), {"model_config": model.config, "epoch": 1})
    return root / "best.safetensors"


def _weights(name: str, root: Path) -> Path:
    if "rcnn" in name and not name.startswith("doublehead"):
        return _imported_rcnn(name, root)
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3, class_names=["a", "b", "c"]).eval()
    _spread(model)
    size = _size(model)
    meta = {"model": name, "num_classes": 3, "class_names": ["a", "b", "c"], "img_size": size,
            "model_config": model.config, "epoch": 1}
    return save_weights(root / "best.safetensors", model.state_dict(), meta)


def _images(size: int) -> list[np.ndarray]:
    from odkit.data.synth import render_image

    return [render_image(0, i, size=size).image for i in range(2)]


def _reproduced(ref: dict, got: dict, box_tol: float, score_tol: float) -> float:
    """Share of ``ref``'s detections with a partner in ``got`` (greedy, each partner used once): same
    label, score within ``score_tol`` and, unless the detection's score is exactly tied with another
    of ``ref`` (randomly initialised maps give runs of equal scores, among which NMS keeps any one),
    every box coordinate within ``box_tol``."""
    n = len(ref["scores"])
    if n == 0:
        return 1.0 if len(got["scores"]) == 0 else 0.0
    used = np.zeros(len(got["scores"]), dtype=bool)
    rb, rs, rl = ref["boxes"].numpy(), ref["scores"].numpy(), ref["labels"].numpy()
    gb, gs, gl = got["boxes"].numpy(), got["scores"].numpy(), got["labels"].numpy()
    hit = 0
    for b, s, lab in zip(rb, rs, rl):
        ok = (~used) & (gl == lab) & (np.abs(gs - s) <= score_tol)
        if int((np.abs(rs[rl == lab] - s) <= 1e-6).sum()) == 1:
            ok &= np.abs(gb - b).max(1) <= box_tol
        j = np.flatnonzero(ok)
        if j.size:
            used[j[0]] = True
            hit += 1
    return hit / n


def _check(name: str, flags: list[str], tmp_path: Path, capsys) -> None:
    from odkit.export import load_predictor

    w = _weights(name, tmp_path)
    out = tmp_path / "model.onnx"
    extra = ["--pre-topk", "4000"] if "--nms" in flags else []  # see the module docstring
    rc = main(["export", "--weights", str(w), "--out", str(out), *flags, *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    if rc == 2:  # a refusal names its reason in one line
        lines = [ln for ln in captured.err.strip().splitlines() if ln.strip()]
        assert lines and ("cannot" in lines[-1] or "--" in lines[-1]), captured.err
        return
    assert rc == 0, captured.err
    predictor = load(w)
    size = _size(predictor.model)
    images = _images(size)
    # A score threshold that about TOP detections per image pass: few enough that neither the pre-NMS
    # top-k nor max_det binds, and that a near-tie seldom changes what NMS suppresses.
    probe = predictor.predict(images, conf=0.0, max_det=1000)
    conf = min(float(p["scores"][min(TOP, len(p["scores"]) - 1)]) for p in probe) - 1e-6
    half = "--half" in flags
    box_tol, score_tol, share = (0.01 * size, 2e-2, 0.85) if half else (0.05, 1e-3, 0.95)
    if name.startswith("doublehead") and not half:
        share = 0.9  # random weights: the RPN's NMS among tied objectness keeps other proposals
    ref = predictor.predict(images, conf=conf, max_det=100)
    # the graph's threshold is lower by the score tolerance: a reference detection whose exported score
    # is a little lower must not fall under the threshold (extra exported detections are not counted)
    got = load_predictor(out).predict(images, conf=max(conf - score_tol, 0.0), max_det=200, batch=2)
    assert sum(len(r["scores"]) for r in ref) >= 5, f"{name}: too few detections to compare"
    for i, (r, g) in enumerate(zip(ref, got)):
        rate = _reproduced(r, g, box_tol, score_tol)
        assert rate >= share, f"{name} {flags} image {i}: {rate:.1%} of {len(r['scores'])} detections reproduced"


@pytest.mark.parametrize("flags", list(FLAGS.values()), ids=list(FLAGS))
@pytest.mark.parametrize("name", SMALL)
def test_export_flags_small_members(name: str, flags: list[str], tmp_path, capsys) -> None:
    if flags == FLAGS["half"] and name not in ("yolox-nano", "fasterrcnn-mobilenetv3-fpn", "ssdlite320-mobilenetv3"):
        pytest.skip("half alone: one member per head kind in the default suite (all in the slow matrix)")
    _check(name, flags, tmp_path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], *FLAGS.values(), ["--half", "--nms"], ["--dynamic"]],
                         ids=["fp32", *FLAGS, "half-nms", "dynamic"])
@pytest.mark.parametrize("name", zoo.available())
def test_export_flags_every_zoo_model(name: str, flags: list[str], tmp_path, capsys) -> None:
    _check(name, flags, tmp_path, capsys)
