"""Split checks: an image in two splits (a leak between train and val/test), an empty split, and
images in no split of a set that defines splits.

Splits where one contains the other (``trainval`` and ``train``) share images by design and are
not reported.
"""

from __future__ import annotations

import itertools

import numpy as np

from odkit.data.checks import Context


def check_splits(ctx: Context) -> None:
    """Splits family (nothing to check for a set without splits)."""
    splits = ctx.aset.splits
    if not splits:
        return
    for name, members in sorted(splits.items()):
        if len(members) == 0:
            ctx.add("split_empty", str(ctx.aset.root), f"split {name!r} lists no images", severity="warning")
    for (a, ma), (b, mb) in itertools.combinations(sorted(splits.items()), 2):
        shared = np.intersect1d(ma, mb)
        if not len(shared) or len(shared) in (len(ma), len(mb)):
            continue  # disjoint, or one split contains the other (trainval / train)
        for i in shared:
            ctx.add(
                "split_overlap",
                ctx.fnames[int(i)],
                f"image is in split {a!r} and in split {b!r} (a leak when one of them evaluates the other)",
                severity="warning",
            )
    used = np.zeros(len(ctx.aset), dtype=bool)
    for m in splits.values():
        used[m] = True
    for i in np.flatnonzero(~used):
        ctx.add(
            "not_in_split",
            ctx.fnames[int(i)],
            f"image is in none of the splits ({', '.join(sorted(splits))}); "
            "convert writes it to the split 'unassigned'",
            severity="info",
        )
