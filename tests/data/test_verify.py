"""Tests of the dataset verifier (tcsa_uda.data.verify): one test per failure kind."""

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.data.io import Volume
from tcsa_uda.data.verify import VerifyReport, grid_problems, verified_dataset, verify_case, verify_dataset
from tcsa_uda.errors import DatasetError

SHAPE = (4, 5, 3)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def make_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def make_label() -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[1:3, 1:4, 1] = 1
    lab[2, 2, 2] = 2
    return lab


def make_dataset(root: Path) -> dict[str, Any]:
    """A valid two-domain dataset: CT fully labelled, MR with one unlabelled training case."""
    data: dict[str, Any] = {
        "name": "tiny",
        "labels": {"background": 0, "myocardium": 1, "aorta": 2},
        "class_descriptions": {"myocardium": "the muscular wall of the left ventricle"},
        "domains": {
            "CT": {
                "modality": "computed tomography",
                "cases": [
                    {"id": "ct_1", "image": "CT/ct_1.nii.gz", "label": "CT/ct_1_seg.nii.gz", "split": "train"},
                    {"id": "ct_2", "image": "CT/ct_2.nii.gz", "label": "CT/ct_2_seg.nii.gz", "split": "test"},
                ],
            },
            "MR": {
                "modality": "magnetic resonance imaging",
                "cases": [
                    {"id": "mr_1", "image": "MR/mr_1.nii.gz", "split": "train"},
                    {"id": "mr_2", "image": "MR/mr_2.nii.gz", "label": "MR/mr_2_seg.nii.gz", "split": "val"},
                ],
            },
        },
    }
    for i, dom in enumerate(data["domains"].values()):
        for j, case in enumerate(dom["cases"]):
            write_nifti(root / case["image"], make_image(10 * i + j))
            if "label" in case:
                write_nifti(root / case["label"], make_label())
    write_json(root, data)
    return data


def write_json(root: Path, data: Any) -> None:
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")


def messages(report: VerifyReport) -> list[str]:
    return [str(p) for p in report.problems]


def only_problem(report: VerifyReport) -> str:
    assert len(report.problems) == 1, messages(report)
    assert not report.ok
    return str(report.problems[0])


def test_valid_dataset_passes_with_summary(tmp_path):
    make_dataset(tmp_path)
    report = verify_dataset(tmp_path)
    assert report.ok, messages(report)
    assert report.problems == [] and report.warnings == []
    assert report.spec is not None and report.spec.num_classes == 3
    text = report.format()
    assert "OK" in text and "'tiny'" in text
    assert "classes (3): 0 background, 1 myocardium, 2 aorta" in text
    assert "domain CT (computed tomography): 2 cases (train 1, val 0, test 1); labelled 2/2" in text
    assert "domain MR (magnetic resonance imaging): 2 cases (train 1, val 1, test 0); labelled 1/2" in text
    assert report.raise_for_problems() is report.spec


def test_accepts_path_of_dataset_json(tmp_path):
    make_dataset(tmp_path)
    report = verify_dataset(tmp_path / "dataset.json")
    assert report.ok, messages(report)
    assert report.folder == tmp_path


def test_missing_dataset_json(tmp_path):
    msg = only_problem(verify_dataset(tmp_path))
    assert "dataset.json" in msg and "no dataset.json found" in msg


def test_invalid_json_syntax(tmp_path):
    (tmp_path / "dataset.json").write_text('{"name": "x",\n "labels": }', encoding="utf-8")
    report = verify_dataset(tmp_path)
    msg = only_problem(report)
    assert "invalid JSON at line 2" in msg
    assert report.spec is None


def test_missing_required_key(tmp_path):
    data = make_dataset(tmp_path)
    del data["labels"]
    write_json(tmp_path, data)
    msg = only_problem(verify_dataset(tmp_path))
    assert "[labels]" in msg and "required key 'labels' is missing" in msg


def test_label_ids_not_consecutive(tmp_path):
    data = make_dataset(tmp_path)
    data["labels"] = {"background": 0, "myocardium": 1, "aorta": 3}
    write_json(tmp_path, data)
    report = verify_dataset(tmp_path)
    got = messages(report)
    assert got[0].startswith("[labels]")
    assert "expected consecutive ids 0..2" in got[0] and "found [0, 1, 3]" in got[0]
    # the label files hold id 2, which the faulty mapping no longer declares
    assert len(got) == 4 and all("undeclared value(s) [2]" in m for m in got[1:])
    assert report.spec is None


