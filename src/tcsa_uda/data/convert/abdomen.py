"""Abdomen: CHAOS T2-SPIR MRI (DICOM + PNG masks) and BTCV CT (NIfTI) -> the dataset contract.

CHAOS input (``--chaos``): the ``Train_Sets/MR/<patient>/T2SPIR/DICOM_anon/*.dcm`` series and
their ``T2SPIR/Ground/*.png`` masks, found under any nesting; every folder named ``T2SPIR`` that
holds a ``Ground`` folder is one case whose id is its parent folder's name (``1``, ``13``, ...).
The whole CHAOS download may be given: ``T2SPIR`` folders without ``Ground`` (the test patients,
whose ground truth is not public) are skipped with a note, and ``__MACOSX`` copies are ignored.
Slices may be in any file order (:mod:`.dicom` sorts them by position). A mask belongs to the
DICOM file of the same name stem; when no stem matches, masks in natural name order are paired
with slices in InstanceNumber order (noted). Mask values follow the CHAOS definition, with its tolerance
ranges: liver 63 (55-70), right kidney 126 (110-135), left kidney 189 (175-200), spleen 252
(240-255).

BTCV input (``--btcv``): ``RawData/Training/img/img00XX.nii.gz`` and ``label/label00XX.nii.gz``
(any nesting); codes 6 liver, 2 right kidney, 3 left kidney, 1 spleen, the other organs are
background. Case ids are the four digits of the file name (``0001``).

Output: domains ``MR`` (CHAOS) and ``CT`` (BTCV); classes 1 liver, 2 right kidney, 3 left
kidney, 4 spleen; test MR 1, 13, 32, 38 and CT 0001, 0009, 0030, 0032, 0033, 0039
(docs/protocols.md); RAS+ voxel order, so ``tcsa-uda prepare --axis axial`` cuts axial
slices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from tcsa_uda.data.convert.common import (
    NIFTI_RE,
    check_test_cases,
    describe_codes,
    find_files,
    index_unique,
    iter_files,
    load_nifti_raw,
    map_codes,
    natural_key,
    require_dir,
    to_ras,
    walk_dirs,
)
from tcsa_uda.data.convert.dicom import read_dicom_series
from tcsa_uda.data.convert.splits import DEFAULT_VAL_FRACTION, carve_val
from tcsa_uda.data.convert.writer import ConversionResult, DatasetWriter, check_same_grid
from tcsa_uda.errors import DatasetError

DATASET_NAME = "abdomen_chaos_btcv"
CLASS_NAMES: tuple[str, ...] = ("background", "liver", "right kidney", "left kidney", "spleen")
MODALITIES: dict[str, str] = {"CT": "computed tomography", "MR": "magnetic resonance imaging"}
TEST_IDS: dict[str, tuple[str, ...]] = {
    "MR": ("1", "13", "32", "38"),
    "CT": ("0001", "0009", "0030", "0032", "0033", "0039"),
}
CHAOS_IDS: tuple[str, ...] = tuple(
    str(i) for i in (1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39)
)
"""The 20 CHAOS training patients with T2-SPIR ground truth."""
BTCV_IDS: tuple[str, ...] = tuple(f"{i:04d}" for i in (*range(1, 11), *range(21, 41)))
"""The 30 labelled BTCV training volumes."""
CHAOS_RANGES: dict[int, tuple[int, int]] = {1: (55, 70), 2: (110, 135), 3: (175, 200), 4: (240, 255)}
"""Class id -> inclusive range of CHAOS mask values (nominal 63, 126, 189, 252)."""
BTCV_CODES: dict[int, int] = {6: 1, 2: 2, 3: 3, 1: 4}
BTCV_BACKGROUND: tuple[int, ...] = (4, 5, 7, 8, 9, 10, 11, 12, 13)
"""Gallbladder, oesophagus, stomach, aorta, IVC, portal/splenic veins, pancreas, adrenal glands."""
DICOM_SUFFIXES = (".dcm", ".ima")
CHAOS_SERIES_DIR = "t2spir"
CHAOS_GROUND_DIR = "ground"


# --------------------------------------------------------------------------------------------
# CHAOS


def map_chaos_mask(mask: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """CHAOS PNG grey values -> class ids with the CHAOS tolerance ranges.

    Args:
        mask: (H, W) integer grey values.

    Returns:
        ``(ids, unexpected)``: uint8 ids, and ``{value: pixel count}`` of non-zero values outside
        every range (set to background).
    """
    arr = np.asarray(mask).astype(np.int64)
    ids = np.zeros(arr.shape, dtype=np.uint8)
    covered = arr == 0
    for cid, (lo, hi) in CHAOS_RANGES.items():
        inside = (arr >= lo) & (arr <= hi)
        ids[inside] = cid
        covered |= inside
    values, counts = np.unique(arr[~covered], return_counts=True)
    return ids, {int(v): int(n) for v, n in zip(values.tolist(), counts.tolist(), strict=True)}


def read_mask_png(path: Path) -> np.ndarray:
    """Read a ground-truth PNG as (H, W) grey values.

    Raises:
        DatasetError: unreadable file (named).
    """
    try:
        with Image.open(path) as opened:
            img = opened if opened.mode in ("L", "I", "I;16", "F") else opened.convert("L")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: cannot read the ground-truth PNG ({type(exc).__name__}: {exc}).") from exc


def _chaos_id(series_dir: Path) -> str:
    name = series_dir.parent.name
    return str(int(name)) if name.isdigit() else name


def discover_chaos(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Case id -> its ``T2SPIR`` folder, for patients with and without ground truth.

    A ``T2SPIR`` folder is labelled when it holds a ``Ground`` folder (any letter case); the
    test patients of the CHAOS download have none. ``__MACOSX`` and hidden folders are not
    entered.

    Returns:
        ``(labelled, unlabelled)``: id -> ``T2SPIR`` folder each; an id with a labelled folder
        is never listed as unlabelled.

    Raises:
        DatasetError: two labelled ``T2SPIR`` folders for one patient id.
    """
    labelled: dict[str, Path] = {}
    unlabelled: dict[str, Path] = {}
    for here, dirs, _ in walk_dirs(root):
        if here.name.lower() != CHAOS_SERIES_DIR or here == root:
            continue
        cid = _chaos_id(here)
        if not any(d.lower() == CHAOS_GROUND_DIR for d in dirs):
            unlabelled.setdefault(cid, here)
            continue
        if cid in labelled:
            raise DatasetError(
                f"{root}: expected one T2SPIR folder per patient, found two for {cid!r}: {labelled[cid]} and {here}."
            )
        labelled[cid] = here
    return labelled, {cid: path for cid, path in unlabelled.items() if cid not in labelled}


