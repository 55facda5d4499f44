"""HTML report of a training or validation run: one folder (``index.html``, ``img/``, ``gallery/``)
that opens from disk without a server.

Sections: the recipe and its sources (``args.yaml``), loss and mAP curves (``metrics.csv``), the
COCO summary and per-class AP, PR curves and the confusion matrix, the TIDE errors
(:mod:`odkit.eval.tide`), the data-check report, and a gallery of validation images with ground
truth and predictions drawn on them, each prediction labelled with its TIDE type, worst images
first, filterable by class and by error type (plain JavaScript, :mod:`odkit.engine.report_page`).
A run directory's report is ``RUN_DIR/report``; ``odkit report RUN_DIR`` rebuilds it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.structures import AnnotationSet
from odkit.engine.report_page import esc, page
from odkit.errors import DataError
from odkit.eval.tide import ERROR_LABELS, ERROR_TYPES, SPECIAL_TYPES

log = logging.getLogger(__name__)

__all__ = ["write_report", "report_from_run", "write_val_source", "ERROR_COLORS"]

# RGB per TIDE type (TP: a true positive, GT: ground truth)
ERROR_COLORS = {
    "TP": (40, 120, 255), "GT": (0, 200, 0), "Cls": (255, 140, 0), "Loc": (230, 200, 0),
    "Both": (170, 60, 220), "Dupe": (0, 190, 200), "Bkg": (230, 30, 30), "Miss": (255, 0, 200),
}
GALLERY_SIDE = 640  # longest side of a gallery image, pixels
_PLOTS = ("loss.png", "map.png", "pr_curve.png", "confusion_matrix.png", "tide_errors.png")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def _imgs(out: Path, names: list[str]) -> str:
    shown = [n for n in names if (out / "img" / n).is_file()]
    return '<div class="plots">' + "".join(f'<img src="img/{n}" alt="{esc(n)}">' for n in shown) + "</div>"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _draw(image: np.ndarray, scale: float, boxes: list[tuple[np.ndarray, str, str, bool]]) -> np.ndarray:
    """``image`` resized by ``scale`` with boxes (xyxy original pixels, colour key, text, thick)."""
    import cv2

    h, w = image.shape[:2]
    img = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    for box, key, text, thick in boxes:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        color = ERROR_COLORS[key]
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 3 if thick else 1, lineType=cv2.LINE_AA)
        if text:
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
            tx = min(max(x1, 0), max(img.shape[1] - tw - 2, 0))
            cv2.rectangle(img, (tx, ty - th - base), (tx + tw + 2, ty + 1), color, -1)
            cv2.putText(img, text, (tx + 1, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _gallery(out: Path, aset: AnnotationSet, g: Any, d: Any, tide: Any, conf: float, max_images: int) -> dict[str, Any]:
    """Draw the worst ``max_images`` images into ``out``/gallery; returns the gallery JSON.

    Shown per image: every ground truth (thick when missed), the predictions with score >= ``conf``
    coloured by TIDE type. Badness: errors shown plus missed objects."""
    from odkit.data.imageio import read_image, write_image

    names = list(g.class_names)
    shown = (d.scores >= conf) & (tide.det_error >= -1)
    n_img = g.num_images
    bad = np.bincount(d.img[shown & (tide.det_error >= 0)], minlength=n_img)
    bad += np.bincount(g.img[tide.gt_missed], minlength=n_img)
    order = np.lexsort((np.arange(n_img), -bad))[:max_images]
    items = []
    for rank, i in enumerate(order.tolist()):
        gi = np.flatnonzero(g.img == i)
        di = np.flatnonzero((d.img == i) & shown)
        di = di[np.argsort(-d.scores[di], kind="stable")]
        boxes, errors, classes = [], {}, set()
        for k in gi:
            classes.add(names[g.labels[k]])
            missed = bool(tide.gt_missed[k])
            if missed:
                errors["Miss"] = errors.get("Miss", 0) + 1
            boxes.append((g.xyxy[k], "Miss" if missed else "GT", f"missed {names[g.labels[k]]}" if missed else "", missed))
        for k in di:
            classes.add(names[d.labels[k]])
            e = int(tide.det_error[k])
            key = "TP" if e < 0 else ERROR_TYPES[e]
            if e >= 0:
                errors[key] = errors.get(key, 0) + 1
            text = f"{'' if e < 0 else key + ' '}{names[d.labels[k]]} {d.scores[k]:.2f}"
            boxes.append((d.xyxy[k], key, text, False))
        try:
            image = read_image(aset.path(i))
        except DataError as exc:  # one unreadable image does not stop the report
            log.warning("report gallery: %s skipped (%s)", aset.path(i), exc)
            continue
        scale = min(1.0, GALLERY_SIDE / max(image.shape[:2]))
        src = f"gallery/{rank:04d}.jpg"
        write_image(out / src, _draw(image, scale, boxes))
        items.append({"src": src, "name": aset.path(i).name, "classes": sorted(classes),
                      "errors": errors, "n_errors": int(sum(errors.values()))})
    types = list(ERROR_TYPES)
    return {"images": items, "classes": names, "error_types": types,
            "error_labels": {t: ERROR_LABELS[t] for t in types}, "colors": {k: _hex(v) for k, v in ERROR_COLORS.items()}}


def _eval_sections(out: Path, aset: AnnotationSet, predictions: Any, conf: float,
                   max_images: int) -> tuple[list[tuple[str, str, str]], dict[str, Any], str]:
    """Per-class AP, PR curves / confusion matrix, TIDE and gallery sections; the gallery JSON."""
    from odkit.eval.coco import evaluate_coco
    from odkit.eval.curves import confusion_matrix, plot_confusion_matrix, plot_pr_curves
    from odkit.eval.inputs import load_detections, load_ground_truth
    from odkit.eval.tide import tide_errors
    from odkit.viz.plots import plot_tide_errors

    g = load_ground_truth(aset)
    d = load_detections(predictions, g)
    res = evaluate_coco(aset, predictions)
    idir = out / "img"
    plot_pr_curves(res, idir / "pr_curve.png")
    cm = confusion_matrix(aset, predictions, iou_threshold=0.45, score_threshold=conf)
    plot_confusion_matrix(cm, list(g.class_names), idir / "confusion_matrix.png")
    tide = tide_errors(aset, predictions)
    plot_tide_errors(tide.main, tide.special, idir / "tide_errors.png", title=f"TIDE errors (AP50 {tide.ap:.1f})")
    rows = [[n, cid] + [f"{100 * res.per_class[n][k]:.2f}" if res.per_class[n][k] > -1 else "-"
                        for k in ("AP", "AP50", "AP75")] for n, cid in zip(res.class_names, res.cat_ids)]
    per_class = _table(["class", "id", "AP", "AP50", "AP75"], rows) + _pre(res.summary)
    trow = [["dAP"] + [f"{tide.main[t]:.2f}" for t in ERROR_TYPES] + [f"{tide.special[t]:.2f}" for t in SPECIAL_TYPES],
            ["count"] + [tide.counts[t] for t in (*ERROR_TYPES, *SPECIAL_TYPES)]]
    legend = "".join(f"<li><b>{t}</b>: {esc(ERROR_LABELS[t])}</li>" for t in (*ERROR_TYPES, *SPECIAL_TYPES))
    tide_html = (
        f'<p class="note">AP at IoU {tide.pos_thr:g}: {tide.ap:.2f} (TIDE: foreground IoU {tide.pos_thr:g}, '
        f"background {tide.bg_thr:g}; dAP = AP gained by fixing every error of the type)</p>"
        + _table(["", *ERROR_TYPES, *SPECIAL_TYPES], trow) + _imgs(out, ["tide_errors.png"]) + f"<ul class=\"note\">{legend}</ul>"
    )
    gal = _gallery(out, aset, g, d, tide, conf, max_images)
    legend = "".join(f'<span style="color:{_hex(c)}">&#9632; {esc(k)}</span>' for k, c in ERROR_COLORS.items())
    gal_html = (
        '<div class="filters">class <select id="f-class"><option value="">all classes</option></select>'
        'error <select id="f-error"><option value="">all images</option></select><span id="count"></span></div>'
        f'<div class="legend">{legend}</div><p class="note">{len(gal["images"])} of {g.num_images} validation images, '
        f"worst first (errors among predictions with score &ge; {conf:g}, plus missed objects); "
        "GT: ground truth, TP: true positive</p><div id=\"grid\"></div>"
    )
    sections = [
        ("per-class", "Per-class AP", per_class),
        ("curves-pr", "PR curves and confusion matrix", _imgs(out, ["pr_curve.png", "confusion_matrix.png"])),
        ("errors", "TIDE errors", tide_html),
    ]
    summary = f"mAP50-95 {res.map:.4f}, mAP50 {res.stats[1]:.4f}, TIDE AP50 {tide.ap:.2f} on {g.num_images} images"
    return sections, {"html": gal_html, **gal}, summary


def write_report(
    out_dir: str | Path,
    val_set: AnnotationSet | None = None,
    predictions: Any = None,
    *,
    run_dir: str | Path | None = None,
    title: str = "odkit report",
    data_report: str | None = None,
    conf: float = 0.25,
    max_images: int = 100,
) -> Path:
    """Write the report folder ``out_dir`` and return its ``index.html``.

    ``run_dir``: a training run directory (recipe from ``args.yaml``, curves from ``metrics.csv``,
    ``data_report.txt``); ``val_set`` + ``predictions`` (anything
    :func:`odkit.eval.inputs.load_detections` reads, in ``val_set``'s original image coordinates):
    the evaluation sections and the gallery (``max_images`` images, predictions with score >= ``conf``).
    ``data_report``: the data-check text when there is no ``data_report.txt``.
    """
    out = Path(out_dir)
    # remove only what an earlier report wrote
    for old in [*(out / "gallery").glob("[0-9][0-9][0-9][0-9].jpg"), *(out / "img" / n for n in _PLOTS)]:
        old.unlink(missing_ok=True)
    (out / "img").mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str, str]] = []
    subtitle = []
    run = Path(run_dir) if run_dir is not None else None
    if run is not None:
        subtitle.append(f"run {run.resolve()}")
        if (run / "args.yaml").is_file():
            sections.append(("recipe", "Recipe", '<p class="note">args.yaml: every setting, each non-default '
                             "one with its source and reason</p>" + _pre((run / "args.yaml").read_text())))
        if (run / "metrics.csv").is_file():
            from odkit.viz.plots import plot_training_curves

            plot_training_curves(run / "metrics.csv", out / "img")
            sections.append(("curves", "Loss and mAP curves", _imgs(out, ["loss.png", "map.png"])))
        if data_report is None and (run / "data_report.txt").is_file():
            data_report = (run / "data_report.txt").read_text()
    gallery: dict[str, Any] = {"images": [], "classes": [], "error_types": [], "error_labels": {}, "colors": {}}
    gal_html = '<p class="note">no validation predictions</p><div id="grid"></div>' \
               '<select id="f-class" hidden></select><select id="f-error" hidden></select><span id="count"></span>'
    if val_set is not None and predictions is not None:
        secs, gal, summary = _eval_sections(out, val_set, predictions, conf, max_images)
        sections += secs
        gal_html = gal.pop("html")
        gallery = gal
        subtitle.append(summary)
    sections.append(("data", "Data check", _pre(data_report) if data_report else '<p class="note">no data-check report</p>'))
    sections.append(("gallery", "Gallery", gal_html))
    index = out / "index.html"
    index.write_text(page(title, "; ".join(subtitle), sections, gallery), encoding="utf-8")
    return index


def write_val_source(out_dir: str | Path, aset: AnnotationSet, data: str, fmt: str | None, weights: str) -> None:
    """``source.yaml`` of an ``odkit val --report`` folder: what :func:`report_from_run` needs to load
    the evaluated images again (the data set, its format and the image files evaluated)."""
    import yaml

    doc = {"kind": "val", "data": str(data), "format": fmt, "weights": str(weights),
           "files": [str(aset.path(i).resolve()) for i in range(len(aset))]}
    (Path(out_dir) / "source.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _val_source(path: Path) -> AnnotationSet:
    """The evaluated set of an ``odkit val --report`` folder (``source.yaml``)."""
    import yaml

    from odkit.engine.data import load_checked

    try:
        doc = yaml.safe_load(path.read_text()) or {}
        data, fmt, files = doc["data"], doc.get("format"), list(doc["files"])
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an odkit val source file ({e})") from None
    aset = load_checked(data, None, fmt, report=False)
    where = {str(aset.path(i).resolve()): i for i in range(len(aset))}
    missing = [f for f in files if f not in where]
    if missing:
        raise DataError(f"{path}: {len(missing)} of its {len(files)} images are not in {data} (first: {missing[0]})")
    out = aset.select_images([where[f] for f in files])
    out.splits = {}
    return out


def report_from_run(run_dir: str | Path, out_dir: str | Path | None = None, **kw: Any) -> Path:
    """Rebuild the report of training run ``run_dir`` (its val set from ``args.yaml``, its
    predictions from ``predictions.json``) into ``out_dir`` (default ``run_dir``/report), or of an
    ``odkit val --report`` folder (``source.yaml``; default: the folder itself)."""
    import yaml

    from odkit.engine.config import TrainConfig
    from odkit.engine.data import prepare_data

    run = Path(run_dir)
    args, source = run / "args.yaml", run / "source.yaml"
    preds = str(run / "predictions.json") if (run / "predictions.json").is_file() else None
    if source.is_file():
        if preds is None:
            raise DataError(f"{run}: no predictions.json")
        return write_report(out_dir or run, _val_source(source), preds, title=f"odkit val report: {run.name}", **kw)
    if not args.is_file():
        raise DataError(f"{run}: not a run directory (no args.yaml) nor an `odkit val --report` folder (no source.yaml)")
    try:
        doc = yaml.safe_load(args.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{args}: not valid YAML ({e})") from None
    val_set = None
    if preds is not None:
        val_set = prepare_data(TrainConfig.from_dict(doc), report=False).val
    else:
        log.warning("%s: no predictions.json, the report has no evaluation or gallery", run)
    return write_report(out_dir or run / "report", val_set, preds, run_dir=run, title=f"odkit report: {run.name}", **kw)
