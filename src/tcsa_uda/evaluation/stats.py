"""Confidence intervals of a paired mean difference (method A minus method B on the same units).

A benchmark compares two methods on the same units: here a unit is one (training seed, test
volume) pair, and the value is the volume's class-mean Dice. The quantity of interest is the mean
of the paired differences ``d_i = a_i - b_i`` and a confidence interval (CI) for it. Two CIs are
provided, both pure numpy (plus ``scipy.stats.t`` for the t quantile):

* :func:`paired_bootstrap_ci`: percentile bootstrap (Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13). Resample the n differences with replacement ``n_boot`` times, take
  the mean of each resample, and report the ``(1 - level) / 2`` and ``(1 + level) / 2``
  percentiles of those means. A fixed ``seed`` makes it reproducible. With ``groups`` it
  resamples whole groups (a cluster bootstrap, e.g. all seeds of one test volume together).
* :func:`paired_t_ci`: Student's t interval ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)`` with
  the sample std ``s`` (ddof=1).

**Why the bootstrap is the default of the bench tables.** Per-volume Dice differences are bounded
in [-1, 1], often skewed and heavy-tailed: a method that collapses on one or two volumes produces
a few large negative differences next to many small ones. The t interval assumes that the mean
of the differences is normally distributed, which with the 10-50 units of a benchmark and such
outliers need not hold, and it is always symmetric around the mean. The percentile bootstrap
makes no distributional assumption, follows the skew of the data, and never leaves the range of
the observed differences. Its known weakness is slight under-coverage at very small n (its width scales
like ``sqrt((n-1)/n)`` times the t width with a normal instead of a t quantile), so tables state
the number of units and the t interval stays available for comparison (``method="t"``).

**Caveat on the units.** Pairing over (seed, volume) treats the units as exchangeable. The same
test volume appears once per seed, so units that share a volume are correlated, and with few
volumes the interval can be too narrow; ``groups`` (one group per volume) gives the more
conservative cluster bootstrap.

**Degenerate inputs** (no error, documented values):

* NaN in either array: that unit is dropped from both (pairwise) and counted in
  :attr:`PairedDifference.n_dropped`. Infinite values are an error.
* n = 0 after dropping: ``mean``, ``low`` and ``high`` are NaN.
* n = 1: ``mean`` is the one difference; ``low`` and ``high`` are NaN (no interval from one unit).
* All differences equal: both intervals collapse to the point ``[d, d]`` (zero spread).

Example::

    res = paired_bootstrap_ci(dice_tcsa, dice_source_only)   # arrays of shape (n,)
    print(f"{100 * res.mean:+.1f} [{100 * res.low:+.1f}, {100 * res.high:+.1f}] (n={res.n})")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import t as student_t

from tcsa_uda.errors import TcsaUdaError

CI_METHODS: tuple[str, ...] = ("bootstrap", "t")
"""The CI methods of :func:`paired_ci`; ``bootstrap`` is the default (see the module docstring)."""

DEFAULT_N_BOOT = 10000
DEFAULT_LEVEL = 0.95
_CHUNK = 1000  # bootstrap resamples drawn per block, to bound memory (n_boot x n indices)


class StatsInputError(TcsaUdaError, ValueError):
    """An array or option given to a statistic is invalid (shape, non-finite value, level)."""


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference ``a - b`` and its confidence interval.

    Attributes:
        mean: mean of the paired differences over the ``n`` kept units (NaN when n = 0).
        low: lower CI bound (NaN when n < 2).
        high: upper CI bound (NaN when n < 2).
        n: number of units used (pairs where both values are defined).
        n_dropped: units dropped because ``a`` or ``b`` is NaN there.
        method: ``bootstrap`` or ``t``.
        level: the confidence level, e.g. 0.95.
        n_boot: bootstrap resamples (0 for the t interval).
        seed: seed of the bootstrap generator (None for the t interval).
        n_groups: number of resampled groups of a cluster bootstrap (None otherwise).
    """

    mean: float
    low: float
    high: float
    n: int
    n_dropped: int
    method: str
    level: float
    n_boot: int = 0
    seed: int | None = None
    n_groups: int | None = None

    def describe(self) -> str:
        """One sentence naming the method, e.g. ``95% percentile bootstrap CI (B=10000, seed 0)``."""
        pct = f"{100 * self.level:g}%"
        if self.method == "t":
            return f"{pct} paired t CI"
        cluster = f", resampling {self.n_groups} groups" if self.n_groups is not None else ""
        return f"{pct} percentile bootstrap CI (B={self.n_boot}, seed {self.seed}{cluster})"


def paired_differences(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The differences ``a - b`` of the units where both are defined, and the mask of those units.

    Args:
        a: values of method A, shape (n,).
        b: values of method B on the same units in the same order, shape (n,).

    Returns:
        ``(d, keep)``: ``d`` of shape (k,) with the k kept differences, ``keep`` a boolean mask
        of shape (n,) that is False where ``a`` or ``b`` is NaN.

    Raises:
        StatsInputError: the arrays are not 1-D of one length, or hold an infinite value.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise StatsInputError(
            f"paired values: expected two 1-D arrays of one length, found shapes {x.shape} and {y.shape}."
        )
    if np.isinf(x).any() or np.isinf(y).any():
        raise StatsInputError("paired values: expected finite values or NaN, found an infinite value.")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep] - y[keep], keep


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise StatsInputError(f"confidence level: expected a number in (0, 1), found {level!r}.")


