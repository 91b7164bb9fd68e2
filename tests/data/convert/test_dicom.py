"""``read_dicom_series``: slice order from positions, affine from the DICOM geometry, errors."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tcsa_uda.data.convert.dicom import read_dicom_series
from tcsa_uda.errors import DatasetError


def _rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _write_series(raw, folder, rows=5, cols=4, n=6, rot=None, spacing=(1.5, 0.75), step=3.0, seed=0):
    """Slices with unique pixel values, written under shuffled file names in nested folders.

    Returns a list of ``(pixels, ipp)`` in file-name order plus the direction cosines.
    """
    rng = np.random.default_rng(seed)
    rot = np.eye(3) if rot is None else rot
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = np.array([10.0, -20.0, 30.0])
    order = rng.permutation(n)
    written = []
    for i, k in enumerate(order):
        pixels = (np.arange(rows * cols).reshape(rows, cols) + 100 * k).astype(np.uint16)
        ipp = origin + normal * step * k
        sub = folder / ("a" if i % 2 else "b/c")
        raw.write_dicom_slice(sub / f"z{i:03d}.dcm", pixels, ipp, [*row_dir, *col_dir], spacing, i + 1, "1.2.3")
        written.append((sub / f"z{i:03d}.dcm", pixels, ipp))
    return written, row_dir, col_dir


@pytest.mark.parametrize("rot", [np.eye(3), _rotation(30, 0), _rotation(20, 75)], ids=["axial", "rotated", "oblique"])
def test_every_pixel_lands_at_its_patient_position(tmp_path, raw, rot):
    written, row_dir, col_dir = _write_series(raw, tmp_path, rot=rot)
    files = [w[0] for w in written]
    series = read_dicom_series(list(reversed(files)), "case")
    assert series.array.shape == (4, 5, 6)  # (columns, rows, slices)
    for path, pixels, ipp in written:
        for r, c in [(0, 0), (4, 3), (2, 1)]:
            lps = ipp + c * 0.75 * row_dir + r * 1.5 * col_dir  # PixelSpacing = (rows 1.5, columns 0.75)
            ras = np.array([-lps[0], -lps[1], lps[2]])
            ijk = np.linalg.solve(series.affine, [*ras, 1.0])[:3]
            np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-4)
            i, j, k = (round(v) for v in ijk)
            assert series.array[i, j, k] == pixels[r, c]
            assert series.files[k] == path


def test_rescale_slope_and_intercept_are_applied(tmp_path, raw):
    written, _, _ = _write_series(raw, tmp_path, n=2)
    for path, _, _ in written:
        ds = pydicom.dcmread(str(path))
        ds.RescaleSlope, ds.RescaleIntercept = "2", "-1024"
        ds.save_as(str(path))
    series = read_dicom_series([w[0] for w in written], "case")
    assert series.array.dtype == np.float32
    assert series.array.min() == 2 * 0 - 1024


def test_two_slices_at_one_position_are_refused(tmp_path, raw):
    pixels = np.zeros((3, 3), np.uint16)
    for name in ("a.dcm", "b.dcm"):
        raw.write_dicom_slice(tmp_path / name, pixels, (0, 0, 0), (1, 0, 0, 0, 1, 0), (1, 1), 1, "1.2")
    with pytest.raises(DatasetError, match=r"one slice per position, found a.dcm and b.dcm"):
        read_dicom_series([tmp_path / "a.dcm", tmp_path / "b.dcm"], "case")


def test_mixed_series_orientation_and_non_dicom_files_are_refused(tmp_path, raw):
    pixels = np.zeros((3, 3), np.uint16)
    raw.write_dicom_slice(tmp_path / "a.dcm", pixels, (0, 0, 0), (1, 0, 0, 0, 1, 0), (1, 1), 1, "1.2")
    raw.write_dicom_slice(tmp_path / "b.dcm", pixels, (0, 0, 5), (1, 0, 0, 0, 1, 0), (1, 1), 2, "9.9")
    with pytest.raises(DatasetError, match="found 2 series"):
        read_dicom_series([tmp_path / "a.dcm", tmp_path / "b.dcm"], "case")
    raw.write_dicom_slice(tmp_path / "c.dcm", pixels, (0, 0, 5), (0, 1, 0, 0, 0, 1), (1, 1), 2, "1.2")
    with pytest.raises(DatasetError, match=r"c.dcm: expected the ImageOrientationPatient"):
        read_dicom_series([tmp_path / "a.dcm", tmp_path / "c.dcm"], "case")
    (tmp_path / "d.dcm").write_bytes(b"not a dicom file")
    with pytest.raises(DatasetError, match=r"d.dcm: cannot read as DICOM"):
        read_dicom_series([tmp_path / "d.dcm"], "case")
    ds = pydicom.dcmread(str(tmp_path / "a.dcm"))
    del ds.ImagePositionPatient
    ds.save_as(str(tmp_path / "e.dcm"))
    with pytest.raises(DatasetError, match=r"e.dcm: expected the DICOM attribute ImagePositionPatient"):
        read_dicom_series([tmp_path / "e.dcm", tmp_path / "a.dcm"], "case")


def test_missing_slice_is_an_error_naming_the_series_and_the_gap(tmp_path, raw):
    # Slices at 0, 3, 6, 12, 15 mm along the normal: the slice at 9 mm is missing.
    written, _, _ = _write_series(raw, tmp_path, n=6, step=3.0)
    by_k = {round(float((ipp - np.array([10.0, -20.0, 30.0]))[2]) / 3.0): path for path, _, ipp in written}
    by_k[3].unlink()
    files = [by_k[k] for k in (0, 1, 2, 4, 5)]
    with pytest.raises(DatasetError) as info:
        read_dicom_series(files, "patient7/T2SPIR")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("patient7/T2SPIR: expected evenly spaced slices (median step 3.000 mm")
    assert "found a gap of 6.000 mm (2.00 x the median) between slice 2" in message
    assert f"({by_k[2].name}, at 36.000 mm) and slice 3 ({by_k[4].name}, at 42.000 mm)" in message
    assert "a slice is probably missing" in message


def test_extra_slice_between_two_others_is_an_error(tmp_path, raw):
    pixels = np.zeros((3, 3), np.uint16)
    for i, z in enumerate((0.0, 4.0, 5.0, 8.0, 12.0)):
        raw.write_dicom_slice(tmp_path / f"s{i}.dcm", pixels, (0, 0, z), (1, 0, 0, 0, 1, 0), (1, 1), i + 1, "1.2")
    with pytest.raises(DatasetError, match=r"case: .*found a short step of 1.000 mm .* between slice 1 \(s1.dcm"):
        read_dicom_series(sorted(tmp_path.glob("*.dcm")), "case")


def test_small_spacing_jitter_is_a_note_not_an_error(tmp_path, raw):
    pixels = np.zeros((3, 3), np.uint16)
    for i, z in enumerate((0.0, 3.0, 6.1, 9.0, 12.0)):  # steps within 20 % of the median 3 mm
        raw.write_dicom_slice(tmp_path / f"s{i}.dcm", pixels, (0, 0, z), (1, 0, 0, 0, 1, 0), (1, 1), i + 1, "1.2")
    series = read_dicom_series(sorted(tmp_path.glob("*.dcm")), "case")
    assert series.array.shape == (3, 3, 5)
    assert any("uneven slice spacing" in n for n in series.notes)
    np.testing.assert_allclose(series.affine[2, 2], 3.0)
