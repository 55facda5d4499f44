"""Unit tests of the training engine's parts: EMA, schedule, optimiser groups, run dirs,
checkpoints and weight files."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from odkit.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from odkit.engine.ema import ModelEMA, ema_params_for
from odkit.engine.optim import build_optimizer, split_decay_params
from odkit.engine.rundir import make_run_dir, next_run_dir
from odkit.engine.schedule import LRSchedule
from odkit.errors import OdkitError
from odkit.weights.format import load_weights, save_weights


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.Flatten(),
                         nn.LayerNorm(2 * 6 * 6), nn.Linear(72, 3))


def test_ema_ramp_matches_formula():
    torch.manual_seed(0)
    m = _net()
    ema = ModelEMA(m, decay=0.99, tau=10.0)
    ref = {k: v.clone().double() for k, v in m.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p))
        ema.update(m)
        d = 0.99 * (1 - math.exp(-step / 10.0))
        for k, v in m.state_dict().items():
            if v.dtype.is_floating_point:
                ref[k] = d * ref[k] + (1 - d) * v.double()
            else:
                ref[k] = v.clone()
    for k, v in ema.ema.state_dict().items():
        assert torch.allclose(v.double(), ref[k].double(), atol=1e-5), k


def test_ema_params_short_and_long_runs():
    assert ema_params_for(10**7) == (0.9998, 2000.0)
    d, tau = ema_params_for(300)
    assert d == pytest.approx(1 - 1 / 15) and tau == pytest.approx(20.0)


def test_schedule_warmup_then_cosine_and_linear():
    s = LRSchedule(base_lr=0.1, total_iters=110, warmup_iters=10, kind="cos", min_lr_ratio=0.05)
    assert s.lr(0) == pytest.approx(0.01)
    assert s.lr(9) == pytest.approx(0.1)
    assert s.lr(10) == pytest.approx(0.1)
    assert s.lr(60) == pytest.approx(0.005 + 0.095 * 0.5)
    assert s.lr(110) == pytest.approx(0.005) and s.lr(500) == pytest.approx(0.005)
    lin = LRSchedule(base_lr=0.1, total_iters=110, warmup_iters=10, kind="linear", min_lr_ratio=0.0)
    assert lin.lr(60) == pytest.approx(0.05)
    s.replan(210)
    assert s.lr(110) == pytest.approx(0.005 + 0.095 * 0.5)


def test_optimizer_no_decay_on_norms_and_biases():
    m = _net()
    decay, no_decay = split_decay_params(m)
    ids = {id(p) for p in decay}
    assert ids == {id(m[0].weight), id(m[2].weight), id(m[5].weight)}
    assert {id(p) for p in no_decay} == {id(m[1].weight), id(m[1].bias), id(m[2].bias), id(m[4].weight),
                                         id(m[4].bias), id(m[5].bias)}
    for name, kw in (("sgd", {"nesterov": True, "momentum": 0.9}), ("adamw", {})):
        opt = build_optimizer(m, name, lr=0.01, weight_decay=1e-3)
        assert [g["weight_decay"] for g in opt.param_groups] == [1e-3, 0.0]
        for k, v in kw.items():
            assert opt.param_groups[0][k] == v


def test_run_dir_auto_increment(tmp_path):
    a = make_run_dir(tmp_path, "exp")
    b = make_run_dir(tmp_path, "exp")
    c = make_run_dir(tmp_path, "exp")
    assert [a.name, b.name, c.name] == ["exp", "exp2", "exp3"]
    assert next_run_dir(tmp_path, "exp", exist_ok=True) == a


def test_checkpoint_roundtrip_and_rng_restore(tmp_path):
    g = torch.Generator().manual_seed(3)
    state = {"model": {"w": torch.arange(4.0)}, "epoch": 2, "rng": rng_state(g)}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    a = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item())
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    np.random.seed(99)
    set_rng_state(back["rng"], g)
    assert (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g).item()) == a
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_truncated_checkpoint_is_refused(tmp_path):
    p = tmp_path / "checkpoint.pt"
    save_checkpoint(p, {"model": {"w": torch.randn(1000)}, "epoch": 1})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OdkitError, match=r"checkpoint.pt .*truncated"):
        load_checkpoint(p)


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    p = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "epoch": 1, "obj": OdkitError("x")}, p)
    with pytest.raises(OdkitError, match="cannot be read"):
        load_checkpoint(p)


def test_weights_roundtrip_and_pickle_refused(tmp_path):
    import odkit

    sd = {"a": torch.randn(3, 2), "b": torch.arange(5)}
    cfg = {"name": "yolox-nano", "num_classes": 2}
    p = save_weights(tmp_path / "w.safetensors", sd, {"model_config": cfg, "metrics": {"x": 1}})
    back, meta = load_weights(p)
    assert torch.equal(back["a"], sd["a"]) and torch.equal(back["b"], sd["b"])
    assert meta["model_config"] == cfg and json.loads((tmp_path / "w.json").read_text())["model_config"] == cfg
    (tmp_path / "w.json").unlink()  # the metadata embedded in the file is enough
    assert load_weights(p)[1]["model_config"]["name"] == "yolox-nano"

    pt = tmp_path / "model.pt"
    torch.save({"a": torch.zeros(1)}, pt)
    with pytest.raises(OdkitError, match="pickle"):
        odkit.load(pt)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(OdkitError, match="pickle"):
        odkit.load(disguised)
    zipped = tmp_path / "zip.safetensors"
    zipped.write_bytes(pt.read_bytes())
    with pytest.raises(OdkitError, match="pickle"):
        odkit.load(zipped)
