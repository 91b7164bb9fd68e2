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


def test_batch_norm_layout_is_pix2pix() -> None:
    """Released layout: conv(bias) LReLU, then three convs without bias each + BatchNorm + LReLU
    (strides 2, 2, 1), then the final conv with bias."""
    d = build_discriminator(5, norm="batch")
    kinds = [type(m).__name__ for m in d.layers]
    assert kinds == ["Conv2d", "LeakyReLU"] + ["Conv2d", "BatchNorm2d", "LeakyReLU"] * 3 + ["Conv2d"]
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    bns = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [128, 256, 512]
    assert tuple(d(torch.randn(2, 5, 64, 64)).shape) == (2, 1, 6, 6)  # same geometry as norm="none"


def test_batch_norm_initialisation() -> None:
    torch.manual_seed(0)
    d = build_discriminator(5, norm="batch")
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    weights = torch.cat([c.weight.detach().flatten() for c in convs])
    assert float(weights.std()) == pytest.approx(0.02, rel=0.02)
    assert all(float(c.bias.detach().abs().max()) == 0.0 for c in convs if c.bias is not None)
    bn_w = torch.cat([m.weight.detach() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    bn_b = torch.cat([m.bias.detach() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert float(bn_w.mean()) == pytest.approx(1.0, abs=0.01) and float(bn_w.std()) == pytest.approx(0.02, rel=0.1)
    assert float(bn_b.abs().max()) == 0.0


def test_batch_norm_uses_the_statistics_of_each_call() -> None:
    """Train mode: a call's output does not depend on other calls (source and target apart)."""
    torch.manual_seed(0)
    d = build_discriminator(3, width=4, norm="batch").train()
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) + 1.0
    alone = d(a)
    d(b)
    torch.testing.assert_close(d(a), alone)
    assert not torch.allclose(d(torch.cat([a, b]))[:2], alone)


def test_rejects_unknown_norm() -> None:
    with pytest.raises(ConfigError, match="'norm': expected one of none, batch, found 'instance'"):
        build_discriminator(5, norm="instance")
