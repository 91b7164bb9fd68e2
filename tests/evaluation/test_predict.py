"""Tests of tcsa_uda.evaluation.predict: NIfTI and DICOM in, label maps on the input's grid out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tcsa_uda.engine.checkpoint import save_checkpoint
from tcsa_uda.errors import ConfigError, DatasetError, OutputExistsError
from tcsa_uda.evaluation.predict import find_inputs, predict_paths, read_dicom_volume
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

CLASSES = ["background", "a", "b"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient frame -> NIfTI world frame


def _checkpoint(path: Path, size: int = 16, encoding: str | None = None) -> Path:
    """An untrained light model saved with the keys the training engine writes (``encoding``:
    the recorded input encoding; None writes no record, as checkpoints from before the setting)."""
    torch.manual_seed(0)
    model = build_segmenter("light", len(CLASSES), 8, base_width=8)
    text = TextEmbeddings(
        domains=["MR", "CT"],
        class_names=CLASSES,
        prompts=[[f"{d} {c}" for c in CLASSES] for d in ("MR", "CT")],
        embeddings=torch.randn(2, len(CLASSES), 8),
        encoder="test",
    )
    save_checkpoint(
        path,
        {
            "config": {},
            "stage": 0,
            "method": "source_only",
            "iteration": 1,
            "model": model.state_dict(),
            "model_name": "light",
            "model_kwargs": {"base_width": 8},
            "class_names": CLASSES,
            "source": "MR",
            "target": "CT",
            "text": text.to_dict(),
            "preprocessing": {
                "prepare": {"axis": "axial", "size": size, "clip_percentiles": [0.5, 99.5]},
                "size": size,
                "modalities": {"MR": "mri", "CT": "ct"},
                **({"input_encoding": encoding} if encoding is not None else {}),
            },
        },
    )
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ck") / "model.pt")


def _oblique_affine() -> np.ndarray:
    """Rotated 25 degrees about z and 10 about x, spacing 0.7 x 0.9 x 3.0 mm, with an offset."""
    a, b = np.deg2rad(25), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.9, 3.0])
    affine[:3, 3] = [-40.0, 12.5, 80.0]
    return affine


def _image(shape=(20, 14, 5), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(size=shape).astype(np.float32) * 20
    img[5:12, 4:10, 1:4] += 200
    return img


def test_oblique_anisotropic_nifti_keeps_affine_shape_and_orientation(tmp_path, ckpt):
    affine = _oblique_affine()
    img = nib.Nifti1Image(_image(), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    img.header.set_slope_inter(2.0, 5.0)  # scaled input intensities must not scale the labels
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    records = predict_paths(
        ckpt, tmp_path / "scan.nii.gz", tmp_path / "out", probabilities=True, batch_size=2, device="cpu", progress=False
    )
    out = nib.load(str(tmp_path / "out" / "scan.nii.gz"))
    ref = nib.load(str(tmp_path / "scan.nii.gz"))
    assert out.shape == ref.shape == (20, 14, 5)
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_allclose(out.header.get_qform(), ref.header.get_qform(), atol=1e-5)
    np.testing.assert_allclose(out.header.get_sform(), ref.header.get_sform(), atol=1e-5)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 2)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(ref.affine)
    np.testing.assert_allclose(out.header.get_zooms(), (0.7, 0.9, 3.0), atol=1e-5)
    labels = np.asarray(out.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2}
    prob = nib.load(str(tmp_path / "out" / "scan_probabilities.nii.gz"))
    assert prob.shape == (20, 14, 5, 3) and prob.get_data_dtype() == np.float32
    p = np.asarray(prob.dataobj)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(p, axis=-1))  # the label map is the argmax of the maps
    np.testing.assert_allclose(prob.affine, affine, atol=1e-5)
    assert records[0].shape == (20, 14, 5) and records[0].kind == "nifti"
    record = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert record["domain"] == "CT" and record["class_names"] == {"0": "background", "1": "a", "2": "b"}
    assert record["outputs"][0]["labels"] == str(tmp_path / "out" / "scan.nii.gz")


def test_label_header_keeps_qform_and_sheared_sform_and_resets_label_fields(tmp_path, ckpt):
    qform = _oblique_affine()
    sform = qform.copy()
    sform[:3, 1] += 0.15 * sform[:3, 0]  # a shear the qform cannot hold
    sform[:3, 3] += (1.5, -2.0, 0.5)
    img = nib.Nifti1Image(_image(), sform)
    img.header.set_qform(qform, code=1)
    img.header.set_sform(sform, code=4)
    img.header["cal_min"], img.header["cal_max"] = -1000.0, 3000.0
    img.header.set_intent("z score", name="zstat")
    nib.save(img, str(tmp_path / "scan.nii.gz"))
    ref = nib.load(str(tmp_path / "scan.nii.gz")).header
    predict_paths(ckpt, tmp_path / "scan.nii.gz", tmp_path / "out", probabilities=True, device="cpu", progress=False)
    out = nib.load(str(tmp_path / "out" / "scan.nii.gz"))
    hdr = out.header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 4)
    np.testing.assert_allclose(hdr.get_qform(), ref.get_qform(), atol=1e-5)
    np.testing.assert_allclose(hdr.get_sform(), sform, atol=1e-5)
    np.testing.assert_allclose(hdr.get_zooms(), ref.get_zooms(), atol=1e-6)
    np.testing.assert_allclose(hdr.get_zooms(), (0.7, 0.9, 3.0), atol=1e-5)  # pixdim from the qform, not the shear
    labels = np.asarray(out.dataobj)
    assert hdr.get_data_dtype().kind == "u"
    assert (float(hdr["cal_min"]), float(hdr["cal_max"])) == (float(labels.min()), float(labels.max()))
    assert hdr.get_intent() == ("label", (), "")
    assert hdr.get_slope_inter() == (None, None)
    prob = nib.load(str(tmp_path / "out" / "scan_probabilities.nii.gz")).header
    np.testing.assert_allclose(prob.get_qform(), ref.get_qform(), atol=1e-5)
    np.testing.assert_allclose(prob.get_sform(), sform, atol=1e-5)
    assert (float(prob["cal_min"]), float(prob["cal_max"])) == (0.0, 1.0)
    assert int(prob["intent_code"]) == 0 and prob.get_intent()[2] == ""


# ------------------------------------------------------------------------------------ DICOM


ROW_COS = np.array([np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15)), 0.0])  # direction of increasing column
_A, _B = np.deg2rad(15), np.deg2rad(5)
COL_COS = np.array([-np.sin(_A) * np.cos(_B), np.cos(_A) * np.cos(_B), -np.sin(_B)])  # increasing row; orthogonal
PIXEL_SPACING = (0.8, 0.6)  # (between rows, between columns)
SLICE_STEP = 2.5
ORIGIN = np.array([-30.0, -20.0, 45.0])  # LPS


def _write_series(folder: Path, volume: np.ndarray, seed: int = 1, uid: str | None = None) -> None:
    """Write ``volume`` (columns, rows, slices) as a CT series, one file per slice, in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(ROW_COS, COL_COS)
    uid = uid or generate_uid()
    study = generate_uid()
    n = volume.shape[2]
    order = np.random.default_rng(seed).permutation(n)
    for file_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = study, uid, "CT", 3
        ds.InstanceNumber = int(file_index + 1)  # deliberately unrelated to the position
        ds.ImageOrientationPatient = [float(v) for v in (*ROW_COS, *COL_COS)]
        ds.ImagePositionPatient = [float(v) for v in ORIGIN + k * SLICE_STEP * normal]
        ds.PixelSpacing = [PIXEL_SPACING[0], PIXEL_SPACING[1]]
        ds.SliceThickness = SLICE_STEP
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        stored = (volume[:, :, k].T + 1024).astype(np.int16)  # (rows, columns)
        ds.PixelData = stored.tobytes()
        name = f"IM{file_index:04d}" + (".dcm" if file_index % 2 else "")
        ds.save_as(str(folder / name), enforce_file_format=True)


