"""``odkit.weights``: official YOLOX and torchvision checkpoints into odkit, safely.

Fixtures (written by ``benchmarks/yolox_parity.py`` from the official YOLOX source):
``yolox_keys/yolox_{nano,s}.json`` list the official key names and shapes; ``yolox_parity/`` holds a
yolox-nano with 3 classes in official layout (float16 weights) and the official model's decoded
outputs on a 64 x 64 picture. ``torchvision_keys/*.json`` list torchvision's key names and shapes.
"""

from __future__ import annotations

import builtins
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import odkit
from odkit.cli.main import main
from odkit.errors import ConfigError, OdkitError
from odkit.models import zoo
from odkit.models.postprocess import postprocess_candidates
from odkit.weights import import_weights, load_backbone, map_state_dict, read_state_dict, tables

FIX = Path(__file__).parent / "fixtures"
TINY = FIX / "yolox_parity" / "yolox_nano_c3.safetensors"
TINY_OUT = FIX / "yolox_parity" / "yolox_nano_c3_outputs.safetensors"
BOX_TOL, SCORE_TOL = 0.01, 1e-4


def _listing(path: Path) -> dict[str, list[int]]:
    return json.loads(path.read_text())["state_dict"]


def _random_state(listing: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in listing.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(TINY_OUT))


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return load_file(str(TINY))


def _rgb01(img: torch.Tensor) -> torch.Tensor:
    return img.permute(2, 0, 1)[None].float().div(255.0)


