"""Tests of ``tcsa-uda verify DATASET`` (exit status and output)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from tcsa_uda.cli import app, main

AFFINE = np.eye(4)


def make_dataset(root: Path) -> None:
    """One CT domain with a labelled training case and an unlabelled test case."""
    img = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    lab = np.zeros((3, 4, 2), dtype=np.uint8)
    lab[1, 1:3, 0] = 1
    (root / "CT").mkdir(parents=True)
    nib.save(nib.Nifti1Image(img, AFFINE), str(root / "CT" / "a.nii.gz"))
    nib.save(nib.Nifti1Image(lab, AFFINE), str(root / "CT" / "a_seg.nii.gz"))
    nib.save(nib.Nifti1Image(img, AFFINE), str(root / "CT" / "b.nii.gz"))
    data = {
        "name": "cli-tiny",
        "labels": {"background": 0, "myocardium": 1},
        "domains": {
            "CT": {
                "modality": "computed tomography",
                "cases": [
                    {"id": "a", "image": "CT/a.nii.gz", "label": "CT/a_seg.nii.gz", "split": "train"},
                    {"id": "b", "image": "CT/b.nii.gz", "split": "test"},
                ],
            }
        },
    }
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")


def test_valid_dataset_exits_zero_with_summary(tmp_path):
    make_dataset(tmp_path)
    result = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "OK, dataset 'cli-tiny'" in result.output
    assert "classes (2): 0 background, 1 myocardium" in result.output
    assert "domain CT (computed tomography): 2 cases (train 1, val 0, test 1); labelled 1/2" in result.output


def test_problems_exit_one_and_are_all_listed(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "CT" / "b.nii.gz").unlink()
    lab = np.full((3, 4, 2), 5, dtype=np.uint8)
    nib.save(nib.Nifti1Image(lab, AFFINE), str(tmp_path / "CT" / "a_seg.nii.gz"))
    result = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "2 problem(s) found" in result.output
    assert "[CT/a]" in result.output and "undeclared value(s) [5]" in result.output
    assert "[CT/b]" in result.output and str(tmp_path / "CT" / "b.nii.gz") in result.output


def test_missing_dataset_exits_one(tmp_path):
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "absent")])
    assert result.exit_code == 1
    assert "no dataset.json found" in result.output


def test_warnings_are_printed_but_do_not_fail(tmp_path):
    make_dataset(tmp_path)
    data = json.loads((tmp_path / "dataset.json").read_text(encoding="utf-8"))
    data["comment"] = "x"
    (tmp_path / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(app, ["verify", str(tmp_path), "--progress"])
    assert result.exit_code == 0, result.output
    assert "1 warning(s):" in result.output and "['comment']" in result.output


def test_main_returns_exit_status(tmp_path, capsys):
    make_dataset(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "OK" in capsys.readouterr().out
    (tmp_path / "CT" / "a.nii.gz").write_bytes(b"broken")
    assert main(["verify", str(tmp_path)]) == 1
    assert "cannot read image as NIfTI" in capsys.readouterr().out
