"""Helpers shared by the benchmark converters (``tcsa-uda convert ...``): discovery and arrays.

A converter discovers the files of one raw download (:func:`find_files`), maps its label codes
to consecutive ids (:func:`map_codes`), puts every volume in RAS+ voxel order without resampling
(:func:`to_ras`), assigns the literature's split (:mod:`.splits`) and hands each case to a
:class:`~.writer.DatasetWriter`, which writes, summarises and verifies the dataset folder.

Things the download lacks that are not fatal (a missing training case, an image without a label,
an unexpected label code) are *notes*: printed with the summary and saved in ``summary.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

from tcsa_uda.data.io import read_nifti
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError

NIFTI_RE = r"\.nii(?:\.gz)?"
"""Regular-expression fragment matching a NIfTI suffix (``.nii`` or ``.nii.gz``, any case)."""

_LUT_LIMIT = 1 << 16  # label codes below this are mapped with a lookup table
_IMAGE_DTYPES = (np.uint8, np.int16, np.uint16, np.int32, np.float32)


# --------------------------------------------------------------------------------------------
# Discovery


def require_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` as a Path if it is a folder.

    Raises:
        MissingPathError: naming ``what`` (e.g. ``--ct folder``) and what was found instead.
    """
    path = Path(path)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing"
        raise MissingPathError(f"{path}: expected the {what} to be a folder, found {found}.")
    return path


MACOS_METADATA_DIR = "__MACOSX"
"""Folder of resource-fork copies that zip archives made on macOS hold next to the real files."""


def is_ignored_name(name: str) -> bool:
    """True for names a converter never reads: hidden names (``.x``, AppleDouble ``._x``) and ``__MACOSX``."""
    return name.startswith(".") or name == MACOS_METADATA_DIR


