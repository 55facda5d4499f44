"""Box operations in pure PyTorch: formats, IoU family, NMS family, RoI pooling, priors, coders.

Boxes are float ``[N, 4]`` xyxy in absolute pixels with continuous coordinates (width = x2 - x1).
"""

from odkit.ops.boxes import (
    aligned_box_iou,
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    complete_box_iou,
    cxcywh_to_xyxy,
    distance_box_iou,
    generalized_box_iou,
    xywh_to_xyxy,
    xyxy_to_cxcywh,
    xyxy_to_xywh,
)
from odkit.ops.coders import DeltaXYWHCoder, DistanceCoder, YOLOCoder
from odkit.ops.nms import batched_nms, diou_nms, matrix_nms, multiclass_nms, nms, soft_nms
from odkit.ops.priors import (
    AnchorGenerator,
    DefaultBoxes,
    YOLOAnchorGenerator,
    grid_points,
    ssd300_priors,
    ssd_priors,
)
from odkit.ops.roi import map_roi_levels, multiscale_roi_align, roi_align, roi_pool

__all__ = [
    "AnchorGenerator",
    "DefaultBoxes",
    "DeltaXYWHCoder",
    "DistanceCoder",
    "YOLOAnchorGenerator",
    "YOLOCoder",
    "grid_points",
    "map_roi_levels",
    "multiscale_roi_align",
    "roi_align",
    "roi_pool",
    "ssd300_priors",
    "ssd_priors",
    "aligned_box_iou",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "complete_box_iou",
    "cxcywh_to_xyxy",
    "diou_nms",
    "distance_box_iou",
    "generalized_box_iou",
    "matrix_nms",
    "multiclass_nms",
    "nms",
    "soft_nms",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]