def _dicom_volume() -> np.ndarray:
    return np.round(_image((18, 12, 6), seed=3)).astype(np.float32)


def test_read_dicom_series_sorts_slices_and_builds_the_ras_affine(tmp_path):
    vol = _dicom_volume()
    _write_series(tmp_path / "series", vol)
    (tmp_path / "series" / "notes.txt").write_text("not dicom")
    items = find_inputs(tmp_path / "series")
    assert len(items) == 1 and items[0].kind == "dicom" and len(items[0].dicom_files) == 6
    got = read_dicom_volume(reversed(items[0].dicom_files))
    np.testing.assert_array_equal(got.array, vol)  # slices back in spatial order, rescaled
    normal = np.cross(ROW_COS, COL_COS)
    for c, r, k in [(0, 0, 0), (17, 0, 0), (0, 11, 0), (5, 7, 5), (17, 11, 5)]:
        lps = ORIGIN + c * PIXEL_SPACING[1] * ROW_COS + r * PIXEL_SPACING[0] * COL_COS + k * SLICE_STEP * normal
        ras = (LPS_TO_RAS @ np.array([*lps, 1.0]))[:3]
        np.testing.assert_allclose(got.affine @ np.array([c, r, k, 1.0]), [*ras, 1.0], atol=1e-6)


