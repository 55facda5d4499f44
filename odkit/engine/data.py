"""The engine's view of the data pipeline: load + check the train/val splits (hold-out split when the
data set has none, undecodable images left out), build loaders."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odkit.data.splits import Holdout
from odkit.data.structures import AnnotationSet
from odkit.engine.config import TrainConfig
from odkit.engine.distributed import DistInfo
from odkit.errors import DataError

log = logging.getLogger(__name__)


HOLDOUT_FRACTION = 0.2


@dataclass
class DataPlan:
    """The checked train and val sets of a run and what was decided to get them.

    ``left_out``: per part (``train``, ``val``, ``all``), the image files that cannot be decoded and
    were left out; ``holdout``: the hold-out split when the data set has no val split (indices
    into ``source``, the checked set it was cut from); ``reports``: the data check text per part;
    ``val_from``: where the validation images come from, in words.
    """

    train: AnnotationSet
    val: AnnotationSet
    notes: list[str] = field(default_factory=list)
    left_out: dict[str, list[str]] = field(default_factory=dict)
    holdout: Holdout | None = None
    source: AnnotationSet | None = None
    reports: dict[str, str] = field(default_factory=dict)
    val_from: str = ""


def default_splits(data: str, fmt: str | None, train_split: str | None, val_split: str | None) -> tuple[str, str]:
    """``--train-split`` / ``--val-split`` defaults: ``train`` and ``val`` (ImageSets/Main names for VOC,
    keys of a YOLO data.yaml or odkit dataset YAML)."""
    return train_split or "train", val_split or "val"


def _checked(aset: AnnotationSet, label: str, strict: bool, report: bool) -> tuple[AnnotationSet, list[str], str]:
    """Check ``aset``; returns (the repaired set without undecodable images, their files, report text).

    Raises :class:`DataError` with the report on errors training cannot work around, or (``strict``)
    on any warning or undecodable image.
    """
    from odkit.data.validate import check_dataset

    rep = check_dataset(aset)
    rep.name = label
    if rep.has_other_errors or (strict and rep.exit_code(True) != 0):
        raise DataError(f"{label}: the data check found problems training cannot work around:\n{rep.text()}")
    left = rep.unusable_files
    if left and report:
        log.warning(
            "%s: %d image(s) cannot be decoded and are left out (--strict refuses instead): %s",
            label, len(left), ", ".join(left),
        )
    if report and rep.problems:
        log.info("data check of %s:\n%s", label, rep.text())
    return rep.usable(), left, rep.text()


def load_checked(data: str, split: str | None, fmt: str | None = None, strict: bool = False,
                 report: bool = True, what: str = "", **source: Any) -> AnnotationSet:
    """Load one split (``None``: every image of the data set) and run
    :func:`odkit.data.validate.check_dataset` on it.

    Safe repairs (documented by the validator) are applied and reported; images that cannot be
    decoded are left out and named in the log (``strict``: refused); a dataset with other errors
    that cannot be repaired raises :class:`DataError` carrying the report text. ``source``:
    ``image_root``, ``labels``, ``columns`` for :func:`odkit.data.formats.load_dataset`.
    """
    from odkit.data.formats import load_dataset, load_split

    if split is not None:
        aset = load_split(data, split, format=fmt, **source)
    else:
        aset = load_dataset(data, format=fmt, **source)
        aset.splits = {}
    return _checked(aset, f"{data} [{what or split or 'all'}]", strict, report)[0]


def _test_split(splits: list[str]) -> str | None:
    """The test split among ``splits`` (``test``, ``testing``, ``test2017``, ...), if any."""
    import re

    for s in splits:
        if re.sub(r"[-_]?\d+$", "", s.lower()) in ("test", "testing"):
            return s
    return None


def _overlap_check(plan: DataPlan, allow: bool, report: bool) -> None:
    """An image in both train and val (same file or same bytes) is a DataError naming the images
    (``allow``: a warning). In a hold-out split, the train twins of a held-out image join it in
    validation instead."""
    from odkit.data.checks.splits import overlap_pairs, split_overlaps

    def files(a: AnnotationSet) -> list[str]:
        return [str(a.path(i)) for i in range(len(a))]

    members = {"train": files(plan.train), "val": files(plan.val)}
    if plan.holdout is not None and plan.source is not None:
        val_files = set(members["val"])
        twins = {f for pair in overlap_pairs(members) for f in pair[:2] if f not in val_files}
        if not twins:
            return
        src, h = plan.source, plan.holdout
        move = np.asarray([i for i in h.train if str(src.path(int(i))) in twins], np.int64)
        h.train = np.setdiff1d(h.train, move)
        h.val = np.union1d(h.val, move)
        plan.train, plan.val = src.select_images(h.train), src.select_images(h.val)
        plan.train.splits, plan.val.splits = {}, {}
        plan.notes.append(f"{len(move)} image(s) with the same bytes as a held-out image moved to validation with it")
        if report:
            log.warning("%s", plan.notes[-1])
        return
    found = split_overlaps(members, allow=True)
    if not found:
        return
    shown = "\n".join(f"  {p.file}: {p.message}" for p in found[:10])
    more = f"\n  ... and {len(found) - 10} more" if len(found) > 10 else ""
    if not allow:
        raise DataError(f"{len(found)} image(s) are in both the train and the val data (a leak: validation would "
                        f"score images the model trained on); --allow-overlap to train anyway:\n{shown}{more}")
    plan.notes.append(f"--allow-overlap: {len(found)} image(s) are in both train and val")
    if report:
        log.warning("%s:\n%s%s", plan.notes[-1], shown, more)


def prepare_data(cfg: TrainConfig, report: bool = True) -> DataPlan:
    """The checked train and val sets named by ``cfg.data`` (+ splits, format, column spec).

    The val split is ``--val-split``, else the data set's ``val`` / ``valid`` / ``validation``
    split, else its ``test`` split (said in the log and ``DataPlan.val_from``). A data set with none
    of them (no splits at all, such as one COCO json or a flat folder, or a train split only) gets a
    hold-out split: :func:`odkit.data.splits.holdout_split` of the train images (20 %, stratified by
    class, seeded with ``cfg.seed``), announced in the log. Train and val must not share images
    (same file or same bytes) unless ``cfg.allow_overlap``.
    """
    from odkit.data.formats import list_splits, load_dataset, load_split
    from odkit.data.splits import find_val_split, holdout_split

    columns = cfg.column_spec() if hasattr(cfg, "column_spec") else None
    src_kw = {"format": cfg.format, "columns": columns}
    splits = list_splits(cfg.data, cfg.format, columns=columns)
    tr = cfg.train_split or "train"
    va = cfg.val_split or find_val_split(splits)
    plan_notes: list[str] = []
    val_from = f"split {va!r}" if va is not None else ""
    if va is None and tr in splits and _test_split(splits):
        va = _test_split(splits)
        val_from = f"split {va!r} (the data set has no val split)"
        plan_notes.append(f"{cfg.data}: no val split; the {va!r} split is used for validation")
        if report:
            log.warning("%s", plan_notes[-1])
    if va is not None:
        train, left_tr, rep_tr = _checked(load_split(cfg.data, tr, **src_kw), f"{cfg.data} [train]",
                                          cfg.strict_data, report)
        val, left_va, rep_va = _checked(load_split(cfg.data, va, **src_kw), f"{cfg.data} [{va}]",
                                        cfg.strict_data, report)
        plan = DataPlan(train, val, plan_notes, {"train": left_tr, va: left_va},
                        reports={"train": rep_tr, va: rep_va}, val_from=val_from)
    else:
        if splits and tr not in splits:
            raise DataError(
                f"{cfg.data}: no {tr!r} split (splits: {', '.join(splits)}); name one with --train-split"
            )
        src = load_split(cfg.data, tr, **src_kw) if tr in splits else load_dataset(cfg.data, **src_kw)
        what = f"{cfg.data} [{tr if tr in splits else 'all'}]"
        whole, left, rep = _checked(src, what, cfg.strict_data, report)
        h = holdout_split(whole, HOLDOUT_FRACTION, cfg.seed)
        train, val = whole.select_images(h.train), whole.select_images(h.val)
        train.splits, val.splits = {}, {}
        why = "it defines no splits" if not splits else f"it has no val split (splits: {', '.join(splits)})"
        plan_notes.append(f"{cfg.data}: {why}; {h.describe(len(whole))}; written to holdout.json in the run directory")
        if report:
            log.warning("%s", plan_notes[-1])
        plan = DataPlan(train, val, plan_notes, {"train" if splits else "all": left}, h, whole, {"all": rep},
                        val_from=f"hold-out {h.fraction:.0%} of {'train' if splits else 'the data'} (holdout.json)")
    _overlap_check(plan, bool(getattr(cfg, "allow_overlap", False)), report)
    p = Path(cfg.data)
    if p.is_file() and p.suffix.lower() == ".json" and va is not None and report:
        log.warning("%s is a single COCO json: it is used for both training and validation "
                    "(use an odkit dataset YAML with separate train/val parts)", p)
    if list(plan.train.class_names) != list(plan.val.class_names):
        raise DataError(
            f"{cfg.data}: train classes {plan.train.class_names} differ from val classes {plan.val.class_names}"
        )
    if len(plan.train) == 0:
        raise DataError(f"{cfg.data}: the train split {tr!r} has no usable images")
    if len(plan.val) == 0:
        raise DataError(f"{cfg.data}: the val split {va!r} has no usable images")
    for part, files in plan.left_out.items():
        if files:
            plan.notes.append(f"{len(files)} image(s) of {part} left out (cannot be decoded): {', '.join(files)}")
    if getattr(cfg, "slice", None):
        plan.train = sliced_train(plan.train, int(cfg.slice), float(cfg.slice_overlap), plan.notes, report,
                                  empty_fraction=float(getattr(cfg, "slice_empty", 1.0)), seed=int(cfg.seed))
    return plan


def sliced_train(train: AnnotationSet, size: int, overlap: float, notes: list[str], report: bool = True,
                 empty_fraction: float = 1.0, seed: int = 0) -> AnnotationSet:
    """``train`` cut into tiles (:func:`odkit.data.tiles.slice_set`; ``empty_fraction`` of the tiles
    without boxes kept) in a temporary folder removed when the process ends; the slicing report goes
    to ``notes`` (and the log)."""
    import atexit
    import shutil
    import tempfile

    from odkit.data.tiles import slice_set

    folder = Path(tempfile.mkdtemp(prefix="odkit-tiles-"))
    atexit.register(shutil.rmtree, folder, True)
    tiles, rep = slice_set(train, folder, size=size, overlap=overlap, empty_fraction=empty_fraction, seed=seed)
    notes.append(f"train images sliced into tiles of {size} px, overlap {overlap}:\n{rep.text()}")
    if report:
        log.info("%s", notes[-1])
    if not len(tiles):
        raise DataError(f"slicing the {len(train)} train image(s) into {size} px tiles gave no tile")
    tiles.splits = {}
    return tiles


def load_train_val(cfg: TrainConfig, report: bool = True) -> tuple[AnnotationSet, AnnotationSet]:
    """The checked train and val sets named by ``cfg.data`` (see :func:`prepare_data`)."""
    plan = prepare_data(cfg, report)
    return plan.train, plan.val


def write_data_notes(run_dir: Path, plan: DataPlan) -> None:
    """Write ``data_report.txt`` (left-out images, hold-out split, data check per part) and, for a
    hold-out split, ``holdout.json`` (seed, fraction, train and val image files) into the run directory."""
    lines = ["# data of this run", ""]
    lines += plan.notes or ["no images left out; train and val splits from the data set"]
    for part, text in plan.reports.items():
        lines += ["", f"## data check ({part})", text]
    (run_dir / "data_report.txt").write_text("\n".join(lines) + "\n")
    if plan.holdout is not None and plan.source is not None:
        src = plan.source
        doc = {
            "fraction": plan.holdout.fraction,
            "seed": plan.holdout.seed,
            "stratified_by": "rarest class of each image",
            "train": [str(src.path(int(i))) for i in plan.holdout.train],
            "val": [str(src.path(int(i))) for i in plan.holdout.val],
        }
        (run_dir / "holdout.json").write_text(json.dumps(doc, indent=1) + "\n")


def augment_config(cfg: TrainConfig) -> Any:
    """The training :class:`~odkit.data.transforms.AugmentConfig` (YOLOX-nano recipe + overrides)."""
    from odkit.data.transforms import AugmentConfig

    return AugmentConfig.light(mosaic_prob=cfg.mosaic, mixup_prob=cfg.mixup, close_mosaic=0, **cfg.aug)


def train_transform(cfg: TrainConfig) -> Any:
    """The training pipeline of ``cfg.model``: ``TrainAugment`` ending with the model's resize mode
    (letterbox or plain resize), or SSD's (``odkit.data.ssd_aug``) when the model's recipe says
    ``augment: ssd``."""
    from odkit.data.transforms import TrainAugment
    from odkit.models import zoo

    s = zoo.MODELS.get(cfg.model)
    resize = s.resize if s is not None else "letterbox"
    if getattr(cfg, "augment", "yolox") == "ssd":
        from odkit.data.ssd_aug import SSDAugment, SSDAugmentConfig

        return SSDAugment(SSDAugmentConfig.from_dict(cfg.aug), resize=resize)
    return TrainAugment(augment_config(cfg), resize=resize)


AUTO_CACHE_GB = 4.0


def available_memory_gb() -> float | None:
    """Memory the system can give without swapping (``MemAvailable`` of /proc/meminfo), in GB;
    None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1024**3
    except (AttributeError, OSError, ValueError):
        return None


