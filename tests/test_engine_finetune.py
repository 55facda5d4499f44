"""Fine-tuning: weights trained on one synthetic class set start a run on another class set (class
layers re-initialised, the rest kept), frozen parts, backbone-only weights, refused pickles."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from odkit.engine import finetune
from odkit.engine.config import TrainConfig
from odkit.engine.trainer import Trainer
from odkit.errors import ConfigError, OdkitError
from odkit.models import zoo

IMG = 128


def _two_class_copy(src: Path, dst: Path) -> Path:
    """The synthetic set with rectangles and triangles merged into one class ``polygon``."""
    dst.mkdir(parents=True)
    (dst / "images").symlink_to(src / "images", target_is_directory=True)
    for split in ("train", "val"):
        doc = json.loads((src / f"{split}.json").read_text())
        doc["categories"] = [{"id": 1, "name": "circle"}, {"id": 2, "name": "polygon"}]
        for a in doc["annotations"]:
            a["category_id"] = 1 if a["category_id"] == 1 else 2
        (dst / f"{split}.json").write_text(json.dumps(doc))
    spec = {"format": "coco", "train": "train.json", "val": "val.json", "names": ["circle", "polygon"]}
    (dst / "data.yaml").write_text(yaml.safe_dump(spec))
    return dst / "data.yaml"


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    from odkit.data.synth import synthesize

    root = tmp_path_factory.mktemp("ft")
    three = synthesize(root / "three", n=40, seed=11, size=IMG, val_fraction=0.2)
    other = synthesize(root / "other", n=40, seed=12, size=IMG, val_fraction=0.2)
    return {"three": three, "two": _two_class_copy(other.parent, root / "two")}


def _cfg(data: Path, project: Path, name: str, **kw) -> TrainConfig:
    base = dict(data=str(data), model="yolox-nano", img_size=IMG, batch=8, epochs=3, workers=0, project=str(project),
                name=name, deterministic=True, threads=1, plots=False, device="cpu", optimizer="adamw", lr=0.01,
                weight_decay=0.05, warmup_epochs=1.0, no_aug_epochs=0, mosaic=0.0, val_interval=100)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def pretrained(sets, tmp_path_factory) -> Path:
    """yolox-nano trained for 40 steps on the three-class set."""
    project = tmp_path_factory.mktemp("pre")
    run = Trainer(_cfg(sets["three"], project, "pre", epochs=10)).fit()
    assert run.last is not None
    return run.last


def _last_loss(run_dir: Path) -> float:
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    return float(rows[-1]["train/loss"])


def _class_keys_by_shape(a: int, b: int) -> list[str]:
    sa = zoo.build("yolox-nano", num_classes=a).state_dict()
    sb = zoo.build("yolox-nano", num_classes=b).state_dict()
    return sorted(k for k in sa if sa[k].shape != sb[k].shape)


def test_finetune_converges_faster_than_scratch_and_reinits_class_layers(sets, pretrained, tmp_path):
    ft = Trainer(_cfg(sets["two"], tmp_path, "ft", weights=str(pretrained))).fit()
    scratch = Trainer(_cfg(sets["two"], tmp_path, "scratch")).fit()
    loss_ft, loss_scratch = _last_loss(ft.run_dir), _last_loss(scratch.run_dir)
    assert loss_ft < loss_scratch, (loss_ft, loss_scratch)

    # exactly the tensors whose shape depends on the class count were re-initialised
    assert ft.init is not None
    assert sorted(ft.init["reinitialised"]) == _class_keys_by_shape(3, 2)
    assert ft.init["reason"].startswith("3 classes in the weights, 2 in the data")
    meta = json.loads(ft.best.with_suffix(".json").read_text())
    assert sorted(meta["init"]["reinitialised"]) == _class_keys_by_shape(3, 2)


def test_frozen_backbone_stays_as_loaded(sets, pretrained, tmp_path):
    from safetensors.torch import load_file

    run = Trainer(_cfg(sets["two"], tmp_path, "frozen", weights=str(pretrained), freeze="backbone", epochs=1)).fit()
    pre = load_file(str(pretrained))
    state = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)["model"]
    backbone = [k for k in pre if k.startswith("backbone.")]
    # weights and batch-norm statistics of the backbone are the pretrained ones; the head trained
    assert backbone and all(torch.equal(state[k], pre[k]) for k in backbone)
    assert any(not torch.equal(state[k], pre[k]) for k in pre if k.startswith("head.") and k in state
               and state[k].shape == pre[k].shape and state[k].dtype.is_floating_point)


def test_init_from_weights_keeps_everything_but_class_layers(pretrained):
    torch.manual_seed(5)
    model = zoo.build("yolox-nano", num_classes=2, class_names=["circle", "polygon"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    src = finetune.read_source(pretrained, None, "yolox-nano")
    assert src.model == "yolox-nano" and src.num_classes == 3
    rep = finetune.init_from_weights(model, src)
    cls_keys = _class_keys_by_shape(2, 3)
    assert sorted(rep.reinitialised) == cls_keys
    after = model.state_dict()
    for k in after:
        ref = fresh[k] if k in cls_keys else src.state[k]
        assert torch.equal(after[k], ref), k
    assert "re-initialised  head.cls_preds.0.weight" in rep.describe()

    # same classes: everything is loaded, nothing re-initialised
    same = zoo.build("yolox-nano", num_classes=3, class_names=["circle", "rectangle", "triangle"])
    rep = finetune.init_from_weights(same, src)
    assert rep.reinitialised == [] and all(torch.equal(v, src.state[k]) for k, v in same.state_dict().items())
    # weights of another architecture are refused
    with pytest.raises(ConfigError, match="does not fit"):
        finetune.init_from_weights(zoo.build("yolox-tiny", num_classes=3), src)


def test_pretrained_backbone_from_odkit_weights(pretrained):
    from safetensors.torch import load_file

    pre = load_file(str(pretrained))
    torch.manual_seed(1)
    model = zoo.build("yolox-nano", num_classes=5)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    rep = finetune.load_pretrained_backbone(model, pretrained, None)
    sd = model.state_dict()
    assert rep.kept and all(k.startswith("backbone.") for k in rep.kept)
    assert all(torch.equal(sd[k], pre[k]) for k in pre if k.startswith("backbone."))
    assert all(torch.equal(sd[k], v) for k, v in head_before.items())


def test_freeze_stages_and_whole_backbone():
    model = zoo.build("yolox-nano", num_classes=2)
    keep_eval, note = finetune.freeze(model, {"backbone": 1})  # stem + dark2 of CSPDarknet
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.stem.", "backbone.dark2.")) for n in frozen)
    assert any(n.startswith("backbone.dark2.") for n in frozen)
    assert not any(n.startswith("backbone.dark3.") for n in frozen) and "stem + 1 stage" in note
    # CSPDarknet keeps its frozen stages in eval mode itself (frozen_stages), nothing for the trainer
    assert keep_eval == [] and model.backbone.frozen_stages == 1
    model.train()
    assert not model.backbone.stem.training and not any(m.training for m in model.backbone.dark2.modules())
    assert model.backbone.dark3.training
    with pytest.raises(ConfigError, match="stages"):
        finetune.freeze(zoo.build("yolox-nano", num_classes=2), {"backbone": 9})

    model = zoo.build("yolox-nano", num_classes=2)
    finetune.freeze(model, {"backbone": None})
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())

    assert TrainConfig(freeze="backbone:2").freeze_parts() == {"backbone": 2}
    assert TrainConfig(freeze_stages=3).freeze_parts() == {"backbone": 3}
    assert TrainConfig(freeze="backbone,neck").freeze_parts() == {"backbone": None, "neck": None}
    with pytest.raises(ConfigError):
        TrainConfig(freeze="head")


def test_freeze_uses_the_backbones_own_stages():
    try:
        model = zoo.build("retinanet-lite", num_classes=2)
    except ConfigError:
        pytest.skip("retinanet-lite not in the zoo")
    bb = model.backbone
    if not (hasattr(bb, "frozen_stages") and callable(getattr(bb, "stages", None))):
        pytest.skip("backbone without frozen_stages")
    finetune.freeze(model, {"backbone": 1})
    assert bb.frozen_stages >= 1
    model.train()
    assert all(not m.training for m in bb.stages()[:2])  # its own train() keeps them in eval
    assert all(not p.requires_grad for s in bb.stages()[:2] for p in s.parameters())


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("name", ["payload.pt", "payload.safetensors", "payload.pth"])
def test_pickle_payload_given_to_train_weights_is_refused(sets, tmp_path, name):
    from odkit.cli.main import main

    marker = tmp_path / "payload_ran.txt"
    evil = tmp_path / name
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    base = ["train", "--data", str(sets["two"]), "--img", str(IMG), "--epochs", "1", "--batch", "4",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--no-plots"]
    assert main(base + ["--weights", str(evil)]) == 2
    assert not marker.exists()
    assert main(base + ["--pretrained-backbone", str(evil)]) == 2
    assert not marker.exists()
    try:
        import odkit.weights  # noqa: F401
    except ImportError:
        return
    assert main(base + ["--weights", str(evil), "--from", "yolox"]) == 2
    assert not marker.exists()
    with pytest.raises(OdkitError):
        Trainer({"data": str(sets["two"]), "weights": str(evil), "project": str(tmp_path)}).fit()
    assert not marker.exists()
    assert not (tmp_path / "train").exists()  # refused before any run directory was made


YOLOX_OFFICIAL = Path(__file__).parent / "fixtures" / "yolox_parity" / "yolox_nano_c3.safetensors"


def test_finetune_from_an_official_yolox_checkpoint(sets, tmp_path):
    """``--weights X --from yolox``: the model takes the checkpoint's input format (BGR, 0-255) and
    everything but the class layers (3 classes in the checkpoint, 2 in the data)."""
    if not YOLOX_OFFICIAL.is_file():
        pytest.skip("official-layout YOLOX fixture not present")
    pytest.importorskip("odkit.weights")
    from odkit.weights import import_weights

    run = Trainer(_cfg(sets["two"], tmp_path, "yolox", weights=str(YOLOX_OFFICIAL), weights_from="yolox",
                       epochs=1, lr=1e-6)).fit()
    assert sorted(run.init["reinitialised"]) == _class_keys_by_shape(3, 2)
    meta = json.loads(run.last.with_suffix(".json").read_text())
    assert meta["model_config"].get("input_bgr") is True
    ref = import_weights(YOLOX_OFFICIAL, source="yolox", model="yolox-nano").state_dict
    state = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)["model"]
    # backbone weights: the checkpoint's, moved only by a tiny learning rate
    k = "backbone.stem.conv.conv.weight" if "backbone.stem.conv.conv.weight" in state else next(
        k for k in state if k.startswith("backbone.") and k.endswith("weight"))
    assert torch.allclose(state[k], ref[k], atol=1e-3)


def test_cli_finetune_takes_the_model_from_the_weights(sets, pretrained, tmp_path):
    from odkit.cli.main import main

    rc = main(["train", "--data", str(sets["two"]), "--weights", str(pretrained), "--img", str(IMG), "--epochs", "1",
               "--batch", "8", "--workers", "0", "--device", "cpu", "--threads", "1", "--project", str(tmp_path),
               "--name", "cli", "--no-plots", "--freeze-stages", "1"])
    assert rc == 0
    doc = (tmp_path / "cli" / "args.yaml").read_text()
    assert "model: yolox-nano  # weights:" in doc
    cfg = TrainConfig.from_dict(yaml.safe_load(doc))
    assert cfg.weights == str(pretrained) and cfg.freeze_stages == 1
    assert cfg.optimizer == "adamw" and cfg.lr == pytest.approx(0.008 * (8 / 16) ** 0.5 * 0.25, rel=1e-3)
    meta = json.loads((tmp_path / "cli" / "weights" / "last.json").read_text())
    assert sorted(meta["init"]["reinitialised"]) == _class_keys_by_shape(3, 2)
