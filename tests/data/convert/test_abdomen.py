"""``convert_abdomen`` on miniature CHAOS (DICOM + PNG) and BTCV (NIfTI) downloads."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.convert.abdomen import TEST_IDS, convert_abdomen, map_chaos_mask
from tcsa_uda.data.geometry import resolve_axis
from tcsa_uda.data.verify import verify_dataset
from tcsa_uda.errors import DatasetError, MissingPathError

CHAOS = (1, 2, 13, 32, 38)
BTCV = (1, 2, 9, 30, 32, 33, 39)


def _download(tmp_path, raw, chaos=CHAOS, **chaos_kwargs):
    truth = {cid: raw.write_chaos_case(tmp_path / "CHAOS_Train_Sets", cid, **chaos_kwargs) for cid in chaos}
    btcv = raw.write_btcv(tmp_path / "BTCV", BTCV)
    return truth, btcv


def _label(res, domain, cid):
    case = next(c for c in load_dataset(res.out).domain(domain).cases if c.id == cid)
    img = nib.load(str(case.label_path(res.out)))
    return np.asarray(img.dataobj), img.affine


def test_chaos_mask_ranges():
    ids, unexpected = map_chaos_mask(np.array([[0, 63, 55, 70, 126, 110], [189, 200, 252, 240, 90, 71]]))
    np.testing.assert_array_equal(ids, [[0, 1, 1, 1, 2, 2], [3, 3, 4, 4, 0, 0]])
    assert unexpected == {71: 1, 90: 1}


def test_split_ids_and_verify(tmp_path, raw):
    _download(tmp_path, raw)
    res = convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    spec = load_dataset(res.out)
    assert spec.class_names == ["background", "liver", "right kidney", "left kidney", "spleen"]
    assert sorted(c.id for c in spec.domain("MR").select("test")) == sorted(TEST_IDS["MR"])
    assert [c.id for c in spec.domain("MR").select("train")] == ["2"]
    assert sorted(c.id for c in spec.domain("CT").select("test")) == sorted(TEST_IDS["CT"])
    assert [c.id for c in spec.domain("CT").select("train")] == ["0002"]
    notes = "\n".join(res.summary["notes"])
    assert "['0061']" in notes  # the unlabelled BTCV test image is reported, not converted
    assert "15 of the 20 CHAOS patients" in notes
    assert verify_dataset(res.out).ok


def test_chaos_slices_are_ordered_by_position_with_their_masks_in_ras(tmp_path, raw):
    truth, _ = _download(tmp_path, raw)
    res = convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    lab, affine = _label(res, "MR", "13")
    t = truth[13]
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert resolve_axis(affine, "axial") == 2 and lab.shape[2] == t["labels"].shape[2]
    dr, dc = t["spacing"]
    rows, cols, n = t["labels"].shape
    for k in range(n):
        x0, y0, z0 = t["positions"][k]
        for r in range(rows):
            for c in range(cols):
                ras = np.array([-(x0 + c * dc), -(y0 + r * dr), z0, 1.0])  # LPS -> RAS
                i, j, kk = np.rint(np.linalg.solve(affine, ras)[:3]).astype(int)
                assert lab[i, j, kk] == t["labels"][r, c, k]
    counts = res.summary["domains"]["MR"]["voxels"]
    assert counts["right kidney"] == sum(int((v["labels"] == 2).sum()) for v in truth.values()) > 0


def test_btcv_codes_map_to_the_four_organs(tmp_path, raw):
    _, btcv = _download(tmp_path, raw)
    res = convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    lab, affine = _label(res, "CT", "0009")
    src = btcv[9]
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    for code, cid in ((6, 1), (2, 2), (3, 3), (1, 4)):
        assert int((lab == cid).sum()) == int((src == code).sum()) > 0
    assert int((lab == 0).sum()) == int(((src == 0) | (src == 7)).sum())
    # LPS-like diag(-0.8, -0.8, 2.5): x and y flipped, so voxel (0, 0, k) moves to (X-1, Y-1, k)
    expected = np.vectorize(lambda v: {6: 1, 2: 2, 3: 3, 1: 4}.get(int(v), 0))(src)
    np.testing.assert_array_equal(lab[::-1, ::-1, :], expected)


def test_unmatched_mask_names_fall_back_to_instance_order(tmp_path, raw):
    truth, _ = _download(tmp_path, raw, chaos=(1, 13, 32, 38), mask_names_match=False)
    res = convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    assert any("paired by InstanceNumber" in n for n in res.summary["notes"])
    lab, _ = _label(res, "MR", "32")
    assert int((lab == 4).sum()) == int((truth[32]["labels"] == 4).sum())
    ordered = np.moveaxis(lab[::-1, ::-1, :], 0, 1)  # RAS (cols, rows) back to DICOM (rows, cols)
    np.testing.assert_array_equal(ordered, truth[32]["labels"])


def test_missing_test_patient_and_bad_masks_are_errors(tmp_path, raw):
    _download(tmp_path, raw, chaos=(1, 2, 13, 32))  # 38 missing
    with pytest.raises(MissingPathError, match=r"MR test case\(s\) \['38'\]"):
        convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    raw.write_chaos_case(tmp_path / "CHAOS_Train_Sets", 38)
    ground = tmp_path / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / "38" / "T2SPIR" / "Ground"
    first = min(ground.iterdir())
    Image.fromarray(np.zeros((3, 3), np.uint8), mode="L").save(first)
    with pytest.raises(DatasetError, match=r"IMG-0001-00001.png: expected a 12 x 10 mask"):
        convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    first.unlink()
    with pytest.raises(DatasetError, match=r"found none for 1 slice\(s\): \['IMG-0001-00001.dcm'\]"):
        convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)


def test_missing_btcv_test_label_is_fatal(tmp_path, raw):
    _download(tmp_path, raw)
    (tmp_path / "BTCV" / "RawData" / "Training" / "label" / "label0033.nii.gz").unlink()
    with pytest.raises(MissingPathError, match=r"CT test case\(s\) \['0033'\]"):
        convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)


def _series_dir(root, cid):
    return root / "CHAOS_Train_Sets" / "Train_Sets" / "MR" / str(cid) / "T2SPIR"


def test_whole_chaos_download_skips_patients_without_ground_and_macosx_copies(tmp_path, raw):
    _download(tmp_path, raw)
    for cid in (4, 6):  # test patients of the full download: DICOM only, no Ground folder
        raw.write_chaos_case(tmp_path / "CHAOS_Test_Sets", cid)
        shutil.rmtree(tmp_path / "CHAOS_Test_Sets" / "Train_Sets" / "MR" / str(cid) / "T2SPIR" / "Ground")
    mac = tmp_path / "__MACOSX" / "CHAOS_Train_Sets"
    shutil.copytree(tmp_path / "CHAOS_Train_Sets", mac)
    for f in [f for f in mac.rglob("*") if f.is_file()]:
        f.rename(f.with_name("._" + f.name))
    res = convert_abdomen(tmp_path, tmp_path / "BTCV", tmp_path / "out", progress=False)
    assert sorted(c.id for c in res.spec.domain("MR").cases) == ["1", "13", "2", "32", "38"]
    notes = "\n".join(res.summary["notes"])
    assert "MR: 2 patient(s) with a T2SPIR folder but no Ground folder skipped" in notes
    assert "the CHAOS test patients): 4, 6" in notes
    assert all("__MACOSX" not in r["source"] for r in res.summary["domains"]["MR"]["case_list"])
    assert verify_dataset(res.out).ok


def test_bad_dicom_series_in_a_training_patient_is_skipped_with_a_note(tmp_path, raw):
    _download(tmp_path, raw, chaos=(1, 2, 3, 13, 32, 38))
    broken = min((_series_dir(tmp_path, 2) / "DICOM_anon").iterdir())
    broken.write_bytes(b"not a dicom file")
    gap = _series_dir(tmp_path, 3) / "DICOM_anon"
    third = next(f for f in gap.iterdir() if float(pydicom.dcmread(str(f)).ImagePositionPatient[2]) == -20.0 + 6.0 * 3)
    third.unlink()  # patient 3 misses the fourth slice
    res = convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    assert sorted(c.id for c in res.spec.domain("MR").cases) == ["1", "13", "32", "38"]
    skipped = {s["id"]: s for s in res.summary["skipped_cases"]}
    assert set(skipped) == {"2", "3"}
    assert skipped["2"]["reason"].startswith(f"{broken}: cannot read as DICOM")
    assert "found a gap of 12.000 mm (2.00 x the median) between slice 2" in skipped["3"]["reason"]
    assert any(n.startswith("MR train case 2 skipped: ") for n in res.summary["notes"])
    assert verify_dataset(res.out).ok


def test_bad_dicom_series_in_a_test_patient_fails_with_one_line(tmp_path, raw):
    _download(tmp_path, raw)
    broken = min((_series_dir(tmp_path, 13) / "DICOM_anon").iterdir())
    broken.write_bytes(b"not a dicom file")
    with pytest.raises(DatasetError) as info:
        convert_abdomen(tmp_path / "CHAOS_Train_Sets", tmp_path / "BTCV", tmp_path / "out", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"MR test case 13 (part of the literature split, cannot be skipped): {broken}: cannot")
