"""The training loop: optimiser + warm-up/cosine/step schedule + EMA + AMP + NaN guard + validation,
checkpoints every epoch, a wall-clock budget, and DistributedDataParallel under ``torchrun``.

A run starts from the user's values (a mapping: flags or keyword arguments actually given), which
:func:`odkit.engine.recipe.resolve` completes from the model's recipe and the data/budget rule once
the training set is loaded, or from a complete :class:`TrainConfig` used as it is. The effective
recipe, with the source and reason of each value, is logged and written to ``args.yaml``. Optional
starting weights (``--weights``, ``--pretrained-backbone``) and frozen parts (``--freeze``) are
applied before the optimiser is built (:mod:`odkit.engine.finetune`).

Per epoch the trainer writes ``checkpoint.pt`` (atomically) and a row of ``metrics.csv``; every
``val_interval`` epochs (and after the last one) it evaluates the EMA weights with the COCO
evaluator and keeps ``weights/best.safetensors`` (best mAP50-95) and ``weights/last.safetensors``.

Distributed evaluation: every rank predicts its own shard of the validation images
(``indices[rank::world]``), the predictions are all-gathered, and rank 0 evaluates the full set.
Training losses are averaged over ranks (all-reduce); only rank 0 logs, writes files and plots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odkit.arguments import RENAMED_TRAIN, renamed_keywords
from odkit.engine import distributed as dist_utils
from odkit.engine import runtime
from odkit.engine.budget import BudgetPlanner
from odkit.engine.checkpoint import CheckpointSaver, load_checkpoint
from odkit.engine.config import TrainConfig
from odkit.engine.ema import ema_params_for, unwrap
from odkit.engine.recipe import Resolved, complete
from odkit.engine.run_outputs import append_csv, early_plots, final_outputs
from odkit.engine.rundir import find_resume_checkpoint
from odkit.engine.trainer_setup import TrainerSetup
from odkit.errors import OdkitError
from odkit.weights.format import save_weights

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished run produced: its directory, weights and final metrics."""

    run_dir: Path
    best: Path | None
    last: Path | None
    epochs: int
    metrics: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    recipe: dict[str, dict[str, Any]] = field(default_factory=dict)
    init: dict[str, Any] | None = None

    def __str__(self) -> str:
        m = ", ".join(f"{k} {v:.4f}" if k != "epoch" else f"best epoch {int(v)}" for k, v in self.metrics.items())
        return f"run {self.run_dir} ({self.epochs} epochs, {self.elapsed_s / 60:.1f} min): {m}"


# Where and how fast a run goes: the only values a resume may change, known before the recipe is.
_WHERE_KEYS = ("resume", "project", "device", "workers", "threads")


class TrainingDiverged(OdkitError):
    """The loss was NaN/inf in too many consecutive steps."""


