"""Parity of ``odkit weights import --from yolox`` with the official YOLOX code.

Usage: python benchmarks/yolox_parity.py YOLOX_ROOT [--models nano s] [--write-fixtures tests/fixtures]

YOLOX_ROOT is a checkout (or copy) of Megvii-BaseDetection/YOLOX; only ``yolox/models/*.py`` and
``yolox/utils/compat.py`` are read, loaded as the ``yolox.models`` package without the rest of
``yolox`` (its training-only helpers are replaced by stubs that raise; loguru by ``logging`` when it
is not installed). Nothing of it is copied into odkit.

For each model (official exp settings: depth / width, depthwise for nano, 80 classes, BatchNorm eps
1e-3) at its full input size (416 nano / tiny, 640 otherwise):

1. build the official model with a fixed seed, randomise BatchNorm affine terms and the prediction
   biases (so scores spread over (0, 1)), calibrate BatchNorm statistics on random images (so
   activations stay in range) and save ``{"model": state_dict}`` as an official-layout ``.pth``;
2. import it with ``odkit.weights.import_weights`` (written as odkit weights) and ``odkit.load`` them;
3. on a fixed picture of the input size (so letterboxing is the identity), compare the decoded
   outputs of the official model (BGR 0-255 input) with odkit's (``forward_export`` of the imported
   model and of the ``odkit.load``-ed one, RGB [0, 1] input): largest box difference in pixels and
   largest score difference (``obj * cls``); and the detections of ``Predictor.predict`` on the RGB
   picture with those obtained from the official decoded outputs by the same per-level filtering
   and class-wise NMS; and, when onnxruntime is installed, the decoded outputs of the ONNX export
   of the imported weights (``odkit.export.export``) run by onnxruntime.

With ``--write-fixtures DIR`` it also writes ``DIR/yolox_keys/yolox_{nano,s}.json`` (the official key
names and shapes at 80 classes) and ``DIR/yolox_parity/`` (a yolox-nano with 3 classes, float16
weights in official layout, and the official decoded outputs on a 64 x 64 picture) for
``tests/test_weights_import.py``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import odkit
from odkit.models.postprocess import postprocess_candidates
from odkit.weights import import_weights

# Official exp settings: name -> (depth, width, depthwise, test size)
OFFICIAL = {
    "nano": (0.33, 0.25, True, 416),
    "tiny": (0.33, 0.375, False, 416),
    "s": (0.33, 0.50, False, 640),
    "m": (0.67, 0.75, False, 640),
    "l": (1.0, 1.0, False, 640),
    "x": (1.33, 1.25, False, 640),
}
STRIDES = (8, 16, 32)


def load_official(root: Path) -> types.ModuleType:
    """The official ``yolox.models`` package from ``root`` (a YOLOX checkout)."""
    pkg_dir = root / "yolox"
    if not (pkg_dir / "models" / "yolo_head.py").is_file():
        raise SystemExit(f"{root} is not a YOLOX checkout (no yolox/models/yolo_head.py)")
    for name in [m for m in sys.modules if m == "yolox" or m.startswith("yolox.")]:
        del sys.modules[name]
    pkg = types.ModuleType("yolox")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["yolox"] = pkg
    spec = importlib.util.spec_from_file_location("yolox_compat", pkg_dir / "utils" / "compat.py")
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    utils = types.ModuleType("yolox.utils")

    def training_only(*_a: Any, **_k: Any) -> Any:
        raise NotImplementedError("training-only helper, not loaded by this script")

    utils.meshgrid = compat.meshgrid
    utils.bboxes_iou = utils.cxcywh2xyxy = utils.visualize_assign = training_only
    sys.modules["yolox.utils"] = utils
    try:
        import loguru  # noqa: F401
    except ImportError:
        stub = types.ModuleType("loguru")
        stub.logger = logging.getLogger("yolox")
        sys.modules["loguru"] = stub
    return importlib.import_module("yolox.models")


def official_model(ym: types.ModuleType, name: str, num_classes: int) -> nn.Module:
    """The official YOLOX model as its exp's ``get_model`` builds it (BN eps 1e-3, prior biases)."""
    depth, width, dw, _ = OFFICIAL[name]
    in_channels = [256, 512, 1024]
    backbone = ym.YOLOPAFPN(depth, width, in_channels=in_channels, act="silu", depthwise=dw)
    head = ym.YOLOXHead(num_classes, width, in_channels=in_channels, act="silu", depthwise=dw)
    model = ym.YOLOX(backbone, head)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    return model


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """A fixed uint8 RGB picture: smooth colour fields plus a few filled rectangles."""
    g = np.random.default_rng(seed)
    small = g.uniform(0, 255, (max(h // 16, 2), max(w // 16, 2), 3)).astype(np.float32)
    img = torch.nn.functional.interpolate(
        torch.from_numpy(small).permute(2, 0, 1)[None], size=(h, w), mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0).numpy()
    for _ in range(6):
        x0, y0 = g.integers(0, w - 8), g.integers(0, h - 8)
        x1, y1 = g.integers(x0 + 4, min(w, x0 + w // 2) + 1), g.integers(y0 + 4, min(h, y0 + h // 2) + 1)
        img[y0:y1, x0:x1] = g.uniform(0, 255, 3)
    img += g.normal(0, 8, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def bgr255(rgb: np.ndarray) -> torch.Tensor:
    """Official model input: ``[1, 3, H, W]`` BGR with 0-255 values."""
    return torch.from_numpy(np.ascontiguousarray(rgb[..., ::-1])).permute(2, 0, 1)[None].float()


@torch.no_grad()
def randomise(model: nn.Module, seed: int, test_rgb: np.ndarray, half: bool = False) -> None:
    """Random BN affine terms and prediction layers, then BN statistics calibrated on the test picture
    and random pictures of its size, so that activations and decoded boxes stay in a realistic range
    (an uncalibrated random network has exploding activations and is chaotic)."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
    head = model.head
    for conv in list(head.cls_preds) + list(head.obj_preds):
        conv.weight.mul_(0.25)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 1.5)
    for conv in head.reg_preds:
        conv.weight.mul_(0.1)
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.3)
    if half:  # the weights that will be stored are float16: calibrate and run on those values
        for p in model.parameters():
            p.copy_(p.half().float())
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    h, w = test_rgb.shape[:2]
    for k in range(3):
        x = torch.cat([bgr255(picture(h, w, 1000 * seed + k)), bgr255(test_rgb)])
        feats = model.backbone(x)
        for i, f in enumerate(feats):
            t = head.stems[i](f)
            head.cls_convs[i](t)
            head.reg_convs[i](t)
    for bn in bns:
        bn.momentum = 0.03
    if half:
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())
    model.eval()


@torch.no_grad()
def official_decoded(model: nn.Module, rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official decoded output ``[1, N, 5 + C]`` on ``rgb`` (fed as BGR 0-255), and its xyxy boxes
    and ``obj * cls`` scores."""
    out = model(bgr255(rgb))
    cx, cy, w, h = out[..., 0], out[..., 1], out[..., 2], out[..., 3]
    boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    scores = out[..., 4:5] * out[..., 5:]
    return out, boxes, scores


def rgb01(rgb: np.ndarray) -> torch.Tensor:
    """odkit model input: ``[1, 3, H, W]`` RGB in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0)


def reference_detections(boxes: torch.Tensor, scores: torch.Tensor, size: int, conf: float, iou: float,
                         max_det: int, pre_topk: int) -> dict[str, torch.Tensor]:
    """Detections from official decoded outputs (one image) with odkit's per-level filtering and NMS."""
    counts = [(size // s) ** 2 for s in STRIDES]
    c = scores.shape[-1]
    out_b, out_s, out_l = [], [], []
    start = 0
    for n in counts:
        s = scores[start:start + n].reshape(-1)
        idx = (s > conf).nonzero().squeeze(1)
        vals = s[idx]
        if pre_topk > 0 and vals.numel() > pre_topk:
            vals, order = vals.topk(pre_topk)
            idx = idx[order]
        out_b.append(boxes[start:start + n][idx // c])
        out_s.append(vals)
        out_l.append(idx % c)
        start += n
    cand = [(torch.cat(out_b).float(), torch.cat(out_s).float(), torch.cat(out_l))]
    identity = {"orig_size": (size, size), "ratio": 1.0, "pad": (0, 0)}  # boxes clipped like Predictor's
    return postprocess_candidates(cand, [identity], iou, max_det)[0]


def by_position(det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detections ordered by (label, x1, y1), so that near-equal scores do not change the order."""
    key = det["labels"].double() * 1e6 + det["boxes"][:, 0].double().round() * 1e2 + det["boxes"][:, 1].double() / 1e2
    order = key.argsort()
    return {k: v[order] for k, v in det.items()}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def key_listing(model: nn.Module, name: str, commit: str) -> dict[str, Any]:
    sd = model.state_dict()
    return {
        "model": f"yolox-{name}",
        "source": f"Megvii-BaseDetection/YOLOX {commit}: yolox/models (YOLOX(YOLOPAFPN, YOLOXHead)), exp "
                  f"settings depth/width {OFFICIAL[name][:2]}, depthwise={OFFICIAL[name][2]}",
        "num_classes": 80,
        "note": "state-dict key names and shapes (shape [] = scalar buffer) of the official model",
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "state_dict": {k: list(v.shape) for k, v in sd.items()},
    }


def dump_listing(listing: dict[str, Any]) -> str:
    """JSON with one state-dict entry per line."""
    head = {k: v for k, v in listing.items() if k != "state_dict"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in listing["state_dict"].items()]
    return "{\n" + "\n".join(lines) + '\n  "state_dict": {\n' + ",\n".join(rows) + "\n  }\n}\n"


def write_tiny_fixture(ym: types.ModuleType, out_dir: Path, commit: str, seed: int = 0) -> None:
    """yolox-nano, 3 classes, float16 weights in official layout, official outputs at 64 x 64."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = official_model(ym, "nano", 3)
    rgb = picture(64, 64, seed + 7)
    randomise(model, seed, rgb, half=True)
    raw, boxes, scores = official_decoded(model, rgb)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    meta = {"source": f"Megvii-BaseDetection/YOLOX {commit}", "model": "yolox-nano", "num_classes": "3",
            "seed": str(seed), "written_by": "benchmarks/yolox_parity.py --write-fixtures"}
    save_file(sd, str(out_dir / "yolox_nano_c3.safetensors"), metadata=meta)
    save_file(
        {"image_rgb": torch.from_numpy(rgb).contiguous(), "raw": raw[0].contiguous(),
         "boxes": boxes[0].contiguous(), "scores": scores[0].contiguous()},
        str(out_dir / "yolox_nano_c3_outputs.safetensors"),
        metadata={**meta, "input": "image_rgb fed to the official model as BGR 0-255, [1, 3, 64, 64]",
                  "raw": "official decoded output [N, 5 + C]: cx cy w h obj cls...",
                  "boxes": "xyxy from raw", "scores": "obj * cls"},
    )
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"tiny fixture -> {out_dir} ({size / 1e6:.2f} MB): boxes {tuple(boxes.shape)}, "
          f"score range {float(scores.min()):.4f}..{float(scores.max()):.4f}")


def parity(ym: types.ModuleType, name: str, seed: int, work: Path) -> dict[str, Any]:
    """Official vs imported outputs of one model at its full input size."""
    size = OFFICIAL[name][3]
    torch.manual_seed(seed)
    ref = official_model(ym, name, 80)
    rgb = picture(size, size, seed + 7)
    randomise(ref, seed, rgb)
    pth = work / f"yolox_{name}.pth"
    torch.save({"start_epoch": 300, "model": ref.state_dict()}, pth)
    _, rboxes, rscores = official_decoded(ref, rgb)

    out = work / f"yolox_{name}.safetensors"
    report = import_weights(pth, "yolox", f"yolox-{name}", out=out)
    if not report.ok:
        raise SystemExit(f"yolox-{name}: import incomplete: " + "; ".join(report.lines()))
    x = rgb01(rgb)
    with torch.no_grad():
        b1, s1 = report.model.eval().forward_export(x)
        pred = odkit.load(out)
        b2, s2 = pred.model.forward_export(x)
    # threshold at the 500th best (prior, class) score, no max_det truncation: the detections do not
    # hinge on near-equal scores at a cut-off
    conf, iou, max_det = float(rscores.flatten().topk(500).values[-1]), 0.45, 10000
    dets = pred.predict(rgb, conf=conf, iou=iou, max_det=max_det, img_size=size)[0]
    refd = reference_detections(rboxes[0], rscores[0], size, conf, iou, max_det,
                                int(pred.model.postprocess_defaults["pre_topk"]))
    onnx_box = onnx_score = float("nan")
    try:
        import onnxruntime  # noqa: F401

        from odkit.export import export, load_predictor
    except ImportError:
        pass
    else:  # the exported graph of the imported weights, run by onnxruntime
        onnx_path = export(out, "onnx", img_size=size, out=work / f"yolox_{name}.onnx")
        b3, s3 = load_predictor(onnx_path).run(x)[:2]
        onnx_box, onnx_score = max_diff(torch.from_numpy(b3[0]), rboxes[0]), max_diff(torch.from_numpy(s3[0]), rscores[0])
    dets, refd = by_position(dets), by_position(refd)
    same_n = len(dets["boxes"]) == len(refd["boxes"])
    return {
        "model": f"yolox-{name}",
        "input": f"{size}x{size}",
        "priors": int(rboxes.shape[1]),
        "mapped": len(report.mapped),
        "box_px": max_diff(b1[0], rboxes[0]),
        "score": max_diff(s1[0], rscores[0]),
        "load_box_px": max_diff(b2[0], rboxes[0]),
        "load_score": max_diff(s2[0], rscores[0]),
        "onnx_box_px": onnx_box,
        "onnx_score": onnx_score,
        "dets": f"{len(dets['boxes'])}/{len(refd['boxes'])} at conf {conf:.3f}",
        "det_box_px": max_diff(dets["boxes"], refd["boxes"]) if same_n else float("nan"),
        "det_score": max_diff(dets["scores"], refd["scores"]) if same_n else float("nan"),
        "labels_equal": bool(same_n and torch.equal(dets["labels"], refd["labels"])),
        "score_range": f"{float(rscores.min()):.3g}..{float(rscores.max()):.3g}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("yolox_root", type=Path, help="YOLOX checkout (holds yolox/models)")
    ap.add_argument("--models", nargs="*", default=["nano", "s"], choices=sorted(OFFICIAL))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-fixtures", type=Path, metavar="DIR", help="also write the test fixtures here")
    ap.add_argument("--commit", default=None, help="YOLOX commit recorded in fixtures (default: git rev-parse)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", str(args.yolox_root), "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown commit"
    ym = load_official(args.yolox_root)
    print(f"official YOLOX: {args.yolox_root} ({commit}); torch {torch.__version__}, odkit {odkit.__version__}")
    if args.write_fixtures:
        keys_dir = args.write_fixtures / "yolox_keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        for name in ("nano", "s"):
            listing = key_listing(official_model(ym, name, 80), name, commit)
            (keys_dir / f"yolox_{name}.json").write_text(dump_listing(listing))
            print(f"keys -> {keys_dir / f'yolox_{name}.json'} ({len(listing['state_dict'])} keys)")
        write_tiny_fixture(ym, args.write_fixtures / "yolox_parity", commit, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(parity(ym, name, args.seed, Path(tmp)))
    cols = ["model", "input", "priors", "mapped", "box_px", "score", "load_box_px", "load_score", "onnx_box_px",
            "onnx_score", "dets",
            "det_box_px", "det_score", "labels_equal", "score_range"]
    print("largest |official - odkit| of decoded outputs (box: px, xyxy; score: obj * cls), full size:")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    ok = all(r["box_px"] <= 0.01 and r["score"] <= 1e-4 and r["load_box_px"] <= 0.01 and r["load_score"] <= 1e-4
             and r["labels_equal"] and r["det_box_px"] <= 0.01 and r["det_score"] <= 1e-4
             and not r["onnx_box_px"] > 0.01 and not r["onnx_score"] > 1e-4 for r in rows)
    print("parity (boxes within 0.01 px, scores within 1e-4):", "yes" if ok else "NO")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