def test_dicom_series_predicts_like_the_same_volume_as_nifti(tmp_path, ckpt):
    vol = _dicom_volume()
    _write_series(tmp_path / "in" / "patient1", vol)
    ref = read_dicom_volume(sorted((tmp_path / "in" / "patient1").iterdir()))
    nib.save(nib.Nifti1Image(vol, ref.affine), str(tmp_path / "same.nii.gz"))
    records = predict_paths(ckpt, tmp_path / "in", tmp_path / "out", device="cpu", progress=False)
    assert [r.kind for r in records] == ["dicom"]
    out = nib.load(str(tmp_path / "out" / "patient1.nii.gz"))
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    assert out.shape == vol.shape
    predict_paths(ckpt, tmp_path / "same.nii.gz", tmp_path / "out_nifti", device="cpu", progress=False)
    np.testing.assert_array_equal(
        np.asarray(out.dataobj), np.asarray(nib.load(str(tmp_path / "out_nifti" / "same.nii.gz")).dataobj)
    )


def test_dicom_series_with_a_missing_slice_is_rejected_with_the_gap(tmp_path):
    vol = _dicom_volume()
    _write_series(tmp_path / "s", vol)
    items = find_inputs(tmp_path / "s")
    normal = np.cross(ROW_COS, COL_COS)
    files = list(items[0].dicom_files)
    positions = {f: float(np.asarray(pydicom.dcmread(str(f)).ImagePositionPatient, float) @ normal) for f in files}
    ordered = sorted(files, key=positions.get)
    kept = [f for f in ordered if f != ordered[3]]  # the fourth slice is missing
    with pytest.raises(DatasetError) as info:
        read_dicom_volume(kept, "scan/s")
    message = str(info.value)
    assert message.startswith("scan/s: expected evenly spaced slices (median step 2.500 mm")
    assert f"found a gap of 5.000 mm (2.00 x the median) between slice 2 ({ordered[2].name}" in message
    assert f"slice 3 ({ordered[4].name}, at {positions[ordered[4]]:.3f} mm)" in message


def test_two_slices_at_one_position_are_rejected(tmp_path):
    vol = _dicom_volume()
    _write_series(tmp_path / "s", vol[:, :, :2], uid="1.2.3.4")
    _write_series(tmp_path / "s" / "copy", vol[:, :, :2], seed=2, uid="1.2.3.4")
    items = find_inputs(tmp_path / "s")
    with pytest.raises(DatasetError, match=r"expected one slice per position, found .* at the same position"):
        read_dicom_volume(items[0].dicom_files)


# ------------------------------------------------------------------------------------ errors


