"""Damaged images: bytes after the end marker (info), a JPEG cut short by 20 bytes (warning, used as
decoded), a JPEG cut in half (warning naming the grey rows), random bytes named .jpg (error):
check reports the tiers, training leaves the undecodable image out and names it, --strict refuses,
predict writes results for every other image and exits 1, --fix-out repairs what it can."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from odkit.cli.main import main
from odkit.data.formats import load_dataset
from odkit.data.imageio import decode_image
from odkit.data.validate import check_dataset
from odkit.errors import DataError

W, H = 96, 64
DAMAGED = {"padded": "trailing_bytes", "cut20": "truncated_image", "half": "truncated_image",
           "noise": "unreadable_image"}
TIER = {"padded": "info", "cut20": "warning", "half": "warning", "noise": "error"}


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), (7, 7), 2)
    cv2.rectangle(img, (20, 10), (60, 50), (255, 0, 0) if seed % 2 else (0, 0, 255), -1)
    return img


def _jpeg_bytes(seed: int) -> bytes:
    return cv2.imencode(".jpg", _picture(seed))[1].tobytes()


def damaged_bytes(kind: str, seed: int) -> bytes:
    b = _jpeg_bytes(seed)
    return {
        "padded": b + b"\x00" * 4096,  # zeros after the end-of-image marker
        "cut20": b[:-20],
        "half": b[: len(b) // 2],
        "noise": np.random.default_rng(seed).integers(0, 256, len(b), dtype=np.uint8).tobytes(),
    }[kind]


def _xml(stem: str, cls: str) -> str:
    return (
        f"<annotation><filename>{stem}.jpg</filename><size><width>{W}</width><height>{H}</height></size>"
        f"<object><name>{cls}</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>60</xmax><ymax>50</ymax>"
        "</bndbox></object></annotation>"
    )


def build(root: Path, good: int = 8) -> Path:
    """A flat folder (LabelImg layout, no splits) of ``good`` clean images and the four damaged ones."""
    root.mkdir(parents=True)
    for i in range(good):
        (root / f"ok{i}.jpg").write_bytes(_jpeg_bytes(i))
        (root / f"ok{i}.xml").write_text(_xml(f"ok{i}", "red" if i % 2 else "blue"))
    for k, kind in enumerate(DAMAGED):
        (root / f"{kind}.jpg").write_bytes(damaged_bytes(kind, 100 + k))
        (root / f"{kind}.xml").write_text(_xml(kind, "red" if k % 2 else "blue"))
    return root


def test_decoding_tiers():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for kind in DAMAGED:
            paths[kind] = Path(d) / f"{kind}.jpg"
            paths[kind].write_bytes(damaged_bytes(kind, 1))
        assert cv2.imdecode(np.frombuffer(paths["cut20"].read_bytes(), np.uint8), cv2.IMREAD_COLOR) is None
        assert not decode_image(paths["padded"]).recovered
        cut = decode_image(paths["cut20"])
        assert cut.recovered and cut.image.shape == (H, W, 3)
        np.testing.assert_allclose(cut.image.astype(float).mean(), _picture(1)[..., ::-1].mean(), atol=3)
        half = decode_image(paths["half"])
        assert half.recovered and 8 <= half.grey_rows < H
        with pytest.raises(DataError, match="cannot decode"):
            decode_image(paths["noise"])


def test_check_reports_each_tier(tmp_path, capsys):
    root = build(tmp_path / "d")
    rep = check_dataset(load_dataset(root))
    for kind, problem in DAMAGED.items():
        ps = [p for p in rep.problems if Path(p.file).stem == kind]
        assert [(p.kind, p.severity) for p in ps] == [(problem, TIER[kind])], (kind, ps)
    half = [p for p in rep.problems if Path(p.file).stem == "half"][0]
    assert f" of {H} rows missing (filled grey)" in half.message and half.message.split()[0] != "0"
    assert "4096 bytes after the JPEG end marker" in [p for p in rep.problems if p.kind == "trailing_bytes"][0].message
    assert rep.unusable_files == [str(root / "noise.jpg")]
    assert not rep.has_other_errors
    assert len(rep.usable()) == 11
    rc = main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert rc == 1 and "1 image(s) cannot be decoded" in out and "noise.jpg" in out
    # without the undecodable file: exit 0, but --strict fails on the truncation warnings
    (root / "noise.jpg").unlink()
    (root / "noise.xml").unlink()
    assert main(["data", "check", str(root)]) == 0
    assert main(["data", "check", str(root), "--strict"]) == 1
    # bytes after the end marker alone never fail, not even with --strict
    for kind in ("cut20", "half"):
        (root / f"{kind}.jpg").unlink()
        (root / f"{kind}.xml").unlink()
    assert main(["data", "check", str(root), "--strict"]) == 0


def test_fix_out_reencodes_recovered_and_lists_undecodable(tmp_path, capsys):
    root = build(tmp_path / "d", good=2)
    out = tmp_path / "fixed"
    main(["data", "check", str(root), "--fix-out", str(out)])
    text = capsys.readouterr().out
    assert "re-encoded (was truncated)" in text and "left out (cannot be decoded)" in text
    doc = json.loads((out / "repair_report.json").read_text())
    assert sorted(Path(f).name for f in doc["reencoded"]) == ["cut20.jpg", "half.jpg"]
    assert [Path(f).name for f in doc["left_out_undecodable"]] == ["noise.jpg"]
    again = check_dataset(load_dataset(out))
    assert again.counts() == {"trailing_bytes": 1}, again.text()
    assert load_dataset(out).source == "voc-flat" and len(load_dataset(out)) == 5


# ---------------------------------------------------------------- training and predict
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from odkit.engine.config import TrainConfig
    from odkit.engine.trainer import Trainer

    tmp = tmp_path_factory.mktemp("damaged")
    root = build(tmp / "d")
    cfg = TrainConfig(data=str(root), img_size=64, epochs=1, batch=4, workers=0, project=str(tmp / "runs"),
                      no_aug_epochs=0, plots=False, device="cpu", threads=1, warmup_epochs=0.0, mosaic=0.0)
    return root, Trainer(cfg).fit(), cfg


def test_training_leaves_undecodable_out_and_names_it(trained):
    root, result, _ = trained
    report = (result.run_dir / "data_report.txt").read_text()
    assert "1 image(s) of all left out (cannot be decoded)" in report and str(root / "noise.jpg") in report
    hold = json.loads((result.run_dir / "holdout.json").read_text())
    used = hold["train"] + hold["val"]
    assert len(used) == 11 and str(root / "noise.jpg") not in used
    assert str(root / "half.jpg") in used  # the truncated ones are used as decoded
    assert result.best is not None and result.best.exists()


def test_strict_refuses(trained, tmp_path):
    from odkit.engine.trainer import Trainer

    root, _, cfg = trained
    strict = type(cfg)(**{**cfg.to_dict(), "strict_data": True, "project": str(tmp_path)})
    with pytest.raises(DataError, match="noise.jpg"):
        Trainer(strict).fit()
    rc = main(["train", "--data", str(root), "--img", "64", "--epochs", "1", "--batch", "4", "--workers", "0",
               "--device", "cpu", "--project", str(tmp_path), "--strict"])
    assert rc != 0


def test_predict_goes_on_past_unreadable_images(trained, tmp_path, capsys):
    root, result, _ = trained
    out = tmp_path / "pred"
    rc = main(["predict", "--weights", str(result.best), "--source", str(root), "--out", str(out), "--batch", "3",
               "--device", "cpu", "--conf", "0.01"])
    text = capsys.readouterr().out
    assert rc == 1
    written = sorted(p.stem for p in (out / "labels").glob("*.txt"))
    assert written == sorted([f"ok{i}" for i in range(8)] + ["padded", "cut20", "half"])
    assert "1 image(s) could not be read" in text and "noise.jpg" in text
    assert "warning:" in text and "half.jpg" in text
    assert (out / "failures.txt").read_text().startswith(str(root / "noise.jpg"))
    preds = json.loads((out / "predictions.json").read_text())
    assert {Path(p["file_name"]).stem for p in preds} <= set(written)
    # the same through a list of files
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p}\n" for p in sorted(root.glob("*.jpg"))))
    rc = main(["predict", "--weights", str(result.best), "--source", str(lst), "--out", str(tmp_path / "p2"),
               "--device", "cpu"])
    assert rc == 1 and len(list((tmp_path / "p2" / "labels").glob("*.txt"))) == 11
