"""Tests of ``tcsa-uda prepare``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from tcsa_uda.cli import main
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.normalize import NormalizationRecord
from tcsa_uda.data.prepared import load_prepared


def _dataset(root: Path) -> Path:
    """One labelled CT case of shape (6, 4, 5) with an identity (RAS) affine."""
    root.mkdir(parents=True)
    lab = np.zeros((6, 4, 5), dtype=np.uint8)
    lab[1:4, 1:3, 1:4] = 1
    img = (lab * 40.0 + np.arange(lab.size).reshape(lab.shape) % 7).astype(np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "c1.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "c1_seg.nii.gz"))
    data = {
        "name": "cli",
        "labels": {"background": 0, "heart": 1},
        "domains": {
            "ct": {
                "modality": "computed tomography",
                "cases": [{"id": "c1", "image": "c1.nii.gz", "label": "c1_seg.nii.gz", "split": "train"}],
            }
        },
    }
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def test_prepare_command_writes_slices_with_the_given_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds, out = _dataset(tmp_path / "ds"), tmp_path / "out"
    argv = [
        "prepare",
        str(ds),
        "--out",
        str(out),
        "--axis",
        "coronal",
        "--size",
        "8",
        "--clip-percentiles",
        "0",
        "98",
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ct (computed tomography) train: 1 case(s), 1 labelled, 4 slices" in printed
    case = load_prepared(out).case("ct", "c1")
    assert case.geometry.axis == 1  # coronal = the A/P array axis of a RAS volume
    assert case.load_image().shape == (4, 8, 8)
    assert isinstance(case.normalization, NormalizationRecord)
    assert case.normalization.percentiles == (0.0, 98.0)
    cfg = yaml.safe_load((out / "prepare.yaml").read_text())
    assert cfg["axis"] == "coronal" and cfg["size"] == 8 and cfg["clip_percentiles"] == [0.0, 98.0]


def test_prepare_command_reports_a_bad_axis_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _dataset(tmp_path / "ds")
    assert main(["prepare", str(ds), "--out", str(tmp_path / "out"), "--axis", "oblique", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "axis: expected one of axial, coronal, sagittal, 0, 1, 2; found 'oblique'" in err
    assert "Traceback" not in err


def test_prepare_command_reports_a_missing_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "no dataset.json found" in capsys.readouterr().err


def test_prepare_command_fixed_normalization_with_a_range_flag(tmp_path: Path) -> None:
    ds, out = _dataset(tmp_path / "ds"), tmp_path / "out"
    argv = ["prepare", str(ds), "--out", str(out), "--axis", "2", "--size", "6", "--no-progress"]
    assert main([*argv, "--normalization", "fixed", "--fixed-range", "ct=-10,90"]) == 0
    index = load_prepared(out)
    assert index.settings["normalization"] == {"method": "fixed", "ranges": {"ct": [-10.0, 90.0]}}
    raw = np.asarray(load_nifti(ds / "c1.nii.gz").array, dtype=np.float64)
    expected = np.moveaxis(2.0 * (raw + 10.0) / 100.0 - 1.0, 2, 0)[:, :6, :4]
    # (6, 4) slices are padded to 6 x 6 with the volume's minimum, centred: columns 1..4.
    np.testing.assert_allclose(index.case("ct", "c1").load_image()[:, :, 1:5], expected, atol=1e-6)


@pytest.mark.parametrize("item", ["ct", "ct=1", "ct=a,b", "=0,1"])
def test_prepare_command_rejects_a_malformed_fixed_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str
) -> None:
    ds = _dataset(tmp_path / "ds")
    argv = ["prepare", str(ds), "--out", str(tmp_path / "o"), "--normalization", "fixed", "--fixed-range", item]
    assert main([*argv, "--no-progress"]) == 2
    assert f"--fixed-range: expected DOMAIN=LO,HI (e.g. MR=-1.8,4.4), found {item!r}" in capsys.readouterr().err
