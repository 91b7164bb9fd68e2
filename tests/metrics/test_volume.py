"""Tests of tcsa_uda.metrics.volume and metrics_surface: hand-computed values, properties,
empty-structure policies, agreement with MONAI, input validation and the accumulator."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from tcsa_uda.errors import ConfigError, TcsaUdaError
from tcsa_uda.metrics import (
    EMPTY_POLICIES,
    EmptyPolicy,
    MetricAccumulator,
    MetricInputError,
    assd,
    compute_case_metrics,
    dice,
    hd95,
    metric_names,
    surface_distances,
    surface_voxels,
)
from tcsa_uda.metrics.volume import metric_definition

SHAPE = (24, 24, 24)


def _empty() -> np.ndarray:
    return np.zeros(SHAPE, dtype=bool)


def _box(lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """A boolean volume of ``SHAPE``, True on ``[lo[0], hi[0]) x [lo[1], hi[1]) x [lo[2], hi[2])``."""
    m = _empty()
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def _voxels(*points: tuple[int, int, int]) -> np.ndarray:
    m = _empty()
    for p in points:
        m[p] = True
    return m


def _blob(rng: np.random.Generator, margin: int = 3) -> np.ndarray:
    """A smooth random blob that does not touch the array border (at least ``margin`` voxels)."""
    inner = tuple(s - 2 * margin for s in SHAPE)
    field = ndimage.gaussian_filter(rng.random(inner), 2.0)
    m = _empty()
    m[margin:-margin, margin:-margin, margin:-margin] = field > np.percentile(field, 75)
    return m


# --------------------------------------------------------------------------- hand-computed


def test_dice_two_cubes_by_voxel_counts() -> None:
    a = _box((2, 2, 2), (6, 6, 6))  # 64 voxels
    b = _box((4, 4, 4), (8, 8, 8))  # 64 voxels, overlap [4:6]^3 = 8
    assert dice(a, b) == pytest.approx(2 * 8 / 128)
    c = _box((2, 2, 2), (6, 6, 4))  # 32 voxels inside a
    assert dice(a, c) == pytest.approx(2 * 32 / 96)


@pytest.mark.parametrize(("axis", "k"), [(0, 1), (0, 3), (1, 2), (2, 5)])
def test_plate_shifted_by_k_voxels(axis: int, k: int) -> None:
    # A one-voxel-thick plate perpendicular to ``axis``; every voxel is surface and its nearest
    # surface voxel in the shifted plate is straight across, at distance k.
    lo, hi = [4, 4, 4], [12, 12, 12]
    lo[axis], hi[axis] = 5, 6
    a = _box(lo, hi)
    b = np.roll(a, k, axis=axis)
    for variant in ("pooled", "mean_of_means"):
        assert assd(a, b, variant=variant) == pytest.approx(k)
    for variant in ("max_directed", "pooled"):
        assert hd95(a, b, variant=variant) == pytest.approx(k)
    assert dice(a, b) == 0.0


def test_solid_box_shifted_one_voxel() -> None:
    # a = [4:10]^3 and b = a shifted by +1 along x; each has 6^3 - 4^3 = 152 surface voxels.
    # Off b's surface: a's x=4 face (36 voxels, 1 from b's x=5 face) and the 4x4 interior of a's
    # x=9 face (16 voxels, 1 from b's x=10 face); the other 100 lie on b's surface. Symmetric for b.
    a = _box((4, 4, 4), (10, 10, 10))
    b = np.roll(a, 1, axis=0)
    d = surface_distances(a, b)
    for directed in (d.pred_to_gt, d.gt_to_pred):
        assert directed.size == 152
        assert (int((directed == 0.0).sum()), int((directed == 1.0).sum())) == (100, 52)
    assert assd(a, b) == pytest.approx(104 / 304)
    assert assd(a, b, variant="mean_of_means") == pytest.approx(52 / 152)
    assert hd95(a, b) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("p", "q", "spacing", "expected"),
    [
        ((5, 5, 5), (5, 5, 9), None, 4.0),
        ((5, 5, 5), (8, 9, 5), None, 5.0),  # 3-4-5 triangle
        ((5, 5, 5), (5, 5, 9), (1.0, 1.0, 0.5), 2.0),
        ((5, 5, 5), (8, 9, 5), (2.0, 0.75, 7.0), math.hypot(6.0, 3.0)),
    ],
)
def test_single_voxels_at_known_distance(p, q, spacing, expected) -> None:
    a, b = _voxels(p), _voxels(q)
    assert assd(a, b, spacing) == pytest.approx(expected)
    assert assd(a, b, spacing, variant="mean_of_means") == pytest.approx(expected)
    assert hd95(a, b, spacing) == pytest.approx(expected)
    assert hd95(a, b, spacing, variant="pooled") == pytest.approx(expected)


def test_variants_differ_on_unbalanced_sets() -> None:
    # d(A->B) = {2}; d(B->A) = {2, 10}.
    a = _voxels((2, 2, 2))
    b = _voxels((2, 2, 4), (2, 2, 12))
    d = surface_distances(a, b)
    np.testing.assert_allclose(np.sort(d.gt_to_pred), [2.0, 10.0])
    assert assd(a, b, variant="mean_of_means") == pytest.approx((2.0 + 6.0) / 2)
    assert assd(a, b, variant="pooled") == pytest.approx(14.0 / 3)
    # Linear-interpolation percentiles: P95{2, 10} = 2 + 0.95 * 8; P95{2, 2, 10} = 2 + 0.9 * 8.
    assert hd95(a, b, variant="max_directed") == pytest.approx(9.6)
    assert hd95(a, b, variant="pooled") == pytest.approx(9.2)


def _label_map(*points: tuple[int, int, int]) -> np.ndarray:
    return _voxels(*points).astype(np.int64)


@pytest.mark.parametrize(
    ("pred_points", "gt_points", "max_directed", "pooled"),
    [
        # d(P->G) = {2}; d(G->P) = {2, 10}: max(P95{2}, P95{2, 10}) = 2 + 0.95 * 8; P95{2, 2, 10} = 2 + 0.9 * 8.
        ([(2, 2, 2)], [(2, 2, 4), (2, 2, 12)], 9.6, 9.2),
        # d(P->G) = {1}; d(G->P) = {1, 4, 10}: P95{1, 4, 10} = 4 + 0.9 * 6; P95{1, 1, 4, 10} = 4 + 0.85 * 6.
        ([(2, 2, 2)], [(2, 2, 3), (2, 2, 6), (2, 2, 12)], 9.4, 9.1),
    ],
)
def test_hd95_variants_hand_computed_through_compute_case_metrics(pred_points, gt_points, max_directed, pooled):
    pred, gt = _label_map(*pred_points), _label_map(*gt_points)
    monai = compute_case_metrics(pred, gt, [1], hd95_variant="max_directed")[1]
    medpy = compute_case_metrics(pred, gt, [1], hd95_variant="pooled")[1]
    assert monai["hd95_vox"] == pytest.approx(max_directed)
    assert medpy["hd95_vox_pooled"] == pytest.approx(pooled)
    assert compute_case_metrics(pred, gt, [1])[1]["hd95_vox"] == pytest.approx(max_directed)  # default unchanged


def test_pooled_hd95_is_medpys_definition_by_brute_force() -> None:
    # medpy.metric.binary.hd95: numpy.percentile(numpy.hstack((d(A->B), d(B->A))), 95), surfaces by
    # 6-connected erosion; here the nearest surface voxel is found by exhaustive search, not by an EDT.
    rng = np.random.default_rng(7)
    a, b = _blob(rng), _blob(rng)
    spacing = (0.8, 1.1, 2.5)
    pa = np.argwhere(surface_voxels(a)) * spacing
    pb = np.argwhere(surface_voxels(b)) * spacing
    dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    a_to_b, b_to_a = dist.min(axis=1), dist.min(axis=0)
    assert hd95(a, b, spacing, variant="pooled") == pytest.approx(np.percentile(np.hstack((a_to_b, b_to_a)), 95))
    expected_max = max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95))
    assert hd95(a, b, spacing, variant="max_directed") == pytest.approx(expected_max)
    assert hd95(a, b, spacing, variant="pooled") != pytest.approx(expected_max)


def test_outputs_record_the_hd95_variant(tmp_path) -> None:
    pred, gt = _label_maps()
    for variant, name in (("max_directed", "hd95_mm"), ("pooled", "hd95_mm_pooled")):
        acc = MetricAccumulator(class_names={1: "a", 2: "b"})
        acc.add("v1", compute_case_metrics(pred, gt, [1, 2], spacing=(1.0, 1.0, 1.0), hd95_variant=variant))
        assert acc.hd95_variants == {name: variant} and acc.hd95_variant == variant
        acc.to_json(tmp_path / f"{variant}.json")
        data = json.loads((tmp_path / f"{variant}.json").read_text())
        assert data["hd95_variants"] == {name: variant}
        assert data["metric_definitions"][name].startswith(f"HD95 in mm, {variant}: ")
        reference = "MONAI compute_hausdorff_distance" if variant == "max_directed" else "medpy.metric.binary.hd95"
        assert reference in data["metric_definitions"][name]
        acc.to_csv(tmp_path / f"{variant}.csv", hd95_variant_column=True)
        with open(tmp_path / f"{variant}.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0])[-1] == "hd95_variant" and {r["hd95_variant"] for r in rows} == {variant}
    acc.to_csv(tmp_path / "plain.csv")
    assert "hd95_variant" not in (tmp_path / "plain.csv").read_text()
    mixed = MetricAccumulator()
    mixed.add("v1", {1: {"hd95_mm": 1.0, "hd95_vox_pooled": 1.0}})
    with pytest.raises(MetricInputError, match=r"hd95 variant: the recorded metrics mix \['max_directed', 'pooled'\]"):
        _ = mixed.hd95_variant
    with pytest.raises(MetricInputError, match=r"metric name: expected dice, .* found 'hd95_cm'"):
        metric_definition("hd95_cm")
    with pytest.raises(ConfigError, match="hd95_variant: expected one of 'max_directed', 'pooled', found 'medpy'"):
        metric_names(True, hd95_variant="medpy")


def test_anisotropic_spacing_scales_only_that_axis() -> None:
    lo, hi = [4, 4, 4], [12, 12, 12]
    lo[0], hi[0] = 5, 6
    plate_x = _box(lo, hi)
    spacing = (2.5, 0.7, 0.7)
    assert assd(plate_x, np.roll(plate_x, 2, axis=0), spacing) == pytest.approx(2 * 2.5)
    plate_y = np.moveaxis(plate_x, 0, 1)
    assert assd(plate_y, np.roll(plate_y, 2, axis=1), spacing) == pytest.approx(2 * 0.7)
    assert hd95(plate_y, np.roll(plate_y, 2, axis=1), spacing) == pytest.approx(2 * 0.7)


@pytest.mark.parametrize(("connectivity", "expected"), [(1, 218 + 6), (2, 218 + 18), (3, 218 + 26)])
def test_surface_voxels_connectivity(connectivity: int, expected: int) -> None:
    # 7^3 cube (shell 7^3 - 5^3 = 218) with a one-voxel hole in the middle: the hole's 6 face,
    # 12 edge and 8 corner neighbours join the surface depending on the erosion structure.
    m = _box((1, 1, 1), (8, 8, 8))
    m[4, 4, 4] = False
    assert int(surface_voxels(m, connectivity).sum()) == expected


def test_mask_touching_border_has_surface_there() -> None:
    m = _box((0, 0, 0), SHAPE)
    assert int(surface_voxels(m).sum()) == 24**3 - 22**3


# --------------------------------------------------------------------------- properties


def test_identical_masks() -> None:
    m = _blob(np.random.default_rng(1))
    assert dice(m, m) == 1.0
    assert assd(m, m) == 0.0
    assert assd(m, m, variant="mean_of_means") == 0.0
    assert hd95(m, m) == 0.0
    assert hd95(m, m, variant="pooled") == 0.0


@pytest.mark.parametrize("seed", [2, 3])
def test_symmetric_in_pred_and_gt(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = _blob(rng), _blob(rng)
    spacing = (0.9, 1.4, 2.0)
    assert dice(a, b) == pytest.approx(dice(b, a))
    for v in ("pooled", "mean_of_means"):
        assert assd(a, b, spacing, v) == pytest.approx(assd(b, a, spacing, v))
    for v in ("max_directed", "pooled"):
        assert hd95(a, b, spacing, v) == pytest.approx(hd95(b, a, spacing, v))
    assert assd(a, b, spacing) > 0.0


def test_invariant_to_translating_both() -> None:
    rng = np.random.default_rng(4)
    a, b = _blob(rng), _blob(rng)
    shift = (2, -1, 3)  # within the 3-voxel empty margin: nothing wraps around
    ta, tb = np.roll(a, shift, axis=(0, 1, 2)), np.roll(b, shift, axis=(0, 1, 2))
    spacing = (1.0, 0.5, 1.5)
    assert dice(ta, tb) == pytest.approx(dice(a, b))
    assert assd(ta, tb, spacing) == pytest.approx(assd(a, b, spacing))
    assert assd(ta, tb, spacing, "mean_of_means") == pytest.approx(assd(a, b, spacing, "mean_of_means"))
    assert hd95(ta, tb, spacing) == pytest.approx(hd95(a, b, spacing))


# --------------------------------------------------------------------------- empty policies


@pytest.mark.parametrize(("name", "value"), [("nan", math.nan), ("sifa_mpscl", 1.0), ("adr", 100.0)])
@pytest.mark.parametrize("case", ["pred_empty", "gt_empty", "both_empty"])
def test_empty_policies(name: str, value: float, case: str) -> None:
    full = _box((4, 4, 4), (9, 9, 9))
    pred = _empty() if case in ("pred_empty", "both_empty") else full
    gt = _empty() if case in ("gt_empty", "both_empty") else full
    for v in ("pooled", "mean_of_means"):
        np.testing.assert_equal(assd(pred, gt, variant=v, empty_policy=name), value)
    np.testing.assert_equal(hd95(pred, gt, empty_policy=name), value)
    np.testing.assert_equal(dice(pred, gt, empty_policy=name), math.nan if case == "both_empty" else 0.0)
    metrics = compute_case_metrics(pred.astype(np.int16), gt.astype(np.int16), [1], empty_policy=name)[1]
    np.testing.assert_equal(metrics["assd_vox_pooled"], value)
    np.testing.assert_equal(metrics["hd95_vox"], value)


def test_mpscl_policy_is_the_released_evaluation() -> None:
    full = _box((4, 4, 4), (9, 9, 9))
    assert dice(_empty(), _empty(), empty_policy="mpscl") == 0.0  # medpy's dc of two empty masks
    assert dice(full, _empty(), empty_policy="mpscl") == 0.0
    for pred, gt in ((full, _empty()), (_empty(), full), (_empty(), _empty())):
        assert assd(pred, gt, variant="mean_of_means", empty_policy="mpscl") == 1.0  # any medpy exception -> 1
    assert assd(full, full, variant="mean_of_means", empty_policy="mpscl") == 0.0


def test_empty_policy_dice_both_empty_option() -> None:
    policy = EmptyPolicy("nan_dice1", dice_both_empty=1.0)
    assert dice(_empty(), _empty(), empty_policy=policy) == 1.0
    assert math.isnan(assd(_empty(), _empty(), empty_policy=policy))
    assert set(EMPTY_POLICIES) == {"nan", "sifa_mpscl", "mpscl", "adr"}


def test_empty_policy_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="distance_value"):
        EmptyPolicy("x", distance_value=-1.0)
    with pytest.raises(ConfigError, match="dice_both_empty"):
        EmptyPolicy("x", dice_both_empty=2.0)
    with pytest.raises(ConfigError, match=r"'nan', 'sifa_mpscl', 'mpscl', 'adr'.*'zero'"):
        dice(_empty(), _empty(), empty_policy="zero")


# --------------------------------------------------------------------------- agreement with MONAI


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*:FutureWarning")
@pytest.mark.parametrize("seed", [10, 11, 12])
def test_agrees_with_monai(seed: int) -> None:
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    a, b = _blob(rng), _blob(rng)
    spacing = (0.8, 1.3, 2.1)
    # MONAI wants one-hot (B, C, X, Y, Z); channel 0 is background and excluded.
    y_pred = torch.from_numpy(np.stack([~a, a])[None].astype(np.float32))
    y = torch.from_numpy(np.stack([~b, b])[None].astype(np.float32))
    monai_dice = compute_dice(y_pred, y, include_background=False).item()
    monai_assd = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing).item()
    monai_hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing).item()

    assert dice(a, b) == pytest.approx(monai_dice, rel=1e-5)
    assert assd(a, b, spacing, "pooled") == pytest.approx(monai_assd, rel=1e-5)
    assert hd95(a, b, spacing, "max_directed") == pytest.approx(monai_hd95, rel=1e-5)
    # The other definitions are genuinely different numbers on these masks.
    assert hd95(a, b, spacing, "pooled") != pytest.approx(monai_hd95, rel=1e-3)
    assert assd(a, b, spacing, "pooled", connectivity=3) != pytest.approx(monai_assd, rel=1e-4)


# --------------------------------------------------------------------------- compute_case_metrics


def _label_maps() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros(SHAPE, dtype=np.uint8)
    pred = np.zeros(SHAPE, dtype=np.int64)
    gt[2:8, 2:8, 2:8] = 1
    pred[3:9, 2:8, 2:8] = 1
    gt[12:20, 12:20, 12:20] = 2
    pred[12:20, 12:20, 13:20] = 2
    pred[20:22, 2:4, 2:4] = 3  # class 3 predicted but absent from gt
    return pred, gt


def test_compute_case_metrics_matches_mask_functions() -> None:
    pred, gt = _label_maps()
    spacing = (1.0, 1.0, 2.0)
    out = compute_case_metrics(pred, gt, [1, 2, 3, 4], spacing=spacing)
    assert list(out) == [1, 2, 3, 4]
    names = ["dice", "assd_mm_pooled", "assd_mm_mean_of_means", "hd95_mm"]
    assert all(list(m) == names for m in out.values())
    for c in (1, 2):
        p, g = pred == c, gt == c
        assert out[c]["dice"] == pytest.approx(dice(p, g))
        assert out[c]["assd_mm_pooled"] == pytest.approx(assd(p, g, spacing, "pooled"))
        assert out[c]["assd_mm_mean_of_means"] == pytest.approx(assd(p, g, spacing, "mean_of_means"))
        assert out[c]["hd95_mm"] == pytest.approx(hd95(p, g, spacing))
    assert out[2]["dice"] == pytest.approx(2 * 7 * 64 / (7 * 64 + 8 * 64))
    assert out[3]["dice"] == 0.0 and math.isnan(out[3]["assd_mm_pooled"])
    assert math.isnan(out[4]["dice"]) and math.isnan(out[4]["hd95_mm"])


def test_metric_names_carry_unit_and_variant() -> None:
    pred, gt = _label_maps()
    out = compute_case_metrics(pred, gt, [1], spacing=None, assd_variants=("mean_of_means",), hd95_variant="pooled")
    assert list(out[1]) == ["dice", "assd_vox_mean_of_means", "hd95_vox_pooled"]
    assert metric_names(True) == ["dice", "assd_mm_pooled", "assd_mm_mean_of_means", "hd95_mm"]


# --------------------------------------------------------------------------- validation


def _ints(shape: tuple[int, ...] = (4, 4, 4), dtype: type = np.int64) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


@pytest.mark.parametrize(
    ("pred", "gt", "kwargs", "match"),
    [
        (_ints(), _ints((4, 4, 5)), {}, r"same shape.*\(4, 4, 4\).*\(4, 4, 5\)"),
        (_ints((4, 4)), _ints((4, 4)), {}, "pred_labels: expected a 3D.*2D"),
        (_ints(dtype=np.float32), _ints(), {}, "pred_labels: expected an integer.*float32"),
        (_ints(), _ints(dtype=bool), {}, "gt_labels: expected an integer.*bool"),
        (_ints(), _ints(), {"spacing": (1.0, 0.0, 1.0)}, "spacing: expected finite values > 0"),
        (_ints(), _ints(), {"spacing": (1.0, float("nan"), 1.0)}, "spacing: expected finite"),
        (_ints(), _ints(), {"spacing": (1.0, 1.0)}, "spacing: expected 3 values"),
        (_ints(), _ints(), {"spacing": (1.0, True, 1.0)}, "spacing: expected numbers"),
        (_ints(), _ints(), {"class_ids": [1, 1]}, "class_ids: expected distinct"),
        (_ints(), _ints(), {"class_ids": []}, "class_ids: expected at least one"),
    ],
)
def test_compute_case_metrics_rejects_bad_input(pred, gt, kwargs, match) -> None:
    kwargs = {"class_ids": [1], **kwargs}
    with pytest.raises(MetricInputError, match=match) as info:
        compute_case_metrics(pred, gt, **kwargs)
    assert isinstance(info.value, TcsaUdaError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"assd_variants": ("median",)}, "assd_variants: expected one of 'pooled', 'mean_of_means'"),
        ({"hd95_variant": "max"}, "hd95_variant: expected one of 'max_directed', 'pooled', found 'max'"),
        ({"connectivity": 4}, "connectivity: expected one of 1, 2, 3"),
        ({"empty_policy": "crash"}, "empty_policy: expected one of"),
    ],
)
def test_compute_case_metrics_rejects_bad_options(kwargs, match) -> None:
    pred, gt = _label_maps()
    with pytest.raises(ConfigError, match=match):
        compute_case_metrics(pred, gt, [1], **kwargs)


def test_mask_functions_reject_non_boolean_and_empty_distances() -> None:
    with pytest.raises(MetricInputError, match="pred: expected a boolean mask, found dtype int64"):
        dice(np.zeros(SHAPE, np.int64), _empty())
    with pytest.raises(MetricInputError, match="gt mask is empty"):
        surface_distances(_box((1, 1, 1), (3, 3, 3)), _empty())


# --------------------------------------------------------------------------- accumulator


def _accumulator() -> MetricAccumulator:
    acc = MetricAccumulator(class_names={1: "liver", 2: "spleen"}, meta={"empty_policy": "nan"})
    acc.add("c1", {1: {"dice": 0.8, "assd_vox_pooled": 2.0}, 2: {"dice": 0.6, "assd_vox_pooled": 4.0}})
    acc.add("c2", {1: {"dice": 0.6, "assd_vox_pooled": 4.0}, 2: {"dice": 0.0, "assd_vox_pooled": math.nan}})
    acc.add("c3", {1: {"dice": 1.0, "assd_vox_pooled": 0.0}, 2: {"dice": 0.9, "assd_vox_pooled": 1.0}})
    return acc


def test_accumulator_rows_long_format() -> None:
    acc = _accumulator()
    rows = acc.to_rows()
    assert len(rows) == 6 and len(acc) == 3
    assert {k: v for k, v in rows[3].items() if k != "assd_vox_pooled"} == {
        "case": "c2",
        "class": 2,
        "class_name": "spleen",
        "dice": 0.0,
    }
    assert list(rows[3]) == ["case", "class", "class_name", "dice", "assd_vox_pooled"]
    assert math.isnan(rows[3]["assd_vox_pooled"])
    np.testing.assert_allclose(acc.values(1, "dice"), [0.8, 0.6, 1.0])


def test_accumulator_summary_nan_aware() -> None:
    s = _accumulator().summary()
    assert s["n_cases"] == 3
    liver = s["classes"][1]["dice"]
    assert liver["mean"] == pytest.approx(0.8)
    assert liver["std"] == pytest.approx(np.std([0.8, 0.6, 1.0]))
    assert (liver["n"], liver["n_nan"]) == (3, 0)
    spleen_assd = s["classes"][2]["assd_vox_pooled"]
    assert spleen_assd["mean"] == pytest.approx(2.5)
    assert spleen_assd["std"] == pytest.approx(1.5)
    assert (spleen_assd["n"], spleen_assd["n_nan"]) == (2, 1)
    # Mean over classes of the per-class means; std over volumes where every class is defined.
    cm = s["class_mean"]["assd_vox_pooled"]
    assert cm["mean"] == pytest.approx((2.0 + 2.5) / 2)
    assert cm["std"] == pytest.approx(np.std([3.0, 0.5]))
    assert (cm["n"], cm["n_nan"]) == (2, 1)
    assert s["class_mean"]["dice"]["mean"] == pytest.approx((0.8 + 0.5) / 2)
    sample = _accumulator().summary(ddof=1)["classes"][1]["dice"]["std"]
    assert sample == pytest.approx(np.std([0.8, 0.6, 1.0], ddof=1))


def test_accumulator_all_nan_class_gives_nan_class_mean() -> None:
    acc = MetricAccumulator()
    acc.add("a", {1: {"x": 1.0}, 2: {"x": math.nan}})
    s = acc.summary()
    assert math.isnan(s["classes"][2]["x"]["mean"]) and s["classes"][2]["x"]["n_nan"] == 1
    assert math.isnan(s["class_mean"]["x"]["mean"])
    assert s["classes"][1]["x"] == {"mean": 1.0, "std": 0.0, "n": 1, "n_nan": 0}


def test_accumulator_rejects_inconsistent_cases() -> None:
    acc = _accumulator()
    with pytest.raises(MetricInputError, match="'c1': already added"):
        acc.add("c1", {1: {"dice": 1.0, "assd_vox_pooled": 0.0}, 2: {"dice": 1.0, "assd_vox_pooled": 0.0}})
    with pytest.raises(MetricInputError, match=r"expected classes \[1, 2\].*found \[1\]"):
        acc.add("c4", {1: {"dice": 1.0, "assd_vox_pooled": 0.0}})
    with pytest.raises(MetricInputError, match="class 2: expected metrics"):
        acc.add("c4", {1: {"dice": 1.0, "assd_vox_pooled": 0.0}, 2: {"dice": 1.0}})
    high: Any = "high"  # wrong type on purpose, as if read from a file: the runtime check must catch it
    with pytest.raises(MetricInputError, match="expected a number, found 'high'"):
        acc.add("c4", {1: {"dice": 1.0, "assd_vox_pooled": 0.0}, 2: {"dice": high, "assd_vox_pooled": 0.0}})
    assert len(acc) == 3
    with pytest.raises(MetricInputError, match="no case has been added"):
        MetricAccumulator().summary()


def test_accumulator_files(tmp_path) -> None:
    acc = _accumulator()
    acc.to_csv(tmp_path / "metrics.csv")
    acc.to_json(tmp_path / "out" / "metrics.json")
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["case", "class", "class_name", "dice", "assd_vox_pooled"]
    assert rows[3]["assd_vox_pooled"] == "nan" and float(rows[0]["dice"]) == 0.8
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data["meta"] == {"empty_policy": "nan"}
    assert data["rows"][3]["assd_vox_pooled"] is None
    assert data["summary"]["classes"]["2"]["assd_vox_pooled"]["n_nan"] == 1
    assert data["summary"]["class_mean"]["dice"]["mean"] == pytest.approx(0.65)
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_accumulator_from_compute_case_metrics() -> None:
    pred, gt = _label_maps()
    acc = MetricAccumulator()
    acc.add("v1", compute_case_metrics(pred, gt, [1, 2], spacing=(1.0, 1.0, 1.0)))
    acc.add("v2", compute_case_metrics(gt.astype(np.int64), gt, [1, 2], spacing=(1.0, 1.0, 1.0)))
    s = acc.summary()
    assert s["classes"][1]["dice"]["mean"] == pytest.approx((dice(pred == 1, gt == 1) + 1.0) / 2)
    assert s["classes"][2]["hd95_mm"]["n_nan"] == 0
