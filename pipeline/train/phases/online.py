"""Online training and video segmentation (paper Sec. 3.3 "Online training for VOS", Sec. 4).

Per sequence, from the offline-trained STCNN (``weights.pt`` of ``launch/train_offline.py`` or
its ``models:/stcnn@...`` URI):

1. **Tune** a fresh copy of the SSB on lucid-dream pairs of the first frame and its mask
   (``pipeline/train/lucid/``): SGD, lr 1e-4, batch 1, 400 iterations (paper, Table 4),
   the TCB frozen. A dreamed image has no past, so G sees it repeated ``delta`` times - what it
   sees at the first frame of a video. The loss is the fused prediction's (authors' code;
   ``loss: all`` adds the side outputs). The tuning runs through the same
   :class:`~pipeline.train.loop.TrainLoop` as offline training.
2. **Segment** every frame t >= 1 from frames t-delta..t-1 (the first frame repeated for
   t < delta) and frame t. Frame 0 keeps the given mask.
3. **Several objects** (DAVIS 2017): one SSB tuned per object on the same dreams (binary target:
   this object vs. the rest); per pixel the most probable object wins when its probability
   reaches ``threshold``, else background.

``gate_dilation`` > 0 multiplies each object's probability by its previous-frame mask
(``gate_threshold``) dilated with an elliptic kernel of that size: the authors' code uses 80.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.ids_resize import resize_ids_nearest
from pipeline.core.dist import DDPEngine, DistConfig, DistContext, autocast
from pipeline.model.config import ModelConfig
from pipeline.model.spatial import foreground_probability
from pipeline.model.stcnn import build_generator, build_ssb
from pipeline.train.data import frames_to_input
from pipeline.train.loop import HookBase, TrainLoop, Update
from pipeline.train.losses import pixel_cross_entropy, segmentation_loss
from pipeline.train.optim import OptimConfig, build_optimizer
from pipeline.train.phases.base import PhaseDefaults
from pipeline.train.lucid import LucidDreamConfig, lucid_dream_pairs
from pipeline.core.config import ConfigError


@dataclass
class OnlineConfig:
    iterations: int = 400            # paper (Table 4); the authors' code: 600
    dreams: int = 100                # lucid-dream pairs per sequence (code), cycled
    batch: int = 1                   # paper
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-4))
    loss: Literal["fused", "all"] = "fused"
    size: list[int] | None = None    # [H, W] for tuning and inference (None: the video's size)
    lucid: dict[str, Any] = field(default_factory=dict)   # LucidDreamConfig fields
    threshold: float = 0.5
    gate_dilation: int = 0           # authors' code: 80 (px), with gate_threshold 0.4
    gate_threshold: float = 0.4
    temporal: bool = True            # False: the SSB alone, without the TCB's features (the
                                     # paper's "SSB only" ablation; G is then not needed)
    bn: Literal["train", "frozen"] = "frozen"  # trainable BatchNorm of the tuned SSB: the
                                     # offline running statistics (frozen), or batch statistics
                                     # ("train": needs batch > 1 for the PPM's 1x1 bins)
    seed: int = 0


def sequence_seed(seed: int, name: str) -> int:
    """A per-sequence seed independent of which rank segments it."""
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def assign_sequences(lengths: dict[str, int], world_size: int) -> list[list[str]]:
    """Sequences per rank, balanced by frame count (longest first to the least loaded rank)."""
    load = [0] * world_size
    out: list[list[str]] = [[] for _ in range(world_size)]
    for name in sorted(lengths, key=lambda n: (-lengths[n], n)):
        r = min(range(world_size), key=lambda i: (load[i], i))
        out[r].append(name)
        load[r] += lengths[name]
    return [sorted(names) for names in out]


def past_indices(t: int, delta: int) -> list[int]:
    """Frames t-delta..t-1, the first frame standing in for those before the video starts."""
    return [max(0, t - delta + i) for i in range(delta)]


def object_ids(mask: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(mask) if v not in (0, 255)]


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
        self.losses.append(self.loop.metrics["SSB/loss"])
        if self.progress is not None:
            self.progress("tune")


def _resize_rgb(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    import cv2
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _resize_ids(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Dream masks to the tuning size by the training rule (``nearest-exact``)."""
    if size is None or mask.shape[:2] == tuple(size):
        return mask
    return resize_ids_nearest(mask, size)


