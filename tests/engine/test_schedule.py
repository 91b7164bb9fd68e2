"""DeepLab's poly learning-rate decay (tcsa_uda.engine.schedule)."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.engine.schedule import poly_lr, set_poly_lr


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [(0, 0.01), (50, 0.01 * 0.5**0.9), (99, 0.01 * 0.01**0.9), (100, 0.0), (150, 0.0), (-5, 0.01)],
)
def test_poly_lr_values(iteration: int, expected: float) -> None:
    assert poly_lr(0.01, iteration, 100, power=0.9) == pytest.approx(expected, rel=1e-12, abs=0.0)


def test_poly_lr_power_one_is_linear_and_zero_length_is_safe() -> None:
    assert poly_lr(1.0, 25, 100, power=1.0) == pytest.approx(0.75)
    assert poly_lr(1.0, 0, 0) == 1.0  # no division by zero: a zero-length schedule stays at the base lr
    assert poly_lr(1.0, 1, 0) == 0.0


def test_set_poly_lr_keeps_each_groups_own_base_rate() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 10.0}], lr=1.0)
    set_poly_lr(opt, 50, 100, 1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 5.0])
    set_poly_lr(opt, 75, 100, 1.0)  # decays from the initial rate, not from the current one
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25, 2.5])
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 10.0]
