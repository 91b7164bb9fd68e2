"""The rule that keeps the best checkpoint of a selection criterion (Selector.update)."""

from __future__ import annotations

import math

import pytest

from tcsa_uda.engine.selection import Selector
from tcsa_uda.train_config import SelectionConfig


def _selector(criterion: str) -> Selector:
    return Selector(cfg=SelectionConfig(criterion=criterion), source="MR", target="CT", encoding="grey")  # type: ignore[arg-type]


def test_larger_is_better_and_the_first_strict_improvement_wins() -> None:
    sel = _selector("source_val_dice")
    flags = [sel.update(it, {"source_val_dice": v}) for it, v in [(10, 0.3), (20, 0.5), (30, 0.5), (40, 0.4)]]
    assert flags == [True, True, False, False]
    assert (sel.best_iteration, sel.best_value) == (20, 0.5)  # a tie keeps the earlier iteration


def test_smaller_is_better_for_entropy() -> None:
    sel = _selector("target_entropy")
    flags = [sel.update(it, {"target_entropy": v}) for it, v in [(1, 0.4), (2, 0.6), (3, 0.2)]]
    assert flags == [True, False, True]
    assert (sel.best_iteration, sel.best_value) == (3, 0.2)


def test_nan_scores_never_win() -> None:
    sel = _selector("oracle")
    assert not sel.update(1, {"oracle": math.nan})
    assert sel.best_iteration == -1 and math.isnan(sel.best_value)
    assert sel.update(2, {"oracle": 0.1})
    assert not sel.update(3, {"oracle": math.nan})
    assert sel.best_iteration == 2


def test_last_always_takes_the_newest_iteration() -> None:
    sel = _selector("last")
    assert sel.update(5, {}) and sel.update(6, {"target_entropy": 9.0})
    assert sel.best_iteration == 6 and math.isnan(sel.best_value)


def test_missing_score_is_a_key_error() -> None:
    sel = _selector("target_aux_agreement")
    with pytest.raises(KeyError):
        sel.update(1, {"target_entropy": 0.1})
