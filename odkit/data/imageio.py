"""Image decoding for the data pipeline: every image becomes ``uint8 [H, W, 3]`` RGB.

OpenCV does the decoding. The EXIF orientation tag is applied (the array is what a viewer
shows), grayscale and palette images are expanded to three channels, the alpha channel of
RGBA images is dropped, and 16-bit images are scaled to 8 bits (value >> 8).

A JPEG cut short (an interrupted copy) is recovered the way viewers do: the data present is
decoded and the missing part is filled grey (libjpeg's behaviour when the data ends early,
reached by closing the stream with an end-of-image marker, or through ``cv2.imread`` on the
file). :func:`decode_image` says whether that happened and how many rows are grey.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from odkit.errors import DataError

__all__ = ["Decoded", "decode_image", "grey_rows", "read_image", "write_image"]

# OpenCV >= 4.11 can decode straight to RGB; older versions decode to BGR.
_RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", None)


@dataclass
class Decoded:
    """A decoded image: ``image`` uint8 [H, W, 3] RGB; ``recovered`` True when the file is
    truncated and was decoded tolerantly; ``grey_rows`` rows at the bottom filled grey then."""

    image: np.ndarray
    recovered: bool = False
    grey_rows: int = 0


def _decode(buf: np.ndarray) -> np.ndarray | None:
    if _RGB_FLAG is not None:
        return cv2.imdecode(buf, _RGB_FLAG)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # pragma: no cover - depends on the OpenCV version
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img is not None else None  # pragma: no cover


def _recover(p: Path, buf: np.ndarray) -> np.ndarray | None:
    """Tolerant decode of a truncated file (JPEG: close the stream with EOI; else cv2.imread)."""
    if buf[:3].tobytes() == b"\xff\xd8\xff":
        img = _decode(np.concatenate([buf, np.frombuffer(b"\xff\xd9", np.uint8)]))
        if img is not None:
            return img
    flag = _RGB_FLAG if _RGB_FLAG is not None else cv2.IMREAD_COLOR
    img = cv2.imread(str(p), flag)
    if img is not None and _RGB_FLAG is None:  # pragma: no cover - depends on the OpenCV version
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def grey_rows(img: np.ndarray, tol: int = 1) -> int:
    """Rows at the bottom of ``img`` whose right end (last 8 pixels) is decoder grey (128 +- tol).

    When JPEG data ends early, libjpeg fills every block it could not decode with grey; the
    blocks are decoded left to right, top to bottom, so the filled part is the right end of one
    row band and every row below it.
    """
    if img.size == 0:
        return 0
    end = img[:, -min(8, img.shape[1]) :].reshape(img.shape[0], -1).astype(np.int16)
    grey = (np.abs(end - 128) <= tol).all(axis=1)
    if grey.all():
        return img.shape[0]
    return int(np.argmin(grey[::-1]))


def decode_image(path: str | Path) -> Decoded:
    """Decode ``path`` to RGB, recovering truncated files; :class:`Decoded` says how.

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
    img = _decode(buf)
    recovered = False
    if img is None:
        img = _recover(p, buf)
        recovered = img is not None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise DataError(f"{p}: cannot decode image (corrupt file or unsupported format)")
    if img.dtype != np.uint8:  # pragma: no cover - IMREAD_COLOR always yields 8 bits
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    img = np.ascontiguousarray(img)
    return Decoded(img, recovered, grey_rows(img) if recovered else 0)


def read_image(path: str | Path) -> np.ndarray:
    """Decode the image file ``path`` to a contiguous ``uint8 [H, W, 3]`` RGB array.

    A truncated JPEG is decoded as far as its data goes (the rest grey), as viewers show it.
    Raises :class:`DataError` naming the file when it is missing, empty or not decodable.
    """
    return decode_image(path).image


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
