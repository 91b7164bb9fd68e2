"""Tests of the paired confidence intervals (hand-checked values and degenerate inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tcsa_uda.evaluation.stats import (
    StatsInputError,
    paired_bootstrap_ci,
    paired_ci,
    paired_differences,
    paired_t_ci,
)


def test_t_ci_matches_hand_computed_value() -> None:
    # d = 1..5: mean 3, s = sqrt(2.5), se = sqrt(0.5), t_{0.975, 4} = 2.7764451 (table value).
    a = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    b = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    res = paired_t_ci(a, b)
    half = 2.7764451 * math.sqrt(0.5)
    assert res.mean == pytest.approx(3.0)
    assert res.low == pytest.approx(3.0 - half, abs=1e-6)
    assert res.high == pytest.approx(3.0 + half, abs=1e-6)
    assert (res.n, res.n_dropped, res.method) == (5, 0, "t")


def test_t_ci_level_90_is_narrower() -> None:
    # t_{0.95, 4} = 2.1318468 (table value)
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    res = paired_t_ci(d, np.zeros(5), level=0.90)
    assert res.high - res.mean == pytest.approx(2.1318468 * math.sqrt(0.5), abs=1e-6)


def test_bootstrap_contains_t_centre_and_is_close_to_t_for_normal_data() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.6, 0.1, size=40)
    b = a - rng.normal(0.05, 0.03, size=40)
    boot = paired_bootstrap_ci(a, b)
    tci = paired_t_ci(a, b)
    assert boot.low < tci.mean < boot.high
    assert boot.mean == pytest.approx(tci.mean)
    # On normal data the two intervals agree to within a few percent of their width.
    width = tci.high - tci.low
    assert abs(boot.low - tci.low) < 0.15 * width
    assert abs(boot.high - tci.high) < 0.15 * width


def test_bootstrap_narrows_with_n() -> None:
    rng = np.random.default_rng(2)
    widths = []
    for n in (10, 40, 160):
        d = rng.normal(0.02, 0.05, size=n)
        res = paired_bootstrap_ci(d, np.zeros(n))
        widths.append(res.high - res.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.6 * widths[0]


def test_bootstrap_is_reproducible_with_the_seed() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(12), rng.random(12)
    first = paired_bootstrap_ci(a, b, seed=7)
    assert paired_bootstrap_ci(a, b, seed=7) == first
    other = paired_bootstrap_ci(a, b, seed=8)
    assert (other.low, other.high) != (first.low, first.high)
    assert "B=10000, seed 7" in first.describe()


def test_bootstrap_interval_stays_inside_the_observed_differences() -> None:
    d = np.array([-0.5, 0.01, 0.02, 0.03, 0.04, 0.05])
    res = paired_bootstrap_ci(d, np.zeros(6), n_boot=2000)
    assert d.min() <= res.low < res.mean < res.high <= d.max()


def test_one_unit_gives_no_interval() -> None:
    for fn in (paired_t_ci, paired_bootstrap_ci):
        res = fn([0.7], [0.5])
        assert res.mean == pytest.approx(0.2)
        assert math.isnan(res.low) and math.isnan(res.high)
        assert res.n == 1


def test_all_equal_differences_collapse_to_a_point() -> None:
    a = np.array([0.5, 0.6, 0.7, 0.8])
    for fn in (paired_t_ci, paired_bootstrap_ci):
        res = fn(a + 0.1, a)
        assert res.low == pytest.approx(0.1) and res.high == pytest.approx(0.1)
        assert res.mean == pytest.approx(0.1)


def test_nan_units_are_dropped_pairwise_and_counted() -> None:
    a = np.array([0.5, np.nan, 0.7, 0.9, 0.4])
    b = np.array([0.4, 0.3, np.nan, 0.6, 0.4])
    d, keep = paired_differences(a, b)
    assert keep.tolist() == [True, False, False, True, True]
    assert d == pytest.approx([0.1, 0.3, 0.0])
    for method in ("t", "bootstrap"):
        res = paired_ci(a, b, method=method)
        assert (res.n, res.n_dropped) == (3, 2)
        assert res.mean == pytest.approx(0.4 / 3)


def test_all_nan_gives_nan_and_counts() -> None:
    res = paired_bootstrap_ci([np.nan, 0.2], [0.1, np.nan])
    assert res.n == 0 and res.n_dropped == 2
    assert math.isnan(res.mean) and math.isnan(res.low)


def test_cluster_bootstrap_with_singleton_groups_equals_plain() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.random(15), rng.random(15)
    plain = paired_bootstrap_ci(a, b, seed=5)
    grouped = paired_bootstrap_ci(a, b, seed=5, groups=np.arange(15))
    assert (grouped.low, grouped.high) == (plain.low, plain.high)
    assert grouped.n_groups == 15 and plain.n_groups is None


def test_cluster_bootstrap_is_wider_when_groups_share_an_effect() -> None:
    # 5 volumes x 4 seeds: the difference depends mostly on the volume, so units are not independent.
    volume_effect = np.array([0.3, -0.2, 0.1, -0.25, 0.05])
    rng = np.random.default_rng(6)
    d = np.repeat(volume_effect, 4) + rng.normal(0, 0.01, size=20)
    groups = np.repeat(np.arange(5), 4)
    plain = paired_bootstrap_ci(d, np.zeros(20))
    cluster = paired_bootstrap_ci(d, np.zeros(20), groups=groups)
    assert cluster.high - cluster.low > 1.5 * (plain.high - plain.low)
    assert cluster.n_groups == 5


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "match"),
    [
        ([0.1, 0.2], [0.1], {}, "one length"),
        ([[0.1, 0.2]], [[0.1, 0.2]], {}, "1-D"),
        ([0.1, np.inf], [0.1, 0.2], {}, "infinite"),
        ([0.1, 0.2], [0.1, 0.2], {"level": 1.0}, "level"),
        ([0.1, 0.2], [0.1, 0.2], {"n_boot": 0}, "n_boot"),
        ([0.1, 0.2], [0.1, 0.2], {"groups": [1]}, "groups"),
    ],
)
def test_bad_inputs_are_named(a, b, kwargs, match) -> None:
    with pytest.raises(StatsInputError, match=match):
        paired_bootstrap_ci(a, b, **kwargs)


def test_unknown_method_and_groups_with_t_are_refused() -> None:
    with pytest.raises(StatsInputError, match="expected one of bootstrap, t"):
        paired_ci([0.1], [0.2], method="wilcoxon")  # type: ignore[arg-type]
    with pytest.raises(StatsInputError, match="only used by the bootstrap"):
        paired_ci([0.1, 0.2], [0.2, 0.1], method="t", groups=[0, 1])
