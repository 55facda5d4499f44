"""Evaluation: COCO (identical to pycocotools), Pascal VOC, PR curves and confusion matrix, TIDE errors,
mean IoU of semantic masks."""

from odkit.eval.api import evaluate
from odkit.eval.coco import CocoResult, evaluate_coco
from odkit.eval.curves import confusion_matrix, plot_confusion_matrix, plot_pr_curves, pr_curves
from odkit.eval.semantic import SemanticResult, iou_from_confusion, mean_iou, semantic_confusion
from odkit.eval.tide import TideResult, tide_errors
from odkit.eval.voc import VocResult, evaluate_voc, voc_ap

__all__ = [
    "evaluate",
    "evaluate_coco",
    "CocoResult",
    "evaluate_voc",
    "VocResult",
    "voc_ap",
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_pr_curves",
    "pr_curves",
    "tide_errors",
    "TideResult",
    "mean_iou",
    "SemanticResult",
    "semantic_confusion",
    "iou_from_confusion",
]
