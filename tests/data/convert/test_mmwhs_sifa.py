"""``convert_mmwhs_sifa`` on miniatures of the real releases: MPSCL numpy + datalists, SIFA tfrecords + test NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.convert.mmwhs_sifa import MR_SUBJECTS_NOTE, PSEUDO_VOLUME_SLICES, convert_mmwhs_sifa
from tcsa_uda.data.geometry import resolve_axis
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.verify import verify_dataset
from tcsa_uda.errors import ConfigError, DatasetError


def _case(out: Path, domain: str, cid: str) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    case = next(c for c in load_dataset(out).domain(domain).cases if c.id == cid)
    img = load_nifti(case.image_path(out))
    label_path = case.label_path(out)
    assert label_path is not None
    return case.split, np.asarray(img.array), np.asarray(load_nifti(label_path).array), img.affine


@pytest.fixture
def mpscl(tmp_path: Path, raw) -> tuple:
    truth = raw.write_mpscl(tmp_path / "release", n_train=70)
    return convert_mmwhs_sifa(tmp_path / "release", tmp_path / "out", progress=False), truth


def test_mpscl_test_volumes_keep_their_ids_and_lose_the_flip(mpscl) -> None:
    res, truth = mpscl
    for (domain, cid), (z, lab) in truth["test"].items():
        split, img, got_lab, affine = _case(res.out, domain, cid)
        assert split == "test"
        np.testing.assert_allclose(img, z, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got_lab, lab)
    assert resolve_axis(affine, "coronal") == 2
    assert verify_dataset(res.out).ok


def test_mpscl_slices_become_pseudo_volumes_in_slice_number_order_in_zscore_space(mpscl) -> None:
    res, truth = mpscl
    items = truth["slices"][("MR", "train")]
    split, img, lab, _ = _case(res.out, "MR", "train_pseudo_000")
    assert split == "train" and img.shape == (16, 16, PSEUDO_VOLUME_SLICES)
    _, rest, _, _ = _case(res.out, "MR", "train_pseudo_001")
    assert rest.shape == (16, 16, 70 - PSEUDO_VOLUME_SLICES)
    for k in (0, 1, 2, 10, 63):  # the lists are in string order (0, 1, 10, 11, ...): numbers decide
        z, _, slice_lab = items[k]
        np.testing.assert_allclose(img[:, :, k], z, rtol=0, atol=2e-6)  # [-1, 1] mapped back to z-scores
        np.testing.assert_array_equal(lab[:, :, k], slice_lab)
    _, val, _, _ = _case(res.out, "CT", "val_pseudo_000")
    np.testing.assert_allclose(val[:, :, 2], truth["slices"][("CT", "val")][2][0], rtol=0, atol=2e-6)
    data = json.loads((res.out / "dataset.json").read_text())
    assert data["domains"]["MR"]["intensity_range"] == [-1.8, 4.4]
    assert data["domains"]["CT"]["intensity_range"] == [-2.8, 3.2]
    case_ids = [c["id"] for c in data["domains"]["MR"]["cases"]]
    assert case_ids == ["1007", "1009", "1018", "1019", "train_pseudo_000", "train_pseudo_001", "val_pseudo_000"]


def test_mpscl_summary_says_what_cannot_be_known(mpscl) -> None:
    res, _ = mpscl
    notes = res.summary["notes"]
    assert MR_SUBJECTS_NOTE in notes
    assert any(n.startswith("MR train: 70 npy slice file(s) (names carry no case id)") for n in notes)
    assert any("mapped back from [-1, 1] to the release's z-scores" in n for n in notes)
    sources = [c["source"] for c in res.summary["domains"]["CT"]["case_list"] if c["id"] == "val_pseudo_000"]
    assert sources == ["ct_val_slice0.npy .. ct_val_slice2.npy (3 slices; numbers 0..2)"]


def test_prepare_fixed_gives_back_the_released_network_inputs(mpscl, tmp_path: Path) -> None:
    res, truth = mpscl
    index = prepare_dataset(res.out, tmp_path / "prep", axis="coronal", size=16, normalization="fixed", progress=False)
    assert index.settings["normalization"] == {"method": "fixed", "ranges": {"CT": [-2.8, 3.2], "MR": [-1.8, 4.4]}}
    stack = np.asarray(index.case("MR", "train_pseudo_000").load_image())
    for k in (0, 5, 63):
        np.testing.assert_allclose(stack[k], truth["slices"][("MR", "train")][k][1], rtol=0, atol=1e-6)
    z, _ = truth["test"][("CT", "1014")]
    test = np.asarray(index.case("CT", "1014").load_image())
    np.testing.assert_allclose(test, np.moveaxis(2.0 * (z + 2.8) / 6.0 - 1.0, 2, 0), rtol=0, atol=1e-6)


def test_zscore_npy_slices_need_the_flag(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path / "r", n_train=3, n_val=1)
    path = tmp_path / "r" / "data_np" / "train_ct" / "ct_train_slice1.npy"
    np.save(path, np.load(path) * 3.0)  # leaves [-1, 1]
    with pytest.raises(DatasetError, match=r"ct_train_slice1.npy: expected an MPSCL slice already mapped to \[-1, 1\]"):
        convert_mmwhs_sifa(tmp_path / "r", tmp_path / "o", progress=False)
    res = convert_mmwhs_sifa(tmp_path / "r", tmp_path / "o", slice_values="zscore", progress=False)
    _, img, _, _ = _case(res.out, "CT", "train_pseudo_000")
    np.testing.assert_array_equal(img[:, :, 1], np.load(path))
    with pytest.raises(ConfigError, match="--slice-values: expected one of unit, zscore"):
        convert_mmwhs_sifa(tmp_path / "r", tmp_path / "o", slice_values="raw", progress=False)


def test_sifa_tfrecords_and_test_nifti_convert(raw, tmp_path: Path) -> None:
    truth = raw.write_sifa(tmp_path / "sifa")
    res = convert_mmwhs_sifa(tmp_path / "sifa", tmp_path / "out", progress=False)
    _, img, lab, _ = _case(res.out, "CT", "train_pseudo_000")
    for k, (z, slice_lab) in enumerate(truth["slices"][("CT", "train")]):
        np.testing.assert_array_equal(img[:, :, k], z)  # z-scores as released, the middle of three slices
        np.testing.assert_array_equal(lab[:, :, k], slice_lab)
    for (domain, cid), (z, test_lab) in truth["test"].items():
        split, img, got, _ = _case(res.out, domain, cid)
        assert split == "test"
        np.testing.assert_allclose(img, z, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got, test_lab)
    fives = truth["fives"][("MR", "train")]
    assert (
        f"MR train: {fives} pixel(s) of label value 5 (ignored by SIFA's loss) set to background"
        in (res.summary["notes"])
    )
    assert any("z-scores as released" in n for n in res.summary["notes"])


def test_missing_parts_are_named(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path / "a", n_train=2, n_val=1)
    for f in (tmp_path / "a" / "data_np" / "test_ct").iterdir():
        f.unlink()
    (tmp_path / "a" / "datalist" / "test_ct.txt").unlink()
    with pytest.raises(DatasetError, match=r"expected the CT test volumes \(image_ct_<id>.nii.gz.npz, or"):
        convert_mmwhs_sifa(tmp_path / "a", tmp_path / "o", progress=False)

    raw.write_sifa(tmp_path / "b", n_train=1, n_val=1)
    for f in (tmp_path / "b" / "mr_train_tfs").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"expected MR training slices \(mr_train_slice<N>.npy with"):
        convert_mmwhs_sifa(tmp_path / "b", tmp_path / "o", progress=False)
