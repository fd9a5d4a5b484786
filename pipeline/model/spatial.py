"""The spatial segmentation branch (SSB) of Sec. 3.2, Fig. 1 and Fig. 2.

    encoder    ResNet-101, res4/res5 at stride 1 with dilated convs (output stride 8)
    PPM        pyramid pooling [54] over res5 (bins 1, 2, 3, 6), 3x3 conv -> context (1/8)
    attention  three modules, coarse to fine, on res4 (1/8), res3 (1/8), res2 (1/4) (Fig. 2):
                 lateral(res_k) + top_down(context)      element-wise addition: high-level context
                 concat temporal feature, 3x3 conv        temporal constraints from the TCB
                 x + sigmoid(previous prediction) * f(x)  the previous scale's mask guides attention
    fusion     the four maps concatenated at 1/4, a 3x3 conv -> final prediction
    outputs    five logit maps upsampled to the input size: PPM, the three attention modules and
               the fusion (the last one is the answer); Eq. 3 is applied to each.

``attention: false`` (the paper's Table 3 ablation, "we remove the red lines in Figure 1 to
directly generate the output mask"): no module is guided by the previous scale's prediction; each
keeps its context and temporal fusion and side prediction, and the fusion gives the mask from
these features directly (the mask-gated residual and its parameters are gone).

The top-down step is a learned 4x4 stride-2 transposed convolution (the authors' code), resized
to the lateral map's grid; the code centre-crops it instead, which zooms the 1/8 -> 1/8 steps by
two (a misalignment we do not copy; same parameters). Without temporal features (SSB
pretraining) the temporal channels are zeros, so one set of weights serves both phases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.backbone import (NormLayer, ResNetTrunk, build_resnet_trunk, conv_bn_relu,
                                     init_new_layers, norm_layer)
from pipeline.model.config import SpatialConfig


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (the last two dims), skipped when already there."""
    size = tuple(size[-2:])
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] foreground probability of 1-logit (sigmoid) or 2-class (softmax) maps."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)[:, 1:2]


class PyramidPooling(nn.Module):
    """PPM [54]: average pooling to bins x bins, 1x1 conv + BN + ReLU, upsampling, concatenated
    with the input, then a 3x3 conv + BN + ReLU to ``out_channels``."""

    def __init__(self, in_channels: int, bins: Sequence[int], channels: int, out_channels: int,
                 norm: NormLayer):
        super().__init__()
        self.bins = tuple(bins)
        self.branches = nn.ModuleList(conv_bn_relu(in_channels, channels, 1, norm) for _ in self.bins)
        self.bottleneck = conv_bn_relu(in_channels + len(self.bins) * channels, out_channels, 3, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_to(branch(F.adaptive_avg_pool2d(x, b)), x.shape)
                  for b, branch in zip(self.bins, self.branches)]
        return self.bottleneck(torch.cat([x, *pooled], 1))


class ScoreHead(nn.Sequential):
    """A side prediction: 3x3 conv + BN + ReLU, then 1x1 conv to the class logits."""

    def __init__(self, channels: int, num_classes: int, norm: NormLayer):
        super().__init__(conv_bn_relu(channels, channels, 3, norm), nn.Conv2d(channels, num_classes, 1))


