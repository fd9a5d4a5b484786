"""Frames in, masks and overlay videos out.

* :func:`read_video`: a video file (anything OpenCV's FFmpeg backend decodes) -> RGB frames, fps.
* :func:`read_frames_dir`: a folder of JPEG/PNG frames (a DAVIS ``JPEGImages/480p/<seq>``
  folder, or ``ffmpeg -i in.mov frames/%05d.jpg``) -> RGB frames and frame ids (file stems).
* :func:`write_sequence_masks`: one sequence's masks in the official DAVIS results layout,
  ``<results>/<sequence>/<frame id>.png`` (indexed PNGs with the DAVIS palette).
* :func:`write_overlay_video`: the frames with the masks overlaid (:func:`~.masks.overlay`),
  as ``.mp4`` (OpenCV, MPEG-4 Part 2 ``mp4v``), ``.avi`` (Motion-JPEG) or ``.gif`` (Pillow,
  looping).

Every file is written atomically: under a temporary name in the same folder, then renamed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

from pipeline.core.atomic import TMP_SUFFIX, atomic_write_bytes
from pipeline.inference.masks import MaskIOError, as_ids, as_rgb, overlay, save_mask_png

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".gif")
DEFAULT_FPS = 24.0
_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
_CONVERT_FIX = ("convert it to H.264 MP4 with ffmpeg (ffmpeg -i {name} -c:v libx264 "
                "-pix_fmt yuv420p out.mp4), or extract its frames (ffmpeg -i {name} "
                "frames/%05d.jpg) and pass --frames DIR")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_video(path, max_frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """RGB ``uint8 [H, W, 3]`` frames of a video file (the first ``max_frames`` only, when
    given) and its frame rate (``DEFAULT_FPS`` when the container does not say).

    Raises :class:`~.masks.MaskIOError` naming the file when it does not exist, cannot be
    opened, or yields no frame."""
    import cv2

    path = Path(path)
    fix = _CONVERT_FIX.format(name=path.name)
    if not path.is_file():
        raise MaskIOError(path, "video file does not exist", "check the path")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MaskIOError(path, "OpenCV cannot open this video (unknown container or "
                                    "codec, or not a video)", fix)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames: list[np.ndarray] = []
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if bgr.ndim == 2:
                frames.append(np.ascontiguousarray(np.repeat(bgr[..., None], 3, axis=-1)))
            else:
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise MaskIOError(path, "OpenCV opened this video but could not decode a single frame",
                          fix)
    if not np.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = DEFAULT_FPS
    return frames, fps


def _natural_key(name: str):
    """"2.jpg" < "10.jpg": digit runs compare as numbers."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", name) if t]


