"""Image file checks and the tiers of damaged images.

Headers are read for every image (:func:`odkit.data.probe.probe_image`, thread pool); images are
decoded only when something looks wrong (or with ``decode=True``). Damaged files fall in tiers,
the one policy used by ``data check``, training, ``val`` and ``predict``:

- bytes after the end marker (zero padding, appended data): ``trailing_bytes``, info;
- truncated or corrupt but decodable (the data present is decoded, the rest filled grey):
  ``truncated_image`` / ``corrupt_image``, a warning naming how many rows are missing; the image
  is used as decoded;
- missing, empty or undecodable: ``missing_image`` / ``empty_file`` / ``unreadable_image`` /
  ``truncated_image``, an error for that image; training and evaluation leave it out (or refuse
  with ``strict``), ``predict`` skips it and reports it.
"""

from __future__ import annotations

from pathlib import Path

from odkit.data.checks import Context, pmap
from odkit.data.probe import CV2_FORMATS, ImageInfo, decode_check, probe_image
from odkit.data.structures import Problem
from odkit.errors import DataError

_MODE_KIND = {
    "gray": ("image_grayscale", "grayscale"),
    "gray_alpha": ("image_alpha", "grayscale with alpha"),
    "rgba": ("image_alpha", "RGBA (alpha channel)"),
    "palette": ("image_palette", "palette (indexed colour)"),
    "cmyk": ("image_cmyk", "CMYK"),
}
_ORIENT = {
    2: "mirrored",
    3: "rotated 180",
    4: "flipped vertically",
    5: "transposed",
    6: "rotated 90 CW",
    7: "transversed",
    8: "rotated 90 CCW",
}

OK, RECOVERED, UNUSABLE = "ok", "recovered", "unusable"


def probe(p: Path, decode: bool = False) -> ImageInfo:
    """Header probe of one image; a type the probe cannot parse is tried with OpenCV (PPM, JPEG
    2000, ...). With ``decode`` the whole image is decoded too (errors land in ``info.error``)."""
    info = probe_image(p)
    if info.exists and info.nbytes and info.format == "unknown":
        if decode_check(p) is None:
            import cv2

            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            info.height, info.width = img.shape[:2]
            info.format = "other"
            info.error = None
    elif decode and info.error is None:
        err = decode_check(p)
        if err is not None:
            info.error = err
    return info


def _tolerant(f: str, info: ImageInfo, kind: str, what: str) -> tuple[str, Problem]:
    """Decode a damaged file tolerantly: a warning with the rows lost, or an error."""
    from odkit.data.imageio import decode_image

    try:
        d = decode_image(f)
    except DataError:
        return UNUSABLE, Problem(kind if kind == "truncated_image" else "unreadable_image", f,
                                 f"{what}; it cannot be decoded (left out of training and evaluation)")
    h = d.image.shape[0]
    said = f" (decoder: {'; '.join(d.messages)})" if d.messages else ""
    if not d.recovered:
        k = "no_end_marker" if kind == "truncated_image" else "decoder_warning"
        return OK, Problem(k, f, f"{what}, but the image decodes normally{said}", severity="info")
    return RECOVERED, Problem(
        kind,
        f,
        f"{what}; decoded as far as the data goes: {d.grey_rows} of {h} rows missing (filled grey){said}; "
        "the image is used as decoded",
        severity="warning",
    )


def image_tier(f: str, info: ImageInfo) -> tuple[str, list[Problem]]:
    """The damage tier of one probed image: ``(ok | recovered | unusable, problems)``."""
    if not info.exists:
        return UNUSABLE, [Problem("missing_image", f, "image file not found")]
    if info.nbytes == 0:
        return UNUSABLE, [Problem("empty_file", f, "image file is empty (0 bytes)")]
    if info.truncated:
        state, p = _tolerant(f, info, "truncated_image", info.error or "truncated")
        return state, [p]
    if info.error:
        if info.format in CV2_FORMATS and info.width > 0:
            state, p = _tolerant(f, info, "corrupt_image", f"corrupt {info.format.upper()} data ({info.error})")
            return state, [p]
        return UNUSABLE, [Problem("unreadable_image", f, info.error)]
    if info.format not in CV2_FORMATS and info.format != "other":
        return UNUSABLE, [Problem("unreadable_image", f, f"{info.format.upper()} images cannot be decoded by OpenCV")]
    out = []
    if info.trailing:
        out.append(
            Problem(
                "trailing_bytes",
                f,
                f"{info.trailing} bytes after the {info.format.upper()} end marker (ignored by decoders)",
                severity="info",
            )
        )
    return OK, out


