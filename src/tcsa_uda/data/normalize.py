"""Per-volume intensity normalisation to the network's [-1, 1] input range: three choices.

``prepare --normalization`` picks one (:class:`NormalizationSpec`, recorded in the prepared
index settings and therefore in every checkpoint trained on it):

* ``percentile_zscore`` (default): clip the volume to two of its percentiles, z-score it and
  map the clipped z-range linearly onto [-1, 1]. The SIFA line of cross-modality cardiac work
  clips the brightest 2 % and z-scores each volume; here the percentiles are parameters
  (default 0.5 and 99.5), the z-score uses the mean and standard deviation of the clipped
  volume, and the final map scales ``[(lo - mean) / std, (hi - mean) / std]`` onto ``[-1, 1]``,
  so every normalised volume spans exactly [-1, 1] and -1 is its darkest value.
* ``fixed``: ``out = 2 (x - lo) / (hi - lo) - 1`` with a fixed ``(lo, hi)`` per domain, no
  clipping (values outside ``[lo, hi]`` leave [-1, 1]). This is the map of the SIFA / MPSCL /
  TCSA-UDA releases, applied to volumes that were already z-scored: preset ``sifa`` =
  MR (-1.8, 4.4), CT (-2.8, 3.2) (:data:`FIXED_PRESETS`).
* ``none``: the intensities are used as they are; they must already lie in [-1, 1].

Everything needed to repeat or invert the map of one volume is returned as a record
(:class:`NormalizationRecord`, :class:`FixedRangeRecord` or :class:`IdentityRecord`) and stored per
volume in the prepared index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tcsa_uda.errors import ConfigError, DatasetError

METHOD = "percentile_clip_zscore_to_unit_range"
"""Record name of the ``percentile_zscore`` normalisation of one volume."""
FIXED_METHOD = "fixed_range_to_unit"
"""Record name of the ``fixed`` normalisation of one volume."""
IDENTITY_METHOD = "identity"
"""Record name of the ``none`` normalisation of one volume."""

PERCENTILE_ZSCORE = "percentile_zscore"
FIXED = "fixed"
NONE = "none"
NORMALIZATIONS: tuple[str, ...] = (PERCENTILE_ZSCORE, FIXED, NONE)
"""The choices of ``prepare --normalization``."""

FIXED_PRESETS: dict[str, dict[str, tuple[float, float]]] = {
    # The statistics of the SIFA / PnP-AdaNet preprocessed MM-WHS release, used unchanged by SIFA's
    # data_loader.py / evaluate.py and by the MPSCL and TCSA-UDA evaluations: domain -> (lo, hi).
    "sifa": {"MR": (-1.8, 4.4), "CT": (-2.8, 3.2)},
}
"""Named sets of fixed ``(lo, hi)`` ranges per domain for ``--normalization fixed``."""

UNIT_TOLERANCE = 1e-3
"""How far outside [-1, 1] a value may lie under ``--normalization none`` (float rounding)."""


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


@dataclass(frozen=True)
class NormalizationSpec:
    """The normalisation choice of one ``prepare`` run (one of :data:`NORMALIZATIONS`).

    Attributes:
        method: ``percentile_zscore`` (its percentiles are the separate ``clip_percentiles``
            setting), ``fixed`` or ``none``.
        ranges: for ``fixed``, ``(domain, lo, hi)`` for every domain, sorted by domain; empty
            otherwise.
    """

    method: str = PERCENTILE_ZSCORE
    ranges: tuple[tuple[str, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in NORMALIZATIONS:
            raise ConfigError(
                f"normalization: expected one of {', '.join(map(repr, NORMALIZATIONS))}, found {self.method!r}."
            )
        if self.method != FIXED and self.ranges:
            raise ConfigError(f"normalization {self.method!r}: fixed intensity ranges only apply to 'fixed'.")
        if self.method == FIXED and not self.ranges:
            raise ConfigError("normalization 'fixed': expected an intensity range (lo, hi) per domain, found none.")
        names = [d for d, _, _ in self.ranges]
        if len(set(names)) != len(names):
            raise ConfigError(f"normalization 'fixed': a domain is given two ranges: {names}.")
        for domain, lo, hi in self.ranges:
            check_range((lo, hi), f"intensity range of domain {domain!r}")

    @classmethod
    def fixed(cls, ranges: Mapping[str, tuple[float, float]]) -> NormalizationSpec:
        """A ``fixed`` spec from ``domain -> (lo, hi)``."""
        return cls(FIXED, tuple(sorted((str(d), float(r[0]), float(r[1])) for d, r in ranges.items())))

    def range_for(self, domain: str | None, what: str = "image") -> tuple[float, float]:
        """The ``(lo, hi)`` of ``domain`` under ``fixed``.

        Raises:
            ConfigError: no domain given, or no range recorded for it.
        """
        for name, lo, hi in self.ranges:
            if name == domain:
                return lo, hi
        known = [d for d, _, _ in self.ranges]
        raise ConfigError(
            f"{what}: the fixed normalisation has intensity ranges for domains {known}, not for {domain!r}; "
            "the domain of the volume decides which range applies."
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"method": ...}`` plus ``"ranges": {domain: [lo, hi]}`` for ``fixed`` (index settings)."""
        out: dict[str, Any] = {"method": self.method}
        if self.method == FIXED:
            out["ranges"] = {d: [lo, hi] for d, lo, hi in self.ranges}
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "settings") -> NormalizationSpec:
        """Read :meth:`to_dict`'s mapping; None (settings written before this option) is the default.

        Raises:
            ConfigError: not a mapping, an unknown method or malformed ranges (``source`` named).
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping) or "method" not in data:
            raise ConfigError(f"{source}: normalization: expected a mapping with a 'method', found {data!r}.")
        method = data["method"]
        raw = data.get("ranges")
        try:
            if method != FIXED:
                if raw:
                    raise ConfigError(f"normalization {method!r}: fixed intensity ranges only apply to 'fixed'.")
                return cls(str(method))
            if not isinstance(raw, Mapping):
                raise ConfigError(f"normalization 'fixed': expected 'ranges' {{domain: [lo, hi]}}, found {raw!r}.")
            ranges: dict[str, tuple[float, float]] = {}
            for domain, pair in raw.items():
                if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
                    raise ConfigError(f"normalization 'fixed': expected [lo, hi] for {domain!r}, found {pair!r}.")
                ranges[str(domain)] = check_range((pair[0], pair[1]), f"intensity range of domain {domain!r}")
            return cls.fixed(ranges)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc


def check_range(pair: tuple[Any, Any], what: str = "intensity range") -> tuple[float, float]:
    """Validate ``(lo, hi)``: two finite numbers with ``lo < hi``.

    Raises:
        ConfigError: naming ``what``.
    """
    try:
        lo, hi = (float(v) for v in pair)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: expected two numbers (lo, hi), found {pair!r}.") from exc
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ConfigError(f"{what}: expected finite lo < hi, found ({lo:g}, {hi:g}).")
    return lo, hi


@dataclass(frozen=True)
class FixedRangeRecord:
    """How one volume was normalised under ``fixed``: ``out = 2 * (x - low) / (high - low) - 1``, no clipping.

    Attributes:
        method: :data:`FIXED_METHOD`.
        domain: the domain whose range was used.
        low: the intensity mapped to -1.
        high: the intensity mapped to +1.
    """

    method: str
    domain: str
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IdentityRecord:
    """How one volume was normalised under ``none``: not at all (values checked to lie in [-1, 1]).

    Attributes:
        method: :data:`IDENTITY_METHOD`.
        low: the smallest value of the volume.
        high: the largest value of the volume.
    """

    method: str
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


AnyNormalizationRecord = NormalizationRecord | FixedRangeRecord | IdentityRecord
"""The record of one volume under any of the three choices."""


def record_from_dict(data: dict[str, Any]) -> AnyNormalizationRecord:
    """Rebuild a record written by ``to_dict`` (dispatching on its ``method``).

    Raises:
        ConfigError: an unknown method.
    """
    method = data.get("method")
    if method == METHOD:
        return NormalizationRecord.from_dict(data)
    if method == FIXED_METHOD:
        return FixedRangeRecord(FIXED_METHOD, str(data["domain"]), float(data["low"]), float(data["high"]))
    if method == IDENTITY_METHOD:
        return IdentityRecord(IDENTITY_METHOD, float(data["low"]), float(data["high"]))
    raise ConfigError(
        f"normalisation record: method {method!r} is unknown; expected {METHOD!r}, {FIXED_METHOD!r} or "
        f"{IDENTITY_METHOD!r}."
    )


def apply_fixed_range(array: np.ndarray, low: float, high: float, what: str = "image") -> np.ndarray:
    """``2 * (x - low) / (high - low) - 1`` in float64, returned as float32; no clipping.

    Raises:
        ConfigError: ``low >= high``.
        DatasetError: not real-valued, empty, or non-finite values.
    """
    lo, hi = check_range((low, high), f"{what}: fixed intensity range")
    arr = _as_float(array, what).astype(np.float64)
    return (2.0 * (arr - lo) / (hi - lo) - 1.0).astype(np.float32)


def invert_fixed_range(array: np.ndarray, low: float, high: float, what: str = "image") -> np.ndarray:
    """The inverse of :func:`apply_fixed_range`: ``(x + 1) / 2 * (high - low) + low`` as float32."""
    lo, hi = check_range((low, high), f"{what}: fixed intensity range")
    arr = _as_float(array, what).astype(np.float64)
    return ((arr + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)


def normalize_volume(
    array: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5), what: str = "image"
) -> tuple[np.ndarray, NormalizationRecord]:
    """Fit and apply the ``percentile_zscore`` normalisation of one volume; returns ``(float32 array, record)``."""
    record = fit_normalization(array, percentiles, what)
    return apply_normalization(array, record, what), record


def normalize_with(
    array: np.ndarray,
    spec: NormalizationSpec,
    domain: str | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    what: str = "image",
) -> tuple[np.ndarray, AnyNormalizationRecord]:
    """Normalise one volume as ``spec`` says; returns ``(float32 array, record)``.

    Args:
        array: the volume, any shape, real-valued and finite.
        spec: the choice (:class:`NormalizationSpec`).
        domain: the volume's domain; picks the range under ``fixed``.
        percentiles: the clipping percentiles of ``percentile_zscore``.
        what: name of the volume in error messages (its file path).

    Raises:
        ConfigError: invalid percentiles, or ``fixed`` without a range for ``domain``.
        DatasetError: an invalid volume, or values outside [-1, 1] under ``none``.
    """
    if spec.method == FIXED:
        lo, hi = spec.range_for(domain, what)
        return apply_fixed_range(array, lo, hi, what), FixedRangeRecord(FIXED_METHOD, str(domain), lo, hi)
    if spec.method == NONE:
        arr = _as_float(array, what)
        low, high = float(arr.min()), float(arr.max())
        if low < -1.0 - UNIT_TOLERANCE or high > 1.0 + UNIT_TOLERANCE:
            raise DatasetError(
                f"{what}: --normalization none expects intensities already in [-1, 1], found [{low:.4g}, {high:.4g}]; "
                "use 'fixed' (z-scored data with known ranges) or 'percentile_zscore'."
            )
        return np.array(arr, dtype=np.float32, copy=True), IdentityRecord(IDENTITY_METHOD, low, high)
    return normalize_volume(array, percentiles, what)


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
