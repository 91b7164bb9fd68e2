"""``convert_mmwhs`` on miniature MM-WHS downloads: label codes, split, orientation, verify."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.convert.mmwhs import TEST_IDS, convert_mmwhs
from tcsa_uda.data.geometry import resolve_axis
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.verify import verify_dataset
from tcsa_uda.errors import DatasetError, MissingPathError


def _find(root, name):
    return next(root.rglob(name))


CT_IDS = [1001, 1002, 1003, 1008, 1014, 1019]
MR_IDS = [1001, 1007, 1009, 1018, 1019]


@pytest.fixture
def converted(tmp_path, raw):
    raw_ct = raw.write_mmwhs(tmp_path / "ct_dl", "ct", CT_IDS, seed=0)
    raw_mr = raw.write_mmwhs(tmp_path / "mr_dl", "mr", MR_IDS, seed=1)
    res = convert_mmwhs(tmp_path / "ct_dl", tmp_path / "mr_dl", tmp_path / "out", progress=False)
    return res, {"CT": raw_ct, "MR": raw_mr}


def test_split_follows_the_literature_and_missing_cases_are_noted(converted):
    res, _ = converted
    spec = load_dataset(res.out)
    for domain, ids in (("CT", CT_IDS), ("MR", MR_IDS)):
        dom = spec.domain(domain)
        assert sorted(c.id for c in dom.select("test")) == sorted(TEST_IDS[domain])
        assert sorted(c.id for c in dom.cases) == [str(i) for i in ids]
        assert all(c.label is not None for c in dom.cases)
    notes = "\n".join(res.summary["notes"])
    assert "CT: 14 of the 20 labelled cases not found" in notes and "1020" in notes
    assert spec.class_names == [
        "background",
        "myocardium",
        "left atrium blood cavity",
        "left ventricle blood cavity",
        "ascending aorta",
    ]
    assert verify_dataset(res.out).ok
    saved = json.loads((res.out / "summary.json").read_text())
    assert saved["domains"]["MR"]["cases"] == {"train": 1, "val": 0, "test": 4}


def test_label_codes_map_to_the_sifa_ids_and_other_structures_to_background(converted):
    res, truth = converted
    spec = load_dataset(res.out)
    for domain in ("CT", "MR"):
        for case in spec.domain(domain).cases:
            lab = np.asarray(nib.load(str(case.label_path(res.out))).dataobj)
            src = truth[domain][int(case.id)]
            for code, cid in ((205, 1), (420, 2), (500, 3), (820, 4)):
                assert int((lab == cid).sum()) == int((src == code).sum()) > 0
            assert int((lab == 0).sum()) == int(((src == 0) | (src == 600)).sum())
    ct_total = res.summary["domains"]["CT"]["voxels"]
    assert ct_total["myocardium"] == sum(int((r == 205).sum()) for r in truth["CT"].values())


def test_volumes_are_ras_with_each_voxel_at_its_world_position_and_slice_coronally(converted, tmp_path, raw):
    res, truth = converted
    case = next(c for c in load_dataset(res.out).domain("CT").cases if c.id == "1008")
    img = nib.load(str(case.label_path(res.out)))
    lab, affine = np.asarray(img.dataobj), img.affine
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    src = truth["CT"][1008]
    # every raw voxel, mapped through the world, lands on the converted voxel with the same class
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in src.shape], indexing="ij"), -1).reshape(-1, 3)
    world = raw.NON_RAS_AFFINE @ np.c_[ijk, np.ones(len(ijk))].T
    new = np.rint(np.linalg.solve(affine, world)[:3].T).astype(int)
    mapped = {205: 1, 420: 2, 500: 3, 820: 4}
    expected = np.vectorize(lambda v: mapped.get(int(v), 0))(src[tuple(ijk.T)])
    np.testing.assert_array_equal(lab[tuple(new.T)], expected)
    # the raw A/P axis is array axis 0 (12 voxels); after conversion it is axis 1
    assert resolve_axis(affine, "coronal") == 1 and lab.shape[1] == src.shape[0]
    index = prepare_dataset(res.out, tmp_path / "prep", axis="coronal", size=16, progress=False)
    prepared = next(c for c in index.cases("CT", "test") if c.id == "1008")
    assert prepared.n_slices == src.shape[0]


def test_same_parent_folder_for_ct_and_mr_and_mixed_case_names(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "dl", "ct", CT_IDS, seed=0)
    raw.write_mmwhs(tmp_path / "dl", "mr", MR_IDS, seed=1)
    res = convert_mmwhs(tmp_path / "dl", tmp_path / "dl", tmp_path / "out", progress=False)
    assert len(res.spec.domain("CT").cases) == len(CT_IDS)  # CT_TRAIN_1001_image.nii (upper case, .nii) found
    assert len(res.spec.domain("MR").cases) == len(MR_IDS)


def test_val_is_carved_from_train_when_enough_cases(tmp_path, raw):
    ids = [*range(1001, 1015), 1019]  # 15 cases: 4 test, 11 train -> 1 val
    raw.write_mmwhs(tmp_path / "dl", "ct", ids, shape=(6, 6, 6))
    raw.write_mmwhs(tmp_path / "dl", "mr", MR_IDS, shape=(6, 6, 6))
    res = convert_mmwhs(tmp_path / "dl", tmp_path / "dl", tmp_path / "out", progress=False, seed=4)
    ct = res.spec.domain("CT")
    val = [c.id for c in ct.select("val")]
    assert len(val) == 1 and val[0] not in TEST_IDS["CT"]
    assert len(ct.select("train")) == 10 and len(ct.select("test")) == 4
    assert res.spec.domain("MR").select("val") == []  # 1 training case only
    again = convert_mmwhs(tmp_path / "dl", tmp_path / "dl", tmp_path / "out2", progress=False, seed=4)
    assert [c.id for c in again.spec.domain("CT").select("val")] == val


def test_missing_test_case_is_fatal(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "ct", "ct", [1001, 1003, 1008, 1014])  # 1019 missing
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    with pytest.raises(MissingPathError, match=r"CT test case\(s\) \['1019'\]"):
        convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)


def test_missing_label_of_a_test_case_is_fatal_of_a_train_case_noted(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    _find(tmp_path / "ct", "ct_train_1002_label.nii.gz").unlink()
    res = convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    assert "1002" not in [c.id for c in res.spec.domain("CT").cases]
    assert any("1002 (only its image)" in n for n in res.summary["notes"])
    (tmp_path / "ct" / "ct_train" / "ct_train_1003_label.nii.gz").unlink()
    with pytest.raises(MissingPathError, match="1003"):
        convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)


def test_duplicate_files_and_shape_mismatch_are_clear_errors(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    copy = tmp_path / "ct" / "copy" / "ct_train_1002_image.nii"
    raw.save(copy, np.zeros((12, 10, 8), np.int16), raw.NON_RAS_AFFINE)
    with pytest.raises(DatasetError, match=r"found two: .*ct_train_1002_image"):
        convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    copy.unlink()
    raw.save(_find(tmp_path / "ct", "ct_train_1003_label.nii.gz"), np.zeros((12, 10, 7), np.int16), raw.NON_RAS_AFFINE)
    with pytest.raises(DatasetError) as info:
        convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("CT test case 1003 (part of the literature split, cannot be skipped): ")
    assert "ct_train_1003_label.nii.gz: expected the label shape to equal the shape (12, 10, 8)" in message


def test_fault_in_a_training_case_skips_it_with_a_note(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    bad_label = _find(tmp_path / "ct", "ct_train_1002_label.nii.gz")
    raw.save(bad_label, np.zeros((12, 10, 7), np.int16), raw.NON_RAS_AFFINE)
    bad_image = _find(tmp_path / "mr", "MR_TRAIN_1001_image.nii")  # case 0 of the writer: .nii, upper case
    bad_image.write_bytes(bad_image.read_bytes()[:400])
    res = convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    assert sorted(c.id for c in res.spec.domain("CT").cases) == ["1001", "1003", "1008", "1014", "1019"]
    assert "1001" not in [c.id for c in res.spec.domain("MR").cases]
    skipped = {(s["domain"], s["id"]): s for s in res.summary["skipped_cases"]}
    assert set(skipped) == {("CT", "1002"), ("MR", "1001")}
    assert skipped["CT", "1002"]["split"] == "train"
    assert "expected the label shape to equal the shape (12, 10, 8)" in skipped["CT", "1002"]["reason"]
    assert (
        str(bad_image) in skipped["MR", "1001"]["reason"]
        and "file holds only 400 bytes" in skipped["MR", "1001"]["reason"]
    )
    assert any(n.startswith("CT train case 1002 skipped: ") for n in res.summary["notes"])
    assert json.loads((res.out / "summary.json").read_text())["skipped_cases"] == res.summary["skipped_cases"]
    assert not (res.out / "CT" / "1002_image.nii.gz").exists()  # a refused case leaves no file
    assert verify_dataset(res.out).ok


def test_macosx_copies_are_ignored(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "dl" / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "dl" / "mr", "mr", MR_IDS)
    raw.write_mmwhs(tmp_path / "dl" / "__MACOSX" / "ct", "ct", CT_IDS)  # a copy with the real names
    res = convert_mmwhs(tmp_path / "dl", tmp_path / "dl", tmp_path / "out", progress=False)
    assert len(res.spec.domain("CT").cases) == len(CT_IDS)
    assert all("__MACOSX" not in r["source"] for d in res.summary["domains"].values() for r in d["case_list"])


def test_unexpected_codes_are_noted_and_mapped_to_background(tmp_path, raw):
    raw.write_mmwhs(tmp_path / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    path = _find(tmp_path / "ct", "ct_train_1002_label.nii.gz")
    lab = np.asarray(nib.load(str(path)).dataobj).copy()
    lab[0, 0, :3] = 999
    raw.save(path, lab, raw.NON_RAS_AFFINE)
    res = convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    assert any("999 (3 voxels)" in n and "mapped to background" in n for n in res.summary["notes"])
    assert res.summary["remapped_codes"] == []


def test_code_421_is_the_left_atrium_and_named_in_the_summary(tmp_path, raw):
    truth = raw.write_mmwhs(tmp_path / "ct", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "mr", "mr", MR_IDS)
    path = _find(tmp_path / "mr", "mr_train_1009_label.nii.gz")
    lab = np.asarray(nib.load(str(path)).dataobj).copy()
    n_la = int((lab == 420).sum())
    lab[lab == 420] = 421  # the MR file of the download that marks the left atrium with 421
    raw.save(path, lab, raw.NON_RAS_AFFINE)
    res = convert_mmwhs(tmp_path / "ct", tmp_path / "mr", tmp_path / "out", progress=False)
    case = next(c for c in res.spec.domain("MR").cases if c.id == "1009")
    out = np.asarray(nib.load(str(case.label_path(res.out))).dataobj)
    assert int((out == 2).sum()) == n_la > 0
    assert res.summary["remapped_codes"] == [
        {"file": str(path), "code": 421, "class_id": 2, "class": "left atrium blood cavity", "voxels": n_la}
    ]
    saved = json.loads((res.out / "summary.json").read_text())
    assert saved["remapped_codes"][0]["file"] == str(path)
    assert any(f"raw code 421 ({n_la} voxels) remapped to 2 'left atrium blood cavity'" in n for n in saved["notes"])
    assert not any("unexpected label code" in n for n in saved["notes"])
    assert truth  # the CT download is untouched


def test_heart_crop_keeps_every_structure_and_world_positions(tmp_path, raw):
    truth = raw.write_mmwhs(tmp_path / "dl", "ct", CT_IDS)
    raw.write_mmwhs(tmp_path / "dl", "mr", MR_IDS)
    src = np.pad(truth[1014], 6)  # a field of view much larger than the heart
    raw.save(_find(tmp_path / "dl", "ct_train_1014_label.nii.gz"), src, raw.NON_RAS_AFFINE)
    raw.save(_find(tmp_path / "dl", "ct_train_1014_image.nii.gz"), src * 2, raw.NON_RAS_AFFINE)
    res = convert_mmwhs(tmp_path / "dl", tmp_path / "dl", tmp_path / "out", crop_margin_mm=1.0, progress=False)
    case = next(c for c in res.spec.domain("CT").cases if c.id == "1014")
    img = nib.load(str(case.label_path(res.out)))
    lab, affine = np.asarray(img.dataobj), img.affine
    assert lab.size < src.size
    for code, cid in ((205, 1), (420, 2), (500, 3), (820, 4)):
        assert int((lab == cid).sum()) == int((src == code).sum())
    ijk = np.argwhere(src == 820)[0]
    world = raw.NON_RAS_AFFINE @ [*ijk, 1.0]
    assert lab[tuple(np.rint(np.linalg.solve(affine, world)[:3]).astype(int))] == 4
    assert any("cropped" in n for n in res.summary["notes"])
