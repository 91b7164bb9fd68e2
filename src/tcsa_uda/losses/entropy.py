"""Target entropy minimisation (the MinEnt baseline of ADVENT, Vu et al., CVPR 2019, eq. 3).

The loss is the normalised Shannon entropy of the softmax prediction, averaged over the batch
and the pixels: ``mean_{b,h,w} sum_c -p log p / log C``, in ``[0, 1]`` (0 for one-hot
predictions, 1 for uniform ones). It reuses :func:`self_information_map`, ADVENT's per-class
entropy map that the ``advent`` discriminators also read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.adversarial import self_information_map
from tcsa_uda.precision import float32


@float32
def entropy_map(logits: Tensor) -> Tensor:
    """Per-pixel normalised prediction entropy ``sum_c -p log p / log C``.

    Args:
        logits: Segmentation logits, shape ``(B, C, H, W)`` with ``C >= 2``.

    Returns:
        Map of shape ``(B, H, W)``, values in ``[0, 1]``.

    Raises:
        ConfigError: ``logits`` is not 4-D or has fewer than 2 classes.
    """
    if logits.dim() != 4 or logits.shape[1] < 2:
        raise ConfigError(f"logits: expected shape (B, C, H, W) with C >= 2, found {tuple(logits.shape)}.")
    return self_information_map(torch.softmax(logits, dim=1)).sum(dim=1)


def entropy_loss(logits: Tensor) -> Tensor:
    """Mean normalised prediction entropy: :func:`entropy_map` averaged over batch and pixels.

    Args:
        logits: Segmentation logits, shape ``(B, C, H, W)`` with ``C >= 2``.

    Returns:
        Scalar tensor in ``[0, 1]``.

    Raises:
        ConfigError: ``logits`` is not 4-D or has fewer than 2 classes.
    """
    return entropy_map(logits).mean()
