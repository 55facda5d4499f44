"""A repaired copy of a checked data set, in its own format.

The copy holds the safe repairs of the check (boxes clipped, zero-area boxes dropped, unknown sizes
filled), re-encodes the images that were recovered from truncated files (so every reader decodes
them), and leaves out the images that cannot be decoded, listing them in ``repair_report.json``
beside the copy (never silently omitted).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from odkit.data.formats import WRITE_FORMATS, save_dataset, save_splits
from odkit.data.formats._common import output_names
from odkit.data.structures import Problem
from odkit.data.validate import Report

log = logging.getLogger(__name__)


@dataclass
class RepairResult:
    """What :func:`write_repaired` did: output format, images written per split (``""``: no
    splits), files re-encoded, files left out (undecodable) and problems met while writing."""

    format: str
    counts: dict[str, int]
    reencoded: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def write_repaired(report: Report, out: str | Path, format: str | None = None, split: str | None = None) -> RepairResult:
    """Write the repaired set of ``report`` under ``out`` in ``format`` (default: its source format).

    ``split``: write the set as that one split (it was loaded as a split); otherwise every split
    of the set is written. Returns a :class:`RepairResult`; ``repair_report.json`` in ``out``
    (or beside a COCO json) lists the re-encoded and left-out files.
    """
    from odkit.data.imageio import decode_image, write_image

    fmt = format or (report.dataset.source if report.dataset.source in WRITE_FORMATS else "coco")
    aset = report.dataset.select_images(list(range(len(report.dataset))))  # a copy: files are swapped
    names = output_names(aset)
    bad = set(report.unusable)
    keep = [i for i in range(len(aset)) if i not in bad]
    result = RepairResult(fmt, {}, left_out=[str(aset.path(i)) for i in sorted(bad)])
    with tempfile.TemporaryDirectory(prefix="odkit-repair-") as tmp:
        for k, i in enumerate(report.recovered):
            src = aset.path(i)
            dst = Path(tmp) / f"{k}" / src.name
            write_image(dst, decode_image(src).image)
            aset.files[i] = str(dst)
            result.reencoded.append(str(src))
        sub = aset.select_images(keep)
        sub_names = [names[i] for i in keep]
        if split is not None or not sub.splits:
            sub.splits = {}
            result.problems = save_dataset(sub, out, fmt, split=split, names=sub_names)
            result.counts = {split or "": len(sub)}
        else:
            result.problems, result.counts = save_splits(sub, out, fmt, names=sub_names)
    o = Path(out)
    where = (o.parent if o.suffix.lower() in (".json", ".xml") else o) / "repair_report.json"
    where.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": fmt,
        "images_written": result.counts,
        "repairs": report.repairs,
        "reencoded": result.reencoded,
        "left_out_undecodable": result.left_out,
        "not_written": [p.to_dict() for p in result.problems],
    }
    where.write_text(json.dumps(doc, indent=1) + "\n")
    log.debug("repaired copy of %s written to %s (%s)", report.name, out, fmt)
    return result