def walk_dirs(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` of ``root`` (sorted) that never enters ignored folders and lists no ignored file.

    Yields:
        ``(folder, sub-folder names, file names)``, both name lists sorted, ignored names removed
        (see :func:`is_ignored_name`).
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not is_ignored_name(d))
        yield Path(folder), dirs, sorted(f for f in files if not is_ignored_name(f))


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under ``root`` (recursive, sorted), without hidden files.

    Names starting with ``.`` are skipped, among them the ``._name`` AppleDouble files that
    archives made on macOS contain next to every real file, and so is every ``__MACOSX`` folder
    (the copies of the resource forks that such archives hold).
    """
    for folder, _, files in walk_dirs(root):
        for name in files:
            yield folder / name


def find_files(root: Path, pattern: str) -> list[tuple[Path, re.Match[str]]]:
    """Files under ``root`` whose *name* matches ``pattern`` in full, ignoring letter case.

    Args:
        root: folder searched recursively (nested folders of any depth).
        pattern: regular expression for the file name (use :data:`NIFTI_RE` for the suffix).

    Returns:
        ``(path, match)`` pairs in sorted path order.
    """
    regex = re.compile(pattern, re.IGNORECASE)
    out: list[tuple[Path, re.Match[str]]] = []
    for path in iter_files(root):
        match = regex.fullmatch(path.name)
        if match is not None:
            out.append((path, match))
    return out


def index_unique(found: Sequence[tuple[Path, re.Match[str]]], key: Any, root: Path, what: str) -> dict[Any, Path]:
    """Map ``key(match)`` -> path, refusing two files for one key.

    Raises:
        DatasetError: two files (e.g. ``x.nii`` and ``x.nii.gz``, or two nested copies) give the
            same key; both are named.
    """
    out: dict[Any, Path] = {}
    for path, match in found:
        k = key(match)
        if k in out:
            raise DatasetError(
                f"{root}: expected one {what} file per case, found two for {k!r}: {out[k]} and {path}; "
                "remove one of them."
            )
        out[k] = path
    return out


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def check_test_cases(
    test_ids: Collection[str], present: Collection[str], domain: str, where: Path, expected_files: str
) -> None:
    """Raise when a literature test case is missing (missing training cases are only notes).

    Raises:
        MissingPathError: naming the folder, the missing ids and the files that were expected.
    """
    missing = sorted(set(test_ids) - set(present), key=natural_key)
    if missing:
        raise MissingPathError(
            f"{where}: the {domain} test case(s) {missing} of the literature split are missing or incomplete "
            f"(expected {expected_files}); the published split cannot be reproduced without them."
        )


# --------------------------------------------------------------------------------------------
# Arrays


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the voxel axes of a volume to the closest RAS+ order, without resampling.

    Only axis permutations and flips are applied, and the affine is updated so that every voxel
    keeps its world position: after this ``nibabel.aff2axcodes(affine) == ('R', 'A', 'S')`` for
    any non-degenerate affine (an oblique one goes to its closest axes).

    Args:
        array: (X, Y, Z) volume.
        affine: (4, 4) voxel-to-world affine of ``array`` (reorient a label with its image's
            affine so both get the same transform).

    Returns:
        ``(array, affine)`` in RAS+ voxel order.
    """
    ornt = io_orientation(affine)
    transform = ornt_transform(ornt, axcodes2ornt(("R", "A", "S")))
    out = apply_orientation(array, transform)
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(out), new_affine


def map_codes(
    label: np.ndarray, mapping: Mapping[int, int], ignored: Collection[int] = ()
) -> tuple[np.ndarray, dict[int, int]]:
    """Map raw label codes to consecutive class ids; every other code becomes background 0.

    Args:
        label: integer (or whole-valued float) raw label map of any shape.
        mapping: raw code -> class id (ids 1..C-1).
        ignored: raw codes that are expected and mapped to background silently (e.g. the
            MM-WHS right ventricle 600); 0 is always expected.

    Returns:
        ``(ids, unexpected)``: uint8 ids of ``label``'s shape, and ``{code: voxel count}`` of the
        codes that are neither mapped, ignored nor 0 (reported by the converters).

    Raises:
        DatasetError: non-integer values in ``label``.
    """
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise DatasetError("expected whole-number label codes, found non-integer values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind not in "iu":
        raise DatasetError(f"expected an integer label map, found dtype {arr.dtype}")
    known = set(ignored) | {0}
    unexpected: dict[int, int] = {}
    if arr.size and int(arr.min()) >= 0 and int(arr.max()) < _LUT_LIMIT:
        # Raw codes are small non-negative integers: a lookup table avoids sorting the volume.
        counts = np.bincount(arr.ravel().astype(np.int64, copy=False))
        lut = np.zeros(len(counts), dtype=np.uint8)
        for code in np.flatnonzero(counts).tolist():
            if code in mapping:
                lut[code] = mapping[code]
            elif code not in known:
                unexpected[code] = int(counts[code])
        return lut[arr], unexpected
    codes, inverse, counts = np.unique(arr, return_inverse=True, return_counts=True)
    lut = np.zeros(len(codes), dtype=np.uint8)
    for i, (code, n) in enumerate(zip(codes.tolist(), counts.tolist(), strict=True)):
        if code in mapping:
            lut[i] = mapping[code]
        elif code not in known:
            unexpected[int(code)] = int(n)
    return lut[inverse].reshape(arr.shape), unexpected


def foreground_box(mask: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """The bounding box of the non-zero voxels of ``mask`` plus a margin, and the cropped affine.

    Slicing a volume with the box and giving it the returned affine keeps every kept voxel at
    its world position.

    Args:
        mask: (X, Y, Z) array; any non-zero value counts as foreground.
        affine: (4, 4) voxel-to-world affine of ``mask``.
        margin_mm: margin added on each side, in mm (converted per axis with the voxel size).

    Returns:
        ``(box, affine)``; an all-zero mask gives the whole volume and the same affine.

    Raises:
        ConfigError: a negative margin.
    """
    if margin_mm < 0:
        raise ConfigError(f"crop margin: expected a non-negative number of mm, found {margin_mm!r}.")
    nonzero = np.nonzero(mask)
    if not nonzero[0].size:
        return tuple(slice(0, n) for n in mask.shape), np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    pad = np.ceil(margin_mm / spacing).astype(int)
    lo = [max(0, int(idx.min()) - int(p)) for idx, p in zip(nonzero, pad, strict=True)]
    hi = [min(n, int(idx.max()) + 1 + int(p)) for idx, n, p in zip(nonzero, mask.shape, pad, strict=True)]
    shifted = np.asarray(affine, dtype=np.float64).copy()
    shifted[:3, 3] = (shifted @ np.array([*lo, 1.0]))[:3]
    return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), shifted


def image_dtype(array: np.ndarray) -> np.ndarray:
    """``array`` in a compact NIfTI dtype: integer types kept when they fit, else float32."""
    if array.dtype in _IMAGE_DTYPES:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    return array.astype(np.float32)


def describe_codes(codes: Mapping[int, int]) -> str:
    """``{600: 12, 850: 3}`` -> ``"600 (12 voxels), 850 (3 voxels)"``."""
    return ", ".join(f"{c} ({n} voxels)" for c, n in sorted(codes.items()))


def load_nifti_raw(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Load a raw-download NIfTI as ``(array, affine)``; a 4D file with one volume is squeezed.

    Reading is bounded by :func:`tcsa_uda.data.io.read_nifti` (header checked against the file
    size and the memory budget, gzip decompressed no further than the header claims).

    Raises:
        VolumeSizeError: the header claims more than the file holds or than the budget.
        DatasetError: unreadable file or not 3D (the message names the file).
    """
    data, affine, _ = read_nifti(path, what)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D {what}, found shape {data.shape}.")
    return np.asarray(data), affine
