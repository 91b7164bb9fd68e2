"""Output-space adversarial alignment (docs/method.md, Losses 2).

Two PatchGAN discriminators (main and auxiliary output) learn to tell source from target
predictions; the segmenter is trained so that target predictions look like source ones. The
discriminator input ``phi(p)`` is the softmax map in stage 1 (AdaptSegNet, Tsai et al. 2018) and
the weighted self-information map ``-p log2(p) / log2(C)`` in stage 2 (ADVENT, Vu et al. 2019),
as in TCSA-UDA (Maurya et al., arXiv 2511.05782).

Label convention (as in the released code): source = 0, target = 1.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from tcsa_uda.errors import ConfigError
from tcsa_uda.precision import float32
from tcsa_uda.train_config import Fidelity

__all__ = [
    "DISCRIMINATOR_INPUTS",
    "DOMAINS",
    "SOURCE_LABEL",
    "TARGET_LABEL",
    "bce_with_domain",
    "discriminator_input",
    "discriminator_loss",
    "generator_adversarial_loss",
    "self_information_map",
]

SOURCE_LABEL: Final[float] = 0.0
TARGET_LABEL: Final[float] = 1.0

DiscriminatorInput = Literal["softmax", "entropy"]
Domain = Literal["source", "target"]
DISCRIMINATOR_INPUTS: Final[tuple[str, ...]] = ("softmax", "entropy")
DOMAINS: Final[tuple[str, ...]] = ("source", "target")
_DOMAIN_LABEL: Final[dict[str, float]] = {"source": SOURCE_LABEL, "target": TARGET_LABEL}
#: the released code's ``prob_2_entropy`` adds this to ``p`` inside the logarithm
RELEASED_LOG_EPS: Final[float] = 1e-7


@float32
def self_information_map(prob: Tensor, mode: Fidelity = "paper") -> Tensor:
    """Weighted self-information ``-p log2(p) / log2(C)`` per class (ADVENT's entropy map).

    Summed over the class axis it is the entropy normalised to ``[0, 1]``: 1 for a uniform
    distribution, 0 for a one-hot one.

    * ``paper``: ``p`` is clamped to the smallest normal float inside the logarithm only, so
      ``p = 0`` gives exactly 0 with a finite gradient.
    * ``released``: ``-p log2(p + 1e-7) / log2(C)``, the released code's formula (differs from
      ``paper`` by at most ~1e-7 per entry).

    Args:
        prob: Class probabilities, shape ``(B, C, H, W)`` with ``C >= 2``.
        mode: ``"paper"`` or ``"released"``.

    Returns:
        Map of shape ``(B, C, H, W)``, each entry in ``[0, 1 / (e ln C)]`` (``paper``).

    Raises:
        ConfigError: ``prob`` is not 4-D or has fewer than 2 classes, or ``mode`` is unknown.
    """
    if prob.dim() != 4 or prob.shape[1] < 2:
        raise ConfigError(f"prob: expected shape (B, C, H, W) with C >= 2, found {tuple(prob.shape)}.")
    if mode == "released":
        return -prob * torch.log2(prob + RELEASED_LOG_EPS) / math.log2(prob.shape[1])
    if mode != "paper":
        raise ConfigError(f"mode: expected 'paper' or 'released', found {mode!r}.")
    tiny = torch.finfo(prob.dtype).tiny
    return -prob * torch.log(prob.clamp_min(tiny)) / math.log(prob.shape[1])


@float32
def discriminator_input(logits: Tensor, kind: DiscriminatorInput, mode: Fidelity = "paper") -> Tensor:
    """Map logits to the discriminator input ``phi(p)``.

    Args:
        logits: Segmentation logits, shape ``(B, C, H, W)``.
        kind: ``"softmax"`` (stage 1) or ``"entropy"`` (stage 2, :func:`self_information_map`).
        mode: fidelity of the entropy map (``"paper"`` or ``"released"``, :func:`self_information_map`).

    Returns:
        Tensor of shape ``(B, C, H, W)``.

    Raises:
        ConfigError: ``kind`` or ``mode`` is not a valid option or ``logits`` is not 4-D.
    """
    if kind not in DISCRIMINATOR_INPUTS:
        raise ConfigError(f"kind: expected one of {', '.join(DISCRIMINATOR_INPUTS)}, found {kind!r}.")
    if logits.dim() != 4:
        raise ConfigError(f"logits: expected shape (B, C, H, W), found {tuple(logits.shape)}.")
    prob = torch.softmax(logits, dim=1)
    return self_information_map(prob, mode) if kind == "entropy" else prob


@float32
def bce_with_domain(d_out: Tensor, domain: Domain) -> Tensor:
    """Binary cross-entropy (with logits) of discriminator outputs against a constant domain label.

    Args:
        d_out: Discriminator logits of any shape, e.g. ``(B, 1, h, w)``.
        domain: ``"source"`` (label :data:`SOURCE_LABEL` = 0) or ``"target"``
            (:data:`TARGET_LABEL` = 1).

    Returns:
        Scalar mean BCE.

    Raises:
        ConfigError: ``domain`` is not a valid option.
    """
    if domain not in _DOMAIN_LABEL:
        raise ConfigError(f"domain: expected one of {', '.join(DOMAINS)}, found {domain!r}.")
    return F.binary_cross_entropy_with_logits(d_out, torch.full_like(d_out, _DOMAIN_LABEL[domain]))


def generator_adversarial_loss(
    d_main_t: Tensor, d_aux_t: Tensor, w_main: float = 0.003, w_aux: float = 0.00002
) -> Tensor:
    """Segmenter side: target predictions should be classified as source.

    ``w_main BCE(D_main(phi(p_t_main)), source) + w_aux BCE(D_aux(phi(p_t_aux)), source)``.

    Args:
        d_main_t: Main discriminator logits on the target main prediction.
        d_aux_t: Auxiliary discriminator logits on the target auxiliary prediction.
        w_main: Weight of the main term (0.003 in the released code).
        w_aux: Weight of the auxiliary term (0.00002 in the released code).

    Returns:
        Scalar loss.
    """
    return w_main * bce_with_domain(d_main_t, "source") + w_aux * bce_with_domain(d_aux_t, "source")


def discriminator_loss(d_s: Tensor, d_t: Tensor) -> Tensor:
    """Discriminator side: ``0.5 BCE(d_s, source) + 0.5 BCE(d_t, target)``.

    The caller feeds the discriminator detached predictions.

    Args:
        d_s: Discriminator logits on source predictions.
        d_t: Discriminator logits on target predictions.

    Returns:
        Scalar loss.
    """
    return 0.5 * bce_with_domain(d_s, "source") + 0.5 * bce_with_domain(d_t, "target")
