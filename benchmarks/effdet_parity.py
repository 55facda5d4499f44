"""Parity of odkit's EfficientDet with effdet's for the same weights.

Runs in a separate environment that has effdet and timm (never odkit dependencies):

    $(../shared/tools/reference-env DIR effdet timm | tail -1) benchmarks/effdet_parity.py \
        [--sizes 512,640] [--batches 1,2] [--models d0,d1]

For each model: effdet's ``tf_efficientdet_dN`` (90 classes, ``image_size`` = the picture size) gets
deterministic synthetic weights (``tests/_tv_weights.py`` on its key layout; class-logit biases
~ N(-2, 1) and class predictor x3 so scores spread, fusion weights ~ U(0.5, 1.5), BatchNorm statistics
of one pass over the pictures), its state dict is saved as a ``.pth`` and
imported with ``odkit weights import --from effdet``. Both predict the same photo-like pictures with
their own pre- and post-processing: effdet's ``DetBenchPredict`` on the ImageNet-normalised batch
(top 5000 logits over all levels, boxes clipped, batched NMS 0.5, 100 per image; its class ``c + 1``
is odkit's label ``c``), odkit's ``Predictor`` on the uint8 pictures. Printed per model, size and
batch: parameter counts, the share of effdet's detections odkit reproduces (same label, box within
0.05 px, score within 1e-3) and the largest differences over matched pairs; unmatched detections are
listed with their nearest odkit partner.

``--write-fixture PATH`` writes a tiny configuration's key layout, BatchNorm statistics, two pictures
and effdet's detections for ``tests/test_weights_effdet_parity.py`` (runs without effdet).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from tv_parity import match, picture  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def synthetic_weights(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """``_tv_weights.synthetic_state_dict`` with EfficientDet's class-logit biases ~ N(-2, 1) and fusion
    weights ~ U(0.5, 1.5) (deterministic in ``seed``); BatchNorm statistics come from :func:`calibrate`."""
    from _tv_weights import synthetic_state_dict

    sd = synthetic_state_dict(shapes, seed)
    rng = np.random.RandomState(seed + 1)
    for k in sorted(sd):
        if k == "class_net.predict.conv_pw.bias":
            sd[k] = torch.from_numpy(rng.normal(-2.0, 1.0, sd[k].shape).astype(np.float32))
        elif k == "class_net.predict.conv_pw.weight":
            sd[k] = sd[k] * 3.0  # spread the logits over locations more than the biases do
        elif k.endswith("edge_weights"):
            sd[k] = torch.from_numpy(rng.uniform(0.5, 1.5, sd[k].shape).astype(np.float32))
    return sd


def calibrate(model: torch.nn.Module, images: list[np.ndarray]) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (the compared pictures and two
    others; cumulative average of one training-mode pass), so synthetic features keep unit scale
    through the network and the outputs vary over locations as a trained network's do (without it,
    logits saturate on some pictures and the top scores tie at 1.0)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(normalize(images))
    model.eval()


def normalize(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC RGB pictures -> effdet's input (ImageNet mean / std), ``[B, 3, H, W]``."""
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() for im in images]) / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def effdet_model(name: str, size: int, **overrides) -> torch.nn.Module:
    """effdet's predict bench of ``name`` at ``size`` (no pretrained weights)."""
    from effdet import create_model

    return create_model(name, bench_task="predict", num_classes=90, pretrained=False, pretrained_backbone=False,
                        image_size=(size, size), **overrides).eval()


def effdet_predict(bench: torch.nn.Module, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
    """effdet detections of uint8 pictures (its normalisation, clipped to the picture), labels 0-based."""
    x = normalize(images)
    h, w = images[0].shape[:2]
    info = {"img_scale": torch.ones(len(images)), "img_size": torch.tensor([[w, h]] * len(images), dtype=torch.float32)}
    with torch.no_grad():
        det = bench(x, img_info=info)
    out = []
    for d in det:
        d = d[d[:, 4] > 0]  # effdet pads to 100 rows with zeros
        out.append({"boxes": d[:, :4].contiguous(), "scores": d[:, 4].contiguous(), "labels": d[:, 5].long() - 1})
    return out


def unmatched(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], box_tol: float = 0.05,
              score_tol: float = 1e-3) -> list[str]:
    """One line per reference detection without a partner: its rank, label, score, and the nearest odkit
    detection of the same label."""
    lines = []
    for r, (b, s, lab) in enumerate(zip(ref["boxes"], ref["scores"], ref["labels"])):
        same = got["labels"] == lab
        d_box = (got["boxes"] - b).abs().amax(1) if len(got["boxes"]) else torch.zeros(0)
        ok = same & (d_box <= box_tol) & ((got["scores"] - s).abs() <= score_tol)
        if bool(ok.any()):
            continue
        near = ""
        if bool(same.any()):
            j = int(torch.where(same, d_box, torch.full_like(d_box, float("inf"))).argmin())
            near = f"; nearest odkit: |box| {float(d_box[j]):.3g} px, score {float(got['scores'][j]):.6f}"
        lines.append(f"    effdet #{r} label {int(lab)} score {float(s):.6f}{near}")
    return lines


