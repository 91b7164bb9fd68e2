"""Tests of per-volume intensity normalisation (percentile clip, z-score, [-1, 1])."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcsa_uda.data.normalize import (
    METHOD,
    NormalizationRecord,
    apply_normalization,
    check_percentiles,
    fit_normalization,
    normalize_volume,
)
from tcsa_uda.errors import ConfigError, DatasetError


def _volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, size=(6, 7, 5)).astype(np.float32)


def test_output_spans_exactly_minus_one_to_one() -> None:
    out, _rec = normalize_volume(_volume(), (0.5, 99.5))
    assert out.dtype == np.float32
    assert out.shape == (6, 7, 5)
    assert out.min() == -1.0
    assert out.max() == 1.0


def test_record_holds_the_statistics_of_the_clipped_volume() -> None:
    vol = _volume(1)
    rec = fit_normalization(vol, (2.0, 98.0))
    lo, hi = np.percentile(vol.astype(np.float64), [2.0, 98.0])
    clipped = np.clip(vol.astype(np.float64), lo, hi)
    assert rec.method == METHOD
    assert rec.percentiles == (2.0, 98.0)
    assert rec.clip_low == pytest.approx(lo, rel=1e-5)
    assert rec.clip_high == pytest.approx(hi, rel=1e-5)
    assert rec.mean == pytest.approx(clipped.mean(), rel=1e-5)
    assert rec.std == pytest.approx(clipped.std(), rel=1e-5)
    assert rec.z_min == pytest.approx((lo - clipped.mean()) / clipped.std(), rel=1e-4)
    assert rec.z_max == pytest.approx((hi - clipped.mean()) / clipped.std(), rel=1e-4)


def test_full_range_is_a_linear_min_max_map() -> None:
    vol = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    out, _ = normalize_volume(vol, (0.0, 100.0))
    np.testing.assert_allclose(out, 2.0 * vol / 23.0 - 1.0, atol=1e-6)


def test_outliers_are_clipped_to_one() -> None:
    vol = np.tile(np.arange(10, dtype=np.float32), (10, 10, 1))  # 1000 voxels, values 0..9
    vol[0, 0, 0] = 1e6
    out, rec = normalize_volume(vol, (0.0, 99.0))
    assert rec.clip_high == 9.0
    assert out[0, 0, 0] == 1.0
    # Without the outlier the value 9 would also map to 1, and 4.5 to 0.
    np.testing.assert_allclose(out[1, 1, :], 2.0 * np.arange(10) / 9.0 - 1.0, atol=1e-6)


def test_apply_reproduces_normalize() -> None:
    vol = _volume(2)
    out, rec = normalize_volume(vol)
    np.testing.assert_array_equal(apply_normalization(vol, rec), out)


def test_constant_volume_maps_to_minus_one() -> None:
    out, rec = normalize_volume(np.full((3, 3, 3), 7.0, dtype=np.float32))
    assert rec.std == 0.0
    np.testing.assert_array_equal(out, np.full((3, 3, 3), -1.0, dtype=np.float32))


def test_integer_volume_is_accepted() -> None:
    out, rec = normalize_volume(np.arange(27, dtype=np.int16).reshape(3, 3, 3), (0.0, 100.0))
    assert (out.min(), out.max()) == (-1.0, 1.0)
    assert rec.clip_low == 0.0 and rec.clip_high == 26.0


def test_record_round_trips_through_json() -> None:
    _, rec = normalize_volume(_volume(3))
    again = NormalizationRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec


def test_non_finite_values_raise_naming_the_volume() -> None:
    vol = _volume()
    vol[1, 1, 1] = np.nan
    with pytest.raises(DatasetError, match=r"ct_1\.nii\.gz.*1 NaN/inf"):
        normalize_volume(vol, what="ct_1.nii.gz")


def test_empty_volume_raises() -> None:
    with pytest.raises(DatasetError, match="non-empty"):
        normalize_volume(np.zeros((0, 3, 3), dtype=np.float32))


@pytest.mark.parametrize("bad", [(99.5, 0.5), (-1.0, 50.0), (10.0, 101.0), (5.0, 5.0), (1.0,), "ab"])
def test_bad_percentiles_raise_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="clip_percentiles"):
        check_percentiles(bad)  # type: ignore[arg-type]


def test_valid_percentiles_are_returned_as_floats() -> None:
    assert check_percentiles((0, 98)) == (0.0, 98.0)
