"""Slice geometry: volumes to square slice stacks and back (tcsa_uda.data.geometry)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcsa_uda.data.geometry import (
    SliceGeometry,
    image_to_slices,
    label_to_slices,
    make_geometry,
    resolve_axis,
    slices_to_volume,
)
from tcsa_uda.errors import ConfigError, DatasetError


def _blob_label(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Two boxes of classes 1 and 2 (their placement depends on ``seed``), background elsewhere."""
    lab = np.zeros(shape, dtype=np.uint8)
    x, y, z = shape
    lab[1 : x // 2 + 1, 1 : y - 1, 1 : z - 1] = 1
    lab[x // 2 + 1 : x - 1, 1 + seed % 2 : y // 2 + 2, : z // 2] = 2
    return lab


def test_geometry_pads_to_a_centred_square() -> None:
    geo = make_geometry((6, 9, 4), axis=2, size=18)
    assert geo.n_slices == 4
    assert geo.in_plane_shape == (6, 9)
    assert geo.pad == ((1, 2), (0, 0))
    assert geo.padded_size == 9
    assert geo.scale == 2.0
    assert SliceGeometry.from_dict(json.loads(json.dumps(geo.to_dict()))) == geo


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_label_round_trip_is_exact_at_the_padded_size(axis: int) -> None:
    lab = _blob_label((6, 8, 5))
    geo = make_geometry(lab.shape, axis, size=max(n for i, n in enumerate(lab.shape) if i != axis))
    stack = label_to_slices(lab, geo)
    assert stack.dtype == np.uint8 and stack.shape == (lab.shape[axis], geo.size, geo.size)
    np.testing.assert_array_equal(slices_to_volume(stack, geo), lab)


def test_label_values_and_counts_per_slice_are_preserved() -> None:
    lab = _blob_label((6, 8, 5))
    geo = make_geometry(lab.shape, 0, size=8)
    stack = label_to_slices(lab, geo)
    for s in range(lab.shape[0]):
        want = dict(zip(*np.unique(lab[s], return_counts=True), strict=True))
        got = dict(zip(*np.unique(stack[s], return_counts=True), strict=True))
        want[0] = want.get(0, 0) + (8 * 8 - lab[s].size)  # padding is background
        assert got == want


@pytest.mark.parametrize(("shape", "size"), [((10, 12, 3), 16), ((24, 20, 3), 12)])
def test_label_round_trip_is_close_when_resizing(shape: tuple[int, int, int], size: int) -> None:
    x, y, _ = shape
    lab = np.zeros(shape, dtype=np.uint8)
    lab[x // 5 : 4 * x // 5, y // 4 : 5 * y // 6, :] = 1
    lab[2 * x // 5 : 3 * x // 5, y // 2 : 2 * y // 3, 1:] = 2
    geo = make_geometry(lab.shape, 2, size=size)
    back = slices_to_volume(label_to_slices(lab, geo), geo)
    assert back.shape == lab.shape
    assert (back == lab).mean() > 0.9
    assert set(np.unique(back)) == {0, 1, 2}


def test_probability_inverse_returns_classes_first_on_the_original_grid() -> None:
    lab = _blob_label((6, 8, 5))
    geo = make_geometry(lab.shape, 1, size=6)
    stack = label_to_slices(lab, geo)  # (8, 6, 6)
    probs = np.eye(3, dtype=np.float32)[stack].transpose(0, 3, 1, 2)  # (S, C, H, W)
    back = slices_to_volume(probs, geo)
    assert back.shape == (3, 6, 8, 5)
    np.testing.assert_array_equal(back.argmax(axis=0), lab)


def test_image_slices_are_padded_with_the_minimum() -> None:
    vol = np.linspace(-1.0, 1.0, 4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    geo = make_geometry(vol.shape, 0, size=3)
    stack = image_to_slices(vol, geo)
    assert stack.shape == (4, 3, 3) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[:, 2, :], -1.0)  # the padded row (pad = ((0, 1), (0, 0)))
    np.testing.assert_array_equal(stack[:, :2, :], vol)


def test_inverse_rejects_a_wrong_stack_shape() -> None:
    geo = make_geometry((6, 8, 5), 2, size=8)
    with pytest.raises(DatasetError, match=r"S = 5 slices, found shape \(4, 8, 8\)"):
        slices_to_volume(np.zeros((4, 8, 8), dtype=np.uint8), geo)


# ---------------------------------------------------------------------------------- axes


PERMUTED = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
"""Array axis 0 runs S, axis 1 runs R, axis 2 runs A (codes ('S', 'R', 'A'))."""


@pytest.mark.parametrize(
    ("affine", "expected"),
    [(np.eye(4), {"sagittal": 0, "coronal": 1, "axial": 2}), (PERMUTED, {"axial": 0, "sagittal": 1, "coronal": 2})],
)
def test_resolve_axis_from_affine(affine: np.ndarray, expected: dict[str, int]) -> None:
    for name, axis in expected.items():
        assert resolve_axis(affine, name) == axis
        assert resolve_axis(affine, name.upper()) == axis
    assert resolve_axis(affine, "1") == 1
    assert resolve_axis(affine, 2) == 2


def test_resolve_axis_rejects_bad_names_and_degenerate_affines() -> None:
    with pytest.raises(ConfigError, match="axial, coronal, sagittal, 0, 1, 2; found 'transverse'"):
        resolve_axis(np.eye(4), "transverse")
    with pytest.raises(ConfigError):
        resolve_axis(np.eye(4), 3)
    flat = np.eye(4)
    flat[2, 2] = 0.0
    with pytest.raises(DatasetError, match="axial array axis"):
        resolve_axis(flat, "axial", what="x.nii.gz")
