"""STCNN model (Xu et al., CVPR 2019): the temporal coherence branch (generator G), its
discriminator D, the spatial segmentation branch (SSB) and the joint model, built from a
:class:`ModelConfig` (``configs/model/*.yaml``)."""

from pipeline.model.backbone import FrozenBatchNorm2d, PretrainedWeightsError, ResNetTrunk
from pipeline.model.config import (BackboneConfig, DiscriminatorConfig, ModelConfig, SpatialConfig,
                                   TemporalConfig)
from pipeline.model.discriminator import FrameDiscriminator
from pipeline.model.spatial import SpatialSegmentationBranch, foreground_probability
from pipeline.model.stcnn import (STCNN, STCNNOutput, build_discriminator, build_generator, build_ssb,
                                  build_stcnn)
from pipeline.model.temporal import TemporalCoherenceBranch, TemporalOutput

__all__ = [
    "BackboneConfig", "DiscriminatorConfig", "FrameDiscriminator", "FrozenBatchNorm2d", "ModelConfig",
    "PretrainedWeightsError", "ResNetTrunk", "STCNN", "STCNNOutput", "SpatialConfig",
    "SpatialSegmentationBranch", "TemporalCoherenceBranch", "TemporalConfig", "TemporalOutput",
    "build_discriminator", "build_generator", "build_ssb", "build_stcnn", "foreground_probability",
]
