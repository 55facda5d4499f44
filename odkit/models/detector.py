"""``Detector``: preprocess -> backbone -> neck -> head -> postprocess."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.postprocess import postprocess

# Input normalisation applied inside the model to RGB images in [0, 1]: (x - MEAN) / STD with the
# ImageNet statistics, so exported models take plain [0, 1] RGB input.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class Detector(nn.Module):
    """A one-stage detector made of a backbone, a neck and a head owning its loss and decoding.

    - ``model(images, targets)`` -> loss dict (targets: list of ``{"boxes" [N,4] xyxy input pixels,
      "labels" [N] int64}``); keys ``loss``, ``loss_iou``, ``loss_obj``, ``loss_cls``, ``loss_l1``, ``num_fg``.
    - ``model(images)`` (no targets, eval mode) -> :meth:`forward_export` output.
    - :meth:`predict` -> list of prediction dicts (NMS applied).

    ``images`` are ``[B, 3, H, W]`` float RGB in [0, 1] with ``H`` and ``W`` multiples of ``stride`` (32).
    ``config`` holds what :func:`odkit.models.zoo.from_config` needs to rebuild the model.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        config: dict[str, Any] | None = None,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.config: dict[str, Any] = dict(config or {})
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.stride = max(head.strides)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``images`` is ``[B, 3, H, W]`` float with H, W multiples of the stride."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"images must be a float tensor [B, 3, H, W] (RGB in [0, 1]), got {shape}")
        if not images.is_floating_point():
            raise ConfigError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")
        h, w = images.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ConfigError(f"image size {h}x{w} must be a multiple of the model stride {self.stride}")

    def raw_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Head outputs (per level) of normalised images."""
        x = (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)
        return self.head(self.neck(self.backbone(x)))

    def forward(
        self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]] | None = None
    ) -> Any:
        if targets is not None:
            self.check_images(images)
            return self.head.loss(self.raw_outputs(images), targets)
        if self.training:
            raise ConfigError("Detector in training mode needs targets; call model.eval() for inference")
        return self.forward_export(images)

    def forward_export(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded outputs without NMS: boxes ``[B, N, 4]`` xyxy and class scores ``[B, N, C]``
        (objectness x class probability), both in network-input coordinates. Free of data-dependent
        control flow (ONNX-exportable)."""
        return self.head.decode(self.raw_outputs(images))

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        metas: Sequence[Mapping[str, Any]] | None = None,
        conf_thr: float = 0.001,
        iou_thr: float = 0.65,
        max_det: int = 300,
        pre_topk: int = 1000,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``{"boxes" [K,4] xyxy, "scores" [K], "labels" [K] int64}`` in original
        image coordinates when letterbox ``metas`` are given, else in input coordinates. Runs in eval
        mode (the previous mode is restored)."""
        self.check_images(images)
        was_training = self.training
        self.eval()
        try:
            boxes, scores = self.forward_export(images)
        finally:
            self.train(was_training)
        return postprocess(boxes, scores, metas, conf_thr, iou_thr, max_det, pre_topk)