def _pair_masks(dicoms: list[Path], pngs: list[Path], where: Path) -> tuple[dict[Path, Path], str | None]:
    """DICOM file -> PNG mask, by name stem; else by InstanceNumber / natural name order."""
    by_stem = {p.stem.lower(): p for p in pngs}
    pairs = {d: by_stem[d.stem.lower()] for d in dicoms if d.stem.lower() in by_stem}
    if len(pairs) == len(dicoms):
        return pairs, None
    if pairs:
        missing = sorted((d.name for d in dicoms if d not in pairs), key=natural_key)
        raise DatasetError(
            f"{where}: expected a ground-truth PNG named like each DICOM slice, found none for {len(missing)} "
            "slice(s): "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}."
        )
    if len(pngs) != len(dicoms):
        raise DatasetError(
            f"{where}: expected one ground-truth PNG per DICOM slice ({len(dicoms)}), found {len(pngs)} PNG file(s)."
        )
    numbers = []
    for d in dicoms:
        ds = pydicom.dcmread(str(d), stop_before_pixels=True)
        numbers.append((int(getattr(ds, "InstanceNumber", 0) or 0), natural_key(d.name), d))
    ordered = [d for _, _, d in sorted(numbers, key=lambda t: (t[0], t[1]))]
    masks = sorted(pngs, key=lambda p: natural_key(p.name))
    note = f"{where}: mask names do not match the DICOM names; paired by InstanceNumber and mask name order"
    return dict(zip(ordered, masks, strict=True)), note