def auto_cache_gb(workers: int, processes: int = 1) -> float:
    """The RAM cache budget of ``--cache`` left unset, in GB per training process: up to
    ``AUTO_CACHE_GB`` and a quarter of the available memory shared by the ``processes`` of this
    machine. 0 (no cache) where the memory is unknown or where loader workers would each get their
    own copy of the cache (a start method other than fork)."""
    import sys

    import torch.multiprocessing as mp

    avail = available_memory_gb()
    # the start method the loader's workers will use (Python's default where none was set)
    method = mp.get_start_method(allow_none=True) or (
        "fork" if sys.platform.startswith("linux") and sys.version_info < (3, 14) else "spawn")
    if avail is None or (workers > 0 and method != "fork"):
        return 0.0
    return max(0.0, min(AUTO_CACHE_GB, avail / 4) / max(processes, 1))


def train_loader(aset: AnnotationSet, cfg: TrainConfig, no_aug: bool, workers: int, dist: DistInfo,
                 masks: bool = False) -> Any:
    """Shuffled training loader with the model's training pipeline (mosaic/affine off when ``no_aug``);
    ``masks``: targets carry the instance masks (``DetectionDataset(masks=True)``)."""
    from odkit.data.dataset import DetectionDataset
    from odkit.data.loader import build_loader

    auto = cfg.cache is None
    gb = auto_cache_gb(workers, dist.local_world_size) if auto else float(cfg.cache)
    ds = DetectionDataset(aset, cfg.img_size, transforms=train_transform(cfg), cache_ram_gb=gb, seed=cfg.seed,
                          cache_auto=auto, masks=masks)
    if no_aug:
        ds.close_mosaic()
    per_rank = len(aset) // max(dist.world_size, 1)
    loader = build_loader(
        ds, cfg.batch, shuffle=True, workers=workers, seed=cfg.seed,
        multiscale=multiscale_of(cfg),
        drop_last=per_rank >= cfg.batch, distributed=dist.enabled, persistent_workers=workers > 0,
        channels_last=bool(getattr(cfg, "channels_last", False)),
    )
    return loader


