"""Tests of tcsa_uda.losses.adversarial with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.adversarial import (
    SOURCE_LABEL,
    TARGET_LABEL,
    bce_with_domain,
    discriminator_input,
    discriminator_loss,
    generator_adversarial_loss,
    self_information_map,
)


def _softplus(x: float) -> float:
    """BCE with logits against label 0 is softplus(x); against label 1 it is softplus(-x)."""
    return math.log1p(math.exp(x))


def test_label_convention() -> None:
    assert SOURCE_LABEL == 0.0
    assert TARGET_LABEL == 1.0


def test_self_information_uniform_sums_to_one() -> None:
    prob = torch.full((2, 4, 3, 3), 0.25)
    info = self_information_map(prob)
    torch.testing.assert_close(info, torch.full_like(prob, 0.25))  # -(1/4) log2(1/4) / 2
    torch.testing.assert_close(info.sum(dim=1), torch.ones(2, 3, 3))


def test_self_information_one_hot_is_zero_with_finite_gradient() -> None:
    prob = torch.nn.functional.one_hot(torch.tensor([[[0, 2]]]), 3).permute(0, 3, 1, 2).float()
    prob.requires_grad_(True)
    info = self_information_map(prob)
    assert torch.equal(info.detach(), torch.zeros_like(info))
    info.sum().backward()
    assert prob.grad is not None and torch.isfinite(prob.grad).all()


def test_self_information_known_value() -> None:
    prob = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    expected = torch.tensor([0.5, -0.75 * math.log2(0.75)]).view(1, 2, 1, 1)  # log2(C) = 1
    torch.testing.assert_close(self_information_map(prob), expected)


def test_discriminator_input_kinds() -> None:
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)  # softmax (.25, .75)
    torch.testing.assert_close(discriminator_input(logits, "softmax"), torch.tensor([0.25, 0.75]).view(1, 2, 1, 1))
    ent = discriminator_input(logits, "entropy")
    assert ent.sum().item() == pytest.approx(0.5 - 0.75 * math.log2(0.75), rel=1e-5)


def test_bce_with_domain_convention() -> None:
    zero = torch.zeros(1, 1, 2, 2)
    assert bce_with_domain(zero, "source").item() == pytest.approx(math.log(2.0))
    confident_target = torch.full((1, 1, 2, 2), 3.0)  # logit > 0 means "target" (label 1)
    assert bce_with_domain(confident_target, "target").item() == pytest.approx(_softplus(-3.0), rel=1e-5)
    assert bce_with_domain(confident_target, "source").item() == pytest.approx(_softplus(3.0), rel=1e-5)


def test_generator_adversarial_loss_labels_target_as_source() -> None:
    d_main, d_aux = torch.full((2, 1, 3, 3), 1.5), torch.full((2, 1, 3, 3), -0.5)
    expected = 0.003 * _softplus(1.5) + 0.00002 * _softplus(-0.5)
    assert generator_adversarial_loss(d_main, d_aux).item() == pytest.approx(expected, rel=1e-5)
    custom = generator_adversarial_loss(d_main, d_aux, w_main=1.0, w_aux=2.0).item()
    assert custom == pytest.approx(_softplus(1.5) + 2.0 * _softplus(-0.5), rel=1e-5)


def test_discriminator_loss_value() -> None:
    d_s, d_t = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 1.0)
    expected = 0.5 * _softplus(2.0) + 0.5 * _softplus(-1.0)
    assert discriminator_loss(d_s, d_t).item() == pytest.approx(expected, rel=1e-5)


def test_invalid_options_list_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"softmax, entropy.*'logit'"):
        discriminator_input(torch.zeros(1, 2, 1, 1), "logit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"source, target.*'src'"):
        bce_with_domain(torch.zeros(1), "src")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="C >= 2"):
        self_information_map(torch.ones(1, 1, 2, 2))


def test_released_self_information_is_log2_with_epsilon() -> None:
    prob = torch.tensor([0.0, 0.25, 0.75]).view(1, 3, 1, 1)
    expected = -prob * torch.log2(prob + 1e-7) / math.log2(3)
    torch.testing.assert_close(self_information_map(prob, "released"), expected, rtol=0, atol=0)
    assert self_information_map(prob, "released")[0, 0].item() == 0.0
    one = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    # log2(1 + 1e-7) rounds to 0 in float32: both modes give 0 for a one-hot distribution
    assert self_information_map(one, "released").abs().max().item() < 2e-7
    torch.testing.assert_close(self_information_map(prob, "released"), self_information_map(prob), atol=1e-6, rtol=0)
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    torch.testing.assert_close(
        discriminator_input(logits, "entropy", "released"),
        self_information_map(torch.softmax(logits, dim=1), "released"),
    )
    with pytest.raises(ConfigError, match="mode: expected 'paper' or 'released', found 'exact'"):
        self_information_map(prob, "exact")  # type: ignore[arg-type]
