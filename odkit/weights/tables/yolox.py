"""Official YOLOX checkpoints (Megvii-BaseDetection/YOLOX releases) -> odkit YOLOX.

The official model is ``YOLOX(backbone=YOLOPAFPN(backbone=CSPDarknet), head=YOLOXHead)``: the
backbone proper sits under ``backbone.backbone.*``, the PAFPN layers directly under ``backbone.*``.
Inside the blocks (BaseConv ``conv`` / ``bn``, DWConv ``dconv`` / ``pconv``, CSPLayer ``conv1..3`` /
``m``, SPPBottleneck ``conv1`` / ``conv2``) the names are the same as odkit's. The released models
take BGR images with 0-255 values and no normalisation.
"""

from __future__ import annotations

from odkit.weights.tables import Table
from odkit.weights.tables.coco import COCO80

STAGES = r"(stem|dark2|dark3|dark4|dark5)"
NECK = r"(lateral_conv0|C3_p4|reduce_conv1|C3_p3|bu_conv2|C3_n3|bu_conv1|C3_n4)"
HEAD = r"(stems|cls_convs|reg_convs|cls_preds|reg_preds|obj_preds)"

# Input of the official models: BGR, 0-255 (odkit input is RGB in [0, 1]; std 1/255 rescales it).
INPUT_FORMAT = {"input_bgr": True, "pixel_mean": [0.0, 0.0, 0.0], "pixel_std": [1 / 255, 1 / 255, 1 / 255]}

DETECTOR = Table(
    rules=(
        (rf"^backbone\.backbone\.{STAGES}\.", r"backbone.\1."),
        (rf"^backbone\.{NECK}\.", r"neck.\1."),
        (rf"^head\.{HEAD}\.", r"head.\1."),
    ),
    class_layers=(r"^head\.cls_preds\.\d+\.",),
    num_classes_key="head.cls_preds.0.weight",
    build_overrides=INPUT_FORMAT,
    class_names=COCO80,
    epochs_key="start_epoch",  # YOLOX's trainer saves epoch index + 1, the epochs completed
    note="official YOLOX checkpoint (BGR 0-255 input)",
)

DETECTORS: dict[str, Table] = {
    name: DETECTOR for name in ("yolox-nano", "yolox-tiny", "yolox-s", "yolox-m", "yolox-l", "yolox-x")
}

# The CSPDarknet part of an official checkpoint, into any odkit CSPDarknet backbone.
BACKBONES: dict[str, Table] = {
    "CSPDarknet": Table(
        rules=((rf"^backbone\.backbone\.{STAGES}\.", r"\1."),),
        drop=(rf"^backbone\.{NECK}\.", r"^head\."),
        build_overrides=INPUT_FORMAT,
        note="CSPDarknet of an official YOLOX checkpoint (BGR 0-255 input)",
    ),
}
