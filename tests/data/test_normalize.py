"""Tests of per-volume intensity normalisation: percentile clip + z-score, fixed ranges, none."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcsa_uda.data.normalize import (
    FIXED_METHOD,
    FIXED_PRESETS,
    IDENTITY_METHOD,
    METHOD,
    FixedRangeRecord,
    IdentityRecord,
    NormalizationRecord,
    NormalizationSpec,
    apply_fixed_range,
    apply_normalization,
    check_percentiles,
    fit_normalization,
    invert_fixed_range,
    normalize_volume,
    normalize_with,
    record_from_dict,
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


# ---------------------------------------------------------------------------------- fixed and none


def test_fixed_range_maps_lo_to_minus_one_and_hi_to_one_without_clipping() -> None:
    spec = NormalizationSpec.fixed(FIXED_PRESETS["sifa"])
    vol = np.array([-1.8, 1.3, 4.4, 10.6, -8.0], dtype=np.float32).reshape(1, 1, 5)
    out, rec = normalize_with(vol, spec, "MR")
    # MR (-1.8, 4.4): 1.3 is the centre; 10.6 = 4.4 + 6.2 lies one range above hi -> 3; -8.0 -> -3.
    np.testing.assert_allclose(out.ravel(), [-1.0, 0.0, 1.0, 3.0, -3.0], atol=1e-6)
    assert out.dtype == np.float32
    assert rec == FixedRangeRecord(FIXED_METHOD, "MR", -1.8, 4.4)
    ct, _ = normalize_with(np.array([-2.8, 0.2, 3.2], dtype=np.float32).reshape(1, 1, 3), spec, "CT")
    np.testing.assert_allclose(ct.ravel(), [-1.0, 0.0, 1.0], atol=1e-6)


def test_fixed_range_needs_the_volume_domain() -> None:
    spec = NormalizationSpec.fixed({"MR": (-1.8, 4.4)})
    with pytest.raises(ConfigError, match=r"ranges for domains \['MR'\], not for 'CT'"):
        normalize_with(np.zeros((2, 2, 2), dtype=np.float32), spec, "CT", what="ct.nii.gz")


def test_invert_fixed_range_round_trips() -> None:
    x = np.linspace(-1.0, 1.0, 101, dtype=np.float32)
    z = invert_fixed_range(x, -2.8, 3.2)
    assert z.min() == pytest.approx(-2.8, abs=1e-6) and z.max() == pytest.approx(3.2, abs=1e-6)
    np.testing.assert_allclose(apply_fixed_range(z, -2.8, 3.2), x, atol=1e-6)


def test_none_keeps_values_and_refuses_values_outside_the_unit_range() -> None:
    vol = np.array([-1.0, 0.25, 1.0], dtype=np.float32).reshape(1, 1, 3)
    out, rec = normalize_with(vol, NormalizationSpec("none"))
    np.testing.assert_array_equal(out, vol)
    assert out is not vol
    assert rec == IdentityRecord(IDENTITY_METHOD, -1.0, 1.0)
    with pytest.raises(DatasetError, match=r"slices.npy: --normalization none expects .* found \[-1, 1.5\]"):
        normalize_with(np.array([[[-1.0, 1.5]]], dtype=np.float32), NormalizationSpec("none"), what="slices.npy")


def test_spec_round_trips_and_defaults_to_percentile_zscore() -> None:
    spec = NormalizationSpec.fixed({"MR": (-1.8, 4.4), "CT": (-2.8, 3.2)})
    data = spec.to_dict()
    assert data == {"method": "fixed", "ranges": {"CT": [-2.8, 3.2], "MR": [-1.8, 4.4]}}
    assert NormalizationSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert (
        NormalizationSpec.from_dict(None)
        == NormalizationSpec()
        == NormalizationSpec.from_dict({"method": "percentile_zscore"})
    )
    assert NormalizationSpec.from_dict({"method": "none"}).method == "none"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"method": "zscore"}, "expected one of 'percentile_zscore', 'fixed', 'none'"),
        ({"method": "fixed"}, "expected 'ranges'"),
        ({"method": "fixed", "ranges": {}}, "per domain, found none"),
        ({"method": "fixed", "ranges": {"MR": [4.4, -1.8]}}, "finite lo < hi"),
        ({"method": "fixed", "ranges": {"MR": [1.0]}}, r"expected \[lo, hi\]"),
        ({"method": "none", "ranges": {"MR": [0, 1]}}, "only apply to 'fixed'"),
        ([1, 2], "expected a mapping with a 'method'"),
    ],
)
def test_bad_specs_name_the_source(data: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        NormalizationSpec.from_dict(data, source="ckpt.pt")
    assert str(info.value).startswith("ckpt.pt: ")


def test_every_record_kind_round_trips() -> None:
    _, pct = normalize_volume(_volume(4))
    _, fixed = normalize_with(_volume(4), NormalizationSpec.fixed({"CT": (50.0, 150.0)}), "CT")
    _, ident = normalize_with(np.zeros((2, 2, 2)), NormalizationSpec("none"))
    for rec in (pct, fixed, ident):
        assert record_from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    with pytest.raises(ConfigError, match="method 'gamma' is unknown"):
        record_from_dict({"method": "gamma"})
