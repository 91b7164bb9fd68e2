"""Label maps on disk: finding one NIfTI per case in a folder and checking it against its ground truth.

Used by ``evaluate --pred`` (like nnU-Net's evaluate-folder) and for the file names ``evaluate``
and ``predict`` write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tcsa_uda.data.io import Volume, is_nifti, load_nifti
from tcsa_uda.errors import DatasetError, MissingPathError


def safe_case_name(case_id: str) -> str:
    """The file stem used for a case id (characters other than ``A-Za-z0-9._-`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def nifti_stem(name: str) -> str:
    """``case.nii.gz`` -> ``case`` (also ``.nii``), case preserved."""
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_predictions(folder: str | Path) -> dict[str, Path]:
    """Every NIfTI file under ``folder`` (any depth), keyed by its lower-cased case name.

    Hidden files (names starting with ``.``, e.g. unfinished atomic writes) are ignored.

    Raises:
        MissingPathError: ``folder`` is not a folder.
        DatasetError: two files map to the same case name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingPathError(f"{root}: prediction folder does not exist.")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".") or not path.is_file() or not is_nifti(path):
            continue
        key = safe_case_name(nifti_stem(path.name)).lower()
        if key in out:
            raise DatasetError(
                f"{root}: two prediction files for case {key!r}: {out[key]} and {path}; keep one per case."
            )
        out[key] = path
    return out


def read_prediction(path: Path, gt_path: Path, gt_shape: tuple[int, ...], class_names: Sequence[str]) -> Volume:
    """Load a predicted label map and check it against its ground truth.

    Raises:
        DatasetError: unreadable, not 3D, non-integer values, shape different from the ground
            truth (both files and shapes named), or labels outside the dataset's class ids.
    """
    vol = load_nifti(path, what="prediction")
    arr = np.asarray(vol.array)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected an integer label map, found dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise DatasetError(f"{path}: expected integer label ids, found non-integer values.")
    if arr.shape != tuple(gt_shape):
        raise DatasetError(
            f"prediction {path} has shape {arr.shape} but the ground truth {gt_path} has shape {tuple(gt_shape)}; "
            "predictions must be on the ground truth's voxel grid."
        )
    labels = arr.astype(np.int64)
    present = np.unique(labels)
    bad = [int(v) for v in present if v < 0 or v >= len(class_names)]
    if bad:
        raise DatasetError(
            f"{path}: expected label ids 0..{len(class_names) - 1} ({', '.join(class_names)}), found {bad[:10]}; "
            "is it a prediction for another class set or with raw label codes?"
        )
    return Volume(array=labels, affine=vol.affine, header=vol.header)
