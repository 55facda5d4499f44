"""``DetectorHead``: what a :class:`~odkit.models.detector.Detector` and everything around it (the
trainer, validation, prediction, export) may call on a head. Nothing outside a head touches more.

Coordinates are network-input pixels, boxes xyxy; ``feats`` are the neck's maps, finest first.

- ``num_classes``: object classes ``C``, always (a softmax head's background logit is not counted).
  ``background_slot`` is the label numbering: ``False`` (odkit's own): object class ``c`` is label
  ``c``; ``True`` (imported torchvision SSD / R-CNN weights, so labels equal torchvision's COCO
  labels): class ``c`` is label ``c + 1`` and label 0 is the background, never predicted. Labels
  index ``class_names``; the label count is :func:`num_labels` (``C + background_slot``), the width
  of ``scores`` (``[..., L]``).
- ``loss(feats, targets, input_hw) -> dict``: ``loss`` is the total, the other keys its terms
  (``num_fg`` and other diagnostics may ride along).
- ``predict_raw(feats, input_hw) -> (boxes, scores)``: every candidate decoded, boxes ``[B, N, 4]``
  (or per class ``[B, N, L, 4]``) and scores ``[B, N, L]`` (column = label); no data-dependent control flow (what
  ONNX export runs). Decoding runs in float32 whatever the network's dtype, so a float16 network
  (``odkit export --half``) gives float32 boxes from its raw outputs.
- ``predict_candidates(feats, input_hw, conf, pre_topk, **extra)``: per image
  ``(boxes [K, 4], scores [K], labels [K])`` before the Detector's class-wise NMS.
- ``enter_phase(phase)``: training-phase hook (``"no_aug"``: the epochs without strong
  augmentation; YOLOX switches its L1 loss on).
- ``half_export``: ``None`` when the head exports in float16, else the reason it cannot (export
  then refuses with that reason instead of writing a graph that differs from float32). A head with
  ``float32_in_half = True`` (optional; two-stage) stays float32 behind a float16 trunk in such an
  export and casts its input features itself.
- Instance masks (optional; Mask R-CNN's ``TwoStageHead``): ``has_masks`` True, then
  ``predict_masks(feats, boxes, labels)`` -> per image ``[K, 1, M, M]`` mask probabilities of the
  detections (boxes ``[K, 4]`` input px, labels ``[K]``), and ``predict_masks_batched(feats, boxes
  [B, K, 4], labels [B, K])`` -> ``[B, K, M, M]`` (fixed shapes, export); their training targets carry
  ``"masks"``. ``Detector.predict`` pastes the masks into the image; export adds them as an output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class DetectorHead(Protocol):
    """The head contract; see the module docstring. ``DenseHead``, ``SSDHead`` and ``TwoStageHead``
    implement it (``isinstance(head, DetectorHead)`` checks the methods are there)."""

    num_classes: int
    background_slot: bool
    half_export: str | None

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]: ...

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]: ...

    def predict_candidates(self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float,
                           pre_topk: int, **extra: Any) -> list[tuple[Tensor, Tensor, Tensor]]: ...

    def enter_phase(self, phase: str) -> None: ...


def num_labels(head: Any) -> int:
    """Labels a head predicts into, ``num_classes + background_slot`` (label 0 the background when
    ``background_slot``): the width of its scores and the length of the model's ``class_names``."""
    return int(head.num_classes) + int(bool(head.background_slot))


def check_head(head: Any) -> None:
    """Raise ``TypeError`` naming the missing members unless ``head`` implements :class:`DetectorHead`."""
    members = ("num_classes", "background_slot", "half_export", "loss", "predict_raw", "predict_candidates",
               "enter_phase")
    missing = [m for m in members if not hasattr(head, m)]
    if missing:
        raise TypeError(f"{type(head).__name__} does not implement DetectorHead: missing {', '.join(missing)}")
