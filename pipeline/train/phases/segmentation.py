"""Phase 2: pretraining of the spatial segmentation branch on MSRA10K + PASCAL VOC 2012
(paper Sec. 3.3): SGD, batch 8, 300x300 images with flips and rotations, the multi-scale
cross-entropy of Eq. 3 (side outputs + fused prediction). No temporal features yet: the SSB's
attention modules run without them, as at the start of the authors' training.

Data from the webdataset shards or, with ``data.backend: ffcv``, from an FFCV store of the same
sets; ``segmentation.samples: clip_frames`` reads clip sets instead (each clip's frame t and its
mask, as an image: DAVIS frames standing in for MSRA10K + VOC at CPU scale). Object ids are merged into one foreground (``data.merge_objects``); 255 is void.
The side outputs' weight is ``loss.side_weight_schedule`` (constant 1: the paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.model.spatial import foreground_probability
from pipeline.model.stcnn import build_ssb
from pipeline.train.config import TrainConfig
from pipeline.train.data import frames_to_input
from pipeline.train.loop import Update
from pipeline.train.losses import segmentation_loss, side_output_weight
from pipeline.train.optim import OptimConfig
from pipeline.train.phases.base import EvalConfig, PhaseBase
from pipeline.train.weights import apply_init, warn_random_backbones


def _sgd(lr: float) -> OptimConfig:
    return OptimConfig(name="sgd", lr=lr, momentum=0.9, weight_decay=5e-4, schedule="poly",
                       power=0.9)


@dataclass
class SegmentationConfig:
    optim: OptimConfig = field(default_factory=lambda: _sgd(1e-3))
    # "images": image sets (MSRA10K, VOC); "clip_frames": clip sets (e.g. davis2016/train), each
    # clip's annotated frame t with its mask taken as an image (the CPU-scale recipe's stand-in)
    samples: Literal["images", "clip_frames"] = "images"


@dataclass
class SegmentationTrainConfig(TrainConfig):
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def to_target(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W] with 0 / 1 (merged objects) / 255 void -> long on ``device``."""
    return mask.to(device, non_blocking=True).long()


class SegmentationPhase(PhaseBase):
    name = "segmentation"
    register_as = "stcnn-ssb"
    kind = "image"
    masks = True

    def __init__(self, cfg: SegmentationTrainConfig, model_cfg, ctx, plan, init: dict | None = None):
        super().__init__(cfg, model_cfg, ctx, plan)
        self.scfg = cfg.segmentation
        self.kind = "clip" if self.scfg.samples == "clip_frames" else "image"
        ssb = build_ssb(model_cfg)
        apply_init({"SSB": ssb}, init or {}, required=[], missing_policy="random",
                   uris=list(cfg.init_from))
        warn_random_backbones(model_cfg, ["spatial"], init, ctx.rank)
        self.make_engine("SSB", ssb, self.scfg.optim, cfg.steps)

    def prepare(self, batch: dict) -> dict:
        image = batch["image"] if "image" in batch else batch["frames"][:, -1]
        return {"image": frames_to_input(image, self.device, self.cfg.dist.channels_last),
                "mask": to_target(batch["mask"], self.device)}

    def ssb_terms(self, m: dict, step: int) -> dict[str, torch.Tensor]:
        outputs = self.engines["SSB"](m["image"])
        loss = self.cfg.loss
        w = side_output_weight(loss.side_weight_schedule, step, self.cfg.steps)
        return {"loss": segmentation_loss(outputs, m["mask"], w, loss.ignore_index)}

    def updates(self, step: int) -> list[Update]:
        return [Update("SSB", lambda m: self.ssb_terms(m, step))]

    def predict_foreground(self, micro: dict) -> torch.Tensor:
        final = self.engines["SSB"].module(micro["image"])[-1]
        return foreground_probability(final)[:, 0] > 0.5
