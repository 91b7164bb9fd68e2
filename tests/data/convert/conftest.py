"""Miniature raw downloads in the real formats of MM-WHS, CHAOS, BTCV, BraTS and the SIFA release.

Each builder writes a few tiny volumes where the converters expect to meet them in practice:
nested folders, ``.nii`` next to ``.nii.gz``, mixed letter case, DICOM slices whose file order is
not their spatial order, PNG masks, AppleDouble ``._`` files. Every volume holds every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

# An MM-WHS-like affine that is far from RAS: array axes point P, S, L (codes ('P', 'S', 'L')).
NON_RAS_AFFINE = np.array(
    [[0.0, 0.0, -0.8, 40.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 1.2, 0.0, -30.0], [0.0, 0.0, 0.0, 1.0]]
)


def class_boxes(shape: Sequence[int], codes: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A label volume with one box per code (distinct octant-ish regions), background 0."""
    x, y, z = shape
    lab = np.zeros(shape, dtype=np.int16)
    corners = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for n, code in enumerate(codes):
        cx, cy = corners[n % 4]
        x0 = 1 + cx * (x // 2) + int(rng.integers(0, 2))
        y0 = 1 + cy * (y // 2) + int(rng.integers(0, 2))
        if z < 4:  # a slab: every box spans it
            z0, dz = 0, z
        else:
            z0, dz = 1 + (n // 4) * (z // 2), max(2, z // 2 - 2)
        lab[x0 : x0 + max(2, x // 2 - 2), y0 : y0 + max(2, y // 2 - 2), z0 : z0 + dz] = code
    return lab


def image_for(label: np.ndarray, rng: np.random.Generator, dtype=np.int16) -> np.ndarray:
    """Intensities that depend on the label (so a model can learn something) plus noise."""
    values = np.unique(label)
    lut = {int(v): 100 + 60 * i for i, v in enumerate(values)}
    img = np.vectorize(lut.get)(label).astype(np.float32) + rng.normal(0, 10, label.shape)
    return img.astype(dtype)


def save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


MMWHS_CODES = (205, 420, 500, 820, 600)  # 600 (right atrium) must become background


def write_mmwhs(
    root: Path, modality: str, ids: Sequence[int], shape=(12, 10, 8), seed: int = 0
) -> dict[int, np.ndarray]:
    """MM-WHS files ``<mod>_train/<mod>_train_<id>_image/_label.nii.gz``; returns id -> raw label.

    Case 0 of the list is written as ``.nii`` with upper-case names, case 1 in a nested folder.
    """
    rng = np.random.default_rng(seed)
    labels = {}
    for n, cid in enumerate(ids):
        lab = class_boxes(shape, MMWHS_CODES, rng)
        img = image_for(lab, rng)
        folder = root / f"{modality}_train"
        stem, ext = f"{modality}_train_{cid}", ".nii.gz"
        if n == 0:
            stem, ext = stem.upper(), ".nii"
        if n == 1:
            folder = folder / "nested" / "deeper"
        label_tag = "LABEL" if n == 0 else "label"
        save(folder / f"{stem}_image{ext}", img, NON_RAS_AFFINE)
        save(folder / f"{stem}_{label_tag}{ext}", lab, NON_RAS_AFFINE)
        labels[cid] = lab
    (root / f"{modality}_train" / f"._{modality}_train_{ids[0]}_image.nii.gz").write_bytes(b"\0AppleDouble")
    return labels


# ---------------------------------------------------------------------------- CHAOS DICOM + PNG

CHAOS_VALUES = {1: 63, 2: 126, 3: 189, 4: 252}


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    position: Sequence[float],
    orientation: Sequence[float],
    spacing: Sequence[float],
    instance: int,
    series_uid: str,
) -> None:
    """One uncompressed MR slice with the geometry attributes a scanner writes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{v:.4f}" for v in spacing]
    ds.SliceThickness = "6"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def write_chaos_case(
    root: Path,
    cid: int,
    rows: int = 12,
    cols: int = 10,
    n_slices: int = 8,
    seed: int = 0,
    mask_names_match: bool = True,
) -> dict:
    """``<root>/Train_Sets/MR/<cid>/T2SPIR/{DICOM_anon,Ground}``; file names shuffled against positions.

    Returns the truth: ``labels`` (rows, cols, slices) class ids in spatial order, ``positions``
    (slice -> IPP), ``orientation``, ``spacing``, ``image`` (rows, cols, slices).
    """
    rng = np.random.default_rng(seed + cid)
    labels = np.transpose(class_boxes((cols, rows, n_slices), (1, 2, 3, 4), rng), (1, 0, 2))  # (rows, cols, slices)
    image = image_for(labels, rng, dtype=np.uint16)
    orientation = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    spacing = (1.5, 1.25)  # between rows, between columns
    positions = [(-60.0, -70.0, -20.0 + 6.0 * k) for k in range(n_slices)]
    series = f"1.2.826.0.1.3680043.8.498.{cid}"
    base = root / "Train_Sets" / "MR" / str(cid) / "T2SPIR"
    order = rng.permutation(n_slices)  # file number i holds spatial slice order[i]
    for i, k in enumerate(order):
        name = f"IMG-0001-{i + 1:05d}"
        write_dicom_slice(
            base / "DICOM_anon" / f"{name}.dcm", image[:, :, k], positions[k], orientation, spacing, i + 1, series
        )
        mask = np.zeros((rows, cols), dtype=np.uint8)
        for c, v in CHAOS_VALUES.items():
            mask[labels[:, :, k] == c] = v - 2 if c == 2 else v  # 124: inside the right-kidney range 110-135
        png_name = f"{name}.png" if mask_names_match else f"liver_GT_{i:03d}.png"
        (base / "Ground").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, mode="L").save(base / "Ground" / png_name)
    return {"labels": labels, "image": image, "positions": positions, "orientation": orientation, "spacing": spacing}


BTCV_CODES = (6, 2, 3, 1, 7)  # liver, right kidney, left kidney, spleen, stomach (-> background)


def write_btcv(root: Path, ids: Sequence[int], shape=(10, 12, 8), seed: int = 1) -> dict[int, np.ndarray]:
    """``RawData/Training/img/img00XX.nii.gz`` and ``label/label00XX.nii.gz``; one unlabelled test image."""
    rng = np.random.default_rng(seed)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS-like, as BTCV files are
    labels = {}
    for cid in ids:
        lab = class_boxes(shape, BTCV_CODES, rng)
        save(root / "RawData" / "Training" / "img" / f"img{cid:04d}.nii.gz", image_for(lab, rng), affine)
        save(root / "RawData" / "Training" / "label" / f"label{cid:04d}.nii.gz", lab.astype(np.uint8), affine)
        labels[cid] = lab
    save(root / "RawData" / "Testing" / "img" / "img0061.nii.gz", image_for(np.zeros(shape, np.int16), rng), affine)
    return labels


# ---------------------------------------------------------------------------- BraTS


def write_brats(root: Path, n_cases: int, shape=(10, 10, 8), seed: int = 2, missing_seg: bool = True) -> list[str]:
    """``HGG/<case>/<case>_{flair,t1,t2,seg}.nii.gz``; the last case lacks its seg when ``missing_seg``."""
    rng = np.random.default_rng(seed)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    cases = []
    for i in range(n_cases):
        case = f"Brats18_TCIA01_{100 + i}_1"
        folder = root / ("HGG" if i % 2 == 0 else "LGG") / case
        seg = class_boxes(shape, (1, 2, 4), rng).astype(np.uint8)
        for seq, scale in (("flair", 1.0), ("t1", 0.5), ("t2", 2.0)):
            save(folder / f"{case}_{seq}.nii.gz", (image_for(seg, rng) * scale).astype(np.int16), affine)
        if not (missing_seg and i == n_cases - 1):
            save(folder / f"{case}_seg.nii.gz", seg, affine)
        cases.append(case)
    return cases


# ---------------------------------------------------------------------------- SIFA release


def write_sifa(root: Path, size: int = 16, depth: int = 6, seed: int = 3) -> dict:
    """A SIFA/MPSCL-style release.

    * ``test_mr/image_mr_<id>.npz`` and ``test_ct/image_ct_<id>.npz``: ``arr_0``/``arr_1`` (H, W, D),
      flipped on axes 0 and 1 relative to the training slices;
    * MR training slices ``train_mr/mr_train_<id>_slice_<k>.npz`` (arr_0, arr_1), listed in
      ``datalist/train_mr.txt`` in shuffled order, including slices of test subject 1019 (the leak);
    * CT training slices ``train_ct/ct_slice<k>.npy`` with sibling ``_label.npy``, listed in
      ``datalist/training_ct.txt`` (no case id: pseudo-volumes).

    Returns the truth: test volumes in training orientation and the training cases.
    """
    rng = np.random.default_rng(seed)
    truth: dict = {"test": {}, "mr_train": {}, "ct_train": []}
    for mod, ids in (("mr", (1007, 1009, 1018, 1019)), ("ct", (1003, 1008, 1014, 1019))):
        for cid in ids:
            lab = class_boxes((size, size, depth), (1, 2, 3, 4), rng).astype(np.uint8)
            img = image_for(lab, rng, dtype=np.float32) / 100.0
            truth["test"][(mod.upper(), str(cid))] = (img, lab)
            path = root / f"test_{mod}" / f"image_{mod}_{cid}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, np.flip(np.flip(img, 0), 1), np.flip(np.flip(lab, 0), 1))
    lines = []
    for cid in (1001, 1002, 1019):
        lab = class_boxes((size, size, depth), (1, 2, 3, 4), rng).astype(np.uint8)
        img = image_for(lab, rng, dtype=np.float32) / 100.0
        truth["mr_train"][str(cid)] = (img, lab)
        for k in range(depth):
            path = root / "train_mr" / f"mr_train_{cid}_slice_{k}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, img[:, :, k], lab[:, :, k])
            lines.append(f"../train_mr/{path.name}")
    rng.shuffle(lines)
    (root / "datalist").mkdir(parents=True, exist_ok=True)
    (root / "datalist" / "train_mr.txt").write_text("\n".join(lines) + "\n")
    ct_lines = []
    for k in range(10):
        lab = class_boxes((size, size, 1), (1, 2, 3, 4), rng)[:, :, 0].astype(np.uint8)
        img = image_for(lab, rng, dtype=np.float32) / 100.0
        folder = root / "train_ct"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"ct_slice{k:04d}.npy", img)
        np.save(folder / f"ct_slice{k:04d}_label.npy", lab)
        ct_lines.append(f"ct_slice{k:04d}.npy")  # bare file names, resolved by name under the root
        truth["ct_train"].append((img, lab))
    (root / "datalist" / "training_ct.txt").write_text("# CT training slices\n" + "\n".join(ct_lines) + "\n\n")
    (root / "README.txt").write_text("SIFA data\n")
    return truth


@pytest.fixture
def raw() -> SimpleNamespace:
    """The writers and constants above, for the tests of this folder (importlib mode has no
    importable conftest module)."""
    return SimpleNamespace(
        NON_RAS_AFFINE=NON_RAS_AFFINE,
        CHAOS_VALUES=CHAOS_VALUES,
        save=save,
        class_boxes=class_boxes,
        image_for=image_for,
        write_mmwhs=write_mmwhs,
        write_dicom_slice=write_dicom_slice,
        write_chaos_case=write_chaos_case,
        write_btcv=write_btcv,
        write_brats=write_brats,
        write_sifa=write_sifa,
    )
