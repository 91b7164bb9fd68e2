"""Tests of ``tcsa-uda predict`` (folder of NIfTI files and a DICOM series, errors)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from tcsa_uda.cli import main
from tcsa_uda.engine.checkpoint import save_checkpoint
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

CLASSES = ["background", "liver", "spleen"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An untrained light model saved with the keys the training engine writes."""
    path = tmp_path_factory.mktemp("ck") / "final.pt"
    torch.manual_seed(0)
    model = build_segmenter("light", len(CLASSES), 8, base_width=8)
    text = TextEmbeddings(
        ["CT", "MR"], CLASSES, [[f"{d} {c}" for c in CLASSES] for d in ("CT", "MR")], torch.randn(2, 3, 8), "test"
    )
    save_checkpoint(
        path,
        {
            "config": {},
            "stage": 0,
            "method": "tcsa",
            "iteration": 1,
            "model": model.state_dict(),
            "model_name": "light",
            "model_kwargs": {"base_width": 8},
            "class_names": CLASSES,
            "source": "CT",
            "target": "MR",
            "text": text.to_dict(),
            "preprocessing": {
                "prepare": {"axis": "axial", "size": 16, "clip_percentiles": [0.5, 99.5]},
                "size": 16,
                "modalities": {"CT": "ct", "MR": "mri"},
            },
        },
    )
    return path


def _write_axial_series(folder: Path, volume: np.ndarray) -> None:
    """(columns, rows, slices) -> an axial MR series (identity orientation), files in reverse order."""
    folder.mkdir(parents=True)
    uid = generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.Modality = (
            MRImageStorage,
            meta.MediaStorageSOPInstanceUID,
            uid,
            "MR",
        )
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [0.0, 0.0, 4.0 * k]
        ds.PixelSpacing = [1.5, 1.5]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = volume[:, :, k].T.astype(np.uint16).tobytes()
        ds.save_as(str(folder / f"{volume.shape[2] - k:03d}.dcm"), enforce_file_format=True)


def test_predict_folder_of_nifti_and_dicom(ckpt, tmp_path, capsys):
    rng = np.random.default_rng(0)
    inp = tmp_path / "in"
    (inp / "site_a").mkdir(parents=True)
    aff = np.diag([-0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(rng.normal(size=(12, 10, 4)).astype(np.float32), aff), str(inp / "site_a" / "p1.nii.gz"))
    nib.save(nib.Nifti1Image(rng.normal(size=(9, 9, 3)).astype(np.float32), np.eye(4)), str(inp / "p2.nii"))
    _write_axial_series(inp / "p3_dicom", rng.integers(0, 500, size=(10, 8, 5)).astype(np.float32))
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt.parent),
            "--input",
            str(inp),
            "--out",
            str(out),
            "--probabilities",
            "--batch-size",
            "2",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (
        f"{inp / 'site_a' / 'p1.nii.gz'} -> {out / 'site_a' / 'p1.nii.gz'} (+ p1_probabilities.nii.gz)" in captured.out
    )
    p1 = nib.load(str(out / "site_a" / "p1.nii.gz"))
    assert p1.shape == (12, 10, 4) and np.allclose(p1.affine, aff)
    assert nib.load(str(out / "p2.nii.gz")).shape == (9, 9, 3)
    p3 = nib.load(str(out / "p3_dicom.nii.gz"))
    assert p3.shape == (10, 8, 5)
    np.testing.assert_allclose(p3.affine, np.diag([-1.5, -1.5, 4.0, 1.0]), atol=1e-6)  # LPS -> RAS
    assert nib.load(str(out / "p3_dicom_probabilities.nii.gz")).shape == (10, 8, 5, 3)
    record = json.loads((out / "predict.json").read_text())
    assert record["domain"] == "MR" and [o["kind"] for o in record["outputs"]] == ["nifti", "nifti", "dicom"]
    assert record["batch_size"] == 2 and record["precision"] == "fp32"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--domain", "PET"], "--domain 'PET': the checkpoint"),
        (["--classes", "background,liver"], "not the expected ['background', 'liver']"),
        (["--device", "cuda:7"], "device='cuda:7'"),
        (["--batch-size", "zero"], "--batch-size: expected a positive integer or auto, found 'zero'"),
        (["--precision", "fp16", "--device", "cpu"], "--precision=fp16 needs a CUDA device"),
    ],
)
def test_predict_refuses_bad_options_without_traceback(ckpt, tmp_path, capsys, extra, message):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), str(tmp_path / "x.nii.gz"))
    code = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--input",
            str(tmp_path / "x.nii.gz"),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_predict_reports_missing_input_and_checkpoint(ckpt, tmp_path, capsys):
    code = main(
        [
            "predict",
            "--checkpoint",
            str(ckpt),
            "--input",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "nope: input file or folder does not exist" in capsys.readouterr().err
    code = main(
        [
            "predict",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--input",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2 and "no such run folder or checkpoint file" in capsys.readouterr().err


def test_predict_batch_with_a_bad_file_exits_1_and_lists_it(ckpt, tmp_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), str(inp / "good.nii.gz"))
    (inp / "bad.nii.gz").write_bytes(b"garbage")
    out = tmp_path / "o"
    code = main(["predict", "-c", str(ckpt), "-i", str(inp), "-o", str(out), "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert f"{inp / 'good.nii.gz'} -> {out / 'good.nii.gz'}" in captured.out
    assert f"failed: {inp / 'bad.nii.gz'}: cannot read image as NIfTI" in captured.err
    assert f"error: 1 of 2 input(s) failed; see {out / 'predict.json'}." in captured.err
    assert json.loads((out / "predict.json").read_text())["outputs"][0]["status"] == "failed"


def test_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(ckpt, tmp_path, capsys, poison_checkpoint):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), str(tmp_path / "x.nii.gz"))
    evil = tmp_path / "evil.pt"
    marker = poison_checkpoint(ckpt, evil)
    code = main(
        ["predict", "-c", str(evil), "-i", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "o"), "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"Checkpoint {evil}: refused, it holds a pickled object" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "o").exists()
