"""Darknet cfg text of odkit's yolov2, yolov2-tiny, yolov3 and yolov3-tiny (the reverse of ``--cfg``).

The layers are darknet's ``yolov2.cfg``, ``yolov2-tiny.cfg``, ``yolov3.cfg`` and ``yolov3-tiny.cfg``
with the model's classes, anchors (pixels for ``[yolo]``, grid cells for ``[region]``) and input
size; the ``[net]`` section carries darknet's training settings of those files. Together with
:func:`odkit.weights.darknet_import.export_darknet` this is what ``odkit export --format darknet``
writes; darknet (and readers of its format) run the pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from odkit.errors import ConfigError

NET = """[net]
batch=64
subdivisions=16
width={img}
height={img}
channels=3
momentum=0.9
decay=0.0005
angle=0
saturation=1.5
exposure=1.5
hue=.1
learning_rate=0.001
burn_in=1000
max_batches=500200
policy=steps
steps=400000,450000
scales=.1,.1
"""


def _num(v: float) -> str:
    return f"{v:g}"


class _Cfg:
    """Sections in order, with the index of each layer (what ``[route]`` refers to)."""

    def __init__(self, img: int) -> None:
        self.parts = [NET.format(img=img)]
        self.n = 0

    def add(self, kind: str, **kv: Any) -> int:
        lines = [f"[{kind}]"] + [f"{k}={v}" for k, v in kv.items()]
        self.parts.append("\n".join(lines) + "\n")
        self.n += 1
        return self.n - 1

    def conv(self, filters: int, size: int, stride: int = 1, bn: bool = True) -> int:
        kv: dict[str, Any] = {"batch_normalize": 1} if bn else {}
        return self.add("convolutional", **kv, filters=filters, size=size, stride=stride, pad=1,
                        activation="leaky" if bn else "linear")

    def text(self) -> str:
        return "\n".join(self.parts)


def _anchor_text(anchors: Sequence[Sequence[float]]) -> str:
    return ", ".join(f"{_num(w)},{_num(h)}" for w, h in anchors)


def _yolo(cfg: _Cfg, mask: Sequence[int], anchors: Sequence[Sequence[float]], classes: int) -> None:
    cfg.add("yolo", mask=",".join(map(str, mask)), anchors=_anchor_text(anchors), classes=classes,
            num=len(anchors), jitter=".3", ignore_thresh=".7", truth_thresh=1, random=1)


def _region(cfg: _Cfg, head: nn.Module, classes: int) -> None:
    cfg.add("region", anchors=_anchor_text(head.anchors), bias_match=1, classes=classes, coords=4,
            num=len(head.anchors), softmax=1, jitter=".3", rescore=int(head.rescore),
            object_scale=_num(head.object_scale), noobject_scale=_num(head.noobject_scale),
            class_scale=_num(head.class_scale), coord_scale=_num(head.coord_scale), absolute=1,
            thresh=_num(float(head.assigner.ignore_thr)), random=1)


def _tiny_trunk(cfg: _Cfg) -> int:
    """Layers 0-12 of the tiny cfgs; returns the index of the 256-channel conv (layer 8)."""
    c8 = 0
    for c in (16, 32, 64, 128, 256):
        i = cfg.conv(c, 3)
        c8 = i if c == 256 else c8
        cfg.add("maxpool", size=2, stride=2)
    cfg.conv(512, 3)
    cfg.add("maxpool", size=2, stride=1)
    cfg.conv(1024, 3)
    return c8


def _darknet53(cfg: _Cfg) -> list[int]:
    """Layers 0-74 of yolov3.cfg; returns the last layer of each stage."""
    cfg.conv(32, 3)
    ends = []
    for i, n in enumerate((1, 2, 8, 8, 4)):
        c = 64 * 2**i
        cfg.conv(c, 3, 2)
        for _ in range(n):
            cfg.conv(c // 2, 1)
            cfg.conv(c, 3)
            last = cfg.add("shortcut", **{"from": -3}, activation="linear")
        ends.append(last)
    return ends


def darknet_cfg(model: nn.Module) -> str:
    """The darknet cfg of zoo model ``model`` (yolov2, yolov2-tiny, yolov3, yolov3-tiny)."""
    conf = getattr(model, "config", {})
    name, img = str(conf.get("name", "")), int(conf.get("img_size") or 416)
    head = model.head
    c = int(head.num_classes)
    cfg = _Cfg(img)
    if name == "yolov2-tiny":
        _tiny_trunk(cfg)
        cfg.conv(512, 3)
        cfg.conv(len(head.anchors) * (5 + c), 1, bn=False)
        _region(cfg, head, c)
    elif name == "yolov2":
        cfg.conv(32, 3)
        c16 = 0  # layer 16: the stride-16 map of the passthrough
        for convs in ((64,), (128, 64, 128), (256, 128, 256), (512, 256, 512, 256, 512),
                      (1024, 512, 1024, 512, 1024)):
            cfg.add("maxpool", size=2, stride=2)
            for j, ch in enumerate(convs):
                last = cfg.conv(ch, 3 if j % 2 == 0 else 1)
            if convs[0] == 512:
                c16 = last
        cfg.conv(1024, 3)
        cfg.conv(1024, 3)
        cfg.add("route", layers=c16 - cfg.n)
        cfg.conv(64, 1)
        cfg.add("reorg", stride=2)
        cfg.add("route", layers="-1,-4")
        cfg.conv(1024, 3)
        cfg.conv(len(head.anchors) * (5 + c), 1, bn=False)
        _region(cfg, head, c)
    elif name in ("yolov3", "yolov3-tiny"):
        anchors = head.anchors
        k = len(anchors) // len(head.strides)
        if name == "yolov3-tiny":
            c8 = _tiny_trunk(cfg)
            cfg.conv(256, 1)
            cfg.conv(512, 3)
            cfg.conv(k * (5 + c), 1, bn=False)
            _yolo(cfg, range(k, 2 * k), anchors, c)
            cfg.add("route", layers=-4)
            cfg.conv(128, 1)
            cfg.add("upsample", stride=2)
            cfg.add("route", layers=f"-1,{c8}")
            cfg.conv(256, 3)
            cfg.conv(k * (5 + c), 1, bn=False)
            _yolo(cfg, range(k), anchors, c)
        else:
            ends = _darknet53(cfg)
            for level, (ch, src) in enumerate(((512, None), (256, ends[3]), (128, ends[2]))):
                if src is not None:
                    cfg.add("route", layers=-4)
                    cfg.conv(ch, 1)
                    cfg.add("upsample", stride=2)
                    cfg.add("route", layers=f"-1,{src}")
                for j in range(5):
                    cfg.conv(ch if j % 2 == 0 else 2 * ch, 1 if j % 2 == 0 else 3)
                cfg.conv(2 * ch, 3)
                cfg.conv(k * (5 + c), 1, bn=False)
                lvl = 2 - level
                _yolo(cfg, range(lvl * k, (lvl + 1) * k), anchors, c)
    else:
        raise ConfigError(f"no darknet cfg for model {name!r} (yolov2, yolov2-tiny, yolov3, yolov3-tiny)")
    return cfg.text()
