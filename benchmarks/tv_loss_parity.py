"""Training parity of odkit with torchvision: every loss term and the head gradients for the same
weights, picture and boxes.

Runs in the reference environment (torchvision is never an odkit dependency):

    ~/.odkit-refenv/bin/python benchmarks/tv_loss_parity.py [--models retinanet,fcos,...]
        [--sizes 384,416,800] [--batches 1,2] [--write-fixture]

Models: retinanet-r50-fpn, fcos-r50-fpn, ssd300-vgg16, ssdlite320-mobilenetv3, fasterrcnn-r50-fpn,
fasterrcnn-mobilenetv3-fpn and (``--models maskrcnn-r50``, not in the default list) maskrcnn-r50-fpn,
whose gt boxes carry instance masks (ellipses) and whose terms include ``loss_mask``. For each, torchvision's model (91 class slots) gets deterministic synthetic
weights (``tests/_tv_weights.py``, seed 0) whose last class and box layers are scaled (``SPREAD``) so
that class scores and box outputs vary from prior to prior (default initialisation gives near-constant
outputs, where a wrong assignment hardly changes a loss); odkit's model is built as
``odkit.weights.import_weights(..., source="torchvision")`` builds it, plus the training settings
below, and the weights are mapped in with the same import table. Both
train on the same ``size x size`` photo-like pictures (``tv_parity.picture``) with the same 5 / 3 gt
boxes per image, batch 1 (picture 0) or 2 (pictures 0 and 1):

- torchvision's transform does not resize (``_skip_resize``; its train-time resize otherwise draws a
  random number from torch's generator even with a single ``min_size``, which would shift the
  samplers' draws) and pads nothing (sizes are multiples of 32);
- BatchNorm layers run in eval mode on both sides (running statistics; SSDLite's 1x1 maps cannot
  be batch-normalised at batch 1), everything else in training mode; only the head parameters
  require gradients (the trunk's weight gradients are not compared and would cost most of the time);
- RetinaNet at batch 2: ``loss_norm="image"`` (torchvision divides each image's sums by its own
  positives and averages over the images; at batch 1 odkit's default per-batch rule is the same);
- Faster R-CNN twice: ``all`` (RPN and RoI sampler batch 10**6 on both sides, so every non-ignored
  anchor and proposal is sampled and the random draws do not matter) and ``seeded`` (the default
  256 / 512 samplers, ``torch.manual_seed(0)`` before each model's forward: the samplers draw the
  same permutations when both see the same candidates in the same order).

Printed per model, size and batch: each loss term of both and their relative difference, and the
head-gradient distance ``|g_odkit - g_tv| / |g_tv|`` over all head parameters (``head.*``; RPN and
RoI head for Faster R-CNN) of the gradient of the total loss. The last column (``head-only``) gives
the same differences with odkit's head fed torchvision's trunk output (its transform, backbone and
FPN) instead of odkit's own: ``head-only`` is the head and loss code alone (the trunks give the same
bits when odkit's input is a contiguous batch, as torchvision's). Results go to
``benchmarks/results/tv_loss_parity.json``.

``--write-fixture`` runs the tiny configuration of ``tests/test_weights_tv_loss_parity.py`` (batch 2;
RetinaNet and FCOS at 96 px, SSDLite and Faster R-CNN MobileNetV3 both ways at 160 px) and writes its
pictures, torchvision's loss terms and head-gradient norms per parameter under
``tests/fixtures/tv_loss_parity/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
FIXTURE = ROOT / "tests" / "fixtures" / "tv_loss_parity"
KEYS = ROOT / "tests" / "fixtures" / "torchvision_keys"
SSD_KEYS = ROOT / "tests" / "fixtures" / "tv_parity_ssd"

# gt boxes per picture, relative xyxy (times the input size), and torchvision COCO labels (1..90):
# large, medium, small and overlapping boxes so that every pyramid level gets positives
BOXES = (
    ([[0.10, 0.12, 0.42, 0.50], [0.55, 0.20, 0.93, 0.61], [0.30, 0.55, 0.72, 0.95], [0.05, 0.70, 0.13, 0.79],
      [0.35, 0.30, 0.60, 0.62]], [1, 18, 3, 44, 62]),
    ([[0.20, 0.25, 0.80, 0.85], [0.62, 0.05, 0.78, 0.21], [0.04, 0.40, 0.27, 0.90]], [5, 17, 90]),
)
HUGE = 10**6  # sampler batch that takes every candidate
F64_ABOVE = 1e-5  # head-gradient distance above which "auto" adds the float64 reference


@dataclass(frozen=True)
class Case:
    """One comparison: odkit model ``name`` against torchvision builder ``tv_name``."""

    name: str
    tv_name: str
    terms: dict[str, str]  # torchvision loss key -> odkit loss key
    head: tuple[str, ...]  # torchvision parameter prefixes of the head
    spread: dict[str, float] = field(default_factory=dict)  # weight-key suffix -> gain
    odkit_args: dict[str, Any] = field(default_factory=dict)
    tv_args: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    batch_args: dict[int, dict[str, Any]] = field(default_factory=dict)  # odkit args at a batch size


DENSE_TERMS = {"classification": "loss_cls", "bbox_regression": "loss_box"}
RCNN_TERMS = {"loss_objectness": "loss_rpn_cls", "loss_rpn_box_reg": "loss_rpn_box",
              "loss_classifier": "loss_cls", "loss_box_reg": "loss_box"}
MASK_TERMS = {**RCNN_TERMS, "loss_mask": "loss_mask"}
ALL_SAMPLED_TV = {"rpn_batch_size_per_image": HUGE, "box_batch_size_per_image": HUGE}
ALL_SAMPLED_ODKIT = {"rpn_args": {"num_samples": HUGE}, "roi_args": {"num_samples": HUGE}}
# gains of the last class / box layers (RetinaNet's plain synthetic outputs vary by ~0.06 between
# anchors; SSD and Faster R-CNN get their class-layer gains from tv_parity_ssd / tv_parity_rcnn)
SPREAD_RETINA = {"cls_logits.weight": 20.0, "bbox_reg.weight": 8.0}
SPREAD_FCOS = {"cls_logits.weight": 3.0, "bbox_ctrness.weight": 3.0}
SPREAD_RCNN = {"rpn.head.cls_logits.weight": 5.0, "rpn.head.bbox_pred.weight": 5.0,
               "roi_heads.box_predictor.bbox_pred.weight": 5.0}

CASES = {
    "retinanet": [Case("retinanet-r50-fpn", "retinanet_resnet50_fpn", DENSE_TERMS, ("head.",), SPREAD_RETINA,
                       batch_args={2: {"loss_norm": "image"}})],
    "fcos": [Case("fcos-r50-fpn", "fcos_resnet50_fpn", {**DENSE_TERMS, "bbox_ctrness": "loss_ctr"}, ("head.",),
                  SPREAD_FCOS)],
    "ssd300": [Case("ssd300-vgg16", "ssd300_vgg16", DENSE_TERMS, ("head.",))],
    "ssdlite": [Case("ssdlite320-mobilenetv3", "ssdlite320_mobilenet_v3_large", DENSE_TERMS, ("head.",))],
    **{key: [Case(name, tv_name, RCNN_TERMS, ("rpn.", "roi_heads."), SPREAD_RCNN, ALL_SAMPLED_ODKIT, ALL_SAMPLED_TV,
                  "all"),
             Case(name, tv_name, RCNN_TERMS, ("rpn.", "roi_heads."), SPREAD_RCNN, label="seeded")]
       for key, name, tv_name in (("fasterrcnn-r50", "fasterrcnn-r50-fpn", "fasterrcnn_resnet50_fpn"),
                                  ("fasterrcnn-mobilenetv3", "fasterrcnn-mobilenetv3-fpn",
                                   "fasterrcnn_mobilenet_v3_large_fpn"))},
    "maskrcnn-r50": [Case("maskrcnn-r50-fpn", "maskrcnn_resnet50_fpn", MASK_TERMS, ("rpn.", "roi_heads."), SPREAD_RCNN,
                          ALL_SAMPLED_ODKIT, ALL_SAMPLED_TV, "all"),
                     Case("maskrcnn-r50-fpn", "maskrcnn_resnet50_fpn", MASK_TERMS, ("rpn.", "roi_heads."), SPREAD_RCNN,
                          label="seeded")],
}
DEFAULT_MODELS = "retinanet,fcos,ssd300,ssdlite,fasterrcnn-r50,fasterrcnn-mobilenetv3"


def targets(size: int, batch: int) -> list[dict[str, torch.Tensor]]:
    """The gt boxes (xyxy px of a ``size`` square), labels and instance masks (uint8 ``[N, size, size]``:
    the ellipse inscribed in each box; detectors without masks ignore them) of the first ``batch``
    pictures."""
    out = []
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    for b, lab in BOXES[:batch]:
        boxes = torch.tensor(b, dtype=torch.float32) * size
        c, r = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
        masks = (((xx - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2
                 + ((yy - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2 <= 1).to(torch.uint8)
        out.append({"boxes": boxes, "labels": torch.tensor(lab, dtype=torch.int64), "masks": masks})
    return out


def pictures(size: int, batch: int) -> np.ndarray:
    """``[batch, size, size, 3]`` uint8 RGB pictures (``tv_parity.picture`` seeds 0, 1, ...)."""
    from tv_parity import picture

    return np.stack([picture(size, i) for i in range(batch)])


def synthetic_weights(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-layout synthetic weights of ``case`` with its last layers spread (``case.spread``)."""
    from _tv_weights import layout, synthetic_state_dict

    if case.tv_name.startswith("ssd"):
        from tv_parity_ssd import ssd_synthetic_weights

        sd = ssd_synthetic_weights(layout(SSD_KEYS / f"{case.tv_name}_keys.json"), seed)
    elif case.tv_name.startswith(("fasterrcnn", "maskrcnn")):
        from tv_parity_rcnn import reference_state_dict

        sd = reference_state_dict(case.tv_name, seed)
    else:
        sd = synthetic_state_dict(layout(KEYS / f"{case.tv_name}.json"), seed)
    for key in sd:
        for suffix, gain in case.spread.items():
            if key.endswith(suffix):
                sd[key] = sd[key] * gain
    return sd


