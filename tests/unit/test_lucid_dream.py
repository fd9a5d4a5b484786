"""Lucid-dream augmentation (pipeline.train.lucid): valid pairs, masks that follow the moved
objects, determinism, steps that switch off, input errors, and a grid on real DAVIS data."""

from __future__ import annotations

import dataclasses
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.train.lucid import (
    LucidDreamConfig,
    LucidDreamDataset,
    dream_seed,
    example_grid,
    lucid_dream,
    lucid_dream_pairs,
    save_example_grid,
)

RED, GREEN, YELLOW = (255, 0, 0), (0, 255, 0), (255, 255, 0)
COLOURS = {1: RED, 2: GREEN, 3: YELLOW}
GREY = (128, 128, 128)

ALL_OFF = LucidDreamConfig(illumination=0.0, max_shift=0.0, scale=(1.0, 1.0), max_rotate_deg=0.0,
                           deform=0.0, camera_shift=0.0, camera_scale=(1.0, 1.0),
                           camera_rotate_deg=0.0, camera_perspective=0.0)


def scene(h: int = 96, w: int = 128, n_objects: int = 3, void: bool = True):
    """Flat-coloured objects (1 red ellipse, 2 green square, 3 yellow blob) on a textured
    blue-ish background, plus a grey void patch."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 30 + 25 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    img[..., 1] = 70 + 30 * np.sin((xx + yy) / 7.0)
    img[..., 2] = 190 + 40 * np.cos(xx / 9.0 - yy / 4.0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if void:
        mask[h - 14:h - 4, 4:24] = 255
        img[h - 14:h - 4, 4:24] = GREY
    mask[((yy - 0.35 * h) / (0.16 * h)) ** 2 + ((xx - 0.3 * w) / (0.14 * w)) ** 2 <= 1] = 1
    if n_objects >= 2:
        mask[int(0.45 * h):int(0.75 * h), int(0.55 * w):int(0.8 * w)] = 2
    if n_objects >= 3:
        r = np.hypot(yy - 0.7 * h, xx - 0.25 * w)
        ang = np.arctan2(yy - 0.7 * h, xx - 0.25 * w)
        mask[r <= 0.1 * h * (1 + 0.25 * np.sin(3 * ang))] = 3
    for k, c in COLOURS.items():
        img[mask == k] = c
    return img, mask


def near(img: np.ndarray, colour, tol: int = 40) -> np.ndarray:
    return (np.abs(img.astype(np.int16) - np.array(colour, np.int16)) <= tol).all(-1)


def shrink(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.erode(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def grow(m: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


# ----------------------------------------------------------------------------- valid pairs


@pytest.mark.parametrize("blend", ["feather", "seamless"])
def test_valid_pairs_and_ids(blend):
    img, mask = scene()
    cfg = LucidDreamConfig(blend=blend)
    present = {1: 0, 2: 0, 3: 0}
    n = 10
    for out, m in lucid_dream_pairs(img, mask, n, seed=3, cfg=cfg):
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert m.dtype == np.uint8 and m.shape == mask.shape
        assert set(np.unique(m).tolist()) <= {0, 1, 2, 3, 255}
        for k in present:
            present[k] += bool((m == k).any())
        assert not np.array_equal(out, img)
    assert all(v >= 0.8 * n for v in present.values()), present


def test_min_visible_keeps_objects():
    img, mask = scene()
    cfg = LucidDreamConfig(max_shift=0.3, min_visible=0.5)
    for out, m in lucid_dream_pairs(img, mask, 6, seed=11, cfg=cfg):
        for k in (1, 2, 3):
            assert (m == k).sum() >= 0.5 * (mask == k).sum()


@pytest.mark.parametrize("camera", [False, True])
def test_mask_follows_the_moved_objects(camera):
    """Flat colours: inside the eroded output mask of id k the image has object k's colour; away
    from every output object no pixel has an object's colour (the holes were inpainted)."""
    img, mask = scene()
    cfg = LucidDreamConfig(illumination=0.0, blend="feather", max_shift=0.15, deform=0.08)
    if not camera:
        cfg = dataclasses.replace(cfg, camera_shift=0.0, camera_scale=(1.0, 1.0),
                                  camera_rotate_deg=0.0, camera_perspective=0.0)
    moved = 0
    for out, m in lucid_dream_pairs(img, mask, 8, seed=5, cfg=cfg):
        any_obj = np.zeros(m.shape, bool)
        for k, colour in COLOURS.items():
            inner = shrink(m == k, 2)
            assert near(out[inner], colour).all(), f"id {k}: mask and image disagree"
            any_obj |= m == k
            moved += not np.array_equal(m == k, mask == k)
        away = ~grow(any_obj, 3) & (m != 255)
        for k, colour in COLOURS.items():
            ghost = near(out, colour, tol=60) & away
            assert ghost.sum() == 0, f"object {k}'s colour left outside its mask"
        if not camera:
            assert 255 in m                       # the void patch stays (it is not moved)
            assert (m[mask == 255] != 0).all()    # void never becomes background
    assert moved >= 20