def run(key: str, size: int, batch: int, seed: int, workdir: Path) -> dict:
    """Compare effdet's ``tf_efficientdet_<key>`` with odkit's ``efficientdet-<key>`` on ``batch`` pictures."""
    import odkit
    from odkit.weights import import_weights

    # "d0": effdet's tf_efficientdet_d0; "pt-d0": its efficientdet_d0 (PyTorch padding, no redundant biases)
    ref_name = f"efficientdet_{key[3:]}" if key.startswith("pt-") else f"tf_efficientdet_{key}"
    name = f"efficientdet-{key.removeprefix('pt-')}"
    bench = effdet_model(ref_name, size)
    shapes = {k: list(v.shape) for k, v in bench.model.state_dict().items()}
    bench.model.load_state_dict(synthetic_weights(shapes, seed))
    images = [picture(size, seed + i) for i in range(batch)]
    calibrate(bench.model, images + [picture(size, seed + 50 + i) for i in range(2)])
    pth = workdir / f"{ref_name}_{seed}.pth"
    torch.save(bench.model.state_dict(), pth)
    refs = effdet_predict(bench, images)
    out = workdir / f"{name}_{seed}.safetensors"
    report = import_weights(pth, source="effdet", model=name, out=out)
    if not report.ok or report.unexpected:
        raise SystemExit(f"import of {pth} failed: {report.lines()}")
    gots = odkit.load(out).predict(images, img_size=size, batch=batch)
    rows = []
    for ref, got in zip(refs, gots):
        rows.append((*match(ref, got), len(got["scores"]), unmatched(ref, got)))
    n = sum(r[3] for r in rows)
    return {"model": name, "reference": ref_name, "size": size, "batch": batch, "ref_dets": n,
            "odkit_dets": sum(r[4] for r in rows), "matched": sum(r[0] * r[3] for r in rows) / max(n, 1),
            "max_box_px": max(r[1] for r in rows), "max_score": max(r[2] for r in rows),
            "unmatched": [line for r in rows for line in r[5]],
            "ref_params": sum(p.numel() for p in bench.model.parameters()),
            "odkit_params": sum(p.numel() for p in report.model.parameters())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,640", help="square picture and network input sizes (multiples of 128)")
    ap.add_argument("--batches", default="1,2", help="batch sizes")
    ap.add_argument("--models", default="d0,d1", help="compound levels: d0, d1, d2 (tf_efficientdet_dN), "
                                                        "pt-d0, pt-d1 (efficientdet_dN)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and pictures")
    ap.add_argument("--write-fixture", default=None, help="write the tiny CI fixture here (.safetensors)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.write_fixture:
        return write_fixture(Path(args.write_fixture), args.seed)
    import timm
    from effdet.version import __version__ as effdet_version

    print(f"torch {torch.__version__}, effdet {effdet_version}, timm {timm.__version__}, "
          f"synthetic weights seed {args.seed}")
    print(f"{'effdet model':<20} {'size':>5} {'batch':>5} {'params effdet':>13} {'params odkit':>12} {'ref dets':>8} "
          f"{'odkit dets':>10} {'matched':>8} {'max |box| px':>12} {'max |score|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            for size in [int(s) for s in args.sizes.split(",")]:
                for batch in [int(b) for b in args.batches.split(",")]:
                    r = run(key, size, batch, args.seed, Path(tmp))
                    print(f"{r['reference']:<20} {size:>5d} {batch:>5d} {r['ref_params']:>13d} {r['odkit_params']:>12d} "
                          f"{r['ref_dets']:>8d} {r['odkit_dets']:>10d} {100 * r['matched']:>7.2f}% "
                          f"{r['max_box_px']:>12.2e} {r['max_score']:>11.2e}", flush=True)
                    for line in r["unmatched"]:
                        print(line)
    return 0


# The CI fixture: effdet's tf_efficientdet_d0 layout shrunk (B0 backbone, 16-channel BiFPN of one cell,
# one head repeat, 4 classes) at 256 px, small enough to commit.
TINY = {"fpn_channels": 16, "fpn_cell_repeats": 1, "box_class_repeats": 1}
TINY_SIZE = 256
TINY_CLASSES = 4


def write_fixture(path: Path, seed: int) -> int:
    from effdet import DetBenchPredict, EfficientDet, get_efficientdet_config
    from safetensors.torch import save_file

    config = get_efficientdet_config("tf_efficientdet_d0")
    config.update({**TINY, "num_classes": TINY_CLASSES, "image_size": (TINY_SIZE, TINY_SIZE)})
    bench = DetBenchPredict(EfficientDet(config, pretrained_backbone=False)).eval()
    shapes = {k: list(v.shape) for k, v in bench.model.state_dict().items()}
    bench.model.load_state_dict(synthetic_weights(shapes, seed))
    images = [picture(TINY_SIZE, seed + i) for i in range(2)]
    calibrate(bench.model, images + [picture(TINY_SIZE, seed + 50 + i) for i in range(2)])
    refs = effdet_predict(bench, images)
    fixture: dict[str, torch.Tensor] = {
        f"bn.{k}": v for k, v in bench.model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    for i, (im, ref) in enumerate(zip(images, refs)):
        fixture[f"image{i}"] = torch.from_numpy(im)
        for k in ("boxes", "scores", "labels"):
            fixture[f"{i}.{k}"] = ref[k]
    import json

    meta = {"shapes": json.dumps(shapes), "seed": str(seed), "size": str(TINY_SIZE),
            "params": str(sum(p.numel() for p in bench.model.parameters()))}
    save_file(fixture, str(path), metadata=meta)
    print(f"fixture written to {path}: {[len(r['scores']) for r in refs]} effdet detections")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
