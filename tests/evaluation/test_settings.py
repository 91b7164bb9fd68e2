"""The released MPSCL / TCSA-UDA evaluation rules, each checked on hand-computed volumes (evaluation.settings)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.settings import apply_tail_policy, resolve_settings, score_case
from tcsa_uda.metrics.volume import MetricAccumulator

MPSCL = resolve_settings(parity="mpscl")
MOM = "assd_vox_mean_of_means"


def test_the_mpscl_preset_and_its_contradictions() -> None:
    assert MPSCL.to_dict() == {
        "metrics": "all",
        "units": "vox",
        "assd_variant": "mean_of_means",
        "empty_policy": "mpscl",
        "parity": "mpscl",
        "tail_policy": "released_batch32",
        "hd95_variant": "max_directed",
    }
    assert resolve_settings(parity="sifa").tail_policy == "none"
    assert resolve_settings(tail_policy="released_batch32").units == "mm"
    with pytest.raises(ConfigError, match="tail_policy='none' contradicts --parity mpscl"):
        resolve_settings(parity="mpscl", tail_policy="none")
    with pytest.raises(ConfigError, match="empty_policy='sifa_mpscl' contradicts --parity mpscl"):
        resolve_settings(parity="mpscl", empty_policy="sifa_mpscl")
    with pytest.raises(ConfigError, match="tail_policy: expected one of 'none', 'released_batch32', found 'batch16'"):
        resolve_settings(tail_policy="batch16")


def test_tail_of_a_33_slice_volume_is_background() -> None:
    labels = np.ones((2, 3, 33), dtype=np.uint8)
    out, n = apply_tail_policy(labels, 2, "released_batch32")
    assert n == 1 and out[:, :, :32].all() and not out[:, :, 32].any()
    assert labels.all()  # the input is not modified
    out, n = apply_tail_policy(np.ones((70, 2, 2), dtype=np.uint8), 0, "released_batch32")
    assert n == 6 and out[:64].all() and not out[64:].any()  # 70 = 2 * 32 + 6
    same, n = apply_tail_policy(labels, 2, "none")
    assert same is labels and n == 0
    full, n = apply_tail_policy(np.ones((1, 1, 64), dtype=np.uint8), 2, "released_batch32")
    assert n == 0 and full.all()
    short, n = apply_tail_policy(np.ones((1, 1, 20), dtype=np.uint8), 2, "released_batch32")
    assert n == 20 and not short.any()  # fewer than 32 slices: none is predicted


def test_a_structure_only_in_the_last_slice_scores_dice_0_and_assd_1() -> None:
    """33 slices: class 1 only in slice 32 (the tail), class 2 in slices 0..31 (predicted)."""
    gt = np.zeros((6, 6, 33), dtype=np.int64)
    gt[1:3, 1:3, 32] = 1
    gt[3:5, 3:5, 5:9] = 2
    pred, tail = apply_tail_policy(gt.copy(), 2, MPSCL.tail_policy)  # a perfect network, then the tail
    assert tail == 1
    m = score_case(pred, gt, [1, 2], None, MPSCL)
    assert m[1]["dice"] == 0.0 and m[1][MOM] == 1.0
    assert m[2]["dice"] == 1.0 and m[2][MOM] == 0.0
    whole = score_case(gt, gt, [1, 2], None, resolve_settings(parity="sifa"))
    assert whole[1]["dice"] == 1.0 and whole[1][MOM] == 0.0


def test_dice_of_two_empty_masks_is_0_and_a_missing_structure_has_assd_1() -> None:
    gt = np.zeros((5, 5, 5), dtype=np.int64)
    gt[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(gt)
    pred[2:4, 2:4, 2:4] = 3  # class 3 predicted where the ground truth has none
    m = score_case(pred, gt, [1, 2, 3], None, MPSCL)
    assert (m[1]["dice"], m[1][MOM]) == (0.0, 1.0)  # predicted empty
    assert (m[2]["dice"], m[2][MOM]) == (0.0, 1.0)  # both empty: medpy's dc gives 0, its assd raises
    assert (m[3]["dice"], m[3][MOM]) == (0.0, 1.0)  # ground truth empty
    sifa = score_case(pred, gt, [2], None, resolve_settings(parity="sifa"))
    assert math.isnan(sifa[2]["dice"]) and sifa[2][MOM] == 1.0


def test_assd_in_voxels_is_the_mean_of_the_two_directed_means() -> None:
    """pred = voxels x = 0, 1; gt = voxel x = 3 (one row): d(P->G) = [3, 2], d(G->P) = [2]."""
    pred, gt = np.zeros((5, 1, 1), dtype=np.int64), np.zeros((5, 1, 1), dtype=np.int64)
    pred[0:2] = 1
    gt[3] = 1
    m = score_case(pred, gt, [1], (9.0, 9.0, 9.0), MPSCL)[1]  # the spacing plays no part in voxel units
    assert m[MOM] == pytest.approx((2.5 + 2.0) / 2)
    assert m["assd_vox_pooled"] == pytest.approx(7.0 / 3)
    assert m["dice"] == 0.0


def test_std_over_volumes_is_the_population_std() -> None:
    acc = MetricAccumulator()
    for cid, value in (("a", 1.0), ("b", 0.0), ("c", 0.5)):
        acc.add(cid, {1: {"dice": value}})
    stats = acc.summary()["classes"][1]["dice"]
    assert stats["mean"] == pytest.approx(0.5)
    assert stats["std"] == pytest.approx(math.sqrt((0.25 + 0.25 + 0.0) / 3))  # ddof 0, as np.std
