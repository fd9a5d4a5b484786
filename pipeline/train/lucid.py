"""Lucid-dream augmentation: many (image, mask) training pairs from ONE annotated frame.

STCNN fine-tunes its spatial segmentation branch online on the first frame of each test video,
augmented with the "lucid dream" strategy of Khoreva et al. ("Lucid Data Dreaming for Video Object
Segmentation", IJCV 2019), in five steps (STCNN paper, Sec. 3.3): illumination changing,
foreground/background splitting, object motion simulating, camera view changing and
foreground/background merging. Like STCNN (and unlike Khoreva et al.) no optical flow is made.
The authors' generator made 100 such images per sequence. This module is our own implementation
of the five steps with OpenCV + NumPy; it does not reproduce the authors' code.

Mask convention: uint8 ``[H, W]``, 0 background, 1..254 object ids, 255 void / ignore. A binary
DAVIS-2016 mask (0/255, the object being 255) must first be turned into ids:
``(mask > 0).astype(np.uint8)``.

The steps of one dream (:func:`lucid_dream`), in the paper's order (the camera runs last):

1. **Illumination** (``illumination``): the whole frame goes through HSV, with a random hue
   rotation (up to ``illumination * 20`` degrees), saturation and value gains
   (``exp(U(-s, s))``) and a smooth linear lighting gradient across the frame in a random
   direction (value gain ``exp(g * t)``, ``g ~ U(-s, s)``, ``t`` in [-1, 1] along the direction).
2. **Foreground/background split** (``inpaint_*``): every object (ids 1..254) is cut out and the
   hole, the object mask dilated by ``inpaint_dilate`` of the image size (so that the objects'
   blurred edges go too), is filled with ``cv2.inpaint`` (Telea, or Navier-Stokes) at a reduced
   resolution (longest side ``inpaint_max_side``) and upsampled back into the hole only; the
   pixels outside the hole stay exact. The authors used PatchMatch inpainting, which copies
   texture; Telea/NS diffuse colour, so large holes come out smooth (blurry) rather than
   textured. Void pixels are not cut: they belong to the static background and keep their label
   (also where the dilated hole covers them: their image is inpainted, their label stays 255).
3. **Object motion** (``max_shift``, ``scale``, ``max_rotate_deg``, ``deform``): each object gets
   its own random similarity transform about its centroid (shift up to ``max_shift`` of the image
   width/height, scale from ``scale``, rotation up to ``max_rotate_deg``) composed with a smooth
   non-rigid thin-plate-spline deformation: ``deform_points`` x ``deform_points`` jittered
   control points on the object's bounding box are displaced by ``N(0, deform * size)``
   (``size``: the longer bounding-box side) and the TPS interpolates the displacement everywhere.
   The mapping is built backwards (output pixel -> source position) and the image layer, its
   feather alpha and its mask are sampled with the *same* map: image and alpha bilinear, mask
   nearest neighbour, so ids are never blended and the mask is the moved object exactly.
   Each object carries a thin ring of its own surroundings (``feather`` of the image size, only
   pixels closer to it than to any other object; elsewhere the inpainted background), with
   alpha falling from 1 at the object edge to 0 across the ring: that is the soft border.
   Void pixels inside that ring travel with the object (as void).
4. **Camera view change** (``camera_*``): a global similarity transform about the image centre
   plus a small perspective component (each corner moved by up to ``camera_perspective`` of the
   size) is applied to the merged image (bilinear) and mask (nearest). Pixels that come from
   outside the frame get mask 255 (void) and, in the image, the reflected inpainted background
   (so no mirrored ghost of an object appears there).
5. **Foreground/background merge** (``blend``): the moved objects are pasted onto the inpainted
   background in a random depth order (a later object occludes an earlier one, and the mask shows
   only what is visible). ``"feather"`` alpha-blends the ring; ``"seamless"`` additionally runs
   Poisson blending (``cv2.seamlessClone``, as the authors did) over each pasted object, which also
   shifts the object's colours towards its new surroundings. The mask stays hard either way.
   (The camera of step 4 acts on the merged result, so it is applied after step 5.)

Visibility: an object must keep at least ``min_visible`` of its original area in the final mask
(occlusion, leaving the frame); otherwise the motion and camera are drawn again, up to
``max_tries`` times; after that the draw in which the least visible object was most visible is
kept. Illumination is drawn once per dream.

Switching off: every step is off at 0 (``scale``/``camera_scale`` at ``(1, 1)``) and then changes
nothing. With all object motion off, no object moves relative to the scene, so the split and merge
are skipped (re-pasting unmoved objects would only blur their borders): with everything off the
output is the input, byte for byte. The random draws do not depend on which steps are off (for
the first draw of motion and camera; a ``min_visible`` redraw can of course differ).

Determinism: one ``np.random.default_rng(seed)`` per dream draws everything, in a fixed order and
count; the OpenCV calls used are deterministic whatever their thread count (each output pixel is
computed independently), so the same inputs, config and seed give byte-identical outputs.
:func:`lucid_dream_pairs` and :class:`LucidDreamDataset` give sample ``i`` the seed
:func:`dream_seed` ``(seed, i)``.

Cost (one core, 854x480): about 0.1 s per dream with ``blend="feather"``, 0.15-0.2 s with
``"seamless"``; about 10 ms at 64x64 and 15 ms at 128x128.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import cv2
import numpy as np

from pipeline.core.palette import PALETTE_RGB
import torch

from pipeline.core.atomic import atomic_write_bytes

VOID = 255

__all__ = [
    "LucidDreamConfig",
    "LucidDreamDataset",
    "dream_seed",
    "example_grid",
    "lucid_dream",
    "lucid_dream_pairs",
    "overlay_mask",
    "save_example_grid",
]


@dataclass
class LucidDreamConfig:
    illumination: float = 0.3        # strength of the colour/brightness change (0 = off)
    max_shift: float = 0.1           # object shift, fraction of the image size
    scale: tuple[float, float] = (0.9, 1.1)
    max_rotate_deg: float = 10.0
    deform: float = 0.05             # non-rigid deformation strength (fraction of object size)
    camera_shift: float = 0.05
    camera_scale: tuple[float, float] = (0.95, 1.05)
    camera_rotate_deg: float = 5.0
    inpaint_radius: int = 5
    inpaint_max_side: int = 240      # inpaint at most at this resolution (speed), then upsample
    blend: Literal["feather", "seamless"] = "feather"
    min_visible: float = 0.3         # least kept fraction of each object's area, else redraw
    # --- additions ---
    camera_perspective: float = 0.02  # corner jitter of the camera homography, fraction of size
    deform_points: int = 3           # TPS control grid per object (n x n)
    inpaint_method: Literal["telea", "ns"] = "telea"
    inpaint_dilate: float = 0.01     # hole = objects dilated by this fraction of max(H, W)
    feather: float = 0.004           # soft border width, fraction of max(H, W) (>= 1 pixel)
    max_tries: int = 10              # draws of motion + camera before giving up on min_visible

    def __post_init__(self) -> None:
        for name in ("illumination", "max_shift", "max_rotate_deg", "deform", "camera_shift",
                     "camera_rotate_deg", "camera_perspective", "inpaint_dilate", "feather",
                     "min_visible"):
            if getattr(self, name) < 0:
                raise ValueError(f"LucidDreamConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "camera_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"LucidDreamConfig.{name} must be (lo, hi) with 0 < lo <= hi, "
                                 f"got {(lo, hi)}")
        if self.blend not in ("feather", "seamless"):
            raise ValueError(f"LucidDreamConfig.blend must be 'feather' or 'seamless', "
                             f"got {self.blend!r}")
        if self.inpaint_method not in ("telea", "ns"):
            raise ValueError(f"LucidDreamConfig.inpaint_method must be 'telea' or 'ns', "
                             f"got {self.inpaint_method!r}")
        if self.deform_points < 2 or self.max_tries < 1 or self.inpaint_max_side < 8:
            raise ValueError("LucidDreamConfig needs deform_points >= 2, max_tries >= 1 and "
                             "inpaint_max_side >= 8")

    @property
    def moves_objects(self) -> bool:
        return (self.max_shift > 0 or tuple(self.scale) != (1.0, 1.0) or self.max_rotate_deg > 0
                or self.deform > 0)


# ----------------------------------------------------------------------------- validation


def _check_inputs(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Validate and return the sorted object ids (1..254) present in ``mask``."""
    if not isinstance(image, np.ndarray) or not isinstance(mask, np.ndarray):
        raise ValueError("lucid_dream: image and mask must be numpy arrays "
                         "(convert a tensor with .numpy(), a PIL image with np.asarray)")
    if image.dtype != np.uint8:
        raise ValueError(f"lucid_dream: image must be uint8, got {image.dtype} "
                         "(convert with np.clip(x, 0, 255).astype(np.uint8))")
    if mask.dtype != np.uint8:
        raise ValueError(f"lucid_dream: mask must be uint8 ids (0 background, 1..254 objects, "
                         f"255 void), got {mask.dtype} (convert with mask.astype(np.uint8))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"lucid_dream: image must be RGB [H, W, 3], got shape {image.shape} "
                         "(a [3, H, W] tensor: use .permute(1, 2, 0))")
    if mask.ndim != 2:
        raise ValueError(f"lucid_dream: mask must be [H, W], got shape {mask.shape} "
                         "(squeeze a channel axis)")
    if image.shape[:2] != mask.shape:
        raise ValueError(f"lucid_dream: image {image.shape[:2]} and mask {mask.shape} differ in "
                         "size; resize the mask to the image with nearest-neighbour interpolation")
    counts = np.bincount(mask.ravel(), minlength=256)
    ids = np.flatnonzero(counts[1:VOID]) + 1
    if ids.size == 0:
        hint = (" It has only 0/255: a binary DAVIS-2016 mask uses 255 for the object; convert it "
                "with (mask > 0).astype(np.uint8)." if counts[VOID] else "")
        raise ValueError("lucid_dream: the mask has no object (no id in 1..254); give the frame's "
                         "annotation with at least one object." + hint)
    return ids.astype(np.int64)


