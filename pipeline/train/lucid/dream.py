"""A lucid dream: the five steps in order, from one annotated frame to a new (image, mask)
pair; and ``n`` of them with the per-sample seeds."""

from __future__ import annotations

from typing import Iterator

import cv2
import numpy as np

from pipeline.train.lucid.background import disk, illuminate, inpaint_background
from pipeline.train.lucid.camera import camera_image, camera_mask, camera_inside, sample_camera
from pipeline.train.lucid.compose import compose_mask, render
from pipeline.train.lucid.config import check_inputs, dream_seed, LucidDreamConfig, VOID
from pipeline.train.lucid.deform import draw_motion, make_layer, object_warp


# ----------------------------------------------------------------------------- API


def _pixels(frac: float, shape: tuple[int, int], minimum: int) -> int:
    return max(minimum, round(frac * max(shape)))


def lucid_dream(image: np.ndarray, mask: np.ndarray, seed: int,
                cfg: LucidDreamConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One lucid dream of ``image`` (uint8 ``[H, W, 3]`` RGB) and ``mask`` (uint8 ``[H, W]``:
    0 background, 1..254 objects, 255 void): a new ``(image, mask)`` of the same size and dtypes.
    Deterministic in ``(image, mask, seed, cfg)``. See the module docstring for the steps."""
    cfg = cfg or LucidDreamConfig()
    ids = check_inputs(image, mask)
    image = np.ascontiguousarray(image)
    mask = np.ascontiguousarray(mask)
    shape = mask.shape
    rng = np.random.default_rng(seed)

    # 1. illumination (drawn first and once)
    lit = illuminate(image, rng, cfg.illumination)

    if not cfg.moves_objects:
        # nothing moves relative to the scene: no split / merge needed
        out_img, out_mask = lit, mask.copy()
        rng.permutation(len(ids))           # the same draws as the first try below
        for _ in ids:
            draw_motion(rng, cfg)
        cam = sample_camera(rng, cfg, shape)
        if cam is not None:
            inside = camera_inside(shape, cam)
            out_img, out_mask = camera_image(lit, cam), camera_mask(mask, cam)
            out_mask[~inside] = VOID
        return out_img, out_mask

    # 2. foreground/background split
    objects = (mask >= 1) & (mask < VOID)
    feather_px = _pixels(cfg.feather, shape, 1)
    hole_px = max(_pixels(cfg.inpaint_dilate, shape, 2), feather_px + 1)
    hole = cv2.dilate(objects.astype(np.uint8), disk(hole_px)).astype(bool)
    background = inpaint_background(lit, hole, cfg)
    bg_mask = np.where(objects, np.uint8(0), mask)
    layers = {int(k): make_layer(lit, background, mask, int(k), feather_px) for k in ids}
    areas = {int(k): int(np.count_nonzero(mask == k)) for k in ids}

    # 3.-4. object motion + camera, redrawn while some object is less than min_visible visible
    best = None
    for _ in range(cfg.max_tries):
        order = [int(ids[j]) for j in rng.permutation(len(ids))]
        draws = {int(k): draw_motion(rng, cfg) for k in ids}
        warps = {k: object_warp(draws[k], cfg, layers[k], shape) for k in draws}
        cam = sample_camera(rng, cfg, shape)
        out_mask = compose_mask(bg_mask, layers, order, warps)
        if cam is not None:
            out_mask = camera_mask(out_mask, cam)
        counts = np.bincount(out_mask.ravel(), minlength=256)
        worst = min(counts[k] / areas[k] for k in areas)
        if best is None or worst > best[0]:
            best = (worst, order, warps, cam, out_mask)
        if worst >= cfg.min_visible:
            break
    _, order, warps, cam, out_mask = best

    # 5. merge (then the camera of step 4 on the merged frame)
    merged = render(lit, background, layers, order, warps, cfg)
    if cam is None:
        return merged, out_mask
    inside = camera_inside(shape, cam)
    out_img = camera_image(merged, cam)
    outside = ~inside
    if outside.any():
        out_img[outside] = camera_image(background, cam)[outside]
    out_mask[outside] = VOID
    return out_img, out_mask


def lucid_dream_pairs(image: np.ndarray, mask: np.ndarray, n: int, seed: int,
                      cfg: LucidDreamConfig | None = None
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``n`` dreams; dream ``i`` is ``lucid_dream(image, mask, dream_seed(seed, i), cfg)``."""
    check_inputs(image, mask)
    for i in range(n):
        yield lucid_dream(image, mask, dream_seed(seed, i), cfg)
