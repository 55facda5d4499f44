"""Image file probing: format, size, colour mode, EXIF orientation and truncation from headers.

``probe_image`` reads only the first bytes of a file (and its last bytes to check the end marker),
so thousands of images are probed in seconds. ``decode_check`` optionally decodes with OpenCV.
Sizes are in pixels as stored in the file; ``ImageInfo.display_size`` applies the EXIF orientation
(the frame odkit's loader decodes to).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 64 * 1024  # first read; JPEG headers with big EXIF blocks get a second, longer read
MAX_HEAD_BYTES = 1024 * 1024
TAIL_BYTES = 1024

EXT_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".jfif": "jpeg",
    ".png": "png",
    ".bmp": "bmp",
    ".dib": "bmp",
    ".gif": "gif",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
}
IMAGE_EXTS = tuple(EXT_FORMATS)

# Formats OpenCV decodes (GIF is not among them).
CV2_FORMATS = {"jpeg", "png", "bmp", "webp", "tiff"}


@dataclass
class ImageInfo:
    """What the header of one image file says.

    ``format`` comes from the magic bytes (``"jpeg"``, ``"png"``, ``"bmp"``, ``"gif"``,
    ``"webp"``, ``"tiff"`` or ``"unknown"``), ``ext_format`` from the file extension.
    ``mode`` is ``"gray"``, ``"gray_alpha"``, ``"rgb"``, ``"rgba"``, ``"palette"``, ``"cmyk"`` or
    ``""`` when unknown; ``bit_depth`` bits per channel (0 = unknown); ``orientation`` the EXIF
    orientation tag (1..8) or ``None`` (absent, 0 or out of range: normal). ``error`` is set when the file is missing, empty,
    unreadable or truncated (``truncated`` True for a missing end marker). ``trailing``: bytes
    after the end marker (JPEG EOI, PNG IEND), which decoders ignore.
    """

    path: str
    exists: bool = False
    nbytes: int = 0
    format: str = "unknown"
    ext_format: str = "unknown"
    width: int = 0
    height: int = 0
    mode: str = ""
    bit_depth: int = 0
    orientation: int | None = None
    truncated: bool = False
    error: str | None = None
    trailing: int = 0

    @property
    def display_size(self) -> tuple[int, int]:
        """``(width, height)`` after applying the EXIF orientation (swapped for 5..8).

        This is the frame odkit's image loader (:mod:`odkit.data.imageio`) produces, hence the
        frame boxes are expected in.
        """
        if self.orientation is not None and 5 <= self.orientation <= 8:
            return self.height, self.width
        return self.width, self.height


def _orientation(value: int) -> int | None:
    """An EXIF orientation tag value: 1..8, else ``None`` (0 or an out-of-range value means the
    normal orientation, as decoders treat it)."""
    v = int(value)
    return v if 1 <= v <= 8 else None


# ---------------------------------------------------------------- magic bytes
def sniff_format(head: bytes) -> str:
    """Image format from the first bytes of a file."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return "unknown"


# ---------------------------------------------------------------- TIFF / EXIF
def _tiff_tags(buf: bytes, wanted: set[int]) -> dict[int, int]:
    """First-IFD tags of a TIFF structure (``buf`` starts at the byte-order mark)."""
    if len(buf) < 8:
        return {}
    bo = {b"II": "<", b"MM": ">"}.get(buf[:2])
    if bo is None:
        return {}
    (ifd,) = struct.unpack(bo + "I", buf[4:8])
    if ifd + 2 > len(buf):
        return {}
    (n,) = struct.unpack(bo + "H", buf[ifd : ifd + 2])
    out: dict[int, int] = {}
    for k in range(n):
        e = ifd + 2 + 12 * k
        if e + 12 > len(buf):
            break
        tag, typ, count = struct.unpack(bo + "HHI", buf[e : e + 8])
        if tag not in wanted:
            continue
        if typ == 3:  # SHORT
            (val,) = struct.unpack(bo + "H", buf[e + 8 : e + 10])
            if count > 1 and tag == 258:  # BitsPerSample: offset to the values
                (off,) = struct.unpack(bo + "I", buf[e + 8 : e + 12])
                if off + 2 <= len(buf):
                    (val,) = struct.unpack(bo + "H", buf[off : off + 2])
        elif typ == 4:  # LONG
            (val,) = struct.unpack(bo + "I", buf[e + 8 : e + 12])
        else:
            continue
        out[tag] = val
    return out


