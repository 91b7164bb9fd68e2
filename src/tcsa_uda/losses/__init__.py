"""Losses of TCSA-UDA (docs/method.md, Losses): a functional core plus thin ``nn.Module`` wrappers.

- :mod:`~tcsa_uda.losses.segmentation`: class-balanced cross-entropy + Dice source supervision.
- :mod:`~tcsa_uda.losses.adversarial`: output-space adversarial losses (softmax or entropy maps).
- :mod:`~tcsa_uda.losses.entropy`: target entropy minimisation (the MinEnt baseline).
- :mod:`~tcsa_uda.losses.prototype`: EMA class centres and cross-domain prototype alignment.
- :mod:`~tcsa_uda.losses.vision_language`: vision-language covariance cosine loss (VLCoL).
- :mod:`~tcsa_uda.losses.contrastive`: MPSCL's margin-preserving prototype contrast (a baseline).
"""

from tcsa_uda.losses.adversarial import (
    DISCRIMINATOR_INPUTS,
    DOMAINS,
    SOURCE_LABEL,
    TARGET_LABEL,
    bce_with_domain,
    discriminator_input,
    discriminator_loss,
    generator_adversarial_loss,
    self_information_map,
)
from tcsa_uda.losses.contrastive import (
    SourceClassCenters,
    cosine_pseudo_labels,
    margin_contrastive_loss,
)
from tcsa_uda.losses.entropy import entropy_loss, entropy_map
from tcsa_uda.losses.prototype import (
    EMAPrototypes,
    PrototypeAlignmentLoss,
    batch_centroids,
    downsample_labels,
    prototype_alignment_loss,
)
from tcsa_uda.losses.segmentation import (
    SourceSegmentationLoss,
    check_label_range,
    check_logits_and_labels,
    class_balance_weights,
    dice_loss,
    source_segmentation_loss,
    weighted_cross_entropy,
)
from tcsa_uda.losses.vision_language import (
    FIDELITY_MODES,
    SIMILARITY_KINDS,
    FidelityMode,
    SimilarityKind,
    VLCovarianceLoss,
    covariance_cosine_loss,
    off_diagonal_spread,
    similarity_matrices,
)

__all__ = [
    "DISCRIMINATOR_INPUTS",
    "DOMAINS",
    "FIDELITY_MODES",
    "SIMILARITY_KINDS",
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "EMAPrototypes",
    "FidelityMode",
    "PrototypeAlignmentLoss",
    "SimilarityKind",
    "SourceClassCenters",
    "SourceSegmentationLoss",
    "VLCovarianceLoss",
    "batch_centroids",
    "bce_with_domain",
    "check_label_range",
    "check_logits_and_labels",
    "class_balance_weights",
    "cosine_pseudo_labels",
    "covariance_cosine_loss",
    "dice_loss",
    "discriminator_input",
    "discriminator_loss",
    "downsample_labels",
    "entropy_loss",
    "entropy_map",
    "generator_adversarial_loss",
    "margin_contrastive_loss",
    "off_diagonal_spread",
    "prototype_alignment_loss",
    "self_information_map",
    "similarity_matrices",
    "source_segmentation_loss",
    "weighted_cross_entropy",
]
