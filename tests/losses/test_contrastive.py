"""Tests of MPSCL's margin contrastive loss, pseudo-labels and class centres (tcsa_uda.losses.contrastive)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.losses.contrastive import SourceClassCenters, cosine_pseudo_labels, margin_contrastive_loss

CENTERS = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # unit directions e1, e2 (scale is irrelevant)


def _map(pixels: list[tuple[float, float]]) -> torch.Tensor:
    """N pixels of 2-D features -> (1, 2, 1, N)."""
    return torch.tensor(pixels).t().reshape(1, 2, 1, len(pixels))


def _labels(values: list[int]) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 1, len(values))


def test_without_margin_it_is_cross_entropy_over_cosine_logits():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(2, 6, 3, 4, generator=gen)
    y = torch.randint(0, 5, (2, 3, 4), generator=gen)
    centers = torch.randn(5, 6, generator=gen)
    logits = F.normalize(f.permute(0, 2, 3, 1).reshape(-1, 6), dim=1) @ F.normalize(centers, dim=1).t()
    ce = F.cross_entropy(logits, y.reshape(-1))
    assert margin_contrastive_loss(f, y, centers, margin=0.0).item() == pytest.approx(ce.item(), rel=1e-5)
    # T = 2, base 1: logits / 2 and the loss scaled by 2
    ce_t = 2.0 * F.cross_entropy(logits / 2.0, y.reshape(-1))
    assert margin_contrastive_loss(f, y, centers, 0.0, temperature=2.0).item() == pytest.approx(ce_t.item(), rel=1e-5)
    # released: the same maxima when m = 0, so only the 1e-4 inside the log differs
    released = margin_contrastive_loss(f, y, centers, 0.0, mode="released").item()
    assert released == pytest.approx(ce.item(), abs=1e-3) and released != pytest.approx(ce.item(), abs=1e-7)


def test_hand_computed_margin_loss_paper_and_released():
    """One pixel on its own centre e1, the other centre e2: cos = (1, 0)."""
    m = 0.4
    f, y = _map([(1.0, 0.0)]), _labels([0])
    sin0 = math.sqrt(1e-4)  # 1 - cos^2 = 0, clamped to 1e-4
    phi0 = math.cos(m) - sin0 * math.sin(m)
    paper = margin_contrastive_loss(f, y, CENTERS, m).item()
    assert paper == pytest.approx(math.log(1.0 + math.exp(-phi0)), rel=1e-5)  # -log(e^phi0 / (e^phi0 + e^0))
    assert paper > margin_contrastive_loss(f, y, CENTERS, 0.0).item()  # the margin makes a correct pixel cost more
    # released: the positive logit minus its own maximum is 0 and the negative cos - max cos = -1,
    # so the margin has no effect on this pixel: loss = log(1 + e^-1 + 1e-4)
    released = margin_contrastive_loss(f, y, CENTERS, m, mode="released").item()
    assert released == pytest.approx(math.log(1.0 + math.exp(-1.0) + 1e-4), rel=1e-5)


def test_angle_past_pi_uses_the_linear_fallback():
    """cos_y = -1 <= cos(pi - m): phi_y = cos_y - m sin(pi - m) (ArcFace's easy_margin=False)."""
    m = 0.3
    f, y = _map([(-1.0, 0.0)]), _labels([0])
    phi = -1.0 - m * math.sin(math.pi - m)
    expected = -(phi - math.log(math.exp(phi) + math.exp(0.0)))
    assert margin_contrastive_loss(f, y, CENTERS, m).item() == pytest.approx(expected, rel=1e-5)


def test_target_mask_averages_over_the_selected_pixels_only():
    f, y = _map([(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]), _labels([0, 1, 0])
    each = [margin_contrastive_loss(f[..., i : i + 1], y[..., i : i + 1], CENTERS, 0.2).item() for i in range(3)]
    mask = torch.tensor([True, False, True]).reshape(1, 1, 3)
    got = margin_contrastive_loss(f, y, CENTERS, 0.2, mask=mask).item()
    assert got == pytest.approx((each[0] + each[2]) / 2, rel=1e-5)
    released = margin_contrastive_loss(f, y, CENTERS, 0.2, mask=mask, mode="released")
    each_r = [
        margin_contrastive_loss(f[..., i : i + 1], y[..., i : i + 1], CENTERS, 0.2, mode="released").item()
        for i in (0, 2)
    ]
    assert released.item() == pytest.approx(sum(each_r) / (2 + 1e-4), rel=1e-5)
    none = torch.zeros(1, 1, 3, dtype=torch.bool)
    assert margin_contrastive_loss(f, y, CENTERS, 0.2, mask=none).item() == 0.0


def test_gradient_reaches_the_features_not_the_centres():
    f = _map([(1.0, 0.5), (0.2, 1.0)]).requires_grad_(True)
    centers = CENTERS.clone().requires_grad_(True)
    margin_contrastive_loss(f, _labels([0, 1]), centers, 0.4).backward()
    assert f.grad is not None and f.grad.abs().sum() > 0 and centers.grad is None


def test_bad_inputs():
    f, y = _map([(1.0, 0.0)]), _labels([0])
    with pytest.raises(ConfigError, match="margin >= 0 and temperatures > 0"):
        margin_contrastive_loss(f, y, CENTERS, -0.1)
    with pytest.raises(ConfigError, match=r"centers: expected shape \(C, 2\)"):
        margin_contrastive_loss(f, y, torch.zeros(2, 3), 0.1)
    with pytest.raises(DatasetError):
        margin_contrastive_loss(f, _labels([2]), CENTERS, 0.1)
    with pytest.raises(ConfigError, match="mode"):
        margin_contrastive_loss(f, y, CENTERS, 0.1, mode="exact")


def test_pseudo_labels_keep_pixels_whose_top1_top2_gap_exceeds_the_threshold():
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # e1, e2, diagonal
    # pixel 1: cos = (1, 0, 0.707): class 0, gap 0.293; pixel 2: (0.781, 0.625, 0.994): class 2, gap 0.213
    f = _map([(1.0, 0.0), (1.0, 0.8)])
    labels, mask = cosine_pseudo_labels(f, centers, 0.25)
    assert labels.reshape(-1).tolist() == [0, 2] and mask.reshape(-1).tolist() == [True, False]
    _, mask = cosine_pseudo_labels(f, centers, 0.2)
    assert mask.reshape(-1).tolist() == [True, True]
    with pytest.raises(ConfigError, match="C >= 2"):
        cosine_pseudo_labels(f, centers[:1], 0.2)


def test_centres_first_sighting_ema_absent_class_and_no_gradient():
    centers = SourceClassCenters(3, 2, momentum=0.2)
    f = _map([(1.0, 0.0), (3.0, 0.0), (0.0, 2.0)]).requires_grad_(True)
    out = centers.update(f, _labels([0, 0, 1]))
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))  # first sighting: the mean
    assert not out.requires_grad and centers.seen.tolist() == [True, True, False]
    out = centers.update(_map([(4.0, 4.0)]), _labels([0]))
    # class 0: 0.2 * (2, 0) + 0.8 * (4, 4); class 1 absent: unchanged
    torch.testing.assert_close(out, torch.tensor([[3.6, 3.2], [0.0, 2.0], [0.0, 0.0]]))
    restored = SourceClassCenters(3, 2)
    restored.load_state_dict(centers.state_dict())
    assert torch.equal(restored.centers, centers.centers) and torch.equal(restored.seen, centers.seen)
    with pytest.raises(ConfigError, match="center_momentum"):
        SourceClassCenters(3, 2, momentum=1.5)