def test_missing_image_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "ct_2.nii.gz").unlink()
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_2]")
    assert (
        str(tmp_path / "CT" / "ct_2.nii.gz") in msg
        and "expected the image file named in dataset.json, found no such file" in msg
    )


def test_missing_label_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "MR" / "mr_2_seg.nii.gz").unlink()
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[MR/mr_2]") and "expected the label file named in dataset.json, found no such file" in msg


def test_unreadable_file(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "ct_1.nii.gz").write_bytes(b"not a nifti file")
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "cannot read image as NIfTI" in msg


def test_shape_mismatch(tmp_path):
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", np.zeros((4, 5, 2), dtype=np.uint8))
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "ct_1_seg.nii.gz" in msg
    assert "image shape (4, 5, 3), found (4, 5, 2)" in msg


def test_affine_mismatch_beyond_tolerance(tmp_path):
    make_dataset(tmp_path)
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label(), shifted)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "label affine to equal the image affine" in msg
    assert "largest difference found: 0.5" in msg


@pytest.mark.parametrize(
    ("name", "label_affine", "difference"),
    [
        ("flipped", np.diag([-1.5, 1.5, 2.0, 1.0]) + np.array([[0, 0, 0, 4.5]] + [[0, 0, 0, 0]] * 3), 4.5),
        ("shifted", AFFINE + np.array([[0, 0, 0, 0]] * 2 + [[0, 0, 0, 2.0]] + [[0, 0, 0, 0]]), 2.0),
    ],
)
def test_label_on_a_flipped_or_shifted_grid_is_refused_by_the_reusable_check(tmp_path, name, label_affine, difference):
    image = Volume(make_image(), AFFINE)
    label = Volume(make_label(), label_affine)
    problems = grid_problems(image, label)
    assert len(problems) == 1
    assert problems[0].startswith("expected the label affine to equal the image affine within 0.001")
    assert f"largest difference found: {difference:g}" in problems[0]
    assert grid_problems(image, Volume(make_label(), AFFINE)) == []
    pred = Volume(np.zeros((4, 5, 2), np.uint8), AFFINE)
    both = grid_problems(label, pred, what="prediction", reference_what="ground truth")
    assert both[0] == "expected the prediction shape to equal the ground truth shape (4, 5, 3), found (4, 5, 2)"
    assert both[1].startswith("expected the prediction affine to equal the ground truth affine")
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label(), label_affine)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith(f"[CT/ct_1] {tmp_path / 'CT' / 'ct_1_seg.nii.gz'}: expected the label affine")


def test_paths_leading_out_of_the_dataset_folder_are_problems(tmp_path):
    root = tmp_path / "ds"
    data = make_dataset(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    write_nifti(outside / "img.nii.gz", make_image())
    write_nifti(outside / "seg.nii.gz", make_label())
    data["domains"]["CT"]["cases"][0]["image"] = "../outside/img.nii.gz"
    (root / "CT" / "ct_2_seg.nii.gz").unlink()
    (root / "CT" / "ct_2_seg.nii.gz").symlink_to(outside / "seg.nii.gz")
    write_json(root, data)
    report = verify_dataset(root)
    msgs = messages(report)
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith(f"[CT/ct_1] {root / '..' / 'outside' / 'img.nii.gz'}: expected 'image' to stay inside")
    assert "which leads through '..' to" in msgs[0]
    assert msgs[1].startswith(f"[CT/ct_2] {root / 'CT' / 'ct_2_seg.nii.gz'}: expected 'label' to stay inside")
    assert f"which leads through a symlink to {outside.resolve() / 'seg.nii.gz'}" in msgs[1]


def test_symlinks_inside_the_dataset_folder_are_accepted(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "store").mkdir()
    (tmp_path / "CT" / "ct_1.nii.gz").rename(tmp_path / "CT" / "store" / "ct_1.nii.gz")
    (tmp_path / "CT" / "ct_1.nii.gz").symlink_to(tmp_path / "CT" / "store" / "ct_1.nii.gz")
    assert verify_dataset(tmp_path).ok


def test_case_ids_differing_only_in_case_are_a_problem(tmp_path):
    data = make_dataset(tmp_path)
    data["domains"]["CT"]["cases"][1]["id"] = "CT_1"
    data["domains"]["CT"]["cases"][0]["id"] = "ct_1"
    write_json(tmp_path, data)
    msg = only_problem(verify_dataset(tmp_path))
    assert "found 'ct_1' and 'CT_1'" in msg and "case-insensitive file systems" in msg


def test_verify_case_is_the_verify_code_path_and_keeps_the_volumes(tmp_path):
    make_dataset(tmp_path)
    spec = verified_dataset(tmp_path)
    case = spec.domain("CT").cases[0]
    check = verify_case(spec, "CT", case)
    image, label = check.raise_for_problems()
    assert label is not None
    np.testing.assert_array_equal(label.array, make_label())
    assert image.array.shape == SHAPE
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label(), np.diag([-1.5, 1.5, 2.0, 1.0]))
    bad = verify_case(spec, "CT", case)
    assert not bad.ok and [str(p) for p in bad.problems] == messages(verify_dataset(tmp_path))
    with pytest.raises(
        DatasetError, match=r"^\[CT/ct_1\] .*ct_1_seg.nii.gz: expected the label affine .*verify"
    ) as info:
        bad.raise_for_problems()
    assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match=r"1 problem\(s\) found"):
        verified_dataset(tmp_path)


