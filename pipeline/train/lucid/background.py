"""Steps 1-2 of a lucid dream: illumination change, and the background with the objects cut out
and inpainted (foreground/background splitting)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.train.lucid.config import LucidDreamConfig


# ----------------------------------------------------------------------------- step 1


def illuminate(image: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
    u = rng.uniform(-1.0, 1.0, size=4)          # hue, saturation, value, gradient strength
    angle = rng.uniform(0.0, 2 * math.pi)
    if s <= 0:
        return image
    h, w = image.shape[:2]
    hsv = cv2.cvtColor(image.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2HSV)
    hue, sat, val = cv2.split(hsv)
    hue = np.mod(hue + np.float32(u[0] * s * 20.0), np.float32(360.0))
    sat = np.clip(sat * np.float32(math.exp(u[1] * s)), 0, 1)
    # smooth lighting gradient: t in [-1, 1] along a random direction across the frame
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    c, sn = math.cos(angle), math.sin(angle)
    t = (xs * np.float32(c * w) + ys * np.float32(sn * h)) / np.float32(abs(c) * w + abs(sn) * h)
    gain = np.exp(t * np.float32(u[3] * s)) * np.float32(math.exp(u[2] * s))
    val = np.clip(val * gain, 0, 1)
    rgb = cv2.cvtColor(cv2.merge([hue, sat, val]), cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(rgb * np.float32(255)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- step 2


def disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def inpaint_background(image: np.ndarray, hole: np.ndarray, cfg: LucidDreamConfig) -> np.ndarray:
    """``image`` with the ``hole`` (bool) filled; pixels outside the hole are unchanged."""
    h, w = hole.shape
    f = min(1.0, cfg.inpaint_max_side / max(h, w))
    method = cv2.INPAINT_TELEA if cfg.inpaint_method == "telea" else cv2.INPAINT_NS
    hole_u8 = hole.astype(np.uint8) * 255
    if f < 1.0:
        sw, sh = max(1, round(w * f)), max(1, round(h * f))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        # a small pixel touching the hole at all is in the small hole: no object colour leaks
        small_hole = (cv2.resize(hole_u8, (sw, sh), interpolation=cv2.INTER_AREA) > 0)
        small_hole = small_hole.astype(np.uint8) * 255
        if small_hole.all():
            filled = np.broadcast_to(np.median(image.reshape(-1, 3), axis=0).astype(np.uint8),
                                     image.shape)
        else:
            radius = max(1, round(cfg.inpaint_radius))
            filled = cv2.inpaint(small, small_hole, radius, method)
            filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    elif hole.all():
        filled = np.broadcast_to(np.median(image.reshape(-1, 3), axis=0).astype(np.uint8),
                                 image.shape)
    else:
        filled = cv2.inpaint(image, hole_u8, max(1, round(cfg.inpaint_radius)), method)
    out = image.copy()
    out[hole] = filled[hole]
    return out
