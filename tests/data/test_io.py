"""``tcsa_uda.data.io``: bounded reading (file size, memory budget, gzip bombs) and header writing."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.io import (
    DEFLATE_MAX_RATIO,
    MAX_VOLUME_BYTES_ENV,
    NIFTI_INTENT_LABEL,
    gunzip_bounded,
    load_nifti,
    load_npy,
    load_npz,
    max_volume_bytes,
    read_nifti,
    save_nifti,
)
from tcsa_uda.errors import ConfigError, DatasetError, VolumeSizeError

MiB = 1024**2


def _nifti(path: Path) -> nib.Nifti1Image:
    """Read back a written NIfTI file (typed: nibabel's loader returns its base image class)."""
    img = nib.load(str(path))
    assert isinstance(img, nib.Nifti1Image)
    return img


def _header(shape: tuple[int, ...], dtype: type = np.float32) -> bytes:
    """The 352 bytes (348-byte header + empty extension flag) of a single-file NIfTI-1."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.eye(4), code=1)
    hdr["vox_offset"] = 352
    hdr["magic"] = b"n+1"
    return hdr.binaryblock + b"\0\0\0\0"


def _peak_during(fn) -> tuple[int, BaseException | None]:
    """Peak traced allocation (bytes) while ``fn`` runs, and the exception it raised."""
    tracemalloc.start()
    error: BaseException | None = None
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001  (returned to the test, which checks its type)
        error = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, error


# --------------------------------------------------------------------------------------------
# Header claims vs. file size and budget


def test_uncompressed_header_claiming_more_than_the_file_fails_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "liar.nii"
    path.write_bytes(_header((1000, 1000, 400)))
    peak, error = _peak_during(lambda: load_nifti(path))
    assert isinstance(error, VolumeSizeError)
    message = str(error)
    assert "\n" not in message
    assert str(path) in message
    assert "1000 x 1000 x 400 float32 = 1600000000 bytes from offset 352" in message
    assert "the file holds only 352 bytes" in message
    assert peak < 4 * MiB


def test_gzip_header_claiming_more_than_deflate_can_hold_fails_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "liar.nii.gz"
    path.write_bytes(gzip.compress(_header((1000, 1000, 400))))
    size = path.stat().st_size
    assert size < 200  # a ~94-byte file, as in the report
    peak, error = _peak_during(lambda: load_nifti(path))
    assert isinstance(error, VolumeSizeError)
    message = str(error)
    assert "\n" not in message and str(path) in message
    assert "1000 x 1000 x 400 float32 = 1600000000 bytes" in message
    assert f"the file holds only {size} gzip bytes" in message
    assert f"at most {DEFLATE_MAX_RATIO * size} bytes" in message
    assert peak < 4 * MiB


def test_gzip_bomb_beyond_the_header_claim_stops_at_the_claim(tmp_path: Path) -> None:
    # The header claims 10 x 10 x 10 uint8 (1000 bytes); the stream expands to 64 MiB of zeros.
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(_header((10, 10, 10), np.uint8) + bytes(64 * MiB), compresslevel=9))
    assert path.stat().st_size < MiB
    peak, error = _peak_during(lambda: load_nifti(path, what="label"))
    assert isinstance(error, VolumeSizeError), error
    assert str(path) in str(error)
    assert "decompresses to more than the 1352 bytes that the NIfTI header claims" in str(error)
    assert "10 x 10 x 10 uint8" in str(error)
    assert peak < 8 * MiB


def test_gzip_bomb_within_its_claim_is_refused_by_the_budget_before_decompressing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A genuine 64 MiB volume (zeros) in a small gzip: readable, but not within a 16 MiB budget.
    shape = (256, 256, 256)
    path = tmp_path / "big.nii.gz"
    path.write_bytes(gzip.compress(_header(shape, np.float32) + bytes(4 * 256**3), compresslevel=9))
    assert path.stat().st_size < MiB
    peak, error = _peak_during(lambda: load_nifti(path, max_bytes=16 * MiB))
    assert isinstance(error, VolumeSizeError)
    assert "256 x 256 x 256 float32 = 67108864 bytes" in str(error)
    assert f"more than the budget of {16 * MiB} bytes" in str(error)
    assert MAX_VOLUME_BYTES_ENV in str(error)
    assert peak < 4 * MiB
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "16M")
    with pytest.raises(VolumeSizeError, match="more than the budget of 16777216 bytes"):
        load_nifti(path)


def test_truncated_gzip_names_the_claim_and_what_the_stream_holds(tmp_path: Path) -> None:
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(_header((10, 10, 10), np.uint8) + bytes(500)))
    with pytest.raises(VolumeSizeError, match=r"10 x 10 x 10 uint8 = 1000 bytes.*holds only 852 decompressed bytes"):
        load_nifti(path)


def test_gzip_cut_inside_the_stream_is_a_truncated_file(tmp_path: Path) -> None:
    data = np.arange(1000, dtype=np.uint8).reshape(10, 10, 10)
    path = tmp_path / "cut.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 12])  # the trailer and a few deflate bytes gone
    with pytest.raises(DatasetError, match=r"cut.nii.gz: .*(truncated|ends)"):
        load_nifti(path)


def test_trailing_garbage_after_the_gzip_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tail.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes() + b"garbage!")
    with pytest.raises(DatasetError, match=r"tail.nii.gz: "):  # nibabel may already refuse the header
        load_nifti(path)
    blob = tmp_path / "blob.gz"
    blob.write_bytes(gzip.compress(bytes(100)) + b"garbage!")
    with pytest.raises(DatasetError, match=r"blob.gz: unexpected bytes after the end of the gzip stream"):
        gunzip_bounded(blob, 100, "the test claims 100 bytes")


def test_concatenated_gzip_members_and_zero_padding_are_read(tmp_path: Path) -> None:
    data = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    plain = tmp_path / "a.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(plain))
    raw = plain.read_bytes()
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:200]) + gzip.compress(raw[200:]) + bytes(16))
    np.testing.assert_array_equal(load_nifti(path).array, data)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    ("dtype", "scaling"), [(np.int16, None), (np.int16, (2.0, -5.0)), (np.float32, None), (np.uint8, (0.5, 0.0))]
)
def test_bounded_reading_equals_nibabel(tmp_path: Path, suffix: str, dtype: type, scaling) -> None:
    data: np.ndarray = (np.arange(2 * 3 * 4 * 5) - 7).reshape(2, 3, 4, 5).astype(dtype)
    img = nib.Nifti1Image(data, np.diag([0.5, 0.7, 2.0, 1.0]))
    if scaling is not None:
        img.header.set_slope_inter(*scaling)
    path = tmp_path / f"v{suffix}"
    nib.save(img, str(path))
    expected = np.asanyarray(_nifti(path).dataobj)
    array, affine, header = read_nifti(path)
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)
    np.testing.assert_allclose(affine, np.diag([0.5, 0.7, 2.0, 1.0]), atol=1e-6)
    assert header.get_data_shape() == (2, 3, 4, 5)


def test_budget_from_environment_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_VOLUME_BYTES_ENV, raising=False)
    assert max_volume_bytes() == 8 * 1024**3
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "2GiB")
    assert max_volume_bytes() == 2 * 1024**3
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "123")
    assert max_volume_bytes() == 123
    assert max_volume_bytes(77) == 77
    monkeypatch.setenv(MAX_VOLUME_BYTES_ENV, "lots")
    with pytest.raises(ConfigError, match=rf"{MAX_VOLUME_BYTES_ENV}: expected a positive number of bytes.*'lots'"):
        max_volume_bytes()
    with pytest.raises(ConfigError, match="max_bytes: expected a positive integer"):
        max_volume_bytes(0)


def test_analyze_pair_is_not_read_as_single_file_nifti(tmp_path: Path) -> None:
    path = tmp_path / "pair.img"
    nib.save(nib.Nifti1Pair(np.zeros((2, 2, 2), np.uint8), np.eye(4)), str(path))
    with pytest.raises(DatasetError, match=r"pair.img: expected a single-file NIfTI image"):
        load_nifti(path)


# --------------------------------------------------------------------------------------------
# numpy arrays


def test_npy_header_claiming_more_than_the_file_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000, 400)})
    path = tmp_path / "liar.npy"
    path.write_bytes(buf.getvalue())
    peak, error = _peak_during(lambda: load_npy(path))
    assert isinstance(error, VolumeSizeError)
    assert "1000 x 1000 x 400 float32 = 1600000000 bytes" in str(error)
    assert f"holds only {path.stat().st_size} bytes" in str(error)
    assert peak < 4 * MiB
    good = tmp_path / "good.npy"
    np.save(good, np.ones((4, 5), np.float32))
    with pytest.raises(VolumeSizeError, match="more than the budget of 10 bytes"):
        load_npy(good, max_bytes=10)
    np.testing.assert_array_equal(load_npy(good), np.ones((4, 5)))


def test_npz_member_claiming_more_than_its_zip_size_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, image=np.ones((8, 8), np.float32), label=np.zeros((8, 8), np.uint8))
    out = load_npz(good)
    assert sorted(out) == ["image", "label"] and out["image"].shape == (8, 8)
    with pytest.raises(VolumeSizeError, match="more than the budget of 100 bytes"):
        load_npz(good, max_bytes=100)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1000, 1000, 400)})
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("image.npy", buf.getvalue())
    peak, error = _peak_during(lambda: load_npz(liar))
    assert isinstance(error, VolumeSizeError)
    assert "member image.npy claims 1000 x 1000 x 400 float32 = 1600000000 bytes" in str(error)
    assert peak < 4 * MiB


# --------------------------------------------------------------------------------------------
# Writing: geometry and label-map fields


def _source_header() -> tuple[nib.Nifti1Header, np.ndarray, np.ndarray]:
    """A header whose qform (code 1) differs from its sheared sform (code 2), with image fields set."""
    qform = np.array([[-0.8, 0, 0, 90.0], [0, 0.9, 0, -100.0], [0, 0, 2.5, -50.0], [0, 0, 0, 1]])
    sform = np.array([[-0.8, 0.1, 0, 91.0], [0, 0.9, 0.2, -99.0], [0.05, 0, 2.5, -52.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), sform)
    hdr = img.header
    hdr.set_qform(qform, code=1)
    hdr.set_sform(sform, code=2)
    hdr.set_slope_inter(2.0, -1024.0)
    hdr["cal_min"], hdr["cal_max"] = -1000.0, 3000.0
    hdr.set_intent("t test", (12.0,), name="tmap")
    return hdr, qform, sform


def test_label_map_keeps_qform_and_sform_separately_and_resets_intensity_fields(tmp_path: Path) -> None:
    hdr, qform, sform = _source_header()
    zooms = hdr.get_zooms()
    labels = np.zeros((6, 5, 4), np.int64)
    labels[1:3, 1:3, 1:3] = 3
    path = tmp_path / "pred.nii.gz"
    save_nifti(path, labels, hdr.get_best_affine(), hdr, kind="label")
    out = _nifti(path).header
    assert (int(out["qform_code"]), int(out["sform_code"])) == (1, 2)
    np.testing.assert_allclose(out.get_qform(), qform, atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), sform, atol=1e-5)
    assert not np.allclose(out.get_qform(), out.get_sform(), atol=1e-3)
    np.testing.assert_allclose(out.get_zooms(), zooms, atol=1e-6)  # a sheared sform must not change pixdim
    assert out.get_data_dtype() == np.uint8
    assert (float(out["cal_min"]), float(out["cal_max"])) == (0.0, 3.0)
    assert int(out["intent_code"]) == NIFTI_INTENT_LABEL
    assert out.get_intent() == ("label", (), "")
    assert out.get_slope_inter() == (None, None)
    np.testing.assert_array_equal(np.asanyarray(_nifti(path).dataobj), labels)


def test_probability_map_resets_calibration_and_intent(tmp_path: Path) -> None:
    hdr, qform, sform = _source_header()
    probs = np.full((6, 5, 4, 3), 1 / 3, np.float32)
    path = tmp_path / "probs.nii.gz"
    save_nifti(path, probs, hdr.get_best_affine(), hdr, kind="probability")
    out = _nifti(path).header
    np.testing.assert_allclose(out.get_sform(), sform, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), qform, atol=1e-5)
    assert (float(out["cal_min"]), float(out["cal_max"])) == (0.0, 1.0)
    assert int(out["intent_code"]) == 0 and out.get_intent()[2] == ""
    assert out.get_slope_inter() == (None, None)
    assert out.get_data_shape() == (6, 5, 4, 3)


def test_new_grid_sets_both_forms_and_bad_inputs_are_refused(tmp_path: Path) -> None:
    hdr, _, _ = _source_header()
    shifted = np.diag([1.0, 1.0, 1.0, 1.0])
    shifted[:3, 3] = (5.0, 6.0, 7.0)
    path = tmp_path / "crop.nii.gz"
    save_nifti(path, np.zeros((3, 3, 3), np.uint8), shifted, hdr, kind="label")
    out = _nifti(path).header
    np.testing.assert_allclose(out.get_sform(), shifted)
    np.testing.assert_allclose(out.get_qform(), shifted)
    assert (int(out["qform_code"]), int(out["sform_code"])) == (1, 2)
    with pytest.raises(DatasetError, match=r"bad.nii.gz: expected an integer label map to write, found dtype float32"):
        save_nifti(tmp_path / "bad.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4), kind="label")
    with pytest.raises(ConfigError, match="kind: expected one of 'image', 'label', 'probability', found 'mask'"):
        save_nifti(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.uint8), np.eye(4), kind="mask")
    assert not (tmp_path / "bad.nii.gz").exists()
