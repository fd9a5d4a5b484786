"""Step 4 of a lucid dream: a camera view change (one homography for image and mask)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.train.lucid.config import LucidDreamConfig, VOID


# ----------------------------------------------------------------------------- step 4


def sample_camera(rng: np.random.Generator, cfg: LucidDreamConfig,
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


def camera_image(img: np.ndarray, mat: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpPerspective(img, mat, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def camera_mask(mask: np.ndarray, mat: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    return cv2.warpPerspective(mask, mat, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=VOID)


def camera_inside(shape: tuple[int, int], mat: np.ndarray) -> np.ndarray:
    """Output pixels whose source lies in the frame (same sampling rule as the mask warp)."""
    h, w = shape
    ones = np.ones((h, w), np.uint8)
    return cv2.warpPerspective(ones, mat, (w, h), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
