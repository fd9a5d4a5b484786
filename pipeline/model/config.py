"""Typed model configuration (``configs/model/*.yaml``).

The dataclass defaults describe the architecture of the paper's text (Xu et al., CVPR 2019,
Sec. 3); where the text is silent they follow the authors' code. ``configs/model/stcnn_code.yaml``
switches every option where the code differs from the text, which reproduces the authors'
parameter counts; ``configs/model/tiny.yaml`` narrows the same classes for CPU tests.

    cfg = load_config(ModelConfig, "configs/model/stcnn.yaml", ["spatial.num_classes=1"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class BackboneConfig:
    """A ResNet trunk in torchvision's layout (Bottleneck blocks, no classifier)."""

    blocks: list[int] = field(default_factory=lambda: [3, 4, 23, 3])  # ResNet-101
    width_div: int = 1          # divides every channel count of the trunk (tiny CPU models)
    weights: str | None = None  # local torchvision-format ResNet state_dict; None: random init
    maxpool_ceil_mode: bool = False


@dataclass
class TemporalConfig:
    """The temporal coherence branch, i.e. the generator G (Sec. 3.1)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    frozen_bn: bool = False               # every BatchNorm of G uses its running statistics, always
    delta: int = 4                        # previous frames fed to G (3*delta channels)
    first_conv_init: Literal["tile", "tile_mean"] = "tile_mean"  # 3*delta-channel conv1 from RGB
    up_channels: list[int] = field(default_factory=lambda: [512, 256, 64])  # temporal features
    deconv_kernel: Literal[3, 4] = 3
    skips: Literal[2, 3] = 3              # concatenated skips: res4, res3 (+ res2)
    compact_bn_relu: bool = True          # BN + ReLU after the 1x1 compaction convs
    deconv_bn_relu: bool = True           # BN + ReLU after each deconvolution
    deconv_init: Literal["he", "bilinear"] = "he"
    predict_full_resolution: bool = True  # False: the predicted frame stays at 1/4 resolution


@dataclass
class DiscriminatorConfig:
    """The discriminator D: torchvision's Inception-v3, auxiliary head off (Sec. 3.1)."""

    outputs: Literal[1, 2] = 2            # 2-class FC (paper) or one logit (code)
    input_size: list[int] | None = field(default_factory=lambda: [299, 299])  # [H, W]; None: as is
    transform_input: bool = False         # torchvision's ImageNet-normalised -> [-1, 1] mapping
    weights: str | None = None            # local torchvision-format Inception-v3 state_dict
    width_div: int = 1                    # >1: every channel count divided (tiny CPU configs)


@dataclass
class SpatialConfig:
    """The spatial segmentation branch, SSB (Sec. 3.2, Fig. 1-2)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    frozen_bn: bool = True                # every BatchNorm, encoder and decoder (as the code does)
    res4_dilation: int = 2                # res4/res5 at stride 1, dilated: output stride 8
    res5_dilation: int = 2
    res5_multi_grid: list[int] = field(default_factory=lambda: [1, 2, 1])  # res5 per-block factors
    ppm_bins: list[int] = field(default_factory=lambda: [1, 2, 3, 6])
    ppm_channels: int = 512
    channels: int = 256                   # width of the attention modules and of the fusion
    num_classes: Literal[1, 2] = 2        # 2: softmax (Eq. 3); 1: one logit per pixel (code)
    fusion_head: Literal["conv3x3", "conv3x3_bn_relu_conv1x1"] = "conv3x3"
    attention: bool = True                # False: the paper's "no attention module" ablation
                                          # (Table 3): no mask-guided residual in the modules


@dataclass
class ModelConfig:
    """STCNN: both branches (Fig. 1) and the discriminator used to pretrain G."""

    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    detach_temporal: bool = False  # True: the segmentation loss does not reach the TCB (code)
