"""The one reader of mask files: PNG bytes (or a path) -> the pixel values the file stores.

Sources (``sources/validate.py``), the shard loader (``decode.py``), the FFCV store, inference
(``inference/masks.py``) and evaluation (``evaluation/``) all read masks here, so every stage
accepts the same files and reads them to the same values. What the values *mean* (foreground =
value > 0 for DAVIS-2016 and MSRA10K; object ids with 255 void for DAVIS-2017 and VOC) is the
caller's rule, applied to what this module returns.

Accepted PNG modes (docs/layouts.md says which release uses which, and where that was seen):

* ``L`` (8-bit grey): the grey values (DAVIS-2016 0/255, MSRA10K 0/255).
* ``LA`` (grey + alpha): the grey channel; the alpha channel carries no label and is ignored
  (the official DAVIS-2016 annotation ``Annotations/480p/bear/00077.png`` is such a file, with
  alpha 255 everywhere).
* ``1`` (bilevel): 0/1.
* ``P`` / ``PA`` (palette): the palette indices, never the colours (DAVIS-2017, VOC 2012).
* ``I;16`` / ``I`` (16/32-bit grey): the values, when every one of them lies in 0..255.

Refused, with :class:`MaskFormatError` saying why and what to do: colour images (``RGB``,
``RGBA``; a caller that defines a meaning for them may ask for their channels with
``allow_colour=True``), 16-bit values above 255, float images, anything that is not a PNG
(JPEG masks are lossy: their ids change along every edge), and unreadable files.

YouTube-Objects is the one release whose labels are JPEGs: :func:`jpeg_label_foreground` reads
them with the release's threshold.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.png_rows import FastPathGate, decode_simple_png

try:  # libspng for plain 8-bit grey PNGs: 0.9-1.0x libpng's (OpenCV's) speed, 1.2-1.3x
    import pyspng as _spng  # Pillow's (benchmarks/micro_claims.py); all three: same values
except ImportError:  # pragma: no cover - a dependency
    _spng = None
try:
    import cv2 as _cv2
except ImportError:  # pragma: no cover - opencv-python-headless is a dependency
    _cv2 = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ACCEPTED_MODES = ("L", "LA", "1", "P", "PA", "I;16", "I;16B", "I;16L", "I;16N", "I")
COLOUR_MODES = ("RGB", "RGBA")
SAVE_FIX = "save it as an indexed (P) or grayscale PNG of object ids (0 = background)"


class MaskFormatError(PipelineError, ValueError):
    """A mask file this reader refuses; the message says why, ``fix`` what to do. Callers wrap it
    in their own error type, which names the file."""

    def __init__(self, problem: str, fix: str = SAVE_FIX):
        super().__init__(problem, fix)


def _bytes(source: bytes | str | Path) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    with open(source, "rb") as f:  # (not Path.read_bytes: pathlib's parsing shows per file)
        return f.read()


def read_mask_values(source: bytes | str | Path, *, allow_colour: bool = False,
                     gate: FastPathGate | None = None) -> np.ndarray:
    """The stored values of a mask PNG as ``uint8 [H, W]`` (modes: see the module docstring).

    ``source`` is the file's bytes or its path (a missing path raises ``FileNotFoundError``).
    With ``allow_colour`` an RGB/RGBA PNG comes back as ``uint8 [H, W, C]``; otherwise it is
    refused. Raises :class:`MaskFormatError` for everything refused or unreadable.
    """
    return read_mask(source, allow_colour=allow_colour, gate=gate)[0]


def _grey8(data: bytes) -> np.ndarray | None:
    """An 8-bit grey PNG (colour type 0: DAVIS-2016, MSRA10K) decoded by libspng (else OpenCV),
    the same values as Pillow gives; None for every other kind of PNG, or whenever the result is
    not the plain [H, W] uint8 the header announces, or the decoder refuses the file (then Pillow
    reads it, and names any problem)."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[24] != 8 or data[25] != 0:
        return None
    arr = None
    if _spng is not None:
        try:
            arr = _spng.load(data)
        except Exception:  # noqa: BLE001 - pyspng raises a bare Exception; Pillow says why
            return None
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif _cv2 is not None:
        arr = _cv2.imdecode(np.frombuffer(data, np.uint8), _cv2.IMREAD_UNCHANGED)
    shape = (int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"))
    if arr is None or arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape != shape:
        return None
    return arr


def read_mask(source: bytes | str | Path, *, allow_colour: bool = False,
              gate: FastPathGate | None = None) -> tuple[np.ndarray, str]:
    """:func:`read_mask_values` and the file's PIL mode (``"P"``, ``"L"``, ``"LA"``, ...), for
    callers whose rule depends on it (a grey 0/255 mask is binary; a palette one is ids)."""
    data = _bytes(source)
    if not data:
        raise MaskFormatError("mask file is empty (0 bytes)", "write or extract it again")
    if not data.startswith(PNG_SIGNATURE):
        if data.startswith(b"\xff\xd8"):
            raise MaskFormatError("mask is a JPEG: lossy compression changes the object "
                                  "ids along every edge", SAVE_FIX)
        raise MaskFormatError("mask is not a PNG file (bad signature): corrupt or truncated, "
                              "or another format",
                              f"write or extract it again; {SAVE_FIX}")
    # the releases' kind of mask (8-bit, None/Sub rows) first; ``gate``: a reader of many files
    # of one writer skips that try once it keeps failing (pipeline/core/png_rows.py)
    simple = decode_simple_png(data) if gate is None else gate.decode(data)
    if simple is not None:
        return simple[0], "L" if simple[1] == 0 else "P"
    grey = _grey8(data)
    if grey is not None:
        return grey, "L"
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            mode = im.mode
            arr = np.array(im) if mode in ACCEPTED_MODES or mode in COLOUR_MODES else None
    except Exception as e:  # Pillow raises OSError, SyntaxError, zlib.error, ... on bad input
        raise MaskFormatError(f"mask PNG cannot be decoded: corrupt or truncated "
                              f"({type(e).__name__}: {e})", "write or extract it again") from e
    if mode in COLOUR_MODES:
        if allow_colour:
            return arr.astype(np.uint8, copy=False), mode
        hint = ""
        if arr.size and np.array_equal(arr[..., 0], arr[..., 1]) and \
                np.array_equal(arr[..., 0], arr[..., 2]):
            hint = " (its colour channels are equal: a grayscale mask stored as colour)"
        raise MaskFormatError(f"mask is a mode-{mode} PNG (colour), not object ids{hint}; "
                              f"accepted modes: L, LA, 1, P, 16-bit grey", SAVE_FIX)
    if arr is None:
        raise MaskFormatError(f"mask is a mode-{mode} PNG; accepted modes: L, LA "
                              "(grey channel), 1, P (palette indices), 16-bit grey", SAVE_FIX)
    if mode in ("LA", "PA"):
        arr = arr[..., 0]  # the grey value / palette index; alpha carries no label
    if arr.dtype == np.uint8:
        return arr, mode
    if arr.dtype == bool:
        return arr.astype(np.uint8), mode
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise MaskFormatError(f"mask is a mode-{mode} PNG with values "
                              f"{int(arr.min())}..{int(arr.max())}, outside the ids 0..255",
                              SAVE_FIX)
    return arr.astype(np.uint8), mode


def jpeg_label_foreground(source: bytes | str | Path, threshold: int) -> np.ndarray:
    """A lossy grayscale-JPEG label (YouTube-Objects' ``youtube_masks``) -> bool [H, W]
    foreground, value > ``threshold`` (the release's own rule). Colour JPEGs are read through
    their luminance. Raises :class:`MaskFormatError` when the file is not a readable JPEG."""
    data = _bytes(source)
    if not data.startswith(b"\xff\xd8"):
        raise MaskFormatError("label is not a JPEG file (no FF D8 start-of-image marker)",
                              "restore it from the youtube_masks release")
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            grey = np.asarray(im.convert("L"))
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise MaskFormatError(f"label JPEG cannot be decoded ({type(e).__name__}: {e})",
                              "restore it from the youtube_masks release") from e
    return grey > threshold
