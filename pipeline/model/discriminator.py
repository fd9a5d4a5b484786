"""The discriminator D of the adversarial TCB pretraining (Sec. 3.1, Eq. 1-2).

Inception-v3 [43] pretrained on ImageNet, auxiliary head off, its last FC replaced by a randomly
initialised 2-class FC (paper; class 1 = real) or by one logit (authors' code, trained with
binary cross-entropy). D sees either frames resized to Inception's 299x299 (paper config) or the
frames as given: the authors feed the 1/4-resolution prediction (120x214 for 480x854 input), which
Inception's adaptive pooling accepts (any side >= 75).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.backbone import build_inception_v3
from pipeline.model.config import DiscriminatorConfig


class FrameDiscriminator(nn.Module):
    """``forward(frames [N, 3, H, W])`` -> logits: [N] for one output, [N, 2] for two."""

    def __init__(self, inception: nn.Module, input_size: tuple[int, int] | None = (299, 299)):
        super().__init__()
        self.inception = inception
        self.input_size = input_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and tuple(frames.shape[-2:]) != self.input_size:
            frames = F.interpolate(frames, size=self.input_size, mode="bilinear", align_corners=False)
        logits = self.inception(frames)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits


def build_frame_discriminator(cfg: DiscriminatorConfig) -> FrameDiscriminator:
    """D from its config, loaded from ``cfg.weights`` (torchvision Inception-v3) when set."""
    if cfg.input_size is not None and len(cfg.input_size) != 2:
        raise ValueError(
            f"discriminator.input_size must be [height, width] or null, got {cfg.input_size}")
    net = build_inception_v3(cfg.outputs, transform_input=cfg.transform_input, weights=cfg.weights,
                             width_div=cfg.width_div)
    return FrameDiscriminator(net, tuple(cfg.input_size) if cfg.input_size else None)
