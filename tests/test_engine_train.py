"""End-to-end tests of the training engine on a tiny synthetic dataset (64 px images)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import odkit
from odkit.engine.config import TrainConfig
from odkit.engine.trainer import Trainer, TrainingDiverged
from odkit.errors import OdkitError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from odkit.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "d", n=10, seed=3, size=64, val_fraction=0.2)


def _cfg(data: Path, project: Path, **kw) -> TrainConfig:
    base = dict(data=str(data), img_size=64, epochs=2, batch=4, workers=0, project=str(project), no_aug_epochs=1,
                deterministic=True, threads=1, plots=False, warmup_epochs=1.0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class _Stop(Exception):
    pass


def test_resume_gives_identical_weights(tiny_data, tmp_path):
    from safetensors.torch import load_file

    full = Trainer(_cfg(tiny_data, tmp_path, name="full")).fit()

    def stop_after_first(trainer, epoch, row):
        if epoch == 0:
            raise _Stop

    with pytest.raises(_Stop):
        Trainer(_cfg(tiny_data, tmp_path, name="cut"), callbacks={"on_epoch_end": stop_after_first}).fit()
    cut_dir = tmp_path / "cut"
    assert (cut_dir / "checkpoint.pt").exists()
    resumed = Trainer(TrainConfig(resume=str(cut_dir), project=str(tmp_path))).fit()
    assert resumed.run_dir == cut_dir

    a = torch.load(full.run_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(cut_dir / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for part in ("model",):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), k
    for k, v in a["ema"]["ema"].items():
        assert torch.equal(v, b["ema"]["ema"][k]), k
    la, lb = load_file(str(full.last)), load_file(str(resumed.last))
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
    # training really changed the weights (the comparison is not between two initialisations)
    from odkit.engine.predictor import build_from_meta

    init = build_from_meta({"model": "yolox-nano", "num_classes": 3}).state_dict()
    assert any(not torch.equal(init[k], a["model"][k]) for k in init if init[k].dtype.is_floating_point)
    rows = (cut_dir / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,")


def test_truncated_checkpoint_refused_on_resume(tiny_data, tmp_path):
    run = Trainer(_cfg(tiny_data, tmp_path, name="r", epochs=1, no_aug_epochs=0)).fit()
    ck = run.run_dir / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    with pytest.raises(OdkitError, match="truncated"):
        Trainer(TrainConfig(resume=str(run.run_dir))).fit()
    # the run's weights load through odkit.load and predict on a path, an array and a tensor
    pred = odkit.load(run.best)
    img = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    out = pred.predict([img, torch.from_numpy(img).permute(2, 0, 1).float() / 255], conf=0.0)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert torch.allclose(out[0]["scores"], out[1]["scores"], atol=1e-3)
    if len(out[0]["boxes"]):
        assert float(out[0]["boxes"][:, 2].max()) <= 70 and float(out[0]["boxes"][:, 3].max()) <= 50


def test_nan_loss_steps_are_skipped_then_abort(tiny_data, tmp_path, monkeypatch):
    from odkit.models import zoo

    real_build = zoo.build

    def nan_build(*a, **k):
        m = real_build(*a, **k)
        fwd = m.forward

        def forward(images, targets=None):
            out = fwd(images, targets)
            if targets is not None:
                out = dict(out, loss=out["loss"] * float("nan"))
            return out

        m.forward = forward
        return m

    monkeypatch.setattr(zoo, "build", nan_build)
    with pytest.raises(TrainingDiverged, match="NaN/inf in 2 consecutive steps"):
        t = Trainer(_cfg(tiny_data, tmp_path, name="nan", max_bad_steps=2, no_aug_epochs=0))
        t.fit()
    # the skipped steps did not touch the parameters (the EMA copy still holds the initial ones)
    before = dict(t.ema.ema.named_parameters())
    for k, v in t.model.named_parameters():
        assert torch.equal(v, before[k]), k


def test_eval_independent_of_batch_size(tiny_data):
    from odkit.engine.data import load_checked
    from odkit.engine.evaluator import evaluate_predictions, predict_set
    from odkit.models.zoo import build

    torch.manual_seed(0)
    val = load_checked(str(tiny_data), "train", report=False)
    model = build("yolox-nano", num_classes=3).eval()
    model.head.init_biases(0.3)  # scores well above the threshold, so there is something to compare
    p1 = predict_set(model, val, 64, batch=1)
    p8 = predict_set(model, val, 64, batch=8)
    assert sum(len(p["scores"]) for p in p1) > 10
    for a, b in zip(p1, p8):
        assert len(a["scores"]) == len(b["scores"])
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-3)
    r1, r8 = evaluate_predictions(val, p1), evaluate_predictions(val, p8)
    np.testing.assert_allclose(r1.stats, r8.stats, atol=1e-6)


def test_torchrun_two_processes_gloo(tiny_data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "odkit",
           "train", "--data", str(tiny_data), "--img", "64", "--epochs", "1", "--batch", "2", "--workers", "0",
           "--device", "cpu", "--project", str(tmp_path), "--name", "ddp", "--no-aug-epochs", "0", "--no-plots"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "ddp"
    assert (run / "weights" / "last.safetensors").exists() and (run / "checkpoint.pt").exists()
    assert not (tmp_path / "ddp2").exists()  # only rank 0 made a run directory
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2
    assert "2 process(es)" in r.stderr + r.stdout
