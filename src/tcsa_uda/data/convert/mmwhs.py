"""MM-WHS 2017 cardiac CT and MR (raw NIfTI download) -> the dataset contract.

Input: the 20 labelled volumes per modality as distributed, e.g. ``ct_train/ct_train_1001_image.nii.gz``
and ``ct_train_1001_label.nii.gz`` (nested folders, ``.nii`` or ``.nii.gz`` and any letter case
accepted; ``--ct`` and ``--mr`` may even be the same parent folder, the ``ct``/``mr`` prefix of a
file name decides its modality).

Output: domains ``CT`` and ``MR``; classes 1 myocardium (code 205), 2 left atrium blood cavity
(420), 3 left ventricle blood cavity (500), 4 ascending aorta (820), the training ids of the SIFA
line (docs/protocols.md); every other code (550 RV, 600 RA, 850 pulmonary artery) is
background. The raw code 421, found for the left atrium in one MR label file of the download,
is mapped to the left atrium too and listed in ``summary.json`` (``remapped_codes``) with its
file. Split: test CT 1003, 1008, 1014, 1019 and MR 1007, 1009, 1018, 1019; the other
labelled volumes train, with a small seeded val subset (:func:`~.common.carve_val`).

Crop (optional, ``crop_margin_mm``): every volume is cut to the bounding box of its labelled
heart structures plus a margin, the heart-centred crop of the SIFA preprocessing.

Orientation: volumes are put in RAS+ voxel order without resampling (:func:`~.common.to_ras`)
and keep a correct affine, so ``tcsa-uda prepare --axis coronal`` cuts the coronal slices of
the SIFA protocol (array axis 1) whatever the acquisition orientation of the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tcsa_uda.data.convert.common import (
    NIFTI_RE,
    check_test_cases,
    describe_codes,
    find_files,
    foreground_box,
    load_nifti_raw,
    map_codes,
    natural_key,
    require_dir,
    to_ras,
)
from tcsa_uda.data.convert.splits import DEFAULT_VAL_FRACTION, carve_val
from tcsa_uda.data.convert.writer import ConversionResult, DatasetWriter, check_same_grid
from tcsa_uda.errors import DatasetError

DATASET_NAME = "mmwhs"
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "myocardium",
    "left atrium blood cavity",
    "left ventricle blood cavity",
    "ascending aorta",
)
LABEL_CODES: dict[int, int] = {205: 1, 420: 2, 500: 3, 820: 4}
"""MM-WHS raw code -> class id (the SIFA line's 1 MYO, 2 LAC, 3 LVC, 4 AA)."""
CODE_ALIASES: dict[int, int] = {421: 420}
"""Raw codes found in the download for a documented code: 421 marks the left atrium blood cavity
in one MR label file. Mapped like the code they stand for and reported in ``remapped_codes``."""
BACKGROUND_CODES: tuple[int, ...] = (550, 600, 850)
"""Right ventricle, right atrium, pulmonary artery: expected, mapped to background."""
TEST_IDS: dict[str, tuple[str, ...]] = {"CT": ("1003", "1008", "1014", "1019"), "MR": ("1007", "1009", "1018", "1019")}
LABELLED_IDS: tuple[str, ...] = tuple(str(i) for i in range(1001, 1021))
"""The 20 labelled training volumes of each modality (the 2001-2040 challenge test set has no labels)."""
MODALITIES: dict[str, str] = {"CT": "computed tomography", "MR": "magnetic resonance imaging"}
FILE_PATTERN = rf"(?:(?P<mod>ct|mr)[_-])?(?:[a-z]+[_-])*?(?P<id>\d{{4}})[_-](?P<kind>image|label){NIFTI_RE}"
"""File names such as ``ct_train_1001_image.nii.gz``, ``MR_1007_label.nii`` or ``1003_image.nii.gz``."""


def discover_mmwhs(folder: Path, domain: str) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Find the image and label files of one modality.

    Returns:
        ``({id: {"image": path, "label": path}}, notes)``; files of the other modality (by their
        ``ct``/``mr`` prefix) are ignored, files outside the 20 labelled ids are noted.

    Raises:
        DatasetError: two files for the same id and kind.
    """
    cases: dict[str, dict[str, Path]] = {}
    notes: list[str] = []
    ignored: list[str] = []
    for path, match in find_files(folder, FILE_PATTERN):
        mod = match.group("mod")
        if mod is not None and mod.upper() != domain:
            continue
        cid, kind = match.group("id"), match.group("kind").lower()
        if cid not in LABELLED_IDS:
            ignored.append(path.name)
            continue
        entry = cases.setdefault(cid, {})
        if kind in entry:
            raise DatasetError(
                f"{folder}: expected one {domain} {kind} file for case {cid}, found two: {entry[kind]} and {path}; "
                "remove one."
            )
        entry[kind] = path
    if ignored:
        notes.append(f"{domain}: ignored {len(ignored)} file(s) outside the labelled ids 1001-1020 (e.g. {ignored[0]})")
    return cases, notes


def convert_mmwhs(
    ct: str | os.PathLike[str],
    mr: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    crop_margin_mm: float | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert the MM-WHS 2017 CT and MR training volumes into a dataset folder.

    Args:
        ct: folder holding the CT ``*_image`` / ``*_label`` NIfTI files (searched recursively).
        mr: folder holding the MR files (may be the same folder as ``ct``).
        out: output dataset folder.
        val_fraction: share of each domain's training volumes moved to ``val`` (0 disables).
        seed: seed of the val draw.
        crop_margin_mm: when given, crop every volume to the bounding box of all its labelled
            heart structures (every non-zero raw code, RV/RA/PA included) plus this margin in
            mm: the heart-centred crop of the SIFA preprocessing. It reads the labels of every
            case, target test cases included, as that preprocessing did. None keeps the
            whole field of view.
        progress: show a progress bar.

    Returns:
        The written dataset, its summary and its verification report.

    Raises:
        MissingPathError: a folder does not exist, or a literature test case is missing.
        DatasetError: an unreadable or mismatched test case, duplicate files, or the output
            fails verification. The same fault in a training case skips it with a note
            (``skipped_cases`` in the summary).
    """
    folders = {"CT": require_dir(ct, "--ct folder"), "MR": require_dir(mr, "--mr folder")}
    writer = DatasetWriter(
        out=Path(out),
        name=DATASET_NAME,
        class_names=CLASS_NAMES,
        modalities=MODALITIES,
        description="MM-WHS 2017 cardiac CT and MR, SIFA-line split (tcsa-uda convert mmwhs).",
        reference=(
            "X. Zhuang, J. Shen, Multi-scale patch and multi-modality atlases for whole heart segmentation of MRI, "
            "MedIA 2016"
        ),
        seed=seed,
    )
    if crop_margin_mm is not None:
        writer.note(
            f"every volume cropped to its labelled heart structures + {crop_margin_mm:g} mm (SIFA heart-centred crop)"
        )
    jobs: list[tuple[str, str, str, dict[str, Path]]] = []
    for domain, folder in folders.items():
        cases, notes = discover_mmwhs(folder, domain)
        for n in notes:
            writer.note(n)
        complete = {cid for cid, files in cases.items() if {"image", "label"} <= files.keys()}
        check_test_cases(
            TEST_IDS[domain], complete, domain, folder, f"{domain.lower()}_train_<id>_image and _label NIfTI files"
        )
        absent = [cid for cid in LABELLED_IDS if cid not in cases]
        if absent:
            writer.note(
                f"{domain}: {len(absent)} of the {len(LABELLED_IDS)} labelled cases not found, skipped: "
                f"{', '.join(absent)}"
            )
        partial = [
            f"{cid} (only its {', '.join(sorted(cases[cid]))})"
            for cid in LABELLED_IDS
            if cid in cases and cid not in complete
        ]
        if partial:
            writer.note(f"{domain}: incomplete case(s) skipped: {', '.join(partial)}")
        train = sorted((c for c in complete if c not in TEST_IDS[domain]), key=natural_key)
        val = set(carve_val(train, val_fraction, seed, domain))
        for cid in sorted(complete, key=natural_key):
            split = "test" if cid in TEST_IDS[domain] else "val" if cid in val else "train"
            jobs.append((domain, cid, split, cases[cid]))
    mapping = {**LABEL_CODES, **{alias: LABEL_CODES[code] for alias, code in CODE_ALIASES.items()}}
    for domain, cid, split, files in tqdm(jobs, desc="convert mmwhs", unit="case", disable=not progress):
        with writer.case_faults(domain, cid, split):
            _convert_case(writer, domain, cid, split, files, mapping, crop_margin_mm)
    return writer.finish()


def _convert_case(
    writer: DatasetWriter,
    domain: str,
    cid: str,
    split: str,
    files: dict[str, Path],
    mapping: dict[int, int],
    crop_margin_mm: float | None,
) -> None:
    """Read, map, reorient (and crop) one case and add it to ``writer``."""
    image = load_nifti_raw(files["image"], "image")
    label = load_nifti_raw(files["label"], "label")
    check_same_grid(image, label, files["image"], files["label"], writer)
    ids, unexpected = map_codes(label[0], mapping, BACKGROUND_CODES)
    if unexpected:
        writer.note(f"{files['label']}: unexpected label code(s) {describe_codes(unexpected)} mapped to background")
    for alias, code in CODE_ALIASES.items():
        n = int(np.count_nonzero(label[0] == alias))
        if n:
            writer.remap(files["label"], alias, LABEL_CODES[code], n, f"MM-WHS variant of code {code}")
    img, affine = to_ras(image[0], image[1])
    lab, _ = to_ras(ids, image[1])
    if crop_margin_mm is not None:
        heart, _ = to_ras(label[0] != 0, image[1])
        box, affine = foreground_box(heart, affine, crop_margin_mm)
        img, lab = img[box], lab[box]
    writer.add(domain, cid, split, img, affine, lab, source=str(files["image"]))
