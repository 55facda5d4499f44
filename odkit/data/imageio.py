"""Image decoding for the data pipeline: every image becomes ``uint8 [H, W, 3]`` RGB.

OpenCV does the decoding. The EXIF orientation tag is applied (the array is what a viewer
shows), grayscale and palette images are expanded to three channels, the alpha channel of
RGBA images is dropped, and 16-bit images are scaled to 8 bits (value >> 8).

A JPEG cut short (an interrupted copy) is recovered the way viewers do: the data present is
decoded and the missing part is filled grey (libjpeg's behaviour when the data ends early,
reached by closing the stream with an end-of-image marker, or through ``cv2.imread`` on the
file). :func:`decode_image` says whether that happened and how many rows are grey.

libjpeg / libpng write their complaints (``Corrupt JPEG data: premature end of data segment``)
straight to the process's stderr, without a file name. :func:`captured_stderr` takes them while a
suspicious file (a JPEG that does not end with its end marker, or one OpenCV refuses) is decoded,
so they are returned with the file they concern (``Decoded.messages``) instead of printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from odkit.errors import DataError

__all__ = ["Decoded", "captured_stderr", "decode_image", "grey_rows", "read_image", "write_image"]

_STDERR_LOCK = threading.Lock()
_CODEC_PREFIXES = ("Corrupt JPEG", "Premature end of JPEG", "Invalid JPEG", "Bogus", "libpng", "Warning",
                   "JPEG", "Unsupported", "Huffman")


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 inside the block (one line per entry).

    Serialised by a lock (the descriptor is the process's); lines that are not codec messages
    (a log line from another thread) are written back to stderr afterwards.
    """
    out: list[str] = []
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            yield out
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield out
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                lines = [t.strip() for t in tmp.read().decode("utf-8", "replace").splitlines() if t.strip()]
                other = [t for t in lines if not t.startswith(_CODEC_PREFIXES)]
                out.extend(t for t in lines if t.startswith(_CODEC_PREFIXES))
                if other:
                    sys.stderr.write("".join(t + "\n" for t in other))


def _jpeg_complete(buf: np.ndarray) -> bool:
    """Whether a buffer is not a JPEG, or is one ending with its end marker (zero padding allowed)."""
    if buf[:2].tobytes() != b"\xff\xd8":
        return True
    tail = buf[-4096:].tobytes().rstrip(b"\x00")
    return tail.endswith(b"\xff\xd9")

# OpenCV >= 4.11 can decode straight to RGB; older versions decode to BGR.
_RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", None)


@dataclass
class Decoded:
    """A decoded image: ``image`` uint8 [H, W, 3] RGB; ``recovered`` True when the file is
    truncated and was decoded tolerantly; ``grey_rows`` rows at the bottom filled grey then;
    ``messages``: what the codec said about the file (libjpeg warnings), captured from stderr."""

    image: np.ndarray
    recovered: bool = False
    grey_rows: int = 0
    messages: list[str] = field(default_factory=list)


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
    messages: list[str] = []
    recovered = False
    if _jpeg_complete(buf):
        img = _decode(buf)
    else:
        with captured_stderr() as messages:
            img = _decode(buf)
    if img is None:
        with captured_stderr() as more:
            img = _recover(p, buf)
        messages += more
        recovered = img is not None
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise DataError(f"{p}: cannot decode image (corrupt file or unsupported format)")
    if img.dtype != np.uint8:  # pragma: no cover - IMREAD_COLOR always yields 8 bits
        img = (img.astype(np.float32) * (255.0 / np.iinfo(img.dtype).max)).round().astype(np.uint8)
    img = np.ascontiguousarray(img)
    return Decoded(img, recovered, grey_rows(img) if recovered else 0, list(dict.fromkeys(messages)))


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
