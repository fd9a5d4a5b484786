"""Small synthetic datasets written in the official on-disk layouts of ``docs/layouts.md``.

The content is meant to be learnable, not noise: procedural textured backgrounds (smooth colour
noise, gradients, stripes) larger than the frame so that the camera can pan; several textured
objects (ellipses, wobbling blobs, rounded polygons) that move along smooth paths, change scale and
aspect, rotate, and occlude one another in depth order. Every mask is computed from the same
per-pixel coverage the image was painted with, so masks are pixel-consistent with the frames and
show only the *visible* part of each object.

The files carry the releases' quirks (docs/layouts.md): ILSVRC VID's unprefixed list files and
upper-case ``.JPEG`` frames, DAVIS-2016's one grey + alpha (LA) annotation, DAVIS-2017's void
(255) along object borders, VOC's void boundary band, YouTube-Objects' lossy JPEG labels.

Writing is deterministic: the same :class:`SyntheticSpec` gives byte-identical files (fixed JPEG
quality, no timestamps, sorted iteration); a different seed gives different content.

    >>> from pipeline.data.synthetic import SyntheticSpec, write_all
    >>> roots = write_all("/tmp/synth", SyntheticSpec(size=(128, 72)))
    >>> roots["davis2016"]          # pass this as --src to launch/preprocess.py

Write into an empty folder: files of an earlier, larger run are not deleted (the list files are
rewritten, so list-driven readers ignore them, but MSRA10K has no list file).

:func:`scene_for` rebuilds the exact :class:`Scene` behind a written video sequence; its
:meth:`Scene.render` also returns each object's unoccluded (amodal) mask, for tests.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zlib
from pathlib import Path

import numpy as np

from pipeline.data.palette import davis_palette
from PIL import Image

DATASETS = ("davis2016", "davis2017", "msra10k", "voc2012", "ilsvrc_vid", "youtube_objects")
PRESETS = {"tiny": (128, 72), "full": (854, 480)}  # (width, height)

YTO_CLASSES = ("aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike",
               "train")

# ImageNet VID's 30 classes (WordNet ids, in the order of ImageSets/VID/train_<k>.txt, k = 1..30).
VID_WNIDS = (
    "n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116", "n02958343",
    "n02402425", "n02084071", "n02121808", "n02503517", "n02118333", "n02510455", "n02342885",
    "n02374451", "n02129165", "n01674464", "n02484322", "n03790512", "n02324045", "n02509815",
    "n02411705", "n01726692", "n02355227", "n02129604", "n04468005", "n01662784", "n04530566",
    "n02062744", "n02391049",
)

DAVIS_ATTRIBUTES = ("AC", "BC", "CS", "DB", "DEF", "EA", "FM", "HO", "IO", "LR", "MB", "OCC",
                    "OV", "ROT", "SC", "SV")

# DAVIS-style sequence names: lowercase words joined by dashes (no digits, no dots).
_NOUNS = ("bear", "boat", "bus", "camel", "car", "cow", "dog", "goat", "horse", "kite", "lion",
          "parrot", "swan", "tram", "tractor", "rhino", "scooter", "surfer", "skater", "drone",
          "mallard", "pony", "yacht", "bike", "hiker", "crane", "fox", "seal")
_MODIFIERS = ("jump", "turn", "walk", "shadow", "race", "drift", "dance", "flip", "gate", "run",
              "loop", "park", "roundabout", "chase", "bumps", "trees", "lake", "street")


# ------------------------------------------------------------------------------------------------
# Spec
# ------------------------------------------------------------------------------------------------
def parse_size(size) -> tuple[int, int]:
    """``"tiny"``, ``"full"``, ``"WxH"`` or a ``(width, height)`` pair -> ``(width, height)``."""
    if isinstance(size, str):
        key = size.strip().lower()
        if key in PRESETS:
            return PRESETS[key]
        parts = key.split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size must be one of {sorted(PRESETS)} or WxH (e.g. 854x480), "
                             f"got {size!r}")
        w, h = (int(p) for p in parts)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < 16 or h < 16:
        raise ValueError(f"size must be at least 16x16, got {w}x{h}")
    return w, h


@dataclasses.dataclass
class SyntheticSpec:
    """What to write. Counts are per split for the video sets (``n_sequences``) and per split for
    the image sets (``n_images``); ``n_objects`` is the (min, max) number of objects per scene."""

    size: tuple[int, int] = (128, 72)  # (width, height); "tiny" / "full" / "WxH" accepted too
    n_sequences: int = 3
    n_frames: int = 8  # nominal; sequences vary by up to +-2 frames
    n_images: int = 6
    n_objects: tuple[int, int] = (1, 3)
    seed: int = 0
    label_every: int = 5  # youtube_objects: every label_every-th frame (from frame 1) has a mask
    jpeg_quality: int = 90
    test_dev_sequences: int = 0  # davis2017: extra test-dev sequences annotated on frame 0 only

    def __post_init__(self) -> None:
        self.size = parse_size(self.size)
        lo, hi = (int(v) for v in self.n_objects)
        if not 1 <= lo <= hi <= 50:
            raise ValueError(f"n_objects must be (min, max) with 1 <= min <= max <= 50, "
                             f"got {self.n_objects!r}")
        self.n_objects = (lo, hi)
        for field in ("n_sequences", "n_frames", "n_images", "label_every"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
            setattr(self, field, int(getattr(self, field)))
        if int(self.test_dev_sequences) < 0:
            raise ValueError("test_dev_sequences must be >= 0")
        self.test_dev_sequences = int(self.test_dev_sequences)
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        self.jpeg_quality = int(self.jpeg_quality)
        self.seed = int(self.seed)


def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across runs/platforms)."""
    s = seed % (1 << 64)
    entropy = [s & 0xFFFFFFFF, s >> 32] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _frame_counts(n_frames: int, n: int) -> list[int]:
    """Per-sequence frame counts: n_frames, +2, -1, +1, -2, ... (never below min(n_frames, 2))."""
    deltas = (0, 2, -1, 1, -2)
    floor = min(n_frames, 2)
    return [max(floor, n_frames + deltas[i % len(deltas)]) for i in range(n)]


