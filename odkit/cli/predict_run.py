"""The loops of ``odkit predict``: images (decoded and resized in threads beside the network, batched,
results written as they come) and video / camera / stream frames."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np


class JsonArrayWriter:
    """A JSON array written one element at a time (nothing accumulates in memory)."""

    def __init__(self, path: Path) -> None:
        self.fh: TextIO = open(path, "w")  # noqa: SIM115 - closed in close()
        self.fh.write("[")
        self.count = 0

    def add(self, item: Any) -> None:
        self.fh.write(("," if self.count else "") + json.dumps(item))
        self.count += 1

    def close(self) -> None:
        self.fh.write("]")
        self.fh.close()


def _records(idx: int, f: Path, p: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Label-file lines and COCO result records of one image's predictions."""
    boxes, scores, labels = p["boxes"].numpy().tolist(), p["scores"].numpy().tolist(), p["labels"].numpy().tolist()
    lines = [f"{int(c)} {float(sc):.5f} " + " ".join(f"{v:.2f}" for v in b) for b, sc, c in zip(boxes, scores, labels)]
    recs = [{"image_id": idx, "file_name": str(f), "category_id": int(c),
             "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
             "score": round(float(sc), 5)} for b, sc, c in zip(boxes, scores, labels)]
    if "masks" in p:  # COCO segm results: the mask above 0.5 as a compressed RLE
        from odkit.ops.rle import to_coco
        from odkit.ops.roi_masks import masks_to_rles

        for r, rle in zip(recs, masks_to_rles(p["masks"])):
            r["segmentation"] = to_coco(rle)
    return lines, recs


def _masks(p: dict[str, Any]) -> Any:
    """The prediction's masks ``[K, H, W]`` as numpy for drawing (None without masks)."""
    return p["masks"][:, 0].numpy() if "masks" in p else None


