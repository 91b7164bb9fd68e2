"""Tests of tcsa_uda.losses.prototype with hand-computed values."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.losses.prototype import (
    EMAPrototypes,
    PrototypeAlignmentLoss,
    batch_centroids,
    downsample_labels,
    prototype_alignment_loss,
)


def _features() -> torch.Tensor:
    """(1, 2, 2, 2): channel 0 = [[1, 2], [3, 4]], channel 1 = 10 x channel 0."""
    c0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    return torch.stack([c0, 10 * c0])[None]


LABELS = torch.tensor([[[0, 0], [1, 2]]])  # class 3 absent


def test_downsample_labels_nearest() -> None:
    labels = torch.arange(16).view(1, 4, 4)
    out = downsample_labels(labels, (2, 2))
    assert out.dtype == torch.int64
    assert torch.equal(out, torch.tensor([[[0, 2], [8, 10]]]))
    assert torch.equal(downsample_labels(LABELS, (2, 2)), LABELS)


def test_batch_centroids_known_values() -> None:
    centroids, present = batch_centroids(_features(), LABELS, 4)
    expected = torch.tensor([[1.5, 15.0], [3.0, 30.0], [4.0, 40.0], [0.0, 0.0]])
    torch.testing.assert_close(centroids, expected)
    assert present.tolist() == [True, True, True, False]


def test_batch_centroids_pools_over_batch() -> None:
    feats = torch.cat([_features(), torch.full((1, 2, 2, 2), 7.0)])
    labels = torch.tensor([[[0, 0], [1, 2]], [[1, 1], [1, 1]]])
    centroids, _ = batch_centroids(feats, labels, 3)
    torch.testing.assert_close(centroids[1], torch.tensor([(3.0 + 4 * 7) / 5, (30.0 + 4 * 7) / 5]))


def test_ema_first_update_from_zero_and_absent_class_keeps_centre() -> None:
    ema = EMAPrototypes(4, 2, momentum=0.01)
    assert torch.equal(ema.centers, torch.zeros(4, 2))
    c1 = ema.update(_features(), LABELS)
    torch.testing.assert_close(c1[:3], 0.99 * torch.tensor([[1.5, 15.0], [3.0, 30.0], [4.0, 40.0]]))
    torch.testing.assert_close(ema.centers, c1.detach())
    before = ema.centers.clone()
    c2 = ema.update(torch.full((1, 2, 2, 2), 2.0), torch.zeros(1, 2, 2, dtype=torch.long))
    torch.testing.assert_close(c2[0], 0.01 * before[0] + 0.99 * torch.tensor([2.0, 2.0]))
    assert torch.equal(c2[1:].detach(), before[1:])  # classes 1-3 absent: centres kept exactly


def test_ema_centres_carry_gradient_buffer_detached() -> None:
    feats = _features().requires_grad_(True)
    ema = EMAPrototypes(4, 2, momentum=0.01)
    centers = ema.update(feats, LABELS)
    assert centers.requires_grad and not ema.centers.requires_grad
    centers[:, 0].sum().backward()
    assert feats.grad is not None
    # d c_k / d f(pixel) = (1 - m) / n_k on channel 0; class 0 has 2 pixels, classes 1 and 2 one each.
    expected = torch.tensor([[0.99 / 2, 0.99 / 2], [0.99, 0.99]])
    torch.testing.assert_close(feats.grad[0, 0], expected)
    torch.testing.assert_close(feats.grad[0, 1], torch.zeros(2, 2))


def test_prototype_alignment_loss_value() -> None:
    c_s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    c_t = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    assert prototype_alignment_loss(c_s, c_t).item() == pytest.approx((1 + 4) / 2 + (9 + 1) / 2)


def test_prototype_alignment_module_full_resolution_labels() -> None:
    loss_fn = PrototypeAlignmentLoss(4, 2)
    y_s = LABELS.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # (1, 4, 4) -> LABELS after nearest
    f_t = torch.zeros(1, 2, 2, 2, requires_grad=True)
    f_s = _features().requires_grad_(True)
    loss = loss_fn(f_s, y_s, f_t, torch.zeros(1, 4, 4, dtype=torch.long))
    # c_t stays 0 (mu_t = 0 for class 0, absent classes keep the zero initial centre).
    c_s = [0.99 * torch.tensor(v) for v in ([1.5, 15.0], [3.0, 30.0], [4.0, 40.0])]
    expected = sum(float((c**2).mean()) for c in c_s)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert f_s.grad is not None and f_s.grad.abs().sum() > 0
    assert f_t.grad is not None


def test_errors() -> None:
    with pytest.raises(ConfigError, match="momentum"):
        EMAPrototypes(3, 2, momentum=1.5)
    with pytest.raises(ConfigError, match="expected 3 channels"):
        EMAPrototypes(4, 3).update(_features(), LABELS)
    with pytest.raises(DatasetError, match="4"):
        batch_centroids(_features(), torch.tensor([[[0, 4], [1, 2]]]), 4)
    with pytest.raises(ConfigError, match="labels: expected shape"):
        batch_centroids(_features(), torch.zeros(1, 3, 3, dtype=torch.long), 4)
    with pytest.raises(ConfigError, match="integer"):
        downsample_labels(torch.zeros(1, 4, 4), (2, 2))
    with pytest.raises(ConfigError, match="same shape"):
        prototype_alignment_loss(torch.zeros(2, 3), torch.zeros(3, 3))
