"""Online tuning (paper Sec. 3.3 "Online training for VOS"): a fresh copy of the SSB fitted to
one object of a sequence's first frame, on lucid-dream pairs of that frame and its mask, and the
settings of online tuning + segmentation (:class:`OnlineConfig`).

The tuning is SGD, lr 1e-4, batch 1, 400 iterations (paper, Table 4), the TCB frozen. A dreamed
image has no past, so G sees it repeated ``delta`` times - what it sees at the first frame of a
video. The loss is the fused prediction's (authors' code; ``loss: all`` adds the side outputs).

It runs through the same :class:`~pipeline.train.loop.TrainLoop` as offline training, as one
phase (:class:`OnlinePhase`: one engine, no gradient synchronisation). No training command runs
that phase: it is a step of segmenting a video (:mod:`pipeline.inference.segmenter` runs it per
sequence and object), so it lives here, beside the segmenter, built on the training loop.

``online.lucid`` is a :class:`~pipeline.train.lucid.LucidDreamConfig` (the dreams' ranges,
blending, visibility), checked when the config is loaded like every other section.
``online.augment: plain`` replaces the dreams by the first frame and its mask under the ordinary
loader augmentation (``online.plain_augment``, flips, rotations, rescaling): the paper's "no
lucid dream" ablation (Table 3).

``online.segment_at`` (Table 4 along one run): the SSB's weights after each of these steps are
kept (step 0: the offline weights, no tuning at all), so that the segmenter can segment the
sequence with each of them too; :func:`tune_ssb` returns them with the tuning seconds spent up
to that step.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from pipeline.core.config import ConfigError
from pipeline.core.dist import DistConfig, DistContext
from pipeline.core.ids_resize import resize_ids_nearest
from pipeline.loading.augment import AugmentConfig, augment_image, get_preset
from pipeline.train.data import frames_to_input
from pipeline.train.engine import DDPEngine
from pipeline.train.loop import HookBase, TrainLoop, Update
from pipeline.train.losses import pixel_cross_entropy, segmentation_loss
from pipeline.train.lucid import LucidDreamConfig, lucid_dream_pairs
from pipeline.train.optim import OptimConfig, build_optimizer
from pipeline.train.phases.base import PhaseDefaults


@dataclass
class OnlineConfig:
    iterations: int = 400            # paper (Table 4); the authors' code: 600
    dreams: int = 100                # lucid-dream pairs per sequence (code), cycled
    batch: int = 1                   # paper
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-4))
    loss: Literal["fused", "all"] = "fused"
    size: list[int] | None = None    # [H, W] for tuning and inference (None: the video's size)
    lucid: LucidDreamConfig = field(default_factory=LucidDreamConfig)
    augment: Literal["lucid", "plain"] = "lucid"   # plain: no lucid dreams (paper, Table 3)
    plain_augment: AugmentConfig = field(        # with augment: plain; DAVIS offline ranges
        default_factory=lambda: get_preset("offline", size=None))
    segment_at: list[int] = field(default_factory=list)  # also segment after these steps
    threshold: float = 0.5
    gate_dilation: int = 0           # authors' code: 80 (px), with gate_threshold 0.4
    gate_threshold: float = 0.4
    temporal: bool = True            # False: the SSB alone, without the TCB's features (the
                                     # paper's "SSB only" ablation; G is then not needed)
    bn: Literal["train", "frozen"] = "frozen"  # trainable BatchNorm of the tuned SSB: the
                                     # offline running statistics (frozen), or batch statistics
                                     # ("train": needs batch > 1 for the PPM's 1x1 bins)
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [k for k in self.segment_at if not 0 <= int(k) < self.iterations]
        if bad or len(set(self.segment_at)) != len(self.segment_at):
            raise ConfigError(f"online.segment_at: {list(self.segment_at)} must be distinct "
                              f"steps in 0..{self.iterations - 1} (online.iterations is "
                              f"{self.iterations}, always segmented); e.g. [0, 50, 100]")
        self.segment_at = sorted(int(k) for k in self.segment_at)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """An RGB frame or dream to the tuning and inference size (area interpolation)."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    import cv2
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _resize_ids(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Dream masks to the tuning size by the training rule (``nearest-exact``)."""
    if size is None or mask.shape[:2] == tuple(size):
        return mask
    return resize_ids_nearest(mask, size)


def _plain_pairs(image: np.ndarray, mask: np.ndarray, cfg: OnlineConfig, seed: int):
    """The first frame and its mask under ``cfg.plain_augment``, pair ``i`` drawn from its own
    generator seeded with ``(seed, i)``; the first pair is the frame itself."""
    img, m = torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(mask)
    yield image, mask
    for i in range(1, cfg.dreams):
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        out, out_mask, _ = augment_image(img, m, cfg.plain_augment, g)
        yield out.permute(1, 2, 0).contiguous().numpy(), out_mask.numpy()


def dream_pairs(image: np.ndarray, mask: np.ndarray, cfg: OnlineConfig,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``cfg.dreams`` (image, id mask) training pairs of a first frame, at ``cfg.size``: lucid
    dreams, or with ``augment: plain`` the frame under the ordinary augmentation."""
    size = tuple(cfg.size) if cfg.size else None
    images, masks = [], []
    pairs = (_plain_pairs(image, mask, cfg, seed) if cfg.augment == "plain"
             else lucid_dream_pairs(image, mask, cfg.dreams, seed, cfg.lucid))
    for img, m in pairs:
        images.append(resize_frame(img, size))
        masks.append(_resize_ids(m, size))
    return np.stack(images), np.stack(masks)


class _DreamStream:
    """Endless (image, binary mask) batches over the dreams, in a seeded order."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, batch: int, seed: int):
        self.images, self.masks, self.batch = images, masks, batch
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        idx = []
        while len(idx) < self.batch:
            if not self.order:
                self.order = list(self.rng.permutation(len(self.images)))
            idx.append(self.order.pop())
        return {"image": torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2),
                "mask": torch.from_numpy(self.masks[idx])}


class OnlinePhase(PhaseDefaults):
    """The SSB update on dreams: one engine, no gradient synchronisation (each rank tunes its
    own sequences)."""

    name = "online"

    def __init__(self, g: torch.nn.Module, ssb: torch.nn.Module, cfg: OnlineConfig, delta: int,
                 device: torch.device, channels_last: bool = False):
        self.g, self.cfg, self.delta, self.device = g, cfg, delta, device
        self.channels_last = channels_last
        optimizer = build_optimizer(ssb, cfg.optim)
        local = DistContext(0, 1, 0, device, None)
        self.engines = {"SSB": DDPEngine("SSB", ssb, optimizer, None, local, DistConfig())}

    def prepare(self, batch: dict) -> dict:
        image = frames_to_input(batch["image"], self.device, self.channels_last)
        features = None
        if self.g is not None:
            with torch.no_grad():
                features = self.g(image.unsqueeze(1).expand(-1, self.delta, -1, -1, -1)).features
        return {"image": image, "features": features, "mask": batch["mask"].to(self.device).long()}

    def ssb_terms(self, m: dict) -> dict[str, torch.Tensor]:
        outputs = self.engines["SSB"](m["image"], m["features"])
        if self.cfg.loss == "fused":
            return {"loss": pixel_cross_entropy(outputs[-1], m["mask"])}
        return {"loss": segmentation_loss(outputs, m["mask"])}

    def updates(self, step: int) -> list[Update]:
        return [Update("SSB", self.ssb_terms)]


class _LossRecorder(HookBase):
    """A hook keeping every step's loss (first vs last: did tuning fit the first frame?) and
    reporting each step to ``progress`` (``progress("tune")``) when given."""

    def __init__(self, progress: Callable[[str], None] | None = None):
        self.losses: list[float] = []
        self.progress = progress

    def after_step(self) -> None:
        self.losses.append(self.loop.state.metrics["SSB/loss"])
        if self.progress is not None:
            self.progress("tune")


class _Snapshots(HookBase):
    """A hook keeping the SSB's weights (a copy, on their device) and the seconds since the
    tuning began after each step of ``at`` (``online.segment_at``); step 0 is taken before the
    loop runs."""

    def __init__(self, ssb: torch.nn.Module, at: list[int]):
        self.ssb, self.at = ssb, set(at)
        self.start = time.perf_counter()
        self.taken: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
        if 0 in self.at:
            self.take(0)

    def take(self, step: int) -> None:
        state = {k: v.detach().clone() for k, v in self.ssb.state_dict().items()}
        self.taken[step] = (state, time.perf_counter() - self.start)

    def after_step(self) -> None:
        if self.loop.state.step in self.at:   # completed steps
            self.take(self.loop.state.step)


def tune_ssb(offline_ssb: torch.nn.Module, g: torch.nn.Module | None, images: np.ndarray,
             masks: np.ndarray, obj: int, seed: int, cfg: OnlineConfig, delta: int,
             device: torch.device, channels_last: bool, autocast: Callable,
             progress: Callable[[str], None] | None = None
             ) -> tuple[torch.nn.Module, list[float], dict[int, tuple[dict, float]]]:
    """A copy of ``offline_ssb`` fitted to ``obj`` in the dreams (255 stays void; the offline
    module is not modified), in eval mode, its loss per step and, per step of
    ``cfg.segment_at``, (its weights then, tuning seconds until then); ``progress("tune")``
    after each step when given."""
    binary = np.where(masks == 255, 255, (masks == obj).astype(np.uint8)).astype(np.uint8)
    ssb = copy.deepcopy(offline_ssb).train()
    if cfg.bn == "frozen":  # keep the offline running statistics
        for m in ssb.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    torch.manual_seed(seed)
    phase = OnlinePhase(g, ssb, cfg, delta, device, channels_last)
    recorder = _LossRecorder(progress)
    snapshots = _Snapshots(ssb, cfg.segment_at)
    loop = TrainLoop(phase, _DreamStream(images, binary, cfg.batch, seed),
                     cfg.iterations, hooks=[recorder, snapshots], autocast=autocast)
    loop.run()
    return ssb.eval(), recorder.losses, snapshots.taken
