"""Tests of tcsa_uda.losses.vision_language with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.losses.vision_language import VLCovarianceLoss, covariance_cosine_loss


def test_covariance_cosine_zero_when_equal_or_row_scaled() -> None:
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(4, 6, generator=gen)
    assert covariance_cosine_loss(text.clone(), text).item() == pytest.approx(0.0, abs=1e-6)
    scaled = torch.tensor([2.0, 5.0, 0.5, 3.0])[:, None] * text
    assert covariance_cosine_loss(scaled, text).item() == pytest.approx(0.0, abs=1e-6)


def test_covariance_cosine_two_class_known_value() -> None:
    # P = I -> S_v = [1, 0, 0, 1]; T rows (1, 0), (1, 1)/sqrt2 -> S_t = [1, r, r, 1], r = 1/sqrt2.
    # cos = 2 / (sqrt(2) * sqrt(1 + 1/2 + 1/2 + 1)) = sqrt(2/3).
    protos = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    text = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert covariance_cosine_loss(protos, text).item() == pytest.approx(1 - math.sqrt(2 / 3), rel=1e-6)


def test_covariance_cosine_bad_shapes() -> None:
    with pytest.raises(ConfigError, match=r"\(2, 3\) and \(3, 3\)"):
        covariance_cosine_loss(torch.zeros(2, 3), torch.zeros(3, 3))


def _fmap(pixels: list[list[tuple[float, float]]]) -> torch.Tensor:
    """(H, W, D) nested lists -> (1, D, H, W)."""
    return torch.tensor(pixels).permute(2, 0, 1)[None]


TEXT = torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 1.0]])


def test_bank_initialisation_and_ema() -> None:
    vl = VLCovarianceLoss(3, dim=2, bank_momentum=0.5)
    f1 = _fmap([[(1.0, 0.0), (3.0, 0.0)], [(0.0, 1.0), (0.0, 3.0)]])
    loss1 = vl(f1, torch.tensor([[[0, 0], [1, 1]]]), TEXT)
    # First sighting: p~ = p (not blended with the zero initial bank).
    torch.testing.assert_close(vl.bank, torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    assert vl.seen.tolist() == [True, True, False]
    expected1 = covariance_cosine_loss(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), TEXT[:2])
    assert loss1.item() == pytest.approx(expected1.item(), rel=1e-6)

    f2 = torch.full((1, 2, 2, 2), 4.0)
    loss2 = vl(f2, torch.tensor([[[0, 0], [2, 2]]]), TEXT)
    # class 0: 0.5 * (2, 0) + 0.5 * (4, 4) = (3, 2); class 2 first seen: (4, 4); class 1 from the bank.
    protos = torch.tensor([[3.0, 2.0], [0.0, 2.0], [4.0, 4.0]])
    torch.testing.assert_close(vl.bank, protos)
    assert vl.seen.tolist() == [True, True, True]
    assert loss2.item() == pytest.approx(covariance_cosine_loss(protos, TEXT).item(), rel=1e-6)


def test_labels_downsampled_inside() -> None:
    vl = VLCovarianceLoss(3, dim=2)
    f = _fmap([[(1.0, 0.0), (3.0, 0.0)], [(0.0, 1.0), (0.0, 3.0)]])
    full = torch.tensor([[[0, 0], [1, 1]]]).repeat_interleave(3, dim=1).repeat_interleave(3, dim=2)  # (1, 6, 6)
    vl(f, full, TEXT)
    torch.testing.assert_close(vl.bank[:2], torch.tensor([[2.0, 0.0], [0.0, 2.0]]))


def test_fewer_than_two_classes_gives_backward_safe_zero() -> None:
    vl = VLCovarianceLoss(3, dim=2)
    text = TEXT.clone().requires_grad_(True)
    loss = vl(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), text)
    assert loss.item() == 0.0
    loss.backward()
    assert text.grad is not None and torch.equal(text.grad, torch.zeros_like(text))


def _grad_run(mode: str) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(1)
    f_vis = torch.randn(2, 4, 3, 3, generator=gen, requires_grad=True)
    text = torch.randn(3, 4, generator=gen, requires_grad=True)
    labels = torch.tensor([[0, 0, 1], [1, 2, 2], [0, 1, 2]]).repeat(2, 1, 1)
    vl = VLCovarianceLoss(3, dim=4, bank_momentum=0.5, mode=mode)  # type: ignore[arg-type]
    loss = vl(f_vis, labels, text)
    loss.backward()
    return loss.item(), f_vis.grad, text.grad


def test_paper_mode_sends_gradient_to_visual_features() -> None:
    value, f_grad, t_grad = _grad_run("paper")
    assert value > 1e-4
    assert f_grad is not None and f_grad.abs().sum() > 0
    assert t_grad is not None and t_grad.abs().sum() > 0


def test_released_mode_detaches_visual_side_only() -> None:
    paper_value, _, _ = _grad_run("paper")
    value, f_grad, t_grad = _grad_run("released")
    assert value == pytest.approx(paper_value)  # same value, different gradient flow
    assert f_grad is None or torch.equal(f_grad, torch.zeros_like(f_grad))
    assert t_grad is not None and t_grad.abs().sum() > 0


def test_state_dict_holds_bank() -> None:
    vl = VLCovarianceLoss(3, dim=2)
    vl(_fmap([[(1.0, 0.0), (3.0, 0.0)], [(0.0, 1.0), (0.0, 3.0)]]), torch.tensor([[[0, 0], [1, 1]]]), TEXT)
    restored = VLCovarianceLoss(3, dim=2)
    restored.load_state_dict(vl.state_dict())
    assert torch.equal(restored.bank, vl.bank) and torch.equal(restored.seen, vl.seen)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match=r"paper, released.*'exact'"):
        VLCovarianceLoss(3, mode="exact")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="bank_momentum"):
        VLCovarianceLoss(3, bank_momentum=-0.1)
    vl = VLCovarianceLoss(3, dim=2)
    with pytest.raises(ConfigError, match=r"text: expected shape \(3, 2\)"):
        vl(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(3, 4))
    with pytest.raises(ConfigError, match=r"f_vis: expected shape \(B, 2, h, w\)"):
        vl(torch.zeros(1, 5, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), TEXT)


def _mean(values: list[tuple[float, float]]) -> torch.Tensor:
    """The released code's pixel mean: sum / (count + 1e-6)."""
    t = torch.tensor(values)
    return t.sum(dim=0) / (len(values) + 1e-6)


