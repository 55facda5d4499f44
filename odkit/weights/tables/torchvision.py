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

# RetinaNet / FCOS: sigmoid heads with 91 class channels; torchvision's COCO labels are 1..90, so
# channel 0 is never a positive in training but is scored like any other. odkit keeps all 91 as
# classes (``num_classes`` 91, labels equal torchvision's, channel 0 included in the outputs), so
# the detections are torchvision's to the last box; no background slot (nothing is a softmax).
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

# SSD300 / SSDLite320: softmax heads over 91 slots whose slot 0 is the background logit: 90 object
# classes, imported with ``background_slot`` (labels numbered as torchvision's, label 0 never predicted). The input
# format is torchvision's (SSD300: 0-255 minus the mean; SSDLite: [-1, 1]), stored in the config.
_SSD_HEAD = ((r"^head\.classification_head\.module_list\.", "head.cls_logits."),
             (r"^head\.regression_head\.module_list\.", "head.bbox_reg."))
DETECTORS["ssd300-vgg16"] = Table(
    rules=(
        (r"^backbone\.features\.", "backbone.trunk.features."),  # conv1_1 .. conv4_3 (features 0-22)
        *((rf"^backbone\.extra\.0\.{k}\.", f"backbone.trunk.features.{23 + k}.") for k in (1, 3, 5)),  # conv5_x
        (r"^backbone\.extra\.0\.7\.", "backbone.fc."),  # pool5, conv6, conv7
        *((rf"^backbone\.extra\.{k}\.", f"backbone.extra.{k - 1}.") for k in (1, 2, 3, 4)),
        (r"^backbone\.scale_weight$", "backbone.scale_weight"),
        *_SSD_HEAD,
    ),
    class_layers=(r"^head\.cls_logits\.",),
    num_classes_key="head.classification_head.module_list.0.bias",
    num_classes_divisor=4,
    build_overrides={"background_slot": True, "pixel_mean": [0.48235, 0.45882, 0.40784],
                     "pixel_std": [1 / 255.0] * 3, "input_bgr": False},
    note="torchvision ssd300_vgg16 (COCO, 91 class slots with background 0)",
)
DETECTORS["ssdlite320-mobilenetv3"] = Table(
    rules=(
        # torchvision splits MobileNetV3's features at block 13's expansion conv (see mobilenet_v3.py)
        (r"^backbone\.features\.0\.(\d|1[0-2])\.", r"backbone.trunk.features.\1."),
        (r"^backbone\.features\.0\.13\.", "backbone.trunk.features.13.block.0."),
        (r"^backbone\.features\.1\.0\.", "backbone.trunk.features.13.block."),
        *((rf"^backbone\.features\.1\.{k}\.", f"backbone.trunk.features.{13 + k}.") for k in (1, 2, 3)),
        (r"^backbone\.extra\.", "backbone.extra."),
        *_SSD_HEAD,
    ),
    class_layers=(r"^head\.cls_logits\.",),
    num_classes_key="head.classification_head.module_list.0.1.bias",
    num_classes_divisor=6,
    build_overrides={"background_slot": True, "pixel_mean": [0.5, 0.5, 0.5], "pixel_std": [0.5, 0.5, 0.5],
                     "input_bgr": False},
    note="torchvision ssdlite320_mobilenet_v3_large (COCO, 91 class slots with background 0)",
)

# Faster R-CNN: torchvision's softmax box classifier has 91 columns, column 0 the background: 90 object
# classes, imported with ``background_slot`` (labels numbered as torchvision's, 0 never predicted) and
# torchvision's RoIAlign (``aligned=False``). The MobileNetV3 member also gets torchvision's proposal
# counts and proposal score threshold (odkit's defaults for it are CPU-sized).
_RCNN_HEADS = ((r"^rpn\.", "head.rpn."), (r"^roi_heads\.", "head.roi_heads."))
_RCNN_IMPORT = {**IMAGENET_INPUT, "background_slot": True, "aligned": False}
DETECTORS["fasterrcnn-r50-fpn"] = Table(
    rules=(*_TRUNK, *_RCNN_HEADS),
    class_layers=(r"^head\.roi_heads\.box_predictor\.",),
    num_classes_key="roi_heads.box_predictor.cls_score.bias",
    build_overrides=_RCNN_IMPORT,
    note="torchvision fasterrcnn_resnet50_fpn (COCO, 91 class slots with background 0)",
)
DETECTORS["fasterrcnn-mobilenetv3-fpn"] = Table(
    rules=((r"^backbone\.body\.", "backbone.features."), (r"^backbone\.fpn\.", "neck."), *_RCNN_HEADS),
    class_layers=(r"^head\.roi_heads\.box_predictor\.",),
    num_classes_key="roi_heads.box_predictor.cls_score.bias",
    build_overrides={**_RCNN_IMPORT,
                     "rpn_args": {"pre_nms_top_n": [2000, 1000], "post_nms_top_n": [2000, 1000], "score_thr": 0.05},
                     "roi_args": {"num_samples": 512}},
    note="torchvision fasterrcnn_mobilenet_v3_large_fpn (COCO, 91 class slots with background 0)",
)

# Mask R-CNN: Faster R-CNN's table plus the mask branch, whose names are torchvision's
# (``roi_heads.mask_head.<i>.0``, ``roi_heads.mask_predictor.*``); the published COCO checkpoint keeps
# the earlier ``mask_head.mask_fcn<i+1>`` names, which torchvision renames on loading as these rules do.
# The mask logits have one map per box-classifier column (91, background 0).
DETECTORS["maskrcnn-r50-fpn"] = Table(
    rules=(
        *_TRUNK,
        *((rf"^roi_heads\.mask_head\.mask_fcn{i + 1}\.", f"head.roi_heads.mask_head.{i}.0.") for i in range(4)),
        *_RCNN_HEADS,
    ),
    class_layers=(r"^head\.roi_heads\.box_predictor\.", r"^head\.roi_heads\.mask_predictor\.mask_fcn_logits\."),
    num_classes_key="roi_heads.box_predictor.cls_score.bias",
    build_overrides=_RCNN_IMPORT,
    note="torchvision maskrcnn_resnet50_fpn (COCO, 91 class slots with background 0)",
)
