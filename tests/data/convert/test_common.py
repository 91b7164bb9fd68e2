"""Shared converter helpers: discovery, code mapping, RAS reorientation, cropping."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.convert.common import (
    find_files,
    foreground_box,
    index_unique,
    is_ignored_name,
    iter_files,
    map_codes,
    natural_key,
    require_dir,
    to_ras,
    walk_dirs,
)
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError


def test_find_files_is_recursive_case_insensitive_and_skips_hidden(tmp_path):
    for rel in ("a/b/IMG0001.NII.GZ", "img0002.nii", "._img0003.nii.gz", ".hidden/img0004.nii.gz", "img0005.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = find_files(tmp_path, r"img(?P<id>\d+)\.nii(?:\.gz)?")
    assert sorted(m.group("id") for _, m in found) == ["0001", "0002"]


def test_macosx_folders_are_never_walked(tmp_path):
    for rel in ("data/img0001.nii.gz", "__MACOSX/data/img0001.nii.gz", "__MACOSX/data/._img0001.nii.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)] == ["data/img0001.nii.gz"]
    assert [folder.name for folder, _, _ in walk_dirs(tmp_path)] == [tmp_path.name, "data"]
    assert is_ignored_name("__MACOSX") and is_ignored_name("._x.dcm") and not is_ignored_name("MACOSX")


def test_index_unique_refuses_two_files_for_one_case(tmp_path):
    for name in ("img0001.nii", "img0001.nii.gz"):
        (tmp_path / name).write_bytes(b"x")
    found = find_files(tmp_path, r"img(?P<id>\d+)\.nii(?:\.gz)?")
    with pytest.raises(DatasetError, match=r"found two for '0001'.*img0001\.nii.*img0001\.nii\.gz"):
        index_unique(found, lambda m: m.group("id"), tmp_path, "image")


def test_require_dir_names_the_option(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(MissingPathError, match="--ct folder to be a folder, found a file"):
        require_dir(tmp_path / "f", "--ct folder")
    with pytest.raises(MissingPathError, match="found nothing"):
        require_dir(tmp_path / "nope", "--ct folder")


def test_map_codes_maps_known_codes_and_reports_unexpected_ones():
    raw = np.array([[0, 205, 420], [500, 820, 600], [421, 421, 999]], dtype=np.int16)
    ids, unexpected = map_codes(raw, {205: 1, 420: 2, 500: 3, 820: 4}, ignored=(600,))
    np.testing.assert_array_equal(ids, [[0, 1, 2], [3, 4, 0], [0, 0, 0]])
    assert ids.dtype == np.uint8
    assert unexpected == {421: 2, 999: 1}


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_map_codes_with_negative_or_huge_codes(dtype):
    ids, unexpected = map_codes(np.array([[-1, 70000], [205, 0]], dtype=dtype), {205: 1})
    np.testing.assert_array_equal(ids, [[0, 0], [1, 0]])
    assert unexpected == {-1: 1, 70000: 1}


def test_map_codes_rejects_fractional_codes():
    with pytest.raises(DatasetError, match="non-integer"):
        map_codes(np.array([0.0, 204.5]), {205: 1})


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-0.7, -0.7, 2.5, 1.0]),  # LPS-like
        np.array([[0, 0, -0.8, 40], [-1.0, 0, 0, 20], [0, 1.2, 0, -30], [0, 0, 0, 1]]),  # P, S, L
        np.array([[0.98, 0.17, 0, 5], [-0.17, 0.98, 0, 6], [0, 0, -2.0, 7], [0, 0, 0, 1]]),  # oblique
    ],
)
def test_to_ras_keeps_every_voxel_at_its_world_position(affine):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1000, size=(5, 6, 7))
    out, new_affine = to_ras(arr, affine)
    assert nib.aff2axcodes(new_affine) == ("R", "A", "S")
    assert sorted(out.shape) == sorted(arr.shape)
    for ijk in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        world = affine @ [*ijk, 1]
        new_ijk = np.linalg.solve(new_affine, world)[:3]
        np.testing.assert_allclose(new_ijk, np.round(new_ijk), atol=1e-6)
        assert out[tuple(round(v) for v in new_ijk)] == arr[ijk]


def test_natural_key_orders_numbers_numerically():
    assert sorted(["img10", "img2", "IMG1"], key=natural_key) == ["IMG1", "img2", "img10"]


def test_foreground_box_adds_the_margin_in_mm_and_keeps_world_positions():
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[8:11, 5:7, 4:6] = 1
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    box, shifted = foreground_box(mask, affine, margin_mm=2.0)
    assert box == (slice(4, 15), slice(4, 8), slice(3, 7))  # 2 mm = 4, 1 and 1 voxels (rounded up)
    np.testing.assert_allclose(shifted @ [0, 0, 0, 1], affine @ [4, 4, 3, 1])
    assert mask[box].sum() == mask.sum()
    whole, same = foreground_box(mask, affine, margin_mm=100.0)  # clipped to the volume
    assert whole == (slice(0, 20), slice(0, 20), slice(0, 10)) and np.array_equal(same, affine)
    with pytest.raises(ConfigError, match="non-negative"):
        foreground_box(mask, affine, -1.0)
