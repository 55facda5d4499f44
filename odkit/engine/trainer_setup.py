"""The :class:`~odkit.engine.trainer.Trainer`'s setup and state: runtime (threads, seeds, loader
workers), data and loader, the model with its starting weights and frozen parts, optimiser,
schedule, EMA and DDP wrapper, the run directory, and the checkpoint state it saves and restores.

A mixin: the attributes it sets and reads are the trainer's (see ``Trainer.__init__``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odkit.arguments import fit_input_size
from odkit.engine import distributed as dist_utils
from odkit.engine import runtime, speed
from odkit.engine.checkpoint import rng_state, set_rng_state
from odkit.engine.config import TrainConfig, input_divisor
from odkit.engine.ema import ModelEMA, ema_params_for, unwrap
from odkit.engine.optim import build_optimizer
from odkit.engine.recipe import complete, resolve
from odkit.engine.rundir import make_run_dir
from odkit.engine.schedule import LRSchedule
from odkit.errors import ConfigError

log = logging.getLogger(__name__)


class TrainerSetup:
    """Setup and checkpoint-state methods of the trainer."""

    def _setup_runtime(self) -> None:
        cfg = self.cfg
        dist_utils.init(self.device)
        self.threads = runtime.set_threads(cfg.threads, self.dist.local_world_size)
        if self.device.type == "cpu":
            runtime.keep_freed_memory()  # no page faults on every step's activations
        runtime.seed_everything(cfg.seed + self.dist.rank)
        runtime.set_deterministic(cfg.deterministic)
        if cfg.deterministic and (cfg.workers or 0) > 0:
            log.warning("--deterministic: using --workers 0 (loader workers would make augmentation order vary)")
        self.workers = 0 if cfg.deterministic else self._auto_workers()
        self.amp_dtype = runtime.amp_dtype(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

    def _auto_workers(self) -> int:
        if self.cfg.workers is not None:
            return int(self.cfg.workers)
        return runtime.default_workers(self.device, self.dist.local_world_size)

    def _load_data(self) -> None:
        from odkit.engine import data as data_utils

        self.data_plan = data_utils.prepare_data(self.cfg, report=self.dist.is_main)
        self.train_set, self.val_set = self.data_plan.train, self.data_plan.val
        self.class_names = list(self.train_set.class_names)
        self.num_classes = len(self.class_names)

    def _preliminary_config(self) -> None:
        """Enough of the config to load data and build the model (the rule needs the data set size)."""
        from odkit.engine.finetune import weights_model

        assert self.request is not None
        weights, source = self.request.get("weights"), self.request.get("weights_from")
        if weights:
            self.weights_model = weights_model(weights, source)
        if self.request.get("img_size") is not None:  # the user's size, fitted to the model once
            model = str(self.request.get("model") or self.weights_model or TrainConfig.model)
            self.request["img_size"] = fit_input_size(self.request["img_size"], input_divisor(model), "--img", model)
        self.cfg = resolve(self.request, weights_model=self.weights_model).config

    def _resolve(self) -> None:
        """The final config: the user's values completed by the model's recipe and the rule."""
        if self.request is None:
            return
        params = sum(p.numel() for p in self.model.parameters())
        self.resolved = resolve(self.request, num_images=len(self.train_set), params=params,
                                weights_model=self.weights_model, num_val_images=len(self.val_set))
        self.cfg = self.resolved.config

    def _setup_data(self) -> None:
        from odkit.engine import data as data_utils

        cfg = self.cfg
        masks = bool(getattr(self.model, "has_masks", False))  # Mask R-CNN: targets carry the instance masks
        if masks and not self.train_set.has_masks:
            raise ConfigError(f"{cfg.model} learns instance masks, and the training set of {cfg.data} has none "
                              "(COCO segmentations, LabelMe / CVAT polygons or YOLO-seg labels)")
        self.train_loader = data_utils.train_loader(
            self.train_set, cfg, no_aug=False, workers=self.workers, dist=self.dist, masks=masks
        )
        self.loader_generator = data_utils.loader_generator(self.train_loader)
        self.ipe = len(self.train_loader)
        if self.ipe == 0:
            raise ConfigError(
                f"training set has {len(self.train_set)} images, fewer than one batch of {cfg.batch} "
                f"per process; lower --batch"
            )

    def _build_model(self, resuming: bool) -> None:
        """Build the model for the data's classes, load starting weights (not when resuming: the
        checkpoint has them) and freeze what ``--freeze`` names."""
        from odkit.engine import finetune
        from odkit.models.zoo import build

        cfg = self.cfg
        src = None
        overrides = dict(self.model_overrides or {})
        if cfg.weights and not resuming:
            src = finetune.read_source(cfg.weights, cfg.weights_from, cfg.model)
            overrides = src.overrides
        if cfg.anchors and not resuming:
            from odkit.engine.anchors import training_anchors

            overrides = {**overrides, "anchors": training_anchors(cfg.anchors, cfg.model, self.train_set, cfg.img_size)}
        model = build(cfg.model, num_classes=self.num_classes, class_names=self.class_names, img_size=cfg.img_size,
                      **overrides)
        if src is not None:
            self.init_report = finetune.init_from_weights(model, src)
        elif cfg.pretrained_backbone and not resuming:
            self.init_report = finetune.load_pretrained_backbone(model, cfg.pretrained_backbone, cfg.weights_from)
        parts = cfg.freeze_parts()
        if parts:
            self.frozen_modules, self.freeze_note = finetune.freeze(model, parts)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        speed.prepare_training_model(model)  # same results, fewer copies
        self.model = model

    def _train_mode(self) -> None:
        """``model.train()`` with the frozen parts kept in eval mode (their batch-norm statistics fixed)."""
        self.model.train()
        for m in self.frozen_modules:
            m.eval()

    def _setup_model(self) -> None:
        cfg = self.cfg
        model = self.model
        self.optimizer = build_optimizer(
            model, cfg.optimizer, lr=cfg.base_lr, weight_decay=cfg.decay, momentum=cfg.momentum
        )
        speed.foreach_optimizer(self.optimizer)
        warmup_epochs = cfg.warmup_epochs if cfg.time else min(cfg.warmup_epochs, cfg.epochs * 0.2)
        self.schedule = LRSchedule(
            base_lr=cfg.base_lr,
            total_iters=cfg.epochs * self.ipe,
            warmup_iters=int(round(warmup_epochs * self.ipe)),
            kind=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
            steps=list(cfg.lr_steps) if cfg.schedule == "step" else [],
            gamma=cfg.lr_gamma,
        )
        self.ema: ModelEMA | None = None
        if cfg.ema:
            decay, tau = ema_params_for(cfg.epochs * self.ipe, cfg.ema_decay, cfg.ema_tau)
            self.ema = ModelEMA(model, decay, tau)
        self.compile_pending = bool(cfg.compile)
        if cfg.compile:  # after the EMA copy: the copy stays eager
            speed.compile_for_training(model)
        self.ddp_model: nn.Module = model
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    def _setup_run_dir(self, resume_ckpt: Path | None) -> None:
        cfg = self.cfg
        if self.dist.is_main:
            if resume_ckpt is not None:
                run_dir = resume_ckpt.parent
            else:
                run_dir = make_run_dir(cfg.project, cfg.name, cfg.exist_ok)
                (run_dir / "weights").mkdir(exist_ok=True)
                resolved = self.resolved or complete(cfg)
                (run_dir / "args.yaml").write_text(resolved.to_yaml())
            path = str(run_dir)
        else:
            path = None
        self.run_dir = Path(dist_utils.broadcast_object(path))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_state(self, epoch_done: int) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "epoch": epoch_done,
            "iteration": self.iteration,
            "plan": {"epochs": self.plan_epochs, "no_aug_epochs": self.plan_no_aug},
            "best_fitness": self.best_fitness,
            "best_metrics": dict(self.best_metrics),
            "elapsed": self.elapsed_before + (time.time() - self.t_start),
            "epoch_times": list(self.epoch_times),
            "budget": self.budget.state_dict(),
            "bad_streak": self.bad_streak,
            "csv_header": self.csv_header,
            "config": self.cfg.to_dict(),
            "model_config": _plain(dict(getattr(unwrap(self.model), "config", {}) or {})),
            "class_names": self.class_names,
            "rng": rng_state(self.loader_generator),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.plan_epochs = int(state["plan"]["epochs"])
        self.plan_no_aug = int(state["plan"]["no_aug_epochs"])
        self.best_fitness = float(state["best_fitness"])
        self.best_metrics = dict(state.get("best_metrics") or {})
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.epoch_times = list(state.get("epoch_times") or [])
        self.budget.load_state_dict(state.get("budget") or {"train_times": self.epoch_times})
        self.bad_streak = int(state.get("bad_streak", 0))
        self.csv_header = state.get("csv_header")
        set_rng_state(state["rng"], self.loader_generator)

    def _weights_meta(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        # the architecture (name, classes, class names, input size) is model_config's alone
        return {
            "class_ids": [int(c) for c in self.train_set.class_ids],
            "epoch": epoch,
            "metrics": metrics,
            "model_config": dict(getattr(unwrap(self.model), "config", {}) or {}),
            "train_args": self.cfg.to_dict(),
            "recipe": self.resolved.record() if self.resolved else {},
            "init": self.init_report.to_dict() if self.init_report is not None else None,
        }

    def _eval_module(self) -> nn.Module:
        return self.ema.ema if self.ema else unwrap(self.model)


def _plain(x: Any) -> Any:
    """``x`` with tuples as lists (a checkpoint holds only plain containers)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
