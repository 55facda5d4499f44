"""YOLOv1 head (Redmon et al. 2016): fully connected layers to an ``S x S x (5 B + C)`` tensor.

The last layer's output vector is darknet's ``[detection]`` layout: ``S S C`` class probabilities
(per cell), then ``S S B`` confidences, then ``S S B x 4`` boxes ``(x, y, sqrt w, sqrt h)``: ``x, y``
the centre offset inside the cell (0..1), ``w, h`` relative to the input; cells row-major. All outputs
are linear (the paper's last layer). The head rearranges it into one map ``[N, B (5 + C), S, S]``
(per predictor ``x, y, sqrt w, sqrt h, confidence, C class probabilities``, the cell's classes
repeated for each of its ``B`` predictors), so decoding and NMS are :class:`DenseHead`'s.

Decoding: centre ``(cell + (x, y)) * stride``, size ``(sqrt w)^2 W``, ``(sqrt h)^2 H``; score
``clamp(confidence, 0, 1) * clamp(p(class), 0, 1)`` (the paper's class-specific confidence; the
clamps keep two negative linear outputs from making a positive score).

Loss, the paper's sum-squared error (eq. 3) with :class:`~odkit.assign.yolov1.YOLOv1Assigner`
(``1^obj_ij``: the responsible predictor of the cell that owns a gt), per image summed and divided by
the batch size:

    lambda_coord sum_pos [(x - x^)^2 + (y - y^)^2]
  + lambda_coord sum_pos [(sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  + sum_pos (C - C^)^2          (C: the IoU of the predicted box with its gt, detached)
  + lambda_noobj sum_neg C^2    (every predictor that is not responsible)
  + sum_pos sum_c (p(c) - p^(c))^2   (one-hot; once per object cell)

with ``lambda_coord = 5``, ``lambda_noobj = 0.5``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.assign.base import GTBatch, Priors
from odkit.assign.result import NEGATIVE
from odkit.errors import ConfigError
from odkit.models.heads.base import DenseHead, Flat, cell_targets
from odkit.ops import aligned_box_iou
from odkit.ops.priors import YOLOAnchorGenerator


class YOLOv1Head(DenseHead):
    """YOLOv1 head on one map of ``in_channels`` at ``in_stride``.

    Args:
        num_classes: object classes ``C``.
        in_channels: channels of the neck's map.
        grid: ``S``; the map after ``convs`` must be ``S x S`` (the fully connected layers fix the
            input size: the model's ``img_size``).
        boxes: predictors per cell ``B``.
        stride: input pixels per cell (448 / 7 = 64 for the paper).
        convs: ``(channels, kernel, stride)`` convolutions before the fully connected layers (the
            paper's last four).
        reduce: channels of a 1x1 convolution before flattening (``None``: none, the paper).
        hidden: width of the first fully connected layer (4096 in the paper); dropout after it.
        norm: BatchNorm after the convolutions (``False``: conv bias, the paper).
        lambda_coord, lambda_noobj: the loss weights.
    """

    LOSS_NORMS = ("batch",)

    def __init__(self, num_classes: int, in_channels: int, grid: int = 7, boxes: int = 2, stride: int = 64,
                 convs: Sequence[tuple[int, int, int]] = (), reduce: int | None = None, hidden: int = 4096,
                 dropout: float = 0.5, norm: bool = False, lambda_coord: float = 5.0,
                 lambda_noobj: float = 0.5) -> None:
        from odkit.assign.yolov1 import YOLOv1Assigner

        unit = [[float(stride), float(stride)]] * int(boxes)  # B predictors per cell (no anchor shapes)
        super().__init__(num_classes, [stride], YOLOAnchorGenerator([unit], [stride]))
        self.grid, self.boxes = int(grid), int(boxes)
        self.lambda_coord, self.lambda_noobj = float(lambda_coord), float(lambda_noobj)
        self.output_channels = (5 + self.num_classes,)
        self.assigner = YOLOv1Assigner()
        layers: list[nn.Module] = []
        c = int(in_channels)
        for out, k, s in list(convs) + ([(int(reduce), 1, 1)] if reduce else []):
            layers.append(nn.Conv2d(c, out, k, s, (k - 1) // 2, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.1))
            c = out
        self.convs = nn.Sequential(*layers)
        s2 = self.grid * self.grid
        self.fc1 = nn.Linear(c * s2, int(hidden))
        self.act = nn.LeakyReLU(0.1)
        self.drop = nn.Dropout(float(dropout))
        self.fc2 = nn.Linear(int(hidden), s2 * (self.boxes * 5 + self.num_classes))
        nn.init.normal_(self.fc2.weight, std=0.001)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor]]:
        x = self.convs(feats[-1])
        s, nb, c = self.grid, self.boxes, self.num_classes
        if tuple(x.shape[-2:]) != (s, s):
            raise ConfigError(f"YOLOv1Head: the fully connected head takes a {s}x{s} map, the model's input size "
                              f"{s * self.strides[0]} px only; got a {x.shape[-2]}x{x.shape[-1]} map")
        out = self.fc2(self.drop(self.act(self.fc1(x.flatten(1)))))
        n = out.shape[0]
        cls = out[:, : s * s * c].reshape(n, s, s, 1, c).expand(n, s, s, nb, c)
        conf = out[:, s * s * c : s * s * (c + nb)].reshape(n, s, s, nb, 1)
        box = out[:, s * s * (c + nb) :].reshape(n, s, s, nb, 4)
        per = torch.cat((box, conf, cls), -1)  # [N, S, S, B, 5 + C]
        return [(per.permute(0, 3, 4, 1, 2).reshape(n, nb * (5 + c), s, s),)]

    def scores_of(self, flat: Flat) -> Tensor:
        p = flat[0]
        return p[..., 4:5].clamp(0, 1) * p[..., 5:].clamp(0, 1)

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        p = flat[0]
        stride = priors.strides[:, None].to(p.dtype)
        size = float(self.grid) * stride
        ctr = (priors.grid.to(p.dtype) + p[..., :2]) * stride
        half = p[..., 2:4] ** 2 * size * 0.5
        return torch.cat((ctr - half, ctr + half), -1)

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        pred = flat[0]
        batch = pred.shape[0]
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, matched, stride, t_xy = cell_targets(assign, gt, priors)
        p = pred[b_idx, a_idx]
        size = float(self.grid) * stride
        t_wh = ((matched[:, 2:] - matched[:, :2]).clamp(min=0) / size).sqrt()
        loss_xy = self.lambda_coord * ((p[:, :2] - t_xy) ** 2).sum()
        loss_wh = self.lambda_coord * ((p[:, 2:4] - t_wh) ** 2).sum()
        with torch.no_grad():
            iou = aligned_box_iou(self.boxes_of((p.detach(),), priors.take(a_idx)), matched).to(p.dtype)
        loss_obj = ((p[:, 4] - iou) ** 2).sum()
        loss_noobj = self.lambda_noobj * (pred[..., 4][assign.gt_inds == NEGATIVE] ** 2).sum()
        onehot = torch.nn.functional.one_hot(assign.labels[b_idx, a_idx], self.num_classes).to(p.dtype)
        loss_cls = ((p[:, 5:] - onehot) ** 2).sum()
        terms = {"loss_xy": loss_xy, "loss_wh": loss_wh, "loss_obj": loss_obj, "loss_noobj": loss_noobj,
                 "loss_cls": loss_cls}
        terms = {k: v / batch for k, v in terms.items()}
        return {"loss": sum(terms.values()), **terms, "num_fg": pred.new_tensor(float(b_idx.numel()))}
