"""Sliced training data (``odkit data slice``): tiles, clipped boxes, counts with reasons, every layout
read back."""

import numpy as np
import pytest

from odkit.cli.main import main
from odkit.data.imageio import write_image
from odkit.data.structures import AnnotationSet
from odkit.data.tiles import DROP_THIN, DROP_VISIBLE, clip_to_tile, slice_set, tile_grid
from odkit.errors import ConfigError


def test_clip_to_tile_hand_worked():
    b = np.array([[50, 10, 70, 20], [0, 0, 10, 10], [5, 5, 5, 9]], np.float32)
    cb, frac = clip_to_tile(b, (40, 0, 60, 60))
    np.testing.assert_allclose(cb[0], [10, 10, 20, 20])
    np.testing.assert_allclose(frac, [0.5, 0.0, 0.0])


@pytest.fixture
def one_image(tmp_path):
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :, 0] = np.arange(100)[None, :]  # pixel value = x: tiles are checked by content
    write_image(tmp_path / "a.png", img)
    boxes = np.array([[10, 10, 30, 30],    # A: whole in the top-left tile only
                      [50, 10, 70, 20],    # B: half in the top-left tile, whole in the top-right one
                      [30, 30, 70, 70]],   # C: 56 % in each of the four tiles
                     np.float32)
    return AnnotationSet.from_lists(tmp_path, ["a.png"], [100], [100], [boxes], [np.array([0, 1, 2])],
                                    ["a", "b", "c"])


def test_slice_set_counts_every_pair(one_image, tmp_path):
    assert tile_grid(100, 100, 60, 0.0) == [(0, 0, 60, 60), (40, 0, 100, 60), (0, 40, 60, 100), (40, 40, 100, 100)]
    tiles, rep = slice_set(one_image, tmp_path / "t1", size=60, overlap=0.0, min_visible=0.6)
    assert (rep.tiles, rep.kept_whole, rep.kept_clipped) == (4, 2, 0)
    assert rep.dropped == {DROP_VISIBLE: 5}  # B once, C four times
    assert [(f, c) for f, _, c, _ in rep.lost] == [("a.png", "c")]
    assert rep.empty_kept == 2 and rep.tiles_with_boxes == 2
    assert tiles.files[1] == "a_x40_y0.png"
    t = tiles[1]
    np.testing.assert_allclose(t.boxes, [[10, 10, 30, 20]])  # B in the tile's pixels
    from odkit.data.imageio import read_image

    assert read_image(tmp_path / "t1" / "a_x40_y0.png")[0, :, 0].tolist() == list(range(40, 100))
    # a lower minimum keeps the cut pieces, clipped; no tile left empty
    tiles, rep = slice_set(one_image, tmp_path / "t2", size=60, overlap=0.0, min_visible=0.25)
    assert (rep.kept_whole, rep.kept_clipped, sum(rep.dropped.values()), rep.lost) == (2, 5, 0, [])
    # thin pieces: C's pieces are 30 px a side, B's piece 10; min_side 31 drops all five
    _, rep = slice_set(one_image, tmp_path / "t3", size=60, overlap=0.0, min_visible=0.25, min_side=31)
    assert rep.dropped == {DROP_THIN: 5} and rep.kept_clipped == 0 and rep.kept_whole == 2
    # no empty tiles
    tiles, rep = slice_set(one_image, tmp_path / "t4", size=60, overlap=0.0, min_visible=0.6, empty_fraction=0.0)
    assert rep.tiles == 2 and rep.empty_skipped == 2 and len(tiles) == 2
    with pytest.raises(ConfigError, match="overlap"):
        slice_set(one_image, tmp_path / "t5", size=60, overlap=1.0)


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc"])
def test_cli_writes_any_layout_read_back(one_image, tmp_path, fmt, capsys):
    from odkit.data.formats import load_dataset, save_dataset

    save_dataset(one_image, tmp_path / "src", "coco", split="train")
    src = tmp_path / "src" / "train.json"
    rc = main(["data", "slice", str(src), str(tmp_path / fmt), "--size", "60", "--overlap", "0", "--to", fmt,
               "--min-visible", "0.25"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 kept whole, 5 kept clipped, 0 dropped" in out and "every source box is in" in out
    back = load_dataset(tmp_path / fmt if fmt != "coco" else next((tmp_path / fmt).glob("*.json")))
    assert len(back) == 4 and back.num_annotations == 7
    i = [str(f).endswith("a_x40_y0.png") for f in back.files].index(True)
    got = sorted(map(tuple, back[i].boxes.round(3).tolist()))
    assert got == [(0.0, 30.0, 30.0, 60.0), (10.0, 10.0, 30.0, 20.0)]  # C clipped, B whole


def test_training_option_slices_train_set(one_image):
    from odkit.engine.data import sliced_train

    notes: list[str] = []
    tiles = sliced_train(one_image, 60, 0.0, notes, report=False)
    assert len(tiles) == 4 and tiles.num_annotations == 7 and tiles.splits == {}
    assert "2 kept whole, 5 kept clipped" in notes[0]
    assert all(tiles.path(i).is_file() for i in range(len(tiles)))
