"""Slice geometry: how a 3D volume becomes a stack of square 2D slices and back.

A volume is cut along one array axis (found from the affine for an anatomical name: axial = the
S/I axis, coronal = A/P, sagittal = L/R; an integer picks the array axis directly), each slice is
padded to a centred square (images with their darkest value, labels with background 0) and
resized to ``size x size`` (images bilinear, labels nearest). :class:`SliceGeometry` records the
mapping so :func:`slices_to_volume` puts predictions back onto the original voxel grid. Used by
``prepare`` (writing slices) and by inference (reading them back or slicing raw volumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from tcsa_uda.errors import ConfigError, DatasetError

AXIS_CODES: dict[str, tuple[str, str]] = {
    "axial": ("S", "I"),
    "coronal": ("A", "P"),
    "sagittal": ("L", "R"),
}
"""Anatomical slicing axis -> the orientation codes (``nibabel.aff2axcodes``) of its array axis."""

_CHUNK = 32  # slices resized at once (bounds the memory of one interpolate call)


def parse_axis(axis: str | int) -> str | int:
    """Validate a slicing axis: an anatomical name (str) or an array axis (int 0-2).

    Raises:
        ConfigError: naming the valid choices.
    """
    if isinstance(axis, bool):
        raise ConfigError(f"axis: expected one of {', '.join(AXIS_CODES)}, 0, 1, 2; found {axis!r}.")
    if isinstance(axis, int) or (isinstance(axis, str) and axis.strip().isdigit()):
        value = int(axis)
        if value in (0, 1, 2):
            return value
    elif isinstance(axis, str) and axis.strip().lower() in AXIS_CODES:
        return axis.strip().lower()
    raise ConfigError(f"axis: expected one of {', '.join(AXIS_CODES)}, 0, 1, 2; found {axis!r}.")


def resolve_axis(affine: np.ndarray, axis: str | int, what: str = "image") -> int:
    """The array axis to slice along.

    Args:
        affine: (4, 4) voxel-to-world affine of the volume.
        axis: anatomical name (``axial``/``coronal``/``sagittal``) or array axis (0, 1, 2).
        what: the volume's name in error messages.

    Raises:
        ConfigError: invalid ``axis``.
        DatasetError: the affine does not determine the anatomical axis.
    """
    parsed = parse_axis(axis)
    if isinstance(parsed, int):
        return parsed
    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    wanted = AXIS_CODES[parsed]
    matches = [i for i, code in enumerate(codes) if code in wanted]
    if len(matches) != 1:
        raise DatasetError(
            f"{what}: cannot find the {parsed} array axis from the affine (orientation codes {codes}); "
            f"fix the affine or pass an array axis (0, 1 or 2) instead of {parsed!r}."
        )
    return matches[0]


# --------------------------------------------------------------------------------------------
# Geometry: volume <-> slice stack


@dataclass(frozen=True)
class SliceGeometry:
    """How a volume was turned into a stack of square slices (and how to undo it).

    The volume is moved so that ``axis`` comes first, giving ``(S, H, W)`` with ``(H, W)`` the
    remaining array axes in order; each slice is padded to ``P x P`` (``P = max(H, W)``, centred)
    and resized to ``size x size``.

    Attributes:
        axis: array axis of the original volume that indexes slices.
        original_shape: shape of the original 3D volume.
        pad: ``((top, bottom), (left, right))`` padding added to each ``H x W`` slice.
        size: side of the output slices.
    """

    axis: int
    original_shape: tuple[int, int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    size: int

    @property
    def n_slices(self) -> int:
        return self.original_shape[self.axis]

    @property
    def in_plane_shape(self) -> tuple[int, int]:
        """``(H, W)``: the original slice shape before padding."""
        h, w = (n for i, n in enumerate(self.original_shape) if i != self.axis)
        return h, w

    @property
    def padded_size(self) -> int:
        return max(self.in_plane_shape)

    @property
    def scale(self) -> float:
        """Output pixels per original pixel in-plane (``size / padded_size``)."""
        return self.size / self.padded_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping; derived values are included for readers."""
        return {
            "axis": self.axis,
            "original_shape": list(self.original_shape),
            "in_plane_shape": list(self.in_plane_shape),
            "pad": [list(self.pad[0]), list(self.pad[1])],
            "padded_size": self.padded_size,
            "size": self.size,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceGeometry:
        (top, bottom), (left, right) = data["pad"]
        shape = tuple(int(n) for n in data["original_shape"])
        if len(shape) != 3:
            raise ValueError(f"original_shape must have 3 entries, found {shape}")
        return cls(
            axis=int(data["axis"]),
            original_shape=(shape[0], shape[1], shape[2]),
            pad=((int(top), int(bottom)), (int(left), int(right))),
            size=int(data["size"]),
        )


def make_geometry(shape: Sequence[int], axis: int, size: int) -> SliceGeometry:
    """The geometry that slices a volume of ``shape`` along ``axis`` into ``size x size``."""
    if len(shape) != 3:
        raise DatasetError(f"expected a 3D volume, found shape {tuple(shape)}.")
    if axis not in (0, 1, 2):
        raise ConfigError(f"axis: expected an array axis 0, 1 or 2, found {axis!r}.")
    if size < 1:
        raise ConfigError(f"size: expected a positive integer, found {size!r}.")
    h, w = (int(n) for i, n in enumerate(shape) if i != axis)
    side = max(h, w)
    pad = ((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)
    return SliceGeometry(axis=axis, original_shape=tuple(int(n) for n in shape), pad=pad, size=size)  # type: ignore[arg-type]


def image_to_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Slice, pad (with the volume's minimum) and resize (bilinear) a normalised image.

    Args:
        volume: (X, Y, Z) image of shape ``geometry.original_shape``.

    Returns:
        float32 (S, size, size).
    """
    _check_shape(volume, geometry)
    stack = np.moveaxis(np.asarray(volume, dtype=np.float32), geometry.axis, 0)  # (S, H, W)
    stack = np.pad(stack, ((0, 0), *geometry.pad), constant_values=float(stack.min()))  # (S, P, P)
    return _resize(stack[:, None], geometry.size, "bilinear")[:, 0]


def label_to_slices(volume: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Slice, pad (with background 0) and resize (nearest) a label map.

    Args:
        volume: (X, Y, Z) integer label map with values in 0..255.

    Returns:
        uint8 (S, size, size).
    """
    _check_shape(volume, geometry)
    if volume.size and (volume.min() < 0 or volume.max() > 255):
        raise DatasetError(f"expected label ids in 0..255, found values in [{volume.min()}, {volume.max()}].")
    stack = np.moveaxis(np.asarray(volume, dtype=np.uint8), geometry.axis, 0)  # (S, H, W)
    stack = np.pad(stack, ((0, 0), *geometry.pad), constant_values=0)  # (S, P, P)
    if stack.shape[-1] == geometry.size:
        return np.ascontiguousarray(stack)
    return _resize(stack[:, None].astype(np.float32), geometry.size, "nearest-exact")[:, 0].round().astype(np.uint8)


def slices_to_volume(pred: np.ndarray | torch.Tensor, geometry: SliceGeometry) -> np.ndarray:
    """Map a predicted slice stack back onto the original voxel grid (inverse of slicing).

    Args:
        pred: either an integer label stack (S, size, size), resized back with nearest
            neighbours, or class probabilities / logits (S, C, size, size), resized bilinearly.
        geometry: the :class:`SliceGeometry` recorded for the volume.

    Returns:
        Labels: (X, Y, Z) array of ``pred``'s dtype on ``geometry.original_shape``.
        Probabilities: float32 (C, X, Y, Z).

    Raises:
        DatasetError: ``pred`` does not have ``geometry.n_slices`` slices of ``size x size``.
    """
    arr = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    s, size = geometry.n_slices, geometry.size
    if arr.ndim not in (3, 4) or arr.shape[0] != s or arr.shape[-2:] != (size, size):
        raise DatasetError(
            f"slices_to_volume: expected (S, {size}, {size}) labels or (S, C, {size}, {size}) probabilities "
            f"with S = {s} slices, found shape {arr.shape}."
        )
    side = geometry.padded_size
    (top, _), (left, _) = geometry.pad
    h, w = geometry.in_plane_shape
    if arr.ndim == 3:
        if arr.dtype.kind not in "biu":
            raise DatasetError(f"slices_to_volume: expected an integer label stack, found dtype {arr.dtype}.")
        if side == size:
            full = arr
        else:
            full = _resize(arr[:, None].astype(np.float32), side, "nearest-exact")[:, 0].round().astype(arr.dtype)
        crop = full[:, top : top + h, left : left + w]  # (S, H, W)
        return np.ascontiguousarray(np.moveaxis(crop, 0, geometry.axis))
    full = arr.astype(np.float32) if side == size else _resize(arr.astype(np.float32), side, "bilinear")
    crop = full[:, :, top : top + h, left : left + w]  # (S, C, H, W)
    return np.ascontiguousarray(np.moveaxis(crop.transpose(1, 0, 2, 3), 1, 1 + geometry.axis))  # (C, X, Y, Z)


def _check_shape(volume: np.ndarray, geometry: SliceGeometry) -> None:
    if tuple(volume.shape) != geometry.original_shape:
        raise DatasetError(f"expected a volume of shape {geometry.original_shape}, found {tuple(volume.shape)}.")


def _resize(stack: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Resize (N, C, P, P) float32 to (N, C, size, size) with ``torch`` interpolation, in chunks."""
    if stack.shape[-1] == size and stack.shape[-2] == size:
        return np.ascontiguousarray(stack, dtype=np.float32)
    out = np.empty((*stack.shape[:2], size, size), dtype=np.float32)
    align = {"align_corners": False} if mode == "bilinear" else {}
    with torch.no_grad():
        for start in range(0, stack.shape[0], _CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(stack[start : start + _CHUNK], dtype=np.float32))
            out[start : start + _CHUNK] = F.interpolate(chunk, size=(size, size), mode=mode, **align).numpy()
    return out