def prepare(model: nn.Module, head: set[str] | tuple[str, ...]) -> nn.Module:
    """Training mode with every BatchNorm layer in eval mode (running statistics); only the head
    parameters (names in ``head``, or starting with one of its prefixes) require gradients."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name in head if isinstance(head, set) else name.startswith(head))
    return model


def torchvision_model(case: Case, sd: dict[str, torch.Tensor], size: int) -> nn.Module:
    """torchvision's ``case.tv_name`` with weights ``sd``, its resize switched off (see the docstring)."""
    import torchvision.models.detection as tvd

    kw: dict[str, Any] = dict(case.tv_args)
    if not case.tv_name.startswith("ssd"):
        kw.update(min_size=size, max_size=size)
    model = getattr(tvd, case.tv_name)(weights=None, weights_backbone=None, num_classes=91, **kw)
    model.load_state_dict(sd)
    model.transform._skip_resize = True
    return prepare(model, case.head)


def odkit_model(case: Case, sd: dict[str, torch.Tensor], batch: int = 1) -> tuple[nn.Module, dict[str, str]]:
    """odkit's ``case.name`` built as ``import_weights(sd, source="torchvision")`` builds it (the table's
    build overrides: 91 class slots, 90 object classes plus the background for softmax heads) plus ``case.odkit_args`` and ``case.batch_args[batch]``, with
    ``sd`` mapped in by the torchvision import table; and the torchvision -> odkit names of the head
    parameters."""
    from odkit.models import zoo
    from odkit.weights import tables
    from odkit.weights.importer import map_state_dict

    table = tables.detector_table("torchvision", case.name)
    kw = dict(table.build_overrides)
    for k, v in {**case.odkit_args, **case.batch_args.get(batch, {})}.items():
        kw[k] = {**kw.get(k, {}), **v} if isinstance(v, dict) else v
    slots = int(sd[table.num_classes_key].shape[0]) // table.num_classes_divisor
    model = zoo.build(case.name, num_classes=slots - int(bool(kw.get("background_slot"))), **kw)
    tensors, parts = map_state_dict(sd, model.state_dict(), table)
    if parts["missing"] or parts["unexpected"] or parts["mismatched"]:
        raise SystemExit(f"import of {case.tv_name} into {case.name} failed: "
                         f"{ {k: v for k, v in parts.items() if k in ('missing', 'unexpected', 'mismatched') and v} }")
    model.load_state_dict({**model.state_dict(), **tensors})
    names = {s: t for s, t in parts["mapped"] if s.startswith(case.head)}
    return prepare(model, set(names.values())), names