def list_frames(folder) -> list[Path]:
    """The frame files of ``folder`` (``*.jpg``, ``*.jpeg``, ``*.png``, any case; hidden files
    skipped), in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MaskIOError(folder, "frames folder does not exist",
                          "pass a folder of JPEG/PNG frames (e.g. JPEGImages/480p/<sequence>)")
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=lambda p: (_natural_key(p.stem), p.suffix.lower()))


def read_frames_dir(folder, max_frames: int | None = None
                    ) -> tuple[list[np.ndarray], list[str]]:
    """RGB ``uint8 [H, W, 3]`` frames of a folder of ``*.jpg/*.jpeg/*.png`` files in natural
    order ("2.jpg" before "10.jpg"), and their frame ids (the file stems, used to name the
    result masks). All frames must have the same size; an empty folder, two files with the
    same stem, an unreadable file or a size mismatch raise :class:`~.masks.MaskIOError`
    naming the file."""
    from PIL import Image

    folder = Path(folder)
    files = list_frames(folder)
    if not files:
        raise MaskIOError(folder, "no frames (*.jpg, *.jpeg, *.png) in this folder",
                          "extract the frames first (ffmpeg -i video.mp4 frames/%05d.jpg) or "
                          "pass the video file instead")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise MaskIOError(p, f"two frames with the id {p.stem!r} ({seen[p.stem].name} and "
                                 f"{p.name}): their masks would share one file",
                              "keep one image per frame in the folder")
        seen[p.stem] = p
    if max_frames is not None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        files = files[:max_frames]
    frames: list[np.ndarray] = []
    first: Path | None = None
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                rgb = np.array(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise MaskIOError(p, f"cannot read this frame: corrupt or truncated image ({e})",
                              "extract or copy the frame again") from e
        if frames and rgb.shape != frames[0].shape:
            raise MaskIOError(p, f"frame is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but the first "
                                 f"frame {first.name} is {frames[0].shape[1]}x"
                                 f"{frames[0].shape[0]}",
                              "all frames of a sequence must have the same size")
        if first is None:
            first = p
        frames.append(rgb)
    return frames, [p.stem for p in files]


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def write_sequence_masks(out_dir, frame_ids: list[str], masks: list[np.ndarray]) -> list[Path]:
    """``<out_dir>/<frame id>.png`` for every frame (indexed PNGs with the DAVIS palette, via
    :func:`~.masks.save_mask_png`): the DAVIS results layout of one sequence when ``out_dir``
    is ``<results>/<sequence>``."""
    out_dir = Path(out_dir)
    if len(frame_ids) != len(masks):
        raise ValueError(f"{len(frame_ids)} frame ids but {len(masks)} masks")
    for fid in frame_ids:
        if not fid or fid in (".", "..") or "/" in fid or "\\" in fid:
            raise ValueError(f"frame id {fid!r} is not a plain file name")
    if len(set(frame_ids)) != len(frame_ids):
        raise ValueError("frame ids are not unique")
    return [save_mask_png(out_dir / f"{fid}.png", m) for fid, m in zip(frame_ids, masks)]


def _overlay_frames(frames, masks, alpha: float) -> list[np.ndarray]:
    if len(frames) != len(masks):
        raise ValueError(f"{len(frames)} frames but {len(masks)} masks")
    if not frames:
        raise ValueError("no frames to write")
    out = []
    for k, (f, m) in enumerate(zip(frames, masks)):
        img = as_rgb(f, f"frame {k}")
        if out and img.shape != out[0].shape:
            raise ValueError(f"frame {k} is {img.shape[1]}x{img.shape[0]} (WxH) but frame 0 is "
                             f"{out[0].shape[1]}x{out[0].shape[0]}")
        if m is None:
            out.append(img.copy())
            continue
        ids = as_ids(m, f"mask {k}")
        if ids.shape != img.shape[:2]:
            raise ValueError(f"mask {k} is {ids.shape[1]}x{ids.shape[0]} (WxH) but its frame is "
                             f"{img.shape[1]}x{img.shape[0]}; resize it with resize_ids()")
        out.append(overlay(img, ids, alpha=alpha))
    return out


def _gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    from PIL import Image

    duration = max(20, int(round(1000.0 / fps)))  # ms; browsers slow down delays < 20 ms
    # Fast octree: ~95x faster than Pillow's default median cut on 480p DAVIS frames
    # (benchmarks/micro_claims.py prints it), about as faithful.
    ims = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                                       dither=Image.Dither.NONE) for f in frames]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], loop=0,
                duration=duration, optimize=False, disposal=1)
    return buf.getvalue()


def _video_temp_path(path: Path) -> Path:
    """``.<name>.<pid>.tmp<suffix>``: next to ``path``, and ending in its suffix (OpenCV picks
    the container from it)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}{path.suffix}")


def _write_cv2(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import cv2

    suffix = path.suffix.lower()
    fourcc = _FOURCC[suffix]
    h, w = frames[0].shape[:2]
    # MPEG-4 needs even sizes (OpenCV would silently crop): pad the last row/column.
    ph, pw = (h % 2, w % 2) if suffix == ".mp4" else (0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _video_temp_path(path)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps),
                             (w + pw, h + ph))
    try:
        if not writer.isOpened():
            raise MaskIOError(path, f"this OpenCV build cannot write {suffix} video (fourcc "
                                    f"{fourcc!r}: no encoder or no FFmpeg backend)",
                              "write a .gif (or .avi) overlay instead, or install an "
                              "opencv-python build with FFmpeg")
        for f in frames:
            if ph or pw:
                f = np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge")
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise MaskIOError(path, f"OpenCV wrote no {suffix} data (fourcc {fourcc!r})",
                              "write a .gif overlay instead, or install an opencv-python "
                              "build with FFmpeg")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        writer.release()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_overlay_video(path, frames: list[np.ndarray], masks: list[np.ndarray],
                        fps: float = DEFAULT_FPS, alpha: float = 0.5) -> Path:
    """The frames with their masks overlaid (:func:`~.masks.overlay`; a ``None`` mask leaves
    its frame as is), written atomically by the suffix of ``path``:

    * ``.mp4``: OpenCV ``VideoWriter``, fourcc ``mp4v`` (odd sizes are padded by one pixel:
      MPEG-4 needs even width and height);
    * ``.avi``: OpenCV, Motion-JPEG;
    * ``.gif``: Pillow, looping forever, ``1000 / fps`` ms per frame (at least 20 ms; Pillow
      merges identical consecutive frames into one longer one).

    Raises :class:`~.masks.MaskIOError` when OpenCV cannot write the format on this machine."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: overlay video must end in one of {', '.join(VIDEO_SUFFIXES)}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps}")
    rgb = _overlay_frames(frames, masks, alpha)
    if suffix == ".gif":
        atomic_write_bytes(path, _gif_bytes(rgb, float(fps)))
    else:
        _write_cv2(path, rgb, float(fps))
    return path
