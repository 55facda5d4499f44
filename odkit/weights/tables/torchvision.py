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
    # the trunks keep torchvision's ``features.*`` names (vgg*, vgg*_bn, mobilenet_v2,
    # mobilenet_v3_large / _small); the classifier is not used
    **{
        cls: Table(
            rules=((r"^features\.", "features."),),
            drop=(r"^classifier\.",),
            build_overrides=IMAGENET_INPUT,
            note=f"torchvision ImageNet {cls}",
        )
        for cls in ("VGG", "MobileNetV2", "MobileNetV3")
    },
}

# Detection models (torchvision's COCO weights have 91 class slots: index 0 is background and never
# predicted by RetinaNet / FCOS, the "N/A" slots are unused ids of COCO's category list). The trunk and
# FPN use torchvision's names in odkit, the heads are renamed.
_TRUNK = ((r"^backbone\.body\.", "backbone."), (r"^backbone\.fpn\.", "neck."))

DETECTORS: dict[str, Table] = {
    "retinanet-r50-fpn": Table(
        rules=(
            *_TRUNK,
            (r"^head\.classification_head\.conv\.(\d+)\.0\.", r"head.cls_convs.\1.0."),
            (r"^head\.classification_head\.cls_logits\.", "head.cls_logits."),
            (r"^head\.regression_head\.conv\.(\d+)\.0\.", r"head.reg_convs.\1.0."),
            (r"^head\.regression_head\.bbox_reg\.", "head.bbox_reg."),
        ),
        class_layers=(r"^head\.cls_logits\.",),
        num_classes_key="head.classification_head.cls_logits.bias",
        num_classes_divisor=9,
        build_overrides=IMAGENET_INPUT,
        note="torchvision retinanet_resnet50_fpn (COCO, 91 class slots)",
    ),
    "fcos-r50-fpn": Table(
        rules=(
            *_TRUNK,
            # torchvision's towers are flat [conv, GroupNorm, ReLU] x 4; odkit nests them per block
            *((rf"^head\.classification_head\.conv\.{3 * i + j}\.", f"head.cls_convs.{i}.{j}.")
              for i in range(4) for j in range(2)),
            *((rf"^head\.regression_head\.conv\.{3 * i + j}\.", f"head.reg_convs.{i}.{j}.")
              for i in range(4) for j in range(2)),
            (r"^head\.classification_head\.cls_logits\.", "head.cls_logits."),
            (r"^head\.regression_head\.bbox_reg\.", "head.bbox_reg."),
            (r"^head\.regression_head\.bbox_ctrness\.", "head.bbox_ctrness."),
        ),
        class_layers=(r"^head\.cls_logits\.",),
        num_classes_key="head.classification_head.cls_logits.bias",
        build_overrides=IMAGENET_INPUT,
        note="torchvision fcos_resnet50_fpn (COCO, 91 class slots)",
    ),
}
