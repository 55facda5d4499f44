"""The YOLOX loss: IoU box loss, BCE objectness, BCE class with IoU-aware targets, optional L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odkit.assign.result import AssignResult
from odkit.losses.iou import iou_loss as iou_loss_fn
from odkit.ops.coders import YOLOCoder


def yolox_l1_targets(
    gt_boxes: torch.Tensor, grid_xy: torch.Tensor, strides: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Raw regression targets ``(tx, ty, tw, th)`` of xyxy gt boxes for priors at integer grid cells:
    the inverse of the YOLOX decoding (:class:`odkit.ops.YOLOCoder` ``style="yolox"``).
    Shapes: gt ``[N, 4]``, grid ``[N, 2]``, strides ``[N]`` -> ``[N, 4]``."""
    return YOLOCoder("yolox", eps=eps).encode(grid_xy, gt_boxes, strides)


def yolox_loss(
    raw_reg: torch.Tensor,
    pred_boxes: torch.Tensor,
    obj_logits: torch.Tensor,
    cls_logits: torch.Tensor,
    assign: AssignResult,
    gt_boxes: torch.Tensor,
    grid_xy: torch.Tensor,
    strides: torch.Tensor,
    use_l1: bool = False,
    reg_weight: float = 5.0,
    iou_loss: str = "iou",
) -> dict[str, torch.Tensor]:
    """YOLOX training loss of a batch, every term summed and divided by the number of foreground priors.

    Args:
        raw_reg: ``[B, A, 4]`` raw regression outputs (for the L1 term).
        pred_boxes: ``[B, A, 4]`` decoded xyxy boxes, input pixels.
        obj_logits: ``[B, A]`` objectness logits; target 1 on foreground priors, 0 elsewhere
            (priors marked ignore (-2) are left out).
        cls_logits: ``[B, A, C]`` class logits; target on foreground priors is
            ``one_hot(label) * IoU(pred, matched gt)``; background priors take no class loss.
        assign: batched ``AssignResult`` (``[B, A]``).
        gt_boxes: ``[B, G, 4]`` padded gt xyxy boxes (indexed by ``assign.gt_inds``).
        grid_xy: ``[A, 2]`` integer grid cell of each prior; ``strides``: ``[A]`` pixels.
        use_l1: add the L1 loss on raw offsets (YOLOX switches it on for the last epochs).
        reg_weight: weight of the IoU term (YOLOX: 5.0).
        iou_loss: the IoU loss mode, see :func:`odkit.losses.iou_loss` (``"iou"`` is ``1 - IoU**2``).

    Returns:
        dict with ``loss`` (total), ``loss_iou`` (already multiplied by ``reg_weight``), ``loss_obj``,
        ``loss_cls``, ``loss_l1`` (0 when off) and ``num_fg`` (number of foreground priors in the batch,
        detached float).
    """
    pos = assign.gt_inds >= 0  # [B, A]
    num_fg_t = pos.sum()
    num_fg = num_fg_t.clamp(min=1).to(pred_boxes.dtype)
    b_idx, a_idx = pos.nonzero(as_tuple=True)
    matched = gt_boxes[b_idx, assign.gt_inds[b_idx, a_idx]].to(pred_boxes.dtype)  # [P, 4]

    loss_iou = iou_loss_fn(pred_boxes[b_idx, a_idx], matched, mode=iou_loss).sum() / num_fg

    obj_target = pos.to(obj_logits.dtype)
    obj_weight = (assign.gt_inds != -2).to(obj_logits.dtype)
    loss_obj = (
        F.binary_cross_entropy_with_logits(obj_logits, obj_target, reduction="none") * obj_weight
    ).sum() / num_fg

    num_classes = cls_logits.shape[-1]
    cls_target = F.one_hot(assign.labels[b_idx, a_idx], num_classes).to(cls_logits.dtype)
    cls_target = cls_target * assign.quality[b_idx, a_idx, None].to(cls_logits.dtype)
    loss_cls = (
        F.binary_cross_entropy_with_logits(cls_logits[b_idx, a_idx], cls_target, reduction="sum") / num_fg
    )

    if use_l1:
        l1_target = yolox_l1_targets(
            matched, grid_xy[a_idx].to(matched.dtype), strides[a_idx].to(matched.dtype)
        )
        loss_l1 = F.l1_loss(raw_reg[b_idx, a_idx], l1_target, reduction="sum") / num_fg
    else:
        loss_l1 = raw_reg.new_zeros(())

    loss_iou = reg_weight * loss_iou
    total = loss_iou + loss_obj + loss_cls + loss_l1
    return {
        "loss": total,
        "loss_iou": loss_iou,
        "loss_obj": loss_obj,
        "loss_cls": loss_cls,
        "loss_l1": loss_l1,
        "num_fg": num_fg_t.detach().to(pred_boxes.dtype),
    }
