"""Tests of tcsa_uda.losses.vision_language with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.losses.vision_language import (
    VLCovarianceLoss,
    covariance_cosine_loss,
    off_diagonal_spread,
    similarity_matrices,
)


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
    with pytest.raises(ConfigError, match=r"text: expected shape \(3, D_t\), found \(2, 2\)"):
        vl(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="similarity: expected one of cosine, centred, correlation"):
        VLCovarianceLoss(3, similarity="covariance")  # type: ignore[arg-type]
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


# --- similarity kinds (docs/method.md, Letting the text term carry signal) --------------------------

# Unit rows e1, e2, e1: centred over the 3 classes (mean (2/3, 1/3)) -> rows (1, -1)/3, (-2, 2)/3, (1, -1)/3.
P3 = torch.tensor([[2.0, 0.0], [0.0, 0.5], [3.0, 0.0]])  # rows rescaled: kinds normalise rows first
T3 = torch.eye(3)  # centred: delta_kl - 1/3


def test_cosine_kind_is_the_paper_gram() -> None:
    s_v, s_t = similarity_matrices(P3, T3, "cosine")
    torch.testing.assert_close(s_v, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    torch.testing.assert_close(s_t, torch.eye(3))
    # vec S_v . vec I = 3, |S_v| = sqrt 5, |I| = sqrt 3
    assert covariance_cosine_loss(P3, T3).item() == pytest.approx(1 - 3 / math.sqrt(15), rel=1e-6)


def test_centred_kind_hand_computed() -> None:
    s_v, s_t = similarity_matrices(P3, T3, "centred")
    a = torch.tensor([[2.0, -4.0, 2.0], [-4.0, 8.0, -4.0], [2.0, -4.0, 2.0]]) / 9
    b = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]]) / 3
    torch.testing.assert_close(s_v, a)
    torch.testing.assert_close(s_t, b)
    torch.testing.assert_close(s_v.sum(dim=1), torch.zeros(3))  # a covariance between classes: rows sum to 0
    # A . B = 36 (in units of 1/27), |A| = 12, |B| = 3 sqrt 2 -> cos = 1 / sqrt 2
    assert covariance_cosine_loss(P3, T3, "centred").item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)


def test_correlation_kind_hand_computed() -> None:
    s_v, s_t = similarity_matrices(P3, T3, "correlation")
    torch.testing.assert_close(s_v, torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]]))
    torch.testing.assert_close(s_t, torch.tensor([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]]))
    # R_v . R_t = 4, |R_v| = 3, |R_t| = 3 / sqrt 2 -> cos = 4 sqrt 2 / 9
    assert covariance_cosine_loss(P3, T3, "correlation").item() == pytest.approx(1 - 4 * math.sqrt(2) / 9, rel=1e-6)


def test_centred_kinds_are_blind_with_two_classes() -> None:
    """With K = 2 every centred matrix is [[a, -a], [-a, a]]: the loss is 0 whatever the inputs."""
    gen = torch.Generator().manual_seed(3)
    p, t = torch.randn(2, 5, generator=gen), torch.randn(2, 7, generator=gen)
    for kind in ("centred", "correlation"):
        assert covariance_cosine_loss(p, t, kind).item() == pytest.approx(0.0, abs=1e-6)
    assert covariance_cosine_loss(p[:, :2], t[:, :2]).item() > 1e-4  # the cosine kind is not


def test_text_may_have_another_width_than_the_prototypes() -> None:
    """A fixed anchor (the raw text embeddings) is compared through its C x C matrix only."""
    wide = torch.cat([T3, torch.zeros(3, 4)], dim=1)  # (3, 7), same Gram as T3
    assert covariance_cosine_loss(P3, wide, "centred").item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-6)
    with pytest.raises(ConfigError, match=r"same K >= 1, found \(3, 2\) and \(2, 3\)"):
        similarity_matrices(P3, torch.zeros(2, 3))


def test_off_diagonal_spread_hand_computed() -> None:
    s_v, s_t = similarity_matrices(P3, T3, "centred")
    spread = off_diagonal_spread(s_v)  # off-diagonal: -4/9 four times, 2/9 twice; mean -2/9
    assert spread["min"] == pytest.approx(-4 / 9) and spread["max"] == pytest.approx(2 / 9)
    assert spread["std"] == pytest.approx(2 * math.sqrt(2) / 9, rel=1e-6)
    assert off_diagonal_spread(s_t) == pytest.approx({"std": 0.0, "min": -1 / 3, "max": -1 / 3}, abs=1e-6)
    with pytest.raises(ConfigError, match="K >= 2"):
        off_diagonal_spread(torch.ones(1, 1))


def test_module_uses_its_kind_and_keeps_the_last_matrices() -> None:
    vl = VLCovarianceLoss(3, dim=2, similarity="centred")
    assert vl.last_similarities is None
    # one pixel per class, features P3 rows: the prototypes are P3
    f = P3.t().reshape(1, 2, 1, 3)
    loss = vl(f, torch.tensor([[[0, 1, 2]]]), T3)
    assert loss.item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-5)
    assert vl.last_similarities is not None
    torch.testing.assert_close(vl.last_similarities[1], similarity_matrices(P3, T3, "centred")[1])
    assert not vl.last_similarities[0].requires_grad
    vl(torch.ones(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), T3)  # still 3 classes seen
    fresh = VLCovarianceLoss(3, dim=2, similarity="centred")
    fresh(torch.ones(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long), T3)  # 1 class seen: no matrices
    assert fresh.last_similarities is None
