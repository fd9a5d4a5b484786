"""Frame-consistent augmentation for clips and images (uint8 in, uint8 out).

Every random draw is made once per sample and applied identically to all frames of a clip and
to its mask, so the frames stay temporally coherent and the mask stays aligned with frame t.

Tensors:
  frames  uint8 ``[T, 3, H, W]`` (a clip, oldest frame first) or ``[3, H, W]`` (one image);
  mask    uint8 ``[H, W]`` or ``None``: object ids kept as they are (0 background, 1..N objects,
          255 void), never interpolated.

Order of operations (:func:`augment_clip`):
  1. ``crop``: a random ``(h, w)`` window of the source (the authors' SSB pretraining crops 300x300
     rather than resizing); a source smaller than the window is padded (frames 0, mask
     ``mask_fill``) at a random offset.
  2. ``time_reverse``: with this probability the frame order is reversed. Only for clips WITHOUT a
     mask (VID, TCB pretraining): a clip's mask belongs to its last frame t, so a masked clip is
     never reversed (``params["time_reverse"]`` says whether it happened).
  3. Geometry, as one operation: resize to ``size`` (H, W), then rotate by an angle drawn
     uniformly from ``[-rotate_deg, rotate_deg]`` and zoom by a factor drawn uniformly from
     ``scale`` (> 1 zooms in and crops the border, < 1 zooms out and pads), both about the image
     centre, then mirror horizontally with probability ``hflip``.
     Frames are interpolated bilinearly, masks with nearest neighbour (half-pixel centres for
     both, so they stay aligned). Pixels that come from outside the source are 0 in the frames and
     ``mask_fill`` in the mask: **255 by default, i.e. void / ignore**, so a loss that ignores 255
     does not learn "background" from padding. Set ``mask_fill=0`` to call it background.

Any memory layout is accepted and kept where cheap: the loader hands over channels-last frames
(a permuted view of HWC memory, as decoded), for which flips and uint8 resizes are fastest.

Cost: without rotation/zoom, flipping is a memory flip (the loader even fuses it into the copy
out of the JPEG decoder) and the resize is skipped when the size already matches, so no float
copy of the clip is made (the loader then runs at ~85-95% of pure JPEG decoding). With
rotation/zoom the clip goes through one float ``grid_sample`` (after an
antialiased uint8 downscale when the output is smaller than the source).

Normalisation to float is not done here: batches stay uint8 (4x less to move from the loader
workers and to the GPU) and :func:`to_float` normalises on the device.

Reproducibility: pass a seeded ``torch.Generator`` (the loader gives each rank and worker its
own); the same generator state, config and input give the same output.

Presets (:data:`PRESETS`, :func:`get_preset`), from the paper (Sec. 4.1) unless named ``*_code``:
  ``tcb_pretrain``      ILSVRC VID clips: flip the whole clip, resize to (480, 854).
  ``tcb_pretrain_code`` as the authors' code: plus 40% of the clips time-reversed.
  ``ssb_pretrain``      MSRA10K + VOC images: flip, rotate (+-10 degrees, the authors' range; the
                        paper gives none), resize to (300, 300).
  ``ssb_pretrain_code`` as the authors' code: random 300x300 crop instead of a resize, flip, +-10.
  ``offline``           DAVIS-2016 clips: flip, rotate +-30, rescale 0.75-1.25 (ranges from the
                        authors' code; the paper says only "flip, rotate and rescale"), output
                        (400, 710) as in the authors' code (the paper gives no size).
  ``eval`` / ``none``   nothing: source size, no flip.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from pipeline.core.config import ConfigError, from_dict

__all__ = [
    "AugmentConfig",
    "PRESETS",
    "get_preset",
    "resolve_augment",
    "augment_clip",
    "augment_image",
    "to_float",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(value: Any, name: str, cast=int) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (cast(value), cast(value))
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"AugmentConfig.{name} must be a pair (got {value!r})") from None
    return (cast(a), cast(b))


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What to do to every sample; see the module docstring for the order and the presets.

    This is also the ``augment:`` section of the configs (``data.augment``, ``eval.augment``),
    loaded by :mod:`pipeline.core.config`: a key not below, or a value of the wrong type, is a
    config error naming the key, at load.

    preset:       a name of :data:`PRESETS`: every key not given takes the preset's value
                  (``{preset: offline, size: [200, 300]}``); ``None``: the defaults below.
                  Recorded, not compared: two configs doing the same thing are equal.
    size:         output (H, W), or one number for both; ``None`` keeps the (cropped) source size.
    hflip:        probability of a horizontal flip of all frames and the mask.
    rotate_deg:   rotation angle drawn uniformly from [-rotate_deg, rotate_deg] degrees.
    scale:        zoom factor drawn uniformly from [lo, hi] (one number: fixed); (1, 1) = none.
    crop:         random crop (h, w) taken from the source before anything else; ``None`` = none.
    time_reverse: probability of reversing the frame order (mask-free clips only).
    mask_fill:    mask value for pixels coming from outside the source (255 = void, the default).
    antialias:    antialiased downscaling of the frames (uint8, cheap).
    """

    preset: str | None = dataclasses.field(default=None, compare=False)
    size: tuple[int, int] | int | None = None
    hflip: float = 0.5
    rotate_deg: float = 0.0
    scale: tuple[float, float] | float = (1.0, 1.0)
    crop: tuple[int, int] | int | None = None
    time_reverse: float = 0.0
    mask_fill: int = 255
    antialias: bool = True

    def __post_init__(self) -> None:
        size = _pair(self.size, "size")
        crop = _pair(self.crop, "crop")
        scale = _pair(self.scale, "scale", float)
        for name, v in (("size", size), ("crop", crop)):
            if v is not None and (v[0] <= 0 or v[1] <= 0):
                raise ValueError(f"AugmentConfig.{name} must be positive (H, W), got {v}")
        if not (0.0 < scale[0] <= scale[1]):
            raise ValueError(f"AugmentConfig.scale must be 0 < lo <= hi, got {scale}")
        for name in ("hflip", "time_reverse"):
            p = float(getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name} is a probability in [0, 1], got {p}")
            object.__setattr__(self, name, p)
        if float(self.rotate_deg) < 0:
            raise ValueError(f"AugmentConfig.rotate_deg must be >= 0, got {self.rotate_deg}")
        if not 0 <= int(self.mask_fill) <= 255:
            raise ValueError(f"AugmentConfig.mask_fill must be in 0..255, got {self.mask_fill}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "rotate_deg", float(self.rotate_deg))
        object.__setattr__(self, "mask_fill", int(self.mask_fill))

    @classmethod
    def expand_config(cls, data: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The mapping of a config file with its ``preset``'s values under the keys it does not
        set (:mod:`pipeline.core.config` calls this before checking the keys)."""
        d = dict(data)
        if d.get("preset") is None:
            return d
        try:
            base = get_preset(d["preset"])
        except ConfigError as e:
            raise ConfigError(f"{where + '.' if where else ''}preset: {e}") from None
        return {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)} | d

    @property
    def is_identity(self) -> bool:
        return (self.size is None and self.hflip == 0 and self.rotate_deg == 0
                and self.scale == (1.0, 1.0) and self.crop is None and self.time_reverse == 0)


PRESETS: dict[str, AugmentConfig] = {
    # Paper Sec. 4.1: "randomly flip all frames in a video clip horizontal ... resize all frames to
    # the size (480, 854)".
    "tcb_pretrain": AugmentConfig(size=(480, 854), hflip=0.5),
    "tcb_pretrain_code": AugmentConfig(size=(480, 854), hflip=0.5, time_reverse=0.4),
    # Paper: "randomly flip the images horizontally, and rotate ... resized to (300, 300)".
    "ssb_pretrain": AugmentConfig(size=(300, 300), hflip=0.5, rotate_deg=10.0),
    "ssb_pretrain_code": AugmentConfig(size=None, crop=(300, 300), hflip=0.5, rotate_deg=10.0),
    # Paper: "randomly flip horizontally, rotate and rescale"; ranges and size from the code.
    "offline": AugmentConfig(size=(400, 710), hflip=0.5, rotate_deg=30.0, scale=(0.75, 1.25)),
    "eval": AugmentConfig(size=None, hflip=0.0),
    "none": AugmentConfig(size=None, hflip=0.0),
}
PRESETS = {name: dataclasses.replace(cfg, preset=name) for name, cfg in PRESETS.items()}


def get_preset(name: str, **overrides: Any) -> AugmentConfig:
    """A preset by name, optionally with fields replaced: ``get_preset("offline", size=None)``."""
    try:
        cfg = PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown augmentation preset {name!r}; known: {sorted(PRESETS)}") from None
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def resolve_augment(augment: "AugmentConfig | str | Mapping[str, Any] | None") -> AugmentConfig:
    """Accept a config, a preset name, a mapping (YAML, checked as the config loader checks the
    ``augment:`` section) or None (= no augmentation)."""
    if augment is None:
        return PRESETS["none"]
    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, str):
        return get_preset(augment)
    if isinstance(augment, Mapping):
        return from_dict(AugmentConfig, dict(augment), where="augment")
    raise TypeError("augment must be an AugmentConfig, a preset name, a mapping or None, "
                    f"not {type(augment)}")


# ----------------------------------------------------------------------------------------------
# random draws


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    if lo == hi:
        return float(lo)
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def coin(p: float, g: torch.Generator | None) -> bool:
    if p <= 0.0:
        return False
    if p >= 1.0:
        return True
    return float(torch.rand((), generator=g)) < p


def _randint(n: int, g: torch.Generator | None) -> int:
    """Uniform integer in [0, n]."""
    if n <= 0:
        return 0
    return int(torch.randint(0, n + 1, (), generator=g))


# ----------------------------------------------------------------------------------------------
# geometry


def _random_crop(frames: torch.Tensor, mask: torch.Tensor | None, crop: tuple[int, int],
                 fill_mask: int, g: torch.Generator | None):
    ch, cw = crop
    h, w = frames.shape[-2:]
    if h >= ch and w >= cw:
        top, left = _randint(h - ch, g), _randint(w - cw, g)
        frames = frames[..., top:top + ch, left:left + cw]
        if mask is not None:
            mask = mask[top:top + ch, left:left + cw]
        return frames, mask, (top, left)
    # source smaller than the window: pad at a random offset, then crop
    ph, pw = max(h, ch), max(w, cw)
    oy, ox = _randint(ph - h, g), _randint(pw - w, g)
    canvas = frames.new_zeros(frames.shape[:-2] + (ph, pw))
    canvas[..., oy:oy + h, ox:ox + w] = frames
    if mask is not None:
        mcanvas = mask.new_full((ph, pw), fill_mask)
        mcanvas[oy:oy + h, ox:ox + w] = mask
        mask = mcanvas
    frames, mask, (top, left) = _random_crop(canvas, mask, crop, fill_mask, g)
    return frames, mask, (top - oy, left - ox)


def _resize(frames: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int],
            antialias: bool):
    frames = TF.resize(frames, list(size), interpolation=InterpolationMode.BILINEAR,
                       antialias=antialias)
    if mask is not None:
        mask = TF.resize(mask[None], list(size), interpolation=InterpolationMode.NEAREST_EXACT,
                         antialias=False)[0]
    return frames, mask


def _warp(frames: torch.Tensor, mask: torch.Tensor | None, size: tuple[int, int], angle_deg: float,
          zoom: float, flip: bool, mask_fill: int, antialias: bool):
    """Resize to ``size``, rotate by ``angle_deg`` and zoom by ``zoom`` about the centre, then
    mirror if ``flip``: one ``grid_sample`` for all frames (and one for the mask)."""
    H, W = size
    h, w = frames.shape[-2:]
    if H < h or W < w:  # downscale (only) with antialiasing first; the warp does the rest
        frames, mask = _resize(frames, mask, (min(H, h), min(W, w)), antialias)
    # affine_grid maps output normalised coordinates to input normalised coordinates. A resize is
    # the identity in normalised coordinates, so only the output aspect enters the rotation.
    a = math.radians(angle_deg)
    c, s = math.cos(a) / zoom, math.sin(a) / zoom
    theta = torch.tensor([[c, s * H / W, 0.0], [-s * W / H, c, 0.0]], dtype=torch.float32)
    if flip:
        theta[0] = -theta[0]
    T, C = frames.shape[0], frames.shape[1]
    grid = nnf.affine_grid(theta[None], [1, 1, H, W], align_corners=False)
    if frames.is_contiguous():  # all frames as channels of one image: one grid
        x = frames.view(1, T * C, *frames.shape[-2:]).float()
    else:  # channels-last (as decoded): keep the layout, share the grid
        x, grid = frames.float(), grid.expand(T, H, W, 2)
    out = nnf.grid_sample(x, grid[:1] if x.shape[0] == 1 else grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    out = out.round_().clamp_(0, 255).to(torch.uint8).reshape(T, C, H, W)
    if mask is not None:
        m = mask.to(torch.float32).sub_(mask_fill)[None, None]  # outside -> 0 -> mask_fill
        m = nnf.grid_sample(m, grid[:1], mode="nearest", padding_mode="zeros", align_corners=False)
        mask = m[0, 0].add_(mask_fill).round_().to(torch.uint8)
    return out, mask


def augment_clip(frames: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig,
                 generator: torch.Generator | None = None):
    """Augment a clip ``[T, 3, H, W]`` uint8 and its mask ``[H, W]`` (or None) identically.

    Returns ``(frames, mask, params)``; ``params`` records what was drawn (``hflip``, ``angle``,
    ``scale``, ``crop`` top-left or None, ``time_reverse``), for logging and tests.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 4:
        raise ValueError(
            f"frames must be uint8 [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    if mask is not None and (mask.dim() != 2 or mask.shape != frames.shape[-2:]):
        raise ValueError(
            f"mask must be [H, W] = {tuple(frames.shape[-2:])}, got {tuple(mask.shape)}")
    g = generator
    params: dict[str, Any] = {"hflip": False, "angle": 0.0, "scale": 1.0, "crop": None,
                              "time_reverse": False}
    if cfg.crop is not None:
        frames, mask, params["crop"] = _random_crop(frames, mask, cfg.crop, cfg.mask_fill, g)
    if mask is None and frames.shape[0] > 1 and coin(cfg.time_reverse, g):
        frames = frames.flip(0)
        params["time_reverse"] = True
    flip = coin(cfg.hflip, g)
    angle = _uniform(-cfg.rotate_deg, cfg.rotate_deg, g) if cfg.rotate_deg > 0 else 0.0
    zoom = _uniform(cfg.scale[0], cfg.scale[1], g)
    params.update(hflip=flip, angle=angle, scale=zoom)
    size = tuple(cfg.size) if cfg.size is not None else tuple(frames.shape[-2:])

    if angle == 0.0 and zoom == 1.0:
        if size != tuple(frames.shape[-2:]):
            frames, mask = _resize(frames, mask, size, cfg.antialias)
        if flip:
            frames = frames.flip(-1)
            if mask is not None:
                mask = mask.flip(-1)
    else:
        frames, mask = _warp(frames, mask, size, angle, zoom, flip, cfg.mask_fill, cfg.antialias)
    if not (frames.is_contiguous() or frames.is_contiguous(memory_format=torch.channels_last)):
        frames = frames.clone(memory_format=torch.preserve_format)  # compact a crop, same layout
    if mask is not None and not mask.is_contiguous():
        mask = mask.contiguous()
    return frames, mask, params


def augment_image(image: torch.Tensor, mask: torch.Tensor | None, cfg: AugmentConfig,
                  generator: torch.Generator | None = None):
    """Augment one image ``[3, H, W]`` uint8 and its mask; same as :func:`augment_clip`."""
    if image.dim() != 3:
        raise ValueError(f"image must be uint8 [3, H, W], got {tuple(image.shape)}")
    frames, mask, params = augment_clip(image[None], mask, cfg, generator)
    return frames[0], mask, params


def to_float(frames: torch.Tensor, mean: Sequence[float] | None = IMAGENET_MEAN,
             std: Sequence[float] | None = IMAGENET_STD, *,
             device: torch.device | str | None = None, dtype: torch.dtype = torch.float32, non_blocking: bool = True) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float in [0, 1], then ``(x - mean) / std`` per channel.

    Meant to run on the training device, after the uint8 batch has been moved there
    (``to_float(batch["frames"], device="cuda")`` moves first, then converts).
    ``mean``/``std`` are in [0, 1] units; pass ``None`` for both to get plain [0, 1] values.
    """
    if device is not None:
        frames = frames.to(device, non_blocking=non_blocking)
    x = frames.to(dtype, copy=True).div_(255.0)  # never in place on the caller's tensor
    if mean is None and std is None:
        return x
    shape = (3,) + (1, 1)
    m = torch.as_tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=dtype, device=x.device)
    s = torch.as_tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=dtype, device=x.device)
    return x.sub_(m.view(shape)).div_(s.view(shape))
