"""Darknet ``.weights`` import / export against an independent reading of darknet's format.

The reference below is written from darknet's ``src/parser.c`` (``load_weights_upto``,
``load_convolutional_weights``) and the layers' forward passes (``convolutional_layer.c`` with the
GPU BatchNorm ``sqrt(var + 1e-5)``, ``maxpool_layer.c`` with ``-FLT_MAX`` outside the input,
``route``, ``reorg_cpu(..., 0)``, ``upsample``, ``shortcut``): it runs a cfg on a weights file that
the test writes byte by byte from random numbers, and odkit must give the same raw outputs after
importing that file. Parameter counts are counted from the cfgs.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odkit.errors import ConfigError, DataError
from odkit.models import zoo
from odkit.weights.darknet import read_darknet
from odkit.weights.darknet_import import export_darknet, import_darknet


def _conv(filters: int, size: int = 3, stride: int = 1, bn: bool = True, act: str = "leaky") -> str:
    return (f"[convolutional]\n{'batch_normalize=1' if bn else ''}\nfilters={filters}\nsize={size}\nstride={stride}\n"
            f"pad=1\nactivation={act}\n")


def _pool(stride: int = 2) -> str:
    return f"[maxpool]\nsize=2\nstride={stride}\n"


V2_ANCHORS = "0.57273, 0.677385, 1.87446, 2.06253, 3.33843, 5.47434, 7.88282, 3.52778, 9.77052, 9.16828"


def yolov2_tiny_cfg(classes: int) -> str:
    body = "".join(_conv(c) + _pool() for c in (16, 32, 64, 128, 256)) + _conv(512) + _pool(1) + _conv(1024)
    return ("[net]\nwidth=416\nheight=416\nchannels=3\n" + body + _conv(512)
            + _conv(5 * (classes + 5), 1, bn=False, act="linear")
            + f"[region]\nanchors={V2_ANCHORS}\nclasses={classes}\nnum=5\n")


def yolov2_cfg(classes: int) -> str:
    stages = [[(32, 3)], [(64, 3)], [(128, 3), (64, 1), (128, 3)], [(256, 3), (128, 1), (256, 3)],
              [(512, 3), (256, 1), (512, 3), (256, 1), (512, 3)], [(1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]]
    body = ""
    for i, stage in enumerate(stages):
        if i:
            body += _pool()
        body += "".join(_conv(c, k) for c, k in stage)
    body += _conv(1024) + _conv(1024) + "[route]\nlayers=-9\n" + _conv(64, 1) + "[reorg]\nstride=2\n"
    body += "[route]\nlayers=-1,-4\n" + _conv(1024) + _conv(5 * (classes + 5), 1, bn=False, act="linear")
    return "[net]\nwidth=416\nheight=416\nchannels=3\n" + body + f"[region]\nanchors={V2_ANCHORS}\nclasses={classes}\nnum=5\n"


def yolov3_tiny_cfg(classes: int) -> str:
    anchors = "10,14, 23,27, 37,58, 81,82, 135,169, 344,319"
    yolo = f"[yolo]\nanchors={anchors}\nclasses={classes}\nnum=6\n"
    pred = _conv(3 * (classes + 5), 1, bn=False, act="linear")
    body = "".join(_conv(c) + _pool() for c in (16, 32, 64, 128, 256)) + _conv(512) + _pool(1) + _conv(1024)
    body += _conv(256, 1) + _conv(512) + pred + yolo
    body += "[route]\nlayers=-4\n" + _conv(128, 1) + "[upsample]\nstride=2\n" + "[route]\nlayers=-1,8\n"
    body += _conv(256) + pred + yolo
    return "[net]\nwidth=416\nheight=416\nchannels=3\n" + body


# ------------------------------------------------------------------------------- reference reader

def parse(text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("["):
            out.append({"type": line[1:-1]})
        else:
            k, v = line.split("=", 1)
            out[-1][k.strip()] = v.strip()
    return out


def conv_shapes(cfg: str) -> list[tuple[int, int, int, bool]]:
    """(filters, in channels, size, bn) of each conv, following channels through the cfg's layers."""
    chans, out, c = [], [], 3
    for s in parse(cfg)[1:]:
        t = s["type"]
        if t == "convolutional":
            n, k = int(s["filters"]), int(s["size"])
            out.append((n, c, k, "batch_normalize" in s))
            c = n
        elif t == "route":
            idx = [int(v) for v in s["layers"].split(",")]
            c = sum(chans[i if i >= 0 else len(chans) + i] for i in idx)
        elif t == "reorg":
            c = c * int(s["stride"]) ** 2
        chans.append(c)
    return out


