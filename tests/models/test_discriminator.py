"""Tests of the output-space PatchGAN discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.models.discriminator import PatchDiscriminator, build_discriminator


@pytest.mark.parametrize(("size", "expected"), [(64, 6), (40, 3)])
def test_output_shape(size: int, expected: int) -> None:
    d = build_discriminator(5)
    out = d(torch.randn(2, 5, size, size))
    assert tuple(out.shape) == (2, 1, expected, expected)


def test_256_input_gives_30x30_patches() -> None:
    d = PatchDiscriminator(3, width=4)  # narrow: same geometry, cheap
    assert tuple(d(torch.zeros(1, 3, 256, 256)).shape) == (1, 1, 30, 30)


def test_layer_configuration() -> None:
    d = build_discriminator(4)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[0].in_channels == 4
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0])
def test_rejects_bad_num_classes(num_classes) -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_discriminator(num_classes)