def multiscale_of(cfg: TrainConfig) -> Any:
    """The run's :class:`~odkit.data.loader.MultiScale` (``--multiscale-range``, else ``--img`` +/- 96 px),
    or ``None`` without ``--multiscale``."""
    from odkit.data.loader import MultiScale

    if not cfg.multiscale:
        return None
    rng = getattr(cfg, "multiscale_range", None)
    return MultiScale(int(rng[0]), int(rng[1])) if rng else MultiScale.around(cfg.img_size)


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


def val_loader(aset: AnnotationSet, img_size: int, batch: int, workers: int, resize: str = "letterbox",
               masks: bool = False) -> Any:
    """Ordered, letterboxed (``resize="stretch"``: plainly resized) loader over ``aset`` (no augmentation);
    ``masks``: targets carry the instance masks."""
    from odkit.data.dataset import DetectionDataset
    from odkit.data.loader import build_loader
    from odkit.data.transforms import ValTransform

    ds = DetectionDataset(aset, img_size, transforms=ValTransform(img_size, mode=resize), masks=masks)
    return build_loader(ds, batch, shuffle=False, workers=workers, seed=0, drop_last=False,
                        persistent_workers=False)


def unpack(batch: Any) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """``(images, targets, metas)`` from a collated batch."""
    images, targets, metas = batch
    return images, targets, metas
