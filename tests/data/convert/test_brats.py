"""``convert_brats``: whole tumour, FLAIR and T2 domains over disjoint patients, reusable split."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.convert.brats import convert_brats, make_brats_split, patient_key
from tcsa_uda.data.verify import verify_dataset
from tcsa_uda.errors import DatasetError, MissingPathError


def _ids(spec, domain, split=None):
    return sorted(c.id for c in spec.domain(domain).select(split))


def test_domains_are_disjoint_and_labels_are_whole_tumour(tmp_path, raw):
    cases = raw.write_brats(tmp_path / "dl", 9)  # the last one has no seg
    res = convert_brats(tmp_path / "dl", tmp_path / "out", seed=0, progress=False)
    spec = load_dataset(res.out)
    flair, t2 = _ids(spec, "FLAIR"), _ids(spec, "T2")
    assert set(flair).isdisjoint(t2)
    assert sorted(flair + t2) == sorted(cases[:-1])
    assert len(flair) == 4 and len(t2) == 4
    assert len(_ids(spec, "FLAIR", "test")) == 1 and len(_ids(spec, "T2", "test")) == 1
    assert any(cases[-1] in n and "seg" in n for n in res.summary["notes"])
    assert spec.class_names == ["background", "whole tumour"]
    assert verify_dataset(res.out).ok
    for domain, seq in (("FLAIR", "flair"), ("T2", "t2")):
        case = spec.domain(domain).cases[0]
        folder = next((tmp_path / "dl").rglob(case.id))
        seg = np.asarray(nib.load(str(folder / f"{case.id}_seg.nii.gz")).dataobj)
        src = np.asarray(nib.load(str(folder / f"{case.id}_{seq}.nii.gz")).dataobj)
        lab = np.asarray(nib.load(str(case.label_path(res.out))).dataobj)
        img = np.asarray(nib.load(str(case.image_path(res.out))).dataobj)
        # diag(-1, -1, 1) input: RAS flips the first two axes
        np.testing.assert_array_equal(lab[::-1, ::-1], np.isin(seg, (1, 2, 4)).astype(np.uint8))
        np.testing.assert_array_equal(img[::-1, ::-1], src)


def test_split_is_seeded_written_and_reusable(tmp_path, raw):
    raw.write_brats(tmp_path / "dl", 8, missing_seg=False)
    a = convert_brats(tmp_path / "dl", tmp_path / "a", seed=3, progress=False)
    b = convert_brats(tmp_path / "dl", tmp_path / "b", seed=3, progress=False)
    split_a = json.loads((a.out / "split.json").read_text())["domains"]
    assert split_a == json.loads((b.out / "split.json").read_text())["domains"]
    reused = convert_brats(tmp_path / "dl", tmp_path / "c", split=a.out / "split.json", seed=99, progress=False)
    assert json.loads((reused.out / "split.json").read_text())["domains"] == split_a
    others = [
        make_brats_split(
            sorted(
                split_a["FLAIR"]["train"] + split_a["T2"]["train"] + split_a["FLAIR"]["test"] + split_a["T2"]["test"]
            ),
            s,
            0.2,
            0.1,
        )
        for s in range(4, 8)
    ]
    assert any(o["FLAIR"]["train"] != sorted(split_a["FLAIR"]["train"]) for o in others)


def test_split_file_with_missing_test_case_or_shared_patient_is_refused(tmp_path, raw):
    raw.write_brats(tmp_path / "dl", 6, missing_seg=False)
    res = convert_brats(tmp_path / "dl", tmp_path / "a", progress=False)
    split = json.loads((res.out / "split.json").read_text())
    split["domains"]["T2"]["test"].append("Brats18_GONE_1")
    (tmp_path / "s1.json").write_text(json.dumps(split))
    with pytest.raises(MissingPathError, match=r"T2 test case\(s\) \['Brats18_GONE_1'\]"):
        convert_brats(tmp_path / "dl", tmp_path / "b", split=tmp_path / "s1.json", progress=False)
    split["domains"]["T2"]["test"] = [split["domains"]["FLAIR"]["train"][0]]
    (tmp_path / "s2.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="listed twice"):
        convert_brats(tmp_path / "dl", tmp_path / "b", split=tmp_path / "s2.json", progress=False)


def test_missing_train_case_of_a_split_file_is_noted(tmp_path, raw):
    raw.write_brats(tmp_path / "dl", 6, missing_seg=False)
    res = convert_brats(tmp_path / "dl", tmp_path / "a", progress=False)
    split = json.loads((res.out / "split.json").read_text())
    split["domains"]["FLAIR"]["train"].append("Brats18_GONE_2")
    (tmp_path / "s.json").write_text(json.dumps(split))
    again = convert_brats(tmp_path / "dl", tmp_path / "b", split=tmp_path / "s.json", progress=False)
    assert any("Brats18_GONE_2" in n for n in again.summary["notes"])
    assert "Brats18_GONE_2" not in _ids(again.spec, "FLAIR")


def test_brats2023_names_and_enhancing_code_3(tmp_path, raw):
    seg = np.zeros((6, 6, 4), np.uint8)
    seg[1:3, 1:3, 1:3] = 3
    seg[3:5, 3:5, 1:3] = 2
    for i in range(4):
        case = f"BraTS-GLI-0000{i}-000"
        for seq in ("t2f", "T2W", "t1n"):
            raw.save(tmp_path / "dl" / case / f"{case}-{seq}.nii.gz", np.full(seg.shape, 10 + i, np.int16), np.eye(4))
        raw.save(tmp_path / "dl" / case / f"{case}-seg.nii.gz", seg, np.eye(4))
    res = convert_brats(tmp_path / "dl", tmp_path / "out", progress=False)
    assert len(res.spec.domain("FLAIR").cases) == 2 and len(res.spec.domain("T2").cases) == 2
    assert res.summary["domains"]["T2"]["voxels"]["whole tumour"] == 2 * 16


def test_make_brats_split_sizes_and_val():
    ids = [f"c{i:03d}" for i in range(30)]
    split = make_brats_split(ids, seed=0, test_fraction=0.2, val_fraction=0.1)
    for domain in ("FLAIR", "T2"):
        sizes = {k: len(v) for k, v in split[domain].items()}
        assert sizes == {"train": 11, "val": 1, "test": 3}
    every = [c for d in split.values() for v in d.values() for c in v]
    assert sorted(every) == ids  # disjoint and complete
    with pytest.raises(DatasetError, match="at least 4 complete BraTS cases"):
        make_brats_split(ids[:3], 0, 0.2, 0.1)


def _two_releases(root, raw, n_shared=6, n_new=2):
    """BraTS 2018 cases ``Brats18_TCIA01_1xx_1`` and BraTS 2019 copies of the same patients
    (``BraTS19_TCIA01_1xx_1``) plus ``n_new`` patients only in 2019, under one root."""
    cases18 = raw.write_brats(root / "MICCAI_BraTS_2018_Data_Training", n_shared, missing_seg=False)
    for folder in sorted((root / "MICCAI_BraTS_2018_Data_Training").rglob("Brats18_*")):
        if folder.is_dir():
            target = (
                root
                / "MICCAI_BraTS_2019_Data_Training"
                / folder.parent.name
                / folder.name.replace("Brats18", "BraTS19")
            )
            target.mkdir(parents=True)
            for f in folder.iterdir():
                shutil.copy(f, target / f.name.replace("Brats18", "BraTS19"))
    new = []
    for i in range(n_new):
        case = f"BraTS19_CBICA_A{i:02d}_1"
        seg = raw.class_boxes((10, 10, 8), (1, 2, 4), np.random.default_rng(i)).astype(np.uint8)
        for seq in ("flair", "t2"):
            raw.save(
                root / "MICCAI_BraTS_2019_Data_Training" / "HGG" / case / f"{case}_{seq}.nii.gz", seg * 7, np.eye(4)
            )
        raw.save(root / "MICCAI_BraTS_2019_Data_Training" / "HGG" / case / f"{case}_seg.nii.gz", seg, np.eye(4))
        new.append(case)
    return cases18, new


def test_patient_in_two_releases_is_converted_once(tmp_path, raw):
    cases18, new = _two_releases(tmp_path / "dl", raw)
    res = convert_brats(tmp_path / "dl", tmp_path / "out", seed=1, progress=False)
    every = _ids(res.spec, "FLAIR") + _ids(res.spec, "T2")
    patients = [patient_key(c)[0] for c in every]
    assert len(patients) == len(set(patients)) == len(cases18) + len(new)
    assert sorted(every) == sorted([c.replace("Brats18", "BraTS19") for c in cases18] + new)
    notes = [n for n in res.summary["notes"] if n.startswith("patient ")]
    assert len(notes) == len(cases18)
    first = next(n for n in notes if n.startswith("patient tcia01_100_1:"))
    assert "2 copies found under different release names: Brats18_TCIA01_100_1 (" in first
    assert "BraTS19_TCIA01_100_1 (" in first and "MICCAI_BraTS_2019_Data_Training" in first
    assert first.endswith("using BraTS19_TCIA01_100_1 (the newest release) so the patient is in one domain only")


def test_split_file_decides_the_copy_and_may_not_list_a_patient_twice(tmp_path, raw):
    cases18, _ = _two_releases(tmp_path / "dl", raw, n_new=0)
    only18 = raw.write_brats(tmp_path / "dl18", len(cases18), missing_seg=False)
    res = convert_brats(tmp_path / "dl18", tmp_path / "a", seed=2, progress=False)
    reused = convert_brats(tmp_path / "dl", tmp_path / "b", split=res.out / "split.json", progress=False)
    assert sorted(_ids(reused.spec, "FLAIR") + _ids(reused.spec, "T2")) == sorted(only18)
    assert any("(the one the split file lists)" in n for n in reused.summary["notes"])
    split = json.loads((res.out / "split.json").read_text())
    twin = split["domains"]["FLAIR"]["train"][0].replace("Brats18", "BraTS19")
    split["domains"]["T2"]["train"].append(twin)
    (tmp_path / "s.json").write_text(json.dumps(split))
    with pytest.raises(DatasetError) as info:
        convert_brats(tmp_path / "dl", tmp_path / "c", split=tmp_path / "s.json", progress=False)
    message = str(info.value)
    key = patient_key(twin)[0]
    assert f"expected each patient once, found patient {key} as " in message
    assert f"and as {twin} (T2/train)" in message


def test_patient_key_strips_the_release_prefix():
    assert patient_key("Brats18_2013_10_1") == ("2013_10_1", 2018)
    assert patient_key("BraTS19_CBICA_AAB_1") == ("cbica_aab_1", 2019)
    assert patient_key("BraTS2021_00495") == ("00495", 2021)
    assert patient_key("BraTS-GLI-00000-000") == ("brats-gli-00000-000", None)
