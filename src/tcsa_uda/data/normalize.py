"""Per-volume intensity normalisation: percentile clipping, z-score, then [-1, 1].

The SIFA line of cross-modality cardiac work (see docs/protocols.md, MM-WHS) clips the
brightest 2 % of a volume, z-scores it and maps the result to [-1, 1]. Here the clipping
percentiles are parameters (default 0.5 and 99.5), the z-score uses the mean and standard
deviation of the clipped volume, and the final map scales the clipped z-range
``[(lo - mean) / std, (hi - mean) / std]`` linearly onto ``[-1, 1]``, so every normalised volume
spans exactly ``[-1, 1]`` and -1 is its darkest value (used to pad slices).

Everything needed to repeat or invert the map is returned as a :class:`NormalizationRecord` and
stored per volume in the prepared index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tcsa_uda.errors import ConfigError, DatasetError

METHOD = "percentile_clip_zscore_to_unit_range"
"""Name of the normalisation recorded in the index (one method for now)."""


@dataclass(frozen=True)
class NormalizationRecord:
    """How one volume was normalised: ``out = 2 * (z - z_min) / (z_max - z_min) - 1``.

    Attributes:
        method: :data:`METHOD`.
        percentiles: the (low, high) clipping percentiles, in percent.
        clip_low: intensity at the low percentile (values below are raised to it).
        clip_high: intensity at the high percentile (values above are lowered to it).
        mean: mean of the clipped volume.
        std: standard deviation of the clipped volume (0 for a constant volume).
        z_min: ``(clip_low - mean) / std``, the z-value mapped to -1.
        z_max: ``(clip_high - mean) / std``, the z-value mapped to +1.
    """

    method: str
    percentiles: tuple[float, float]
    clip_low: float
    clip_high: float
    mean: float
    std: float
    z_min: float
    z_max: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable mapping (inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out["percentiles"] = list(self.percentiles)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationRecord:
        """Rebuild a record written by :meth:`to_dict`."""
        low, high = data["percentiles"]
        return cls(
            method=str(data["method"]),
            percentiles=(float(low), float(high)),
            clip_low=float(data["clip_low"]),
            clip_high=float(data["clip_high"]),
            mean=float(data["mean"]),
            std=float(data["std"]),
            z_min=float(data["z_min"]),
            z_max=float(data["z_max"]),
        )


def check_percentiles(percentiles: tuple[float, float], what: str = "clip_percentiles") -> tuple[float, float]:
    """Validate ``(low, high)`` clipping percentiles and return them as floats.

    Raises:
        ConfigError: unless ``0 <= low < high <= 100``.
    """
    try:
        low, high = (float(p) for p in percentiles)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected two numbers (low, high), found {percentiles!r}.") from exc
    if not (0.0 <= low < high <= 100.0):
        raise ConfigError(f"{what}: expected 0 <= low < high <= 100 (percent), found ({low:g}, {high:g}).")
    return low, high


def fit_normalization(
    array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), what: str = "image"
) -> NormalizationRecord:
    """Compute the clipping values and statistics of one volume.

    Args:
        array: the volume, any shape, real-valued and finite.
        percentiles: (low, high) clipping percentiles in percent.
        what: name of the volume used in error messages (e.g. its file path).

    Raises:
        ConfigError: invalid percentiles.
        DatasetError: the volume is empty, not real-valued, or holds NaN/inf values.
    """
    low, high = check_percentiles(percentiles)
    arr = _as_float(array, what)
    clip_low, clip_high = (float(v) for v in np.percentile(arr, [low, high]))
    clipped = np.clip(arr, clip_low, clip_high)
    mean = float(clipped.mean(dtype=np.float64))
    std = float(clipped.std(dtype=np.float64))
    if std > 0.0 and clip_high > clip_low:
        z_min, z_max = (clip_low - mean) / std, (clip_high - mean) / std
    else:  # constant (after clipping): everything maps to -1
        std, z_min, z_max = 0.0, 0.0, 0.0
    return NormalizationRecord(METHOD, (low, high), clip_low, clip_high, mean, std, z_min, z_max)


def apply_normalization(array: np.ndarray, record: NormalizationRecord, what: str = "image") -> np.ndarray:
    """Apply ``record`` to ``array``: clip, z-score, scale the clipped z-range to [-1, 1].

    Returns:
        float32 array of the same shape with values in [-1, 1] (all -1 for a constant volume).
    """
    if record.method != METHOD:
        raise ConfigError(f"{what}: normalisation method {record.method!r} is unknown; expected {METHOD!r}.")
    arr = _as_float(array, what)
    if record.std == 0.0 or record.z_max <= record.z_min:
        return np.full(arr.shape, -1.0, dtype=np.float32)
    z = (np.clip(arr, record.clip_low, record.clip_high) - record.mean) / record.std
    out = 2.0 * (z - record.z_min) / (record.z_max - record.z_min) - 1.0
    # Rounding can step a hair outside [-1, 1]; the documented range is exact.
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def normalize_volume(
    array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), what: str = "image"
) -> tuple[np.ndarray, NormalizationRecord]:
    """Fit and apply the normalisation of one volume; returns ``(float32 array, record)``."""
    record = fit_normalization(array, percentiles, what)
    return apply_normalization(array, record, what), record


def _as_float(array: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{what}: expected real-valued intensities, found dtype {arr.dtype}.")
    if arr.size == 0:
        raise DatasetError(f"{what}: expected a non-empty volume, found shape {arr.shape}.")
    # float32 keeps memory at one volume copy; statistics accumulate in float64.
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise DatasetError(f"{what}: expected finite intensities, found {n_bad} NaN/inf voxel(s).")
    return arr