def run_torchvision(model: nn.Module, imgs: np.ndarray, tgts: list[dict[str, torch.Tensor]], seed: int,
                    dtype: torch.dtype = torch.float32) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Loss terms and the gradients of the total loss (by parameter name) of a torchvision detector
    (``dtype``: of the pictures and boxes; the model must have it)."""
    model.zero_grad(set_to_none=True)
    images = [torch.from_numpy(im).permute(2, 0, 1).to(dtype) / 255.0 for im in imgs]
    torch.manual_seed(seed)
    losses = model(images, [{**t, "boxes": t["boxes"].to(dtype)} for t in tgts])
    sum(losses.values()).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def run_odkit(model: nn.Module, imgs: np.ndarray, tgts: list[dict[str, torch.Tensor]], seed: int,
              ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Loss terms and the gradients of the total loss (by parameter name) of an odkit detector."""
    model.zero_grad(set_to_none=True)
    # contiguous like torchvision's batched tensor: a channels-last-strided input takes other conv kernels
    images = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0).contiguous()
    torch.manual_seed(seed)
    losses = model(images, [dict(t) for t in tgts])
    losses["loss"].backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def torchvision_features(model: nn.Module, imgs: np.ndarray) -> list[torch.Tensor]:
    """torchvision's trunk (transform, backbone, FPN) output for the pictures, finest level first."""
    images = [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in imgs]
    with torch.no_grad():
        batched, _ = model.transform(images)
        return [f.detach() for f in model.backbone(batched.tensors).values()]


