"""Output-space PatchGAN discriminator (Tsai et al., "Learning to Adapt Structured Output Space", CVPR 2018).

TCSA-UDA (arXiv 2511.05782) uses two: one on the main and one on the auxiliary prediction, fed
with softmax maps (stage 1) or weighted self-information maps (stage 2), both ``C`` channels.
"""

from __future__ import annotations

from torch import Tensor, nn

from tcsa_uda.errors import ConfigError

__all__ = ["PatchDiscriminator", "build_discriminator"]


class PatchDiscriminator(nn.Module):
    """Five 4x4 convolutions ``64-128-256-512-1`` with strides ``2, 2, 2, 1, 1``, padding 1, LeakyReLU 0.2.

    A ``(B, C, H, W)`` input gives one logit per patch, ``(B, 1, H/8 - 2, W/8 - 2)`` for ``H``
    divisible by 8 (30x30 for 256x256). No normalisation layers, as in the original.

    Args:
        in_channels: channels of the input map (the number of classes).
        width: channels of the first convolution (doubled up to ``8 * width``).

    Raises:
        ConfigError: if ``in_channels`` or ``width`` is not a positive integer.
    """

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"PatchDiscriminator '{name}': expected a positive integer, found {value!r}.")
        channels = [in_channels, width, 2 * width, 4 * width, 8 * width]
        strides = [2, 2, 2, 1]
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels[:-1], channels[1:], strides, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(channels[-1], 1, 4, 1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in_channels, H, W)`` to patch logits ``(B, 1, h', w')`` (no sigmoid)."""
        return self.layers(x)


def build_discriminator(num_classes: int, width: int = 64) -> nn.Module:
    """A :class:`PatchDiscriminator` on ``num_classes``-channel output maps.

    ``width`` is the first layer's channels (paper: 64 -> 64-128-256-512-1); a smaller width
    makes the light CPU configuration affordable.

    Raises:
        ConfigError: if ``num_classes < 2``.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"build_discriminator 'num_classes': expected an integer >= 2, found {num_classes!r}.")
    return PatchDiscriminator(num_classes, width=width)
