"""Parameter and FLOP counts of zoo models (``odkit info``, ``odkit models``)."""

from __future__ import annotations

from typing import Any


def has_background_logit(model: Any) -> bool:
    """Whether ``model`` scores classes with a softmax over its classes plus a background logit (SSD,
    R-CNN), which torchvision counts in its ``num_classes`` (odkit's ``num_classes`` never does)."""
    return any(getattr(m, "num_logits", None) == getattr(m, "num_classes", -1) + 1 for m in model.modules())


def model_info(model_name: str, img: int | tuple[int, int] | None = None, num_classes: int = 80) -> dict:
    """Parameters and GFLOPs (2 x MACs, one image) of ``model_name`` at input size ``img`` for
    ``num_classes`` object classes; ``background_logit``: whether its classifier adds a background
    logit (torchvision's ``num_classes`` for the same network is then one more)."""

    from odkit.errors import ConfigError
    from odkit.models import build

    model = build(model_name, num_classes=num_classes).eval()
    if img is None:
        img = model.config["img_size"]
    h, w = (img, img) if isinstance(img, int) else (int(img[0]), int(img[1]))
    if h <= 0 or w <= 0 or h % model.stride or w % model.stride:
        raise ConfigError(f"--img {h}x{w}: each side must be a positive multiple of {model.stride}")
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, h, w, lambda: build(model_name, num_classes=num_classes).eval())
    out = {
        "model": model_name,
        "num_classes": num_classes,
        "background_logit": has_background_logit(model),
        "img_size": [h, w],
        "params": params,
        "params_M": params / 1e6,
        "gflops": flops / 1e9,
    }
    return out


def count_flops(model: Any, h: int, w: int, rebuild: Any = None) -> int:
    """FLOPs (2 x MACs) of ``model.forward_export`` on one ``h x w`` image, counted by torch's
    ``FlopCounterMode``. The forward runs on the meta device (shapes only, no arithmetic; ``model``
    is moved there); a model whose forward needs real values (R-CNN proposals) is counted on real
    zeros with ``rebuild()``, a fresh copy."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def counted(net: Any, device: str) -> int:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            net.forward_export(torch.zeros(1, 3, h, w, device=device))
        return int(counter.get_total_flops())

    try:
        return counted(model.to("meta"), "meta")
    except (RuntimeError, NotImplementedError):
        if rebuild is None:
            raise
    return counted(rebuild(), "cpu")
