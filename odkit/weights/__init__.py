"""Pretrained weights from other code bases: ``import_weights`` (whole detectors, e.g. official YOLOX)
and ``load_backbone`` (ImageNet backbones, e.g. torchvision ResNet / ShuffleNetV2).

Checkpoints are read without running code (``torch.load(weights_only=True)`` or safetensors; see
:mod:`odkit.weights.load`); key names are translated by per-source tables kept as data
(:mod:`odkit.weights.tables`).
"""

from odkit.weights.importer import ImportReport, Mismatch, import_weights, load_backbone, map_state_dict
from odkit.weights.load import read_state_dict

__all__ = ["ImportReport", "Mismatch", "import_weights", "load_backbone", "map_state_dict", "read_state_dict"]
