"""torchvision checkpoints -> odkit.

``BACKBONES``: ImageNet classification state dicts (``torchvision.models.resnet50().state_dict()``
and the like) into odkit backbones, which use torchvision's parameter names; the classifier
(``fc.*``) is not used. torchvision's ImageNet models take RGB in [0, 1] normalised with the
ImageNet mean / std, odkit's default input format.

``DETECTORS``: COCO detection state dicts keyed by odkit model name; each detector family adds its
entry next to its parity test, e.g.::

    DETECTORS["retinanet-r50-fpn"] = Table(
        rules=((r"^backbone\\.body\\.", "backbone."), (r"^backbone\\.fpn\\.", "neck."), (r"^head\\.", "head.")),
        class_layers=(r"^head\\.cls_logits\\.",),
        num_classes_key="head.classification_head.cls_logits.weight",
    )
"""

from __future__ import annotations

from odkit.weights.tables import Table

IMAGENET_INPUT = {"input_bgr": False, "pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225]}

BACKBONES: dict[str, Table] = {
    "ResNet": Table(
        rules=((r"^(conv1|bn1|layer[1-4])\.", r"\1."),),
        drop=(r"^fc\.",),
        build_overrides=IMAGENET_INPUT,
        note="torchvision ImageNet ResNet",
    ),
    "ShuffleNetV2": Table(
        rules=((r"^(conv1|stage[2-4]|conv5)\.", r"\1."),),
        drop=(r"^fc\.",),
        build_overrides=IMAGENET_INPUT,
        note="torchvision ImageNet ShuffleNetV2",
    ),
}

DETECTORS: dict[str, Table] = {}
