"""Tests of the DeepLab-v2 ASPP classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.models.aspp import ASPPClassifier


def _branches(head: ASPPClassifier) -> list[nn.Conv2d]:
    convs = [b for b in head.branches if isinstance(b, nn.Conv2d)]
    assert len(convs) == len(head.branches)
    return convs


def _bias(conv: nn.Conv2d) -> Tensor:
    assert conv.bias is not None
    return conv.bias


def test_aspp_is_sum_of_four_dilated_convs() -> None:
    torch.manual_seed(0)
    head = ASPPClassifier(8, 3)
    assert [b.dilation for b in _branches(head)] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    for b in _branches(head):
        torch.nn.init.normal_(_bias(b))
    x = torch.randn(2, 8, 9, 9)
    expected = sum(
        F.conv2d(x, b.weight, b.bias, padding=d, dilation=d)
        for b, d in zip(_branches(head), (6, 12, 18, 24), strict=True)
    )
    out = head(x)
    assert tuple(out.shape) == (2, 3, 9, 9)
    torch.testing.assert_close(out, expected)


def test_aspp_initial_weights_small() -> None:
    head = ASPPClassifier(256, 5)
    w = torch.cat([b.weight.detach().flatten() for b in _branches(head)])
    assert 0.005 < float(w.std()) < 0.015
    assert all(float(_bias(b).detach().abs().sum()) == 0.0 for b in _branches(head))


@pytest.mark.parametrize(("kwargs", "field"), [({"dilations": ()}, "dilations"), ({"dilations": (6, 0)}, "dilations")])
def test_aspp_rejects_bad_dilations(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ASPPClassifier(8, 3, **kwargs)


def test_aspp_rejects_bad_channels() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        ASPPClassifier(8, 0)