def test_background_far_from_objects_untouched():
    """Only object motion on: pixels far from the objects (before and after) are the input."""
    img, mask = scene(void=False)
    cfg = dataclasses.replace(ALL_OFF, max_shift=0.1, scale=(0.9, 1.1), max_rotate_deg=10.0,
                              deform=0.05)
    out, m = lucid_dream(img, mask, 2, cfg)
    assert not np.array_equal(m, mask)
    assert 255 not in m
    far = ~grow(mask > 0, 6) & ~grow(m > 0, 6)
    assert far.mean() > 0.2
    np.testing.assert_array_equal(out[far], img[far])


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("blend", ["feather", "seamless"])
def test_deterministic_per_seed(blend):
    img, mask = scene()
    cfg = LucidDreamConfig(blend=blend)
    a = lucid_dream(img, mask, 7, cfg)
    b = lucid_dream(img.copy(), mask.copy(), 7, cfg)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    c = lucid_dream(img, mask, 8, cfg)
    assert a[0].tobytes() != c[0].tobytes()


def test_deterministic_across_opencv_threads():
    img, mask = scene(192, 256)
    n = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        a = lucid_dream(img, mask, 4)
        cv2.setNumThreads(max(2, n))
        b = lucid_dream(img, mask, 4)
    finally:
        cv2.setNumThreads(n)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()


def test_pairs_and_dataset_agree():
    img, mask = scene()
    pairs = list(lucid_dream_pairs(img, mask, 3, seed=9))
    assert len({p[0].tobytes() for p in pairs}) == 3
    for i, (im, m) in enumerate(pairs):
        ref = lucid_dream(img, mask, dream_seed(9, i))
        assert np.array_equal(ref[0], im) and np.array_equal(ref[1], m)
    ds = LucidDreamDataset(img, mask, n=3, seed=9)
    assert len(ds) == 3
    x, y = ds[1]
    assert x.dtype == torch.uint8 and x.shape == (3, 96, 128)
    assert y.dtype == torch.uint8 and y.shape == (96, 128)
    assert np.array_equal(x.permute(1, 2, 0).numpy(), pairs[1][0])
    assert np.array_equal(y.numpy(), pairs[1][1])
    with pytest.raises(IndexError):
        ds[3]
    small = LucidDreamDataset(img, mask, n=2, seed=9, size=(48, 64))
    xs, ys = small[1]
    assert xs.shape == (3, 48, 64) and ys.shape == (48, 64)
    assert set(torch.unique(ys).tolist()) <= {0, 1, 2, 3, 255}
    assert np.array_equal(ys.numpy(), cv2.resize(pairs[1][1], (64, 48),
                                                 interpolation=cv2.INTER_NEAREST))
    loader = torch.utils.data.DataLoader(small, batch_size=2)
    xb, yb = next(iter(loader))
    assert xb.shape == (2, 3, 48, 64) and yb.shape == (2, 48, 64)


# ----------------------------------------------------------------------------- switching off


def test_everything_off_is_identity():
    img, mask = scene()
    for seed in (0, 1, 2):
        out, m = lucid_dream(img, mask, seed, ALL_OFF)
        assert out.tobytes() == img.tobytes() and m.tobytes() == mask.tobytes()