def test_unreadable_and_wrong_dimensional_inputs_are_named(tmp_path, ckpt):
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(DatasetError, match=r"broken.nii.gz: cannot read image as NIfTI"):
        predict_paths(ckpt, tmp_path / "broken.nii.gz", tmp_path / "out", progress=False)
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DatasetError, match=r"flat.nii.gz: expected a 3D image, found 2D data of shape \(8, 8\)"):
        predict_paths(ckpt, tmp_path / "flat.nii.gz", tmp_path / "out", progress=False)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), np.eye(4)), str(tmp_path / "multi.nii.gz"))
    with pytest.raises(
        DatasetError, match=r"multi.nii.gz: expected a 3D image, found a 4D image of shape \(8, 8, 4, 2\)"
    ):
        predict_paths(ckpt, tmp_path / "multi.nii.gz", tmp_path / "out", progress=False)
    bad = tmp_path / "dcm"
    bad.mkdir()
    (bad / "slice.dcm").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"slice.dcm: cannot read as DICOM"):
        find_inputs(bad)
    (tmp_path / "text.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"text.txt: expected a NIfTI file"):
        find_inputs(tmp_path / "text.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"no NIfTI file .* and no DICOM series found"):
        find_inputs(empty)


def test_4d_input_with_a_channel_is_predicted(tmp_path, ckpt):
    data = np.stack([_image(seed=1), _image(seed=2)], axis=-1)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "two.nii.gz"))
    predict_paths(ckpt, tmp_path / "two.nii.gz", tmp_path / "out", channel=1, progress=False)
    assert nib.load(str(tmp_path / "out" / "two.nii.gz")).shape == (20, 14, 5)


def test_checkpoint_for_another_domain_or_class_set_is_refused(tmp_path, ckpt):
    nib.save(nib.Nifti1Image(_image(), np.eye(4)), str(tmp_path / "x.nii.gz"))
    with pytest.raises(ConfigError, match=r"--domain 'PET': the checkpoint .* was trained for domains \['MR', 'CT'\]"):
        predict_paths(ckpt, tmp_path / "x.nii.gz", tmp_path / "out", domain="PET", progress=False)
    with pytest.raises(
        ConfigError, match=r"segments classes \['background', 'a', 'b'\], not the expected \['background', 'liver'\]"
    ):
        predict_paths(ckpt, tmp_path / "x.nii.gz", tmp_path / "out", classes=["background", "liver"], progress=False)
    assert not (tmp_path / "out").exists()


