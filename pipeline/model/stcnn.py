"""STCNN (Fig. 1): the temporal coherence branch (G) and the spatial segmentation branch wired
together, plus builders for every part a training phase needs on its own.

    tcb  = build_generator(cfg)          # G alone: GAN pretraining (Sec. 3.3)
    d    = build_discriminator(cfg)      # D alone
    ssb  = build_ssb(cfg)                # SSB: ssb(frame) or ssb(frame, tcb(previous).features)
    net  = build_stcnn(cfg)              # both: net(previous, frame) -> STCNNOutput

``detach_temporal`` (authors' code) stops the segmentation loss at the temporal features; the
paper lets it reach the TCB ("each branch ... obtain[s] useful information from another branch
through back-propagation", Sec. 3.3).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pipeline.model.config import ModelConfig
from pipeline.model.discriminator import FrameDiscriminator, build_frame_discriminator
from pipeline.model.spatial import SpatialSegmentationBranch, build_spatial_branch
from pipeline.model.temporal import TemporalCoherenceBranch, build_temporal_branch


class STCNNOutput(NamedTuple):
    segmentation: list[torch.Tensor]          # logit maps at the input size; the last is final
    frame: torch.Tensor                       # G's prediction of the current frame
    temporal_features: tuple[torch.Tensor, ...]


class STCNN(nn.Module):
    """``forward(previous [N, delta, 3, H, W], frame [N, 3, H, W])`` -> :class:`STCNNOutput`."""

    def __init__(self, tcb: TemporalCoherenceBranch, ssb: SpatialSegmentationBranch,
                 detach_temporal: bool = False):
        super().__init__()
        self.tcb = tcb
        self.ssb = ssb
        self.detach_temporal = detach_temporal

    def forward(self, previous: torch.Tensor, frame: torch.Tensor) -> STCNNOutput:
        predicted, features = self.tcb(previous)
        if self.detach_temporal:
            features = tuple(f.detach() for f in features)
        return STCNNOutput(self.ssb(frame, features), predicted, features)


def build_generator(cfg: ModelConfig) -> TemporalCoherenceBranch:
    return build_temporal_branch(cfg.temporal)


def build_discriminator(cfg: ModelConfig) -> FrameDiscriminator:
    return build_frame_discriminator(cfg.discriminator)


def build_ssb(cfg: ModelConfig) -> SpatialSegmentationBranch:
    """The SSB with attention inputs sized for this config's TCB (it also runs without them)."""
    return build_spatial_branch(cfg.spatial, cfg.temporal.up_channels)


def build_stcnn(cfg: ModelConfig) -> STCNN:
    return STCNN(build_generator(cfg), build_ssb(cfg), cfg.detach_temporal)
