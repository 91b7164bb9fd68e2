"""Miniature raw downloads in the real formats of MM-WHS, CHAOS, BTCV, BraTS and the SIFA / MPSCL releases.

Each builder writes a few tiny volumes where the converters expect to meet them in practice:
nested folders, ``.nii`` next to ``.nii.gz``, mixed letter case, DICOM slices whose file order is
not their spatial order, PNG masks, AppleDouble ``._`` files. Every volume holds every class.
"""

from __future__ import annotations

import struct
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


# ---------------------------------------------------------------------------- SIFA / MPSCL release
#
# Real names (docs/reproduce.md): MPSCL numpy ``data_np/{train,val}_{mr,ct}/{mod}_{split}_slice{N}.npy`` with
# ``data_np/gt_{split}_{mod}/{mod}_{split}_slice{N}_gt.npy``, datalists ``{split}_{mod}.txt`` +
# ``{split}_{mod}_gt.txt`` holding the authors' absolute paths sorted as strings, test
# ``test_{mod}/image_{mod}_{id}.nii.gz.npz``; SIFA ``{mod}_{split}_tfs/{mod}_{split}_slice{N}.tfrecords`` and
# test ``image_{mod}_{id}.nii.gz`` + ``gth_{mod}_{id}.nii.gz``.

SIFA_TEST_IDS = {"mr": (1007, 1009, 1018, 1019), "ct": (1003, 1008, 1014, 1019)}
SIFA_RANGES = {"mr": (-1.8, 4.4), "ct": (-2.8, 3.2)}
FOREIGN_ROOT = "/srv/authors/USD/data_np"  # the datalists' absolute paths point at the authors' machine