def test_volume_larger_than_the_budget_is_a_problem(tmp_path, monkeypatch):
    make_dataset(tmp_path)
    monkeypatch.setenv("TCSA_UDA_MAX_VOLUME_BYTES", "100")
    report = verify_dataset(tmp_path)
    assert len(report.problems) == 7
    assert all("more than the budget of 100 bytes" in str(p) for p in report.problems)


def test_affine_within_tolerance_passes(tmp_path):
    make_dataset(tmp_path)
    nudged = AFFINE.copy()
    nudged[0, 3] = 1e-4
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label(), nudged)
    assert verify_dataset(tmp_path).ok
    assert not verify_dataset(tmp_path, affine_atol=1e-5).ok


def test_undeclared_label_values(tmp_path):
    make_dataset(tmp_path)
    lab = make_label()
    lab[0, 0, 0] = 205
    lab[0, 0, 1] = 7
    write_nifti(tmp_path / "CT" / "ct_2_seg.nii.gz", lab)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_2]")
    assert "declared ids [0, 1, 2]" in msg and "undeclared value(s) [7, 205]" in msg


def test_non_integer_label_values(tmp_path):
    make_dataset(tmp_path)
    lab = make_label().astype(np.float32)
    lab[0, 0, 0] = 0.5
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", lab)
    msg = only_problem(verify_dataset(tmp_path))
    assert "expected integer label values" in msg and "1 non-integer voxel(s)" in msg and "0.5" in msg


def test_float_label_with_integer_values_passes(tmp_path):
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label().astype(np.float32))
    assert verify_dataset(tmp_path).ok


def test_nan_and_inf_in_image(tmp_path):
    make_dataset(tmp_path)
    img = make_image()
    img[0, 0, 0] = np.nan
    img[1, 1, 1] = np.nan
    img[2, 2, 2] = np.inf
    write_nifti(tmp_path / "MR" / "mr_1.nii.gz", img)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[MR/mr_1]") and "found 2 NaN and 1 inf voxel(s)" in msg


def test_4d_image_with_one_volume_is_squeezed(tmp_path):
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1.nii.gz", make_image()[..., None])
    assert verify_dataset(tmp_path).ok


def test_4d_image_without_channel_is_an_error(tmp_path):
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1.nii.gz", np.stack([make_image(1), make_image(2)], axis=-1))
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "found a 4D image of shape (4, 5, 3, 2)" in msg and "'channel'" in msg


def test_4d_image_with_channel(tmp_path):
    data = make_dataset(tmp_path)
    for case in data["domains"]["CT"]["cases"]:
        write_nifti(tmp_path / case["image"], np.stack([make_image(1), make_image(2)], axis=-1))
    data["domains"]["CT"]["channel"] = 1
    write_json(tmp_path, data)
    report = verify_dataset(tmp_path)
    assert report.ok, messages(report)
    assert "channel 1" in report.format()
    data["domains"]["CT"]["channel"] = 2
    write_json(tmp_path, data)
    report = verify_dataset(tmp_path)
    assert len(report.problems) == 2
    assert all("channel 2 requested but the image has 2 volumes" in m for m in messages(report))


def test_4d_label_is_an_error_even_with_channel(tmp_path):
    data = make_dataset(tmp_path)
    data["domains"]["CT"]["channel"] = 0
    write_json(tmp_path, data)
    for case in data["domains"]["CT"]["cases"]:
        write_nifti(tmp_path / case["image"], make_image()[..., None])
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", np.stack([make_label(), make_label()], axis=-1))
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "ct_1_seg.nii.gz" in msg
    assert "expected a 3D label map" in msg and "found a 4D file of shape (4, 5, 3, 2)" in msg


