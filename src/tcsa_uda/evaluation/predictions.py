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
from tcsa_uda.evaluation.ground_truth import label_ids


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


def read_prediction(path: Path, gt_path: Path, gt_shape: tuple[int, ...] | None, class_names: Sequence[str]) -> Volume:
    """Load a predicted label map and check it against its ground truth.

    Args:
        path: the prediction file.
        gt_path: its ground-truth file (named in messages).
        gt_shape: the ground truth's shape, which the prediction must have; None when the
            prediction will be resampled onto the ground truth's grid (``--resample-to-gt``).
        class_names: the dataset's classes (ids ``0..C-1``).

    Raises:
        DatasetError: unreadable, not 3D, non-integer values, shape different from the ground
            truth (both files and shapes named), or labels outside the dataset's class ids.
    """
    vol = load_nifti(path, what="prediction")
    arr = np.asarray(vol.array)
    if gt_shape is not None and arr.shape != tuple(gt_shape):
        raise DatasetError(
            f"prediction {path} has shape {arr.shape} but the ground truth {gt_path} has shape {tuple(gt_shape)}; "
            "predictions must be on the ground truth's voxel grid (or pass --resample-to-gt)."
        )
    return Volume(array=label_ids(vol, path, class_names, "prediction"), affine=vol.affine, header=vol.header)


def resample_to_grid(
    labels: np.ndarray, affine: np.ndarray, shape: tuple[int, ...], target_affine: np.ndarray
) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto another voxel grid, in world coordinates.

    Each voxel centre of the target grid is mapped to world space with ``target_affine`` and into
    the source grid with the inverse of ``affine``; it takes the label of the nearest source voxel
    (a point halfway between two voxels takes the higher index), or background (0) outside the
    source volume. Computed slice by slice along the last axis, so
    the memory needed is that of one slice of coordinates.

    Args:
        labels: (X, Y, Z) integer label map on the grid of ``affine``.
        affine: (4, 4) voxel-to-world affine of ``labels``.
        shape: (X', Y', Z') shape of the target grid.
        target_affine: (4, 4) voxel-to-world affine of the target grid.

    Returns:
        (X', Y', Z') label map of ``labels.dtype``.
    """
    to_source = np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ np.asarray(target_affine, dtype=np.float64)
    nx, ny, nz = (int(n) for n in shape[:3])
    out = np.zeros((nx, ny, nz), dtype=labels.dtype)
    gi, gj = np.meshgrid(np.arange(nx, dtype=np.float64), np.arange(ny, dtype=np.float64), indexing="ij")
    src_shape = np.asarray(labels.shape[:3])
    for k in range(nz):
        coords = np.stack([gi.ravel(), gj.ravel(), np.full(gi.size, float(k)), np.ones(gi.size)])
        idx = np.floor((to_source @ coords)[:3] + 0.5).astype(np.int64)  # nearest; ties go up, not to even
        inside = np.all((idx >= 0) & (idx < src_shape[:, None]), axis=0)
        plane = np.zeros(gi.size, dtype=labels.dtype)
        plane[inside] = labels[idx[0, inside], idx[1, inside], idx[2, inside]]
        out[:, :, k] = plane.reshape(nx, ny)
    return out
