"""Training configuration: one dataclass whose fields map 1:1 onto ``odkit train`` flags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from odkit.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything a training run needs. Units: ``img`` pixels (square network input), ``time``
    minutes of wall clock, ``lr`` per iteration at the full batch (``None``: 0.01 * batch / 64 for
    SGD, 0.002 * batch / 64 for AdamW), ``warmup_epochs`` epochs (fractions allowed)."""

    data: str = ""
    model: str = "yolox-nano"
    img: int = 416
    epochs: int = 100
    batch: int = 16
    time: float | None = None
    device: str = "auto"
    workers: int | None = None
    project: str = "runs"
    name: str = "train"
    exist_ok: bool = False
    resume: str | None = None
    amp: bool = False
    optimizer: str = "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    schedule: str = "cos"
    min_lr_ratio: float = 0.05
    warmup_epochs: float = 3.0
    seed: int = 0
    val_interval: int = 1
    no_aug_epochs: int = 15
    train_split: str | None = None
    val_split: str | None = None
    format: str | None = None
    deterministic: bool = False
    channels_last: bool = True
    ema: bool = True
    ema_decay: float = 0.9998
    ema_tau: float = 2000.0
    clip_grad: float = 10.0
    max_bad_steps: int = 5
    mosaic: float = 1.0
    mixup: float = 0.0
    multiscale: bool = False
    cache: float = 0.0
    threads: int | None = None
    conf_thr: float = 0.001
    iou_thr: float = 0.65
    max_det: int = 100
    plots: bool = True
    strict_data: bool = False
    aug: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.img <= 0 or self.img % 32:
            raise ConfigError(f"--img must be a positive multiple of 32, got {self.img}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be at least 1, got {self.batch}")
        if self.time is not None and self.time <= 0:
            raise ConfigError(f"--time must be a positive number of minutes, got {self.time}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"--optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.val_interval < 1:
            raise ConfigError(f"--val-interval must be at least 1, got {self.val_interval}")
        if self.no_aug_epochs < 0:
            raise ConfigError(f"--no-aug-epochs must be >= 0, got {self.no_aug_epochs}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")

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
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown training options: {', '.join(unknown)}")
        return cls(**d)
