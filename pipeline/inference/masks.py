"""Object-id masks on disk and on screen: DAVIS-style indexed PNGs and coloured overlays.

A mask is a ``uint8 [H, W]`` array of object ids: 0 = background, 1..254 = objects, 255 = void
(DAVIS 2017 ground truth only). On disk it is an indexed ("P") PNG whose palette is the
PASCAL VOC / DAVIS colour map, exactly as the official DAVIS annotations and results are stored;
a binary DAVIS-2016 annotation (grayscale 0/255) reads as ids 0/1.

    >>> save_mask_png("results/blackswan/00001.png", ids)
    >>> ids = read_mask_png("Annotations/480p/blackswan/00000.png")      # 0/1
    >>> rgb = overlay(frame, ids)                                         # like Fig. 3 of the paper
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pipeline.core.ids_resize import resize_ids_nearest
from pipeline.core.mask_png import MaskFormatError, read_mask
from pipeline.core.palette import PALETTE, PALETTE_RGB, davis_palette  # noqa: F401 (re-exported)
from pipeline.core.errors import FileProblem

from pipeline.core.atomic import atomic_write_bytes

VOID = 255
_SAVE_FIX = "save it as an indexed (P) or grayscale PNG of object ids (0 = background)"


class MaskIOError(FileProblem):
    """A mask or video file that cannot be used; the message names the file and the fix."""


# --------------------------------------------------------------------------------------------
# palette
# --------------------------------------------------------------------------------------------
_PALETTE = PALETTE
_PALETTE_RGB = PALETTE_RGB


def palette_rgb() -> np.ndarray:
    """The palette as a ``uint8 [256, 3]`` array (a copy)."""
    return _PALETTE_RGB.copy()


# --------------------------------------------------------------------------------------------
# ids
# --------------------------------------------------------------------------------------------
def as_ids(ids, what: str = "mask") -> np.ndarray:
    """``ids`` as a ``uint8 [H, W]`` array; bool -> 0/1; integer (or integral float) values
    must lie in 0..255."""
    arr = np.asarray(ids)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [H, W] array of object ids, got shape "
                         f"{arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} must hold integer object ids, got dtype {arr.dtype}")
    if arr.size:
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr) &
                                                                (arr == np.round(arr))):
            raise ValueError(f"{what} holds non-integer values; pass object ids (e.g. "
                             "argmax over classes, or (prob > 0.5) for one object)")
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} holds values {lo}..{hi}; object ids must lie in 0..255")
    return arr.astype(np.uint8)


def object_ids(mask) -> list[int]:
    """Sorted object ids present in ``mask``, without background (0) and void (255)."""
    u = np.unique(np.asarray(mask))
    return [int(v) for v in u if v != 0 and v != VOID]


def resize_ids(ids, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an id mask to ``size = (H, W)`` (ids are never blended), by
    the rule training uses too (:mod:`pipeline.core.ids_resize`: ``nearest-exact``)."""
    arr = as_ids(ids)
    h, w = int(size[0]), int(size[1])
    if arr.shape == (h, w):
        return arr.copy()
    return resize_ids_nearest(arr, (h, w))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB (or gray) uint8 image to ``size = (H, W)``: area averaging when shrinking,
    bilinear when enlarging."""
    import cv2

    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image.copy()
    shrink = h * w < image.shape[0] * image.shape[1]
    return cv2.resize(np.ascontiguousarray(image), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------
def encode_mask_png(ids) -> bytes:
    """The bytes of an indexed PNG of ``ids`` with the DAVIS palette."""
    from PIL import Image

    arr = np.ascontiguousarray(as_ids(ids))
    im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    im.putpalette(_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_mask_png(path, ids) -> Path:
    """Write ``ids`` (uint8 [H, W] object ids) as an indexed ("P") PNG with the DAVIS palette,
    atomically; parent folders are created. Returns the path."""
    path = Path(path)
    atomic_write_bytes(path, encode_mask_png(ids))
    return path


def read_mask_png(path) -> np.ndarray:
    """Object ids (``uint8 [H, W]``) of a mask PNG, read by the one mask reader
    (:mod:`pipeline.core.mask_png`).

    * "P" (indexed): the palette indices, whatever the palette's colours.
    * "L" / "LA" (grayscale, alpha ignored) and 16-bit grayscale: values only 0 and 255 -> 0/1
      (binary DAVIS-2016 style); other values are kept as ids. "1" (bilevel) -> 0/1.
    * Colour (RGB/RGBA), JPEG, missing, corrupt or truncated files: :class:`MaskIOError`
      naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskIOError(path, "mask file does not exist",
                          "check the path (DAVIS: Annotations/480p/<sequence>/00000.png)")
    try:
        arr, mode = read_mask(path)
    except MaskFormatError as e:
        raise MaskIOError(path, e.problem, e.fix) from e
    if mode not in ("P", "PA", "1"):
        u = np.unique(arr)
        if VOID in u and np.all((u == 0) | (u == VOID)):
            arr = (arr == VOID).astype(np.uint8)
    return arr


# --------------------------------------------------------------------------------------------
# overlay
# --------------------------------------------------------------------------------------------
def as_rgb(image, what: str = "image") -> np.ndarray:
    """``image`` as ``uint8 [H, W, 3]``: gray is repeated, an alpha channel dropped."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{what} must be [H, W, 3] RGB, got shape {np.asarray(image).shape}")
    return arr


def contour_thickness(shape: tuple[int, ...]) -> int:
    """Contour line width for a frame of ``shape``: 2 px at 480p, at least 1."""
    return max(1, int(round(min(shape[0], shape[1]) / 240)))


def overlay(image: np.ndarray, ids: np.ndarray, alpha: float = 0.5,
            contour: bool = True) -> np.ndarray:
    """The RGB uint8 frame with each object tinted in its palette colour
    (``(1 - alpha) * pixel + alpha * colour``) and, with ``contour``, outlined in that colour
    (like Fig. 3 of the paper). Background (0) and void (255) pixels are not tinted; without a
    contour they are returned unchanged. ``ids`` must have the frame's height and width
    (see :func:`resize_ids`)."""
    import cv2

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = as_rgb(image)
    m = as_ids(ids)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]} (WxH) but the frame is "
                         f"{img.shape[1]}x{img.shape[0]}; resize the mask with resize_ids()")
    out = img.copy()
    fg = (m != 0) & (m != VOID)
    if not fg.any():
        return out
    colour = _PALETTE_RGB[m].astype(np.float32)
    blend = (1.0 - float(alpha)) * img.astype(np.float32) + float(alpha) * colour
    out[fg] = np.clip(np.rint(blend[fg]), 0, 255).astype(np.uint8)
    if contour:
        t = contour_thickness(img.shape)
        for k in object_ids(m):
            cs, _ = cv2.findContours((m == k).astype(np.uint8), cv2.RETR_LIST,
                                     cv2.CHAIN_APPROX_NONE)
            c = tuple(int(v) for v in _PALETTE_RGB[k])
            cv2.drawContours(out, cs, -1, c, thickness=t, lineType=cv2.LINE_8)
    return out
