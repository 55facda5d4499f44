"""effdet (the PyTorch EfficientDet of the ``effdet`` package) and timm EfficientNet checkpoints -> odkit.

``DETECTORS``: effdet's ``EfficientDet`` state dicts (``tf_efficientdet_d0..d2``; COCO: 90 class
slots, effdet's class ``c`` is COCO category id ``c + 1``). odkit's EfficientDet keeps effdet's names
below the top level: ``backbone.*`` (timm's EfficientNet), ``fpn.*`` -> ``neck.*``, ``class_net.*`` /
``box_net.*`` -> ``head.class_net.*`` / ``head.box_net.*``. effdet's ``efficientdet_d0/d1`` (PyTorch
padding, no biases before BatchNorm) import into the same names built with ``padding="symmetric"``,
``redundant_bias=False`` (see :data:`SYMMETRIC`; the checkpoint's keys tell the two apart). The
models take RGB normalised with the ImageNet mean / std, odkit's default input format.

``BACKBONES``: the EfficientNet part of an effdet checkpoint, or timm's ImageNet
``tf_efficientnet_bN`` / ``efficientnet_bN`` state dicts (the classifier and the 1x1 head conv are
not used), into an odkit ``EfficientNet``.
"""

from __future__ import annotations

from odkit.weights.tables import Table

IMAGENET_INPUT = {"input_bgr": False, "pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225]}

RULES = (
    (r"^backbone\.", "backbone."),
    (r"^fpn\.", "neck."),
    (r"^(class_net|box_net)\.", r"head.\1."),
)


# build overrides for effdet's efficientdet_d0 / d1 (PyTorch padding, no conv bias before BatchNorm,
# timm's efficientnet_bN BatchNorm eps 1e-5), whose checkpoints have no BiFPN conv biases
SYMMETRIC = {"padding": "symmetric", "redundant_bias": False, "backbone_args": {"norm_eps": 1e-5}}


def _detector(d: str) -> Table:
    return Table(
        rules=RULES,
        class_layers=(r"^head\.class_net\.predict\.",),
        num_classes_key="class_net.predict.conv_pw.bias",
        num_classes_divisor=9,
        overrides_without=((r"^fpn\.cell\.0\.fnode\.0\.after_combine\.conv\.conv_pw\.bias$", SYMMETRIC),),
        note=f"effdet tf_efficientdet_{d} / efficientdet_{d} (90 COCO class slots)",
    )


DETECTORS: dict[str, Table] = {f"efficientdet-{d}": _detector(d) for d in ("d0", "d1", "d2")}

BACKBONES: dict[str, Table] = {
    "EfficientNet": Table(
        rules=((r"^backbone\.", ""), (r"^(conv_stem|bn1|blocks)\.", r"\1.")),
        drop=(r"^(fpn|class_net|box_net)\.", r"^(conv_head|bn2|classifier)\."),
        build_overrides=IMAGENET_INPUT,
        note="EfficientNet of an effdet checkpoint or a timm ImageNet state dict",
    ),
}
