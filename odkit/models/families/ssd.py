"""SSD300-VGG16 and SSDLite320-MobileNetV3-Large, laid out as torchvision's ``ssd300_vgg16`` and
``ssdlite320_mobilenet_v3_large`` (parameter for parameter; their COCO weights import with
``odkit weights import --from torchvision``).

- SSD300: VGG16 up to conv5_3 (pool3 with ``ceil_mode``), conv4_3 L2-normalised with a learned
  per-channel scale (init 20), pool5 3x3 s1, conv6 (3x3, dilation 6) and conv7 (1x1), then four extra
  blocks (1x1 then 3x3): maps of 38, 19, 10, 5, 3, 1 at 300 px; 4, 6, 6, 6, 4, 4 default boxes
  (scales 0.07 .. 1.05, steps 8 .. 300). Input 0-255 RGB minus the ImageNet mean (std 1/255).
- SSDLite320: MobileNetV3-Large with the reduced tail (block 13's expansion conv at stride 16 and the
  last conv at stride 32), four extra blocks (1x1, 3x3 depthwise s2, 1x1; ReLU6), SSDLite prediction
  blocks, BatchNorm eps 0.001 / momentum 0.03; 6 default boxes per location (scales 0.2 .. 0.95).
  Input scaled to [-1, 1].

Both take a plain resize to their square input (``resize="stretch"``) and train with SSD's own
augmentation (``odkit.data.ssd_aug``: photometric distortion, zoom-out, min-IoU crop, flip).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from odkit.models.backbones.mobilenet_v3 import MobileNetV3
from odkit.models.backbones.vgg import VGG
from odkit.models.detector import Detector
from odkit.models.heads.ssd_head import SSDHead, _normal, _xavier
from odkit.models.spec import ModelSpec
from odkit.ops.priors import DefaultBoxes

# torchvision's input formats ([0, 1] units): SSD300 0-255 minus the mean, SSDLite [-1, 1]
SSD300_INPUT = {"pixel_mean": (0.48235, 0.45882, 0.40784), "pixel_std": (1 / 255.0,) * 3}
SSDLITE_INPUT = {"pixel_mean": (0.5, 0.5, 0.5), "pixel_std": (0.5, 0.5, 0.5)}


def ssd300_priors() -> DefaultBoxes:
    """torchvision's SSD300 default boxes (8732 at 300 px)."""
    return DefaultBoxes([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05],
                        steps=[8, 16, 32, 64, 100, 300])


def ssdlite_priors() -> DefaultBoxes:
    """torchvision's SSDLite320 default boxes (3234 at 320 px)."""
    return DefaultBoxes([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)


class SSDVGG(nn.Module):
    """SSD300's VGG16 feature extractor: ``[B, 3, H, W]`` -> 6 maps (512, 1024, 512, 256, 256, 256 ch).

    ``trunk`` is :class:`~odkit.models.backbones.vgg.VGG` (torchvision ``features`` names) returning
    conv4_3 and conv5_3 (after ReLU); ``scale_weight`` the L2-norm scale of conv4_3; ``fc`` pool5 +
    conv6 + conv7; ``extra`` the four extra blocks.
    """

    size_divisor = 1

    def __init__(self) -> None:
        super().__init__()
        self.trunk = VGG(16, out_indices=(22, 29))
        self.trunk.features[16].ceil_mode = True  # pool3: 75 -> 38 at 300 px
        self.scale_weight = nn.Parameter(torch.full((512,), 20.0))
        self.fc = nn.Sequential(
            nn.MaxPool2d(3, 1, 1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, 1),
            nn.ReLU(inplace=True),
        )

        def block(c_in: int, mid: int, c_out: int, stride: int, pad: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, mid, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(mid, c_out, 3, stride=stride, padding=pad), nn.ReLU(inplace=True))

        self.extra = nn.ModuleList([block(1024, 256, 512, 2, 1), block(512, 128, 256, 2, 1),
                                    block(256, 128, 256, 1, 0), block(256, 128, 256, 1, 0)])
        _xavier(self.fc)
        _xavier(self.extra)
        self.out_channels = [512, 1024, 512, 256, 256, 256]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4, c5 = self.trunk(x)
        outs = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(c4)]
        x = self.fc(c5)
        outs.append(x)
        for blk in self.extra:
            x = blk(x)
            outs.append(x)
        return outs