# ------------------------------------------------------------------------------------------------
# Procedural textures
# ------------------------------------------------------------------------------------------------
def _smooth_upsample(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Separable uniform cubic B-spline interpolation of a (gh, gw, C) grid to (out_h, out_w, C):
    smooth (no visible cell structure), vectorised."""
    def axis(n_in: int, n_out: int):
        pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float64)
        i0 = np.minimum(np.floor(pos).astype(np.int64), n_in - 2)
        f = pos - i0
        w = np.stack([(1 - f) ** 3, 3 * f ** 3 - 6 * f ** 2 + 4,
                      -3 * f ** 3 + 3 * f ** 2 + 3 * f + 1, f ** 3]) / 6.0
        return i0, w.astype(np.float32)  # taps i0-1 .. i0+2 of the edge-padded grid

    g = np.pad(grid, ((1, 2), (1, 2), (0, 0)), mode="edge")
    y0, wy = axis(grid.shape[0], out_h)
    x0, wx = axis(grid.shape[1], out_w)
    rows = sum(g[y0 + k] * wy[k][:, None, None] for k in range(4))
    return sum(rows[:, x0 + k] * wx[k][None, :, None] for k in range(4))


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i],
                    dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int, m: int) -> np.ndarray:
    """A textured (height, width, 3) float32 canvas in [0, 1]; m = min frame side (sets scale)."""
    # large-scale colour field: a few blobs of low-saturation colours around one hue
    hue = rng.random()
    gh = max(2, int(round(height / m * 2.5)) + 1)
    gw = max(2, int(round(width / m * 2.5)) + 1)
    cols = np.stack([_hsv_to_rgb((hue + rng.normal(0, 0.08)) % 1.0, rng.uniform(0.1, 0.45),
                                 rng.uniform(0.3, 0.85)) for _ in range(gh * gw)])
    img = _smooth_upsample(cols.reshape(gh, gw, 3), height, width)
    # finer luminance detail, two octaves
    for cells, amp in ((rng.uniform(5.0, 10.0), 0.14), (rng.uniform(18.0, 30.0), 0.07)):
        cell = max(2.0, m / cells)
        fh, fw = int(height / cell) + 2, int(width / cell) + 2
        detail = _smooth_upsample(rng.random((fh, fw, 1), dtype=np.float32), height, width)
        detail = (detail - detail.mean()) / (float(detail.std()) + 1e-6)
        img = img * (1.0 + amp * detail)
    # a structured pattern: stripes or a gradient
    yy = np.arange(height, dtype=np.float32)[:, None] / m
    xx = np.arange(width, dtype=np.float32)[None, :] / m
    ang = rng.uniform(0, math.pi)
    proj = xx * math.cos(ang) + yy * math.sin(ang)
    kind = rng.integers(3)
    if kind == 0:  # stripes
        period = rng.uniform(0.12, 0.35)
        img = img * (1.0 + rng.uniform(0.08, 0.2) * np.sin(2 * math.pi * proj / period))[..., None]
    elif kind == 1:  # linear gradient
        img = img * (0.75 + 0.5 * (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6))[..., None]
    else:  # checker floor
        period = rng.uniform(0.15, 0.4)
        q = np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period)
        img = img * (1.0 + 0.1 * np.tanh(4 * q))[..., None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Objects and scenes
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Look:
    shape: str  # ellipse | blob | polygon
    aspect: float  # base height/width ratio
    sides: int
    harmonics: np.ndarray  # (k, 3): order, amplitude, phase (blob outline)
    wobble: np.ndarray  # (k,) phase speed of each harmonic (non-rigid deformation), rad/frame
    c1: np.ndarray
    c2: np.ndarray
    pattern: str  # stripes | checker | rings | spots
    freq: float
    pattern_angle: float
    spots: np.ndarray  # (8, 8) values in [0, 1]
    light: tuple[float, float]


def _random_look(rng: np.random.Generator) -> _Look:
    shape = ("ellipse", "blob", "polygon")[rng.integers(3)]
    k = 3
    harmonics = np.stack([np.arange(2, 2 + k, dtype=np.float64),
                          rng.uniform(0.03, 0.1, k), rng.uniform(0, 2 * math.pi, k)], axis=1)
    hue = rng.random()
    c1 = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    c2 = _hsv_to_rgb((hue + rng.uniform(0.15, 0.5)) % 1.0, rng.uniform(0.4, 1.0),
                     rng.uniform(0.2, 0.9))
    la = rng.uniform(0, 2 * math.pi)
    return _Look(shape=shape, aspect=float(np.exp(rng.uniform(-0.5, 0.5))),
                 sides=int(rng.integers(3, 8)), harmonics=harmonics,
                 wobble=rng.uniform(-0.25, 0.25, k), c1=c1, c2=c2,
                 pattern=("stripes", "checker", "rings", "spots")[rng.integers(4)],
                 freq=float(rng.uniform(1.5, 4.0)), pattern_angle=float(rng.uniform(0, math.pi)),
                 spots=rng.random((8, 8)).astype(np.float32),
                 light=(0.15 * math.cos(la), 0.15 * math.sin(la)))


def _jitter_look(rng: np.random.Generator, look: _Look) -> _Look:
    """An instance of a class look: same shape family and palette, slightly varied."""
    def jc(c):
        c = c * rng.uniform(0.85, 1.15) + rng.normal(0, 0.03, 3)
        return np.clip(c, 0, 1).astype(np.float32)

    harmonics = look.harmonics.copy()
    harmonics[:, 2] = rng.uniform(0, 2 * math.pi, len(harmonics))
    return dataclasses.replace(look, aspect=look.aspect * float(np.exp(rng.uniform(-0.15, 0.15))),
                               c1=jc(look.c1), c2=jc(look.c2), harmonics=harmonics,
                               pattern_angle=float(rng.uniform(0, math.pi)))


@dataclasses.dataclass
class _Object:
    look: _Look
    radius: float  # px, geometric mean of the two semi-axes
    q0: np.ndarray  # (2,) world position at t = 0, image coordinates of the t=0 camera
    amp: np.ndarray  # (2,) sinusoidal path amplitude, px
    period: np.ndarray  # (2,) frames
    phase: np.ndarray  # (2,)
    scale_amp: float
    scale_period: float
    scale_phase: float
    aspect_amp: float
    aspect_period: float
    aspect_phase: float
    rot0: float
    rot_speed: float
    follows: int = -1  # index of the object this one passes in front of/behind (-1: none)
    cross_dir: np.ndarray | None = None
    cross_dist: float = 0.0
    cross_t: float = 0.0
    cross_h: float = 1.0
    cross_side: np.ndarray | None = None

    def extent(self) -> float:
        """An upper bound of the distance from the centre to the outline, px."""
        s = 1.0 + self.scale_amp
        a_hi = math.sqrt(self.look.aspect * (1.0 + self.aspect_amp))
        a_lo = math.sqrt(self.look.aspect * (1.0 - self.aspect_amp))
        bound = 1.0 + float(self.look.harmonics[:, 1].sum()) if self.look.shape == "blob" else 1.0
        return self.radius * s * max(a_hi, 1.0 / a_lo) * bound

    def world(self, t: float) -> np.ndarray:
        return self.q0 + self.amp * np.sin(2 * math.pi * t / self.period + self.phase)

    def outline(self, th: np.ndarray, t: float) -> np.ndarray:
        """Outline radius (unit-circle units) as a function of angle."""
        lk = self.look
        if lk.shape == "blob":
            r = np.ones_like(th)
            for (order, a, ph), w in zip(lk.harmonics, lk.wobble):
                r = r + a * np.cos(order * th + ph + w * t)
            return r
        if lk.shape == "polygon":
            n = lk.sides
            seg = 2 * math.pi / n
            poly = math.cos(math.pi / n) / np.cos(np.mod(th, seg) - math.pi / n)  # 1 at vertices
            return 0.8 * poly + 0.2  # softened towards a circle, still <= 1
        return np.ones_like(th)

    def texture(self, u: np.ndarray, v: np.ndarray, rn: np.ndarray) -> np.ndarray:
        lk = self.look
        if lk.pattern == "stripes":
            p = 0.5 + 0.5 * np.sin(2 * math.pi * lk.freq * (u * math.cos(lk.pattern_angle)
                                                             + v * math.sin(lk.pattern_angle)))
        elif lk.pattern == "checker":
            q = np.sin(math.pi * lk.freq * u) * np.sin(math.pi * lk.freq * v)
            p = 0.5 + 0.5 * np.tanh(3 * q)
        elif lk.pattern == "rings":
            p = 0.5 + 0.5 * np.sin(2 * math.pi * lk.freq * np.hypot(u, v))
        else:  # spots: bilinear lookup of a small random grid in object coordinates
            g = lk.spots
            gx = np.clip((u + 1.4) / 2.8 * 7.0, 0, 6.999)
            gy = np.clip((v + 1.4) / 2.8 * 7.0, 0, 6.999)
            x0, y0 = gx.astype(np.int64), gy.astype(np.int64)
            fx, fy = gx - x0, gy - y0
            p = (g[y0, x0] * (1 - fx) * (1 - fy) + g[y0, x0 + 1] * fx * (1 - fy)
                 + g[y0 + 1, x0] * (1 - fx) * fy + g[y0 + 1, x0 + 1] * fx * fy)
            p = np.clip((p - 0.5) * 2.5 + 0.5, 0, 1)
        p = p[..., None].astype(np.float32)
        col = lk.c1 * (1 - p) + lk.c2 * p
        shade = 1.0 - 0.35 * rn ** 2 + lk.light[0] * u + lk.light[1] * v
        return col * shade[..., None].astype(np.float32)


@dataclasses.dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8
    owner: np.ndarray  # (H, W) uint8: 0 background, i + 1 where objects[i] is the visible one
    labels: np.ndarray  # (H, W) uint8: the scene's label of the visible object (0: none/unlabelled)
    amodal: list[np.ndarray] | None  # per object, its full (unoccluded) coverage (H, W) bool


class Scene:
    """A camera panning over a textured background with depth-ordered moving objects.

    ``objects`` are painted back to front; ``labels[i]`` is the annotation id of ``objects[i]``
    (0: unlabelled distractor). ``render(t)`` paints frame t."""

    def __init__(self, size: tuple[int, int], n_frames: int, background: np.ndarray,
                 pad: tuple[int, int], cam: np.ndarray, objects: list[_Object], labels: list[int]):
        self.size = size
        self.n_frames = n_frames
        self.background = background
        self.pad = pad
        self.cam = cam  # (n_frames, 2) integer crop offsets (x, y) into the background canvas
        self.objects = objects
        self.labels = [int(v) for v in labels]
        self._lut = np.zeros(len(objects) + 1, dtype=np.uint8)
        self._lut[1:] = self.labels

    @property
    def camera_motion(self) -> float:
        return float(np.abs(self.cam - self.cam[0]).max()) if len(self.cam) else 0.0

    def _world(self, i: int, t: int) -> np.ndarray:
        ob = self.objects[i]
        if ob.follows < 0:
            return ob.world(t)
        # passes across the object it follows (in front of or behind it, by paint order)
        if self.n_frames < 3:
            rel = ob.cross_dir * ob.cross_dist * 0.6
        else:
            rel = ob.cross_dir * ob.cross_dist * math.tanh((t - ob.cross_t) / ob.cross_h)
        return self._world(ob.follows, t) + rel + ob.cross_side

    def pose(self, i: int, t: int) -> tuple[np.ndarray, float, float, float]:
        """Image-space centre, semi-axes (sx, sy) and rotation of object i at frame t."""
        ob = self.objects[i]
        centre = self._world(i, t) - (self.cam[t] - self.cam[0])  # the camera pans everything
        s = ob.radius * (1.0 + ob.scale_amp * math.sin(2 * math.pi * t / ob.scale_period
                                                        + ob.scale_phase))
        a = math.sqrt(ob.look.aspect * (1.0 + ob.aspect_amp * math.sin(
            2 * math.pi * t / ob.aspect_period + ob.aspect_phase)))
        return centre, s / a, s * a, ob.rot0 + ob.rot_speed * t

    def render(self, t: int, amodal: bool = False) -> Rendered:
        w, h = self.size
        ox, oy = (int(v) for v in self.cam[t])
        img = self.background[oy:oy + h, ox:ox + w].copy()
        owner = np.zeros((h, w), dtype=np.uint8)
        full = [] if amodal else None
        for i, ob in enumerate(self.objects):
            (cx, cy), sx, sy, rot = self.pose(i, t)
            ext = ob.extent() + 1.0
            x0, x1 = max(0, int(math.floor(cx - ext))), min(w, int(math.ceil(cx + ext)) + 1)
            y0, y1 = max(0, int(math.floor(cy - ext))), min(h, int(math.ceil(cy + ext)) + 1)
            if full is not None:
                full.append(np.zeros((h, w), dtype=bool))
            if x0 >= x1 or y0 >= y1:
                continue
            dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
            dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
            c, s = math.cos(rot), math.sin(rot)
            u = (c * dx + s * dy) / sx
            v = (-s * dx + c * dy) / sy
            r = np.hypot(u, v)
            bound = ob.outline(np.arctan2(v, u), t)
            inside = r <= bound
            if not inside.any():
                continue
            rn = np.minimum(r / bound, 1.0)
            col = ob.texture(u, v, rn)
            patch = img[y0:y1, x0:x1]
            patch[inside] = col[inside]
            owner[y0:y1, x0:x1][inside] = i + 1
            if full is not None:
                full[i][y0:y1, x0:x1] = inside
        image = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return Rendered(image=image, owner=owner, labels=self._lut[owner], amodal=full)


def _make_scene(rng: np.random.Generator, size: tuple[int, int], n_frames: int, labels: list[int],
                *, radius: tuple[float, float] = (0.14, 0.26),
                centre: tuple[float, float] = (0.3, 0.7),
                distractor_scale: float = 1.0, cross: bool = True, camera: float = 1.0,
                looks: list[_Look | None] | None = None, behind: list[int] | None = None,
                min_visible: float = 0.3) -> Scene:
    """A random scene. ``labels`` has one entry per object in paint order (0 = distractor).

    cross:  every object after the first passes in front of an earlier one (occlusion).
    looks:  optional per-object class look (jittered per instance) instead of a random one.
    behind: indices of objects to paint first (e.g. distractors kept behind the labelled ones).
    Frame 0 is re-drawn (up to 20 times) until every labelled object shows >= ``min_visible`` of
    its area inside the frame."""
    w, h = size
    m = min(w, h)
    pad = (int(math.ceil(0.06 * w)) + 1, int(math.ceil(0.06 * h)) + 1)
    background = _background(rng, h + 2 * pad[1], w + 2 * pad[0], m)
    scene = None
    for _attempt in range(20):
        # camera: a smooth pan/shake within the canvas margin
        t = np.arange(n_frames, dtype=np.float64)
        strength = camera * rng.uniform(0.15, 1.0)
        cam = np.empty((n_frames, 2), dtype=np.int64)
        for ax in range(2):
            amp = strength * (pad[ax] - 1)
            period = rng.uniform(12.0, 40.0)
            cam[:, ax] = np.rint(pad[ax] + amp * np.sin(2 * math.pi * t / period
                                                        + rng.uniform(0, 2 * math.pi)))
        objects: list[_Object] = []
        for i, lab in enumerate(labels):
            base = looks[i] if looks is not None and looks[i] is not None else None
            look = _jitter_look(rng, base) if base is not None else _random_look(rng)
            rad = m * rng.uniform(*radius) * (distractor_scale if lab == 0 else 1.0)
            ob = _Object(
                look=look, radius=float(rad),
                q0=np.array([rng.uniform(*centre) * w, rng.uniform(*centre) * h]),
                amp=np.array([rng.uniform(0.04, 0.14) * w, rng.uniform(0.03, 0.12) * h]),
                period=rng.uniform(16.0, 48.0, 2), phase=rng.uniform(0, 2 * math.pi, 2),
                scale_amp=float(rng.uniform(0.05, 0.18)), scale_period=float(rng.uniform(10, 30)),
                scale_phase=float(rng.uniform(0, 2 * math.pi)),
                aspect_amp=float(rng.uniform(0.03, 0.15)), aspect_period=float(rng.uniform(8, 24)),
                aspect_phase=float(rng.uniform(0, 2 * math.pi)),
                rot0=float(rng.uniform(0, 2 * math.pi)), rot_speed=float(rng.uniform(-0.08, 0.08)),
            )
            objects.append(ob)
        if cross:
            for i in range(1, len(objects)):
                lead = int(rng.integers(0, i))
                ob, ld = objects[i], objects[lead]
                ob.radius = min(ob.radius, 0.8 * ld.radius)
                ang = rng.uniform(-math.pi / 6, math.pi / 6)  # mostly horizontal passes
                ang += math.pi if rng.random() < 0.5 else 0.0
                ob.follows = lead
                ob.cross_dir = np.array([math.cos(ang), math.sin(ang)])
                ob.cross_dist = 1.05 * (ob.extent() + ld.extent())
                ob.cross_t = float(rng.uniform(0.35, 0.65) * (n_frames - 1))
                ob.cross_h = float(np.clip(n_frames / 4.0, 1.5, 10.0))
                ob.cross_side = rng.uniform(-0.3, 0.3) * ld.radius * np.array(
                    [-math.sin(ang), math.cos(ang)])
        order = list(range(len(objects)))
        if behind:
            order = sorted(order, key=lambda k: (k not in behind, k))
            remap = {old: new for new, old in enumerate(order)}
            for ob in objects:
                if ob.follows >= 0:
                    ob.follows = remap[ob.follows]
        objs = [objects[k] for k in order]
        labs = [labels[k] for k in order]
        scene = Scene(size, n_frames, background, pad, cam, objs, labs)
        r0 = scene.render(0, amodal=True)
        ok = True
        for i, lab in enumerate(labs):
            if lab == 0:
                continue
            area = float(r0.amodal[i].sum())
            vis = float((r0.owner == i + 1).sum())
            if area < 4 or vis < min_visible * area:
                ok = False
                break
        if ok:
            return scene
    return scene


# ------------------------------------------------------------------------------------------------
# File writing helpers
# ------------------------------------------------------------------------------------------------
_PALETTE = davis_palette()
VOID = 255
LA_FRAME = 77  # the frame of the first train sequence stored as LA (bear/00077.png in the release)


def _save_jpeg(path: Path, arr: np.ndarray, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "RGB" if arr.ndim == 3 else "L"
    im = Image.frombytes(mode, (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    path.write_bytes(buf.getvalue())


def _save_png(path: Path, arr: np.ndarray, palette: bool, alpha: bool = False) -> None:
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
        im.putpalette(_PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii", newline="\n")


_EXTRA = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _davis_names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct DAVIS-style names ("bear", "car-shadow", ...), in a seed-dependent order."""
    pool = list(_NOUNS) + [f"{a}-{b}" for a in _NOUNS for b in _MODIFIERS]
    pool = [pool[k] for k in rng.permutation(len(pool))]
    names = list(pool)
    for word in _EXTRA:  # past the pool: the pool again with a suffix word
        if len(names) >= n:
            break
        names += [f"{p}-{word}" for p in pool]
    if len(names) < n:
        raise ValueError(f"at most {len(names)} synthetic DAVIS sequences, asked for {n}")
    return names[:n]


def _void_band(ids: np.ndarray, radius: int) -> np.ndarray:
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


# ------------------------------------------------------------------------------------------------
# Scenes per dataset (shared by the writers and scene_for)
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _SeqPlan:
    name: str  # official-style sequence name
    n_frames: int
    index: int  # generation index within its split (keys the scene's random stream)
    opts: dict  # labels / single (DAVIS), cls (VID, YouTube-Objects)


def _davis_splits(name: str, spec: SyntheticSpec) -> list[tuple[str, int]]:
    out = [("train", spec.n_sequences), ("val", spec.n_sequences)]
    if name == "davis2017" and spec.test_dev_sequences:
        out.append(("test-dev", spec.test_dev_sequences))
    return out


def _video_plan(name: str, spec: SyntheticSpec) -> dict[str, list[_SeqPlan]]:
    """split -> its sequences sorted by name, for a video dataset."""
    rng = _rng(spec.seed, name, "names")
    lo, hi = spec.n_objects
    plan: dict[str, list[_SeqPlan]] = {}
    if name in ("davis2016", "davis2017"):
        splits = _davis_splits(name, spec)
        total = sum(n for _, n in splits)
        names = _davis_names(rng, total)
        frames = _frame_counts(spec.n_frames, total)
        g = 0
        for s, (split, n) in enumerate(splits):
            seqs = []
            for j in range(n):
                srng = _rng(spec.seed, name, split, j, "objects")
                if name == "davis2016":
                    n_obj = int(srng.integers(lo, hi + 1))
                    opts = {"labels": [1] + [0] * (n_obj - 1), "single": True}
                else:
                    # alternate multi-object sequences (>= 2 objects that occlude each other) and
                    # single-object ones (the DAVIS-2016 subset)
                    multi = (j + s) % 2 == 0
                    n_obj = int(srng.integers(max(2, lo), max(2, hi) + 1)) if multi else 1
                    opts = {"labels": [int(v) + 1 for v in srng.permutation(n_obj)],
                            "single": not multi}
                seqs.append(_SeqPlan(names[g], frames[g], j, opts))
                g += 1
            plan[split] = sorted(seqs, key=lambda p: p.name)
        return plan
    if name == "ilsvrc_vid":
        n = spec.n_sequences
        frames = _frame_counts(spec.n_frames, 2 * n)
        train = []
        for j in range(n):
            folder = min(3, j * 4 // n)
            snippet = f"ILSVRC2015_VID_train_{folder:04d}/ILSVRC2015_train_{folder * 10000 + j:08d}"
            train.append(_SeqPlan(snippet, frames[j], j, {"cls": int(rng.integers(30))}))
        plan["train"] = train
        plan["val"] = [_SeqPlan(f"ILSVRC2015_val_{j:08d}", frames[n + j], j,
                                {"cls": int(rng.integers(30))}) for j in range(n)]
        return plan
    if name == "youtube_objects":
        frames = _frame_counts(spec.n_frames, spec.n_sequences)
        seqs = []
        for j in range(spec.n_sequences):  # two shots per video, videos cycling over the classes
            cls = YTO_CLASSES[(j // 2) % len(YTO_CLASSES)]
            video = f"{j // (2 * len(YTO_CLASSES)) + 1:04d}"
            seqs.append(_SeqPlan(f"{cls}/{video}/{j % 2 + 1:03d}", frames[j], j, {"cls": cls}))
        plan["test"] = sorted(seqs, key=lambda p: p.name)
        return plan
    raise ValueError(f"{name} is not a video dataset")


def _class_look(spec: SyntheticSpec, dataset: str, cls) -> _Look:
    """The shared look of a class (instances jitter it), so classes are recognisable."""
    return _random_look(_rng(spec.seed, dataset, "class", cls))


def _video_scene(name: str, spec: SyntheticSpec, split: str, sp: _SeqPlan) -> Scene:
    rng = _rng(spec.seed, name, split, sp.index, "scene")
    if name == "davis2016":
        # one annotated object; smaller unannotated distractors behind it or passing in front
        labels = sp.opts["labels"]
        behind = list(range(1, len(labels))) if rng.random() < 0.5 else None
        return _make_scene(rng, spec.size, sp.n_frames, labels, distractor_scale=0.55,
                           behind=behind)
    if name == "davis2017":
        return _make_scene(rng, spec.size, sp.n_frames, sp.opts["labels"])
    # VID / YouTube-Objects: one object of the sequence's class, distractors behind it
    lo, hi = spec.n_objects
    n_obj = int(rng.integers(lo, hi + 1))
    looks = [_class_look(spec, name, sp.opts["cls"])] + [None] * (n_obj - 1)
    return _make_scene(rng, spec.size, sp.n_frames, [1] + [0] * (n_obj - 1), looks=looks,
                       behind=list(range(1, n_obj)), distractor_scale=0.6, radius=(0.16, 0.28))


def scene_for(name: str, spec: SyntheticSpec | None, split: str, index: int) -> Scene:
    """The scene behind sequence ``index`` (in the sorted order of the written list files) of
    ``split`` of a video dataset; ``scene_for(...).render(t)`` reproduces frame t exactly."""
    spec = spec or SyntheticSpec()
    _check_name(name)
    plan = _video_plan(name, spec)
    if split not in plan:
        raise ValueError(f"{name} has splits {sorted(plan)}, not {split!r}")
    return _video_scene(name, spec, split, plan[split][index])


def sequence_names(name: str, spec: SyntheticSpec | None = None) -> dict[str, list[str]]:
    """split -> sorted sequence names a video dataset gets for ``spec``."""
    _check_name(name)
    return {k: [p.name for p in v] for k, v in _video_plan(name, spec or SyntheticSpec()).items()}


# ------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------
def _write_davis2016(root: Path, spec: SyntheticSpec) -> dict:
    plan = _video_plan("davis2016", spec)
    info = []
    lines: dict[str, list[str]] = {}
    n_frames = 0
    for split, seqs in plan.items():
        lines[split] = []
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = _video_scene("davis2016", spec, split, sp)
            occluded = False
            for t in range(nf):
                r = scene.render(t, amodal=True)
                stem = f"{t:05d}"
                _save_jpeg(root / "JPEGImages" / "480p" / seq / f"{stem}.jpg", r.image,
                           spec.jpeg_quality)
                # the release's quirk: one annotation of the train split is grey + alpha (LA)
                la = split == "train" and sp is seqs[0] and t == min(nf - 1, LA_FRAME)
                _save_png(root / "Annotations" / "480p" / seq / f"{stem}.png",
                          np.where(r.labels > 0, 255, 0).astype(np.uint8), palette=False,
                          alpha=la)
                prim = scene.labels.index(1)
                occluded |= bool((r.amodal[prim] & (r.owner != prim + 1)).any())
                lines[split].append(f"/JPEGImages/480p/{seq}/{stem}.jpg "
                                    f"/Annotations/480p/{seq}/{stem}.png ")
            n_frames += nf
            attrs = []
            if len(scene.objects) > 1:
                attrs.append("BC")
            if scene.camera_motion >= 2:
                attrs.append("CS")
            if scene.objects[scene.labels.index(1)].look.shape == "blob":
                attrs.append("DEF")
            if occluded:
                attrs.append("OCC")
            attrs.append("SV")
            info.append((seq, nf, "training" if split == "train" else "test", attrs, not occluded))
    for split in ("train", "val"):
        _write_lines(root / "ImageSets" / "480p" / f"{split}.txt", lines[split])
    trainval = sorted(lines["train"] + lines["val"],
                      key=lambda ln: (ln.split("/")[3], ln.split("/")[4]))
    _write_lines(root / "ImageSets" / "480p" / "trainval.txt", trainval)
    out = [f"attributes: [{', '.join(DAVIS_ATTRIBUTES)}]", "sets: [training,test]", "sequences:"]
    for seq, nf, set_, attrs, eval_t in sorted(info):
        out += [f"- attributes: [{', '.join(attrs)}]", f"  name: {seq}", f"  num_frames: {nf}",
                f"  set: {set_}", f"  eval_t: {eval_t}"]
    _write_lines(root / "Annotations" / "db_info.yml", out + [""])
    return {"sequences": len(info), "frames": n_frames, "masks": n_frames}


def _write_davis2017(root: Path, spec: SyntheticSpec) -> dict:
    plan = _video_plan("davis2017", spec)
    n_frames = n_masks = 0
    lists: dict[str, list[str]] = {}
    for split, seqs in plan.items():
        lists[split] = []
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = _video_scene("davis2017", spec, split, sp)
            for t in range(nf):
                r = scene.render(t)
                stem = f"{t:05d}"
                _save_jpeg(root / "JPEGImages" / "480p" / seq / f"{stem}.jpg", r.image,
                           spec.jpeg_quality)
                if split != "test-dev" or t == 0:
                    labels = r.labels
                    if not kw["single"]:  # void (255) along one object's border, as on
                        labels = _davis2017_void(labels, max(kw["labels"]))  # tennis' racket
                    _save_png(root / "Annotations" / "480p" / seq / f"{stem}.png", labels,
                              palette=True)
                    n_masks += 1
            n_frames += nf
            lists[split].append(seq)
            if kw["single"] and split in ("train", "val"):
                lists.setdefault(f"2016/{split}", []).append(seq)
    for split, seqs in lists.items():
        if not split.startswith("2016/"):
            _write_lines(root / "ImageSets" / "2017" / f"{split}.txt", sorted(seqs))
    for split in ("train", "val"):  # the DAVIS-2016 subset (single-object sequences)
        _write_lines(root / "ImageSets" / "2016" / f"{split}.txt",
                     sorted(lists.get(f"2016/{split}", [])))
    n_seq = sum(len(v) for k, v in lists.items() if not k.startswith("2016/"))
    return {"sequences": n_seq, "frames": n_frames, "masks": n_masks}


def _davis2017_void(labels: np.ndarray, obj: int) -> np.ndarray:
    """``labels`` with the background pixels touching object ``obj`` set to void (255): DAVIS-2017
    marks uncertain pixels along thin objects so (tennis: 225 void pixels along the racket). The
    object's own pixels are kept."""
    ring = _void_band(labels == obj, 1) & (labels == 0)
    if not ring.any() or not (labels == obj).any():
        return labels
    out = labels.copy()
    out[ring] = VOID
    return out


def _image_ids(name: str, n: int) -> dict[str, list[str]]:
    if name == "msra10k":
        return {"train": [str(4 + 17 * i) for i in range(n)]}
    ids = {"train": [], "val": []}
    for g in range(2 * n):
        ids["train" if g % 2 == 0 else "val"].append(f"{2007 + (g // 2) % 6}_{32 + 7 * g:06d}")
    return {k: sorted(v) for k, v in ids.items()}


def _write_msra10k(root: Path, spec: SyntheticSpec) -> dict:
    base = root / "MSRA10K_Imgs_GT" / "Imgs"
    lo, hi = spec.n_objects
    ids = _image_ids("msra10k", spec.n_images)["train"]
    for image_id in ids:
        rng = _rng(spec.seed, "msra10k", image_id)
        n_obj = int(rng.integers(lo, hi + 1))
        scene = _make_scene(rng, spec.size, 1, [1] + [0] * (n_obj - 1), radius=(0.24, 0.36),
                            centre=(0.4, 0.6), distractor_scale=0.45, behind=list(range(1, n_obj)),
                            camera=0.0, min_visible=0.9)
        r = scene.render(0)
        _save_jpeg(base / f"{image_id}.jpg", r.image, spec.jpeg_quality)
        _save_png(base / f"{image_id}.png", np.where(r.labels > 0, 255, 0).astype(np.uint8),
                  palette=False)
    return {"images": len(ids), "masks": len(ids)}


def _write_voc2012(root: Path, spec: SyntheticSpec) -> dict:
    base = root / "VOCdevkit" / "VOC2012"
    lo, hi = spec.n_objects
    band = max(1, int(round(min(spec.size) / 150)))
    ids = _image_ids("voc2012", spec.n_images)
    for split, split_ids in ids.items():
        for image_id in split_ids:
            rng = _rng(spec.seed, "voc2012", image_id)
            n_obj = int(rng.integers(lo, hi + 1))
            classes = [int(c) for c in rng.integers(1, 21, n_obj)]
            inst = [int(v) + 1 for v in rng.permutation(n_obj)]
            looks = [_class_look(spec, "voc2012", c) for c in classes]
            scene = _make_scene(rng, spec.size, 1, inst, looks=looks, radius=(0.12, 0.3),
                                centre=(0.25, 0.75), camera=0.0)
            r = scene.render(0)
            obj = r.labels.copy()
            cls_lut = np.zeros(n_obj + 1, dtype=np.uint8)
            for k in range(n_obj):
                cls_lut[inst[k]] = classes[k]
            cls = cls_lut[obj]
            void = _void_band(obj, band)
            obj[void] = 255
            cls[void] = 255
            _save_jpeg(base / "JPEGImages" / f"{image_id}.jpg", r.image, spec.jpeg_quality)
            _save_png(base / "SegmentationObject" / f"{image_id}.png", obj, palette=True)
            _save_png(base / "SegmentationClass" / f"{image_id}.png", cls, palette=True)
    sets = base / "ImageSets" / "Segmentation"
    _write_lines(sets / "train.txt", ids["train"])
    _write_lines(sets / "val.txt", ids["val"])
    _write_lines(sets / "trainval.txt", sorted(ids["train"] + ids["val"]))
    n = len(ids["train"]) + len(ids["val"])
    return {"images": n, "masks": n}


def _vid_xml(folder: str, stem: str, size: tuple[int, int], boxes: list[tuple]) -> str:
    w, h = size
    out = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{stem}</filename>",
           "\t<source>", "\t\t<database>ILSVRC_2015</database>", "\t</source>",
           "\t<size>", f"\t\t<width>{w}</width>", f"\t\t<height>{h}</height>", "\t</size>"]
    for trackid, wnid, (x0, y0, x1, y1), occ in boxes:
        out += ["\t<object>", f"\t\t<trackid>{trackid}</trackid>", f"\t\t<name>{wnid}</name>",
                "\t\t<bndbox>", f"\t\t\t<xmax>{x1}</xmax>", f"\t\t\t<xmin>{x0}</xmin>",
                f"\t\t\t<ymax>{y1}</ymax>", f"\t\t\t<ymin>{y0}</ymin>", "\t\t</bndbox>",
                f"\t\t<occluded>{occ}</occluded>", "\t\t<generated>0</generated>", "\t</object>"]
    return "\n".join(out + ["</annotation>", ""])


def _vid_box(vis: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(vis)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _write_ilsvrc_vid(root: Path, spec: SyntheticSpec) -> dict:
    """Frames ``%06d.JPEG``, one XML per frame (boxes ``xmax, xmin, ymax, ymin``), and the
    official lists: ``train_<k>.txt`` one line ``<folder>/<snippet> 1`` per snippet showing class
    k (a snippet with a second class's object is in both files), ``val.txt`` one line
    ``<snippet>/<frame> <running index>`` per frame; no ``train/`` / ``val/`` prefix."""
    plan = _video_plan("ilsvrc_vid", spec)
    n_frames = 0
    val_lines: list[str] = []
    by_class: dict[int, list[str]] = {}
    for split, seqs in plan.items():
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = _video_scene("ilsvrc_vid", spec, split, sp)
            prim = scene.labels.index(1)
            # the first distractor, when there is one, is an object of a second class
            classes = [(prim, kw["cls"])]
            if len(scene.objects) > 1:
                classes.append((1 if prim == 0 else 0, (kw["cls"] + 7) % 30))
            shown: set[int] = set()
            for t in range(nf):
                r = scene.render(t, amodal=True)
                stem = f"{t:06d}"
                _save_jpeg(root / "Data" / "VID" / split / seq / f"{stem}.JPEG", r.image,
                           spec.jpeg_quality)
                boxes = []
                for trackid, (obj, cls) in enumerate(classes):
                    vis = r.owner == obj + 1
                    if vis.any():
                        occ = int(bool((r.amodal[obj] & ~vis).any()))
                        boxes.append((trackid, VID_WNIDS[cls], _vid_box(vis), occ))
                        shown.add(cls)
                xml = root / "Annotations" / "VID" / split / seq / f"{stem}.xml"
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text(_vid_xml(seq, stem, spec.size, boxes), encoding="ascii")
                if split == "val":
                    val_lines.append(f"{seq}/{stem} {len(val_lines) + 1}")
            n_frames += nf
            if split == "train":
                for cls in sorted(shown | {kw["cls"]}):
                    by_class.setdefault(cls, []).append(seq)
    sets = root / "ImageSets" / "VID"
    for cls, snippets in sorted(by_class.items()):  # the release's 30 files are never empty
        _write_lines(sets / f"train_{cls + 1}.txt", [f"{seq} 1" for seq in sorted(snippets)])
    _write_lines(sets / "val.txt", val_lines)
    return {"sequences": sum(len(v) for v in plan.values()), "frames": n_frames, "masks": 0}


def _write_youtube_objects(root: Path, spec: SyntheticSpec) -> dict:
    plan = _video_plan("youtube_objects", spec)
    n_frames = n_masks = 0
    for sp in plan["test"]:
        seq, nf, kw = sp.name, sp.n_frames, sp.opts
        cls, video, shot = seq.split("/")
        scene = _video_scene("youtube_objects", spec, "test", sp)
        frames_dir = root / "v1" / cls / "data" / video / "shots" / shot
        labels_dir = root / "youtube_masks" / cls / "data" / video / "shots" / shot / "labels"
        for t in range(nf):
            r = scene.render(t)
            _save_jpeg(frames_dir / f"frame{t + 1:04d}.jpg", r.image, spec.jpeg_quality)
            if t % spec.label_every == 0:
                _save_jpeg(labels_dir / f"{t + 1:05d}.jpg",
                           np.where(r.labels > 0, 255, 0).astype(np.uint8), spec.jpeg_quality)
                n_masks += 1
        n_frames += nf
    return {"sequences": len(plan["test"]), "frames": n_frames, "masks": n_masks}


_WRITERS = {
    "davis2016": _write_davis2016,
    "davis2017": _write_davis2017,
    "msra10k": _write_msra10k,
    "voc2012": _write_voc2012,
    "ilsvrc_vid": _write_ilsvrc_vid,
    "youtube_objects": _write_youtube_objects,
}


def _check_name(name: str) -> None:
    if name not in _WRITERS:
        raise ValueError(f"unknown synthetic dataset {name!r}; valid names: {', '.join(DATASETS)}")


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def write_dataset_with_stats(name: str, root: str | Path,
                             spec: SyntheticSpec | None = None) -> tuple[Path, dict[str, int]]:
    """Like :func:`write_dataset`, also returning counts (sequences/images, frames, masks)."""
    _check_name(name)
    spec = spec or SyntheticSpec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stats = _WRITERS[name](root, spec)
    return root, stats


def write_dataset(name: str, root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write dataset ``name`` in its official layout under ``root``; returns the root to pass as
    ``--src``. Raises ValueError naming the valid names for an unknown ``name``."""
    return write_dataset_with_stats(name, root, spec)[0]


def write_all(root: str | Path, spec: SyntheticSpec | None = None) -> dict[str, Path]:
    """Every dataset of :data:`DATASETS`, one subfolder ``root/<name>`` each."""
    root = Path(root)
    return {name: write_dataset(name, root / name, spec) for name in DATASETS}
