"""Nothing lost in silence: every layout of the corpus (tests/_trust_corpus.py) is either read exactly
(image, box and split counts equal to what its files hold) or ends in an error naming a file; none
ends ``N images, 0 boxes`` with exit 0 while annotation files exist."""

from __future__ import annotations

import re

import pytest

from odkit.cli.main import main
from odkit.data.formats import load_dataset
from tests._trust_corpus import Case, corpus


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, Case]:
    return corpus(tmp_path_factory.mktemp("corpus"))


def _check(case: Case, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["data", "check", *case.argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _names() -> list[str]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return list(corpus(Path(d)))


@pytest.mark.parametrize("name", _names())
def test_case_is_read_exactly_or_names_a_file(cases, name, capsys):
    case = cases[name]
    code, text = _check(case, capsys)
    m = re.search(r": (\d+) images, (\d+) boxes", text)
    if case.images is None:
        assert code == case.code, text
        assert case.error in text, text
        if code == 2:
            assert m is None  # no set was made of what could not be read
        return
    assert code == 0, text
    assert m is not None and (int(m.group(1)), int(m.group(2))) == (case.images, case.boxes), text
    if case.splits:
        got = dict(re.findall(r"(\w+) \((\d+)\)", text.split("\n", 1)[0].split("splits:", 1)[1]))
        assert {k: int(v) for k, v in got.items()} == case.splits, text
    else:
        assert "splits:" not in text.split("\n", 1)[0]


def test_no_case_reads_annotation_files_as_all_negatives(cases, capsys):
    for name, case in cases.items():
        code, text = _check(case, capsys)
        m = re.search(r": (\d+) images, (\d+) boxes", text)
        assert not (code == 0 and m and int(m.group(2)) == 0), f"{name}: {text}"


def test_exact_boxes_of_the_pascal_and_text_cases(cases):
    """The boxes themselves, against the values written in the corpus files (PASCAL: as written)."""
    from tests._trust_corpus import PENN

    case = cases["pascal-1.x folder"]
    a = load_dataset(case.argv[0])
    got = {r.path.stem: sorted(tuple(float(v) for v in b) for b in r.boxes) for r in a}
    want = {f"FudanPed{i + 1:05d}": sorted(tuple(map(float, b)) for b in boxes) for i, boxes in enumerate(PENN)}
    assert got == want and a.class_names == ["PASpersonWalking"]
    case = cases["per-image text, --columns"]
    a = load_dataset(case.argv[0], labels=case.argv[2], columns=case.argv[4])
    for r in a:
        i = int(r.path.stem.split("_")[1])
        want = sorted((2.0 + k, 3.0 + k, 12.0 + 2 * k, 11.0 + k) for k in range(i + 1))
        assert sorted(tuple(map(float, b)) for b in r.boxes) == want
    assert sorted(a.class_names) == ["word 0", "word 1", "word 2"]
