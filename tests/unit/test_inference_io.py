"""Inference I/O (``pipeline.inference``): DAVIS palette PNGs, overlays, videos, frame folders.

* Masks: indexed PNGs with the DAVIS palette round-trip ids 0..5 and 255; a 0/255 grayscale
  annotation reads as 0/1; colour, JPEG, truncated and missing files fail naming the file.
* Overlay: objects tinted towards their palette colour, background untouched without contour.
* Videos: a synthetic moving square through ``.mp4`` (OpenCV ``mp4v``), ``.avi`` and ``.gif``,
  read back with the right frame count and content; nothing but the target is left behind.
* Frame folders: natural order, size mismatch, empty folder.
* Real DAVIS sample (fixture ``real_davis``, skips otherwise): blackswan's first 5 frames and
  first annotation, overlay GIF.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.inference import (MaskIOError, davis_palette, object_ids, overlay, read_frames_dir,
                                read_mask_png, read_video, resize_ids, save_mask_png,
                                write_overlay_video, write_sequence_masks)
from pipeline.inference.masks import palette_rgb

W, H = 64, 48


def _cv2_can_write(suffix: str, fourcc: str, tmp: Path) -> bool:
    import cv2

    p = tmp / f"probe{suffix}"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*fourcc), 24.0, (W, H))
    ok = w.isOpened()
    if ok:
        w.write(np.zeros((H, W, 3), np.uint8))
    w.release()
    ok = ok and p.is_file() and p.stat().st_size > 0
    p.unlink(missing_ok=True)
    return ok


def square_clip(n=10, w=W, h=H, side=16):
    """n RGB frames of a white square moving right over a dark gradient, and its id masks."""
    frames, masks = [], []
    bg = np.zeros((h, w, 3), np.uint8)
    bg[..., 2] = np.linspace(20, 80, w, dtype=np.uint8)[None, :]
    for k in range(n):
        x, y = 2 + 4 * k, (h - side) // 2
        f = bg.copy()
        f[y:y + side, x:x + side] = 255
        m = np.zeros((h, w), np.uint8)
        m[y:y + side, x:x + side] = 1
        frames.append(f)
        masks.append(m)
    return frames, masks


def _centroid_x(img: np.ndarray) -> float:
    bright = img.mean(axis=-1) > 180
    return float(np.nonzero(bright)[1].mean())


def _leftovers(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def test_palette_matches_davis():
    pal = davis_palette()
    assert len(pal) == 768 and all(0 <= v <= 255 for v in pal)
    assert pal[0:3] == [0, 0, 0] and pal[3:6] == [128, 0, 0] and pal[6:9] == [0, 128, 0]
    assert pal[9:12] == [128, 128, 0] and pal[765:768] == [224, 224, 192]
    from pipeline.synthetic.files import PALETTE
    assert pal == PALETTE


def test_mask_png_round_trip(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    for k in range(1, 6):
        ids[:, (k - 1) * 10:(k - 1) * 10 + 8] = k
    ids[-4:, -4:] = 255
    p = save_mask_png(tmp_path / "a" / "b" / "00000.png", ids)
    assert p == tmp_path / "a" / "b" / "00000.png" and p.is_file()
    assert _leftovers(p.parent, p.name) == []
    with Image.open(p) as im:
        assert im.mode == "P" and im.format == "PNG"
        assert im.getpalette()[:768] == davis_palette()
        assert np.array_equal(np.asarray(im), ids)
    back = read_mask_png(p)
    assert back.dtype == np.uint8 and np.array_equal(back, ids)
    assert object_ids(back) == [1, 2, 3, 4, 5]
    # bool and int64 are accepted; out-of-range ids are not
    save_mask_png(tmp_path / "bool.png", ids > 0)
    assert np.array_equal(read_mask_png(tmp_path / "bool.png"), (ids > 0).astype(np.uint8))
    save_mask_png(tmp_path / "i64.png", ids.astype(np.int64))
    assert np.array_equal(read_mask_png(tmp_path / "i64.png"), ids)
    with pytest.raises(ValueError, match="0..255"):
        save_mask_png(tmp_path / "bad.png", np.full((4, 4), 300))
    with pytest.raises(ValueError, match="2-D"):
        save_mask_png(tmp_path / "bad.png", np.zeros((2, 4, 4), np.uint8))
    assert not (tmp_path / "bad.png").exists()


def test_read_mask_png_grayscale(tmp_path):
    binary = np.zeros((H, W), np.uint8)
    binary[10:20, 10:30] = 255
    Image.fromarray(binary, mode="L").save(tmp_path / "bin.png")
    got = read_mask_png(tmp_path / "bin.png")
    assert got.dtype == np.uint8 and set(np.unique(got)) == {0, 1}
    assert np.array_equal(got, (binary == 255).astype(np.uint8))
    ids = binary.copy()
    ids[:5, :5] = 2
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")  # other values: kept as ids
    assert np.array_equal(read_mask_png(tmp_path / "ids.png"), ids)
    # an indexed PNG is read as indices, whatever its palette says
    im = Image.fromarray(ids, mode="P")
    im.putpalette([255, 255, 255] * 256)
    im.save(tmp_path / "white.png")
    assert np.array_equal(read_mask_png(tmp_path / "white.png"), ids)


def test_read_mask_png_errors(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(rgb)
    with pytest.raises(MaskIOError, match="indexed \\(P\\) or grayscale PNG of object ids") as e:
        read_mask_png(rgb)
    assert str(rgb) in str(e.value) and "RGB" in str(e.value)

    good = save_mask_png(tmp_path / "good.png", np.ones((H, W), np.uint8))
    trunc = tmp_path / "trunc.png"
    data = good.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(MaskIOError, match="corrupt or truncated") as e:
        read_mask_png(trunc)
    assert str(trunc) in str(e.value)

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(MaskIOError, match="corrupt or truncated"):
        read_mask_png(junk)

    jpg = tmp_path / "mask.jpg"
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(jpg)
    with pytest.raises(MaskIOError, match="JPEG"):
        read_mask_png(jpg)

    with pytest.raises(MaskIOError, match="does not exist") as e:
        read_mask_png(tmp_path / "missing.png")
    assert "missing.png" in str(e.value)


def test_resize_ids_nearest():
    ids = np.zeros((H, W), np.uint8)
    ids[:, W // 2:] = 3
    big = resize_ids(ids, (2 * H, 2 * W))
    assert big.shape == (2 * H, 2 * W) and set(np.unique(big)) == {0, 3}
    assert np.array_equal(resize_ids(big, (H, W)), ids)


# ------------------------------------------------------------------------------------------------
# overlay
# ------------------------------------------------------------------------------------------------
def test_overlay():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ids = np.zeros((H, W), np.uint8)
    ids[5:20, 5:25] = 1
    ids[25:40, 30:60] = 2
    ids[0:3, 60:64] = 255  # void: not tinted
    out = overlay(img, ids, alpha=0.5, contour=False)
    assert out.shape == img.shape and out.dtype == np.uint8
    bg = (ids == 0) | (ids == 255)
    assert np.array_equal(out[bg], img[bg])
    pal = palette_rgb().astype(np.int32)
    for k in (1, 2):
        m = ids == k
        before = np.abs(img[m].astype(np.int32) - pal[k]).sum(-1)
        after = np.abs(out[m].astype(np.int32) - pal[k]).sum(-1)
        assert np.all(after <= before) and after.mean() < 0.6 * before.mean()
        expect = np.rint(0.5 * img[m] + 0.5 * pal[k]).astype(np.uint8)
        assert np.abs(out[m].astype(int) - expect).max() <= 1
    assert np.array_equal(overlay(img, ids, alpha=0.0, contour=False), img)
    full = overlay(img, ids, alpha=1.0, contour=False)
    assert np.all(full[ids == 1] == pal[1]) and np.all(full[ids == 2] == pal[2])
    # the contour is drawn in the object colour on the object's border
    c = overlay(img, ids, alpha=0.5, contour=True)
    assert np.all(c[5, 5:25] == pal[1]) and np.all(c[12, 12] == out[12, 12])
    # input not modified; empty mask -> copy; mismatched sizes -> error
    assert np.array_equal(overlay(img, np.zeros((H, W), np.uint8)), img)
    with pytest.raises(ValueError, match="resize_ids"):
        overlay(img, np.zeros((H // 2, W), np.uint8))


# ------------------------------------------------------------------------------------------------
# videos
# ------------------------------------------------------------------------------------------------
def _write_clip_cv2(path: Path, frames, fourcc: str, fps=12.0):
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert w.isOpened()
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_read_video(tmp_path, suffix, fourcc):
    if not _cv2_can_write(suffix, fourcc, tmp_path):
        pytest.skip(f"this OpenCV build cannot write {suffix} ({fourcc})")
    frames, _ = square_clip()
    path = tmp_path / f"clip{suffix}"
    _write_clip_cv2(path, frames, fourcc, fps=12.0)
    got, fps = read_video(path)
    assert len(got) == len(frames) and fps == pytest.approx(12.0, abs=0.01)
    for a, b in zip(got, frames):
        assert a.shape == (H, W, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 12
        assert abs(_centroid_x(a) - _centroid_x(b)) < 1.5
    got3, _ = read_video(path, max_frames=3)
    assert len(got3) == 3


def test_read_video_errors(tmp_path):
    with pytest.raises(MaskIOError, match="does not exist"):
        read_video(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MaskIOError, match="ffmpeg") as e:
        read_video(bad)
    assert str(bad) in str(e.value) and "--frames DIR" in str(e.value)


def test_write_overlay_gif(tmp_path):
    frames, masks = square_clip()
    path = write_overlay_video(tmp_path / "out" / "ov.gif", frames, masks, fps=10.0)
    assert path.is_file() and _leftovers(path.parent, path.name) == []
    with Image.open(path) as im:
        assert im.format == "GIF" and im.n_frames == len(frames)
        assert im.size == (W, H) and im.info.get("loop") == 0
        assert im.info.get("duration") == 100
        im.seek(3)
        f3 = np.asarray(im.convert("RGB"))
    expect = overlay(frames[3], masks[3])
    assert np.abs(f3.astype(int) - expect.astype(int)).mean() < 6


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_write_overlay_cv2(tmp_path, suffix, fourcc):
    if not _cv2_can_write(suffix, fourcc, tmp_path):
        pytest.skip(f"this OpenCV build cannot write {suffix} ({fourcc})")
    frames, masks = square_clip()
    path = write_overlay_video(tmp_path / f"ov{suffix}", frames, masks, fps=15.0)
    assert path.is_file() and _leftovers(tmp_path, path.name) == []
    got, fps = read_video(path)
    assert len(got) == len(frames) and fps == pytest.approx(15.0, abs=0.01)
    for k in (0, 5, 9):
        expect = overlay(frames[k], masks[k])
        assert got[k].shape == expect.shape
        assert np.abs(got[k].astype(int) - expect.astype(int)).mean() < 12


def test_write_overlay_mp4_odd_size(tmp_path):
    if not _cv2_can_write(".mp4", "mp4v", tmp_path):
        pytest.skip("this OpenCV build cannot write .mp4 (mp4v)")
    frames, masks = square_clip(n=4, w=W - 1, h=H - 1)
    got, _ = read_video(write_overlay_video(tmp_path / "odd.mp4", frames, masks))
    assert len(got) == 4 and got[0].shape == (H, W, 3)  # padded to even, not cropped


def test_write_overlay_video_errors(tmp_path):
    frames, masks = square_clip(n=3)
    with pytest.raises(ValueError, match="must end in"):
        write_overlay_video(tmp_path / "ov.webm", frames, masks)
    with pytest.raises(ValueError, match="3 frames but 2 masks"):
        write_overlay_video(tmp_path / "ov.gif", frames, masks[:2])
    with pytest.raises(ValueError, match="resize_ids"):
        write_overlay_video(tmp_path / "ov.gif", frames, [m[:10] for m in masks])
    assert list(tmp_path.iterdir()) == []


def test_write_sequence_masks(tmp_path):
    _, masks = square_clip(n=3)
    paths = write_sequence_masks(tmp_path / "results" / "seq", ["00000", "00001", "00002"], masks)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    for p, m in zip(paths, masks):
        assert np.array_equal(read_mask_png(p), m)
    with pytest.raises(ValueError, match="plain file name"):
        write_sequence_masks(tmp_path, ["../x"], masks[:1])
    with pytest.raises(ValueError, match="1 frame ids but 3 masks"):
        write_sequence_masks(tmp_path, ["a"], masks)


# ------------------------------------------------------------------------------------------------
# frame folders
# ------------------------------------------------------------------------------------------------
def test_read_frames_dir(tmp_path):
    frames, _ = square_clip(n=12)
    d = tmp_path / "frames"
    d.mkdir()
    for k, f in enumerate(frames):  # unpadded numbers: "2" must come before "10"
        Image.fromarray(f).save(d / (f"{k}.png" if k % 2 else f"{k}.jpg"), quality=95)
    (d / "notes.txt").write_text("not a frame")
    (d / ".hidden.jpg").write_bytes(b"")
    got, ids = read_frames_dir(d)
    assert ids == [str(k) for k in range(12)]
    assert len(got) == 12 and all(g.shape == (H, W, 3) and g.dtype == np.uint8 for g in got)
    for g, f in zip(got, frames):
        assert abs(_centroid_x(g) - _centroid_x(f)) < 1.0
    assert np.array_equal(got[1], frames[1])  # PNG is lossless
    got5, ids5 = read_frames_dir(d, max_frames=5)
    assert ids5 == ["0", "1", "2", "3", "4"] and len(got5) == 5


def test_read_frames_dir_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MaskIOError, match="no frames") as e:
        read_frames_dir(empty)
    assert str(empty) in str(e.value)
    with pytest.raises(MaskIOError, match="does not exist"):
        read_frames_dir(tmp_path / "nowhere")

    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / "00000.jpg")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(d / "00001.jpg")
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(d / "00002.jpg")
    Image.fromarray(np.zeros((H + 4, W, 3), np.uint8)).save(d / "00003.jpg")
    with pytest.raises(MaskIOError, match="00000.jpg") as e:
        read_frames_dir(d)
    assert "00002.jpg" in str(e.value).split(":")[0]  # the first mismatching file is named
    assert "same size" in str(e.value)

    dup = tmp_path / "dup"
    dup.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(dup / "00000.jpg")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(dup / "00000.png")
    with pytest.raises(MaskIOError, match="two frames with the id '00000'"):
        read_frames_dir(dup)


# ------------------------------------------------------------------------------------------------
# real DAVIS sample
# ------------------------------------------------------------------------------------------------
def test_real_davis_blackswan(real_davis, tmp_path):
    src = real_davis / "JPEGImages" / "480p" / "blackswan"
    first5 = sorted(src.glob("*.jpg"))[:5]
    assert len(first5) == 5
    d = tmp_path / "blackswan"
    d.mkdir()
    for p in first5:
        shutil.copy2(p, d / p.name)
    frames, ids = read_frames_dir(d)
    assert ids == ["00000", "00001", "00002", "00003", "00004"]
    assert all(f.shape == (480, 854, 3) for f in frames)
    gt = read_mask_png(real_davis / "Annotations" / "480p" / "blackswan" / "00000.png")
    assert gt.shape == (480, 854) and set(np.unique(gt)) == {0, 1}
    assert object_ids(gt) == [1]
    gif = write_overlay_video(tmp_path / "blackswan.gif", frames, [gt] * 5, fps=24.0)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (854, 480)
    out = write_sequence_masks(tmp_path / "results" / "blackswan", ids[:1], [gt])
    assert np.array_equal(read_mask_png(out[0]), gt)


def test_resize_ids_is_the_training_rule_nearest_exact():
    """Inference, online tuning and the FFCV store resize ids as the loader's augmentation does
    (torch ``nearest-exact``), down and up, at the DAVIS sizes and odd ones."""
    import torch
    import torch.nn.functional as F

    from pipeline.loading.ffcv.store import resize_mask_nearest
    from pipeline.inference.tuning import _resize_ids

    rng = np.random.default_rng(0)
    for (h, w), (H, W) in [((480, 854), (240, 427)), ((240, 427), (480, 854)),
                           ((37, 53), (20, 71)), ((72, 128), (75, 75))]:
        ids = rng.integers(0, 4, (h, w), dtype=np.uint8)
        want = F.interpolate(torch.from_numpy(ids)[None, None].float(), size=(H, W),
                             mode="nearest-exact")[0, 0].to(torch.uint8).numpy()
        for got in (resize_ids(ids, (H, W)), _resize_ids(ids, (H, W)),
                    resize_mask_nearest(ids, (H, W))):
            np.testing.assert_array_equal(got, want, err_msg=f"{(h, w)} -> {(H, W)}")
