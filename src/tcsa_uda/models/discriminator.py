"""Output-space PatchGAN discriminator (Tsai et al., "Learning to Adapt Structured Output Space", CVPR 2018).

TCSA-UDA (arXiv 2511.05782) uses two: one on the main and one on the auxiliary prediction, fed
with softmax maps (stage 1) or weighted self-information maps (stage 2), both ``C`` channels.

Two layouts, chosen with ``norm`` (the method picks it from the run's fidelity):

* ``none`` (paper): five 4x4 convolutions with bias, LeakyReLU 0.2 between them, PyTorch's
  default initialisation (AdaptSegNet's discriminator).
* ``batch`` (the authors' released code): the pix2pix ``NLayerDiscriminator`` layout (Isola et al.,
  CVPR 2017) -- the same five convolutions, but the 2nd, 3rd and 4th have no bias and are each
  followed by ``BatchNorm2d``; convolution weights ``N(0, 0.02)``, biases 0, BatchNorm weights
  ``N(1, 0.02)``, BatchNorm biases 0. The BatchNorm layers see one domain per call (source and
  target predictions are never mixed in a batch).
"""

from __future__ import annotations

from typing import Final

from torch import Tensor, nn

from tcsa_uda.errors import ConfigError

__all__ = ["DISCRIMINATOR_NORMS", "PatchDiscriminator", "build_discriminator"]

DISCRIMINATOR_NORMS: Final[tuple[str, ...]] = ("none", "batch")
"""``none``: no normalisation (paper). ``batch``: BatchNorm after convolutions 2-4 (released code)."""

_RELEASED_INIT_STD = 0.02  # pix2pix "normal" initialisation gain


class PatchDiscriminator(nn.Module):
    """Five 4x4 convolutions ``64-128-256-512-1`` with strides ``2, 2, 2, 1, 1``, padding 1, LeakyReLU 0.2.

    A ``(B, C, H, W)`` input gives one logit per patch, ``(B, 1, H/8 - 2, W/8 - 2)`` for ``H``
    divisible by 8 (30x30 for 256x256). With ``norm="none"`` no normalisation layers, as in the
    original; with ``norm="batch"`` the released code's layout and initialisation (module docstring).

    Args:
        in_channels: channels of the input map (the number of classes).
        width: channels of the first convolution (doubled up to ``8 * width``).
        norm: ``none`` or ``batch`` (:data:`DISCRIMINATOR_NORMS`).

    Raises:
        ConfigError: if ``in_channels`` or ``width`` is not a positive integer, or ``norm`` is unknown.
    """

    def __init__(self, in_channels: int, width: int = 64, norm: str = "none") -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"PatchDiscriminator '{name}': expected a positive integer, found {value!r}.")
        if norm not in DISCRIMINATOR_NORMS:
            raise ConfigError(
                f"PatchDiscriminator 'norm': expected one of {', '.join(DISCRIMINATOR_NORMS)}, found {norm!r}."
            )
        self.norm = norm
        channels = [in_channels, width, 2 * width, 4 * width, 8 * width]
        strides = [2, 2, 2, 1]
        layers: list[nn.Module] = []
        for i, (c_in, c_out, stride) in enumerate(zip(channels[:-1], channels[1:], strides, strict=True)):
            if norm == "batch" and i > 0:
                layers += [nn.Conv2d(c_in, c_out, 4, stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            else:
                layers.append(nn.Conv2d(c_in, c_out, 4, stride, padding=1))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv2d(channels[-1], 1, 4, 1, padding=1))
        self.layers = nn.Sequential(*layers)
        if norm == "batch":
            self._reset_parameters_released()

    def _reset_parameters_released(self) -> None:
        """pix2pix ``init_net(..., 'normal', 0.02)``: conv N(0, 0.02) / bias 0, BatchNorm N(1, 0.02) / bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, _RELEASED_INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, _RELEASED_INIT_STD)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in_channels, H, W)`` to patch logits ``(B, 1, h', w')`` (no sigmoid)."""
        return self.layers(x)


def build_discriminator(num_classes: int, width: int = 64, norm: str = "none") -> PatchDiscriminator:
    """A :class:`PatchDiscriminator` on ``num_classes``-channel output maps.

    ``width`` is the first layer's channels (paper: 64 -> 64-128-256-512-1); a smaller width
    makes the light CPU configuration affordable. ``norm`` is ``none`` (paper) or ``batch`` (the
    released code's BatchNorm PatchGAN, :data:`DISCRIMINATOR_NORMS`).

    Raises:
        ConfigError: if ``num_classes < 2`` or ``norm`` is unknown.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"build_discriminator 'num_classes': expected an integer >= 2, found {num_classes!r}.")
    return PatchDiscriminator(num_classes, width=width, norm=norm)
