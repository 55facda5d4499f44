"""Fast R-CNN box heads on pooled RoI features: the two-fc head and the class / per-class box
predictor (torchvision's names ``fc6``, ``fc7``, ``cls_score``, ``bbox_pred``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class TwoMLPHead(nn.Module):
    """Flatten ``[K, C, S, S]`` RoI features, then two fc layers with ReLU -> ``[K, representation]``."""

    def __init__(self, in_features: int, representation: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.out_features = representation

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits ``[K, num_logits]`` (column 0 is the background) and per-column box deltas
    ``[K, num_logits * 4]``."""

    def __init__(self, in_features: int, num_logits: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_logits)
        self.bbox_pred = nn.Linear(in_features, num_logits * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)
