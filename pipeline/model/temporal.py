"""The temporal coherence branch (TCB), i.e. the generator G of Sec. 3.1.

G sees the delta previous frames concatenated (3*delta channels) and predicts the current
frame (the first term of Eq. 2); its decoder features are the temporal features that the spatial
segmentation branch concatenates in its attention modules (Fig. 1, Fig. 2).

    encoder   ResNet-101, 3*delta input channels            res2 .. res5 (1/4 .. 1/32)
    compact   1x1 convs halving the channels of res5, res4, res3 (and res2 with 3 skips)
    stage 1   3x3 conv + BN + ReLU, stride-2 deconv        -> up1 (512, 1/16)
    stage 2   on [up1, compact(res4)]                       -> up2 (256, 1/8)
    stage 3   on [up2, compact(res3)]                       -> up3 (64, 1/4)
    head      1x1 conv to RGB on up3 (2 skips) or on [up3, compact(res2)] (3 skips), tanh

Paper vs code (see ``configs/model/``): 3x3 deconvolutions, three skips and BN + ReLU after every
convolution and deconvolution in the paper; 4x4 deconvolutions initialised bilinear, two skips,
plain compaction convs (with bias) and no BN after the deconvolutions in the authors' code, whose
prediction stays at 1/4 of the input resolution. The code centre-crops each deconvolution's
2x+2 output to the skip's size; a padding-1 deconvolution cropped at its trailing edge is the
same operation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.backbone import (NormLayer, ResNetTrunk, build_resnet_trunk, init_new_layers,
                                     norm_layer)
from pipeline.model.config import TemporalConfig


class TemporalOutput(NamedTuple):
    frame: torch.Tensor                     # predicted current frame, tanh range [-1, 1]
    features: tuple[torch.Tensor, ...]      # temporal features up1, up2, up3 (coarse to fine)


def fit_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """``x`` brought to spatial ``size``: unchanged, cropped at its trailing edge when at most
    one pixel larger (a stride-2 upsampling of an odd size), bilinearly resized otherwise."""
    h, w = size[-2], size[-1]
    xh, xw = x.shape[-2:]
    if (xh, xw) == (h, w):
        return x
    if 0 <= xh - h <= 1 and 0 <= xw - w <= 1:
        return x[..., :h, :w]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Per-channel bilinear upsampling weights for a ``channels -> channels`` deconvolution."""
    factor = (kernel + 1) // 2
    centre = factor - 1 if kernel % 2 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt1d = 1 - (og - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt1d[:, None] * filt1d[None, :]
    return weight


class UpStage(nn.Module):
    """3x3 conv + BN + ReLU, then a stride-2 deconvolution (+ BN + ReLU in the paper)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, deconv_bn_relu: bool,
                 norm: NormLayer):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                                  norm(out_channels), nn.ReLU(inplace=True))
        # padding 1 (+ output_padding 1 for odd kernels) gives exactly twice the input size.
        self.deconv = nn.ConvTranspose2d(out_channels, out_channels, kernel, stride=2, padding=1,
                                         output_padding=kernel % 2, bias=False)
        self.post = (nn.Sequential(norm(out_channels), nn.ReLU(inplace=True)) if deconv_bn_relu
                     else nn.Identity())

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return fit_to(self.post(self.deconv(self.conv(x))), size)


def compaction(in_channels: int, bn_relu: bool, norm: NormLayer) -> nn.Module:
    """1x1 conv halving the channels "to compact features for efficiency" (Sec. 3.1)."""
    out = in_channels // 2
    if bn_relu:
        return nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False), norm(out),
                             nn.ReLU(inplace=True))
    return nn.Conv2d(in_channels, out, 1)


class TemporalCoherenceBranch(nn.Module):
    """G: ``forward(previous)`` with ``previous`` [N, delta, 3, H, W] (oldest first) or already
    stacked [N, 3*delta, H, W]; returns the predicted frame and the temporal features."""

    def __init__(self, encoder: ResNetTrunk, delta: int,
                 up_channels: tuple[int, int, int] = (512, 256, 64), deconv_kernel: int = 3,
                 skips: int = 3, compact_bn_relu: bool = True,
                 deconv_bn_relu: bool = True, deconv_init: str = "he",
                 predict_full_resolution: bool = True, norm: NormLayer = nn.BatchNorm2d):
        super().__init__()
        if skips not in (2, 3):
            raise ValueError(f"skips must be 2 or 3, got {skips}")
        self.delta = delta
        self.predict_full_resolution = predict_full_resolution
        self.encoder = encoder
        c2, c3, c4, c5 = encoder.channels
        u1, u2, u3 = up_channels
        self.compact5 = compaction(c5, compact_bn_relu, norm)
        self.compact4 = compaction(c4, compact_bn_relu, norm)
        self.compact3 = compaction(c3, compact_bn_relu, norm)
        self.compact2 = compaction(c2, compact_bn_relu, norm) if skips == 3 else None
        self.up1 = UpStage(c5 // 2, u1, deconv_kernel, deconv_bn_relu, norm)
        self.up2 = UpStage(u1 + c4 // 2, u2, deconv_kernel, deconv_bn_relu, norm)
        self.up3 = UpStage(u2 + c3 // 2, u3, deconv_kernel, deconv_bn_relu, norm)
        self.head = nn.Conv2d(u3 + (c2 // 2 if skips == 3 else 0), 3, kernel_size=1)
        for name, module in self.named_children():
            if name != "encoder":
                init_new_layers(module)
        if deconv_init == "bilinear":
            for stage in (self.up1, self.up2, self.up3):
                d = stage.deconv
                with torch.no_grad():
                    d.weight.copy_(bilinear_kernel(d.out_channels, d.kernel_size[0]))
        elif deconv_init != "he":
            raise ValueError(f"deconv_init must be 'he' or 'bilinear', got {deconv_init!r}")

    def stack(self, previous: torch.Tensor) -> torch.Tensor:
        """[N, delta, 3, H, W] -> [N, 3*delta, H, W] (a 4-D input is taken as stacked)."""
        if previous.dim() == 5:
            previous = previous.flatten(1, 2)
        if previous.shape[1] != 3 * self.delta:
            raise ValueError(f"G expects {self.delta} previous RGB frames ({3 * self.delta} channels), "
                             f"got input of shape {tuple(previous.shape)}")
        return previous

    def forward(self, previous: torch.Tensor) -> TemporalOutput:
        x = self.stack(previous)
        res2, res3, res4, res5 = self.encoder(x)
        up1 = self.up1(self.compact5(res5), res4.shape)
        up2 = self.up2(torch.cat([up1, self.compact4(res4)], 1), res3.shape)
        up3 = self.up3(torch.cat([up2, self.compact3(res3)], 1), res2.shape)
        head_in = up3 if self.compact2 is None else torch.cat([up3, self.compact2(res2)], 1)
        frame = self.head(head_in)
        if self.predict_full_resolution:
            frame = F.interpolate(frame, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return TemporalOutput(torch.tanh(frame), (up1, up2, up3))


def build_temporal_branch(cfg: TemporalConfig) -> TemporalCoherenceBranch:
    """G from its config, its encoder loaded from ``cfg.backbone.weights`` when set."""
    b = cfg.backbone
    encoder = build_resnet_trunk(b.blocks, in_channels=3 * cfg.delta, width_div=b.width_div,
                                 frozen_bn=cfg.frozen_bn, maxpool_ceil_mode=b.maxpool_ceil_mode,
                                 weights=b.weights, first_conv_init=cfg.first_conv_init)
    if len(cfg.up_channels) != 3:
        raise ValueError(f"temporal.up_channels needs 3 widths (1/16, 1/8, 1/4), got {cfg.up_channels}")
    return TemporalCoherenceBranch(
        encoder, cfg.delta, tuple(cfg.up_channels), cfg.deconv_kernel, cfg.skips, cfg.compact_bn_relu,
        cfg.deconv_bn_relu, cfg.deconv_init, cfg.predict_full_resolution, norm_layer(cfg.frozen_bn))
