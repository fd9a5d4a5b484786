"""Step 3 of a lucid dream: object motion, each object shifted, scaled, rotated and deformed by a
thin-plate spline (``scipy.interpolate.RBFInterpolator``) through jittered control points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from pipeline.train.lucid.config import LucidDreamConfig, VOID


# ----------------------------------------------------------------------------- step 3


TPS_STEP = 4  # pixels between the nodes where the TPS displacement is evaluated


@dataclass
class ObjectWarp:
    """Where object ``oid`` lands: the output window and, per output pixel of it, the source
    position (absolute coordinates of the frame)."""
    oid: int
    box: tuple[int, int, int, int] | None        # y0, y1, x0, x1 in the output (None: off-frame)
    map_x: np.ndarray | None = None
    map_y: np.ndarray | None = None


@dataclass
class Layer:
    """One object cut out with its ring, in the window ``sy0:sy1, sx0:sx1`` of the frame."""
    oid: int
    sy0: int
    sx0: int
    image: np.ndarray        # float32 [h, w, 3]: the object + ring, inpainted background elsewhere
    alpha: np.ndarray        # float32 [h, w]: 1 on the object, ramp to 0 across the ring
    label: np.ndarray        # uint8 [h, w]: oid on the object, 255 on carried void, 0 elsewhere
    centre: tuple[float, float]
    size: float
    obj_box: tuple[int, int, int, int]   # the object's own box: y0, y1, x0, x1 (exclusive ends)


def make_layer(image: np.ndarray, background: np.ndarray, mask: np.ndarray, oid: int,
                feather_px: int) -> Layer:
    h, w = mask.shape
    obj = mask == oid
    ys, xs = np.nonzero(obj)
    pad = feather_px + 2
    sy0, sy1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
    sx0, sx1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
    m = mask[sy0:sy1, sx0:sx1]
    o = obj[sy0:sy1, sx0:sx1]
    is_obj = (m >= 1) & (m < VOID)
    other = is_obj & ~o
    d_self = cv2.distanceTransform((~o).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (d_self < feather_px) & ~is_obj
    if other.any():
        d_other = cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2, 5)
        ring &= d_self <= d_other
    alpha = np.where(o, np.float32(1), np.float32(0))
    alpha[ring] = 1.0 - d_self[ring] / np.float32(feather_px)
    carried = o | ring
    img = np.where(carried[..., None], image[sy0:sy1, sx0:sx1], background[sy0:sy1, sx0:sx1])
    label = np.zeros_like(m)
    label[o] = oid
    label[ring & (m == VOID)] = VOID
    cy, cx = float(ys.mean()), float(xs.mean())
    obj_box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    size = float(max(obj_box[1] - obj_box[0], obj_box[3] - obj_box[2]))
    return Layer(oid, int(sy0), int(sx0), img.astype(np.float32), alpha, label, (cy, cx), size,
                  obj_box)


@dataclass
class _MotionDraw:
    """The random numbers of one object's motion (drawn whatever the config, so that switching
    a step off does not change the draws of the others)."""
    shift: np.ndarray        # [2] in [-1, 1]
    scale: float             # in [0, 1], mapped onto cfg.scale
    rotate: float            # in [-1, 1]
    jitter: np.ndarray       # [g*g, 2] control point jitter, in [-0.25, 0.25] cells
    disp: np.ndarray         # [g*g, 2] control point displacement, N(0, 1) clipped to +-2


def draw_motion(rng: np.random.Generator, cfg: LucidDreamConfig) -> _MotionDraw:
    g = cfg.deform_points
    return _MotionDraw(rng.uniform(-1.0, 1.0, size=2), float(rng.uniform()),
                       float(rng.uniform(-1.0, 1.0)), rng.uniform(-0.25, 0.25, size=(g * g, 2)),
                       np.clip(rng.standard_normal(size=(g * g, 2)), -2.0, 2.0))


def object_warp(draw: _MotionDraw, cfg: LucidDreamConfig, layer: Layer,
                 shape: tuple[int, int]) -> ObjectWarp:
    h, w = shape
    g = cfg.deform_points
    shift = draw.shift * cfg.max_shift * np.array([w, h])
    scale = cfg.scale[0] + draw.scale * (cfg.scale[1] - cfg.scale[0])
    theta = math.radians(draw.rotate * cfg.max_rotate_deg)

    cy, cx = layer.centre
    lh, lw = layer.alpha.shape
    # forward similarity (source -> output) about the centroid: p = c + t + s R (q - c)
    c, sn = math.cos(theta), math.sin(theta)
    fwd = np.array([[scale * c, -scale * sn], [scale * sn, scale * c]])
    centre = np.array([cx, cy])
    sigma = cfg.deform * layer.size            # TPS displacement scale, pixels
    margin = 4.0 * sigma + 2.0
    corners = np.array([[layer.sx0 - margin, layer.sy0 - margin],
                        [layer.sx0 + lw + margin, layer.sy0 - margin],
                        [layer.sx0 - margin, layer.sy0 + lh + margin],
                        [layer.sx0 + lw + margin, layer.sy0 + lh + margin]])
    out_c = (corners - centre) @ fwd.T + centre + shift
    x0 = max(0, math.floor(out_c[:, 0].min()))
    x1 = min(w, math.ceil(out_c[:, 0].max()) + 1)
    y0 = max(0, math.floor(out_c[:, 1].min()))
    y1 = min(h, math.ceil(out_c[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return ObjectWarp(layer.oid, None)
    inv = np.linalg.inv(fwd)
    # source position before deformation, q = c + A^-1 (p - c - t): affine, so per pixel by
    # broadcasting a row of x and a column of y (float32 is ample: 1e-4 pixel)
    off = -inv @ (centre + shift) + centre - np.array([layer.sx0, layer.sy0])
    px = np.arange(x0, x1, dtype=np.float32)[None, :]
    py = np.arange(y0, y1, dtype=np.float32)[:, None]
    map_x = np.float32(inv[0, 0]) * px + (np.float32(inv[0, 1]) * py + np.float32(off[0]))
    map_y = np.float32(inv[1, 0]) * px + (np.float32(inv[1, 1]) * py + np.float32(off[1]))
    if sigma > 0:
        # control points: a jittered g x g grid over the object's box, in units of its size
        oy0, oy1, ox0, ox1 = layer.obj_box
        gy, gx = np.meshgrid(np.linspace(0, 1, g), np.linspace(0, 1, g), indexing="ij")
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1) + draw.jitter / (g - 1)
        ctrl = (grid * np.array([ox1 - ox0, oy1 - oy0]) + np.array([ox0, oy0]) - centre)
        ctrl /= layer.size
        # thin-plate spline through the control points' displacements (the same interpolant for
        # any kernel scale; the tiny smoothing keeps coincident jittered points solvable)
        tps = RBFInterpolator(ctrl, draw.disp * cfg.deform, kernel="thin_plate_spline",
                              degree=1, smoothing=1e-8)
        # the displacement is smooth: evaluate it on a coarse grid (every TPS_STEP pixels), at
        # the positions cv2.resize samples, and upsample it bilinearly
        ww, hh = x1 - x0, y1 - y0
        gw, gh = max(2, -(-ww // TPS_STEP)), max(2, -(-hh // TPS_STEP))
        nx = x0 + (np.arange(gw) + 0.5) * ww / gw - 0.5
        ny = y0 + (np.arange(gh) + 0.5) * hh / gh - 0.5
        nodes = np.stack(np.meshgrid(nx, ny), axis=-1).reshape(-1, 2)
        q = (nodes - centre - shift) @ inv.T + centre
        d = tps((q - centre) / layer.size) * layer.size
        d = d.astype(np.float32).reshape(gh, gw, 2)
        map_x += cv2.resize(d[..., 0], (ww, hh), interpolation=cv2.INTER_LINEAR)
        map_y += cv2.resize(d[..., 1], (ww, hh), interpolation=cv2.INTER_LINEAR)
    return ObjectWarp(layer.oid, (y0, y1, x0, x1), map_x, map_y)


def warp_label(layer: Layer, wp: ObjectWarp) -> np.ndarray:
    return cv2.remap(layer.label, wp.map_x, wp.map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