def paired_t_ci(a: ArrayLike, b: ArrayLike, level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Student's t CI of the mean paired difference ``a - b``.

    ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample std (ddof=1) of the n
    kept differences (NaN pairs dropped and counted).

    Args:
        a: values of method A, shape (n,).
        b: values of method B on the same units, shape (n,).
        level: confidence level in (0, 1).

    Returns:
        :class:`PairedDifference` with ``method="t"``.

    Raises:
        StatsInputError: bad shapes, an infinite value or a level outside (0, 1).
    """
    _check_level(level)
    d, keep = paired_differences(a, b)
    n, dropped = int(d.size), int((~keep).sum())
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, dropped, "t", level)
    mean = float(d.mean())
    if n == 1:
        return PairedDifference(mean, math.nan, math.nan, 1, dropped, "t", level)
    half = float(student_t.ppf((1.0 + level) / 2.0, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, dropped, "t", level)


def paired_bootstrap_ci(
    a: ArrayLike,
    b: ArrayLike,
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    groups: ArrayLike | None = None,
) -> PairedDifference:
    """Percentile bootstrap CI of the mean paired difference ``a - b``.

    Draws ``n_boot`` resamples of the kept units with replacement (``numpy.random.default_rng
    (seed)``), computes each resample's mean difference, and returns the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles (``numpy.percentile``, linear interpolation). With ``groups``
    the resampled items are the groups (first-appearance order): each resample draws as many
    groups as there are, with replacement, and its statistic is the mean over all units of the
    drawn groups. With one unit per group in unit order this equals the plain bootstrap.

    Args:
        a: values of method A, shape (n,).
        b: values of method B on the same units, shape (n,).
        level: confidence level in (0, 1).
        n_boot: number of resamples (>= 1).
        seed: seed of the generator; the same seed gives the same interval.
        groups: optional group label of each unit, shape (n,) (e.g. the test volume id).

    Returns:
        :class:`PairedDifference` with ``method="bootstrap"``.

    Raises:
        StatsInputError: bad shapes, an infinite value, ``n_boot < 1`` or a level outside (0, 1).
    """
    _check_level(level)
    if n_boot < 1:
        raise StatsInputError(f"bootstrap resamples: expected n_boot >= 1, found {n_boot}.")
    d, keep = paired_differences(a, b)
    n, dropped = int(d.size), int((~keep).sum())
    labels: np.ndarray | None = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != keep.shape:
            raise StatsInputError(f"bootstrap groups: expected shape {keep.shape} (one per unit), found {g.shape}.")
        labels = g[keep]

    def result(mean: float, low: float, high: float, n_groups: int | None = None) -> PairedDifference:
        return PairedDifference(mean, low, high, n, dropped, "bootstrap", level, n_boot, seed, n_groups)

    if n == 0:
        return result(math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n == 1:
        return result(mean, math.nan, math.nan)
    if labels is None:
        sums, counts, n_groups = d, np.ones_like(d), None
    else:
        _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
        order = np.argsort(first)  # groups in first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        gid = rank[inverse.reshape(-1)]
        sums = np.bincount(gid, weights=d)
        counts = np.bincount(gid).astype(np.float64)
        n_groups = int(sums.size)
    rng = np.random.default_rng(seed)
    k = sums.size
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, _CHUNK):
        stop = min(n_boot, start + _CHUNK)
        idx = rng.integers(0, k, size=(stop - start, k))
        means[start:stop] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return result(mean, float(low), float(high), n_groups)


def paired_ci(
    a: ArrayLike,
    b: ArrayLike,
    method: Literal["bootstrap", "t"] = "bootstrap",
    level: float = DEFAULT_LEVEL,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    groups: ArrayLike | None = None,
) -> PairedDifference:
    """The CI of the mean paired difference by ``method`` (:data:`CI_METHODS`; bootstrap by default).

    Args:
        a: values of method A, shape (n,).
        b: values of method B on the same units, shape (n,).
        method: ``bootstrap`` (:func:`paired_bootstrap_ci`) or ``t`` (:func:`paired_t_ci`).
        level: confidence level in (0, 1).
        n_boot: bootstrap resamples (bootstrap only).
        seed: bootstrap seed (bootstrap only).
        groups: group label per unit for a cluster bootstrap (bootstrap only).

    Raises:
        StatsInputError: an unknown method, or any error of the chosen function.
    """
    if method == "bootstrap":
        return paired_bootstrap_ci(a, b, level=level, n_boot=n_boot, seed=seed, groups=groups)
    if method == "t":
        if groups is not None:
            raise StatsInputError("paired t CI: groups are only used by the bootstrap; found groups with method 't'.")
        return paired_t_ci(a, b, level=level)
    raise StatsInputError(f"CI method: expected one of {', '.join(CI_METHODS)}, found {method!r}.")


__all__ = [
    "CI_METHODS",
    "DEFAULT_LEVEL",
    "DEFAULT_N_BOOT",
    "PairedDifference",
    "StatsInputError",
    "paired_bootstrap_ci",
    "paired_ci",
    "paired_differences",
    "paired_t_ci",
]