def run_odkit_head(model: nn.Module, feats: list[torch.Tensor], tgts: list[dict[str, torch.Tensor]], seed: int,
                   input_hw: tuple[int, int]) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """:func:`run_odkit` with the head fed ``feats`` (torchvision's trunk output) instead of odkit's trunk."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    losses = model.head.loss([f.clone() for f in feats], [dict(t) for t in tgts], input_hw)
    losses["loss"].backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, grads


def rel(a: float, b: float) -> float:
    """``|a - b| / |b|`` (0 when both are 0)."""
    return abs(a - b) / abs(b) if b != 0 else (0.0 if a == 0 else float("inf"))


def grad_distance(tv: dict[str, torch.Tensor], od: dict[str, torch.Tensor], names: dict[str, str],
                  ) -> tuple[float, float, float]:
    """``(|g_tv|, |g_odkit|, |g_odkit - g_tv| / |g_tv|)`` over the head parameters ``names``
    (torchvision name -> odkit name; a parameter without gradient counts as zeros)."""
    ref = diff = got = 0.0
    for s, t in names.items():
        if s not in tv and t not in od:
            continue
        a = tv.get(s, torch.zeros(()))
        b = od.get(t, torch.zeros(()))
        ref += float(a.double().pow(2).sum())
        got += float(b.double().pow(2).sum())
        diff += float((b.double() - a.double()).pow(2).sum())
    return ref**0.5, got**0.5, (diff / ref) ** 0.5 if ref else 0.0


def compare(case: Case, tv: nn.Module, od: nn.Module, names: dict[str, str], size: int, batch: int,
            seed: int = 0, f64: str = "auto") -> dict[str, Any]:
    """One (model, size, batch) comparison: terms, gradient distance, timings. ``f64``: also run
    torchvision in float64 (``"always"``, or ``"auto"``: when the head-gradient distance exceeds
    ``F64_ABOVE``) and give both float32 gradients' distances to that one, the rounding floor."""
    imgs, tgts = pictures(size, batch), targets(size, batch)
    t0 = time.perf_counter()
    tv_loss, tv_grad = run_torchvision(tv, imgs, tgts, seed)
    t1 = time.perf_counter()
    od_loss, od_grad = run_odkit(od, imgs, tgts, seed)
    t2 = time.perf_counter()
    head_loss, head_grad_ = run_odkit_head(od, torchvision_features(tv, imgs), tgts, seed, (size, size))
    terms = [{"term": k, "odkit_term": v, "torchvision": tv_loss[k], "odkit": od_loss[v],
              "rel_diff": rel(od_loss[v], tv_loss[k]), "odkit_head_on_tv_features": head_loss[v],
              "rel_diff_head": rel(head_loss[v], tv_loss[k])} for k, v in case.terms.items()]
    g_tv, g_od, g_rel = grad_distance(tv_grad, od_grad, names)
    norms = {names[s]: float(g.norm()) for s, g in tv_grad.items() if s in names}
    head_grad: dict[str, Any] = {"torchvision": g_tv, "odkit": g_od, "rel_l2": g_rel,
                                 "rel_l2_head": grad_distance(tv_grad, head_grad_, names)[2]}
    if f64 == "always" or (f64 == "auto" and g_rel > F64_ABOVE):
        tv64 = copy.deepcopy(tv).double()
        _, grad64 = run_torchvision(tv64, imgs, tgts, seed, torch.float64)
        del tv64
        head_grad["f64"] = {"torchvision": grad_distance(grad64, tv_grad, {s: s for s in names})[2],
                            "odkit": grad_distance(grad64, od_grad, names)[2]}
    return {"model": case.name, "sampling": case.label or None, "size": size, "batch": batch, "terms": terms,
            "num_fg_odkit": od_loss.get("num_fg"), "head_grad": head_grad, "grad_norms": norms,
            "seconds": {"torchvision": t1 - t0, "odkit": t2 - t1}}


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Printable rows of one comparison."""
    label = result["model"] + (f" ({result['sampling']})" if result["sampling"] else "")
    out = [(label, str(result["size"]), str(result["batch"]), t["term"], f"{t['torchvision']:.7g}",
            f"{t['odkit']:.7g}", f"{t['rel_diff']:.1e}", f"{t['rel_diff_head']:.1e}") for t in result["terms"]]
    g = result["head_grad"]
    out.append((label, str(result["size"]), str(result["batch"]), "head grad |g|", f"{g['torchvision']:.7g}",
                f"{g['odkit']:.7g}", f"{g['rel_l2']:.1e}", f"{g['rel_l2_head']:.1e}"))
    if "f64" in g:
        out.append((label, str(result["size"]), str(result["batch"]), "grad dist to fp64",
                    f"{g['f64']['torchvision']:.1e}", f"{g['f64']['odkit']:.1e}", "", ""))
    return out


WIDTHS = (38, 4, 5, 18, 13, 13, 8, 11)


def print_row(cells: tuple[str, ...]) -> None:
    print(" ".join(c.rjust(w) if i in (1, 2, 4, 5, 6, 7) else c.ljust(w) for i, (c, w) in enumerate(zip(cells, WIDTHS))),
          flush=True)


def run_matrix(models: list[str], sizes: list[int], batches: list[int], f64: str = "auto") -> list[dict[str, Any]]:
    """Every comparison of the matrix, printed as it goes."""
    results = []
    for key in models:
        for case in CASES[key]:
            sd = synthetic_weights(case)
            built: dict[str, tuple[nn.Module, dict[str, str]]] = {}  # one odkit model per distinct batch_args
            for size in sizes:
                tv = torchvision_model(case, sd, size)
                for batch in batches:
                    key = repr(case.batch_args.get(batch))
                    if key not in built:
                        built[key] = odkit_model(case, sd, batch)
                    od, names = built[key]
                    r = compare(case, tv, od, names, size, batch, f64=f64)
                    for row in rows(r):
                        print_row(row)
                    results.append(r)
    return results


# the configuration of tests/test_weights_tv_loss_parity.py: (case key, case index, size), batch 2. The
# sizes are not multiples of 128 (P6 / P7 strides from the input differ from the nominal ones); Faster
# R-CNN at 160 px has more anchors than the RPN sampler's 256, so the seeded case draws
FIXTURE_CASES = (("retinanet", 0, 96), ("fcos", 0, 96), ("ssdlite", 0, 160), ("fasterrcnn-mobilenetv3", 0, 160),
                 ("fasterrcnn-mobilenetv3", 1, 160))


def write_fixture(path: Path = FIXTURE) -> list[dict[str, Any]]:
    """Run the test configuration and write its pictures and torchvision's figures under ``path``."""
    import torchvision
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    results = []
    for key, i, size in FIXTURE_CASES:
        case = CASES[key][i]
        sd = synthetic_weights(case)
        od, names = odkit_model(case, sd, 2)
        r = compare(case, torchvision_model(case, sd, size), od, names, size, 2)
        for row in rows(r):
            print_row(row)
        results.append(r)
    sizes = sorted({size for _, _, size in FIXTURE_CASES})
    save_file({f"images_{s}": torch.from_numpy(pictures(s, 2)) for s in sizes}, str(path / "images.safetensors"))
    doc = {"torchvision": torchvision.__version__, "torch": torch.__version__, "batch": 2, "seed": 0,
           "boxes": [list(map(list, b)) for b, _ in BOXES], "labels": [list(lab) for _, lab in BOXES],
           "cases": [{"key": key, "index": i, "size": size, "model": r["model"], "sampling": r["sampling"],
                      "terms": {t["odkit_term"]: t["torchvision"] for t in r["terms"]},
                      "head_grad_norm": r["head_grad"]["torchvision"], "grad_norms": r["grad_norms"]}
                     for (key, i, size), r in zip(FIXTURE_CASES, results)]}
    (path / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"fixture written to {path}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    ap.add_argument("--sizes", default="384,416,800", help="square input sizes (default 384,416,800)")
    ap.add_argument("--batches", default="1,2", help="batch sizes (default 1,2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tv_loss_parity.json"))
    ap.add_argument("--f64", choices=("auto", "always", "never"), default="auto",
                    help="float64 torchvision reference of the gradients (auto: when the distance exceeds 1e-5)")
    ap.add_argument("--write-fixture", action="store_true", help="write the CI test's fixture instead")
    args = ap.parse_args(argv)
    import torchvision

    if args.threads:
        torch.set_num_threads(args.threads)
    import odkit

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, odkit from {Path(odkit.__file__).parent}, "
          f"{torch.get_num_threads()} threads, synthetic weights seed 0")
    print_row(("model", "size", "batch", "term", "torchvision", "odkit", "rel diff", "head-only"))
    if args.write_fixture:
        write_fixture()
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; expected some of {', '.join(CASES)}")
    results = run_matrix(models, [int(s) for s in args.sizes.split(",")], [int(b) for b in args.batches.split(",")],
                         args.f64)
    for tag, suffix in (("", ""), ("head-only ", "_head")):
        worst = max((t["rel_diff" + suffix] for r in results for t in r["terms"]), default=0.0)
        worst_grad = max((r["head_grad"]["rel_l2" + suffix] for r in results), default=0.0)
        print(f"{tag}largest term difference {worst:.1e}, largest head-gradient distance {worst_grad:.1e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "torchvision": torchvision.__version__,
                               "threads": torch.get_num_threads(), "results": results}, indent=1) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