def test_outputs_inside_the_input_folder_are_not_predicted_again(tmp_path, ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    nib.save(nib.Nifti1Image(_image((10, 8, 3)), np.eye(4)), str(inp / "a.nii.gz"))
    for _ in range(2):
        records = predict_paths(ckpt, inp, inp / "pred", progress=False)
        assert [r.input.name for r in records] == ["a.nii.gz"]
    assert sorted(p.name for p in (inp / "pred").iterdir()) == [".tcsa-uda-outputs.json", "a.nii.gz", "predict.json"]


@pytest.mark.slow
def test_the_recorded_input_encoding_is_applied(tmp_path):
    """Same weights, caffe_bgr recorded: predict feeds caffe-encoded slices (equal to predict_volume
    with that encoding, different from grey) and records the encoding."""
    from tcsa_uda.evaluation.inference import PreprocessingSettings, predict_volume
    from tcsa_uda.evaluation.model import load_model

    grey_ck = _checkpoint(tmp_path / "grey.pt")
    caffe_ck = _checkpoint(tmp_path / "caffe.pt", encoding="caffe_bgr")
    img = nib.Nifti1Image(_image(), np.eye(4))
    (tmp_path / "in").mkdir()
    nib.save(img, str(tmp_path / "in" / "scan.nii.gz"))
    out = {}
    for name, ck in (("grey", grey_ck), ("caffe", caffe_ck)):
        predict_paths(ck, tmp_path / "in", tmp_path / name, probabilities=True, device="cpu", progress=False)
        out[name] = np.asarray(nib.load(str(tmp_path / name / "scan_probabilities.nii.gz")).dataobj)
        record = json.loads((tmp_path / name / "predict.json").read_text())
        assert record["input_encoding"] == ("caffe_bgr" if name == "caffe" else "grey")
    assert np.abs(out["grey"] - out["caffe"]).max() > 1e-3
    loaded = load_model(caffe_ck)
    settings = PreprocessingSettings("axial", 16, (0.5, 99.5))
    ref = predict_volume(
        loaded.model, _image(), np.eye(4), loaded.text_for("CT"), settings, keep_probabilities=True,
        encoding="caffe_bgr",
    )  # fmt: skip
    assert ref.probabilities is not None
    np.testing.assert_allclose(out["caffe"], np.moveaxis(ref.probabilities, 0, -1), atol=1e-6)


@pytest.mark.slow
def test_output_folder_holding_an_input_or_dataset_labels_is_refused(tmp_path, ckpt):
    """Even --overwrite never lets predict write next to its inputs or a dataset's ground truth."""
    inp = tmp_path / "in"
    inp.mkdir()
    nib.save(nib.Nifti1Image(_image((10, 8, 3)), np.eye(4)), str(inp / "a.nii.gz"))
    for overwrite in (False, True):
        with pytest.raises(
            OutputExistsError, match=rf"predict --out {inp}: the folder holds the input {inp / 'a.nii.gz'}"
        ):
            predict_paths(ckpt, inp, inp, progress=False, overwrite=overwrite)
        with pytest.raises(OutputExistsError, match="holds the input"):
            predict_paths(ckpt, inp / "a.nii.gz", tmp_path, progress=False, overwrite=overwrite)
    ds = tmp_path / "ds"
    (ds / "labels").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((10, 8, 3), np.uint8), np.eye(4)), str(ds / "labels" / "a.nii.gz"))
    data = {"name": "d", "labels": {"background": 0, "a": 1}, "domains": {"CT": {"modality": "ct", "cases": [
        {"id": "a", "image": "images/a.nii.gz", "label": "labels/a.nii.gz", "split": "test"}]}}}  # fmt: skip
    (ds / "dataset.json").write_text(json.dumps(data))
    before = (ds / "labels" / "a.nii.gz").read_bytes()
    with pytest.raises(OutputExistsError) as info:
        predict_paths(ckpt, inp, ds / "labels", progress=False, overwrite=True)
    message = str(info.value)
    assert f"holds the label file {ds / 'labels' / 'a.nii.gz'} of the dataset {ds / 'dataset.json'}" in message
    assert (ds / "labels" / "a.nii.gz").read_bytes() == before
    with pytest.raises(OutputExistsError, match=rf"holds the label file {ds / 'labels' / 'a.nii.gz'}"):
        predict_paths(ckpt, inp, ds, progress=False, overwrite=True)  # a folder above the labels
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "index.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"holds a dataset \(index.json\) that predict did not write"):
        predict_paths(ckpt, inp, tmp_path / "prep", progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.nii.gz").write_bytes(b"my file")
    with pytest.raises(OutputExistsError, match=r"would write over 1 file\(s\) that predict did not create"):
        predict_paths(ckpt, inp, tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "a.nii.gz").read_bytes() == b"my file"
    predict_paths(ckpt, inp, tmp_path / "mine", progress=False, overwrite=True)
    assert nib.load(str(tmp_path / "mine" / "a.nii.gz")).shape == (10, 8, 3)


def test_a_batch_goes_on_past_a_bad_file_and_lists_it(tmp_path, ckpt):
    inp = tmp_path / "in"
    inp.mkdir()
    nib.save(nib.Nifti1Image(_image((10, 8, 3)), np.eye(4)), str(inp / "a.nii.gz"))
    (inp / "b.nii.gz").write_bytes(b"not a nifti file")
    nib.save(nib.Nifti1Image(_image((9, 8, 3)), np.eye(4)), str(inp / "c.nii.gz"))
    (inp / "__MACOSX").mkdir()
    (inp / "__MACOSX" / "d.nii.gz").write_bytes(b"resource fork")  # never read
    (inp / "._e.nii.gz").write_bytes(b"AppleDouble")  # never read
    records = predict_paths(ckpt, inp, tmp_path / "out", progress=False)
    assert [(r.input.name, r.ok) for r in records] == [("a.nii.gz", True), ("b.nii.gz", False), ("c.nii.gz", True)]
    assert records[1].error is not None and "b.nii.gz: cannot read image as NIfTI" in records[1].error
    manifest = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert manifest["failed"] == 1
    assert [(o["status"], o["error"] is None) for o in manifest["outputs"]] == [
        ("ok", True),
        ("failed", False),
        ("ok", True),
    ]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]
