"""Darknet weights parity: odkit against an independent darknet reader (``pytorchyolo``'s ``Darknet``).

For each model (yolov3, yolov3-tiny; 80 classes) an odkit model gets random weights (BatchNorm
statistics included), odkit writes them as a darknet ``.weights`` file, and both odkit
(``import_darknet``) and ``pytorchyolo.models.Darknet`` (with darknet's cfg: ``--cfg-dir`` holding
``yolov3.cfg`` / ``yolov3-tiny.cfg``, else the cfg odkit writes) load that file. On the same input
batch it prints the largest differences of the raw decoded outputs (boxes in pixels, scores
objectness x class) and of the detections after each side's NMS (same score and IoU thresholds,
boxes clipped to the input after NMS), and the share of detections reproduced.

Run in an environment with pytorchyolo and torchvision (never odkit dependencies), e.g.:

    PYTHONPATH=.:DIR_WITH_PYTORCHYOLO python benchmarks/darknet_parity.py --cfg-dir DARKNET/cfg

pytorchyolo imports ``imgaug`` only to seed it; the script stubs that module when it is missing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random BatchNorm statistics and affine terms, and prediction layers whose scores spread. The
    BatchNorm scales are halved in Darknet-53's 75 layers (23 residual sums): at full scale its
    activations grow to 1e5 and every box overflows ``exp``."""
    g = torch.Generator().manual_seed(seed)
    depth = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    gain = 0.5 if depth > 30 else 1.0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):  # He-scaled kernels: activations of order 1 at every depth
            fan_in = m.weight[0].numel()
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_((torch.rand(n, generator=g) + 0.5) * gain)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    for conv in model.head.preds:
        conv.weight.data.mul_(0.3)
        conv.bias.data.copy_(torch.randn(conv.bias.shape, generator=g) - 2.0)


def _stub_imgaug() -> None:
    if "imgaug" not in sys.modules:
        try:
            import imgaug  # noqa: F401
        except ImportError:
            sys.modules["imgaug"] = types.ModuleType("imgaug")


def pytorchyolo_model(cfg: Path, weights: Path) -> torch.nn.Module:
    _stub_imgaug()
    from pytorchyolo.models import Darknet

    model = Darknet(str(cfg))
    model.load_darknet_weights(str(weights))
    return model.eval()


def odkit_order(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Indices that put odkit's priors (levels finest first; per level y, x, anchor) in pytorchyolo's
    order (levels coarsest first; per level anchor, y, x)."""
    head = model.head
    sizes = [(x.shape[2] // s, x.shape[3] // s) for s in head.strides]
    k = len(head.anchors) // len(head.strides)
    starts, start = [], 0
    for h, w in sizes:
        starts.append(start)
        start += h * w * k
    order = []
    for lvl in reversed(range(len(sizes))):
        h, w = sizes[lvl]
        a, yy, xx = torch.meshgrid(torch.arange(k), torch.arange(h), torch.arange(w), indexing="ij")
        order.append(starts[lvl] + (yy * w + xx) * k + a)
    return torch.cat([o.reshape(-1) for o in order])


def compare(name: str, cfg_dir: Path | None, img: int, conf: float, iou: float, seed: int) -> dict[str, float]:
    _stub_imgaug()
    from pytorchyolo.utils.utils import non_max_suppression

    from odkit.models import zoo
    from odkit.weights.darknet_cfg import darknet_cfg
    from odkit.weights.darknet_import import export_darknet, import_darknet

    torch.manual_seed(seed)
    src = zoo.build(name, num_classes=80).eval()
    randomize(src, seed)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{name}.weights"
        export_darknet(src, weights)
        cfg = cfg_dir / f"{name}.cfg" if cfg_dir else Path(tmp) / f"{name}.cfg"
        if not cfg_dir:
            cfg.write_text(darknet_cfg(src))
        ours = import_darknet(weights, name, cfg=cfg).model.eval()
        ours.head.clip_before_nms = False  # pytorchyolo's NMS sees unclipped boxes
        ref = pytorchyolo_model(cfg, weights)
    x = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        raw = ref(x)  # [B, N, 85]: cx, cy, w, h (px), sigmoid obj, sigmoid classes
        feats = ours.neck(ours.backbone((x - ours.pixel_mean) / ours.pixel_std))
        boxes, scores = ours.head.decode_outputs(ours.head(feats), (img, img))
        metas = [{"orig_size": (img, img), "ratio": 1.0, "pad": (0.0, 0.0)}] * 2
        dets = ours.predict(x, metas, conf=conf, iou=iou, max_det=300, pre_topk=100000)
    idx = odkit_order(ours, x)
    boxes, scores = boxes[:, idx], scores[:, idx]
    ref_xyxy = torch.cat((raw[..., :2] - raw[..., 2:4] / 2, raw[..., :2] + raw[..., 2:4] / 2), -1)
    ref_scores = raw[..., 4:5] * raw[..., 5:]
    out = {"raw_box_px": float((boxes - ref_xyxy).abs().max()), "raw_score": float((scores - ref_scores).abs().max())}
    ref_dets = non_max_suppression(raw.clone(), conf, iou)
    worst_box, worst_score, matched, total = 0.0, 0.0, 0, 0
    for d, r in zip(dets, ref_dets):
        r = r.clone()
        r[:, [0, 2]] = r[:, [0, 2]].clamp(0, img)
        r[:, [1, 3]] = r[:, [1, 3]].clamp(0, img)
        total += len(r)
        used = torch.zeros(len(d["scores"]), dtype=torch.bool)
        for row in r:
            same = (d["labels"] == int(row[5])) & ~used
            if not bool(same.any()):
                continue
            err = (d["boxes"] - row[:4]).abs().amax(1).masked_fill(~same, float("inf"))
            j = int(err.argmin())
            if float(err[j]) <= 0.01 and abs(float(d["scores"][j]) - float(row[4])) <= 1e-4:
                used[j] = True
                matched += 1
                worst_box = max(worst_box, float(err[j]))
                worst_score = max(worst_score, abs(float(d["scores"][j]) - float(row[4])))
    out.update({"dets_ref": total, "dets_odkit": sum(len(d["scores"]) for d in dets), "dets_matched": matched,
                "det_box_px": worst_box, "det_score": worst_score})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="yolov3-tiny,yolov3")
    ap.add_argument("--cfg-dir", type=Path, default=None, help="folder with darknet's yolov3.cfg / yolov3-tiny.cfg")
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--conf", type=float, default=0.5)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print(f"darknet weights parity, odkit vs pytorchyolo Darknet ({'darknet cfgs from ' + str(args.cfg_dir) if args.cfg_dir else 'cfgs written by odkit'}), "
          f"{args.img} px, batch 2, conf {args.conf}, NMS IoU {args.iou}")
    print(f"{'model':<12} {'raw box px':>11} {'raw score':>10} {'dets ref':>9} {'dets odkit':>11} {'matched':>8} "
          f"{'det box px':>11} {'det score':>10}")
    ok = True
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = compare(name, args.cfg_dir, args.img, args.conf, args.iou, args.seed)
        good = (r["raw_box_px"] <= 0.01 and r["raw_score"] <= 1e-4 and r["dets_matched"] == r["dets_ref"]
                == r["dets_odkit"])
        ok &= good
        print(f"{name:<12} {r['raw_box_px']:>11.2e} {r['raw_score']:>10.2e} {r['dets_ref']:>9d} {r['dets_odkit']:>11d} "
              f"{r['dets_matched']:>8d} {r['det_box_px']:>11.2e} {r['det_score']:>10.2e}  {'OK' if good else 'DIFFERS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
