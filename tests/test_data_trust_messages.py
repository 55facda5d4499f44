"""Messages on the data side: no EXIF warning for orientation 0, libjpeg's complaints attributed to
their file (nothing on the process's stderr), a lone yaml beside images/ read as the data yaml, CSV
sizes read from the image headers with one note."""

from __future__ import annotations

import os

import pytest

from odkit.data.formats import detect_format, load_dataset
from odkit.data.imageio import captured_stderr, decode_image
from odkit.data.probe import probe_image
from odkit.data.validate import check_dataset
from odkit.errors import DataError
from tests._trust_corpus import build_coco8, build_csv_without_sizes, jpeg, voc_xml


def test_exif_orientation_0_is_normal_and_6_still_warns(tmp_path):
    for o in (0, 1, 6, 9):
        p = jpeg(tmp_path / f"o{o}.jpg", 40, 30, o, exif_orientation=o)
        (tmp_path / f"o{o}.xml").write_text(voc_xml(p.name, *((30, 40) if o == 6 else (40, 30)), [("a", (1, 1, 9, 9))]))
    assert probe_image(tmp_path / "o0.jpg").orientation is None and probe_image(tmp_path / "o9.jpg").orientation is None
    assert probe_image(tmp_path / "o6.jpg").display_size == (30, 40)
    warned = [p.file for p in check_dataset(tmp_path).problems if p.kind == "exif_orientation"]
    assert [os.path.basename(f) for f in warned] == ["o6.jpg"]


def test_libjpeg_messages_are_attributed_to_the_file(tmp_path, capfd):
    p = jpeg(tmp_path / "cut.jpg", 64, 64, 1)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.xml").write_text(voc_xml("cut.jpg", 64, 64, [("a", (1, 1, 9, 9))]))
    capfd.readouterr()
    d = decode_image(p)
    assert d.recovered and any("Corrupt JPEG data" in m for m in d.messages)
    rep = check_dataset(tmp_path, decode=True)
    [prob] = [q for q in rep.problems if q.kind == "truncated_image"]
    assert prob.file == str(p) and "Corrupt JPEG data: premature end of data segment" in prob.message
    assert "Corrupt JPEG" not in capfd.readouterr().err  # nothing unattributed on stderr


def test_captured_stderr_passes_other_lines_through(capfd):
    with captured_stderr() as got:
        os.write(2, b"Corrupt JPEG data: 3 extraneous bytes before marker 0xd9\nsome log line\n")
    assert got == ["Corrupt JPEG data: 3 extraneous bytes before marker 0xd9"]
    assert capfd.readouterr().err == "some log line\n"


def test_lone_yaml_beside_images_is_the_data_yaml(tmp_path):
    root = build_coco8(tmp_path / "coco8")
    assert detect_format(root) == "yolo"
    a = load_dataset(root)
    assert a.class_names == ["person", "bicycle", "car"] and len(a) == 5 and a.num_annotations == 10
    (root / "other.yaml").write_text("train: images/train\nnames: [x]\n")  # two yamls: which one is unclear
    with pytest.raises(DataError, match="give the data yaml of the 2 here as DATA: coco8.yaml, other.yaml"):
        detect_format(root)
    assert load_dataset(root / "coco8.yaml").num_annotations == 10


def test_csv_without_sizes_reads_headers_with_one_note(tmp_path):
    root = build_csv_without_sizes(tmp_path / "c")
    a = load_dataset(root)
    assert sorted(a.widths.tolist()) == [40, 41, 42, 43] and set(a.heights.tolist()) == {30}
    notes = [p for p in a.problems if p.kind == "sizes_from_images"]
    assert len(notes) == 1 and "4 of 4 sizes read" in notes[0].message
    rep = check_dataset(a)
    assert "size_unknown" not in rep.counts()


def test_roboflow_yaml_with_parent_relative_splits(tmp_path):
    """Roboflow's data.yaml says ``train: ../train/images`` for ``DIR/train/images`` beside it."""
    root = tmp_path / "rf"
    for split, n in (("train", 2), ("valid", 1)):
        for i in range(n):
            jpeg(root / split / "images" / f"{split}{i}.jpg", 40, 30, 10 * len(split) + i)
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['x']\n"
                                    "roboflow:\n  workspace: w\n  project: p\n")
    a = load_dataset(root)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 2, "val": 1} and a.num_annotations == 3
