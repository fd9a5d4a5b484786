"""What a lucid dream does (:class:`LucidDreamConfig`: each of the five steps' ranges, blending,
visibility), the checks of its inputs, and the seed of dream ``i``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.core.config import ConfigError

VOID = 255
KEY = "online.lucid"                # where configs hold it (pipeline.inference.tuning.OnlineConfig)


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
        """Bad values are config errors naming the key as configs spell it (``online.lucid.*``)."""
        for name in ("illumination", "max_shift", "max_rotate_deg", "deform", "camera_shift",
                     "camera_rotate_deg", "camera_perspective", "inpaint_dilate", "feather",
                     "min_visible"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{KEY}.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "camera_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{KEY}.{name}: must be [lo, hi] with 0 < lo <= hi, "
                                  f"got {[lo, hi]}")
        if self.blend not in ("feather", "seamless"):
            raise ConfigError(f"{KEY}.blend: must be 'feather' or 'seamless', got {self.blend!r}")
        if self.inpaint_method not in ("telea", "ns"):
            raise ConfigError(f"{KEY}.inpaint_method: must be 'telea' or 'ns', "
                              f"got {self.inpaint_method!r}")
        for name, least in (("deform_points", 2), ("max_tries", 1), ("inpaint_max_side", 8)):
            if getattr(self, name) < least:
                raise ConfigError(f"{KEY}.{name}: must be >= {least}, got {getattr(self, name)}")

    @property
    def moves_objects(self) -> bool:
        return (self.max_shift > 0 or tuple(self.scale) != (1.0, 1.0) or self.max_rotate_deg > 0
                or self.deform > 0)


# ----------------------------------------------------------------------------- validation


def check_inputs(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
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
