"""Writing the files the releases hold: JPEG frames, binary / palette / LA mask PNGs, list files,
DAVIS-style names, VOC's void band."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.palette import davis_palette
from pipeline.synthetic.spec import MODIFIERS, NOUNS


# ------------------------------------------------------------------------------------------------
# File writing helpers
# ------------------------------------------------------------------------------------------------
PALETTE = davis_palette()
VOID = 255
LA_FRAME = 77  # the frame of the first train sequence stored as LA (bear/00077.png in the release)


def save_jpeg(path: Path, arr: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "RGB" if arr.ndim == 3 else "L"
    im = Image.frombytes(mode, (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    path.write_bytes(buf.getvalue())


def save_png(path: Path, arr: np.ndarray, palette: bool, alpha: bool = False) -> None:
    """An 8-bit palette (P) or grey (L) PNG; ``alpha``: grey + an all-255 alpha channel (LA),
    as one official DAVIS-2016 annotation is stored (Annotations/480p/bear/00077.png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if alpha:
        im = Image.fromarray(np.stack([arr, np.full_like(arr, 255)], axis=-1), mode="LA")
    else:
        im = Image.frombytes("P" if palette else "L", (arr.shape[1], arr.shape[0]),
                             arr.tobytes())
    if palette:
        im.putpalette(PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii", newline="\n")


_EXTRA = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def davis_names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct DAVIS-style names ("bear", "car-shadow", ...), in a seed-dependent order."""
    pool = list(NOUNS) + [f"{a}-{b}" for a in NOUNS for b in MODIFIERS]
    pool = [pool[k] for k in rng.permutation(len(pool))]
    names = list(pool)
    for word in _EXTRA:  # past the pool: the pool again with a suffix word
        if len(names) >= n:
            break
        names += [f"{p}-{word}" for p in pool]
    if len(names) < n:
        raise ValueError(f"at most {len(names)} synthetic DAVIS sequences, asked for {n}")
    return names[:n]


def void_band(ids: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (square neighbourhood) of a change of id: VOC's void boundary."""
    h, w = ids.shape
    p = np.pad(ids, radius, mode="edge")
    lo = ids.copy()
    hi = ids.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            win = p[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
            np.minimum(lo, win, out=lo)
            np.maximum(hi, win, out=hi)
    return lo != hi
