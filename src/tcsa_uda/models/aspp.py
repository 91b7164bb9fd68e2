"""DeepLab-v2 ASPP classifier (Chen et al., TPAMI 2018).

TCSA-UDA (arXiv 2511.05782) puts it on layer3 as the auxiliary head that produces ``P_aux``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError

__all__ = ["ASPPClassifier"]


class ASPPClassifier(nn.Module):
    """Parallel 3x3 atrous convolutions straight to class logits, summed.

    Args:
        in_channels: channels of the input feature map.
        num_classes: number of output classes ``C`` (background included).
        dilations: one 3x3 convolution per dilation rate (DeepLab-v2: 6, 12, 18, 24).

    Raises:
        ConfigError: if a channel count or a dilation is not positive, or ``dilations`` is empty.
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigError(
                f"ASPPClassifier: expected positive in_channels and num_classes, found {in_channels} and {num_classes}."
            )
        if not dilations or any(d < 1 for d in dilations):
            raise ConfigError(f"ASPPClassifier 'dilations': expected positive rates, found {list(dilations)}.")
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:
            if isinstance(conv, nn.Conv2d) and conv.bias is not None:
                nn.init.normal_(conv.weight, 0.0, 0.01)  # DeepLab-v2 classifier initialisation
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map features ``(B, in_channels, h, w)`` to logits ``(B, num_classes, h, w)``."""
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)  # (B, C, h, w)
