"""Evaluation: COCO (identical to pycocotools), Pascal VOC, PR curves and confusion matrix, TIDE errors."""

from odkit.eval.api import evaluate
from odkit.eval.coco import CocoResult, evaluate_coco
from odkit.eval.curves import confusion_matrix, plot_confusion_matrix, plot_pr_curves, pr_curves
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
]
