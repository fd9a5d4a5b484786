"""The scene renderer: procedural textured backgrounds and textured objects that move, scale,
rotate and occlude one another; each frame with its visible (and amodal) object masks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


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


def _background(rng: np.random.Generator, height: int, width: int, m: int,
                palette: np.ndarray | None = None) -> np.ndarray:
    """A textured (height, width, 3) float32 canvas in [0, 1]; m = min frame side (sets scale).
    ``palette`` (k, 3): colours the objects wear; the colour field mixes them in and static
    clutter patches wear them, so that colour alone does not tell objects from background."""
    # large-scale colour field: a few blobs of low-saturation colours around one hue
    hue = rng.random()
    gh = max(2, int(round(height / m * 2.5)) + 1)
    gw = max(2, int(round(width / m * 2.5)) + 1)
    cols = np.stack([_hsv_to_rgb((hue + rng.normal(0, 0.08)) % 1.0, rng.uniform(0.1, 0.45),
                                 rng.uniform(0.3, 0.85)) for _ in range(gh * gw)])
    if palette is not None:
        mixed = rng.random(gh * gw) < 0.4
        picks = palette[rng.integers(len(palette), size=gh * gw)] * rng.uniform(0.7, 1.0,
                                                                               (gh * gw, 1))
        cols = np.where(mixed[:, None], picks, cols).astype(np.float32)
    img = _smooth_upsample(cols.reshape(gh, gw, 3), height, width)
    if palette is not None:
        img = _clutter(rng, img, m, palette)
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


def _clutter(rng: np.random.Generator, img: np.ndarray, m: int, palette: np.ndarray) -> np.ndarray:
    """Static blotches in the palette's colours painted into the canvas: unshaded, unpatterned,
    soft-edged, about object-sized (the background things a segmenter must learn to ignore)."""
    height, width = img.shape[:2]
    yy = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(width, dtype=np.float32)[None, :] + 0.5
    n = int(round(rng.uniform(0.6, 1.2) * height * width / (m * m) * 4))
    for _ in range(n):
        col = palette[rng.integers(len(palette))] * rng.uniform(0.75, 1.05)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = m * rng.uniform(0.08, 0.22)
        a, ang = float(np.exp(rng.uniform(-0.6, 0.6))), rng.uniform(0, math.pi)
        c, s = math.cos(ang), math.sin(ang)
        u = ((xx - cx) * c + (yy - cy) * s) / (r / math.sqrt(a))
        v = (-(xx - cx) * s + (yy - cy) * c) / (r * math.sqrt(a))
        th = np.arctan2(v, u)
        edge = 1.0 + sum(rng.uniform(0.05, 0.2) * np.cos(k * th + rng.uniform(0, 2 * math.pi))
                         for k in (2, 3))
        alpha = np.clip((edge - np.hypot(u, v)) * r / 1.5, 0.0, 1.0)[..., None]
        lum = img.mean(axis=2, keepdims=True) / max(float(img.mean()), 1e-6)
        img = img * (1 - alpha) + np.clip(col * (0.8 + 0.2 * lum), 0, 1) * alpha
    return img.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Objects and scenes
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Look:
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
    motion: float = 1.0  # path amplitude factor (a kind's way of moving)
    spin: float = 0.0  # rotation speed, rad/frame (instances add a little of their own)


def random_look(rng: np.random.Generator) -> Look:
    shape = ("ellipse", "blob", "polygon")[rng.integers(3)]
    k = 3
    harmonics = np.stack([np.arange(2, 2 + k, dtype=np.float64),
                          rng.uniform(0.03, 0.1, k), rng.uniform(0, 2 * math.pi, k)], axis=1)
    hue = rng.random()
    c1 = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    c2 = _hsv_to_rgb((hue + rng.uniform(0.15, 0.5)) % 1.0, rng.uniform(0.4, 1.0),
                     rng.uniform(0.2, 0.9))
    la = rng.uniform(0, 2 * math.pi)
    return Look(shape=shape, aspect=float(np.exp(rng.uniform(-0.5, 0.5))),
                 sides=int(rng.integers(3, 8)), harmonics=harmonics,
                 wobble=rng.uniform(-0.25, 0.25, k), c1=c1, c2=c2,
                 pattern=("stripes", "checker", "rings", "spots")[rng.integers(4)],
                 freq=float(rng.uniform(1.5, 4.0)), pattern_angle=float(rng.uniform(0, math.pi)),
                 spots=rng.random((8, 8)).astype(np.float32),
                 light=(0.15 * math.cos(la), 0.15 * math.sin(la)),
                 motion=float(rng.uniform(0.5, 1.6)), spin=float(rng.uniform(-0.06, 0.06)))


def _jitter_look(rng: np.random.Generator, look: Look) -> Look:
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
    look: Look
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


def make_scene(rng: np.random.Generator, size: tuple[int, int], n_frames: int, labels: list[int],
                *, radius: tuple[float, float] = (0.14, 0.26),
                centre: tuple[float, float] = (0.3, 0.7),
                distractor_scale: float = 1.0, cross: bool = True, camera: float = 1.0,
                looks: list[Look | None] | None = None, behind: list[int] | None = None,
                min_visible: float = 0.3, palette: np.ndarray | None = None) -> Scene:
    """A random scene. ``labels`` has one entry per object in paint order (0 = distractor).

    cross:  every object after the first passes in front of an earlier one (occlusion).
    looks:  optional per-object class look (jittered per instance) instead of a random one.
    behind: indices of objects to paint first (e.g. distractors kept behind the labelled ones).
    palette: (k, 3) colours the background shares with the objects (see ``_background``).
    Frame 0 is re-drawn (up to 20 times) until every labelled object shows >= ``min_visible`` of
    its area inside the frame."""
    w, h = size
    m = min(w, h)
    pad = (int(math.ceil(0.06 * w)) + 1, int(math.ceil(0.06 * h)) + 1)
    background = _background(rng, h + 2 * pad[1], w + 2 * pad[0], m, palette)
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
            look = _jitter_look(rng, base) if base is not None else random_look(rng)
            rad = m * rng.uniform(*radius) * (distractor_scale if lab == 0 else 1.0)
            ob = _Object(
                look=look, radius=float(rad),
                q0=np.array([rng.uniform(*centre) * w, rng.uniform(*centre) * h]),
                amp=look.motion * np.array([rng.uniform(0.04, 0.14) * w,
                                            rng.uniform(0.03, 0.12) * h]),
                period=rng.uniform(16.0, 48.0, 2), phase=rng.uniform(0, 2 * math.pi, 2),
                scale_amp=float(rng.uniform(0.05, 0.18)), scale_period=float(rng.uniform(10, 30)),
                scale_phase=float(rng.uniform(0, 2 * math.pi)),
                aspect_amp=float(rng.uniform(0.03, 0.15)), aspect_period=float(rng.uniform(8, 24)),
                aspect_phase=float(rng.uniform(0, 2 * math.pi)),
                rot0=float(rng.uniform(0, 2 * math.pi)),
                rot_speed=look.spin + float(rng.uniform(-0.03, 0.03)),
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
