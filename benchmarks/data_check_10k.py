"""``odkit data check`` on 10,000 synthetic images with YOLO labels, against a 10 s target.

Writes (once, into ``--out``) 10,000 small JPEGs (64 x 64 noise with a few boxes) with YOLO label
files, split 8,000 train / 2,000 val, a data.yaml, and a handful of planted problems: a renamed
copy of a train image in val (found by content hash), a truncated JPEG, an image without a label
file. Then runs ``python -m odkit data check`` in a fresh process (imports included) and prints the
wall time, its ratio to the target, what the check found, and how many files the split-overlap
check hashed (files of equal size in different splits).

    python benchmarks/data_check_10k.py [--out /tmp/odkit_check_10k] [--n 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

TARGET_S = 10.0


def generate(out: Path, n: int, size: int = 64) -> None:
    """Images ``images/{train,val}/NNNNN.jpg`` and labels ``labels/{train,val}/NNNNN.txt``."""
    rng = np.random.default_rng(0)
    n_val = n // 5
    for i in range(n):
        split = "val" if i < n_val else "train"
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)  # JPEG sizes vary a little, as real photos' do
        p = out / "images" / split / f"{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
        k = int(rng.integers(0, 4))
        cx, cy = rng.uniform(0.2, 0.8, k), rng.uniform(0.2, 0.8, k)
        w, h = rng.uniform(0.05, 0.3, k), rng.uniform(0.05, 0.3, k)
        lines = "".join(f"{int(c)} {a:.5f} {b:.5f} {d:.5f} {e:.5f}\n"
                        for c, a, b, d, e in zip(rng.integers(0, 3, k), cx, cy, w, h))
        lp = out / "labels" / split / f"{i:05d}.txt"
        lp.parent.mkdir(parents=True, exist_ok=True)
        lp.write_text(lines)
    # planted problems
    shutil.copyfile(out / "images" / "train" / f"{n_val:05d}.jpg", out / "images" / "val" / "leak.jpg")
    shutil.copyfile(out / "labels" / "train" / f"{n_val:05d}.txt", out / "labels" / "val" / "leak.txt")
    t = out / "images" / "train" / f"{n_val + 1:05d}.jpg"
    t.write_bytes(t.read_bytes()[: t.stat().st_size // 2])
    (out / "labels" / "train" / f"{n_val + 2:05d}.txt").unlink()
    (out / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b, c]\n")


def hashed_files(out: Path) -> int:
    """Files the overlap check hashes: those whose byte size occurs in both splits."""
    sizes = {s: Counter(p.stat().st_size for p in (out / "images" / s).glob("*.jpg")) for s in ("train", "val")}
    shared = sizes["train"].keys() & sizes["val"].keys()
    return sum(sizes[s][z] for s in sizes for z in shared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "odkit_check_10k"),
                    help="folder of the generated data set (default: odkit_check_10k in the temp folder)")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    out = Path(args.out)
    if not (out / "data.yaml").is_file():
        t0 = time.perf_counter()
        generate(out, args.n)
        print(f"generated {args.n} images with YOLO labels in {time.perf_counter() - t0:.1f} s -> {out}")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "odkit", "data", "check", str(out), "--json", str(out / "report.json")]
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
        times.append(time.perf_counter() - t0)
    rep = json.loads((out / "report.json").read_text())
    print(r.stdout.split("\n\n")[0])
    med = float(np.median(times))
    print(f"\nodkit data check, {rep['images']} images, {rep['boxes']} boxes: median {med:.2f} s over {args.runs} "
          f"runs ({', '.join(f'{t:.2f}' for t in times)}), {hashed_files(out)} files content-hashed for split "
          f"overlap; target {TARGET_S:.0f} s -> ratio {med / TARGET_S:.2f} (< 1: within target); exit {r.returncode}")
    found = {k: rep["counts"].get(k, 0) for k in ("split_overlap", "truncated_image", "negative_by_convention")}
    print(f"planted problems found: {found}")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": rep["images"], "boxes": rep["boxes"], "times_s": times,
                                               "median_s": med, "target_s": TARGET_S, "found": found,
                                               "cpus": os.cpu_count()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