def test_each_step_alone():
    img, mask = scene()
    # illumination only: the mask is untouched, the colours change
    out, m = lucid_dream(img, mask, 1, dataclasses.replace(ALL_OFF, illumination=0.3))
    assert np.array_equal(m, mask) and not np.array_equal(out, img)
    # camera only: objects move together with the background, the border becomes void
    cam = dataclasses.replace(ALL_OFF, camera_shift=0.1, camera_rotate_deg=5.0)
    out, m = lucid_dream(img, mask, 1, cam)
    assert not np.array_equal(m, mask) and 255 in m
    for k, colour in COLOURS.items():
        assert near(out[shrink(m == k, 2)], colour).all()
    # each object-motion parameter alone moves the objects
    for kw in ({"max_shift": 0.1}, {"scale": (0.8, 0.9)}, {"max_rotate_deg": 20.0},
               {"deform": 0.1}):
        out, m = lucid_dream(img, mask, 1, dataclasses.replace(ALL_OFF, **kw))
        assert not np.array_equal(m, mask), kw
        assert set(np.unique(m).tolist()) <= {0, 1, 2, 3, 255}


def test_steps_draw_the_same_numbers_when_others_are_off():
    """Switching the camera off does not change the objects' motion."""
    img, mask = scene(void=False)
    on = dataclasses.replace(ALL_OFF, max_shift=0.1, illumination=0.3)
    out_a, m_a = lucid_dream(img, mask, 3, on)
    out_b, m_b = lucid_dream(img, mask, 3, dataclasses.replace(on, camera_shift=0.0))
    assert np.array_equal(m_a, m_b) and np.array_equal(out_a, out_b)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make, match", [
    (lambda i, m: (i, m[:-1]), "differ in size"),
    (lambda i, m: (i.astype(np.float32), m), "image must be uint8"),
    (lambda i, m: (i, m.astype(np.int32)), "mask must be uint8"),
    (lambda i, m: (i[..., 0], m), r"\[H, W, 3\]"),
    (lambda i, m: (i, m[..., None]), r"mask must be \[H, W\]"),
    (lambda i, m: (i, np.zeros_like(m)), "no object"),
    (lambda i, m: (i, np.where(m > 0, 255, 0).astype(np.uint8)), "mask > 0"),
])
def test_bad_inputs(make, match):
    img, mask = scene()
    bad_img, bad_mask = make(img, mask)
    with pytest.raises(ValueError, match=match):
        lucid_dream(bad_img, bad_mask, 0)
    with pytest.raises(ValueError, match=match):
        LucidDreamDataset(bad_img, bad_mask, n=2)


def test_bad_config():
    with pytest.raises(ValueError, match="scale"):
        LucidDreamConfig(scale=(1.2, 1.0))
    with pytest.raises(ValueError, match="blend"):
        LucidDreamConfig(blend="poisson")
    with pytest.raises(ValueError, match="max_shift"):
        LucidDreamConfig(max_shift=-0.1)


# ----------------------------------------------------------------------------- grid, speed


def test_example_grid(tmp_path):
    img, mask = scene()
    grid = example_grid(img, mask, n=5, seed=0, cols=3)
    assert grid.dtype == np.uint8 and grid.shape == (2 * (96 + 4) + 4, 3 * (128 + 4) + 4, 3)
    p = save_example_grid(tmp_path / "g" / "grid.png", img, mask, n=2, seed=0)
    assert np.array_equal(np.asarray(Image.open(p)), example_grid(img, mask, n=2, seed=0))


# ----------------------------------------------------------------------------- real data


def test_real_davis_blackswan(real_davis, tmp_path):
    jpg = real_davis / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"
    png = real_davis / "Annotations" / "480p" / "blackswan" / "00000.png"
    if not (jpg.exists() and png.exists()):
        pytest.skip("blackswan frame 0 not in the DAVIS sample")
    img = np.asarray(Image.open(jpg).convert("RGB"))
    mask = (np.asarray(Image.open(png)) > 0).astype(np.uint8)   # DAVIS-2016: 0/255 -> ids
    area = int((mask == 1).sum())
    for out, m in lucid_dream_pairs(img, mask, 4, seed=0):
        assert out.shape == img.shape and m.shape == mask.shape
        assert 0.5 * area <= (m == 1).sum() <= 2 * area
    path = save_example_grid(tmp_path / "lucid_dream_blackswan.png", img, mask, n=4, seed=0,
                             cols=3, tile_max_side=427)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * (240 + 4) + 4, 3 * (427 + 4) + 4, 3)
    art = os.environ.get("STCNN_TEST_ARTIFACTS")
    if art:
        os.makedirs(art, exist_ok=True)
        shutil.copyfile(path, os.path.join(art, "lucid_dream_blackswan.png"))