class Trainer(TrainerSetup):
    """Runs one training job.

    ``cfg`` is either a complete :class:`TrainConfig` (used as it is) or a mapping of the values the
    user gave (``TrainConfig`` field names); the rest then comes from the model's recipe and the
    data/budget rule (:mod:`odkit.engine.recipe`), resolved once the training set is loaded.
    ``callbacks`` maps event names to functions: ``"on_epoch_end"(trainer, epoch, row)`` is called
    on rank 0 after the epoch's checkpoint is written (raising there interrupts the run, which
    can then be resumed).
    """

    def __init__(self, cfg: TrainConfig | Mapping[str, Any], callbacks: dict[str, Any] | None = None):
        if isinstance(cfg, TrainConfig):
            self.request: dict[str, Any] | None = None
            self.resolved: Resolved | None = complete(cfg)
        else:
            self.request = renamed_keywords(dict(cfg), "Trainer", RENAMED_TRAIN)
            TrainConfig.check_names(self.request)
            self.resolved = None
            cfg = TrainConfig.from_dict({k: v for k, v in self.request.items() if k in _WHERE_KEYS})
        self.cfg = cfg
        self.callbacks = callbacks or {}
        self.saver = CheckpointSaver()  # checkpoints are written beside the training steps
        self.dist = dist_utils.env_info()
        self.device = runtime.select_device(cfg.device, self.dist.local_rank)
        self.run_dir: Path | None = None
        self.start_epoch = 0
        self.iteration = 0
        self.best_fitness = -1.0
        self.best_metrics: dict[str, float] = {}
        self.last_metrics: dict[str, float] = {}
        self.elapsed_before = 0.0  # training seconds spent before a resume
        self.bad_streak = 0
        self.csv_header: list[str] | None = None
        self.plan_epochs = cfg.epochs
        self.plan_no_aug = cfg.no_aug_epochs
        self.epoch_times: list[float] = []
        self.best_preds: list[dict[str, Any]] | None = None
        self.time_up = False
        self.frozen_modules: list[nn.Module] = []
        self.freeze_note = ""
        self.init_report: Any = None
        self.weights_model: str | None = None
        self.model_overrides: dict[str, Any] | None = None

    # ------------------------------------------------------------------ time budget
    def _spent(self) -> float:
        """Seconds of the run so far (setup included; before a resume too)."""
        return self.elapsed_before + (time.time() - self.t_start)

    def _replan(self, epoch_done: int) -> None:
        """Fit the number of epochs to the ``--time`` budget (:class:`~odkit.engine.budget.BudgetPlanner`)."""
        cfg = self.cfg
        if not cfg.time or not self.budget.train_times:
            return
        epochs, no_aug = self.budget.plan(epoch_done, self._spent())
        if self.dist.enabled:  # every rank must follow the same plan
            epochs, no_aug = dist_utils.broadcast_object((epochs, no_aug))
        if epochs != self.plan_epochs or no_aug != self.plan_no_aug:
            if self.dist.is_main:
                log.log(
                    logging.INFO if abs(epochs - self.plan_epochs) > 1 or epoch_done == 1 else logging.DEBUG,
                    "time budget %.1f min: %.1f s/epoch measured, planning %d epochs (%d without augmentation)",
                    cfg.time, self.budget.epoch_estimate() or 0.0, epochs, no_aug,
                )
            self.plan_epochs, self.plan_no_aug = epochs, no_aug
            self.schedule.replan(epochs * self.ipe, self.iteration)
            if self.ema:
                self.ema.set_params(*ema_params_for(epochs * self.ipe, cfg.ema_decay, cfg.ema_tau))

    # ------------------------------------------------------------------ main loop
    def fit(self) -> TrainResult:
        self.t_start = time.time()  # the --time budget counts the setup too
        cfg = self.cfg
        resume_ckpt = None
        state = None
        if cfg.resume:
            resume_ckpt = find_resume_checkpoint(True if cfg.resume in ("True", "1", "last") else cfg.resume,
                                                 cfg.project)
            state = load_checkpoint(resume_ckpt)
            saved = TrainConfig.from_dict(state["config"])
            # keep the run's own settings; only where/how fast it runs may change
            if cfg.device != "auto":
                saved.device = cfg.device
            for k in ("workers", "threads"):
                if getattr(cfg, k) is not None:
                    setattr(saved, k, getattr(cfg, k))
            saved.resume = str(resume_ckpt)
            self.cfg = cfg = saved
            self.request = None
            self.resolved = complete(saved)
            self.model_overrides = _arch_overrides(state.get("model_config"))
            self.device = runtime.select_device(cfg.device, self.dist.local_rank)
        elif self.request is not None:
            self._preliminary_config()
        self._setup_runtime()
        self._load_data()
        self._build_model(resuming=state is not None)
        self._resolve()
        cfg = self.cfg
        self.plan_epochs, self.plan_no_aug = cfg.epochs, cfg.no_aug_epochs
        self.budget = BudgetPlanner((cfg.time or 0.0) * 60.0, cfg.epochs, cfg.no_aug_epochs, cfg.val_interval)
        if self.dist.is_main and state is None:
            val_from = f"\n  validation on {self.data_plan.val_from}" if self.data_plan.val_from else ""
            log.info("%s%s", self.resolved.describe() if self.resolved else "", val_from)
            if self.init_report is not None:
                log.info("%s", self.init_report.describe())
            if self.freeze_note:
                log.info("%s", self.freeze_note)
        self._setup_data()
        self._setup_model()
        if state is not None:
            self._restore(state)
            if self.ema is None and state.get("ema"):
                log.warning("checkpoint has EMA weights but EMA is off; ignoring them")
            del state
            if self.dist.is_main:
                log.info("resuming %s from epoch %d", resume_ckpt, self.start_epoch + 1)
        self._setup_run_dir(resume_ckpt)
        if self.dist.is_main:
            from odkit.engine.data import write_data_notes

            write_data_notes(self.run_dir, self.data_plan)  # left-out images, hold-out split
            log.info(
                "training %s on %s (%d train / %d val images, %d classes) at %d px, batch %d x %d process(es), "
                "device %s, %d threads, %d loader workers%s -> %s",
                cfg.model, cfg.data, len(self.train_set), len(self.val_set), self.num_classes, cfg.img_size,
                cfg.batch, self.dist.world_size, self.device, self.threads, self.workers,
                f", amp {self.amp_dtype}" if self.amp_dtype else "", self.run_dir,
            )
            if self.start_epoch == 0 and cfg.plots:
                self._early_plots()
        try:
            self._loop()
            self.saver.wait()
        finally:
            self.saver.close()
            for ld in (getattr(self, "train_loader", None),):
                it = getattr(ld, "_iterator", None)
                if it is not None and hasattr(it, "_shutdown_workers"):
                    it._shutdown_workers()
        result = self._finish()
        dist_utils.cleanup()
        return result

    def _loop(self) -> None:
        cfg = self.cfg
        epoch = self.start_epoch
        in_tail = False
        while epoch < self.plan_epochs:
            tail = self.plan_no_aug > 0 and epoch >= self.plan_epochs - self.plan_no_aug
            if tail and not in_tail:
                self._enter_no_aug_tail(epoch)
                in_tail = True
            t0 = time.time()
            row = self._train_epoch(epoch)
            t_train = time.time() - t0
            last = epoch + 1 >= self.plan_epochs or self.time_up
            if cfg.time and not last and self._over_budget():
                last = True  # the training deadline passed at the end of this epoch
            do_val = (epoch + 1) % cfg.val_interval == 0 or last
            metrics = self._validate(epoch) if do_val else {}
            epoch_time = time.time() - t0
            self.epoch_times.append(epoch_time if do_val or cfg.val_interval == 1 else t_train)
            if not self.time_up:  # a cut-short epoch says nothing about a full one
                self.budget.record(t_train, epoch_time - t_train if do_val else None)
            row.update({"mAP50-95": metrics.get("mAP50-95", ""), "mAP50": metrics.get("mAP50", ""),
                        "time_s": round(epoch_time, 2)})
            if last and epoch + 1 < self.plan_epochs:
                if self.dist.is_main:
                    log.info("time budget reached after epoch %d", epoch + 1)
                self.plan_epochs = epoch + 1
            if not last:
                self._replan(epoch + 1)
            self._end_epoch(epoch, row, metrics)
            epoch += 1

    def _enter_no_aug_tail(self, epoch: int) -> None:
        from odkit.engine import data as data_utils

        if self.dist.is_main:
            log.info("epoch %d: last %d epoch(s) without augmentation (head phase 'no_aug')", epoch + 1,
                     self.plan_epochs - epoch)
        self.budget.enter_tail(epoch)
        unwrap(self.model).head.enter_phase("no_aug")
        data_utils.close_mosaic(self.train_loader)

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm import tqdm

        from odkit.engine import data as data_utils

        cfg = self.cfg
        self._train_mode()
        data_utils.set_epoch(self.train_loader, epoch)
        sums: dict[str, float] = {}
        steps = 0
        n_images = 0
        t0 = time.time()
        bar = tqdm(
            total=self.ipe, desc=f"epoch {epoch + 1}/{self.plan_epochs}", disable=not self.dist.is_main,
            leave=True, dynamic_ncols=True, unit="it",
        )
        lr = self.schedule.lr(self.iteration)
        for k, batch in enumerate(self.train_loader):
            if cfg.time and k and (k % 5 == 0 or not self.dist.enabled) and self._over_budget():
                self.time_up = True  # budget spent inside an epoch: end it here
                if self.dist.is_main:
                    log.info("time budget of %.1f min: training stops during epoch %d (%d/%d iterations) to leave "
                             "%.0f s for the final validation", cfg.time, epoch + 1, k, self.ipe,
                             self.budget.final_reserve())
                break
            images, targets, _ = data_utils.unpack(batch)
            images = images.to(self.device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = [{k: v.to(self.device) for k, v in t.items() if torch.is_tensor(v)} for t in targets]
            lr = self.schedule.step(self.optimizer, self.iteration)
            losses = self._forward(images, targets)
            loss = losses["loss"]
            finite = bool(torch.isfinite(loss).item())
            if self.dist.enabled:  # all ranks must skip together, or DDP's all-reduce would hang
                finite = dist_utils.all_reduce_sum(float(finite), self.device) == self.dist.world_size
            self.iteration += 1
            if not finite:
                self._bad_step(epoch, losses)
                bar.update(1)
                continue
            self.bad_streak = 0
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                if cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                if cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
                self.optimizer.step()
            if self.ema:
                self.ema.update(self.model)
            steps += 1
            n_images += images.shape[0]
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            dt = max(time.time() - t0, 1e-9)
            bar.set_postfix_str(
                " ".join(f"{k} {v / steps:.3f}" for k, v in sums.items())
                + f" lr {lr:.2e} {n_images * self.dist.world_size / dt:.1f} img/s",
                refresh=False,
            )
            bar.update(1)
        bar.close()
        dt = max(time.time() - t0, 1e-9)
        means = {k: v / max(steps, 1) for k, v in sums.items()}
        means = dist_utils.all_reduce_mean(means, self.device) if self.dist.enabled else means
        total_images = dist_utils.all_reduce_sum(float(n_images), self.device)
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"train/{k}": round(v, 5) for k, v in means.items()})
        row["lr"] = lr
        row["images_per_s"] = round(total_images / dt, 2)
        return row

    def _forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The loss dict of one batch; a ``--compile`` that fails on the first step falls back to eager."""
        try:
            with runtime.autocast(self.device, self.amp_dtype):
                return self.ddp_model(images, targets)
        except Exception as e:
            if not self.compile_pending:
                raise
            from odkit.models.fuse import uncompile

            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            log.warning("--compile failed (%s: %s); training eager", type(e).__name__, msg)
            uncompile(unwrap(self.model))
            self.compile_pending = False
            with runtime.autocast(self.device, self.amp_dtype):
                return self.ddp_model(images, targets)
        finally:
            self.compile_pending = False

    def _over_budget(self) -> bool:
        """Whether training must stop for the ``--time`` budget: its deadline (the budget less the
        final validation and outputs) has passed (rank 0 decides for every rank)."""
        return bool(dist_utils.broadcast_object(self._spent() > self.budget.deadline()))

    def _bad_step(self, epoch: int, losses: dict[str, torch.Tensor]) -> None:
        self.bad_streak += 1
        self.optimizer.zero_grad(set_to_none=True)
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        if self.dist.is_main:
            log.warning("epoch %d iteration %d: non-finite loss (%s); step skipped (%d in a row)",
                        epoch + 1, self.iteration, parts, self.bad_streak)
        if self.bad_streak >= self.cfg.max_bad_steps:
            raise TrainingDiverged(
                f"training diverged: the loss was NaN/inf in {self.bad_streak} consecutive steps "
                f"(epoch {epoch + 1}, iteration {self.iteration}; last losses: {parts}). "
                f"Try a lower --lr, drop --amp, or check the data with `odkit data check`."
            )

    def _validate(self, epoch: int) -> dict[str, float]:
        from odkit.engine.evaluator import evaluate_predictions, predict_set

        cfg = self.cfg
        model = self._eval_module()
        preds = predict_set(
            model, self.val_set, img_size=cfg.img_size, batch=cfg.batch, device=self.device, workers=self.workers,
            conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, amp_dtype=self.amp_dtype,
            channels_last=cfg.channels_last, distributed=self.dist.enabled,
        )
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            res = evaluate_predictions(self.val_set, preds)
            metrics = {"mAP50-95": float(res.stats[0]), "mAP50": float(res.stats[1])}
            log.info("epoch %d: val mAP50-95 %.4f  mAP50 %.4f", epoch + 1, metrics["mAP50-95"], metrics["mAP50"])
            if metrics["mAP50-95"] > self.best_fitness:
                self.best_preds = preds
        self._train_mode()
        return metrics

    def _end_epoch(self, epoch: int, row: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.dist.is_main:
            wdir = self.run_dir / "weights"
            if metrics:
                self.last_metrics = metrics
                ema_sd = self._eval_module().state_dict()
                save_weights(wdir / "last.safetensors", ema_sd, self._weights_meta(epoch + 1, metrics))
                if metrics["mAP50-95"] > self.best_fitness:
                    self.best_fitness = metrics["mAP50-95"]
                    self.best_metrics = {**metrics, "epoch": epoch + 1}
                    save_weights(wdir / "best.safetensors", ema_sd, self._weights_meta(epoch + 1, metrics))
            self._write_csv(row)
            self.saver.submit(self.run_dir / "checkpoint.pt", self._checkpoint_state(epoch + 1))
            cb = self.callbacks.get("on_epoch_end")
            if cb is not None:
                self.saver.wait()  # the callback sees this epoch's checkpoint
                cb(self, epoch, row)
        dist_utils.barrier()

    def _write_csv(self, row: dict[str, Any]) -> None:
        self.csv_header = append_csv(self.run_dir / "metrics.csv", row, self.csv_header)

    # ------------------------------------------------------------------ end of run
    def _early_plots(self) -> None:
        from odkit.engine.data import train_transform

        early_plots(self.train_set, self.run_dir / "plots", self.cfg.img_size, self.cfg.seed, train_transform(self.cfg))

    def _finish(self) -> TrainResult:
        elapsed = self.elapsed_before + (time.time() - self.t_start)
        wdir = self.run_dir / "weights"
        best = wdir / "best.safetensors"
        last = wdir / "last.safetensors"
        if self.dist.is_main:
            self._final_outputs(best)
            log.info(
                "done in %.1f min: best mAP50-95 %.4f mAP50 %.4f (epoch %s); weights in %s",
                elapsed / 60, self.best_metrics.get("mAP50-95", float("nan")),
                self.best_metrics.get("mAP50", float("nan")), self.best_metrics.get("epoch", "?"), wdir,
            )
        dist_utils.barrier()
        return TrainResult(
            run_dir=self.run_dir, best=best if best.exists() else None, last=last if last.exists() else None,
            epochs=self.plan_epochs, metrics={k: float(v) for k, v in self.best_metrics.items()}, elapsed_s=elapsed,
            recipe=self.resolved.record() if self.resolved else {},
            init=self.init_report.to_dict() if self.init_report is not None else None,
        )

    def _final_outputs(self, best: Path) -> None:
        """predictions.json (best weights on val), curves, PR curves and confusion matrix."""
        from odkit.engine.evaluator import predict_set

        cfg = self.cfg
        preds = self.best_preds
        if preds is None and best.exists():
            from odkit.weights.format import load_weights

            sd, _ = load_weights(best)
            model = self._eval_module()
            model.load_state_dict(sd)
            preds = predict_set(
                model, self.val_set, img_size=cfg.img_size, batch=cfg.batch, device=self.device, workers=self.workers,
                conf=cfg.conf, iou=cfg.iou, max_det=cfg.max_det, amp_dtype=self.amp_dtype,
                channels_last=cfg.channels_last, distributed=False,
            )
        final_outputs(self.run_dir, self.val_set, preds, cfg.plots)


def _arch_overrides(config: Mapping[str, Any] | None) -> dict[str, Any]:
    from odkit.engine.finetune import arch_overrides

    return arch_overrides(config)


def train(cfg: TrainConfig | Mapping[str, Any], callbacks: dict[str, Any] | None = None) -> TrainResult:
    """Run training for ``cfg`` (a complete config, or the user's values to resolve); returns the
    :class:`TrainResult`."""
    return Trainer(cfg, callbacks).fit()
