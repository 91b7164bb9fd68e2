"""Tests of tcsa_uda.losses.segmentation with hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.losses.segmentation import (
    SourceSegmentationLoss,
    class_balance_weights,
    dice_loss,
    source_segmentation_loss,
    weighted_cross_entropy,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def _pixel_logits(rows: list[list[tuple[float, ...]]]) -> torch.Tensor:
    """(H, W, C) nested lists -> logits (1, C, H, W)."""
    return torch.tensor(rows, dtype=torch.float64).permute(2, 0, 1)[None]


# Target [[0, 1], [2, 0]]: n = (2, 1, 1), N = 4 -> w = (1 - 3/4, 1 - 2/4, 1 - 2/4).
TARGET = torch.tensor([[[0, 1], [2, 0]]])
# Softmax rows: (ln2, 0, 0) -> (.5, .25, .25); (0, 0, 0) -> 1/3 each; (0, 0, ln2) -> (.25, .25, .5).
MAIN = _pixel_logits([[(LN2, 0, 0), (0, 0, 0)], [(0, 0, LN2), (LN2, 0, 0)]])


def test_class_balance_weights_formula() -> None:
    w = class_balance_weights(TARGET, 3)
    assert w.shape == (3,)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.5, 0.5]))


def test_class_balance_weights_absent_class_and_batch() -> None:
    target = torch.tensor([[[0, 0], [0, 1]], [[0, 0], [0, 0]]])  # N = 8, n = (7, 1, 0)
    torch.testing.assert_close(class_balance_weights(target, 3), torch.tensor([0.0, 0.75, 0.875]))


def test_weighted_cross_entropy_known_value() -> None:
    # nll per pixel: ln2 (w .25), ln3 (w .5), ln2 (w .5), ln2 (w .25); weighted mean.
    expected = (0.25 * LN2 + 0.5 * LN3 + 0.5 * LN2 + 0.25 * LN2) / 1.5
    got = weighted_cross_entropy(MAIN, TARGET)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    unweighted = (3 * LN2 + LN3) / 4
    assert abs(got.item() - unweighted) > 1e-2  # the weights matter


def test_weighted_cross_entropy_explicit_weight() -> None:
    w = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    expected = (LN2 + 2 * LN3 + 0 * LN2 + LN2) / (1 + 2 + 0 + 1)
    assert weighted_cross_entropy(MAIN, TARGET, w).item() == pytest.approx(expected, rel=1e-6)


def test_dice_known_value() -> None:
    logits = _pixel_logits([[(0, 0), (0, math.log(3.0))]])  # p = (.5, .5), (.25, .75)
    target = torch.tensor([[[0, 1]]])
    d0 = 2 * 0.5 / (0.5**2 + 0.25**2 + 1 + 1e-5)
    d1 = 2 * 0.75 / (0.5**2 + 0.75**2 + 1 + 1e-5)
    assert dice_loss(logits, target).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)


def test_dice_perfect_prediction_is_zero() -> None:
    target = torch.tensor([[[0, 1], [2, 2]], [[1, 0], [2, 0]]])
    logits = 50.0 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert dice_loss(logits, target).item() == pytest.approx(0.0, abs=1e-4)


def test_dice_includes_background_and_absent_classes() -> None:
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 0] = 50.0  # perfect background, class 1 absent and not predicted: its ratio is 0
    assert dice_loss(logits, target).item() == pytest.approx(0.5, abs=1e-4)


def test_source_segmentation_loss_combines_parts() -> None:
    aux = torch.zeros_like(MAIN)  # uniform 1/3: CE_w = ln3
    total, parts = source_segmentation_loss(MAIN, aux, TARGET)
    ce_main = (0.25 * LN2 + 0.5 * LN3 + 0.5 * LN2 + 0.25 * LN2) / 1.5
    eps = 1e-5
    dice_main = (
        1
        - (
            2 * 1.0 / (0.25 + 1 / 9 + 0.0625 + 0.25 + 2 + eps)
            + 2 * (1 / 3) / (0.0625 + 1 / 9 + 0.0625 + 0.0625 + 1 + eps)
            + 2 * 0.5 / (0.0625 + 1 / 9 + 0.25 + 0.0625 + 1 + eps)
        )
        / 3
    )
    dice_aux = 1 - (2 * (2 / 3) / (4 / 9 + 2 + eps) + 2 * 2 * (1 / 3) / (4 / 9 + 1 + eps)) / 3
    assert parts["ce_main"].item() == pytest.approx(ce_main, rel=1e-6)
    assert parts["ce_aux"].item() == pytest.approx(LN3, rel=1e-6)
    assert parts["dice_main"].item() == pytest.approx(dice_main, rel=1e-6)
    assert parts["dice_aux"].item() == pytest.approx(dice_aux, rel=1e-6)
    assert total.item() == pytest.approx(ce_main + 0.1 * LN3 + dice_main + 0.1 * dice_aux, rel=1e-6)
    assert all(not v.requires_grad for v in parts.values())


def test_source_segmentation_loss_backward_and_module() -> None:
    main = MAIN.clone().requires_grad_(True)
    aux = torch.zeros_like(MAIN, requires_grad=True)
    total, _ = SourceSegmentationLoss(aux_weight=0.5)(main, aux, TARGET)
    total.backward()
    assert main.grad is not None and aux.grad is not None
    assert main.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0
    ref, _ = source_segmentation_loss(MAIN, torch.zeros_like(MAIN), TARGET, aux_weight=0.5)
    assert total.item() == pytest.approx(ref.item())


def test_labels_out_of_range_name_the_values() -> None:
    bad = torch.tensor([[[0, 5], [-1, 0]]])
    with pytest.raises(DatasetError, match=r"\[0, 3\).*-1, 5"):
        weighted_cross_entropy(MAIN, bad)
    with pytest.raises(DatasetError, match="5"):
        dice_loss(MAIN, bad)


@pytest.mark.parametrize(
    ("logits", "target", "match"),
    [
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long), "upsampled"),
        (torch.zeros(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), r"\(B, C, H, W\)"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long), r"\(B, H, W\)"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2), "integer"),
    ],
)
def test_bad_shapes_and_dtypes(logits: torch.Tensor, target: torch.Tensor, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        dice_loss(logits, target)


def test_bad_weight_and_aux_weight() -> None:
    with pytest.raises(ConfigError, match=r"weight: expected shape \(3,\)"):
        weighted_cross_entropy(MAIN, TARGET, torch.ones(2))
    with pytest.raises(ConfigError, match="aux_weight"):
        SourceSegmentationLoss(aux_weight=-1.0)
    with pytest.raises(ConfigError, match="aux_logits"):
        source_segmentation_loss(MAIN, torch.zeros(1, 2, 2, 2), TARGET)
