"""Prediction backends: ``odkit.load(backend=...)`` runs the exported graph (cached, keyed by content)
with the eager model's results within the export tolerances; ``auto`` falls back to PyTorch with a
reason; ``predict`` streams folders and videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import odkit
from odkit.cli.main import main
from odkit.errors import ConfigError
from odkit.export import backends
from odkit.export.onnx import sidecar_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from tests.test_export_matrix import _images, _reproduced, _size, _weights  # noqa: E402

TINY = ["yolox-nano", "retinanet-lite", "ssdlite320-mobilenetv3",
        pytest.param("fasterrcnn-mobilenetv3-fpn", marks=pytest.mark.slow)]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


@pytest.mark.parametrize("name", TINY)
def test_graph_backend_equals_eager(name: str, tmp_path: Path) -> None:
    w = _weights(name, tmp_path)
    eager = odkit.load(w, backend="torch")
    graph = odkit.load(w, backend="onnxruntime", threads=1)
    assert isinstance(graph, backends.GraphPredictor) and graph.backend == "onnxruntime"
    size = _size(eager.model)
    images = _images(size)
    probe = eager.predict(images, conf=0.0, max_det=1000, img_size=size)
    conf = min(float(p["scores"][min(40, len(p["scores"]) - 1)]) for p in probe) - 1e-6
    ref = eager.predict(images, conf=conf, max_det=100, img_size=size)
    got = graph.predict(images, conf=max(conf - 1e-3, 0.0), max_det=200, img_size=size, batch=2)
    assert sum(len(r["scores"]) for r in ref) >= 5
    for r, g in zip(ref, got):
        assert _reproduced(r, g, 0.05, 1e-3) >= (0.9 if name.startswith("faster") else 0.95)


def test_graph_cache_is_keyed_by_content(tmp_path: Path) -> None:
    w = _weights("yolox-nano", tmp_path)
    g = odkit.load(w, backend="onnxruntime")
    graphs = list((tmp_path / backends.CACHE_DIR).glob("*.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    odkit.load(w, backend="onnxruntime")  # same weights: the cached graph, not a new export
    assert graphs[0].stat().st_mtime_ns == stamp
    # a graph whose recorded key does not match is never used: it is rebuilt
    side = sidecar_path(graphs[0])
    info = json.loads(side.read_text())
    side.write_text(json.dumps({**info, "graph_key": "0" * 64}))
    odkit.load(w, backend="onnxruntime")
    assert json.loads(side.read_text())["graph_key"] == info["graph_key"]
    # other weights under the same name: another key, another graph
    with torch.no_grad():
        g.model.head.cls_preds[0].bias.add_(1.0)
    assert backends.graph_key(g.model, 416, "onnxruntime") != info["graph_key"]


def test_auto_falls_back_and_explicit_runtime_is_checked(tmp_path: Path, monkeypatch, caplog) -> None:
    w = _weights("yolox-nano", tmp_path)
    assert backends.choose("auto")[0] == "onnxruntime"
    assert backends.choose("auto", "cuda")[0] == "torch"
    monkeypatch.setattr(backends, "installed", lambda runtime: False)
    with caplog.at_level("INFO", logger="odkit"):
        pred = odkit.load(w, backend="auto")
    assert pred.backend == "torch" and "export extra" in caplog.text
    with pytest.raises(ConfigError, match="not installed"):
        odkit.load(w, backend="onnxruntime")
    monkeypatch.setenv("ODKIT_BACKEND", "tensorrt")
    with pytest.raises(ConfigError, match="ODKIT_BACKEND"):
        backends.default_backend()


def test_predict_folder_streams_results(tmp_path: Path, capsys) -> None:
    import cv2

    w = _weights("yolox-nano", tmp_path)
    src = tmp_path / "imgs"
    src.mkdir()
    for i, img in enumerate(_images(160) * 3):
        cv2.imwrite(str(src / f"{i:02d}.jpg"), img[:, :, ::-1])
    (src / "broken.jpg").write_bytes(b"not an image")
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        rc = main(["predict", "--weights", str(w), "--source", str(src), "--out", str(out), "--backend", backend,
                   "--batch", "4", "--workers", "2", "--conf", "0.3", "--img", "160"])
        assert rc == 1  # the broken image: listed, the others predicted
        assert "broken.jpg" in (out / "failures.txt").read_text()
        outs[backend] = json.loads((out / "predictions.json").read_text())
        assert len(list((out / "labels").glob("*.txt"))) == 6
    assert outs["torch"] and abs(len(outs["torch"]) - len(outs["onnxruntime"])) <= max(1, len(outs["torch"]) // 20)


def _clip(path: Path, frames: int, fourcc: str = "mp4v") -> None:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (160, 128))
    for i in range(frames):
        f = np.full((128, 160, 3), 90, np.uint8)
        cv2.rectangle(f, (5 + 3 * i, 20), (60 + 3 * i, 90), (0, 200, 255), -1)
        w.write(f)
    w.release()


def test_predict_video(tmp_path: Path, capsys) -> None:
    import cv2

    w = _weights("yolox-nano", tmp_path)
    _clip(tmp_path / "clip.mp4", 25)
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(w), "--source", str(tmp_path / "clip.mp4"), "--out", str(out),
               "--save", "--vid-stride", "2", "--conf", "0.3"])
    assert rc == 0
    records = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(0, 25, 2))
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 13 and (cap.get(3), cap.get(4)) == (160, 128)
    assert abs(cap.get(cv2.CAP_PROP_FPS) - 5.0) < 1e-6  # 10 fps / stride 2: the clip keeps its duration
    cap.release()
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 1000)
    rc = main(["predict", "--weights", str(w), "--source", str(tmp_path / "bad.mp4"), "--out", str(out)])
    assert rc == 2 and "cannot read it as a video" in capsys.readouterr().err


def test_video_that_stops_early_is_an_error(tmp_path: Path, capsys) -> None:
    w = _weights("yolox-nano", tmp_path)
    clip = tmp_path / "cut.avi"
    _clip(clip, 40, "MJPG")
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # the header still declares 40 frames
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(w), "--source", str(clip), "--out", str(out), "--save"])
    msg = capsys.readouterr().out
    assert rc == 1 and "stopped after frame" in msg
    lines = (out / "cut.jsonl").read_text().splitlines()
    assert 0 < len(lines) < 40 and all(json.loads(x)["frame"] == i for i, x in enumerate(lines))