class MaskGatedResidual(nn.Module):
    """``x + mask * f(x)``, f = (BN, ReLU, 3x3 conv) twice: features near the object, as the
    previous scale predicted it, are enhanced (Fig. 2)."""

    def __init__(self, channels: int, norm: NormLayer):
        super().__init__()
        self.body = nn.Sequential(
            norm(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1),
            norm(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + mask * self.body(x)


class AttentionModule(nn.Module):
    """One attention module of Fig. 2.

    ``forward(skip, context, temporal, previous_logits)`` -> (context, features, logits): the
    new top-down context (lateral + upsampled context, passed to the next module), the attended
    features (to the fusion) and this scale's side prediction.
    """

    def __init__(self, skip_channels: int, channels: int, temporal_channels: int, num_classes: int,
                 norm: NormLayer, attention: bool = True):
        super().__init__()
        self.temporal_channels = temporal_channels
        self.lateral = conv_bn_relu(skip_channels, channels, 1, norm)
        self.top_down = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)
        self.fuse = conv_bn_relu(channels + temporal_channels, channels, 3, norm)
        self.attend = MaskGatedResidual(channels, norm) if attention else None
        self.score = ScoreHead(channels, num_classes, norm)

    def forward(self, skip: torch.Tensor, context: torch.Tensor, temporal: torch.Tensor | None,
                previous_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lateral = self.lateral(skip)
        context = lateral + resize_to(self.top_down(context), lateral.shape)
        if self.temporal_channels:
            if temporal is None:
                n, _, h, w = context.shape
                temporal = context.new_zeros(n, self.temporal_channels, h, w)
            x = torch.cat([context, resize_to(temporal, context.shape)], 1)
        elif temporal is not None:
            raise ValueError("this SSB was built without temporal inputs (temporal channels 0)")
        else:
            x = context
        x = self.fuse(x)
        if self.attend is not None:       # the previous scale's prediction guides this one
            x = self.attend(x, foreground_probability(resize_to(previous_logits, context.shape)))
        return context, x, self.score(x)


class SpatialSegmentationBranch(nn.Module):
    """SSB: ``forward(frame [N, 3, H, W], temporal=None)`` -> five logit maps [N, C, H, W]
    (PPM, three attention modules, fusion; the last is the final prediction).

    ``temporal``: the TCB's features, coarse to fine (``TemporalOutput.features``), or None.
    """

    def __init__(self, encoder: ResNetTrunk, temporal_channels: Sequence[int] = (512, 256, 64),
                 ppm_bins: Sequence[int] = (1, 2, 3, 6), ppm_channels: int = 512,
                 channels: int = 256, num_classes: int = 2, fusion_head: str = "conv3x3",
                 norm: NormLayer = nn.BatchNorm2d, attention: bool = True):
        super().__init__()
        if len(temporal_channels) != 3:
            raise ValueError(f"temporal_channels needs 3 widths (one per attention module), got "
                             f"{list(temporal_channels)}")
        self.encoder = encoder
        c2, c3, c4, c5 = encoder.channels
        self.ppm = PyramidPooling(c5, ppm_bins, ppm_channels, channels, norm)
        self.ppm_score = ScoreHead(channels, num_classes, norm)
        self.attention = nn.ModuleList(
            AttentionModule(skip, channels, t, num_classes, norm, attention)
            for skip, t in zip((c4, c3, c2), temporal_channels))
        if fusion_head == "conv3x3":  # paper: "a 3x3 convolution layer to produce the final ..."
            self.fusion = nn.Conv2d(4 * channels, num_classes, 3, padding=1)
        elif fusion_head == "conv3x3_bn_relu_conv1x1":  # authors' code
            self.fusion = nn.Sequential(conv_bn_relu(4 * channels, channels, 3, norm),
                                        nn.Conv2d(channels, num_classes, 1))
        else:
            raise ValueError(f"unknown fusion_head {fusion_head!r}")
        for name, module in self.named_children():
            if name != "encoder":
                init_new_layers(module)
        for conv in self._logit_layers():  # every map starts near p = 0.5 (loss ~ log 2)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def _logit_layers(self) -> list[nn.Conv2d]:
        heads = [self.ppm_score, *(m.score for m in self.attention)]
        fusion = self.fusion if isinstance(self.fusion, nn.Conv2d) else self.fusion[-1]
        return [h[-1] for h in heads] + [fusion]

    def forward(self, frame: torch.Tensor,
                temporal: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        res2, res3, res4, res5 = self.encoder(frame)
        context = self.ppm(res5)
        logits = [self.ppm_score(context)]
        features = [context]
        if temporal is None:
            temporal = (None, None, None)
        elif len(temporal) != 3:
            raise ValueError(f"expected 3 temporal feature maps (coarse to fine), got {len(temporal)}")
        for module, skip, t in zip(self.attention, (res4, res3, res2), temporal):
            context, x, side = module(skip, context, t, logits[-1])
            logits.append(side)
            features.append(x)
        fused = torch.cat([resize_to(f, res2.shape) for f in reversed(features)], 1)
        logits.append(self.fusion(fused))
        return [resize_to(m, frame.shape) for m in logits]


def build_spatial_branch(cfg: SpatialConfig, temporal_channels: Sequence[int] = (512, 256, 64)
                         ) -> SpatialSegmentationBranch:
    """The SSB from its config, its encoder loaded from ``cfg.backbone.weights`` when set.
    ``temporal_channels`` = the TCB's ``up_channels``; (0, 0, 0) builds a purely spatial SSB."""
    b = cfg.backbone
    mg = cfg.res5_multi_grid
    if not mg:
        raise ValueError("spatial.res5_multi_grid needs at least one factor, e.g. [1, 2, 1]")
    encoder = build_resnet_trunk(
        b.blocks, width_div=b.width_div, frozen_bn=cfg.frozen_bn,
        maxpool_ceil_mode=b.maxpool_ceil_mode,
        res4_dilations=[cfg.res4_dilation] * b.blocks[2],
        res5_dilations=[cfg.res5_dilation * mg[i % len(mg)] for i in range(b.blocks[3])],
        weights=b.weights)
    return SpatialSegmentationBranch(encoder, temporal_channels, cfg.ppm_bins, cfg.ppm_channels,
                                     cfg.channels, cfg.num_classes, cfg.fusion_head,
                                     norm_layer(cfg.frozen_bn), cfg.attention)
