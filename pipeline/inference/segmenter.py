"""Video object segmentation as a user runs it (paper Sec. 3.3 "Online training for VOS",
Sec. 4): :class:`OnlineSegmenter` holds the offline-trained STCNN (``weights.pt`` of
``launch/train_offline.py`` or its ``models:/stcnn@...`` URI) and, per sequence:

1. **Tunes** a fresh copy of the SSB on lucid-dream pairs of the first frame and its mask
   (:mod:`pipeline.inference.tuning`, settings in :class:`~pipeline.inference.tuning.OnlineConfig`).
2. **Segments** every frame t >= 1 from frames t-delta..t-1 (the first frame repeated for
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
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.core.config import ConfigError
from pipeline.core.dist import DistConfig, autocast
from pipeline.inference.masks import object_ids
from pipeline.inference.tuning import OnlineConfig, dream_pairs, resize_frame, tune_ssb
from pipeline.model.config import ModelConfig
from pipeline.model.spatial import foreground_probability
from pipeline.model.stcnn import build_generator, build_ssb
from pipeline.train.data import frames_to_input


def sequence_seed(seed: int, name: str) -> int:
    """A per-sequence seed independent of which rank segments it."""
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def past_indices(t: int, delta: int) -> list[int]:
    """Frames t-delta..t-1, the first frame standing in for those before the video starts."""
    return [max(0, t - delta + i) for i in range(delta)]


def _timing(frames: int, tune_s: float, infer_s: float) -> dict[str, float]:
    n = max(frames - 1, 1)
    return {"tune_s": tune_s, "infer_s": infer_s, "tune_s_per_frame": tune_s / n,
            "infer_s_per_frame": infer_s / n, "total_s_per_frame": (tune_s + infer_s) / n}


@dataclass
class StepResult:
    """The sequence segmented with the SSB after ``step`` tuning steps (``online.segment_at``):
    its masks, the tuning seconds up to that step (dreams included) and its inference seconds."""

    masks: list[np.ndarray]
    tune_seconds: float
    infer_seconds: float


@dataclass
class SequenceResult:
    name: str
    masks: list[np.ndarray]          # uint8 ids per frame, at the video's size
    objects: list[int]
    tune_seconds: float
    infer_seconds: float
    losses: dict[int, list[float]]   # per object: loss per tuning step
    at_steps: dict[int, StepResult] = field(default_factory=dict)  # online.segment_at

    @property
    def frames(self) -> int:
        return len(self.masks)

    def timing(self) -> dict:
        """Seconds and seconds per frame (frames after the first); with ``segment_at``, the
        same per step under ``at_steps``."""
        out = {"frames": self.frames, "objects": len(self.objects),
               **_timing(self.frames, self.tune_seconds, self.infer_seconds)}
        if self.at_steps:
            out["at_steps"] = {str(k): _timing(self.frames, r.tune_seconds, r.infer_seconds)
                               for k, r in self.at_steps.items()}
        return out


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
        return dream_pairs(image, mask, self.cfg, seed)

    def tune(self, images: np.ndarray, masks: np.ndarray, obj: int, seed: int,
             progress: Callable[[str], None] | None = None
             ) -> tuple[torch.nn.Module, list[float], dict[int, tuple[dict, float]]]:
        """A copy of the SSB fitted to ``obj`` in the dreams (255 stays void), its loss per
        step, and its weights and tuning seconds at each step of ``online.segment_at``;
        ``progress("tune")`` after each step when given."""
        return tune_ssb(self.ssb, self.g, images, masks, obj, seed, self.cfg, self.delta,
                        self.device, self.dist.channels_last, self._autocast, progress)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _probabilities(self, ssbs: list[torch.nn.Module], frames: list[np.ndarray], t: int,
                       size: tuple[int, int] | None) -> list[torch.Tensor]:
        past = [frames[i] for i in past_indices(t, self.delta)]
        x = lambda arr: torch.from_numpy(np.array(resize_frame(arr, size))).permute(2, 0, 1)
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

    def _infer(self, ssbs: list[torch.nn.Module], objects: list[int], frames: list[np.ndarray],
               first_mask: np.ndarray, progress: Callable[[str], None] | None
               ) -> list[np.ndarray]:
        """Frames 1.. segmented with one tuned SSB per object; frame 0 keeps the given mask."""
        size = tuple(self.cfg.size) if self.cfg.size else None
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
        return out

    def segment(self, name: str, frames: list[np.ndarray], first_mask: np.ndarray,
                progress: Callable[[str], None] | None = None) -> SequenceResult:
        """Tune on the first frame's dreams, then segment frames 1..; ``progress`` (when given)
        is called with ``"tune"`` after each tuning step and ``"frame"`` after each frame of
        the final model. With ``online.segment_at``, the sequence is also segmented with the
        SSB of each of those steps (:attr:`SequenceResult.at_steps`)."""
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
        t0 = time.perf_counter()
        images, masks = self.dreams(frames[0], first_mask, seed)
        dreams_s = time.perf_counter() - t0
        ssbs, losses, snapshots = [], {}, []
        for k in objects:
            ssb, curve, taken = self.tune(images, masks, k, seed + k, progress)
            ssbs.append(ssb)
            losses[k] = curve
            snapshots.append(taken)
        tune_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        out = self._infer(ssbs, objects, frames, first_mask, progress)
        infer_s = time.perf_counter() - t1
        at_steps = {}
        for step in self.cfg.segment_at:      # the same sequence with earlier weights
            earlier = []
            for ssb, taken in zip(ssbs, snapshots):
                copy_ = copy.deepcopy(ssb)
                copy_.load_state_dict(taken[step][0])
                earlier.append(copy_.eval())
            t2 = time.perf_counter()
            masks_k = self._infer(earlier, objects, frames, first_mask, None)
            at_steps[step] = StepResult(masks_k, dreams_s + sum(t[step][1] for t in snapshots),
                                        time.perf_counter() - t2)
        return SequenceResult(name, out, objects, tune_s, infer_s, losses, at_steps)
