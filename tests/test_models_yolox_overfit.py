"""End-to-end learning: yolox-nano overfits two synthetic images and then finds every object."""

from __future__ import annotations

import time

import pytest
import torch

from odkit.models import build
from odkit.ops import box_iou

SIZE = 128
# (x1, y1, x2, y2, class): class 0 red, class 1 blue filled rectangles on grey
SCENES = [
    [(10, 12, 50, 60, 0), (70, 20, 118, 50, 1), (30, 80, 90, 120, 0)],
    [(20, 30, 60, 100, 1), (75, 70, 115, 110, 0)],
]
COLORS = [(1.0, 0.1, 0.1), (0.1, 0.2, 1.0)]


def _scene():
    images = torch.full((len(SCENES), 3, SIZE, SIZE), 0.5)
    targets = []
    for i, rects in enumerate(SCENES):
        for x1, y1, x2, y2, c in rects:
            images[i, :, y1:y2, x1:x2] = torch.tensor(COLORS[c])[:, None, None]
        targets.append(
            {
                "boxes": torch.tensor([r[:4] for r in rects], dtype=torch.float32),
                "labels": torch.tensor([r[4] for r in rects]),
            }
        )
    return images, targets


@torch.no_grad()
def _exact_bn_stats(model, images):
    """Set every BatchNorm's running statistics to the exact (biased) batch statistics of ``images``,
    so eval mode computes the same function as the train-mode network whose loss was measured (with
    two images the moving averages lag, and the overfit network is sensitive to that)."""
    inputs = {}
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [bn.register_forward_hook(lambda m, i, o: inputs.__setitem__(m, i[0])) for bn in bns]
    model.train()
    model.head(model.features(images))  # the YOLOX head's per-level outputs
    for h in hooks:
        h.remove()
    for bn in bns:
        x = inputs[bn]
        bn.running_mean.copy_(x.mean((0, 2, 3)))
        bn.running_var.copy_(x.var((0, 2, 3), unbiased=False))


def _train(steps: int, lr: float, one_cycle: bool):
    torch.manual_seed(0)
    images, targets = _scene()
    model = build("yolox-nano", num_classes=2).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15) if one_cycle else None
    )
    losses = []
    for _ in range(steps):
        out = model(images, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(out["loss"].detach()))
    return model, images, targets, losses


def test_loss_falls_quickly():
    _, _, _, losses = _train(25, 4e-3, one_cycle=False)
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow
def test_overfit_two_images_detects_every_object():
    t0 = time.perf_counter()
    model, images, targets, losses = _train(250, 4e-3, one_cycle=True)
    final = sum(losses[-5:]) / 5
    assert final < 0.1 * losses[0], (losses[0], losses[-10:])
    _exact_bn_stats(model, images)
    preds = model.predict(images, conf=0.25)
    for i, (pred, tgt) in enumerate(zip(preds, targets)):
        assert len(pred["boxes"]) > 0, f"image {i}: no detections"
        iou = box_iou(tgt["boxes"], pred["boxes"])
        same_class = tgt["labels"][:, None] == pred["labels"][None, :]
        best = (iou * same_class).max(1).values
        assert (best >= 0.5).all(), f"image {i}: best IoU per object {best.tolist()}"
    print(f"overfit: loss {losses[0]:.2f} -> {final:.3f} in {time.perf_counter() - t0:.1f} s")
