"""K-means anchors (1 - IoU), fit metrics, evolution and the ``odkit anchors`` command."""

from __future__ import annotations

import numpy as np
import pytest

from odkit.errors import ConfigError
from odkit.ops.kmeans import anchor_metrics, evolve_anchors, kmeans_anchors, wh_iou
from tests._paths import BCCD  # noqa: E402


def test_wh_iou_reference():
    a = np.array([[10.0, 20.0], [4.0, 4.0]])
    b = np.array([[20.0, 10.0]])
    # centre-aligned: inter = 10 * 10, union = 200 + 200 - 100
    assert wh_iou(a, b)[0, 0] == pytest.approx(100 / 300)
    assert wh_iou(a, b)[1, 0] == pytest.approx(16 / 200)
    assert np.allclose(np.diag(wh_iou(a, a)), 1.0)


def _three_clusters(seed=0):
    g = np.random.default_rng(seed)
    centres = np.array([[10.0, 12.0], [40.0, 30.0], [120.0, 90.0]])
    return np.concatenate([c * np.exp(g.normal(0, 0.05, (200, 2))) for c in centres])


def test_kmeans_recovers_clusters_and_is_deterministic():
    wh = _three_clusters()
    a = kmeans_anchors(wh, 3, seed=1)
    assert np.allclose(a, [[10, 12], [40, 30], [120, 90]], rtol=0.05)
    assert np.array_equal(a, kmeans_anchors(wh, 3, seed=1))
    assert (np.diff(a.prod(1)) >= 0).all()  # sorted by area
    fit = anchor_metrics(wh, a)
    assert fit.bpr == 1.0 and fit.mean_best_iou > 0.85
    # a single anchor far from everything: ratio BPR counts boxes within 4x in both w and h
    one = np.array([[40.0, 30.0]])
    r = wh / one
    expect = (np.minimum(r, 1 / r).min(1) > 0.25).mean()
    assert anchor_metrics(wh, one).bpr == pytest.approx(expect)
    assert anchor_metrics(wh, one, "iou", 0.5).bpr == pytest.approx((wh_iou(wh, one)[:, 0] >= 0.5).mean())


def test_evolution_never_worse():
    wh = _three_clusters(2)
    start = np.array([[15.0, 15.0], [50.0, 50.0], [100.0, 100.0]])
    before = wh_iou(wh, start).max(1).mean()
    out, fit = evolve_anchors(wh, start, generations=200, seed=0)
    assert fit >= before and fit == pytest.approx(wh_iou(wh, out).max(1).mean())
    assert np.array_equal(out, evolve_anchors(wh, start, generations=200, seed=0)[0])


def test_kmeans_bad_input():
    with pytest.raises(ConfigError):
        kmeans_anchors(np.ones((2, 2)), 3)
    with pytest.raises(ConfigError):
        kmeans_anchors(np.array([[0.0, 1.0], [1, 1], [2, 2]]), 2)


@pytest.mark.skipif(not BCCD.exists(), reason="BCCD data set not available")
def test_cli_anchors_bccd(capsys):
    from odkit.cli.main import main

    assert main(["anchors", str(BCCD), "-k", "9", "--img", "416", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("anchors (w,h"))
    pairs = line.split(": ", 1)[1].split(", ")
    assert len(pairs) == 9
    areas = [float(w) * float(h) for w, h in (p.split(",") for p in pairs)]
    assert areas == sorted(areas)
    bpr = float(next(x for x in out.splitlines() if x.startswith("best possible recall")).rsplit(" ", 1)[1])
    assert 0.9 <= bpr <= 1.0
    assert main(["anchors", str(BCCD), "-k", "9", "--img", "416", "--seed", "0"]) == 0
    assert capsys.readouterr().out == out  # deterministic