def zscore_image(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """z-score-like float32 intensities that depend on the label (background about -1, classes up to 2.4)."""
    return (label.astype(np.float32) * 0.85 - 1.0 + rng.normal(0.0, 0.1, label.shape)).astype(np.float32)


def _sifa_tests(rng: np.random.Generator, size: int, depth: int) -> dict:
    """Test volumes in training orientation: (modality, id) -> (z-scored image, label), (H, W, D)."""
    out = {}
    for mod, ids in SIFA_TEST_IDS.items():
        for cid in ids:
            lab = class_boxes((size, size, depth), (1, 2, 3, 4), rng).astype(np.uint8)
            out[(mod.upper(), str(cid))] = (zscore_image(lab, rng), lab)
    return out


def _flip01(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[::-1, ::-1])


def write_mpscl(root: Path, size: int = 16, n_train: int = 12, n_val: int = 3, depth: int = 6, seed: int = 3) -> dict:
    """The MPSCL / TCSA-UDA numpy release under ``root`` (``root/data_np`` and ``root/datalist``).

    Training slices are float32 (H, W) already mapped to [-1, 1] with the release's fixed statistics; the
    datalists list them sorted as strings (slice0, slice1, slice10, ...) by absolute paths of another machine.

    Returns the truth: ``test`` (modality, id) -> (z image, label) in training orientation; ``slices``
    (modality, split) -> list of (z image, unit image, label) in slice-number order.
    """
    rng = np.random.default_rng(seed)
    data = root / "data_np"
    truth: dict = {"test": _sifa_tests(rng, size, depth), "slices": {}}
    for (mod, cid), (img, lab) in truth["test"].items():
        path = data / f"test_{mod.lower()}" / f"image_{mod.lower()}_{cid}.nii.gz.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, _flip01(img), _flip01(lab))
    lists = root / "datalist"
    lists.mkdir(parents=True, exist_ok=True)
    for mod in ("mr", "ct"):
        lo, hi = SIFA_RANGES[mod]
        for split, n in (("train", n_train), ("val", n_val)):
            items = []
            for k in range(n):
                lab = class_boxes((size, size, 1), (1, 2, 3, 4), rng)[:, :, 0].astype(np.uint8)
                z = zscore_image(lab, rng)
                unit = (2.0 * (z.astype(np.float64) - lo) / (hi - lo) - 1.0).astype(np.float32)
                name = f"{mod}_{split}_slice{k}"
                (data / f"{split}_{mod}").mkdir(parents=True, exist_ok=True)
                (data / f"gt_{split}_{mod}").mkdir(parents=True, exist_ok=True)
                np.save(data / f"{split}_{mod}" / f"{name}.npy", unit)
                np.save(data / f"gt_{split}_{mod}" / f"{name}_gt.npy", lab)
                items.append((z, unit, lab))
            truth["slices"][(mod.upper(), split)] = items
            names = sorted(f"{mod}_{split}_slice{k}" for k in range(n))  # string order, as the authors' lists
            (lists / f"{split}_{mod}.txt").write_text("".join(f"{FOREIGN_ROOT}/{split}_{mod}/{x}.npy\n" for x in names))
            (lists / f"{split}_{mod}_gt.txt").write_text(
                "".join(f"{FOREIGN_ROOT}/gt_{split}_{mod}/{x}_gt.npy\n" for x in names)
            )
        (lists / f"test_{mod}.txt").write_text(
            "".join(f"{FOREIGN_ROOT}/test_{mod}/image_{mod}_{cid}.nii.gz.npz\n" for cid in SIFA_TEST_IDS[mod])
        )
    return truth


# A tf.train.Example encoder and a TFRecord writer, written from the format descriptions and independent of
# tcsa_uda's reader (bitwise CRC-32C instead of its table and chunked NumPy version).


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C, one bit at a time."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c_bitwise(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, ten bytes
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_len(field: int, payload: bytes) -> bytes:
    """A length-delimited protocol-buffer field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def feature_bytes(*values: bytes) -> bytes:
    return pb_len(1, b"".join(pb_len(1, v) for v in values))


def feature_int64(*values: int, packed: bool = True) -> bytes:
    if packed:
        body = pb_len(1, b"".join(varint(v) for v in values))
    else:
        body = b"".join(varint(1 << 3 | 0) + varint(v) for v in values)
    return pb_len(3, body)


def feature_float(*values: float, packed: bool = True) -> bytes:
    if packed:
        body = pb_len(1, struct.pack(f"<{len(values)}f", *values))
    else:
        body = b"".join(varint(1 << 3 | 5) + struct.pack("<f", v) for v in values)
    return pb_len(2, body)


def encode_example(features: dict[str, bytes]) -> bytes:
    """``Example{features: Features{feature: map<string, Feature>}}`` from encoded Feature messages."""
    entries = b"".join(pb_len(1, pb_len(1, name.encode()) + pb_len(2, value)) for name, value in features.items())
    return pb_len(1, entries)


def tfrecord_bytes(records: Sequence[bytes]) -> bytes:
    out = bytearray()
    for data in records:
        header = struct.pack("<Q", len(data))
        out += header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))
    return bytes(out)


def sifa_slice_features(
    data_vol: np.ndarray, label_vol: np.ndarray, bias: Sequence[int] = (-10, -9, -27)
) -> dict[str, bytes]:
    """The encoded features of a slice record as SIFA released it: shapes, float32 volumes, unused extras."""
    return {
        "lsize_dim0": feature_int64(label_vol.shape[0]),
        "lsize_dim1": feature_int64(label_vol.shape[1]),
        "lsize_dim2": feature_int64(label_vol.shape[2]),
        "data_vol": feature_bytes(np.ascontiguousarray(data_vol, dtype="<f4").tobytes()),
        "mask_scale": feature_int64(4),
        "mask_vol": feature_bytes(np.ones(16, dtype="<f4").tobytes()),
        "label_vol": feature_bytes(np.ascontiguousarray(label_vol, dtype="<f4").tobytes()),
        "dsize_dim0": feature_int64(data_vol.shape[0]),
        "bias_dim0": feature_int64(bias[0]),
        "bias_dim1": feature_int64(bias[1], packed=False),
        "dsize_dim1": feature_int64(data_vol.shape[1]),
        "bias_dim2": feature_int64(bias[2]),
        "dsize_dim2": feature_int64(data_vol.shape[2]),
    }


def sifa_slice_example(data_vol: np.ndarray, label_vol: np.ndarray) -> bytes:
    """A serialized slice record as SIFA released it."""
    return encode_example(sifa_slice_features(data_vol, label_vol))


def write_sifa(root: Path, size: int = 16, n_train: int = 8, n_val: int = 2, depth: int = 6, seed: int = 4) -> dict:
    """SIFA's release under ``root``: tfrecords slices and the test NIfTI pairs.

    Each slice record holds three consecutive slices (H, W, 3) of z-scores and three label slices;
    the middle ones are the training slice. Some label pixels hold SIFA's extra value 5.

    Returns the truth: ``test`` as :func:`write_mpscl`; ``slices`` (modality, split) -> list of
    (z image, label with 5 -> 0), and ``fives`` (modality, split) -> number of value-5 pixels.
    """
    rng = np.random.default_rng(seed)
    truth: dict = {"test": _sifa_tests(rng, size, depth), "slices": {}, "fives": {}}
    for (mod, cid), (img, lab) in truth["test"].items():
        m = mod.lower()
        folder = root / ("test_ct_image_n_labels" if m == "ct" else "test_mr_image_labels")
        save(folder / f"image_{m}_{cid}.nii.gz", _flip01(img), np.diag([1.2, 1.2, 1.5, 1.0]))
        save(folder / f"gth_{m}_{cid}.nii.gz", _flip01(lab).astype(np.int16), np.diag([1.2, 1.2, 1.5, 1.0]))
    for mod in ("mr", "ct"):
        for split, n in (("train", n_train), ("val", n_val)):
            items, fives = [], 0
            for k in range(n):
                labs = np.stack(
                    [class_boxes((size, size, 1), (1, 2, 3, 4), rng)[:, :, 0] for _ in range(3)], axis=-1
                ).astype(np.float32)
                labs[0, :3, 1] = 5.0  # SIFA's extra label value, on the middle slice only
                imgs = np.stack([zscore_image(labs[:, :, c].astype(np.uint8), rng) for c in range(3)], axis=-1)
                path = root / f"{mod}_{split}_tfs" / f"{mod}_{split}_slice{k}.tfrecords"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(tfrecord_bytes([sifa_slice_example(imgs, labs)]))
                middle = labs[:, :, 1].astype(np.uint8)
                fives += int((middle == 5).sum())
                middle[middle == 5] = 0
                items.append((imgs[:, :, 1], middle))
            truth["slices"][(mod.upper(), split)] = items
            truth["fives"][(mod.upper(), split)] = fives
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
        write_mpscl=write_mpscl,
        write_sifa=write_sifa,
        SIFA_RANGES=SIFA_RANGES,
        FOREIGN_ROOT=FOREIGN_ROOT,
        crc32c_bitwise=crc32c_bitwise,
        masked_crc=masked_crc,
        varint=varint,
        pb_len=pb_len,
        feature_bytes=feature_bytes,
        feature_int64=feature_int64,
        feature_float=feature_float,
        encode_example=encode_example,
        tfrecord_bytes=tfrecord_bytes,
        sifa_slice_features=sifa_slice_features,
        sifa_slice_example=sifa_slice_example,
    )