@dataclass
class SequenceResult:
    name: str
    masks: list[np.ndarray]          # uint8 ids per frame, at the video's size
    objects: list[int]
    tune_seconds: float
    infer_seconds: float
    losses: dict[int, list[float]]   # per object: loss per tuning step

    @property
    def frames(self) -> int:
        return len(self.masks)

    def timing(self) -> dict[str, float]:
        n = max(self.frames - 1, 1)
        return {"frames": self.frames, "objects": len(self.objects),
                "tune_s": self.tune_seconds, "infer_s": self.infer_seconds,
                "tune_s_per_frame": self.tune_seconds / n,
                "infer_s_per_frame": self.infer_seconds / n,
                "total_s_per_frame": (self.tune_seconds + self.infer_seconds) / n}


class OnlineSegmenter:
    """Holds the offline-trained G and SSB; ``segment(name, frames, first_mask)`` tunes and
    segments one sequence (the offline weights are never modified)."""

    def __init__(self, model_cfg: ModelConfig, weights: dict[str, dict], cfg: OnlineConfig,
                 device: torch.device | str = "cpu", dist: DistConfig | None = None):
        """``dist``: its ``precision`` (bf16 autocast for tuning and inference) and
        ``channels_last`` apply; ``compile`` does not (every sequence and object tunes a fresh
        SSB copy, which would be recompiled each time)."""
        self.cfg, self.model_cfg = cfg, model_cfg
        self.dist = dist or DistConfig()
        self.device = torch.device(device)
        self.delta = model_cfg.temporal.delta
        self.g = build_generator(model_cfg) if cfg.temporal else None
        self.ssb = build_ssb(model_cfg)
        missing = [b for b in (("G", "SSB") if cfg.temporal else ("SSB",)) if b not in weights]
        if missing:
            raise ConfigError(f"the checkpoint has no weights for {missing}: online training "
                              "needs the offline-trained STCNN (weights.pt of "
                              "launch/train_offline.py, or models:/stcnn@ALIAS)"
                              + ("" if cfg.temporal else "; with online.temporal=false the "
                                 "SSB's weights (launch/pretrain_ssb.py) suffice"))
        if self.g is not None:
            self.g.load_state_dict(weights["G"])
            self.g.to(self.device).eval()
            for p in self.g.parameters():
                p.requires_grad_(False)
        self.ssb.load_state_dict(weights["SSB"])
        self.ssb.to(self.device)
        if self.dist.channels_last:
            for m in (self.g, self.ssb):
                if m is not None:
                    m.to(memory_format=torch.channels_last)

    def _autocast(self):
        return autocast(self.dist, self.device)

    # -- tuning -------------------------------------------------------------------------------
    def dreams(self, image: np.ndarray, mask: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        size = tuple(self.cfg.size) if self.cfg.size else None
        lcfg = LucidDreamConfig(**self.cfg.lucid)
        images, masks = [], []
        for img, m in lucid_dream_pairs(image, mask, self.cfg.dreams, seed, lcfg):
            images.append(_resize_rgb(img, size))
            masks.append(_resize_ids(m, size))
        return np.stack(images), np.stack(masks)

    def tune(self, images: np.ndarray, masks: np.ndarray, obj: int, seed: int,
             progress: Callable[[str], None] | None = None) -> tuple[torch.nn.Module, list[float]]:
        """A copy of the SSB fitted to ``obj`` in the dreams (255 stays void); ``progress("tune")``
        after each step when given."""
        binary = np.where(masks == 255, 255, (masks == obj).astype(np.uint8)).astype(np.uint8)
        ssb = copy.deepcopy(self.ssb).train()
        if self.cfg.bn == "frozen":  # keep the offline running statistics
            for m in ssb.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        torch.manual_seed(seed)
        phase = OnlinePhase(self.g, ssb, self.cfg, self.delta, self.device,
                            self.dist.channels_last)
        recorder = _LossRecorder(progress)
        loop = TrainLoop(phase, _DreamStream(images, binary, self.cfg.batch, seed),
                         self.cfg.iterations, hooks=[recorder], autocast=self._autocast)
        loop.run()
        return ssb.eval(), recorder.losses

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _probabilities(self, ssbs: list[torch.nn.Module], frames: list[np.ndarray], t: int,
                       size: tuple[int, int] | None) -> list[torch.Tensor]:
        past = [frames[i] for i in past_indices(t, self.delta)]
        x = lambda arr: torch.from_numpy(np.array(_resize_rgb(arr, size))).permute(2, 0, 1)
        previous = frames_to_input(torch.stack([x(f) for f in past])[None], self.device)
        image = frames_to_input(x(frames[t])[None], self.device, self.dist.channels_last)
        features = None
        if self.g is not None:
            with self._autocast():
                features = self.g(previous).features
        h, w = frames[t].shape[:2]
        out = []
        for ssb in ssbs:
            with self._autocast():
                logits = ssb(image, features)[-1]
            prob = foreground_probability(logits.float())
            if prob.shape[-2:] != (h, w):
                prob = F.interpolate(prob, size=(h, w), mode="bilinear", align_corners=False)
            out.append(prob[0, 0].cpu())
        return out

    def _gate(self, prob: torch.Tensor, previous: np.ndarray) -> torch.Tensor:
        import cv2
        k = int(self.cfg.gate_dilation)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        region = cv2.dilate(previous.astype(np.uint8), kernel)
        return prob * torch.from_numpy(region.astype(np.float32))

    def segment(self, name: str, frames: list[np.ndarray], first_mask: np.ndarray,
                progress: Callable[[str], None] | None = None) -> SequenceResult:
        """Tune on the first frame's dreams, then segment frames 1..; ``progress`` (when given)
        is called with ``"tune"`` after each tuning step and ``"frame"`` after each frame."""
        if not frames:
            raise ValueError(f"{name}: no frames")
        if first_mask.shape != frames[0].shape[:2]:
            raise ValueError(f"{name}: the first mask is {first_mask.shape[1]}x{first_mask.shape[0]} "
                             f"but the frames are {frames[0].shape[1]}x{frames[0].shape[0]}; "
                             "give the mask of the first frame at the video's size")
        objects = object_ids(first_mask)
        if not objects:
            raise ValueError(f"{name}: the first mask has no object (all 0/255); draw at least "
                             "one object id > 0 in it")
        seed = sequence_seed(self.cfg.seed, name)
        size = tuple(self.cfg.size) if self.cfg.size else None
        t0 = time.perf_counter()
        images, masks = self.dreams(frames[0], first_mask, seed)
        ssbs, losses = [], {}
        for k in objects:
            ssb, curve = self.tune(images, masks, k, seed + k, progress)
            ssbs.append(ssb)
            losses[k] = curve
        tune_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        first = np.where(first_mask == 255, 0, first_mask).astype(np.uint8)
        out = [first]
        ids = torch.tensor(objects, dtype=torch.uint8)
        previous = [torch.from_numpy((first == k).astype(np.float32)) for k in objects]
        for t in range(1, len(frames)):
            probs = self._probabilities(ssbs, frames, t, size)
            if self.cfg.gate_dilation > 0:
                probs = [self._gate(p, (q >= self.cfg.gate_threshold).numpy())
                         for p, q in zip(probs, previous)]
            previous = probs
            best, arg = torch.stack(probs).max(0)               # most probable object per pixel
            labels = torch.where(best >= self.cfg.threshold, ids[arg], torch.zeros_like(ids[arg]))
            out.append(labels.numpy().astype(np.uint8))
            if progress is not None:
                progress("frame")
        infer_s = time.perf_counter() - t1
        return SequenceResult(name, out, objects, tune_s, infer_s, losses)
