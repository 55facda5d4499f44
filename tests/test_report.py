"""The HTML report: its files and figures, `odkit report RUN_DIR`, and the page in headless Chromium
(every image loads, no console errors, the class and error filters, a screenshot)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from odkit.cli.main import main
from odkit.data.formats import load_split
from odkit.engine.report import write_report
from odkit.eval.tide import ERROR_TYPES, SPECIAL_TYPES, tide_errors

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def fake_predictions(aset, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Ground truth moved a little, some boxes given the wrong class, plus one background box each."""
    rng = np.random.RandomState(seed)
    idx = aset.image_index()
    out = []
    for i in range(len(aset)):
        b = aset.boxes[idx == i].astype(np.float64)
        lab = aset.labels[idx == i]
        b = b + rng.normal(0, 3, b.shape)
        lab = np.where(rng.uniform(size=len(lab)) < 0.25, (lab + 1) % len(aset.class_names), lab)
        keep = rng.uniform(size=len(lab)) < 0.85  # some objects missed
        out.append({
            "boxes": np.concatenate([b[keep], [[2.0, 2.0, 14.0, 14.0]]]),
            "scores": np.concatenate([rng.uniform(0.3, 1.0, keep.sum()), [0.4]]),
            "labels": np.concatenate([lab[keep], [0]]).astype(np.int64),
        })
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from odkit.data.synth import synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root / "d", n=16, seed=2, size=96, val_fraction=0.5)
    aset = load_split(str(root / "d" / "data.yaml"), "val")
    preds = fake_predictions(aset)
    index = write_report(root / "report", aset, preds, title="test report", data_report="all good")
    return index, aset, preds


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.links.append(v)


def _gallery_json(index: Path) -> dict:
    m = re.search(r'<script id="gallery-data" type="application/json">(.*?)</script>', index.read_text(), re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_report_files_and_figures(report) -> None:
    index, aset, preds = report
    text = index.read_text()
    parser = _Links()
    parser.feed(text)
    local = [x for x in parser.links if not x.startswith("#")]
    assert local and all((index.parent / x).is_file() for x in local)  # no broken link on disk
    gal = _gallery_json(index)
    srcs = [it["src"] for it in gal["images"]]
    assert len(srcs) == len(aset) and all((index.parent / s).is_file() for s in srcs)
    bad = [it["n_errors"] for it in gal["images"]]
    assert bad == sorted(bad, reverse=True) and bad[0] > 0  # worst first
    tide = tide_errors(aset, preds)
    for t in (*ERROR_TYPES, *SPECIAL_TYPES):
        dap = tide.main[t] if t in tide.main else tide.special[t]
        assert f"<td>{dap:.2f}</td>" in text
    # the gallery's Miss tags count TIDE's missed objects
    assert sum(it["errors"].get("Miss", 0) for it in gal["images"]) == int(tide.gt_missed.sum())
    assert "all good" in text and "Per-class AP" in text


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_in_headless_chromium(report, tmp_path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium found (looked for " + ", ".join(BROWSERS) + "); .ci/run installs Debian's chromium")
    index, aset, _ = report
    url = index.resolve().as_uri()
    run = _chromium(browser, tmp_path / "profile", "--dump-dom", url + "#selfcheck")
    m = re.search(r'<pre id="selfcheck">(.*?)</pre>', run.stdout, re.S)
    assert m, f"the page wrote no self-check (exit {run.returncode}): {run.stderr[-2000:]}"
    res = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))
    gal = _gallery_json(index)
    parser = _Links()
    parser.feed(index.read_text())
    n_static = sum(1 for x in parser.links if x.startswith("img/"))
    assert len(res["images"]) == n_static + len(gal["images"])
    broken = [im["src"] for im in res["images"] if not im["ok"]]
    assert not broken, f"images that did not load: {broken}"
    assert res["errors"] == [], f"errors in the page: {res['errors']}"
    # every class and error filter shows exactly the images that have that class / error
    items = gal["images"]
    for c in gal["classes"]:
        assert res["filters"][f"class:{c}"] == sum(c in it["classes"] for it in items), c
    for e in gal["error_types"]:
        assert res["filters"][f"error:{e}"] == sum(it["errors"].get(e, 0) > 0 for it in items), e
    assert res["filters"]["error:any"] == sum(it["n_errors"] > 0 for it in items)
    assert res["filters"]["error:none"] == sum(it["n_errors"] == 0 for it in items)
    assert res["filters"]["class:"] == res["filters"]["error:"] == len(items)
    assert res["count_text"] == f"{len(items)} of {len(items)} images"
    shot = tmp_path / "report.png"
    _chromium(browser, tmp_path / "profile", "--window-size=1280,1600", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_odkit_report_rebuilds_a_run(report, tmp_path) -> None:
    from odkit.engine.evaluator import write_coco_results

    index, aset, preds = report
    data = index.parent.parent / "d" / "data.yaml"
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.yaml").write_text(yaml.safe_dump({"data": str(data), "model": "yolox-nano", "img_size": 64}))
    (run / "metrics.csv").write_text("epoch,train/loss,lr,mAP50-95,mAP50\n1,3.0,0.01,0.1,0.2\n2,2.5,0.005,0.2,0.4\n")
    (run / "data_report.txt").write_text("# data of this run\nchecked\n")
    write_coco_results(aset, preds, run / "predictions.json")
    assert main(["report", str(run)]) == 0
    out = run / "report"
    text = (out / "index.html").read_text()
    assert "img_size: 64" in text and "checked" in text
    assert (out / "img" / "loss.png").is_file() and (out / "img" / "map.png").is_file()
    assert len(_gallery_json(out / "index.html")["images"]) == len(aset)
    assert main(["report", str(tmp_path)]) == 2  # not a run directory: one line, exit 2
    # an `odkit val --report` folder: the evaluated images again by file (source.yaml)
    from odkit.engine.report import write_val_source

    val = tmp_path / "val"
    val.mkdir()
    write_coco_results(aset, preds, val / "predictions.json")
    write_val_source(val, aset, str(data), None, "best.safetensors")
    assert main(["report", str(val)]) == 0
    gal = _gallery_json(val / "index.html")
    assert sorted(it["name"] for it in gal["images"]) == sorted(aset.path(i).name for i in range(len(aset)))