def test_released_bank_is_updated_image_by_image() -> None:
    """Hand-computed: two images in one call, then a second call (the target's) on the same bank."""
    lam = 0.5
    vl = VLCovarianceLoss(3, dim=2, bank_momentum=lam, mode="released")
    img1 = [[(1.0, 0.0), (3.0, 0.0)], [(0.0, 1.0), (0.0, 3.0)]]  # class 0 top row, class 1 bottom row
    img2 = [[(5.0, 1.0), (5.0, 1.0)], [(7.0, 7.0), (9.0, 9.0)]]  # class 0 top row, class 2 bottom row
    f = torch.cat([_fmap(img1), _fmap(img2)])
    labels = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [2, 2]]])
    vl(f, labels, TEXT)
    p1 = [_mean([(1.0, 0.0), (3.0, 0.0)]), _mean([(0.0, 1.0), (0.0, 3.0)])]
    p2 = [_mean([(5.0, 1.0), (5.0, 1.0)]), _mean([(7.0, 7.0), (9.0, 9.0)])]
    bank = torch.stack([lam * p1[0] + (1 - lam) * p2[0], p1[1], p2[1]])  # class 2 first seen in image 2
    torch.testing.assert_close(vl.bank, bank)
    assert vl.seen.tolist() == [True, True, True]
    # the target call blends into what the source call wrote (one bank for both domains)
    f3 = torch.full((1, 2, 2, 2), 2.0)
    loss = vl(f3, torch.tensor([[[1, 1], [1, 1]]]), TEXT)
    bank[1] = lam * bank[1] + (1 - lam) * torch.full((2,), 2.0 * 4 / (4 + 1e-6))
    torch.testing.assert_close(vl.bank, bank)
    assert loss.item() == pytest.approx(covariance_cosine_loss(bank, TEXT).item(), rel=1e-6)


def test_released_batch_of_four_keeps_lambda_to_the_fourth() -> None:
    lam = 0.9
    vl = VLCovarianceLoss(2, dim=1, bank_momentum=lam, mode="released")
    vl(torch.full((1, 1, 2, 2), 10.0), torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(2, 1))
    old = vl.bank[0].clone()
    vl(torch.zeros(4, 1, 2, 2), torch.zeros(4, 2, 2, dtype=torch.long), torch.ones(2, 1))
    torch.testing.assert_close(vl.bank[0], lam**4 * old)  # the paper mode would keep lam * old


def test_released_loss_uses_detached_bank_rows_and_the_text() -> None:
    value, f_grad, t_grad = _grad_run("released")
    assert value > 1e-4
    assert f_grad is None or torch.equal(f_grad, torch.zeros_like(f_grad))
    assert t_grad is not None and t_grad.abs().sum() > 0


def test_released_fewer_than_two_seen_classes_gives_zero() -> None:
    vl = VLCovarianceLoss(3, dim=2, mode="released")
    text = TEXT.clone().requires_grad_(True)
    loss = vl(torch.ones(2, 2, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long), text)
    assert loss.item() == 0.0 and vl.seen.tolist() == [True, False, False]
    loss.backward()
    assert text.grad is not None and torch.equal(text.grad, torch.zeros_like(text))


def test_released_rejects_mismatched_batch_and_bad_labels() -> None:
    vl = VLCovarianceLoss(3, dim=2, mode="released")
    with pytest.raises(ConfigError, match="expected 2 label maps"):
        vl(torch.zeros(2, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), TEXT)
    with pytest.raises(DatasetError, match="found values 3"):
        vl(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 3, dtype=torch.long), TEXT)
