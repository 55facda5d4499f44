"""Per-model recipes, the data/budget rule, the user's values winning, the step schedule, and the
``odkit train`` flags generated from ``TrainConfig``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
from pathlib import Path

import pytest
import yaml

from odkit.engine import recipe as rec
from odkit.engine.config import TrainConfig
from odkit.engine.schedule import LRSchedule
from odkit.errors import ConfigError
from odkit.models import zoo

# --------------------------------------------------------------------------- step schedule


def test_step_schedule_warmup_then_gamma_at_fractions():
    s = LRSchedule(base_lr=0.1, total_iters=120, warmup_iters=10, kind="step", steps=[2 / 3, 11 / 12], gamma=0.1)
    assert s.milestones() == [80, 110]
    assert s.lr(0) == pytest.approx(0.01) and s.lr(9) == pytest.approx(0.1)
    assert s.lr(10) == pytest.approx(0.1) and s.lr(79) == pytest.approx(0.1)
    assert s.lr(80) == pytest.approx(0.01) and s.lr(109) == pytest.approx(0.01)
    assert s.lr(110) == pytest.approx(0.001) and s.lr(10_000) == pytest.approx(0.001)
    # re-planning moves the steps not reached yet; a step already passed stays passed
    s.replan(240, it=90)
    assert s.milestones() == [80, 220]
    assert s.lr(90) == pytest.approx(0.01) and s.lr(219) == pytest.approx(0.01) and s.lr(220) == pytest.approx(0.001)
    s.replan(60, it=100)
    assert s.milestones() == [80, 80] and s.lr(100) == pytest.approx(0.001)
    back = LRSchedule(base_lr=1.0, total_iters=1)
    back.load_state_dict(s.state_dict())
    assert back.milestones() == s.milestones() and back.lr(100) == s.lr(100)
    with pytest.raises(ConfigError):
        LRSchedule(base_lr=0.1, total_iters=10, kind="step", steps=[0.9, 0.5])
    with pytest.raises(ConfigError):
        TrainConfig(schedule="step", lr_steps=[1.5])


def test_step_schedule_in_the_optimizer_groups():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = LRSchedule(base_lr=0.2, total_iters=10, kind="step", steps=[0.5], gamma=0.5)
    assert s.step(opt, 4) == pytest.approx(0.2) and opt.param_groups[0]["lr"] == pytest.approx(0.2)
    assert s.step(opt, 5) == pytest.approx(0.1) and opt.param_groups[0]["lr"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- layering


def test_layers_defaults_model_rule_user():
    r = rec.resolve({"data": "d", "time": 12}, num_images=100, params=900_000, num_val_images=40)
    cfg, st = r.config, r.settings
    # the model's recipe
    assert st["img_size"].source == "model" and cfg.img_size == zoo.recipe("yolox-nano")["img_size"]
    assert st["schedule"].source == "model" and cfg.mosaic == 1.0
    # the rule: a small set and a short budget get AdamW at the measured rate
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("adamw", 0.008, 0.05)
    assert st["optimizer"].source == st["lr"].source == "rule" and "0.013" in st["optimizer"].reason
    assert st["epochs"].source == "rule" and cfg.epochs == rec.TIMED_EPOCHS
    # the user's values, and defaults
    assert st["data"].source == "user" and st["time"].source == "user"
    assert st["batch"].source == "default" and cfg.batch == 16
    assert "small-data rule" in r.regime

    # the user always wins, and the rule works around what the user fixed
    r = rec.resolve({"data": "d", "time": 12, "optimizer": "sgd", "mosaic": 0.25, "epochs": 40}, num_images=100)
    cfg, st = r.config, r.settings
    assert cfg.optimizer == "sgd" and st["optimizer"].source == "user"
    assert cfg.lr == pytest.approx(0.01 * 16 / 64) and cfg.weight_decay == 5e-4  # SGD's, not AdamW's
    assert cfg.mosaic == 0.25 and st["mosaic"].source == "user"
    assert cfg.epochs == 40 and st["epochs"].source == "user"
    r = rec.resolve({"data": "d", "lr": 0.001, "batch": 64}, num_images=100)
    assert r.config.lr == 0.001 and r.settings["lr"].source == "user" and r.config.optimizer == "adamw"


def test_rule_adapts_to_data_size_budget_and_init():
    small = rec.resolve({"data": "d", "batch": 64, "time": 30}, num_images=300, params=900_000).config
    assert small.lr == pytest.approx(0.016)  # sqrt(64 / 16) x 0.008
    big_model = rec.resolve({"data": "d", "time": 30}, num_images=300, params=30_000_000).config
    assert big_model.lr == pytest.approx(0.002)
    # fine-tuning: a quarter of the rate, one epoch of warm-up, lighter Mosaic for a short run
    ft = rec.resolve({"data": "d", "weights": "w.safetensors", "epochs": 20}, num_images=300,
                     weights_model="yolox-nano")
    assert ft.config.lr == pytest.approx(0.002) and ft.config.warmup_epochs == 1.0 and ft.config.mosaic == 0.5
    assert ft.settings["model"].source == "weights"
    assert ft.config.no_aug_epochs == 3  # 15% of 20 epochs
    bb = rec.resolve({"data": "d", "pretrained_backbone": "b.safetensors", "time": 10}, num_images=300).config
    assert bb.lr == pytest.approx(0.004)
    # warm-up bounded in iterations; validation spaced out when the val set is large next to train
    many = rec.resolve({"data": "d", "time": 60}, num_images=3200, num_val_images=100)
    assert many.config.warmup_epochs == pytest.approx(300 / 200)
    tiny = rec.resolve({"data": "d", "time": 6}, num_images=50, num_val_images=87)
    assert tiny.config.val_interval == 4 and tiny.settings["val_interval"].source == "rule"
    # a long run on a large data set keeps the model's reference recipe
    long = rec.resolve({"data": "d", "epochs": 300, "batch": 64}, num_images=118_000)
    assert long.config.optimizer == "sgd" and long.settings["optimizer"].source == "model"
    assert long.config.lr == pytest.approx(0.01) and "reference recipe" in long.regime
    # without the data set size (preliminary config) the rule is not applied
    pre = rec.resolve({"data": "d"})
    assert pre.config.optimizer == zoo.recipe("yolox-nano")["optimizer"] and pre.facts is None


def test_weights_model_must_match():
    with pytest.raises(ConfigError, match="yolox-s"):
        rec.resolve({"data": "d", "model": "yolox-nano", "weights": "w"}, weights_model="yolox-s")
    with pytest.raises(ConfigError, match="unknown training options: colour"):
        rec.resolve({"data": "d", "colour": 1})


@pytest.mark.parametrize("name", zoo.available())
def test_every_zoo_recipe_resolves(name):
    raw = dict(zoo.recipe(name))
    for n_images, kw in ((100, {"time": 12}), (100_000, {"epochs": 300})):
        r = rec.resolve({"data": "d", "model": name, **kw}, num_images=n_images, params=1_000_000)
        cfg = r.config
        assert cfg.model == name and cfg.img_size == raw["img_size"]
        if raw.get("schedule") == "step":
            assert cfg.schedule == "step" and cfg.lr_steps == pytest.approx(list(raw["lr_steps"]))
        if raw.get("mosaic") == 0.0:
            assert cfg.mosaic == 0.0
        if n_images > rec.LONG_IMAGES:  # the reference recipe as written
            for k in ("optimizer", "schedule", "warmup_epochs", "no_aug_epochs", "mosaic", "weight_decay"):
                if k in raw:
                    assert getattr(cfg, k) == pytest.approx(raw[k]), k
            if raw.get("lr_per_image") is not None and raw.get("lr") is None:
                assert cfg.lr == pytest.approx(raw["lr_per_image"] * cfg.batch)


def test_describe_and_yaml_carry_sources():
    r = rec.resolve({"data": "d", "time": 12}, num_images=100, params=900_000)
    text = r.describe()
    assert text.startswith("training recipe for yolox-nano") and "100 train images" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("optimizer"))
    assert "adamw" in line and "rule:" in line
    doc = r.to_yaml()
    assert "optimizer: adamw  # rule:" in doc and "img_size: 416  # model: yolox-nano's recipe" in doc
    back = TrainConfig.from_dict(yaml.safe_load(doc))
    assert back == r.config
    assert r.record()["optimizer"]["source"] == "rule"


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    from odkit.cli.train import add_train_args

    p = argparse.ArgumentParser(prog="odkit train")
    add_train_args(p)
    return p


def test_every_field_is_a_flag_and_flags_default_to_not_given():
    p = _parser()
    dests = {a.dest for a in p._actions}
    for f in dataclasses.fields(TrainConfig):
        assert f.name in dests, f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"
    from odkit.cli.train import given_values

    assert given_values(p.parse_args([])) == {}


def test_existing_flag_names_still_parse():
    from odkit.cli.train import given_values

    argv = ("--data D --model yolox-tiny --img 320 --epochs 7 --batch 4 --time 1.5 --device cpu --workers 0 "
            "--project P --name N --exist-ok --amp --optimizer adamw --lr 0.003 --weight-decay 0.01 "
            "--schedule linear --warmup-epochs 0.5 --seed 3 --val-interval 2 --no-aug-epochs 1 --mosaic 0.5 "
            "--mixup 0.1 --multiscale --cache 0.5 --no-ema --clip-grad 5 --train-split tr --val-split va "
            "--format coco --deterministic --threads 1 --no-plots --strict")
    got = given_values(_parser().parse_args(shlex.split(argv)))
    assert got == {
        "data": "D", "model": "yolox-tiny", "img_size": 320, "epochs": 7, "batch": 4, "time": 1.5, "device": "cpu",
        "workers": 0, "project": "P", "name": "N", "exist_ok": True, "amp": True, "optimizer": "adamw",
        "lr": 0.003, "weight_decay": 0.01, "schedule": "linear", "warmup_epochs": 0.5, "seed": 3,
        "val_interval": 2, "no_aug_epochs": 1, "mosaic": 0.5, "mixup": 0.1, "multiscale": True, "cache": 0.5,
        "ema": False, "clip_grad": 5.0, "train_split": "tr", "val_split": "va", "format": "coco",
        "deterministic": True, "threads": 1, "plots": False, "strict_data": True,
    }
    TrainConfig.from_dict(got)  # every value has the field's type
    assert given_values(_parser().parse_args(["--resume"])) == {"resume": "last"}
    assert given_values(_parser().parse_args(["--resume", "runs/a"])) == {"resume": "runs/a"}


def test_new_flags_parse():
    from odkit.cli.train import given_values

    argv = ("--weights W.pth --from yolox --freeze backbone:2 --schedule step --lr-steps 0.5 0.75 --lr-gamma 0.2 "
            "--aug scale=[0.75,1.25] degrees=0")
    got = given_values(_parser().parse_args(shlex.split(argv)))
    assert got == {"weights": "W.pth", "weights_from": "yolox", "freeze": "backbone:2", "schedule": "step",
                   "lr_steps": [0.5, 0.75], "lr_gamma": 0.2, "aug": {"scale": [0.75, 1.25], "degrees": 0}}
    with pytest.raises(SystemExit):
        _parser().parse_args(["--from", "caffe"])


NUMERIC_FLAGS = {"--img", "--epochs", "--batch", "--time", "--freeze-stages", "--lr", "--workers", "--seed"}


def test_readme_train_commands_parse():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    cmds = [line.strip() for line in readme.splitlines() if line.strip().startswith("odkit train ")]
    assert cmds
    for cmd in cmds:
        cmd = cmd.split("  ")[0]  # drop a trailing description column
        words = [w.strip("[]") for w in shlex.split(cmd)[2:]]
        words = [w.split("|")[0] for w in words if w and w != "|"]  # a|b: the first alternative
        # placeholders (DATA, E, MIN, ...) become values of the right kind
        words = [("1" if words[i - 1] in NUMERIC_FLAGS else "x") if w.isupper() else w for i, w in enumerate(words)]
        args = _parser().parse_args(words)
        assert args is not None, cmd


# --------------------------------------------------------------------------- a run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from odkit.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "d", n=10, seed=3, size=64, val_fraction=0.2)


def test_run_prints_and_records_its_recipe_and_enters_the_no_aug_phase(tiny_data, tmp_path, caplog, monkeypatch):
    import odkit
    from odkit.models.heads.yolox_head import YOLOXHead

    phases = []
    real = YOLOXHead.enter_phase

    def spy(self, phase):
        phases.append(phase)
        return real(self, phase)

    monkeypatch.setattr(YOLOXHead, "enter_phase", spy)
    with caplog.at_level(logging.INFO, logger="odkit"):
        run = odkit.train(data=str(tiny_data), img_size=64, epochs=2, batch=4, workers=0, device="cpu", threads=1,
                          project=str(tmp_path), plots=False, deterministic=True, optimizer="sgd",
                          schedule="step", lr_steps=[0.5])
    assert phases == ["no_aug"]  # the tail of the run (15% of 2 epochs, at least one)
    assert "training recipe for yolox-nano" in caplog.text and "small-data rule" in caplog.text
    doc = (run.run_dir / "args.yaml").read_text()
    assert "optimizer: sgd  # user: given" in doc and "no_aug_epochs: 1  # rule:" in doc
    cfg = TrainConfig.from_dict(yaml.safe_load(doc))
    assert cfg.optimizer == "sgd" and cfg.schedule == "step" and cfg.no_aug_epochs == 1
    assert run.recipe["optimizer"]["source"] == "user" and run.recipe["no_aug_epochs"]["source"] == "rule"
    import json

    meta = json.loads(run.last.with_suffix(".json").read_text())
    assert meta["recipe"]["schedule"]["value"] == "step"
