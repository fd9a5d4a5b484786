"""Read one source file, check it, and return its bytes unchanged.

Images are JPEGs: by default the check is cheap (start/end markers and a header parse for the
size); ``decode=True`` also decodes every pixel. Masks are PNGs and are always decoded, since the
object ids they hold are needed. Whatever goes wrong -- a missing, empty, truncated or garbled
file, an unexpected colour mode -- comes back as a :class:`SourceError` naming the file and the
fix, never as a bare Pillow exception.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.config import ConfigError
from pipeline.core.mask_png import MaskFormatError, jpeg_label_foreground, read_mask_values
from pipeline.sources.png_scan import scan_png
from pipeline.sources.types import (BAD_IMAGE, BAD_MASK, MASK_FORMATS, MISSING_IMAGE, MISSING_MASK, SIZE_MISMATCH,
                   SKIP_HINT, ImageData, MaskData, MaskFormat, SourceError)

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
JPEG_PADDING = b"\x00\xff\r\n\t "  # what real files sometimes carry after the EOI marker
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

REEXTRACT = f"re-extract it from the official archive, {SKIP_HINT}"

# PNG modes the binary fast path reads without decoding (any non-zero byte is foreground); every
# other accepted mode (LA, 16-bit, interlaced files) goes through the one mask reader.
FAST_BINARY_MODES = ("L", "1", "P")


def _read(path: Path | str, what: str, missing: str, bad: str) -> bytes:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceError(path, f"{what} file does not exist",
                          f"restore it from the official release, {SKIP_HINT}", missing) from None
    except OSError as e:
        raise SourceError(path, f"cannot read {what} file ({e.strerror or e})",
                          "check that it is a readable file (permissions, disk)", bad) from e
    if not data:
        raise SourceError(path, f"{what} file is empty (0 bytes)", REEXTRACT, bad)
    return data


def _check_jpeg_markers(path: Path | str, data: bytes, what: str, bad: str) -> None:
    if not data.startswith(JPEG_SOI):
        raise SourceError(path, f"{what} is not a JPEG file (no FF D8 start-of-image marker)",
                          REEXTRACT, bad)
    if not data.rstrip(JPEG_PADDING).endswith(JPEG_EOI):
        raise SourceError(path, f"{what} JPEG is truncated (no FF D9 end-of-image marker)",
                          REEXTRACT, bad)


def _unreadable(path: Path | str, what: str, e: Exception, bad: str) -> SourceError:
    return SourceError(path, f"unreadable {what} ({type(e).__name__}: {e})", REEXTRACT, bad)


def load_image(path: Path | str, decode: bool = False) -> ImageData:
    """The JPEG's bytes unchanged, with its size. ``decode=True`` also decodes all pixels."""
    data = _read(path, "image", MISSING_IMAGE, BAD_IMAGE)
    _check_jpeg_markers(path, data, "image", BAD_IMAGE)
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            width, height = im.size
            if decode:
                im.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad input
        raise _unreadable(path, "JPEG image", e, BAD_IMAGE) from e
    return ImageData(data, width, height)


def _objects(values: np.ndarray, mask_format: MaskFormat) -> tuple[int, ...]:
    if mask_format == "binary":
        return (1,) if bool(np.any(values)) else ()
    counts = np.bincount(values.ravel(), minlength=256)
    return tuple(int(v) for v in np.flatnonzero(counts) if v not in (0, 255))


def load_mask(path: Path | str, mask_format: MaskFormat) -> MaskData:
    """The PNG mask's bytes unchanged, its size, and the object ids it holds."""
    if mask_format not in MASK_FORMATS:
        raise ConfigError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    data = _read(path, "mask", MISSING_MASK, BAD_MASK)
    if not data.startswith(PNG_SIGNATURE):
        raise SourceError(path, "mask is not a PNG file (bad signature)", REEXTRACT, BAD_MASK)
    if mask_format == "binary":  # fast path: structure checked, foreground found, no pixel decode
        try:
            scan = scan_png(data)
            if scan.mode in FAST_BINARY_MODES and not scan.interlaced:
                return MaskData(data, scan.width, scan.height, (1,) if scan.any_nonzero() else ())
        except ValueError as e:
            raise _unreadable(path, "PNG mask", e, BAD_MASK) from e
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.verify()  # chunk structure and CRCs
    except Exception as e:  # Pillow raises OSError, SyntaxError, zlib.error, ... on bad input
        raise _unreadable(path, "PNG mask", e, BAD_MASK) from e
    try:
        values = read_mask_values(data)
    except MaskFormatError as e:
        raise SourceError(path, e.problem, f"{e.fix}; {SKIP_HINT}", BAD_MASK) from e
    height, width = values.shape
    return MaskData(data, width, height, _objects(values, mask_format))


def load_jpeg_label(path: Path | str, threshold: int = 15) -> MaskData:
    """A lossy grayscale-JPEG label (YouTube-Objects) as a 0/255 mode-L PNG: foreground is
    value > ``threshold``. The PNG is encoded deterministically (same input, same bytes)."""
    data = _read(path, "mask", MISSING_MASK, BAD_MASK)
    _check_jpeg_markers(path, data, "mask", BAD_MASK)
    try:
        fg = jpeg_label_foreground(data, threshold)
    except MaskFormatError as e:
        raise SourceError(path, e.problem, f"{e.fix}, {SKIP_HINT}", BAD_MASK) from e
    out = io.BytesIO()
    Image.fromarray(np.where(fg, 255, 0).astype(np.uint8)).save(out, format="PNG",
                                                                  compress_level=6)
    height, width = fg.shape
    return MaskData(out.getvalue(), width, height, (1,) if fg.any() else ())


def check_same_size(image_path: Path | str, image: ImageData, mask_path: Path | str,
                    mask: MaskData) -> None:
    """A frame and its mask must have the same size."""
    if (image.width, image.height) != (mask.width, mask.height):
        raise SourceError(mask_path, f"mask is {mask.width}x{mask.height} but its image "
                                     f"{image_path} is {image.width}x{image.height}",
                          f"use the mask that belongs to this image (same resolution), "
                          f"{SKIP_HINT}", SIZE_MISMATCH)
