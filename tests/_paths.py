"""Where the tests find the shared BCCD data set (read in place, never copied)."""

import os
from pathlib import Path


def bccd_root() -> Path:
    """``$ODKIT_BCCD`` if set, else ``shared/data/bccd`` beside the repository."""
    env = os.environ.get("ODKIT_BCCD")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"
    return beside


BCCD = bccd_root()
