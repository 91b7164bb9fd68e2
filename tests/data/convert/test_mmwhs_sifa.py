"""``convert_mmwhs_sifa`` on a miniature SIFA/MPSCL release (npz volumes, npy/npz slices, datalists)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.convert.mmwhs_sifa import convert_mmwhs_sifa
from tcsa_uda.data.geometry import resolve_axis
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.data.verify import verify_dataset
from tcsa_uda.errors import DatasetError


def _case(res, domain, cid):
    case = next(c for c in load_dataset(res.out).domain(domain).cases if c.id == cid)
    img = nib.load(str(case.image_path(res.out)))
    lab = nib.load(str(case.label_path(res.out)))
    return case, np.asarray(img.dataobj), np.asarray(lab.dataobj), img.affine


@pytest.fixture
def release(tmp_path, raw):
    truth = raw.write_sifa(tmp_path / "sifa")
    res = convert_mmwhs_sifa(tmp_path / "sifa", tmp_path / "out", progress=False)
    return res, truth


def test_test_volumes_have_the_flip_undone(release):
    res, truth = release
    for (domain, cid), (img, lab) in truth["test"].items():
        case, got_img, got_lab, _ = _case(res, domain, cid)
        assert case.split == "test"
        np.testing.assert_array_equal(got_img, img)
        np.testing.assert_array_equal(got_lab, lab)
    assert verify_dataset(res.out).ok


def test_training_slices_rebuilt_per_case_in_slice_order(release):
    res, truth = release
    for cid in ("1001", "1002"):
        case, img, lab, _ = _case(res, "MR", cid)
        assert case.split == "train"
        np.testing.assert_array_equal(img, truth["mr_train"][cid][0])  # datalist order was shuffled
        np.testing.assert_array_equal(lab, truth["mr_train"][cid][1])
    # the test subject 1019 also has training slices in this release: kept apart and reported
    _, img, _, _ = _case(res, "MR", "1019_train")
    np.testing.assert_array_equal(img, truth["mr_train"]["1019"][0])
    assert any("1019" in n and "seen in training" in n for n in res.summary["notes"])


def test_unnamed_slices_become_pseudo_volumes_in_datalist_order(release):
    res, truth = release
    _, img, lab, _ = _case(res, "CT", "train_pseudo_000")
    assert img.shape == (16, 16, 10)
    for k, (slice_img, slice_lab) in enumerate(truth["ct_train"]):
        np.testing.assert_array_equal(img[:, :, k], slice_img)
        np.testing.assert_array_equal(lab[:, :, k], slice_lab)
    assert any("pseudo-volumes" in n for n in res.summary["notes"])


def test_coronal_prepare_returns_the_release_slices(release, tmp_path):
    res, truth = release
    _, _, _, affine = _case(res, "MR", "1007")
    assert resolve_axis(affine, "coronal") == 2
    prepare_dataset(res.out, tmp_path / "prep", axis="coronal", size=16, progress=False)
    index = load_prepared(tmp_path / "prep")
    case = next(c for c in index.cases("MR", "test") if c.id == "1007")
    stack = np.load(case.label)
    lab = truth["test"][("MR", "1007")][1]
    assert stack.shape == (lab.shape[2], 16, 16)
    for k in range(lab.shape[2]):
        np.testing.assert_array_equal(stack[k], lab[:, :, k])


def test_release_errors_name_the_file(tmp_path, raw):
    raw.write_sifa(tmp_path / "s")
    for f in (tmp_path / "s" / "test_ct").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="expected the CT test volumes"):
        convert_mmwhs_sifa(tmp_path / "s", tmp_path / "o", progress=False)

    raw.write_sifa(tmp_path / "t")
    (tmp_path / "t" / "train_ct" / "ct_slice0003_label.npy").unlink()
    with pytest.raises(DatasetError, match=r"ct_slice0003.npy .*training_ct.txt:5\): expected a label"):
        convert_mmwhs_sifa(tmp_path / "t", tmp_path / "o", progress=False)

    raw.write_sifa(tmp_path / "u")
    np.save(tmp_path / "u" / "train_ct" / "ct_slice0001_label.npy", np.full((16, 16), 7, np.uint8))
    with pytest.raises(DatasetError, match=r"ct_slice0001.npy: expected the SIFA class ids 0..4"):
        convert_mmwhs_sifa(tmp_path / "u", tmp_path / "o", progress=False)

    raw.write_sifa(tmp_path / "v")
    with open(tmp_path / "v" / "datalist" / "train_mr.txt", "a") as fh:
        fh.write("../train_mr/mr_train_1001_slice_99.npz\n")
    with pytest.raises(
        DatasetError, match=r"train_mr.txt:\d+: expected the file '../train_mr/mr_train_1001_slice_99.npz'"
    ):
        convert_mmwhs_sifa(tmp_path / "v", tmp_path / "o", progress=False)