def _parse_jpeg(head: bytes, info: ImageInfo) -> None:
    i = 2
    n = len(head)
    while i + 4 <= n:
        if head[i] != 0xFF:
            # Not at a marker: corrupt header.
            info.error = f"corrupt JPEG header (no marker at byte {i})"
            return
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (seglen,) = struct.unpack(">H", head[i + 2 : i + 4])
        seg = head[i + 4 : i + 2 + seglen]
        if marker == 0xE1 and seg.startswith(b"Exif\x00\x00") and info.orientation is None:
            tags = _tiff_tags(seg[6:], {0x0112})
            if 0x0112 in tags:
                info.orientation = _orientation(tags[0x0112])
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if len(seg) < 6:
                break
            prec, h, w, comps = struct.unpack(">BHHB", seg[:6])
            info.bit_depth, info.height, info.width = int(prec), int(h), int(w)
            info.mode = {1: "gray", 3: "rgb", 4: "cmyk"}.get(comps, "")
            return
        elif marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + seglen
    if not info.error:
        info.error = "JPEG frame header (SOF) not found in the first bytes"


def _parse_png(head: bytes, info: ImageInfo) -> None:
    if len(head) < 33 or head[12:16] != b"IHDR":
        info.error = "PNG without IHDR chunk"
        return
    w, h, depth, ctype = struct.unpack(">IIBB", head[16:26])
    info.width, info.height, info.bit_depth = int(w), int(h), int(depth)
    info.mode = {0: "gray", 2: "rgb", 3: "palette", 4: "gray_alpha", 6: "rgba"}.get(ctype, "")
    # Walk the chunks present in the head for an eXIf orientation or a tRNS on a palette.
    i = 8
    while i + 8 <= len(head):
        (ln,) = struct.unpack(">I", head[i : i + 4])
        typ = head[i + 4 : i + 8]
        if typ == b"eXIf":
            tags = _tiff_tags(head[i + 8 : i + 8 + ln], {0x0112})
            if 0x0112 in tags:
                info.orientation = _orientation(tags[0x0112])
        if typ in (b"IDAT", b"IEND"):
            break
        i += 12 + ln


def _parse_bmp(head: bytes, info: ImageInfo) -> None:
    if len(head) < 30:
        info.error = "BMP header too short"
        return
    w, h = struct.unpack("<ii", head[18:26])
    (bpp,) = struct.unpack("<H", head[28:30])
    info.width, info.height = abs(int(w)), abs(int(h))
    info.bit_depth = 8
    info.mode = {1: "palette", 4: "palette", 8: "palette", 24: "rgb", 32: "rgba"}.get(int(bpp), "rgb")


def _parse_gif(head: bytes, info: ImageInfo) -> None:
    w, h = struct.unpack("<HH", head[6:10])
    info.width, info.height, info.mode, info.bit_depth = int(w), int(h), "palette", 8


def _parse_webp(head: bytes, info: ImageInfo) -> None:
    chunk = head[12:16]
    info.bit_depth = 8
    if chunk == b"VP8X" and len(head) >= 30:
        flags = head[20]
        info.width = 1 + int.from_bytes(head[24:27], "little")
        info.height = 1 + int.from_bytes(head[27:30], "little")
        info.mode = "rgba" if flags & 0x10 else "rgb"
    elif chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        info.width = (bits & 0x3FFF) + 1
        info.height = ((bits >> 14) & 0x3FFF) + 1
        info.mode = "rgba" if (bits >> 28) & 1 else "rgb"
    elif chunk == b"VP8 " and len(head) >= 30:
        w, h = struct.unpack("<HH", head[26:30])
        info.width, info.height, info.mode = int(w & 0x3FFF), int(h & 0x3FFF), "rgb"
    else:
        info.error = "WebP header not understood"


def _parse_tiff(head: bytes, info: ImageInfo) -> None:
    tags = _tiff_tags(head, {256, 257, 258, 262, 274, 277})
    info.width, info.height = int(tags.get(256, 0)), int(tags.get(257, 0))
    info.bit_depth = int(tags.get(258, 1))
    spp = int(tags.get(277, 1))
    photometric = int(tags.get(262, 2))
    if photometric == 3:
        info.mode = "palette"
    elif photometric == 5:
        info.mode = "cmyk"
    else:
        info.mode = {1: "gray", 2: "gray_alpha", 3: "rgb", 4: "rgba"}.get(spp, "")
    if 274 in tags:
        info.orientation = _orientation(tags[274])


_PARSERS = {
    "jpeg": _parse_jpeg,
    "png": _parse_png,
    "bmp": _parse_bmp,
    "gif": _parse_gif,
    "webp": _parse_webp,
    "tiff": _parse_tiff,
}


MAX_SCAN_BYTES = 512 * 1024 * 1024  # whole-file scans for the end marker stop here