def test_4d_label_with_one_volume_is_squeezed(tmp_path):
    make_dataset(tmp_path)
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", make_label()[..., None])
    assert verify_dataset(tmp_path).ok


def test_empty_domain(tmp_path):
    data = make_dataset(tmp_path)
    data["domains"]["MR"]["cases"] = []
    write_json(tmp_path, data)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[MR]") and "expected at least one case" in msg


def test_duplicate_case_ids(tmp_path):
    data = make_dataset(tmp_path)
    data["domains"]["CT"]["cases"][1]["id"] = "ct_1"
    write_json(tmp_path, data)
    msg = only_problem(verify_dataset(tmp_path))
    assert msg.startswith("[CT/ct_1]") and "found 'ct_1' twice" in msg


def test_unknown_keys_are_warnings(tmp_path):
    data = make_dataset(tmp_path)
    data["version"] = 2
    data["domains"]["CT"]["scanner"] = "x"
    data["domains"]["MR"]["cases"][0]["spacing"] = [1, 1, 1]
    write_json(tmp_path, data)
    report = verify_dataset(tmp_path)
    assert report.ok, messages(report)
    assert len(report.warnings) == 3
    joined = "\n".join(report.warnings)
    assert "['version']" in joined and "['scanner']" in joined and "[MR/mr_1]" in joined and "['spacing']" in joined
    assert "3 warning(s):" in report.format()


def test_same_image_twice_in_a_domain_warns(tmp_path):
    data = make_dataset(tmp_path)
    data["domains"]["CT"]["cases"][1]["image"] = "CT/ct_1.nii.gz"
    write_json(tmp_path, data)
    report = verify_dataset(tmp_path)
    assert report.ok
    assert report.warnings == [
        f"{tmp_path / 'dataset.json'} [CT]: image 'CT/ct_1.nii.gz' is used by 2 cases of the domain"
    ]


def test_all_problems_reported_in_one_run(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "ct_2.nii.gz").unlink()
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", np.zeros((2, 2, 2), dtype=np.uint8))
    img = make_image()
    img[0, 0, 0] = np.nan
    write_nifti(tmp_path / "MR" / "mr_1.nii.gz", img)
    lab = make_label()
    lab[0, 0, 0] = 9
    write_nifti(tmp_path / "MR" / "mr_2_seg.nii.gz", lab)
    report = verify_dataset(tmp_path)
    got = messages(report)
    assert len(got) == 4, got
    assert got[0].startswith("[CT/ct_1]") and "found (2, 2, 2)" in got[0]
    assert got[1].startswith("[CT/ct_2]") and "found no such file" in got[1]
    assert got[2].startswith("[MR/mr_1]") and "1 NaN" in got[2]
    assert got[3].startswith("[MR/mr_2]") and "[9]" in got[3]
    text = report.format()
    assert "4 problem(s) found" in text and all(m in text for m in got)


def test_file_checks_run_despite_structural_problems(tmp_path):
    data = make_dataset(tmp_path)
    data["labels"] = {"background": 0, "myocardium": 2}
    data["domains"]["MR"]["cases"][0]["split"] = "training"
    write_json(tmp_path, data)
    lab = make_label()
    lab[0, 0, 0] = 9
    write_nifti(tmp_path / "CT" / "ct_1_seg.nii.gz", lab)
    report = verify_dataset(tmp_path)
    got = messages(report)
    assert report.spec is None
    assert any(m.startswith("[labels]") for m in got)
    assert any(m.startswith("[MR/mr_1]") and "'training'" in m for m in got)
    # declared ids are taken from the (faulty) labels mapping, so 1 and 9 are both undeclared.
    assert any(m.startswith("[CT/ct_1]") and "undeclared value(s) [1, 9]" in m for m in got)


def test_raise_for_problems_lists_problems(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "ct_2.nii.gz").unlink()
    report = verify_dataset(tmp_path)
    assert report.spec is not None  # structure is fine, only a file is missing
    with pytest.raises(DatasetError, match=r"1 problem\(s\) found:\n  - \[CT/ct_2\]"):
        report.raise_for_problems()


def test_progress_bar_goes_to_stderr(tmp_path, capsys):
    make_dataset(tmp_path)
    assert verify_dataset(tmp_path, progress=True).ok
    captured = capsys.readouterr()
    assert "verify" in captured.err and "4/4" in captured.err