def dream_seed(seed: int, i: int) -> int:
    """The seed of sample ``i`` of a set drawn with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1, dtype=np.uint64)[0])


# ----------------------------------------------------------------------------- step 1


def _illuminate(image: np.ndarray, rng: np.random.Generator, s: float) -> np.ndarray:
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


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _inpaint_background(image: np.ndarray, hole: np.ndarray, cfg: LucidDreamConfig) -> np.ndarray:
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


# ----------------------------------------------------------------------------- step 3


def _tps_kernel(r2: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        k = r2 * np.log(r2)
    k[r2 <= 0] = 0.0
    return k


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _tps_fit(ctrl: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin-plate spline through ``disp`` at ``ctrl`` (both ``[n, 2]``): kernel weights ``[n, 2]``
    and affine part ``[3, 2]``."""
    n = ctrl.shape[0]
    k = _tps_kernel(_sqdist(ctrl, ctrl)) + 1e-8 * np.eye(n)
    p = np.concatenate([np.ones((n, 1)), ctrl], axis=1)
    lhs = np.zeros((n + 3, n + 3))
    lhs[:n, :n], lhs[:n, n:], lhs[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = disp
    sol = np.linalg.solve(lhs, rhs)
    return sol[:n], sol[n:]


def _tps_eval(pts: np.ndarray, ctrl: np.ndarray, wts: np.ndarray, aff: np.ndarray) -> np.ndarray:
    out = pts @ aff[1:] + aff[0]
    for c, wt in zip(ctrl, wts):        # one control point at a time: [m] temporaries only
        r2 = (pts[:, 0] - c[0]) ** 2 + (pts[:, 1] - c[1]) ** 2
        out += _tps_kernel(r2)[:, None] * wt
    return out


_TPS_STEP = 4  # pixels between the nodes where the TPS displacement is evaluated


@dataclass
class _ObjectWarp:
    """Where object ``oid`` lands: the output window and, per output pixel of it, the source
    position (absolute coordinates of the frame)."""
    oid: int
    box: tuple[int, int, int, int] | None        # y0, y1, x0, x1 in the output (None: off-frame)
    map_x: np.ndarray | None = None
    map_y: np.ndarray | None = None


@dataclass
class _Layer:
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


def _make_layer(image: np.ndarray, background: np.ndarray, mask: np.ndarray, oid: int,
                feather_px: int) -> _Layer:
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
    return _Layer(oid, int(sy0), int(sx0), img.astype(np.float32), alpha, label, (cy, cx), size,
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


def _draw_motion(rng: np.random.Generator, cfg: LucidDreamConfig) -> _MotionDraw:
    g = cfg.deform_points
    return _MotionDraw(rng.uniform(-1.0, 1.0, size=2), float(rng.uniform()),
                       float(rng.uniform(-1.0, 1.0)), rng.uniform(-0.25, 0.25, size=(g * g, 2)),
                       np.clip(rng.standard_normal(size=(g * g, 2)), -2.0, 2.0))


def _object_warp(draw: _MotionDraw, cfg: LucidDreamConfig, layer: _Layer,
                 shape: tuple[int, int]) -> _ObjectWarp:
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
        return _ObjectWarp(layer.oid, None)
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
        wts, aff = _tps_fit(ctrl, draw.disp * cfg.deform)
        # the displacement is smooth: evaluate it on a coarse grid (every _TPS_STEP pixels), at
        # the positions cv2.resize samples, and upsample it bilinearly
        ww, hh = x1 - x0, y1 - y0
        gw, gh = max(2, -(-ww // _TPS_STEP)), max(2, -(-hh // _TPS_STEP))
        nx = x0 + (np.arange(gw) + 0.5) * ww / gw - 0.5
        ny = y0 + (np.arange(gh) + 0.5) * hh / gh - 0.5
        nodes = np.stack(np.meshgrid(nx, ny), axis=-1).reshape(-1, 2)
        q = (nodes - centre - shift) @ inv.T + centre
        d = _tps_eval((q - centre) / layer.size, ctrl, wts, aff) * layer.size
        d = d.astype(np.float32).reshape(gh, gw, 2)
        map_x += cv2.resize(d[..., 0], (ww, hh), interpolation=cv2.INTER_LINEAR)
        map_y += cv2.resize(d[..., 1], (ww, hh), interpolation=cv2.INTER_LINEAR)
    return _ObjectWarp(layer.oid, (y0, y1, x0, x1), map_x, map_y)


def _warp_label(layer: _Layer, wp: _ObjectWarp) -> np.ndarray:
    return cv2.remap(layer.label, wp.map_x, wp.map_y, cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# ----------------------------------------------------------------------------- step 4


def _sample_camera(rng: np.random.Generator, cfg: LucidDreamConfig,
                   shape: tuple[int, int]) -> np.ndarray | None:
    h, w = shape
    shift = rng.uniform(-1.0, 1.0, size=2) * cfg.camera_shift * np.array([w, h])
    scale = rng.uniform(cfg.camera_scale[0], cfg.camera_scale[1])
    theta = math.radians(rng.uniform(-1.0, 1.0) * cfg.camera_rotate_deg)
    corner_jit = rng.uniform(-1.0, 1.0, size=(4, 2)) * cfg.camera_perspective * np.array([w, h])
    if (cfg.camera_shift <= 0 and tuple(cfg.camera_scale) == (1.0, 1.0)
            and cfg.camera_rotate_deg <= 0 and cfg.camera_perspective <= 0):
        return None
    # OpenCV pixel centres are integers; the image centre is ((w - 1) / 2, (h - 1) / 2)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    c, sn = math.cos(theta), math.sin(theta)
    to_c = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], dtype=np.float64)
    rs = np.array([[scale * c, -scale * sn, 0], [scale * sn, scale * c, 0], [0, 0, 1]])
    back = np.array([[1, 0, cx + shift[0]], [0, 1, cy + shift[1]], [0, 0, 1]])
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    persp = cv2.getPerspectiveTransform(src, (src + corner_jit).astype(np.float32))
    return back @ rs @ to_c @ persp


def _camera_image(img: np.ndarray, mat: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpPerspective(img, mat, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def _camera_mask(mask: np.ndarray, mat: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    return cv2.warpPerspective(mask, mat, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=VOID)


def _inside(shape: tuple[int, int], mat: np.ndarray) -> np.ndarray:
    """Output pixels whose source lies in the frame (same sampling rule as the mask warp)."""
    h, w = shape
    ones = np.ones((h, w), np.uint8)
    return cv2.warpPerspective(ones, mat, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


# ----------------------------------------------------------------------------- step 5


def _paste_seamless(out: np.ndarray, comp: np.ndarray, lab_k: np.ndarray,
                    box: tuple[int, int, int, int]) -> None:
    """Poisson-blend ``comp`` (the feathered composite of the window) into ``out`` over the
    object (dilated by 2 pixels), in place."""
    y0, y1, x0, x1 = box
    region = cv2.dilate(lab_k.astype(np.uint8), _disk(2))
    if not region.any():
        return
    p = 3  # seamlessClone refuses a region touching the border: work on a padded copy
    dst = cv2.copyMakeBorder(out[y0:y1, x0:x1], p, p, p, p, cv2.BORDER_REFLECT_101)
    src = cv2.copyMakeBorder(comp, p, p, p, p, cv2.BORDER_REFLECT_101)
    m = cv2.copyMakeBorder(region * 255, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    bx, by, bw, bh = cv2.boundingRect(m)
    cloned = cv2.seamlessClone(src, dst, m, (bx + bw // 2, by + bh // 2), cv2.NORMAL_CLONE)
    out[y0:y1, x0:x1] = cloned[p:-p, p:-p]


def _render(image: np.ndarray, background: np.ndarray, layers: dict[int, _Layer],
            order: list[int], warps: dict[int, _ObjectWarp], cfg: LucidDreamConfig) -> np.ndarray:
    out = background.copy()
    for oid in order:
        wp, ly = warps[oid], layers[oid]
        if wp.box is None:
            continue
        y0, y1, x0, x1 = wp.box
        a = cv2.remap(ly.alpha, wp.map_x, wp.map_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        lab_k = _warp_label(ly, wp) == oid
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


def _compose_mask(bg_mask: np.ndarray, layers: dict[int, _Layer], order: list[int],
                  warps: dict[int, _ObjectWarp]) -> np.ndarray:
    out = bg_mask.copy()
    for oid in order:
        wp = warps[oid]
        if wp.box is None:
            continue
        y0, y1, x0, x1 = wp.box
        lab = _warp_label(layers[oid], wp)
        win = out[y0:y1, x0:x1]
        win[lab == VOID] = VOID
        win[lab == oid] = oid
    return out


# ----------------------------------------------------------------------------- API


def _pixels(frac: float, shape: tuple[int, int], minimum: int) -> int:
    return max(minimum, round(frac * max(shape)))


def lucid_dream(image: np.ndarray, mask: np.ndarray, seed: int,
                cfg: LucidDreamConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One lucid dream of ``image`` (uint8 ``[H, W, 3]`` RGB) and ``mask`` (uint8 ``[H, W]``:
    0 background, 1..254 objects, 255 void): a new ``(image, mask)`` of the same size and dtypes.
    Deterministic in ``(image, mask, seed, cfg)``. See the module docstring for the steps."""
    cfg = cfg or LucidDreamConfig()
    ids = _check_inputs(image, mask)
    image = np.ascontiguousarray(image)
    mask = np.ascontiguousarray(mask)
    shape = mask.shape
    rng = np.random.default_rng(seed)

    # 1. illumination (drawn first and once)
    lit = _illuminate(image, rng, cfg.illumination)

    if not cfg.moves_objects:
        # nothing moves relative to the scene: no split / merge needed
        out_img, out_mask = lit, mask.copy()
        rng.permutation(len(ids))           # the same draws as the first try below
        for _ in ids:
            _draw_motion(rng, cfg)
        cam = _sample_camera(rng, cfg, shape)
        if cam is not None:
            inside = _inside(shape, cam)
            out_img, out_mask = _camera_image(lit, cam), _camera_mask(mask, cam)
            out_mask[~inside] = VOID
        return out_img, out_mask

    # 2. foreground/background split
    objects = (mask >= 1) & (mask < VOID)
    feather_px = _pixels(cfg.feather, shape, 1)
    hole_px = max(_pixels(cfg.inpaint_dilate, shape, 2), feather_px + 1)
    hole = cv2.dilate(objects.astype(np.uint8), _disk(hole_px)).astype(bool)
    background = _inpaint_background(lit, hole, cfg)
    bg_mask = np.where(objects, np.uint8(0), mask)
    layers = {int(k): _make_layer(lit, background, mask, int(k), feather_px) for k in ids}
    areas = {int(k): int(np.count_nonzero(mask == k)) for k in ids}

    # 3.-4. object motion + camera, redrawn while some object is less than min_visible visible
    best = None
    for _ in range(cfg.max_tries):
        order = [int(ids[j]) for j in rng.permutation(len(ids))]
        draws = {int(k): _draw_motion(rng, cfg) for k in ids}
        warps = {k: _object_warp(draws[k], cfg, layers[k], shape) for k in draws}
        cam = _sample_camera(rng, cfg, shape)
        out_mask = _compose_mask(bg_mask, layers, order, warps)
        if cam is not None:
            out_mask = _camera_mask(out_mask, cam)
        counts = np.bincount(out_mask.ravel(), minlength=256)
        worst = min(counts[k] / areas[k] for k in areas)
        if best is None or worst > best[0]:
            best = (worst, order, warps, cam, out_mask)
        if worst >= cfg.min_visible:
            break
    _, order, warps, cam, out_mask = best

    # 5. merge (then the camera of step 4 on the merged frame)
    merged = _render(lit, background, layers, order, warps, cfg)
    if cam is None:
        return merged, out_mask
    inside = _inside(shape, cam)
    out_img = _camera_image(merged, cam)
    outside = ~inside
    if outside.any():
        out_img[outside] = _camera_image(background, cam)[outside]
    out_mask[outside] = VOID
    return out_img, out_mask


def lucid_dream_pairs(image: np.ndarray, mask: np.ndarray, n: int, seed: int,
                      cfg: LucidDreamConfig | None = None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` dreams; dream ``i`` is ``lucid_dream(image, mask, dream_seed(seed, i), cfg)``."""
    _check_inputs(image, mask)
    for i in range(n):
        yield lucid_dream(image, mask, dream_seed(seed, i), cfg)


class LucidDreamDataset(torch.utils.data.Dataset):
    """``n`` lucid dreams of one annotated frame, as a map-style dataset.

    ``ds[i]`` -> ``(image uint8 [3, H, W], mask uint8 [H, W])`` tensors, made on demand and
    deterministic in ``(seed, i)`` (the same as :func:`lucid_dream_pairs`); ``size=(H, W)``
    resizes the result (image area-averaged when shrinking, bilinear when enlarging; mask
    nearest neighbour)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, n: int, seed: int = 0,
                 cfg: LucidDreamConfig | None = None, size: tuple[int, int] | None = None):
        _check_inputs(image, mask)
        if n < 0:
            raise ValueError(f"LucidDreamDataset: n must be >= 0, got {n}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"LucidDreamDataset: size must be (H, W) >= 1, got {size}")
        self.image, self.mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        self.n, self.seed, self.cfg = int(n), int(seed), cfg or LucidDreamConfig()
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"LucidDreamDataset index {i} out of range [0, {self.n})")
        img, msk = lucid_dream(self.image, self.mask, dream_seed(self.seed, i), self.cfg)
        if self.size is not None and self.size != msk.shape:
            h, w = self.size
            shrink = h * w < msk.size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink
                             else cv2.INTER_LINEAR)
            msk = cv2.resize(msk, (w, h), interpolation=cv2.INTER_NEAREST)
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(msk)))


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

