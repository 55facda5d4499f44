"""``Detector``: preprocess -> backbone -> neck -> head -> postprocess."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.heads.protocol import check_head
from odkit.models.postprocess import POSTPROCESS_DEFAULTS, paste_detection_masks, postprocess_candidates

# Input normalisation applied inside the model to RGB images in [0, 1]: (x - MEAN) / STD with the
# ImageNet statistics, so exported models take plain [0, 1] RGB input.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class Detector(nn.Module):
    """A detector made of a backbone, a neck and a head that owns its priors, loss and decoding.

    The head implements :class:`~odkit.models.heads.protocol.DetectorHead` (checked here); the
    Detector calls nothing else on it.

    - ``model(images, targets)`` -> loss dict (targets: list of ``{"boxes" [N,4] xyxy input pixels,
      "labels" [N] int64, optional "iscrowd" [N]}``); ``loss`` is the total, the other keys are the
      head's terms.
    - ``model(images)`` (no targets, eval mode) -> :meth:`forward_export` output.
    - :meth:`predict` -> list of prediction dicts (per-level filtering in the head, then NMS).

    ``images`` are ``[B, 3, H, W]`` float RGB in [0, 1] with ``H`` and ``W`` multiples of
    ``size_divisor`` (from the backbone/neck, usually 32; not the largest head stride). The model
    normalises internally: optional RGB -> BGR swap (``input_bgr``), then ``(x - pixel_mean) /
    pixel_std`` (``pixel_std = 1/255`` and mean 0 turns [0, 1] input into 0-255 values).
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
        input_bgr: bool = False,
        size_divisor: int | None = None,
        postprocess: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_head(head)
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.config: dict[str, Any] = dict(config or {})
        self.register_buffer("pixel_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.ones(1, 3, 1, 1), persistent=False)
        self.set_input_format(pixel_mean, pixel_std, input_bgr)
        if size_divisor is None:
            size_divisor = int(getattr(neck, "size_divisor", 0) or getattr(backbone, "size_divisor", 0) or 32)
        self.size_divisor = int(size_divisor)
        from odkit.arguments import renamed_keywords

        self.postprocess_defaults: dict[str, Any] = {
            **POSTPROCESS_DEFAULTS, **renamed_keywords(dict(postprocess or {}), "Detector(postprocess=...)")}

    def set_input_format(self, pixel_mean: Sequence[float], pixel_std: Sequence[float], input_bgr: bool) -> None:
        """Set the in-model normalisation (values in the [0, 1] input scale) and channel order."""
        mean = torch.tensor([float(v) for v in pixel_mean], dtype=torch.float32)
        std = torch.tensor([float(v) for v in pixel_std], dtype=torch.float32)
        if mean.numel() != 3 or std.numel() != 3 or bool((std <= 0).any()):
            raise ConfigError(f"pixel_mean / pixel_std need 3 values each (std > 0), got {pixel_mean}, {pixel_std}")
        self.pixel_mean.copy_(mean.view(1, 3, 1, 1))
        self.pixel_std.copy_(std.view(1, 3, 1, 1))
        self.input_bgr = bool(input_bgr)
        self.zero_mean = bool((mean == 0).all())  # x - 0 is x exactly: the pass is skipped

    @property
    def stride(self) -> int:
        """Alias of :attr:`size_divisor` (what input sides must be multiples of)."""
        return self.size_divisor

    @property
    def num_classes(self) -> int:
        """Object classes (a softmax head's background logit not counted)."""
        return self.head.num_classes

    @property
    def has_masks(self) -> bool:
        """Whether the head predicts instance masks (Mask R-CNN): ``predict`` then adds ``"masks"``."""
        return bool(getattr(self.head, "has_masks", False))

    @property
    def num_labels(self) -> int:
        """Labels the model predicts into: ``num_classes``, plus 1 with ``background_slot`` (label 0
        the background, never predicted; torchvision's COCO numbering)."""
        from odkit.models.heads.protocol import num_labels

        return num_labels(self.head)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``images`` is ``[B, 3, H, W]`` float with H, W multiples of
        the size divisor."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"images must be a float tensor [B, 3, H, W] (RGB in [0, 1]), got {shape}")
        if not images.is_floating_point():
            raise ConfigError(f"images must be float RGB in [0, 1], got dtype {images.dtype}")
        h, w = images.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ConfigError(f"image size {h}x{w} must be a multiple of the model's size divisor {self.size_divisor}")

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB images -> the network's input (channel order and normalisation applied)."""
        if self.input_bgr:
            images = images.flip(1)
        if not getattr(self, "zero_mean", False):
            images = images - self.pixel_mean.to(images.dtype)
        return images / self.pixel_std.to(images.dtype)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Neck feature maps (finest first) of [0, 1] RGB images."""
        return self.neck(self.backbone(self.normalize(images)))

    def forward(
        self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]] | None = None
    ) -> Any:
        if targets is not None:
            self.check_images(images)
            return self.head.loss(self.features(images), targets, tuple(images.shape[-2:]))
        if self.training:
            raise ConfigError("Detector in training mode needs targets; call model.eval() for inference")
        return self.forward_export(images)

    def forward_export(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded outputs without NMS: boxes ``[B, N, 4]`` (or per class ``[B, N, C, 4]``) xyxy and
        class scores ``[B, N, C]``, both in network-input coordinates. Free of data-dependent
        control flow (ONNX-exportable)."""
        return self.head.predict_raw(self.features(images), tuple(images.shape[-2:]))

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        metas: Sequence[Mapping[str, Any]] | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        pre_topk: int | None = None,
        proposals: Sequence[torch.Tensor] | None = None,
        *,
        conf_thr: float | None = None,
        iou_thr: float | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``{"boxes" [K,4] xyxy, "scores" [K], "labels" [K] int64}`` in original
        image coordinates when letterbox ``metas`` are given, else in input coordinates. Models with
        masks (:attr:`has_masks`) add ``"masks"``: float probabilities ``[K, 1, H, W]`` pasted into the
        original image (into the input without ``metas``), as torchvision's Mask R-CNN returns them.

        Settings left ``None`` take the model's defaults (``postprocess_defaults``, the reference
        implementation's values for zoo models): ``conf`` score threshold, ``pre_topk`` candidates
        per pyramid level, ``iou`` class-wise NMS IoU, ``max_det`` detections per image
        (``conf_thr`` / ``iou_thr``: deprecated names of ``conf`` / ``iou``). Runs in
        eval mode (the previous mode is restored). ``proposals`` (two-stage models only): per image
        ``[K, 4]`` xyxy boxes in input pixels that replace the RPN's (Fast R-CNN on given boxes)."""
        from odkit.arguments import renamed_keywords

        if conf_thr is not None or iou_thr is not None:
            kw = renamed_keywords({"conf": conf, "iou": iou, "conf_thr": conf_thr, "iou_thr": iou_thr},
                                  "Detector.predict")
            conf, iou = kw["conf"], kw["iou"]
        self.check_images(images)
        d = self.postprocess_defaults
        conf = d["conf"] if conf is None else conf
        iou = d["iou"] if iou is None else iou
        max_det = d["max_det"] if max_det is None else max_det
        pre_topk = d["pre_topk"] if pre_topk is None else pre_topk
        was_training = self.training
        if was_training:
            self.eval()
        try:
            feats = self.features(images)
            extra = {} if proposals is None else {"proposals": proposals}  # two-stage heads: Fast R-CNN on given boxes
            input_hw = tuple(images.shape[-2:])
            cands = self.head.predict_candidates(feats, input_hw, float(conf), int(pre_topk), **extra)
            if not self.has_masks:
                return postprocess_candidates(cands, metas, float(iou), int(max_det))
            dets = postprocess_candidates(cands, None, float(iou), int(max_det))
            probs = self.head.predict_masks(feats, [d["boxes"] for d in dets], [d["labels"] for d in dets])
            return paste_detection_masks(dets, probs, metas, input_hw)
        finally:
            if was_training:
                self.train(True)
