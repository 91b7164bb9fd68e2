"""Networks of tcsa-uda: dilated ResNet backbones, the TCSA-UDA heads, discriminators, registry."""

from tcsa_uda.models.aspp import ASPPClassifier
from tcsa_uda.models.backbones import (
    DilatedResNet,
    deeplabv2_resnet101,
    freeze_bn_affine,
    light_resnet,
    load_backbone_weights,
)
from tcsa_uda.models.discriminator import DISCRIMINATOR_NORMS, PatchDiscriminator, build_discriminator
from tcsa_uda.models.factory import available_models, build_segmenter, register_segmenter
from tcsa_uda.models.segmenter import (
    MODEL_VARIANTS,
    PARAMETER_GROUPS,
    SegmenterOutput,
    TCSASegmenter,
    parameter_groups,
    upsample_logits,
)
from tcsa_uda.models.tcsa_head import (
    DynamicController,
    FusionTransformer,
    GlobalToken,
    MultiHeadAttention,
    SegmentationHead,
    TextProjection,
    VisualEmbeddingHead,
    embedding_schedule,
)

__all__ = [
    "DISCRIMINATOR_NORMS",
    "MODEL_VARIANTS",
    "PARAMETER_GROUPS",
    "ASPPClassifier",
    "DilatedResNet",
    "DynamicController",
    "FusionTransformer",
    "GlobalToken",
    "MultiHeadAttention",
    "PatchDiscriminator",
    "SegmentationHead",
    "SegmenterOutput",
    "TCSASegmenter",
    "TextProjection",
    "VisualEmbeddingHead",
    "available_models",
    "build_discriminator",
    "build_segmenter",
    "deeplabv2_resnet101",
    "embedding_schedule",
    "freeze_bn_affine",
    "light_resnet",
    "load_backbone_weights",
    "parameter_groups",
    "register_segmenter",
    "upsample_logits",
]