def _jpeg_eoi(data: bytes) -> int:
    """Offset of the main image's end-of-image marker (FFD9), or -1.

    Walks the marker segments to the first start-of-scan (so an EXIF thumbnail's EOI inside APP1
    is skipped), then takes the first FFD9 after it: inside entropy-coded data FF is always
    followed by 00 or a restart marker, so that FFD9 is the real end of the image.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return -1
        m = data[i + 1]
        if m == 0xFF:
            i += 1
            continue
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:
            i += 2
            continue
        (seglen,) = struct.unpack(">H", data[i + 2 : i + 4])
        if m == 0xDA:
            return data.find(b"\xff\xd9", i + 2 + seglen)
        i += 2 + seglen
    return -1


def _check_end(fmt: str, path: str, tail: bytes, nbytes: int, info: ImageInfo) -> None:
    """Flag a file whose end marker is missing (the usual sign of an interrupted copy), and count
    the bytes after an end marker (zero padding, appended data: harmless)."""
    if fmt == "jpeg":
        if tail.endswith(b"\xff\xd9"):
            return
        with open(path, "rb") as f:
            data = f.read(MAX_SCAN_BYTES)
        eoi = _jpeg_eoi(data)
        if eoi >= 0:
            info.trailing = nbytes - (eoi + 2)
        else:
            info.truncated = True
            info.error = "truncated JPEG (no end-of-image marker FFD9 after the image data)"
    elif fmt == "png":
        iend = b"\x00\x00\x00\x00IEND"  # a zero-length IEND chunk
        k = tail.rfind(iend)
        if k >= 0 and len(tail) - (k + 12) <= 0:
            return
        with open(path, "rb") as f:
            data = f.read(MAX_SCAN_BYTES)
        k = data.rfind(iend)
        if k >= 0:
            info.trailing = max(0, nbytes - (k + 12))
        else:
            info.truncated = True
            info.error = "truncated PNG (no IEND chunk at the end of the file)"


def probe_image(path: str | Path) -> ImageInfo:
    """Read the header (and tail) of an image file; never raises for a bad file.

    Returns an :class:`ImageInfo` with ``error`` set when the file is missing, empty, of an
    unknown type, has a corrupt header or is truncated.
    """
    p = str(path)
    info = ImageInfo(path=p, ext_format=EXT_FORMATS.get(os.path.splitext(p)[1].lower(), "unknown"))
    try:
        with open(p, "rb") as f:
            st = os.fstat(f.fileno())
            info.exists = True
            info.nbytes = int(st.st_size)
            if info.nbytes == 0:
                info.error = "empty file (0 bytes)"
                return info
            head = f.read(HEAD_BYTES)
            if info.nbytes > len(head):
                f.seek(max(0, info.nbytes - TAIL_BYTES))
                tail = f.read()
            else:
                tail = head[-TAIL_BYTES:]
    except FileNotFoundError:
        info.error = "file not found"
        return info
    except OSError as e:
        info.exists = os.path.exists(p)
        info.error = f"cannot read file: {e.strerror or e}"
        return info
    info.format = sniff_format(head)
    if info.format == "unknown":
        info.error = f"unknown image type (first bytes {head[:8].hex()})"
        return info
    try:
        _PARSERS[info.format](head, info)
        if info.format == "jpeg" and info.width == 0 and info.nbytes > len(head):
            with open(p, "rb") as f:
                head = f.read(MAX_HEAD_BYTES)
            info.error = None
            _PARSERS["jpeg"](head, info)
    except (struct.error, IndexError, ValueError) as e:
        info.error = f"corrupt {info.format.upper()} header ({e})"
        return info
    if info.error is None:
        _check_end(info.format, p, tail, info.nbytes, info)
    if info.error is None and (info.width <= 0 or info.height <= 0):
        info.error = f"header states an invalid size {info.width}x{info.height}"
    return info


def decode_check(path: str | Path) -> str | None:
    """Decode an image with OpenCV; return an error message, or ``None`` when it decodes.

    Uses reduced-resolution decoding for speed (enough to exercise the whole bitstream). What the
    codec writes to stderr about the file (libjpeg's ``Corrupt JPEG data ...``) is captured and
    returned as the error (one decode at a time, as stderr is the process's).
    """
    import cv2
    import numpy as np

    from odkit.data.imageio import captured_stderr

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        return f"cannot read file: {e}"
    if data.size == 0:
        return "empty file (0 bytes)"
    with captured_stderr() as said:
        img = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_2)
        if img is None:
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        return "OpenCV cannot decode the image" + (f" ({'; '.join(dict.fromkeys(said))})" if said else "")
    if said:
        return f"decoder: {'; '.join(dict.fromkeys(said))}"
    return None
