"""Double-Head R-CNN (Wu et al. 2020, "Rethinking Classification and Localization for Object
Detection"): a fully connected head for classification and a convolutional head for box regression
on the same RoIs, trained with the paper's complementary losses (Double-Head-Ext).

- fc head: two fc layers (1024) -> class logits (and, for the unfocused task, deltas);
- conv head: a residual block 256 -> 1024 (3x3 + 1x1, 1x1 identity) and ``num_convs`` bottleneck
  blocks (1024 -> 256 -> 1024), global average pooling -> per-class deltas (and class logits);
  its RoIs are enlarged by ``reg_roi_scale_factor`` (1.3, as MMDetection's ``DoubleHeadRoIHead``;
  the level comes from the original RoI);
- loss: ``w_fc * (l_fc * CE_fc + (1 - l_fc) * reg_fc) + w_conv * ((1 - l_conv) * CE_conv + l_conv *
  reg_conv)`` with the paper's ``w_fc = 2.0, w_conv = 2.5, l_fc = 0.7, l_conv = 0.8``; the class
  terms are reported as ``loss_cls``, the box terms as ``loss_box`` (smooth L1, beta 1 as
  MMDetection's config);
- scores: ``s = s_fc + s_conv (1 - s_fc)`` (the paper's complementary fusion); boxes from the conv
  head.

MMDetection's ``dh_faster_rcnn_r50_fpn_1x_coco`` is the plain Double-Head (no unfocused tasks, loss
weights 2.0 / 2.0): ``build("doublehead-r50-fpn", roi_args={"l_fc": 1.0, "l_conv": 1.0, "w_fc": 2.0,
"w_conv": 2.0, "fuse_scores": False})``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from odkit.models.two_stage.box_head import TwoMLPHead
from odkit.models.two_stage.roi_head import Pool, RoIHead, box_loss


def _conv_bn(cin: int, cout: int, k: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """``relu(conv1x1(conv3x3(x)) + conv1x1_identity(x))``, channels ``cin -> cout``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cin, 3, True)
        self.conv2 = _conv_bn(cin, cout, 1, False)
        self.identity = _conv_bn(cin, cout, 1, False)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.identity(x))


class Bottleneck(nn.Module):
    """ResNet bottleneck ``c -> c/4 -> c/4 -> c`` with identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = channels // 4
        self.body = nn.Sequential(_conv_bn(channels, mid, 1, True), _conv_bn(mid, mid, 3, True),
                                  _conv_bn(mid, channels, 1, False))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class DoubleHeadRoIHead(RoIHead):
    """RoI head with an fc classification head and a conv regression head; see the module docstring.

    Extra args (besides :class:`RoIHead`'s): ``conv_channels`` (1024), ``num_convs`` (4),
    ``reg_roi_scale_factor`` (1.3), loss weights ``w_fc``, ``w_conv``, ``l_fc``, ``l_conv``,
    ``fuse_scores`` (complementary score fusion at inference).
    """

    def __init__(self, num_classes: int, in_channels: int, *args, conv_channels: int = 1024, num_convs: int = 4,
                 reg_roi_scale_factor: float = 1.3, w_fc: float = 2.0, w_conv: float = 2.5, l_fc: float = 0.7,
                 l_conv: float = 0.8, fuse_scores: bool = True, **kw) -> None:
        self._conv_cfg = (in_channels, int(conv_channels), int(num_convs))
        super().__init__(num_classes, in_channels, *args, **kw)
        self.coder.clip_both = True  # MMDetection's delta clamp (both sides), the reference of this head
        self.reg_roi_scale_factor = float(reg_roi_scale_factor)
        self.w_fc, self.w_conv, self.l_fc, self.l_conv = float(w_fc), float(w_conv), float(l_fc), float(l_conv)
        self.fuse_scores = bool(fuse_scores)

    def build_layers(self, in_features: int, representation: int) -> None:
        cin, ch, n = self._conv_cfg
        k = self.num_logits
        self.fc_head = TwoMLPHead(in_features, representation)
        self.fc_cls = nn.Linear(representation, k)
        self.fc_reg = nn.Linear(representation, k * 4)
        self.conv_head = nn.Sequential(ResBlock(cin, ch), *(Bottleneck(ch) for _ in range(n)))
        self.conv_cls = nn.Linear(ch, k)
        self.conv_reg = nn.Linear(ch, k * 4)
        for m in (self.fc_cls, self.conv_cls):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        for m in (self.fc_reg, self.conv_reg):
            nn.init.normal_(m.weight, std=0.001)
            nn.init.zeros_(m.bias)

    def forward_rois(self, pool: Pool) -> dict[str, Tensor]:
        x_fc = self.fc_head(pool(1.0))
        x_conv = self.conv_head(pool(self.reg_roi_scale_factor)).mean((2, 3))
        k = x_fc.shape[0]
        return {
            "cls": self.fc_cls(x_fc),
            "cls_conv": self.conv_cls(x_conv),
            "deltas": self.conv_reg(x_conv).view(k, self.num_logits, 4),
            "deltas_fc": self.fc_reg(x_fc).view(k, self.num_logits, 4),
        }

    def class_probs(self, out: dict[str, Tensor]) -> Tensor:
        p_fc = F.softmax(out["cls"], -1)
        if not self.fuse_scores:
            return p_fc
        return p_fc + F.softmax(out["cls_conv"], -1) * (1.0 - p_fc)

    def loss_terms(self, out: dict[str, Tensor], labels: Tensor, targets: Tensor) -> dict[str, Tensor]:
        ce_fc = F.cross_entropy(out["cls"], labels)
        reg_conv = box_loss(out["deltas"], labels, targets, beta=1.0)
        loss_cls = self.w_fc * self.l_fc * ce_fc
        loss_box = self.w_conv * self.l_conv * reg_conv
        if self.l_conv < 1.0:
            loss_cls = loss_cls + self.w_conv * (1.0 - self.l_conv) * F.cross_entropy(out["cls_conv"], labels)
        if self.l_fc < 1.0:
            loss_box = loss_box + self.w_fc * (1.0 - self.l_fc) * box_loss(out["deltas_fc"], labels, targets, beta=1.0)
        return {"loss_cls": loss_cls, "loss_box": loss_box}
