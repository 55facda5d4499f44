"""The engine's view of the data pipeline: load + check the train/val splits, build loaders."""

from __future__ import annotations

import logging
from typing import Any

import torch

from odkit.data.structures import AnnotationSet
from odkit.engine.config import TrainConfig
from odkit.engine.distributed import DistInfo
from odkit.errors import DataError

log = logging.getLogger(__name__)


def default_splits(data: str, fmt: str | None, train_split: str | None, val_split: str | None) -> tuple[str, str]:
    """``--train-split`` / ``--val-split`` defaults: ``train`` and ``val`` (ImageSets/Main names for VOC,
    keys of a YOLO data.yaml or odkit dataset YAML)."""
    return train_split or "train", val_split or "val"


def load_checked(data: str, split: str | None, fmt: str | None = None, strict: bool = False,
                 report: bool = True, what: str = "") -> AnnotationSet:
    """Load one split and run :func:`odkit.data.validate.check_dataset` on it.

    Safe repairs (documented by the validator) are applied and reported; a dataset with errors
    that cannot be repaired raises :class:`DataError` carrying the report text.
    """
    from odkit.data.formats import load_split
    from odkit.data.validate import check_dataset

    aset = load_split(data, split, format=fmt) if split is not None else _load_any(data, fmt)
    rep = check_dataset(aset)
    label = f"{data} [{what or split}]"
    rep.name = label
    if rep.has_errors or (strict and rep.exit_code(True) != 0):
        raise DataError(f"{label}: the data check found problems training cannot work around:\n{rep.text()}")
    if report and rep.problems:
        log.info("data check of %s:\n%s", label, rep.text())
    return rep.dataset if rep.dataset is not None else aset


def _load_any(data: str, fmt: str | None) -> AnnotationSet:
    from odkit.data.formats import load_dataset

    return load_dataset(data, format=fmt)


def load_train_val(cfg: TrainConfig, report: bool = True) -> tuple[AnnotationSet, AnnotationSet]:
    """The checked train and val sets named by ``cfg.data`` (+ splits, format)."""
    from pathlib import Path

    tr, va = default_splits(cfg.data, cfg.format, cfg.train_split, cfg.val_split)
    p = Path(cfg.data)
    if p.is_file() and p.suffix.lower() == ".json" and report:
        log.warning("%s is a single COCO json: it is used for both training and validation "
                    "(use an odkit dataset YAML with separate train/val parts)", p)
    train = load_checked(cfg.data, tr, cfg.format, cfg.strict_data, report, "train")
    val = load_checked(cfg.data, va, cfg.format, cfg.strict_data, report, "val")
    if list(train.class_names) != list(val.class_names):
        raise DataError(
            f"{cfg.data}: train classes {train.class_names} differ from val classes {val.class_names}"
        )
    if len(train) == 0:
        raise DataError(f"{cfg.data}: the train split {tr!r} has no images")
    if len(val) == 0:
        raise DataError(f"{cfg.data}: the val split {va!r} has no images")
    return train, val


def augment_config(cfg: TrainConfig) -> Any:
    """The training :class:`~odkit.data.transforms.AugmentConfig` (YOLOX-nano recipe + overrides)."""
    from odkit.data.transforms import AugmentConfig

    return AugmentConfig.light(mosaic_prob=cfg.mosaic, mixup_prob=cfg.mixup, close_mosaic=0, **cfg.aug)


def train_loader(aset: AnnotationSet, cfg: TrainConfig, no_aug: bool, workers: int, dist: DistInfo) -> Any:
    """Shuffled training loader with ``TrainAugment`` (mosaic/affine off when ``no_aug``)."""
    from odkit.data.dataset import DetectionDataset
    from odkit.data.loader import MultiScale, build_loader
    from odkit.data.transforms import TrainAugment

    ds = DetectionDataset(aset, cfg.img, transforms=TrainAugment(augment_config(cfg)), cache_ram_gb=cfg.cache, seed=cfg.seed)
    if no_aug:
        ds.close_mosaic()
    per_rank = len(aset) // max(dist.world_size, 1)
    loader = build_loader(
        ds, cfg.batch, shuffle=True, workers=workers, seed=cfg.seed,
        multiscale=MultiScale.around(cfg.img) if cfg.multiscale else None,
        drop_last=per_rank >= cfg.batch, distributed=dist.enabled, persistent_workers=workers > 0,
    )
    return loader


def close_mosaic(loader: Any) -> None:
    """Turn strong augmentation (mosaic, mixup, affine) off for the rest of training."""
    ds = loader.dataset
    if hasattr(ds, "close_mosaic"):
        ds.close_mosaic()


def set_epoch(loader: Any, epoch: int) -> None:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)


def loader_generator(loader: Any) -> torch.Generator | None:
    return getattr(loader, "generator", None)


def val_loader(aset: AnnotationSet, img_size: int, batch: int, workers: int) -> Any:
    """Ordered, letterboxed loader over ``aset`` (no augmentation)."""
    from odkit.data.dataset import DetectionDataset
    from odkit.data.loader import build_loader
    from odkit.data.transforms import ValTransform

    ds = DetectionDataset(aset, img_size, transforms=ValTransform(img_size))
    return build_loader(ds, batch, shuffle=False, workers=workers, seed=0, drop_last=False,
                        persistent_workers=False)


def unpack(batch: Any) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """``(images, targets, metas)`` from a collated batch."""
    images, targets, metas = batch
    return images, targets, metas