def _reference_detections(ref: dict[str, torch.Tensor], conf: float, iou: float,
                          clip: bool = True) -> dict[str, torch.Tensor]:
    """Official decoded outputs -> detections with odkit's per-level filtering and class-wise NMS
    (64 x 64 input: 8 x 8, 4 x 4, 2 x 2 cells), boxes clipped to the picture like a Predictor's."""
    boxes, scores = ref["boxes"], ref["scores"]
    c = scores.shape[1]
    parts, start = [], 0
    for n in (64, 16, 4):
        s = scores[start:start + n].reshape(-1)
        idx = (s > conf).nonzero().squeeze(1)
        parts.append((boxes[start:start + n][idx // c], s[idx], idx % c))
        start += n
    cand = [tuple(torch.cat(t) for t in zip(*parts))]
    metas = [{"orig_size": (64, 64), "ratio": 1.0, "pad": (0, 0)}] if clip else None
    return postprocess_candidates(cand, metas, iou, 1000)[0]


def _conf_between(ref: dict[str, torch.Tensor], k: int) -> float:
    """A threshold half-way between the k-th and (k+1)-th best official scores (no ties at the cut)."""
    top = ref["scores"].flatten().topk(k + 1).values
    return float((top[-2] + top[-1]) / 2)


def _assert_same_detections(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert len(want["boxes"]) > 3
    assert len(got["boxes"]) == len(want["boxes"])

    def order(d: dict[str, torch.Tensor]) -> torch.Tensor:
        return (d["labels"].double() * 1e6 + d["boxes"][:, 0].double().round() * 100 + d["boxes"][:, 1].double() / 100).argsort()

    g, w = order(got), order(want)
    assert torch.equal(got["labels"][g], want["labels"][w])
    torch.testing.assert_close(got["boxes"][g], want["boxes"][w], rtol=0, atol=BOX_TOL)
    torch.testing.assert_close(got["scores"][g], want["scores"][w], rtol=0, atol=SCORE_TOL)


# ----------------------------------------------------------------------------- YOLOX key tables


@pytest.mark.parametrize("name", ["nano", "s"])
def test_yolox_table_maps_every_official_key(name: str) -> None:
    listing = _listing(FIX / "yolox_keys" / f"yolox_{name}.json")
    model = zoo.build(f"yolox-{name}", num_classes=80)
    target = model.state_dict()
    source = {k: torch.empty(s) for k, s in listing.items()}
    tensors, parts = map_state_dict(source, target, tables.detector_table("yolox", f"yolox-{name}"))
    assert parts["missing"] == [] and parts["unexpected"] == [] and parts["mismatched"] == []
    assert len(parts["mapped"]) == len(listing) == len(target)
    assert sorted(t for _, t in parts["mapped"]) == sorted(target)  # one-to-one


@pytest.mark.parametrize("name", ["nano", "s"])
def test_yolox_import_copies_every_tensor(name: str) -> None:
    sd = _random_state(_listing(FIX / "yolox_keys" / f"yolox_{name}.json"))
    report = import_weights({"start_epoch": 300, "model": sd}, "yolox", f"yolox-{name}")
    assert report.ok and report.num_classes == 80
    assert report.model.config["class_names"][0] == "person"  # COCO names for 80-class checkpoints
    loaded = report.model.state_dict()
    for src, dst in report.mapped:
        assert torch.equal(loaded[dst], sd[src]), (src, dst)


# ----------------------------------------------------------------------------- YOLOX parity


def test_yolox_tiny_fixture_parity(ref, tiny_state, tmp_path) -> None:
    report = import_weights(TINY, "yolox", "yolox-nano")
    assert report.ok and report.num_classes == 3 and len(report.mapped) == len(tiny_state)
    assert report.model.config["input_bgr"] is True
    model = report.model.eval()
    x = _rgb01(ref["image_rgb"])
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
    torch.testing.assert_close(boxes[0], ref["boxes"], rtol=0, atol=BOX_TOL)
    torch.testing.assert_close(scores[0], ref["scores"], rtol=0, atol=SCORE_TOL)
    assert float(ref["scores"].max() - ref["scores"].min()) > 0.5  # scores spread: the check has teeth

    # the same weights read as RGB (the official models take BGR) give other outputs
    rgb_model = zoo.build("yolox-nano", num_classes=3, pixel_mean=(0, 0, 0), pixel_std=(1 / 255,) * 3)
    rgb_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        _, rgb_scores = rgb_model.eval().forward_export(x)
    assert float((rgb_scores[0] - ref["scores"]).abs().max()) > 100 * SCORE_TOL


def test_yolox_parity_through_written_weights_and_predict(ref, tiny_state, tmp_path) -> None:
    # official-layout .pth container, as the YOLOX trainer writes it
    pth = tmp_path / "yolox_nano_c3.pth"
    torch.save({"start_epoch": 300, "model": tiny_state, "optimizer": {"state": {}, "param_groups": []}}, pth)
    out = tmp_path / "w" / "nano.safetensors"
    report = import_weights(pth, "yolox", "yolox-nano", out=out)
    assert report.ok and report.out == out and out.with_suffix(".json").is_file()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model_config"]["input_bgr"] is True and meta["epoch"] == 300
    assert meta["imported"]["from"] == "yolox"

    pred = odkit.load(out)
    x = _rgb01(ref["image_rgb"])
    with torch.no_grad():
        boxes, scores = pred.model.forward_export(x)
    torch.testing.assert_close(boxes[0], ref["boxes"], rtol=0, atol=BOX_TOL)
    torch.testing.assert_close(scores[0], ref["scores"], rtol=0, atol=SCORE_TOL)

    conf, iou = _conf_between(ref, 40), 0.45
    want = _reference_detections(ref, conf, iou)
    # Predictor input: a uint8 RGB picture (64 x 64, so letterboxing is the identity)
    got = pred.predict(ref["image_rgb"].numpy(), conf=conf, iou=iou, max_det=1000, img_size=64)[0]
    _assert_same_detections(got, want)
    # model.predict input: a float RGB [0, 1] batch
    got = pred.model.predict(x, conf=conf, iou=iou, max_det=1000)[0]
    _assert_same_detections(got, _reference_detections(ref, conf, iou, clip=False))


def test_yolox_parity_through_cli_and_onnx(ref, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from odkit.export import export, load_predictor

    tiny = {k: v for k, v in load_file(str(TINY)).items()}
    pth = tmp_path / "ckpt.pth"
    torch.save({"start_epoch": 10, "model": tiny}, pth)
    out = tmp_path / "nano.safetensors"
    assert main(["weights", "import", str(pth), "--from", "yolox", "--model", "yolox-nano", "--out", str(out)]) == 0
    onnx_path = export(out, "onnx", img_size=64, out=tmp_path / "nano.onnx")
    boxes, scores = load_predictor(onnx_path).run(_rgb01(ref["image_rgb"]))[:2]
    torch.testing.assert_close(torch.from_numpy(boxes[0]), ref["boxes"], rtol=0, atol=BOX_TOL)
    torch.testing.assert_close(torch.from_numpy(scores[0]), ref["scores"], rtol=0, atol=SCORE_TOL)


def test_cli_import_then_predict(ref, tmp_path, capsys) -> None:
    import cv2

    out = tmp_path / "nano.safetensors"
    assert main(["weights", "import", str(TINY), "--from", "yolox", "--model", "yolox-nano", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mapped 642, missing 0, unexpected 0, shape-mismatched 0" in text
    img = tmp_path / "img.png"
    cv2.imwrite(str(img), ref["image_rgb"].numpy()[..., ::-1])  # written as BGR, read back as RGB
    conf = _conf_between(ref, 40)
    res = tmp_path / "pred"
    assert main(["predict", "--weights", str(out), "--source", str(img), "--img", "64", "--conf", str(conf),
                 "--max-det", "1000", "--device", "cpu", "--out", str(res)]) == 0
    rows = json.loads((res / "predictions.json").read_text())
    want = _reference_detections(ref, conf, 0.45)
    assert len(rows) == len(want["boxes"])
    assert sorted(r["category_id"] for r in rows) == sorted(want["labels"].tolist())


# ----------------------------------------------------------------------------- container handling


@pytest.mark.parametrize("wrap", ["model", "state_dict", "model_state_dict", "module", "plain"])
def test_nested_state_dicts(tiny_state, tmp_path, wrap: str) -> None:
    sd = {k: v.clone() for k, v in tiny_state.items()}
    if wrap == "module":
        obj: dict = {"model": {f"module.{k}": v for k, v in sd.items()}}
    elif wrap == "plain":
        obj = sd
    else:
        obj = {wrap: sd, "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    got = read_state_dict(path)
    assert sorted(got) == sorted(tiny_state)
    report = import_weights(path, "yolox", "yolox-nano")
    assert report.ok and len(report.mapped) == len(tiny_state)


def test_other_num_classes_keeps_class_layers(tiny_state) -> None:
    report = import_weights(dict(tiny_state), "yolox", "yolox-nano", num_classes=5)
    assert report.ok and report.num_classes == 5 and report.model.num_classes == 5
    kept = [k for k in report.kept if "cls_preds" in k]
    assert sorted(kept) == sorted(f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias"))
    assert torch.equal(report.model.state_dict()["head.obj_preds.0.weight"], tiny_state["head.obj_preds.0.weight"].float())


def test_unsupported_and_missing_files(tmp_path) -> None:
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ConfigError, match="unsupported checkpoint type"):
        import_weights(bad, "yolox", "yolox-nano")
    with pytest.raises(ConfigError, match="does not exist"):
        import_weights(tmp_path / "nope.pth", "yolox", "yolox-nano")
    with pytest.raises(ConfigError, match="unknown weights source"):
        import_weights(TINY, "mmdet", "yolox-nano")
    with pytest.raises(ConfigError, match="no state dict"):
        torch.save({"model": {"a": 1}}, tmp_path / "empty.pth")
        import_weights(tmp_path / "empty.pth", "yolox", "yolox-nano")


# ----------------------------------------------------------------------------- pickle payloads


class _Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_payload_is_live(tmp_path) -> None:
    """Control: the payload does run under a plain unpickler (so the refusals below mean something)."""
    marker = tmp_path / "control.txt"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.read_text() == "ran"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", ["evil.pth", "evil.pt", "evil.tar", "evil.safetensors"])
@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_pickle_payload_refused_everywhere(tmp_path, capsys, name: str, kind: str) -> None:
    marker = tmp_path / "payload_ran.txt"
    evil = tmp_path / name
    obj = {"model": {"w": torch.zeros(1), "x": _Payload(marker)}}
    if kind == "torch.save":
        torch.save(obj, evil)
    else:
        evil.write_bytes(pickle.dumps(obj))
    assert not marker.exists()

    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        import_weights(evil, "yolox", "yolox-nano")
    assert not marker.exists()
    with pytest.raises(ConfigError):
        load_backbone(zoo.build("yolox-nano", num_classes=3), evil, "yolox")
    assert not marker.exists()
    assert main(["weights", "import", str(evil), "--from", "yolox", "--model", "yolox-nano",
                 "--out", str(tmp_path / "w.safetensors")]) == 2
    assert name in capsys.readouterr().err
    assert not (tmp_path / "w.safetensors").exists()
    assert main(["predict", "--weights", str(evil), "--source", str(tmp_path), "--device", "cpu",
                 "--out", str(tmp_path / "pred")]) == 2
    with pytest.raises(OdkitError):
        odkit.load(evil)
    assert not marker.exists()


# ----------------------------------------------------------------------------- incomplete imports


def test_missing_key_and_wrong_shape_fail_with_names(tiny_state, tmp_path, capsys) -> None:
    sd = {k: v.clone() for k, v in tiny_state.items()}
    del sd["backbone.backbone.dark3.0.dconv.bn.weight"]
    sd["backbone.C3_p4.conv1.conv.weight"] = torch.zeros(7, 3, 1, 1, dtype=torch.float16)
    sd["head.extra_layer.weight"] = torch.zeros(2)
    src = tmp_path / "broken.safetensors"
    save_file(sd, str(src))
    out = tmp_path / "w.safetensors"
    rc = main(["weights", "import", str(src), "--from", "yolox", "--model", "yolox-nano", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "missing 1," in text and "unexpected 1," in text and "shape-mismatched 1" in text
    assert "missing     backbone.dark3.0.dconv.bn.weight" in text
    assert "backbone.C3_p4.conv1.conv.weight [7, 3, 1, 1] -> neck.C3_p4.conv1.conv.weight" in text
    assert "unexpected  head.extra_layer.weight" in text
    assert not out.exists() and not out.with_suffix(".json").exists()

    report = import_weights(src, "yolox", "yolox-nano", out=out)
    assert not report.ok and report.out is None
    assert report.missing == ["backbone.dark3.0.dconv.bn.weight"]
    assert [tuple(m[:3]) for m in report.mismatched] == [
        ("neck.C3_p4.conv1.conv.weight", (7, 3, 1, 1), tuple(report.model.state_dict()["neck.C3_p4.conv1.conv.weight"].shape))
    ]


def test_unexpected_keys_alone_do_not_fail(tiny_state, tmp_path, capsys) -> None:
    sd = {**tiny_state, "ema_decay": torch.tensor(0.9998)}
    src = tmp_path / "extra.safetensors"
    save_file(sd, str(src))
    assert main(["weights", "import", str(src), "--from", "yolox", "--model", "yolox-nano"]) == 0
    assert "unexpected  ema_decay" in capsys.readouterr().out


def test_wrong_model_size_reports_mismatches(tiny_state) -> None:
    report = import_weights(dict(tiny_state), "yolox", "yolox-s")
    assert not report.ok and report.mismatched


# ----------------------------------------------------------------------------- torchvision backbones


def test_torchvision_resnet18_into_odkit_resnet18() -> None:
    from odkit.models.backbones.resnet import ResNet

    listing = _listing(FIX / "torchvision_keys" / "resnet18.json")
    sd = _random_state(listing, seed=1)
    backbone = ResNet(18)
    report = load_backbone(backbone, sd, "torchvision")
    assert report.ok and report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    assert len(report.mapped) == len(listing) - 2 == len(backbone.state_dict())
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_torchvision_resnet18_into_a_detector(tmp_path) -> None:
    from odkit.models.backbones.resnet import ResNet
    from odkit.models.detector import Detector
    from odkit.models.heads import YOLOXHead

    backbone = ResNet(18)
    det = Detector(backbone, torch.nn.Identity(), YOLOXHead(3, backbone.out_channels, feat_channels=32))
    head_before = {k: v.clone() for k, v in det.head.state_dict().items()}
    sd = _random_state(_listing(FIX / "torchvision_keys" / "resnet18.json"), seed=2)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    report = load_backbone(det, path)
    assert report.ok and report.scope == "backbone" and not report.unexpected
    assert all(t.startswith("backbone.") for _, t in report.mapped)
    assert torch.equal(det.state_dict()["backbone.layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])
    for k, v in det.head.state_dict().items():
        assert torch.equal(v, head_before[k]), k


def test_torchvision_resnet_wrong_depth_is_refused() -> None:
    from odkit.models.backbones.resnet import ResNet

    sd = _random_state(_listing(FIX / "torchvision_keys" / "resnet18.json"))
    backbone = ResNet(50)
    before = backbone.conv1.weight.clone()
    report = load_backbone(backbone, sd)
    assert not report.ok and report.missing and report.mismatched
    assert torch.equal(backbone.conv1.weight, before)  # nothing loaded


@pytest.mark.parametrize("with_conv5", [True, False])
def test_torchvision_shufflenetv2(with_conv5: bool) -> None:
    from odkit.models.backbones.shufflenetv2 import ShuffleNetV2

    sd = _random_state(_listing(FIX / "torchvision_keys" / "shufflenet_v2_x1_0.json"), seed=3)
    backbone = ShuffleNetV2(1.0, with_conv5=with_conv5)
    report = load_backbone(backbone, sd)
    assert report.ok and len(report.mapped) == len(backbone.state_dict())
    assert all(k.startswith("conv5.") for k in report.unexpected) and bool(report.unexpected) != with_conv5
    assert torch.equal(backbone.state_dict()["stage4.3.branch2.5.weight"], sd["stage4.3.branch2.5.weight"])


def test_backbone_tables_extend_by_name() -> None:
    assert {"ResNet", "ShuffleNetV2"} <= set(tables.backbone_tables("torchvision"))
    assert "CSPDarknet" in tables.backbone_tables("yolox")
    assert set(tables.detector_tables("yolox")) == {f"yolox-{s}" for s in ("nano", "tiny", "s", "m", "l", "x")}
    with pytest.raises(ConfigError, match="no torchvision mapping"):
        load_backbone(zoo.build("yolox-nano", num_classes=3), {"conv1.weight": torch.zeros(1)}, "torchvision")


def test_yolox_backbone_only_into_cspdarknet(tiny_state) -> None:
    det = zoo.build("yolox-nano", num_classes=7)
    report = load_backbone(det, dict(tiny_state), "yolox")
    assert report.ok and not report.unexpected
    assert len(report.mapped) == len(det.backbone.state_dict())
    assert torch.equal(det.state_dict()["backbone.dark5.1.conv2.bn.running_var"],
                       tiny_state["backbone.backbone.dark5.1.conv2.bn.running_var"].float())


def test_backbone_only_import_needs_num_classes() -> None:
    # a zoo model whose backbone has a torchvision mapping but the detector has none
    name = "atss-r50-fpn"
    assert tables.detector_table("torchvision", name) is None
    with pytest.raises(ConfigError, match="num_classes"):
        import_weights({"conv1.weight": torch.zeros(1)}, "torchvision", name)


@pytest.mark.parametrize(("name", "fixture"), [("retinanet-r50-fpn", "resnet50"), ("gfl-lite", "shufflenet_v2_x1_0")])
def test_imagenet_backbone_into_dense_detectors(name: str, fixture: str) -> None:
    """torchvision ImageNet state dicts (key layout from the committed fixture) load into the
    backbone of the dense zoo models, every backbone key filled, the classifier dropped."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _tv_weights import layout, synthetic_state_dict

    sd = synthetic_state_dict(layout(Path(__file__).parent / "fixtures" / "torchvision_keys" / f"{fixture}.json"))
    det = zoo.build(name, num_classes=3)
    report = load_backbone(det, sd, "torchvision")
    assert report.ok and not report.missing and not report.mismatched
    assert "fc.weight" in report.dropped
    # the lite members' ShuffleNetV2 stops at stage 4 (no conv5): those keys are reported, not used
    assert all(k.startswith("conv5.") for k in report.unexpected)
    key = "conv1.weight" if fixture == "resnet50" else "conv1.0.weight"
    assert torch.equal(det.backbone.state_dict()[key], sd[key])


def test_predictor_bgr_input_order(ref) -> None:
    """The imported model's Predictor takes ordinary RGB pictures: swapping channels changes results."""
    pred_model = import_weights(TINY, "yolox", "yolox-nano").model.eval()
    img = ref["image_rgb"].numpy()
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
    xs = torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        _, s1 = pred_model.forward_export(x)
        _, s2 = pred_model.forward_export(xs)
    torch.testing.assert_close(s1[0], ref["scores"], rtol=0, atol=SCORE_TOL)
    assert float((s2[0] - ref["scores"]).abs().max()) > 100 * SCORE_TOL