def predict_images(pred: Any, args: argparse.Namespace, out: Path,
                   decode: Callable[[Path, list[tuple[str, str]]], Any]) -> int:
    """Predict every image of ``args.source``; ``decode(file, failures)`` gives its RGB array or None."""
    from tqdm import tqdm

    from odkit.data.imageio import write_image
    from odkit.engine.predictor import list_images
    from odkit.engine.stream import batched, prefetch

    files = list_images(args.source)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    # A plain model's images are resized in the threads; a wrapped one (slices, TTA, ensemble) gets them whole.
    plain = hasattr(pred, "predict_prepared")
    size = pred.input_side(args.img) if plain else None
    failures: list[tuple[str, str]] = []

    def prepare(item: tuple[int, Path]) -> tuple[int, Path, Any, Any, Any, list[tuple[str, str]]]:
        idx, f = item
        failed: list[tuple[str, str]] = []
        img = decode(f, failed)
        if img is None:
            return idx, f, None, None, None, failed
        if not plain:
            return idx, f, img, img, None, failed
        u8, meta = pred.fit(img, size, idx, str(f))
        return idx, f, img if args.save else None, u8, meta, failed

    def run(ok: list[Any]) -> list[dict[str, Any]]:
        if not plain:
            return pred.predict([c[3] for c in ok], conf=args.conf, iou=args.iou, max_det=args.max_det,
                                img_size=args.img, batch=args.batch)
        return pred.predict_prepared(np.stack([c[3] for c in ok]), [c[4] for c in ok], conf=args.conf,
                                     iou=args.iou, max_det=args.max_det)

    results = JsonArrayWriter(out / "predictions.json")
    n_boxes = n_done = 0
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=len(files) <= args.batch)
    try:
        for chunk in batched(prefetch(enumerate(files), prepare, args.workers, depth=4 * args.batch), args.batch):
            for c in chunk:
                failures += c[5]
            ok = [c for c in chunk if c[3] is not None]
            if ok:
                preds = run(ok)
                for (idx, f, img, _, _, _), p in zip(ok, preds):
                    n_done += 1
                    lines, recs = _records(idx, f, p)
                    n_boxes += len(lines)
                    (out / "labels" / f"{f.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                    for r in recs:
                        results.add(r)
                    if args.save:
                        from odkit.viz.draw import draw_boxes

                        write_image(out / f.name, draw_boxes(img, p["boxes"].numpy(), p["labels"].numpy(),
                                                             pred.class_names, scores=p["scores"].numpy(),
                                                             masks=_masks(p)))
            bar.update(len(chunk))
    finally:
        bar.close()
        results.close()
    with open(out / "categories.json", "w") as fh:
        json.dump([{"id": i, "name": n} for i, n in enumerate(pred.class_names)], fh)
    print(f"{n_done} image(s), {n_boxes} detection(s) -> {out}/ (predictions.json, labels/*.txt"
          + (", annotated images)" if args.save else ")") + f" [{getattr(pred, 'backend', 'graph')}]")
    if failures:
        (out / "failures.txt").write_text("".join(f"{f}\t{why}\n" for f, why in failures))
        print(f"{len(failures)} image(s) could not be read (listed in {out}/failures.txt):")
        for f, why in failures:
            print(f"  {f}: {why}")
        return 1
    return 0


def video_stem(source: str) -> str:
    """Output name of a video source: the file's stem, ``camera0`` or ``stream``."""
    if source.isdigit():
        return f"camera{source}"
    if "://" in source:
        return "stream"
    return Path(source).stem


def predict_video(pred: Any, args: argparse.Namespace, out: Path) -> int:
    """Predict the frames of a video file, camera or stream: ``<stem>.jsonl`` (one record per predicted
    frame) and with ``--save`` ``<stem>.mp4``. Exit 1 when the source stops early (outputs kept)."""
    from tqdm import tqdm

    from odkit.engine.stream import VideoSource, VideoWriter, batched
    from odkit.viz.draw import draw_boxes

    src = VideoSource(args.source, args.vid_stride)
    stem = video_stem(str(args.source))
    size = pred.input_side(args.img)
    writer = VideoWriter(out / f"{stem}.mp4", src.fps / src.stride, src.size) if args.save else None
    step = 1 if src.live else args.batch  # a live source is predicted frame by frame (no waiting for a batch)
    total = (src.frame_count + src.stride - 1) // src.stride if src.frame_count else None
    frames = 0
    interrupted = False
    with open(out / f"{stem}.jsonl", "w") as jl, tqdm(total=total, desc="predict", unit="frame") as bar:
        try:
            for chunk in batched(src, step):
                fitted = [pred.fit(img, size, idx) for idx, img in chunk]
                preds = pred.predict_prepared(np.stack([f[0] for f in fitted]), [f[1] for f in fitted],
                                              conf=args.conf, iou=args.iou, max_det=args.max_det)
                for (idx, img), p in zip(chunk, preds):
                    b, s, lab = p["boxes"].numpy(), p["scores"].numpy(), p["labels"].numpy()
                    jl.write(json.dumps({"frame": idx, "time_s": round(idx / src.fps, 4),
                                         "boxes": np.round(b, 2).tolist(), "scores": np.round(s, 5).tolist(),
                                         "labels": lab.tolist(), "names": [pred.class_names[int(c)] for c in lab]})
                             + "\n")
                    if writer is not None:
                        writer.write(draw_boxes(img, b, lab, pred.class_names, scores=s, masks=_masks(p)))
                    frames += 1
                jl.flush()
                bar.update(len(chunk))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if writer is not None:
                writer.close()
    written = f"{out / (stem + '.jsonl')}" + (f", {writer.path} ({writer.frames} frames)" if writer else "")
    print(f"{frames} frame(s) of {args.source} predicted -> {written}")
    if interrupted:
        print("interrupted: the outputs hold the frames predicted so far")
        return 130
    if src.stopped_early:
        what = (f"stopped after frame {src.frames_read} of {src.frame_count}" if src.frame_count
                else f"stopped after frame {src.frames_read}")
        print(f"error: {args.source} {what}; the outputs hold the frames read until then")
        return 1
    return 0
