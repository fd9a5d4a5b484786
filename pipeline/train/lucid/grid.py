"""Looking at lucid dreams: mask overlays and a grid of examples, written as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.palette import PALETTE_RGB
from pipeline.train.lucid.config import LucidDreamConfig, VOID
from pipeline.train.lucid.dream import lucid_dream_pairs


# ----------------------------------------------------------------------------- visualisation


def _palette_colour(k: int) -> np.ndarray:
    """The DAVIS/VOC palette colour of id ``k`` (1 red, 2 green, 3 yellow, ...)."""
    return PALETTE_RGB[int(k)].astype(np.float32)


def overlay_mask(image: np.ndarray, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """``image`` with each object id tinted in its palette colour and outlined, void hatched
    grey."""
    out = image.astype(np.float32)
    for k in np.unique(mask):
        k = int(k)
        if k == 0:
            continue
        sel = mask == k
        if k == VOID:
            yy, xx = np.nonzero(sel)
            hatch = ((yy + xx) // 4) % 2 == 0
            out[yy[hatch], xx[hatch]] = 0.5 * out[yy[hatch], xx[hatch]] + 0.5 * 160.0
            continue
        col = _palette_colour(k)
        out[sel] = (1 - opacity) * out[sel] + opacity * col
        contours, _ = cv2.findContours(sel.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(float(v) for v in col), 1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def example_grid(image: np.ndarray, mask: np.ndarray, n: int = 8, seed: int = 0,
                 cfg: LucidDreamConfig | None = None, cols: int = 4,
                 tile_max_side: int | None = None) -> np.ndarray:
    """RGB uint8 grid: the original frame with its mask overlaid, then ``n`` dreams (from
    :func:`lucid_dream_pairs`) with theirs, ``cols`` per row, 4-pixel white gutters.
    ``tile_max_side`` shrinks each tile to at most that longest side."""
    if cols < 1:
        raise ValueError(f"example_grid: cols must be >= 1, got {cols}")
    tiles = [overlay_mask(image, mask)]
    tiles += [overlay_mask(im, m) for im, m in lucid_dream_pairs(image, mask, n, seed, cfg)]
    h, w = mask.shape
    if tile_max_side is not None and max(h, w) > tile_max_side:
        f = tile_max_side / max(h, w)
        w, h = max(1, round(w * f)), max(1, round(h * f))
        tiles = [cv2.resize(t, (w, h), interpolation=cv2.INTER_AREA) for t in tiles]
    gap = 4
    rows = math.ceil(len(tiles) / cols)
    ncols = min(cols, len(tiles))
    grid = np.full((rows * (h + gap) + gap, ncols * (w + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        grid[y:y + h, x:x + w] = t
    return grid


def save_example_grid(path: str | Path, image: np.ndarray, mask: np.ndarray, n: int = 8,
                      seed: int = 0, cfg: LucidDreamConfig | None = None, cols: int = 4,
                      tile_max_side: int | None = None) -> Path:
    """Write :func:`example_grid` as a PNG (atomically) and return its path."""
    from PIL import Image

    grid = example_grid(image, mask, n=n, seed=seed, cfg=cfg, cols=cols,
                        tile_max_side=tile_max_side)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