def count_params(cfg: str) -> int:
    """Trainable parameters of a cfg: kernels, plus BatchNorm scale and bias, or the conv bias."""
    return sum(n * c * k * k + (2 * n if bn else n) for n, c, k, bn in conv_shapes(cfg))


def write_random_weights(path: Path, cfg: str, seed: int = 0, seen: int = 12345, convs: int | None = None) -> None:
    """A darknet weights file (header 0.2.0 + uint64 seen) for the first ``convs`` convs of ``cfg``."""
    rng = np.random.default_rng(seed)
    parts = []
    for n, c, k, bn in conv_shapes(cfg)[:convs]:
        if bn:
            parts += [rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                      np.abs(rng.normal(0, 1.0, n)) + np.where(rng.random(n) < 0.2, 0.0, 0.5)]
        else:
            parts.append(rng.normal(0, 0.1, n))
        parts.append(rng.normal(0, np.sqrt(2.0 / (c * k * k)), n * c * k * k))
    path.write_bytes(struct.pack("<3iQ", 0, 2, 0, seen) + np.concatenate(parts).astype("<f4").tobytes())


def reorg_ref(x: np.ndarray, stride: int) -> np.ndarray:
    """darknet's reorg_cpu(x, w, h, c, batch, stride, forward=0, out), indices as in the C loop."""
    b_, c, h, w = x.shape
    out_c = c // (stride * stride)
    b, k, j, i = np.meshgrid(np.arange(b_), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    in_index = i + w * (j + h * (k + c * b))
    c2, offset = k % out_c, k // out_c
    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
    flat, out = x.reshape(-1), np.zeros(x.size, dtype=x.dtype)
    out[in_index.reshape(-1)] = flat[out_index.reshape(-1)]
    return out.reshape(b_, c * stride * stride, h // stride, w // stride)


def run_ref(cfg: str, weights: Path, x: torch.Tensor, pool_pad: float = -np.inf) -> list[torch.Tensor]:
    data = weights.read_bytes()
    major, minor, _ = struct.unpack_from("<3i", data)
    start = 20 if major * 10 + minor >= 2 else 16
    vals = np.frombuffer(data, dtype="<f4", offset=start)
    pos = 0

    def take(n: int) -> torch.Tensor:
        nonlocal pos
        pos += n
        return torch.from_numpy(vals[pos - n : pos].astype(np.float64))

    outs, heads = [], []
    for s in parse(cfg)[1:]:
        t = s["type"]
        if t == "convolutional":
            n, k, st = int(s["filters"]), int(s["size"]), int(s["stride"])
            c = x.shape[1]
            bias = take(n)
            if "batch_normalize" in s:
                scale, mean, var = take(n), take(n), take(n)
            w = take(n * c * k * k).view(n, c, k, k)
            x = F.conv2d(x, w, None, st, k // 2)
            if "batch_normalize" in s:
                x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * scale[:, None, None]
            x = x + bias[:, None, None]
            if s["activation"] == "leaky":
                x = torch.where(x > 0, x, 0.1 * x)
        elif t == "maxpool":
            size, st = int(s["size"]), int(s["stride"])
            pad = size - 1
            oh, ow = (x.shape[2] + pad - size) // st + 1, (x.shape[3] + pad - size) // st + 1
            x = F.max_pool2d(F.pad(x, (0, pad, 0, pad), value=pool_pad), size, st)[:, :, :oh, :ow]
        elif t == "route":
            x = torch.cat([outs[int(i) if int(i) >= 0 else len(outs) + int(i)] for i in s["layers"].split(",")], 1)
        elif t == "reorg":
            x = torch.from_numpy(reorg_ref(x.numpy(), int(s["stride"])))
        elif t == "upsample":
            x = x.repeat_interleave(int(s["stride"]), 2).repeat_interleave(int(s["stride"]), 3)
        elif t in ("yolo", "region"):
            heads.append(x)
        outs.append(x)
    assert pos == len(vals), "the reference reader must consume the whole file"
    return heads


def odkit_raw(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [o[0] for o in model.head(model.neck(model.backbone(x)))]


CASES = [("yolov2-tiny", yolov2_tiny_cfg, {}, -np.inf),
         pytest.param("yolov2", yolov2_cfg, {}, -np.inf, marks=pytest.mark.slow),
         ("yolov3-tiny", yolov3_tiny_cfg, {}, 0.0),
         pytest.param("yolov3-tiny", yolov3_tiny_cfg, {"backbone_args": {"pool_pad": "edge"}}, -np.inf,
                      marks=pytest.mark.slow)]


@pytest.mark.parametrize(("name", "make_cfg", "kw", "pad"), CASES, ids=["v2-tiny", "v2", "v3-tiny", "v3-tiny-edge"])
def test_import_matches_reference_reader(tmp_path: Path, name, make_cfg, kw, pad) -> None:
    cfg = make_cfg(3)
    (tmp_path / "m.cfg").write_text(cfg)
    write_random_weights(tmp_path / "m.weights", cfg, seen=777)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = run_ref(cfg, tmp_path / "m.weights", x, pad)  # float64: what is left is odkit's float32 storage
    if kw:  # a build override: import through the default, then load into the edge-padded model
        report = import_darknet(tmp_path / "m.weights", name, cfg=tmp_path / "m.cfg")
        model = zoo.build(name, num_classes=3, **kw)
        model.load_state_dict(report.model.state_dict())
    else:
        report = import_darknet(tmp_path / "m.weights", name, cfg=tmp_path / "m.cfg")
        model = report.model
        assert report.num_classes == 3 and report.ok and report.scope == "detector"
    got = odkit_raw(model.double().eval(), x)[::-1]  # darknet: coarsest output first
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    if name.startswith("yolov2"):
        assert int(model.head.seen) == 777


def test_param_counts_equal_darknet_cfgs() -> None:
    # counted from the cfgs (80 classes), and the figures these counts give
    assert count_params(yolov2_cfg(80)) == 50_962_889
    assert count_params(yolov2_tiny_cfg(80)) == 11_232_057
    for name, make in (("yolov2", yolov2_cfg), ("yolov2-tiny", yolov2_tiny_cfg), ("yolov3-tiny", yolov3_tiny_cfg)):
        model = zoo.build(name, num_classes=80)
        assert sum(p.numel() for p in model.parameters()) == count_params(make(80)), name


def test_export_round_trip_and_header(tmp_path: Path) -> None:
    cfg = yolov2_tiny_cfg(3)
    src = tmp_path / "a.weights"
    write_random_weights(src, cfg, seen=10**10)
    model = import_darknet(src, "yolov2-tiny").model
    out = export_darknet(model, tmp_path / "b.weights")
    a, b = read_darknet(src), read_darknet(out)
    assert (b.major, b.minor, b.revision, b.seen) == (0, 2, 0, 10**10)
    assert out.stat().st_size == src.stat().st_size
    np.testing.assert_allclose(b.values, a.values, rtol=2e-6, atol=1e-9)
    # the header of an old file (version 0.1): int32 images seen
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<4i", 0, 1, 0, 99) + src.read_bytes()[20:])
    assert read_darknet(old).seen == 99 and len(read_darknet(old).values) == len(a.values)


@pytest.mark.parametrize(("name", "make_cfg", "n_backbone", "kept"), [
    ("yolov2-tiny", yolov2_tiny_cfg, 7, ["head.pred.weight", "head.pred.bias"]),
    pytest.param("yolov2", yolov2_cfg, 18, ["head.pred.weight", "head.pred.bias"], marks=pytest.mark.slow),
], ids=["v2-tiny", "darknet19_448.conv.23"])
def test_backbone_prefix_and_class_change(tmp_path: Path, name, make_cfg, n_backbone, kept) -> None:
    cfg = make_cfg(80)
    part = tmp_path / f"{name}.conv.{n_backbone}"
    write_random_weights(part, cfg, convs=n_backbone)
    report = import_darknet(part, name, num_classes=3)
    assert report.scope == "backbone" and len(report.mapped) == n_backbone
    x = torch.rand(1, 3, 64, 64)
    full = tmp_path / "full.weights"
    write_random_weights(full, cfg, seed=0)  # same seed: the same leading convolutions
    whole = import_darknet(full, name, num_classes=3)  # 80-class file into 3 classes
    assert whole.kept == kept
    with torch.no_grad():
        a = report.model.eval().backbone(x)
        b = whole.model.eval().backbone(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="num_classes"):
        import_darknet(part, name)


def test_bad_files(tmp_path: Path) -> None:
    cfg = yolov2_tiny_cfg(3)
    src = tmp_path / "m.weights"
    write_random_weights(src, cfg)
    (tmp_path / "cut.weights").write_bytes(src.read_bytes()[:-8])
    with pytest.raises(DataError, match="fit neither"):
        import_darknet(tmp_path / "cut.weights", "yolov2-tiny")
    (tmp_path / "odd.weights").write_bytes(src.read_bytes()[:-1])
    with pytest.raises(DataError, match="float32"):
        import_darknet(tmp_path / "odd.weights", "yolov2-tiny")
    (tmp_path / "short.weights").write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="too short"):
        read_darknet(tmp_path / "short.weights")
    (tmp_path / "v3.cfg").write_text(yolov3_tiny_cfg(3))
    with pytest.raises(DataError, match=r"\[yolo\]"):
        import_darknet(src, "yolov2-tiny", cfg=tmp_path / "v3.cfg")
    (tmp_path / "wrong.cfg").write_text(yolov2_tiny_cfg(3).replace("filters=512", "filters=256", 1))
    with pytest.raises(DataError, match="convolutional layer 5"):
        import_darknet(src, "yolov2-tiny", cfg=tmp_path / "wrong.cfg")
    with pytest.raises(ConfigError, match="no darknet layout"):
        import_darknet(src, "yolox-nano")


@pytest.mark.parametrize(("name", "make_cfg"), [("yolov2-tiny", yolov2_tiny_cfg), ("yolov2", yolov2_cfg),
                                                ("yolov3-tiny", yolov3_tiny_cfg)])
def test_written_cfg_is_darknets(name, make_cfg) -> None:
    from odkit.weights.darknet_cfg import darknet_cfg

    model = zoo.build(name, num_classes=3)
    keys = ("type", "filters", "size", "stride", "batch_normalize", "layers", "classes")
    mine = [{k: v.replace(" ", "") for k, v in s.items() if k in keys} for s in parse(darknet_cfg(model))[1:]]
    ref = [{k: v.replace(" ", "") for k, v in s.items() if k in keys} for s in parse(make_cfg(3))[1:]]
    assert mine == ref
    assert count_params(darknet_cfg(model)) == sum(p.numel() for p in model.parameters())


def test_cli_import_export_round_trip(tmp_path: Path, capsys) -> None:
    from odkit.cli.main import main

    src = tmp_path / "a.weights"
    write_random_weights(src, yolov2_tiny_cfg(3), seen=4242)
    (tmp_path / "a.cfg").write_text(yolov2_tiny_cfg(3))
    assert main(["weights", "import", str(src), "--from", "darknet", "--model", "yolov2-tiny", "--cfg",
                 str(tmp_path / "a.cfg"), "--out", str(tmp_path / "a.safetensors")]) == 0
    assert "mapped 9, missing 0" in capsys.readouterr().out
    assert main(["export", "--weights", str(tmp_path / "a.safetensors"), "--format", "darknet", "--out",
                 str(tmp_path / "b.weights")]) == 0
    back = import_darknet(tmp_path / "b.weights", "yolov2-tiny", cfg=tmp_path / "b.cfg")
    first = import_darknet(src, "yolov2-tiny")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(odkit_raw(back.model.eval(), x)[0], odkit_raw(first.model.eval(), x)[0])
    assert read_darknet(tmp_path / "b.weights").seen == 4242


def test_training_sources(tmp_path: Path) -> None:
    from odkit.engine import finetune

    cfg = yolov2_tiny_cfg(80)
    full, part = tmp_path / "full.weights", tmp_path / "yolov2-tiny.conv.13"
    write_random_weights(full, cfg)
    write_random_weights(part, cfg, convs=7)
    src = finetune.read_source(full, "darknet", "yolov2-tiny")  # --weights full.weights --from darknet
    assert src.num_classes == 80 and src.source == "darknet"
    want = import_darknet(full, "yolov2-tiny").model.state_dict()
    for path in (part, full):  # --pretrained-backbone FILE --from darknet: its leading convolutions
        model = zoo.build("yolov2-tiny", num_classes=3)
        report = finetune.load_pretrained_backbone(model, path, "darknet")
        assert len(report.kept) == 7 * 5 and all(k.startswith("backbone.") for k in report.kept)
        got = model.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in report.kept)