def check_image_file(path: str | Path, decode: bool = False) -> tuple[str, list[Problem]]:
    """Probe one image file and place it in a damage tier (used by ``predict``)."""
    info = probe(Path(path), decode)
    return image_tier(str(path), info)


def _header_notes(ctx: Context, i: int, f: str, info: ImageInfo) -> None:
    if info.format != info.ext_format and info.format != "other":
        ctx.add(
            "extension_mismatch",
            f,
            f"content is {info.format.upper()} but the extension says {info.ext_format}",
            severity="warning",
        )
    if info.mode in _MODE_KIND:
        kind, desc = _MODE_KIND[info.mode]
        ctx.add(kind, f, f"{desc} image; odkit converts it to 3-channel RGB when loading", severity="warning")
    if info.bit_depth > 8:
        ctx.add(
            "image_16bit",
            f,
            f"{info.bit_depth}-bit image; odkit scales it to 8 bits when loading",
            severity="warning",
        )
    W, H = info.display_size
    if info.orientation is not None and info.orientation > 1:
        ctx.add(
            "exif_orientation",
            f,
            f"EXIF orientation {info.orientation} ({_ORIENT.get(info.orientation, 'unknown')}): "
            f"odkit's loader applies it, so boxes are taken in the displayed frame ({W}x{H}; "
            f"stored pixels are {info.width}x{info.height})",
            severity="warning",
        )


def _size(ctx: Context, i: int, f: str, info: ImageInfo) -> bool:
    """Compare the annotation's size with the image's; fill an unknown one. True when filled."""
    W, H = info.display_size
    w, h = int(ctx.widths[i]), int(ctx.heights[i])
    if w <= 0 or h <= 0:
        ctx.widths[i], ctx.heights[i] = W, H
        ctx.add(
            "size_unknown",
            f,
            f"annotation gives size {w}x{h}; the image is {W}x{H}",
            severity="warning",
            repaired=f"size set to {W}x{H}",
        )
        return True
    if (w, h) != (W, H):
        msg = f"annotation says {w}x{h} but the image is {W}x{H}"
        if (w, h) == (info.width, info.height):
            msg += (
                " after its EXIF rotation (the annotation matches the stored, un-rotated pixels: "
                "boxes were probably drawn without applying EXIF)"
            )
        ctx.add("size_mismatch", f, msg)
    return False


def check_images(ctx: Context, decode: bool = False) -> None:
    """Image files: existence, damage tier, type vs extension, colour mode, bit depth, EXIF
    orientation, annotation size vs image size (unknown sizes are filled: a safe repair).

    Repeated entries of one file are checked once (the duplicates family reports them).
    """
    fnames = ctx.fnames
    if not fnames:
        return
    uniq = list(dict.fromkeys(fnames))
    res = pmap(lambda u: probe(Path(u), decode), uniq, ctx.workers, "probing images")
    by_path = dict(zip(uniq, res))
    state_of: dict[str, str] = {}
    filled = 0
    for i, f in enumerate(fnames):
        info = by_path[f]
        ctx.infos[i] = info
        if f in state_of:
            if state_of[f] == UNUSABLE:
                ctx.unusable.add(i)
            continue
        state, probs = image_tier(f, info)
        state_of[f] = state
        ctx.problems += probs
        if state == UNUSABLE:
            ctx.unusable.add(i)
            continue
        if state == RECOVERED:
            ctx.recovered.add(i)
        _header_notes(ctx, i, f, info)
        filled += _size(ctx, i, f, info)
    if filled:
        ctx.repairs["image sizes taken from the image"] = filled
