"""Tests of tcsa_uda.losses.entropy (hand-computed values, range, errors)."""

from __future__ import annotations

import math

import pytest
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses import entropy_loss


def test_uniform_prediction_has_entropy_one() -> None:
    assert entropy_loss(torch.zeros(2, 5, 3, 3)).item() == pytest.approx(1.0)


def test_confident_prediction_has_entropy_zero() -> None:
    logits = torch.full((1, 3, 2, 2), -100.0)
    logits[:, 1] = 100.0
    assert entropy_loss(logits).item() == pytest.approx(0.0, abs=1e-12)


def test_hand_computed_two_classes_and_pixel_mean() -> None:
    # pixel 1: p = (0.25, 0.75); pixel 2: uniform
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = math.log(3.0)
    h1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    assert entropy_loss(logits).item() == pytest.approx((h1 + 1.0) / 2, rel=1e-6)


def test_gradient_lowers_entropy() -> None:
    logits = torch.tensor([[[[0.3]], [[0.1]], [[-0.2]]]], requires_grad=True)
    loss = entropy_loss(logits)
    loss.backward()
    grad = logits.grad
    assert grad is not None
    with torch.no_grad():
        assert entropy_loss(logits - 0.5 * grad).item() < loss.item()


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 4, 4)])
def test_bad_shapes_are_refused(shape) -> None:
    with pytest.raises(ConfigError, match=r"expected shape \(B, C, H, W\) with C >= 2"):
        entropy_loss(torch.zeros(shape))


def test_entropy_map_is_per_pixel_and_averages_to_the_loss() -> None:
    from tcsa_uda.losses import entropy_map

    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    ent = entropy_map(logits)
    assert ent.shape == (2, 3, 5) and bool(((ent >= 0) & (ent <= 1)).all())
    assert ent.mean().item() == pytest.approx(entropy_loss(logits).item())
