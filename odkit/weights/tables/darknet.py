"""Darknet ``.weights`` layouts: for each zoo model, the odkit modules in darknet's cfg order.

A darknet weights file is the convolutions of the cfg in layer order (see :mod:`odkit.weights.darknet`);
each entry below lists module paths of the odkit model whose convolutions, walked in module order,
are exactly that sequence. ``BACKBONE_UNITS`` is the number of convolutions of the backbone (the
leading part of every darknet file for that model; ``darknet53.conv.74`` holds Darknet-53's 52,
``darknet19_448.conv.23`` Darknet-19's 18). ``HEAD_KIND`` names the cfg's output layer.
"""

from __future__ import annotations

# yolov3.cfg: Darknet-53 (layers 0-74), then per scale, coarsest first: five-conv block, 3x3 bridge,
# 1x1 prediction, [yolo]; route -4, 1x1 lateral, upsample, route -1 + backbone map, next block.
ORDER: dict[str, tuple[str, ...]] = {
    "yolov3": ("backbone", "neck.detect.2", "head.bridges.2", "head.preds.2", "neck.lateral.1", "neck.detect.1",
               "head.bridges.1", "head.preds.1", "neck.lateral.0", "neck.detect.0", "head.bridges.0",
               "head.preds.0"),
    # yolov3-tiny.cfg: trunk (layers 0-12), conv 13 (1x1 256), 14 (3x3 512), 15 (1x1 pred), [yolo],
    # route 13, conv 18 (1x1 128), upsample, route -1, 8, conv 21 (3x3 256), 22 (pred), [yolo].
    "yolov3-tiny": ("backbone", "neck.reduce", "head.bridges.1", "head.preds.1", "neck.lateral", "head.bridges.0",
                    "head.preds.0"),
    # yolov2.cfg: Darknet-19 (layers 0-22), conv 23, 24 (3x3 1024), route 16, conv 26 (1x1 64), reorg,
    # route -1, -4, conv 29 (3x3 1024), conv 30 (1x1 pred), [region].
    "yolov2": ("backbone", "neck.conv1", "neck.conv2", "neck.passthrough", "head.bridge", "head.pred"),
    # yolov2-tiny.cfg: trunk (layers 0-12), conv 13 (3x3 512), conv 14 (1x1 pred), [region].
    "yolov2-tiny": ("backbone", "head.bridge", "head.pred"),
}

BACKBONE_UNITS = {"yolov3": 52, "yolov3-tiny": 7, "yolov2": 18, "yolov2-tiny": 7}

HEAD_KIND = {"yolov3": "yolo", "yolov3-tiny": "yolo", "yolov2": "region", "yolov2-tiny": "region"}
