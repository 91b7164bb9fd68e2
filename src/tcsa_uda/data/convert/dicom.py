"""Read one DICOM series (slices in any file order) as a 3D volume with a RAS+ affine.

Slices are ordered by the projection of ImagePositionPatient on the slice normal
(row direction x column direction of ImageOrientationPatient), never by file name or
InstanceNumber. The voxel-to-patient affine follows DICOM PS3.3 C.7.6.2.1.1: voxel ``(i, j, k)``
= (column, row, slice) sits at ``IPP_0 + i * dc * X + j * dr * Y + k * step``, with ``X``/``Y``
the row/column direction cosines, ``(dr, dc)`` = PixelSpacing and ``step`` the mean vector between
consecutive slice positions. DICOM patient space is LPS; the returned affine is RAS (x and y
negated), as NIfTI expects. A step between two slices that differs from the median step by more
than :data:`SLICE_GAP_RTOL` (a missing slice leaves a gap of twice the median) is an error: one
step cannot describe such a series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from tcsa_uda.errors import DatasetError

ORIENTATION_ATOL = 1e-4
"""Largest difference allowed between the ImageOrientationPatient of two slices of a series."""
SPACING_RTOL = 0.01
"""Relative spread of slice distances above which the series is reported as unevenly spaced."""
SLICE_GAP_RTOL = 0.2
"""Largest relative deviation of one slice step from the median step. A larger step is a gap (a
missing slice gives twice the median), a smaller one an extra slice or a second acquisition;
either makes the series an error instead of a volume stacked with the mean step."""
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class DicomSeries:
    """A series read by :func:`read_dicom_series`.

    Attributes:
        array: (X, Y, Z) = (columns, rows, slices) intensities (rescale slope/intercept applied).
        affine: (4, 4) voxel-to-world RAS affine.
        files: the slice files in the order of ``array``'s last axis.
        notes: non-fatal findings (uneven spacing).
    """

    array: np.ndarray
    affine: np.ndarray
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def _tag(ds: Any, name: str, path: Path, count: int | None = None) -> Any:
    value = getattr(ds, name, None)
    if value is None:
        raise DatasetError(f"{path}: expected the DICOM attribute {name} to be present, found none.")
    if count is not None:
        try:
            values = [float(v) for v in value]
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: expected {count} numbers in {name}, found {value!r}.") from exc
        if len(values) != count:
            raise DatasetError(f"{path}: expected {count} numbers in {name}, found {len(values)}: {value!r}.")
        return np.asarray(values, dtype=np.float64)
    return value


def read_slice(path: Path) -> Any:
    """Read one DICOM file (header and pixels).

    Raises:
        DatasetError: not a DICOM file or unreadable (the file is named).
    """
    try:
        return pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read as DICOM ({type(exc).__name__}: {exc}).") from exc


def _pixels(ds: Any, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(ds.pixel_array)
    except (AttributeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise DatasetError(f"{path}: cannot decode the DICOM pixel data ({type(exc).__name__}: {exc}).") from exc
    if arr.ndim != 2:
        raise DatasetError(f"{path}: expected a single-frame 2D slice, found pixel data of shape {arr.shape}.")
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        return arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return arr


def _check_gaps(dist: np.ndarray, positions: Sequence[tuple[float, np.ndarray, Path, Any]], what: str) -> None:
    """Refuse a step between consecutive slices that differs from the median step by more than
    :data:`SLICE_GAP_RTOL` (the largest gap is named first, then the smallest step).

    Args:
        dist: (S - 1,) distances between consecutive slice positions along the normal, in mm.
        positions: ``(position, IPP, file, header)`` of the S slices, sorted by position.
        what: the series' name in messages.

    Raises:
        DatasetError: naming the series, the two slices (index, file, position) and the steps.
    """
    if dist.size < 2:
        return
    median = float(np.median(dist))
    wide = np.flatnonzero(dist > median * (1.0 + SLICE_GAP_RTOL))
    narrow = np.flatnonzero(dist < median * (1.0 - SLICE_GAP_RTOL))
    if wide.size:
        k = int(wide[dist[wide].argmax()])
        kind = "a gap"
        hint = "a slice is probably missing; add the missing file(s) or exclude the series"
    elif narrow.size:
        k = int(narrow[dist[narrow].argmin()])
        kind = "a short step"
        hint = "an extra slice or a second acquisition is mixed in; keep one series only"
    else:
        return
    a, b = positions[k], positions[k + 1]
    raise DatasetError(
        f"{what}: expected evenly spaced slices (median step {median:.3f} mm along the slice normal), found {kind} of "
        f"{dist[k]:.3f} mm ({dist[k] / median:.2f} x the median) between slice {k} ({a[2].name}, at {a[0]:.3f} mm) "
        f"and slice {k + 1} ({b[2].name}, at {b[0]:.3f} mm); {hint}."
    )


def read_dicom_series(files: Sequence[Path], what: str) -> DicomSeries:
    """Read the slices of one series into a volume, sorted along the slice normal.

    Args:
        files: the slice files, in any order.
        what: the series' name in messages (e.g. the case folder).

    Returns:
        The volume, its RAS affine and the files in slice order.

    Raises:
        DatasetError: no file, several series mixed, inconsistent orientation or slice size,
            two slices at the same position, a slice step that differs from the median step by
            more than :data:`SLICE_GAP_RTOL` (a missing slice), or a missing geometry attribute.
    """
    if not files:
        raise DatasetError(f"{what}: expected DICOM slice files, found none.")
    headers = [(Path(f), read_slice(Path(f))) for f in files]
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise DatasetError(
            f"{what}: expected the slices of one DICOM series, found {len(series)} series (SeriesInstanceUID) mixed."
        )
    first_path, first = headers[0]
    iop = _tag(first, "ImageOrientationPatient", first_path, 6)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise DatasetError(f"{first_path}: expected orthonormal ImageOrientationPatient, found {iop.tolist()}.")
    spacing = _tag(first, "PixelSpacing", first_path, 2)  # (between rows, between columns)
    positions: list[tuple[float, np.ndarray, Path, Any]] = []
    for path, ds in headers:
        other = _tag(ds, "ImageOrientationPatient", path, 6)
        if np.abs(other - iop).max() > ORIENTATION_ATOL:
            raise DatasetError(
                f"{path}: expected the ImageOrientationPatient {iop.tolist()} of {first_path.name}, found "
                f"{other.tolist()} "
                "(a series must have one orientation)."
            )
        ipp = _tag(ds, "ImagePositionPatient", path, 3)
        positions.append((float(ipp @ normal), ipp, path, ds))
    positions.sort(key=lambda p: p[0])
    dist = np.diff([p[0] for p in positions])
    if dist.size and dist.min() < 1e-3:
        i = int(dist.argmin())
        raise DatasetError(
            f"{what}: expected one slice per position, found {positions[i][2].name} and {positions[i + 1][2].name} at "
            "the same "
            f"position {positions[i][0]:.3f} mm along the slice normal."
        )
    _check_gaps(dist, positions, what)
    notes: list[str] = []
    if dist.size > 1 and (dist.max() - dist.min()) > SPACING_RTOL * dist.mean():
        notes.append(f"{what}: uneven slice spacing ({dist.min():.3f} to {dist.max():.3f} mm); the mean step is used")
    if len(positions) > 1:
        step = (positions[-1][1] - positions[0][1]) / (len(positions) - 1)
    else:
        thickness = float(getattr(first, "SpacingBetweenSlices", 0) or getattr(first, "SliceThickness", 1) or 1)
        step = normal * thickness
    slices = []
    shape = None
    for _, _, path, ds in positions:
        px = _pixels(ds, path)
        if shape is None:
            shape = px.shape
        elif px.shape != shape:
            raise DatasetError(
                f"{path}: expected {shape[0]} x {shape[1]} pixels like the other slices of {what}, found {px.shape}."
            )
        slices.append(px)
    dtype = np.result_type(*[s.dtype for s in slices])
    volume = np.stack([s.astype(dtype, copy=False).T for s in slices], axis=-1)  # (columns, rows, slices)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0][1]
    return DicomSeries(array=volume, affine=_LPS_TO_RAS @ lps, files=[p[2] for p in positions], notes=notes)
