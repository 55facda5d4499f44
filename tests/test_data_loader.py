"""Image decoding, DetectionDataset, batch sampler, collate and build_loader."""

from __future__ import annotations

import logging
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from odkit.data.dataset import DetectionDataset
from odkit.data.imageio import read_image
from odkit.data.loader import (
    DetectionBatchSampler,
    MultiScale,
    _SeededSampler,
    build_loader,
    collate_detection,
)
from odkit.data.structures import AnnotationSet
from odkit.data.transforms import AugmentConfig, TrainAugment, ValTransform
from odkit.errors import DataError

PIL = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------------- imageio
def _rgb_pattern(h=20, w=40):
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4] = (255, 0, 0)  # red band on the left
    a[: h // 4, :, 1] = 255  # green band on top
    return a


def test_read_image_rgb_order_and_formats(tmp_path):
    a = _rgb_pattern()
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 40, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    # grayscale
    g = (np.arange(20 * 40).reshape(20, 40) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.repeat(g[..., None], 3, 2))
    # RGBA (alpha dropped)
    PIL.fromarray(np.dstack([a, np.full((20, 40), 77, np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), a)
    # palette
    PIL.fromarray(a).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), a)
    # 16-bit: scaled to 8 bits (v >> 8)
    g16 = (np.arange(20 * 40).reshape(20, 40) * 80).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 0], (g16 >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    "orientation,expect",
    [
        (1, lambda a: a),
        (3, lambda a: a[::-1, ::-1]),
        (6, lambda a: np.rot90(a, -1)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_read_image_applies_exif_orientation(tmp_path, orientation, expect):
    a = _rgb_pattern(24, 48)
    exif = PIL.Exif()
    exif[0x0112] = orientation
    PIL.fromarray(a).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=100, subsampling=0)
    out = read_image(tmp_path / "o.jpg").astype(int)
    ref = expect(a).astype(int)
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < 8


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.jpg.*not found"):
        read_image(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg.*cannot decode"):
        read_image(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png.*empty"):
        read_image(tmp_path / "empty.png")


# ------------------------------------------------------------------------------------- dataset
def make_aset(tmp_path, n=6, crowd=False):
    rng = np.random.default_rng(0)
    files, boxes, labels, iscrowd, ws, hs = [], [], [], [], [], []
    for i in range(n):
        h, w = (120, 160) if i % 2 == 0 else (150, 100)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        name = f"img{i}.png"
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        k = 3
        x1 = rng.uniform(0, w / 2, k)
        y1 = rng.uniform(0, h / 2, k)
        b = np.stack([x1, y1, x1 + rng.uniform(10, w / 2, k), y1 + rng.uniform(10, h / 2, k)], 1)
        files.append(name)
        boxes.append(b.astype(np.float32))
        labels.append(np.array([0, 1, 2 if not crowd else -1]))
        iscrowd.append(np.array([False, crowd, False]))
        ws.append(w)
        hs.append(h)
    return AnnotationSet.from_lists(tmp_path, files, ws, hs, boxes, labels, ["a", "b", "c"], iscrowd=iscrowd)


def test_dataset_plain_sample_resized_to_long_side(tmp_path):
    aset = make_aset(tmp_path)
    ds = DetectionDataset(aset, img_size=64)
    img, boxes, labels, meta = ds[1]
    assert img.shape == (64, 43, 3) and img.dtype == np.uint8  # 150x100 -> long side 64
    r = 64 / 150
    assert meta["ratio"] == pytest.approx(r) and meta["orig_size"] == (150, 100) and meta["pad"] == (0.0, 0.0)
    assert boxes.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(boxes, aset[1].boxes * r, rtol=1e-6)
    assert meta["path"].endswith("img1.png") and meta["image_id"] == 1
    assert ds[-1][3]["index"] == 5
    with pytest.raises(IndexError):
        ds[6]


def test_dataset_filters_crowd_and_unknown_once(tmp_path, caplog):
    aset = make_aset(tmp_path, crowd=True)
    with caplog.at_level(logging.WARNING, logger="odkit.data.dataset"):
        ds = DetectionDataset(aset, img_size=64, transforms=ValTransform())
    assert ds.num_filtered == {"iscrowd": 6, "unknown_class": 6, "difficult": 0}
    msgs = [r for r in caplog.records if "kept out of training targets" in r.getMessage()]
    assert len(msgs) == 1 and "12 annotations" in msgs[0].getMessage()
    for i in range(len(ds)):
        _, b, lab, _ = ds[i]
        np.testing.assert_array_equal(lab, [0])
    # the train pipeline never sees them either
    dt = DetectionDataset(aset, img_size=64, transforms=TrainAugment())
    for i in range(len(dt)):
        assert set(dt[i][2].tolist()) <= {0}


def test_dataset_ram_cache_is_identical_and_respects_budget(tmp_path):
    aset = make_aset(tmp_path)
    t = TrainAugment(AugmentConfig(mixup_prob=0.5))
    plain = DetectionDataset(aset, 64, t)
    cached = DetectionDataset(aset, 64, t, cache_ram_gb=1.0)
    assert cached.num_cached == 6
    for key in [(0, 64, 0, True), (3, 96, 1, True), (5, 64, 2, False)]:
        a, b = plain[key], cached[key]
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    one_image = 64 * 48 * 3
    partial = DetectionDataset(aset, 64, None, cache_ram_gb=2.5 * one_image / 1024**3)
    assert partial.num_cached == 2
    assert np.array_equal(partial[4][0], plain.load(4)[0])


def test_dataset_reports_size_mismatch_and_corrupt_file(tmp_path):
    aset = make_aset(tmp_path, n=2)
    aset.widths[0] = 999
    with pytest.raises(DataError, match="img0.png.*160x120.*999x120"):
        DetectionDataset(aset, 64)[0]
    (tmp_path / "img1.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="img1.png"):
        DetectionDataset(aset, 64)[1]


def test_close_mosaic_schedule(tmp_path):
    aset = make_aset(tmp_path)
    ds = DetectionDataset(aset, 64, TrainAugment(AugmentConfig(close_mosaic=2)))
    ds.set_epoch(0, max_epochs=5)
    assert [ds.strong_augment(e) for e in range(5)] == [True, True, True, False, False]
    ds.set_epoch(3)
    assert not ds[0][3].get("augmented")
    ds2 = DetectionDataset(aset, 64, TrainAugment())
    assert ds2.strong_augment(100)
    ds2.close_mosaic()
    assert not ds2.strong_augment(0)


# ------------------------------------------------------------------------------------- collate / sampler
def test_collate_detection_layout():
    imgs = [np.full((8, 10, 3), v, np.uint8) for v in (0, 255)]
    imgs[1][0, 0] = (10, 20, 30)
    batch = [
        (imgs[0], np.zeros((0, 4), np.float32), np.zeros(0, np.int64), {"a": 0}),
        (imgs[1], np.ones((2, 4), np.float64), np.array([1, 2]), {"a": 1}),
    ]
    x, targets, metas = collate_detection(batch)
    assert x.shape == (2, 3, 8, 10) and x.dtype == torch.float32 and x.is_contiguous()
    assert float(x[0].max()) == 0.0 and float(x[1, 1, 1, 1]) == 1.0
    assert torch.allclose(x[1, :, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert targets[0]["boxes"].shape == (0, 4) and targets[1]["boxes"].dtype == torch.float32
    assert targets[1]["labels"].dtype == torch.int64 and targets[1]["labels"].tolist() == [1, 2]
    assert metas == [{"a": 0}, {"a": 1}]
    with pytest.raises(ValueError, match="one size"):
        collate_detection([batch[0], (np.zeros((4, 4, 3), np.uint8), *batch[1][1:])])


class _Sized:
    img_size = 416

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def test_multiscale_batch_sampler_sizes_and_determinism():
    ms = MultiScale.around(416, steps=3, every=3)
    assert ms.sizes.tolist() == [320, 352, 384, 416, 448, 480, 512]
    ds = _Sized(100)
    bs = DetectionBatchSampler(ds, 8, _SeededSampler(100, True, 7), seed=7, multiscale=ms)
    batches = list(bs)
    assert len(batches) == len(bs) == 13 and sum(len(b) for b in batches) == 100
    assert sorted(k[0] for b in batches for k in b) == list(range(100))
    sizes = [b[0][1] for b in batches]
    assert all(len({k[1] for k in b}) == 1 for b in batches)  # one size per batch
    assert all(sizes[i] == sizes[i - i % 3] for i in range(len(sizes)))  # held for `every` batches
    assert set(sizes) <= set(ms.sizes.tolist()) and len(set(sizes)) > 1
    assert {k[2] for k in batches[0]} == {0}
    again = DetectionBatchSampler(ds, 8, _SeededSampler(100, True, 7), seed=7, multiscale=ms)
    assert list(again) == batches
    assert list(bs)[0][0][2] == 1  # a second pass advances the epoch ...
    bs.set_epoch(0)
    assert list(bs) == batches  # ... and set_epoch selects it
    with pytest.raises(Exception, match="multiples"):
        MultiScale(300, 416).validate()


def test_distributed_batch_sampler_shards_with_same_sizes():
    ds = _Sized(50)
    ms = MultiScale(320, 512, every=1)
    ranks = [
        list(
            DetectionBatchSampler(ds, 4, DistributedSampler(ds, num_replicas=2, rank=r, seed=3), 3, False, ms)
        )
        for r in range(2)
    ]
    idx = [k[0] for r in ranks for b in r for k in b]
    assert set(idx) == set(range(50)) and len(idx) == 50
    assert [b[0][1] for b in ranks[0]] == [b[0][1] for b in ranks[1]]


# ------------------------------------------------------------------------------------- loader
def _collect(loader, epochs):
    out = []
    for e in epochs:
        loader.set_epoch(e)
        for x, targets, metas in loader:
            out.append(
                (
                    x.clone(),
                    [t["boxes"].clone() for t in targets],
                    [t["labels"].clone() for t in targets],
                    [m["index"] for m in metas],
                )
            )
    return out


def _same(r1, r2):
    return r1[3] == r2[3] and r1[0].shape == r2[0].shape and torch.equal(r1[0], r2[0])


def test_loader_deterministic_across_worker_counts(tmp_path):
    aset = make_aset(tmp_path)
    results = []
    for workers in (0, 2):
        ds = DetectionDataset(aset, 64, TrainAugment(AugmentConfig(mixup_prob=0.5)))
        loader = build_loader(
            ds, 4, shuffle=True, workers=workers, seed=11, multiscale=MultiScale(32, 96, every=1)
        )
        results.append(_collect(loader, [0, 1]))
    a, b = results
    assert len(a) == len(b) == 4
    for (xa, ba, la, ia), (xb, bb, lb, ib) in zip(a, b):
        assert ia == ib and torch.equal(xa, xb)
        assert all(torch.equal(p, q) for p, q in zip(ba, bb)) and all(
            torch.equal(p, q) for p, q in zip(la, lb)
        )
    assert not _same(a[0], a[2])  # epochs differ
    # a different seed gives different batches
    ds = DetectionDataset(aset, 64, TrainAugment())
    other = _collect(build_loader(ds, 4, workers=0, seed=12, multiscale=MultiScale(32, 96, every=1)), [0])
    assert not _same(other[0], a[0])


def test_loader_close_mosaic_reaches_persistent_workers(tmp_path):
    aset = make_aset(tmp_path)
    ds = DetectionDataset(aset, 64, TrainAugment())
    loader = build_loader(ds, 3, workers=1, seed=0, persistent_workers=True)
    _, _, metas = next(iter(loader))
    assert all(m.get("mosaic") for m in metas)
    ds.close_mosaic()  # in the main process only
    for _, _, metas in loader:
        assert not any(m.get("augmented") for m in metas)


def test_loader_val_batches_and_memory_stable(tmp_path):
    aset = make_aset(tmp_path)
    ds = DetectionDataset(aset, 64, TrainAugment())
    loader = build_loader(ds, 2, shuffle=True, workers=0, seed=0, drop_last=True)
    assert len(loader) == 3
    for _ in loader:
        pass
    tracemalloc.start()
    for _ in loader:
        pass
    first = tracemalloc.get_traced_memory()[0]
    for _ in range(4):
        for _ in loader:
            pass
    grown = tracemalloc.get_traced_memory()[0] - first
    tracemalloc.stop()
    assert grown < 200_000, grown
    dv = DetectionDataset(aset, 64, ValTransform())
    x, targets, metas = next(iter(build_loader(dv, 6, shuffle=False)))
    assert x.shape == (6, 3, 64, 64) and [m["index"] for m in metas] == list(range(6))
    from odkit.data.transforms import unletterbox_boxes

    for t, m, i in zip(targets, metas, range(6)):
        np.testing.assert_allclose(unletterbox_boxes(t["boxes"].numpy(), m), aset[i].boxes, atol=1e-3)


def test_augmented_grid_writes_png(tmp_path):
    from odkit.data.preview import augmented_grid

    aset = make_aset(tmp_path)
    out = augmented_grid(aset, tmp_path / "grid.png", n=4, img_size=64, seed=1)
    img = read_image(out)
    assert img.shape[0] >= 2 * 64 and img.shape[1] >= 2 * 64
