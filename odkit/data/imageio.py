"""Image decoding for the data pipeline: every image becomes ``uint8 [H, W, 3]`` RGB.

OpenCV does the decoding. The EXIF orientation tag is applied (the array is what a viewer
shows), grayscale and palette images are expanded to three channels, the alpha channel of
RGBA images is dropped, and 16-bit images are scaled to 8 bits (value >> 8).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from odkit.errors import DataError

__all__ = ["read_image", "write_image"]

# OpenCV >= 4.11 can decode straight to RGB; older versions decode to BGR.
_RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", None)


def read_image(path: str | Path) -> np.ndarray:
    """Decode the image file ``path`` to a contiguous ``uint8 [H, W, 3]`` RGB array.

    Raises :class:`DataError` naming the file when it is missing, empty or not decodable.
    """
    p = Path(path)
    try:
        buf = np.fromfile(p, dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    except FileNotFoundError:
        raise DataError(f"{p}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{p}: expected an image file, found a directory") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read image file ({e})") from None
    if buf.size == 0:
        raise DataError(f"{p}: image file is empty")
    if _RGB_FLAG is not None:
        img = cv2.imdecode(buf, _RGB_FLAG)
    else:  # pragma: no cover - depends on the OpenCV version
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is not None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise DataError(f"{p}: cannot decode image (corrupt file or unsupported format)")
    if img.dtype != np.uint8:  # pragma: no cover - IMREAD_COLOR always yields 8 bits
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    return np.ascontiguousarray(img)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode ``uint8 [H, W, 3]`` RGB ``image`` to ``path`` (format from the suffix); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, enc = cv2.imencode(p.suffix or ".png", bgr)
    if not ok:
        raise DataError(f"{p}: cannot encode image with suffix {p.suffix!r}")
    enc.tofile(p)
    return p
