"""``convert_abdomen`` on miniature CHAOS (DICOM + PNG) and BTCV (NIfTI) downloads."""

from __future__ import annotations

import nibabel as nib
import numpy as np
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