def read_chaos_case(series_dir: Path, writer: DatasetWriter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One CHAOS T2-SPIR case: ``(image, label, affine)`` in RAS+ voxel order.

    Raises:
        DatasetError: no DICOM or no PNG file, unpaired masks, mask size differs from the slice.
    """
    files = list(iter_files(series_dir))
    dicoms = [f for f in files if f.suffix.lower() in DICOM_SUFFIXES]
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    if not dicoms:
        raise DatasetError(f"{series_dir}: expected the T2-SPIR DICOM slices (*.dcm), found none.")
    if not pngs:
        raise DatasetError(f"{series_dir}: expected the ground-truth PNG masks (Ground/*.png), found none.")
    series = read_dicom_series(dicoms, str(series_dir))
    for n in series.notes:
        writer.note(n)
    pairs, note = _pair_masks(dicoms, pngs, series_dir)
    if note:
        writer.note(note)
    labels = []
    unexpected: dict[int, int] = {}
    for dcm in series.files:
        png = pairs[dcm]
        mask = read_mask_png(png)
        expected = (series.array.shape[1], series.array.shape[0])  # (rows, columns)
        if mask.shape != expected:
            raise DatasetError(
                f"{png}: expected a {expected[0]} x {expected[1]} mask like {dcm.name}, found {mask.shape}."
            )
        ids, bad = map_chaos_mask(mask)
        for value, count in bad.items():
            unexpected[value] = unexpected.get(value, 0) + count
        labels.append(ids.T)  # (columns, rows), like the image
    if unexpected:
        writer.note(
            f"{series_dir}: mask value(s) outside the CHAOS ranges {describe_codes(unexpected)} set to background"
        )
    label = np.stack(labels, axis=-1)
    image, affine = to_ras(series.array, series.affine)
    label, _ = to_ras(label, series.affine)
    return image, label, affine


# --------------------------------------------------------------------------------------------
# BTCV


def discover_btcv(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """``(images, labels)``: four-digit id -> file."""
    images = index_unique(
        find_files(root, rf"img(?P<id>\d+){NIFTI_RE}"), lambda m: f"{int(m.group('id')):04d}", root, "BTCV image"
    )
    labels = index_unique(
        find_files(root, rf"label(?P<id>\d+){NIFTI_RE}"), lambda m: f"{int(m.group('id')):04d}", root, "BTCV label"
    )
    return images, labels


# --------------------------------------------------------------------------------------------
# Conversion


def convert_abdomen(
    chaos: str | os.PathLike[str],
    btcv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    progress: bool = True,
) -> ConversionResult:
    """Convert CHAOS T2-SPIR (MR) and BTCV (CT) into one two-domain dataset folder.

    Args:
        chaos: folder of the CHAOS download (searched for ``T2SPIR`` folders).
        btcv: folder of the BTCV download (searched for ``img*.nii*`` / ``label*.nii*``).
        out: output dataset folder.
        val_fraction: share of each domain's training volumes moved to ``val`` (0 disables).
        seed: seed of the val draw.
        progress: show a progress bar.

    Raises:
        MissingPathError: a folder does not exist, or a literature test case is missing.
        DatasetError: an unreadable or inconsistent test case, or the output fails verification.
            The same fault in a training case (e.g. one bad DICOM series) skips it with a note
            (``skipped_cases`` in the summary).
    """
    chaos_dir, btcv_dir = require_dir(chaos, "--chaos folder"), require_dir(btcv, "--btcv folder")
    writer = DatasetWriter(
        out=Path(out),
        name=DATASET_NAME,
        class_names=CLASS_NAMES,
        modalities=MODALITIES,
        description="CHAOS T2-SPIR MRI and BTCV CT, abdominal organs (tcsa-uda convert abdomen).",
        reference=(
            "CHAOS challenge (Kavur et al., MedIA 2021); "
            "BTCV Multi-Atlas Labeling Beyond the Cranial Vault (MICCAI 2015)"
        ),
        seed=seed,
    )
    mr_cases, no_ground = discover_chaos(chaos_dir)
    if no_ground:
        ids = sorted(no_ground, key=natural_key)
        writer.note(
            f"MR: {len(ids)} patient(s) with a T2SPIR folder but no Ground folder skipped (no ground truth, e.g. the "
            f"CHAOS test patients): {', '.join(ids)}"
        )
    check_test_cases(
        TEST_IDS["MR"], mr_cases, "MR", chaos_dir, "<patient>/T2SPIR folders with DICOM_anon/*.dcm and Ground/*.png"
    )
    absent = [cid for cid in CHAOS_IDS if cid not in mr_cases]
    if absent:
        writer.note(
            f"MR: {len(absent)} of the {len(CHAOS_IDS)} CHAOS patients have no T2SPIR folder, skipped: "
            f"{', '.join(absent)}"
        )
    extra = sorted(set(mr_cases) - set(CHAOS_IDS), key=natural_key)
    if extra:
        writer.note(
            f"MR: T2SPIR folder(s) of patient(s) {extra} outside the 20 CHAOS training ids are converted as training "
            "cases"
        )
    images, labels = discover_btcv(btcv_dir)
    ct_cases = sorted(set(images) & set(labels), key=natural_key)
    check_test_cases(TEST_IDS["CT"], ct_cases, "CT", btcv_dir, "img00XX.nii.gz with label00XX.nii.gz")
    unlabelled = sorted(set(images) - set(labels), key=natural_key)
    if unlabelled:
        writer.note(
            f"CT: {len(unlabelled)} image(s) without a label ignored (e.g. the BTCV test set): {unlabelled[:5]}"
        )
    orphan = sorted(set(labels) - set(images), key=natural_key)
    if orphan:
        writer.note(f"CT: {len(orphan)} label(s) without an image ignored: {orphan[:5]}")
    absent = [cid for cid in BTCV_IDS if cid not in ct_cases]
    if absent:
        writer.note(
            f"CT: {len(absent)} of the {len(BTCV_IDS)} labelled BTCV cases lack the image or the label, skipped: "
            f"{', '.join(absent)}"
        )

    splits: dict[str, dict[str, str]] = {}
    for domain, ids in (("MR", sorted(mr_cases, key=natural_key)), ("CT", ct_cases)):
        train = [c for c in ids if c not in TEST_IDS[domain]]
        val = set(carve_val(train, val_fraction, seed, domain))
        splits[domain] = {c: "test" if c in TEST_IDS[domain] else "val" if c in val else "train" for c in ids}

    jobs = [("MR", c) for c in splits["MR"]] + [("CT", c) for c in splits["CT"]]
    for domain, cid in tqdm(jobs, desc="convert abdomen", unit="case", disable=not progress):
        split = splits[domain][cid]
        with writer.case_faults(domain, cid, split):
            if domain == "MR":
                image, label, affine = read_chaos_case(mr_cases[cid], writer)
                source = str(mr_cases[cid])
            else:
                image, label, affine = read_btcv_case(images[cid], labels[cid], writer)
                source = str(images[cid])
            writer.add(domain, cid, split, image, affine, label, source=source)
    return writer.finish()


def read_btcv_case(
    image_path: Path, label_path: Path, writer: DatasetWriter
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One BTCV case: ``(image, label, affine)`` in RAS+ voxel order, organ codes mapped to class ids.

    Raises:
        DatasetError: unreadable files or a label on another grid (the file is named).
    """
    img = load_nifti_raw(image_path, "image")
    lab = load_nifti_raw(label_path, "label")
    check_same_grid(img, lab, image_path, label_path, writer)
    ids, unexpected = map_codes(lab[0], BTCV_CODES, BTCV_BACKGROUND)
    if unexpected:
        writer.note(f"{label_path}: unexpected label code(s) {describe_codes(unexpected)} mapped to background")
    image, affine = to_ras(img[0], img[1])
    label, _ = to_ras(ids, img[1])
    return image, label, affine
