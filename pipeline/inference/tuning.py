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
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import numpy as np
import torch

from pipeline.core.dist import DistConfig, DistContext
from pipeline.core.ids_resize import resize_ids_nearest
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
    threshold: float = 0.5
    gate_dilation: int = 0           # authors' code: 80 (px), with gate_threshold 0.4
    gate_threshold: float = 0.4
    temporal: bool = True            # False: the SSB alone, without the TCB's features (the
                                     # paper's "SSB only" ablation; G is then not needed)
    bn: Literal["train", "frozen"] = "frozen"  # trainable BatchNorm of the tuned SSB: the
                                     # offline running statistics (frozen), or batch statistics
                                     # ("train": needs batch > 1 for the PPM's 1x1 bins)
    seed: int = 0


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


def dream_pairs(image: np.ndarray, mask: np.ndarray, cfg: OnlineConfig,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``cfg.dreams`` lucid-dream (image, id mask) pairs of a first frame, at ``cfg.size``."""
    size = tuple(cfg.size) if cfg.size else None
    images, masks = [], []
    for img, m in lucid_dream_pairs(image, mask, cfg.dreams, seed, cfg.lucid):
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


def tune_ssb(offline_ssb: torch.nn.Module, g: torch.nn.Module | None, images: np.ndarray,
             masks: np.ndarray, obj: int, seed: int, cfg: OnlineConfig, delta: int,
             device: torch.device, channels_last: bool, autocast: Callable,
             progress: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, list[float]]:
    """A copy of ``offline_ssb`` fitted to ``obj`` in the dreams (255 stays void; the offline
    module is not modified), in eval mode, and its loss per step; ``progress("tune")`` after
    each step when given."""
    binary = np.where(masks == 255, 255, (masks == obj).astype(np.uint8)).astype(np.uint8)
    ssb = copy.deepcopy(offline_ssb).train()
    if cfg.bn == "frozen":  # keep the offline running statistics
        for m in ssb.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    torch.manual_seed(seed)
    phase = OnlinePhase(g, ssb, cfg, delta, device, channels_last)
    recorder = _LossRecorder(progress)
    loop = TrainLoop(phase, _DreamStream(images, binary, cfg.batch, seed),
                     cfg.iterations, hooks=[recorder], autocast=autocast)
    loop.run()
    return ssb.eval(), recorder.losses
