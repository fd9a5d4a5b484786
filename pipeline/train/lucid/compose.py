"""Step 5 of a lucid dream: the moved objects merged back onto the background (feathered or
seamless blending), in depth order, with the mask that shows what stays visible."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.train.lucid.background import disk
from pipeline.train.lucid.config import LucidDreamConfig, VOID
from pipeline.train.lucid.deform import Layer, ObjectWarp, warp_label


# ----------------------------------------------------------------------------- step 5


def _paste_seamless(out: np.ndarray, comp: np.ndarray, lab_k: np.ndarray,
                    box: tuple[int, int, int, int]) -> None:
    """Poisson-blend ``comp`` (the feathered composite of the window) into ``out`` over the
    object (dilated by 2 pixels), in place."""
    y0, y1, x0, x1 = box
    region = cv2.dilate(lab_k.astype(np.uint8), disk(2))
    if not region.any():
        return
    p = 3  # seamlessClone refuses a region touching the border: work on a padded copy
    dst = cv2.copyMakeBorder(out[y0:y1, x0:x1], p, p, p, p, cv2.BORDER_REFLECT_101)
    src = cv2.copyMakeBorder(comp, p, p, p, p, cv2.BORDER_REFLECT_101)
    m = cv2.copyMakeBorder(region * 255, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    bx, by, bw, bh = cv2.boundingRect(m)
    cloned = cv2.seamlessClone(src, dst, m, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
    out[y0:y1, x0:x1] = cloned[p:-p, p:-p]


def render(image: np.ndarray, background: np.ndarray, layers: dict[int, Layer],
            order: list[int], warps: dict[int, ObjectWarp], cfg: LucidDreamConfig) -> np.ndarray:
    out = background.copy()
    for oid in order:
        wp, ly = warps[oid], layers[oid]
        if wp.box is None:
            continue
        y0, y1, x0, x1 = wp.box
        a = cv2.remap(ly.alpha, wp.map_x, wp.map_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        lab_k = warp_label(ly, wp) == oid
        a[lab_k] = 1.0
        if not a.any():
            continue
        fg = cv2.remap(ly.image, wp.map_x, wp.map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
        win = out[y0:y1, x0:x1].astype(np.float32)
        comp = win + (fg - win) * a[..., None]
        comp = np.clip(np.rint(comp), 0, 255).astype(np.uint8)
        if cfg.blend == "seamless":
            _paste_seamless(out, comp, lab_k, wp.box)
        else:
            out[y0:y1, x0:x1] = comp
    return out


def compose_mask(bg_mask: np.ndarray, layers: dict[int, Layer], order: list[int],
                  warps: dict[int, ObjectWarp]) -> np.ndarray:
    out = bg_mask.copy()
    for oid in order:
        wp = warps[oid]
        if wp.box is None:
            continue
        y0, y1, x0, x1 = wp.box
        lab = warp_label(layers[oid], wp)
        win = out[y0:y1, x0:x1]
        win[lab == VOID] = VOID
        win[lab == oid] = oid
    return out
