"""What a training run writes besides weights and checkpoints: metrics.csv rows, the early plots
(label statistics, an augmented batch) and the end-of-run outputs (predictions.json, training
curves, PR curves and confusion matrix, the HTML report). A plot never stops training: failures are
logged."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("odkit.train")


def append_csv(path: Path, row: dict[str, Any], header: Sequence[str] | None) -> list[str]:
    """Append ``row`` to the CSV ``path`` (header written when the file is new); returns the header
    in use (the first row's keys unless ``header`` is given)."""
    header = list(header) if header is not None else list(row)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
    return header


def early_plots(train_set: Any, pdir: Path, img: int, seed: int, aug_cfg: Any) -> None:
    """Label statistics and a grid of augmented training samples (``pdir``/labels.png,
    train_batch.png)."""
    from odkit.viz.plots import plot_label_stats

    try:
        plot_label_stats(train_set, pdir / "labels.png")
    except Exception as e:  # noqa: BLE001 - a plot must never stop training
        log.warning("label statistics plot failed: %s", e)
    try:
        from odkit.data.preview import augmented_grid

        augmented_grid(train_set, pdir / "train_batch.png", n=16, img_size=img, seed=seed, cfg=aug_cfg)
    except Exception as e:  # noqa: BLE001
        log.warning("augmented sample grid failed: %s", e)


def final_outputs(run_dir: Path, val_set: Any, preds: Any, plots: bool) -> None:
    """predictions.json of ``preds`` on ``val_set`` (when given) and, with ``plots``, the training
    curves from metrics.csv, PR curves and the confusion matrix under ``run_dir``/plots and the HTML
    report in ``run_dir``/report (:mod:`odkit.engine.report`)."""
    from odkit.engine.evaluator import write_coco_results

    pdir = run_dir / "plots"
    if preds is not None:
        write_coco_results(val_set, preds, run_dir / "predictions.json")
    if not plots:
        return
    try:
        from odkit.viz.plots import plot_training_curves

        plot_training_curves(run_dir / "metrics.csv", pdir)
    except Exception as e:  # noqa: BLE001
        log.warning("training curve plots failed: %s", e)
    if preds is not None:
        try:
            from odkit.engine.evaluator import curve_plots

            curve_plots(val_set, preds, pdir)
        except Exception as e:  # noqa: BLE001
            log.warning("PR curve / confusion matrix plots failed: %s", e)
    try:
        from odkit.engine.report import write_report

        index = write_report(run_dir / "report", val_set if preds is not None else None, preds, run_dir=run_dir,
                             title=f"odkit report: {run_dir.name}")
        log.info("report: %s", index)
    except Exception as e:  # noqa: BLE001
        log.warning("HTML report failed: %s", e)