class SSDLiteMobileNetV3(nn.Module):
    """SSDLite320's MobileNetV3-Large extractor: 6 maps (672, 480, 512, 256, 256, 128 ch; strides 16,
    32, 64, 128, 256, 512 nominal). ``trunk`` has torchvision's ``features`` names."""

    size_divisor = 32

    def __init__(self, norm: Any) -> None:
        super().__init__()
        from odkit.models.backbones.mobile_common import ConvNormAct

        self.trunk = MobileNetV3("large", reduced_tail=True, out_indices=("13.expand", 16), norm=norm)

        def block(c_in: int, c_out: int) -> nn.Sequential:
            mid = c_out // 2
            return nn.Sequential(ConvNormAct(c_in, mid, 1, norm, nn.ReLU6),
                                 ConvNormAct(mid, mid, 3, norm, nn.ReLU6, stride=2, groups=mid),
                                 ConvNormAct(mid, c_out, 1, norm, nn.ReLU6))

        self.extra = nn.ModuleList([block(480, 512), block(512, 256), block(256, 256), block(256, 128)])
        _normal(self.extra)
        self.out_channels = [672, 480, 512, 256, 256, 128]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = list(self.trunk(x))
        x = outs[-1]
        for blk in self.extra:
            x = blk(x)
            outs.append(x)
        return outs


def build_ssd(num_classes: int = 80, arch: str = "vgg16", background_slot: bool = False,
              neg_pos_ratio: float = 3.0, box_beta: float = 1.0) -> Detector:
    """``arch`` ``"vgg16"`` (SSD300) or ``"mobilenetv3"`` (SSDLite320) with ``num_classes`` object
    classes plus a background logit (``background_slot``: labels number the logits, label 0 the
    background, as torchvision's COCO labels). ``neg_pos_ratio``: hard negative mining ratio; ``box_beta``: smooth L1 beta."""
    from odkit.errors import ConfigError

    if arch == "vgg16":
        backbone: nn.Module = SSDVGG()
        head = SSDHead(num_classes, backbone.out_channels, ssd300_priors(), background_slot=background_slot,
                       neg_pos_ratio=neg_pos_ratio, box_beta=box_beta)
        fmt = SSD300_INPUT
    elif arch == "mobilenetv3":
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        backbone = SSDLiteMobileNetV3(norm)
        head = SSDHead(num_classes, backbone.out_channels, ssdlite_priors(), lite=True, norm=norm,
                       background_slot=background_slot, neg_pos_ratio=neg_pos_ratio, box_beta=box_beta)
        fmt = SSDLITE_INPUT
    else:
        raise ConfigError(f"unknown SSD arch {arch!r}; expected vgg16 or mobilenetv3")
    return Detector(backbone, nn.Identity(), head, size_divisor=backbone.size_divisor, **fmt)


# torchvision's prediction settings: SSD(score_thresh, nms_thresh, detections_per_img, topk_candidates)
POSTPROCESS = {
    "vgg16": {"conf": 0.01, "iou": 0.45, "max_det": 200, "pre_topk": 400},
    "mobilenetv3": {"conf": 0.001, "iou": 0.55, "max_det": 300, "pre_topk": 300},
}
# SSD's own augmentation and a plain resize, no Mosaic; AdamW + cosine for from-scratch training on a
# CPU (the small-data rule of odkit.engine.recipe picks the rate).
RECIPE = {
    "augment": "ssd", "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "optimizer": "adamw",
    "lr_per_image": 0.004 / 16, "weight_decay": 0.05, "schedule": "cos", "warmup_epochs": 2.0, "clip_grad": 35.0,
}


# torchvision's reference presets: "ssd" = photometric distortion, zoom-out, min-IoU crop, flip;
# "ssdlite" = min-IoU crop and flip only
RECIPES = {"vgg16": RECIPE, "mobilenetv3": {**RECIPE, "aug": {"photometric_prob": 0.0, "expand_prob": 0.0}}}


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``ssd300-vgg16`` and ``ssdlite320-mobilenetv3``."""
    def entry(arch: str, img: int, divisor: int) -> ModelSpec:
        def builder(num_classes: int = 80, **kw: Any) -> Detector:
            return build_ssd(num_classes, arch, **kw)

        builder.__name__ = f"build_ssd_{arch}"
        return ModelSpec(builder, img, POSTPROCESS[arch], RECIPES[arch], "ssd", resize="stretch", size_divisor=divisor)

    return {"ssd300-vgg16": entry("vgg16", 300, SSDVGG.size_divisor),
            "ssdlite320-mobilenetv3": entry("mobilenetv3", 320, SSDLiteMobileNetV3.size_divisor)}
