"""Export of a (briefly) trained yolox-nano to ONNX / OpenVINO: prediction parity with PyTorch, the
in-graph NMS graph at batch 1 and 3, the sidecar, ``odkit export`` / ``odkit predict`` on exported files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from odkit.cli.main import main  # noqa: E402
from odkit.data.synth import CLASS_NAMES, render_image  # noqa: E402
from odkit.data.transforms import letterbox  # noqa: E402
from odkit.engine.api import load  # noqa: E402
from odkit.export import export  # noqa: E402
from odkit.export.runtime import load_predictor  # noqa: E402
from odkit.models import zoo  # noqa: E402
from odkit.weights.format import save_weights  # noqa: E402

SIZE = 128
CONF, IOU, MAX_DET = 0.001, 0.65, 100


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """``odkit predict`` sets torch's thread count for the process; restore it after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _train_tiny(n_iter: int = 80):
    """yolox-nano overfit for ``n_iter`` AdamW steps on 4 synthetic images at 128 px (a few seconds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        imgs, targets = [], []
        for i in range(4):
            s = render_image(0, i, size=SIZE)
            out, b, _ = letterbox(s.image, s.boxes, None, SIZE)
            imgs.append(torch.from_numpy(out).permute(2, 0, 1).float() / 255)
            targets.append({"boxes": torch.from_numpy(b), "labels": torch.from_numpy(s.labels)})
        x = torch.stack(imgs)
        model = zoo.build("yolox-nano", num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES, img_size=SIZE)
        opt = torch.optim.AdamW(model.parameters(), lr=1.5e-2)
        model.train()
        for _ in range(n_iter):
            loss = model(x, targets)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


def _meta(model, epoch):
    meta = {
        "model": "yolox-nano",
        "num_classes": len(CLASS_NAMES),
        "class_names": list(CLASS_NAMES),
        "img_size": SIZE,
        "model_config": model.config,
    }
    if epoch is not None:
        meta["epoch"] = epoch
    return meta


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = _train_tiny()
    w = save_weights(root / "weights" / "best.safetensors", model.state_dict(), _meta(model, 1))
    # test images: synthetic shapes of other sizes than the network input (letterbox is exercised)
    images = [render_image(1, i, size=150).image for i in range(3)]
    # the plain ONNX export goes through the CLI (exit 0 path)
    assert main(["export", "--weights", str(w), "--dynamic", "--out", str(root / "plain.onnx")]) == 0
    files = {
        "onnx": root / "plain.onnx",
        "onnx_nms": export(
            w,
            "onnx",
            dynamic=True,
            nms=True,
            out=root / "nms.onnx",
            conf=CONF,
            iou=IOU,
            max_det=MAX_DET,
        ),
        "xml_nms": export(
            w,
            "openvino",
            dynamic=True,
            nms=True,
            out=root / "nms.xml",
            conf=CONF,
            iou=IOU,
            max_det=MAX_DET,
        ),
    }
    return {"root": root, "weights": w, "model": model, "images": images, "files": files}


def _match(ref, got, what):
    """Same detections: equal counts and labels, boxes within 1e-2 px, scores within 1e-4 (greedy
    pairing, so near-equal scores may swap places)."""
    assert len(got["scores"]) == len(ref["scores"]), what
    used = np.zeros(len(got["scores"]), dtype=bool)
    rb, rs, rl = ref["boxes"].numpy(), ref["scores"].numpy(), ref["labels"].numpy()
    gb, gs, gl = got["boxes"].numpy(), got["scores"].numpy(), got["labels"].numpy()
    for i in range(len(rs)):
        ok = (~used) & (gl == rl[i]) & (np.abs(gb - rb[i]).max(1) <= 1e-2) & (np.abs(gs - rs[i]) <= 1e-4)
        j = np.flatnonzero(ok)
        assert j.size, f"{what}: detection {i} ({rl[i]}, {rs[i]:.5f}, {rb[i]}) not reproduced"
        used[j[0]] = True


def test_parity_pytorch_onnxruntime_openvino(trained):
    torch_pred = load(trained["weights"]).predict(trained["images"], conf=CONF, iou=IOU, max_det=MAX_DET)
    assert sum(len(p["scores"]) for p in torch_pred) >= 10  # the trained model does detect things
    assert max(float(p["scores"].max()) for p in torch_pred) > 0.01
    for key in ("onnx", "onnx_nms", "xml_nms"):
        pred = load_predictor(trained["files"][key])
        got = pred.predict(trained["images"], conf=CONF, iou=IOU, max_det=MAX_DET, batch=2)
        assert len(got) == len(torch_pred)
        for i, (r, g) in enumerate(zip(torch_pred, got)):
            assert g["boxes"].dtype == torch.float32 and g["labels"].dtype == torch.int64
            _match(r, g, f"{key} image {i}")


@pytest.mark.parametrize("key", ["onnx_nms", "xml_nms"])
def test_nms_graph_batch_1_and_3_equal(trained, key):
    from odkit.ops import multiclass_nms

    pred = load_predictor(trained["files"][key])
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    for i, img in enumerate(trained["images"][:2]):  # real content, letterboxed; image 2 stays noise
        out, _, _ = letterbox(img, np.zeros((0, 4), np.float32), None, SIZE)
        x[i] = torch.from_numpy(out).permute(2, 0, 1).float() / 255
    dets, num = pred.run(x)
    assert dets.shape == (3, MAX_DET, 6) and num.shape == (3,)
    assert num[:2].min() > 0
    plain = load_predictor(trained["files"]["onnx"])
    for b in range(3):
        d1, n1 = pred.run(x[b : b + 1])
        assert n1[0] == num[b]
        np.testing.assert_array_equal(d1[0], dets[b])
        # and it is multiclass_nms of the decoded outputs (up to the runtimes' float rounding)
        boxes, scores = plain.run(x[b : b + 1])
        rb, rs, rl = multiclass_nms(
            torch.from_numpy(boxes[0]), torch.from_numpy(scores[0]), CONF, IOU, 1000, MAX_DET
        )
        assert len(rs) == num[b]
        np.testing.assert_allclose(dets[b, : len(rs), :4], rb.numpy(), atol=1e-3)
        np.testing.assert_allclose(dets[b, : len(rs), 4], rs.numpy(), atol=1e-5)
        np.testing.assert_array_equal(dets[b, : len(rs), 5], rl.numpy())


def test_sidecar_and_in_graph_threshold_rules(trained, caplog):
    info = json.loads((trained["root"] / "nms.onnx.json").read_text())
    cfg = info["model_config"]
    assert info["format"] == "onnx" and info["nms"] is True and cfg["name"] == "yolox-nano"
    assert cfg["class_names"] == list(CLASS_NAMES) and cfg["img_size"] == SIZE
    assert not {"model", "num_classes", "class_names", "img_size"} & set(info)  # each fact once
    assert (info["conf"], info["iou"], info["max_det"]) == (CONF, IOU, MAX_DET)
    assert json.loads((trained["root"] / "nms.xml.json").read_text())["format"] == "openvino"
    assert (trained["root"] / "nms.bin").is_file()
    pred = load_predictor(trained["files"]["onnx_nms"])
    full = pred.predict(trained["images"][:1], conf=CONF, iou=IOU, max_det=MAX_DET)[0]
    # a stricter conf and a smaller max_det are exact filters of the in-graph result
    strict = pred.predict(trained["images"][:1], conf=0.01, iou=IOU, max_det=5)[0]
    keep = (full["scores"] > 0.01).nonzero().squeeze(1)[:5]
    assert torch.equal(strict["scores"], full["scores"][keep])
    with caplog.at_level("WARNING"):
        pred.predict(trained["images"][:1], conf=CONF, iou=0.3, max_det=MAX_DET)
    assert "fixed thresholds" in caplog.text


def test_cli_predict_exported_equals_pytorch(trained, tmp_path):
    info = json.loads((trained["root"] / "plain.onnx.json").read_text())
    assert info["dynamic_batch"] is True and info["nms"] is False
    assert info["source_weights"].endswith("best.safetensors") and info["epoch"] == 1
    src = tmp_path / "imgs"
    src.mkdir()
    from odkit.data.imageio import write_image

    write_image(src / "a.png", trained["images"][0])
    for weights in (trained["files"]["onnx"], trained["weights"]):
        res = tmp_path / ("res_" + weights.suffix[1:])
        assert (
            main(
                [
                    "predict",
                    "--weights",
                    str(weights),
                    "--source",
                    str(src),
                    "--out",
                    str(res),
                    "--conf",
                    "0.01",
                    "--iou",
                    str(IOU),
                    "--max-det",
                    str(MAX_DET),
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
    ref = json.loads((tmp_path / "res_safetensors" / "predictions.json").read_text())
    assert len(ref) > 0
    got = json.loads((tmp_path / "res_onnx" / "predictions.json").read_text())
    assert [d["category_id"] for d in got] == [d["category_id"] for d in ref]
    assert np.allclose([d["bbox"] for d in got], [d["bbox"] for d in ref], atol=0.011)


@pytest.mark.slow
def test_half_export_runs(trained, tmp_path):
    p = export(trained["weights"], "onnx", half=True, out=tmp_path / "h.onnx")
    pred = load_predictor(p)
    assert json.loads((tmp_path / "h.onnx.json").read_text())["half"] is True
    ref = load(trained["weights"]).predict(trained["images"][:1], conf=0.02, iou=IOU)[0]
    got = pred.predict(trained["images"][:1], conf=0.02, iou=IOU)[0]
    assert abs(len(got["scores"]) - len(ref["scores"])) <= max(2, len(ref["scores"]) // 5)


# ------------------------------------------------------------------------------------------- refusals
@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrained")
    model = zoo.build("yolox-nano", num_classes=2, img_size=SIZE)
    meta = {"model": "yolox-nano", "num_classes": 2, "img_size": SIZE}
    return save_weights(root / "init.safetensors", model.state_dict(), meta)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--weights", "UNTRAINED"], "untrained"),
        (["--weights", "yolox-nano"], "untrained model name"),
        (["--weights", "yolox-huge"], "not a known model name"),
        (["--weights", "TRAINED", "--img", "-32"], "argument --img: must be a positive integer"),
        (["--weights", "TRAINED", "--format", "onnx", "--out", "x.txt"], "must end in .onnx"),
        (["--weights", "TRAINED", "--nms", "--conf", "2"], "--conf"),
    ],
)
def test_cli_refusals_exit_2(args, message, untrained_weights, trained, capsys, tmp_path):
    args = [
        str(untrained_weights) if a == "UNTRAINED" else str(trained["weights"]) if a == "TRAINED" else a
        for a in args
    ]
    args = [str(tmp_path / a) if a == "x.txt" else a for a in args]
    assert main(["export", *args]) == 2
    assert message in capsys.readouterr().err


def test_unknown_model_in_sidecar_exit_2(tmp_path, capsys):
    model = zoo.build("yolox-nano", num_classes=2, img_size=SIZE)
    w = save_weights(
        tmp_path / "w.safetensors", model.state_dict(), {"model": "yolox-giant", "num_classes": 2, "epoch": 3}
    )
    assert main(["export", "--weights", str(w)]) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["onnxruntime", "openvino"])
def test_missing_runtime_names_the_extra(module, trained, monkeypatch):
    from odkit.errors import OdkitError

    monkeypatch.setitem(__import__("sys").modules, module, None)  # makes `import module` fail
    path = trained["files"]["onnx" if module == "onnxruntime" else "xml_nms"]
    with pytest.raises(OdkitError, match=r"odkit\[export\]"):
        load_predictor(path)


def test_missing_exporter_cli_exit_2(trained, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)
    assert (
        main(
            [
                "export",
                "--weights",
                str(trained["weights"]),
                "--format",
                "openvino",
                "--out",
                str(tmp_path / "m.xml"),
            ]
        )
        == 2
    )
    assert "pip install 'odkit[export]'" in capsys.readouterr().err
