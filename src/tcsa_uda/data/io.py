"""Reading and writing volumes (NIfTI through nibabel) with errors that name the file.

A volume is returned as a float32 (images) or integer (labels) numpy array in the file's voxel
order, with its 4x4 affine and the header, so predictions can be written back on the same grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from tcsa_uda.atomic import atomic_path
from tcsa_uda.errors import DatasetError, MissingPathError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A 3D array with its voxel-to-world affine and the original NIfTI header."""

    array: np.ndarray  # (X, Y, Z) in the file's voxel order
    affine: np.ndarray  # (4, 4)
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def is_nifti(path: str | os.PathLike[str]) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike[str], channel: int | None = None, what: str = "image") -> Volume:
    """Load a NIfTI file as a 3D volume.

    A 4D image with a single volume is squeezed to 3D; a real 4D image needs ``channel``.

    Raises:
        MissingPathError: the file does not exist.
        DatasetError: the file cannot be read, or its dimensionality is not 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"{path}: {what} file does not exist.")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DatasetError(f"{path}: cannot read {what} as NIfTI ({type(exc).__name__}: {exc}).") from exc
    data = select_3d(data, channel, path, what)
    return Volume(array=np.asarray(data), affine=np.asarray(img.affine, dtype=np.float64), header=img.header)


def select_3d(data: np.ndarray, channel: int | None, path: Path, what: str) -> np.ndarray:
    """Reduce ``data`` to 3D: squeeze a single 4th volume or pick ``channel``; else raise."""
    if data.ndim == 4:
        if channel is not None:
            if not 0 <= channel < data.shape[3]:
                raise DatasetError(
                    f"{path}: channel {channel} requested but the {what} has {data.shape[3]} volumes (shape "
                    f"{data.shape})."
                )
            return data[..., channel]
        if data.shape[3] == 1:
            return data[..., 0]
        raise DatasetError(
            f"{path}: expected a 3D {what}, found a 4D image of shape {data.shape}; "
            f"choose one volume with the domain's 'channel' key."
        )
    if data.ndim != 3:
        raise DatasetError(f"{path}: expected a 3D {what}, found {data.ndim}D data of shape {data.shape}.")
    return data


def save_nifti(
    path: str | os.PathLike[str],
    array: np.ndarray,
    affine: np.ndarray,
    header: nib.Nifti1Header | None = None,
) -> None:
    """Write ``array`` as NIfTI with ``affine`` (and a copy of ``header``) atomically."""
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(array, affine, header=hdr)
    if hdr is not None:
        img.set_data_dtype(array.dtype)
        img.header.set_qform(affine, code=int(header["qform_code"]) or 1)
        img.header.set_sform(affine, code=int(header["sform_code"]) or 1)
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
