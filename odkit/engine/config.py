"""Training configuration: one dataclass whose fields are the ``odkit train`` flags.

Each field carries its help text (and, where the flag differs from the field, its command-line
spelling) in ``metadata``; :mod:`odkit.cli.train` builds the parser from these fields. Fields marked
``recipe`` are the ones a model's training recipe and the data/budget rule of
:mod:`odkit.engine.recipe` may set when the user does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from odkit.arguments import RENAMED_TRAIN, check_value, renamed_keywords
from odkit.errors import ConfigError

SCHEDULES = ("cos", "linear", "step")
OPTIMIZERS = ("sgd", "adamw")
WEIGHT_SOURCES = ("yolox", "torchvision", "darknet", "effdet")


def _opt(default: Any = None, help: str = "", *, factory: Any = None, recipe: bool = False, **cli: Any) -> Any:
    """A dataclass field with its command-line description in ``metadata``.

    ``cli`` may hold ``flags`` (option strings, default ``--field-name``), ``old_flags`` (spellings of
    earlier versions, accepted with a warning and not shown in the help), ``metavar``, ``choices``,
    ``nargs``/``const`` and ``cli=False`` (no flag)."""
    meta = {"help": help, "recipe": recipe, **cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def input_divisor(model: str) -> int:
    """What ``--img`` must be a multiple of for zoo model ``model`` (32 for unknown names)."""
    from odkit.models import zoo

    s = zoo.MODELS.get(model)
    return int(s.size_divisor) if s is not None else 32


@dataclass
class TrainConfig:
    """Everything a training run needs. Units: ``img_size`` pixels (``--img``) (square network input), ``time``
    minutes of wall clock, ``lr`` per iteration at the full batch (``None``: 0.01 * batch / 64 for
    SGD, 0.002 * batch / 64 for AdamW), ``warmup_epochs`` epochs (fractions allowed).

    A ``TrainConfig`` is complete: every value in it is used as it is. ``odkit.train(**kwargs)`` and
    ``odkit train`` instead resolve the values the user did not give from the model's recipe and the
    data (see :func:`odkit.engine.recipe.resolve`)."""

    data: str = _opt("", "dataset: COCO json, VOC root, YOLO data.yaml or odkit dataset YAML "
                         "(not needed with --resume)", path="path")
    model: str = _opt("yolox-nano", "model name from the zoo (see `odkit info`); with --weights of odkit "
                                    "weights, the weights' model")
    img_size: int | None = _opt(None, "square network input size in pixels, multiple of the model's size "
                                      "divisor (32; SSD300: 1); default: the model's", recipe=True, check="size",
                                flags=["--img"], metavar="IMG")
    epochs: int = _opt(100, "number of epochs; with --time, the upper bound of the fitted plan", recipe=True,
                        check="count")
    batch: int = _opt(16, "images per batch per process", check="count")
    time: float | None = _opt(
        None, "wall-clock budget in minutes: after the first epoch the number of epochs is fitted to the "
              "measured epoch time (capped by --epochs) and the lr schedule, EMA and the no-aug tail are "
              "re-planned; training also stops early if the next epoch would overrun", metavar="MIN",
        check="positive")
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto (CUDA if available)")
    workers: int | None = _opt(None, "data loader worker processes (default on CPU: 0 up to 2 cores, else a "
                                     "quarter of the cores up to 4; on CUDA: cores-1 up to 8; 0 = main process)",
                                check="count0")
    project: str = _opt("runs", "parent directory of run directories")
    name: str = _opt("train", "run name: outputs go to <project>/<name>, auto-incremented if it exists")
    exist_ok: bool = _opt(False, "reuse <project>/<name> if it exists instead of incrementing")
    resume: str | None = _opt(
        None, "continue a run exactly from its checkpoint.pt: a run directory, a checkpoint path, or nothing "
              "for the most recent run under --project; the run's saved settings are used (--device/--workers "
              "may change)", nargs="?", const="last", metavar="RUN", path="resume")
    weights: str | None = _opt(
        None, "start from these weights (fine-tuning): odkit .safetensors (+ .json sidecar), or a foreign "
              "checkpoint with --from; layers whose shape depends on the class count are re-initialised "
              "when the class count differs, the rest is kept", metavar="W", path="weights")
    weights_from: str | None = _opt(
        None, "format of --weights / --pretrained-backbone when it is not odkit's: yolox (official YOLOX "
              "checkpoint), torchvision (state dict), darknet (.weights of yolov2/yolov2-tiny/yolov3/"
              "yolov3-tiny, or a backbone prefix such as darknet53.conv.74) or effdet (effdet EfficientDet or "
              "timm EfficientNet state dict); pickles are read with weights_only=True",
        flags=["--from"], choices=list(WEIGHT_SOURCES))
    pretrained_backbone: str | None = _opt(
        None, "load backbone-only weights (odkit .safetensors, or --from torchvision / darknet / effdet) before "
              "training",
        metavar="FILE", path="path")
    freeze: str | None = _opt(
        None, "parameters not to train: 'backbone' (all of it), 'backbone:N' (stem + first N stages), "
              "'neck'; comma-separated; frozen parts also keep their batch-norm statistics", metavar="PARTS")
    freeze_stages: int | None = _opt(None, "same as --freeze backbone:N", metavar="N", check="count0")
    amp: bool = _opt(False, "mixed precision: fp16 autocast + grad scaler on CUDA, bf16 autocast on CPU (slow "
                            "on CPUs without AVX512-BF16/AMX, such as AVX2-only ones; a warning says so)")
    optimizer: str = _opt("sgd", "sgd (momentum, Nesterov) or adamw; weight decay skips norms and biases",
                          choices=list(OPTIMIZERS), recipe=True)
    lr: float | None = _opt(None, "peak learning rate (base: 0.01*batch/64 for SGD, 0.002*batch/64 for AdamW)",
                            recipe=True, check="positive")
    weight_decay: float | None = _opt(None, "weight decay (base: 5e-4 SGD, 0.05 AdamW)", recipe=True,
                                      check="nonneg")
    momentum: float = _opt(0.9, "SGD momentum / AdamW beta1", recipe=True, check="unit")
    schedule: str = _opt("cos", "lr decay after warm-up: cos, linear, or step (x lr_gamma at each of "
                                "--lr-steps)", choices=list(SCHEDULES), recipe=True)
    lr_steps: list[float] = _opt(factory=lambda: [0.667, 0.917], recipe=True, metavar="FRAC",
                                 help="step schedule: fractions of the run at which the lr is multiplied "
                                      "by --lr-gamma", check="fraction")
    lr_gamma: float = _opt(0.1, "step schedule: lr factor at each step", recipe=True, check="unit")
    min_lr_ratio: float = _opt(0.05, "cos/linear: final lr as a fraction of the peak", recipe=True, check="unit")
    warmup_epochs: float = _opt(3.0, "linear warm-up length in epochs (at most 20%% of a run without --time)",
                                recipe=True, check="nonneg")
    seed: int = _opt(0, "random seed (sample order, augmentation, init)", check="count0")
    val_interval: int = _opt(1, "validate every N epochs (and always after the last)", recipe=True, check="count")
    no_aug_epochs: int = _opt(
        15, "last N epochs without mosaic/affine/mixup, in the head's 'no_aug' phase (YOLOX: L1 loss on); "
            "with --time at most a third of the fitted epochs", recipe=True, check="count0")
    train_split: str | None = _opt(None, "train split: VOC ImageSets/Main name, YOLO / odkit YAML key "
                                         "(default train)")
    val_split: str | None = _opt(None, "val split, as --train-split (default val)")
    format: str | None = _opt(None, "dataset format (default: detected; see `odkit data check --help`)")
    columns: str | None = _opt(None, 'text boxes: the columns of each line, e.g. "file,x,y,w,h,label" (see '
                                     "`odkit data check --help`)", metavar="SPEC")
    delimiter: str | None = _opt(None, "text boxes: column delimiter (default: comma if the line has one, else "
                                       "whitespace)", metavar="D")
    one_based: bool = _opt(False, "text boxes: the first pixel is 1 and x2/y2 are the last pixel inside the box")
    allow_overlap: bool = _opt(False, "train on train and val splits that share images (same file or same "
                                      "bytes): a warning instead of an error")
    deterministic: bool = _opt(False, "torch.use_deterministic_algorithms + fixed seeds + workers 0: a resumed "
                                      "run then ends with exactly the weights of an uninterrupted one (CPU)")
    channels_last: bool = _opt(True, "channels_last memory format")
    compile: bool = _opt(False, "torch.compile the network (backbone, neck, head) for training steps; needs a C "
                                "compiler, else training runs eager with a warning")
    ema: bool = _opt(True, "exponential moving average of the weights (evaluated and saved)")
    ema_decay: float = _opt(0.9998, "EMA decay (lowered automatically for short runs)", check="unit")
    ema_tau: float = _opt(2000.0, "EMA warm-up ramp in iterations (shortened for short runs)", check="positive")
    clip_grad: float = _opt(10.0, "gradient-norm clip (0 = off)", recipe=True, check="nonneg")
    max_bad_steps: int = _opt(5, "abort after this many consecutive NaN/inf losses", check="count")
    mosaic: float = _opt(1.0, "mosaic probability", recipe=True, check="unit")
    mixup: float = _opt(0.0, "mixup probability", recipe=True, check="unit")
    multiscale: bool = _opt(False, "multi-scale training: input size +/- 3 x 32 px every 10 batches")
    multiscale_range: list[int] | None = _opt(
        None, "multi-scale training between these two input sizes in pixels, in steps of 32, every 10 batches "
              "(YOLOv2's: 320 608); implies --multiscale", metavar="PX", check="size", recipe=True)
    slice: int | None = _opt(None, "train on tiles: the train images cut into squares of PX pixels overlapping by "
                                   "--slice-overlap (cut boxes kept when >= 25 %% visible; `odkit data slice`), "
                                   "written to a temporary folder; validation stays on whole images",
                             metavar="PX", check="size")
    slice_overlap: float = _opt(0.2, "fraction of a tile shared with its neighbours with --slice", check="unit")
    slice_empty: float = _opt(1.0, "with --slice, fraction of the tiles without boxes kept (seeded draw)", check="unit")
    cache: float | None = _opt(None, "keep resized training images in RAM, up to GB (default: up to 4 GB and a "
                                     "quarter of the free memory; 0 = off)", metavar="GB", check="nonneg")
    threads: int | None = _opt(None, "torch threads (default: cores / processes on this machine)", check="count")
    conf: float = _opt(0.001, "validation score threshold", check="unit", old_flags=["--conf-thr"])
    iou: float = _opt(0.65, "validation NMS IoU", check="unit", old_flags=["--iou-thr"])
    max_det: int = _opt(100, "validation detections per image", check="count")
    plots: bool = _opt(True, "write the PNG plots")
    strict_data: bool = _opt(False, "refuse to train on any data warning or undecodable image (default: "
                                    "undecodable images are left out, named)", flags=["--strict", "--strict-data"])
    augment: str = _opt("yolox", "training pipeline: yolox (mosaic, affine, mixup, HSV, flip) or ssd "
                                 "(photometric distortion, zoom-out, min-IoU crop, flip; odkit.data.ssd_aug)",
                        choices=["yolox", "ssd"], recipe=True)
    anchors: str | None = _opt(
        None, "anchor boxes of models with settable anchors (yolov3, yolov3-tiny): 'auto' fits them to the "
              "training set at --img with k-means (1 - IoU), or 'w,h, w,h, ...' in pixels as `odkit anchors` "
              "prints; stored in the model config", metavar="A")
    aug: dict[str, Any] = _opt(
        factory=dict, recipe=True, metavar="KEY=VALUE",
        help="augmentation settings (odkit.data.transforms.AugmentConfig fields), e.g. scale=[0.5,1.5] "
             "degrees=0; values are YAML")

    def __post_init__(self) -> None:
        self.check_values()
        if self.img_size is None:  # the model's own input size (its zoo entry)
            from odkit.models.zoo import input_size

            self.img_size = input_size({"name": self.model})
        div = input_divisor(self.model)
        if self.img_size % div:
            raise ConfigError(f"--img must be a positive multiple of {div}, got {self.img_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.multiscale_range is not None:
            lo_hi = [int(v) for v in self.multiscale_range]
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or any(v % 32 for v in lo_hi):
                raise ConfigError(f"--multiscale-range must be two sizes MIN MAX, multiples of 32 with MIN <= MAX, "
                                  f"got {self.multiscale_range}")
            self.multiscale_range, self.multiscale = lo_hi, True
        self.lr_steps = [float(s) for s in self.lr_steps]
        if self.lr_steps != sorted(self.lr_steps):
            raise ConfigError(f"--lr-steps must be increasing fractions of the run in (0, 1), got {self.lr_steps}")
        if self.lr_gamma == 0:
            raise ConfigError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if self.weights_from is not None and self.weights_from not in WEIGHT_SOURCES:
            raise ConfigError(f"--from must be one of {', '.join(WEIGHT_SOURCES)}, got {self.weights_from!r}")
        if self.weights_from and not (self.weights or self.pretrained_backbone):
            raise ConfigError("--from names the format of --weights or --pretrained-backbone; give one of them")
        if self.weights and self.pretrained_backbone:
            raise ConfigError("--weights already holds a backbone; use either --weights or --pretrained-backbone")
        if self.augment not in ("yolox", "ssd"):
            raise ConfigError(f"--augment must be 'yolox' or 'ssd', got {self.augment!r}")
        if not isinstance(self.aug, dict):
            raise ConfigError(f"aug must be a mapping of augmentation settings, got {self.aug!r}")
        self.freeze_parts()  # validates --freeze / --freeze-stages

    def check_values(self) -> None:
        """Check every field with a value rule (``check`` in its metadata, see :mod:`odkit.arguments`);
        ``ConfigError`` names the flag."""
        for f in fields(self):
            kind = f.metadata.get("check")
            value = getattr(self, f.name)
            if kind is None or value is None:
                continue
            flag = (f.metadata.get("flags") or [f"--{f.name.replace('_', '-')}"])[0]
            if isinstance(value, (list, tuple)):
                setattr(self, f.name, [check_value(flag, v, kind) for v in value])
            else:
                setattr(self, f.name, check_value(flag, value, kind))

    def freeze_parts(self) -> dict[str, int | None]:
        """Parsed ``--freeze`` / ``--freeze-stages``: ``{"backbone": None (all) or N, "neck": None}``."""
        parts: dict[str, int | None] = {}
        for item in (self.freeze or "").split(","):
            item = item.strip().lower()
            if not item or item == "none":
                continue
            name, _, n = item.partition(":")
            if name not in ("backbone", "neck") or (n and name != "backbone"):
                raise ConfigError(f"--freeze: unknown part {item!r}; use backbone, backbone:N or neck")
            if n:
                try:
                    stages = int(n)
                except ValueError:
                    raise ConfigError(f"--freeze {item!r}: N must be a number of stages") from None
                if stages < 0:
                    raise ConfigError(f"--freeze {item!r}: N must be >= 0")
                parts[name] = stages
            else:
                parts[name] = None
        if self.freeze_stages is not None:
            if "backbone" in parts and parts["backbone"] != self.freeze_stages:
                raise ConfigError(f"--freeze {self.freeze!r} and --freeze-stages {self.freeze_stages} disagree")
            parts["backbone"] = self.freeze_stages
        return parts

    def column_spec(self) -> Any:
        """The :class:`~odkit.data.formats.ColumnSpec` of ``columns`` (None without it)."""
        if not self.columns:
            return None
        from odkit.data.formats import parse_columns

        return parse_columns(self.columns, self.delimiter, self.one_based)

    @property
    def base_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        per_img = 0.01 / 64 if self.optimizer == "sgd" else 0.002 / 64
        return per_img * self.batch

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 5e-4 if self.optimizer == "sgd" else 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """The field names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def check_names(cls, d: dict[str, Any], what: str = "training options") -> None:
        """Raise ``ConfigError`` naming every key of ``d`` that is not a field."""
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown {what}: {', '.join(unknown)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From field values; the names of earlier odkit versions (``img``, ``conf_thr``, ``iou_thr`` in
        an older run's args.yaml or checkpoint) are read as today's."""
        d = renamed_keywords(d, "training options", RENAMED_TRAIN, warn=False)
        cls.check_names(d)
        return cls(**d)
