"""Audited segmentation metrics: Dice, ASSD (two definitions), HD95, and an accumulator.

Pure functions on one volume plus :class:`MetricAccumulator` over volumes, in the manner of
MONAI (``compute_dice`` / ``DiceMetric``). Every choice that changes a number is an argument
and is written into the metric name or the policy: distance unit (``mm`` with a spacing,
``vox`` without), ASSD definition (``pooled`` | ``mean_of_means``), HD95 definition
(``max_directed`` as MONAI | ``pooled`` as medpy) and the handling of a missing structure
(:class:`EmptyPolicy`). Conventions are documented in docs/evaluation.md and in
:mod:`tcsa_uda.metrics.surface`.

Reference: the evaluation of the SIFA / MPSCL / TCSA-UDA family (arXiv 2511.05782): per test
volume and foreground class, 3D Dice and ASSD, reported as mean (std) over volumes and the mean
over classes.

Example::

    m = compute_case_metrics(pred, gt, class_ids=[1, 2, 3, 4], spacing=(1.0, 1.0, 1.0))
    acc = MetricAccumulator(class_names={1: "AA", 2: "LAC", 3: "LVC", 4: "MYO"})
    acc.add("ct_1003", m)
    acc.summary()["class_mean"]["dice"]["mean"]
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcsa_uda.atomic import atomic_write_json, atomic_write_text
from tcsa_uda.errors import ConfigError
from tcsa_uda.metrics.surface import (
    ASSD_DEFINITIONS,
    ASSD_VARIANTS,
    HD_DEFINITIONS,
    HD_VARIANTS,
    MetricInputError,
    Spacing,
    SurfaceDistances,
    assd_from_distances,
    check_option,
    hd_percentile_from_distances,
    surface_distances,
)

CaseMetrics = dict[int, dict[str, float]]
"""Metrics of one volume: class id -> metric name -> value."""

NAN = float("nan")


# --------------------------------------------------------------------------- empty policy


@dataclass(frozen=True)
class EmptyPolicy:
    """What a metric is when the prediction and/or the ground truth of a class is empty.

    Attributes:
        name: label written into reports.
        distance_value: ASSD and HD95 when either mask is empty. NaN (default policy) marks the
            value undefined: it is left out of means and counted in the summary.
        dice_both_empty: Dice when both masks are empty (NaN by default; 1.0 is the other common
            choice). Dice with exactly one empty mask is always 0.
    """

    name: str
    distance_value: float = NAN
    dice_both_empty: float = NAN

    def __post_init__(self) -> None:
        if not (math.isnan(self.distance_value) or self.distance_value >= 0.0):
            raise ConfigError(f"EmptyPolicy.distance_value: expected NaN or >= 0, found {self.distance_value!r}.")
        if not (math.isnan(self.dice_both_empty) or 0.0 <= self.dice_both_empty <= 1.0):
            raise ConfigError(
                f"EmptyPolicy.dice_both_empty: expected NaN or a value in [0, 1], found {self.dice_both_empty!r}."
            )


EMPTY_POLICIES: dict[str, EmptyPolicy] = {
    # Undefined values are NaN, excluded from means and counted (the default of this project).
    "nan": EmptyPolicy("nan"),
    # ASSD = 1 for a missing structure as the MPSCL line of released evaluations, but Dice of two empty
    # masks left undefined (NaN): the conventions of the `sifa` parity preset.
    "sifa_mpscl": EmptyPolicy("sifa_mpscl", distance_value=1.0),
    # Exactly the released MPSCL / TCSA-UDA evaluation (medpy inside a bare try/except): ASSD = 1 when
    # either mask is empty, Dice = 0 when both are (medpy's dc).
    "mpscl": EmptyPolicy("mpscl", distance_value=1.0, dice_both_empty=0.0),
    # ASSD = 100 for a missing structure: parity with ADR.
    "adr": EmptyPolicy("adr", distance_value=100.0),
}


def resolve_empty_policy(policy: str | EmptyPolicy) -> EmptyPolicy:
    """Return the :class:`EmptyPolicy` named ``policy`` (or ``policy`` itself).

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    if isinstance(policy, EmptyPolicy):
        return policy
    if not isinstance(policy, str) or policy not in EMPTY_POLICIES:
        raise ConfigError(f"empty_policy: expected one of {', '.join(map(repr, EMPTY_POLICIES))}, found {policy!r}.")
    return EMPTY_POLICIES[policy]


# --------------------------------------------------------------------------- validation


def _check_3d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 3:
        raise MetricInputError(f"{name}: expected a 3D array (X, Y, Z), found {arr.ndim}D of shape {arr.shape}.")


def _as_mask(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        raise MetricInputError(
            f"{name}: expected a boolean mask, found dtype {arr.dtype}; compare labels (== c) first."
        )
    _check_3d(arr, name)
    return arr


def _as_labels(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise MetricInputError(
            f"{name}: expected an integer label map, found dtype {arr.dtype}; round/cast labels explicitly first."
        )
    _check_3d(arr, name)
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise MetricInputError(f"{names[0]} and {names[1]} must have the same shape, found {a.shape} and {b.shape}.")


def check_spacing(spacing: Sequence[float] | None) -> Spacing | None:
    """Validate a voxel spacing: None (voxel units) or three finite positive numbers (mm).

    Raises:
        MetricInputError: wrong length, a non-number, or a value that is not finite and > 0.
    """
    if spacing is None:
        return None
    values = tuple(spacing)
    if len(values) != 3:
        raise MetricInputError(f"spacing: expected 3 values (one per axis), found {len(values)}: {spacing!r}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise MetricInputError(f"spacing: expected numbers, found {v!r} in {spacing!r}.")
        if not (math.isfinite(float(v)) and float(v) > 0.0):
            raise MetricInputError(f"spacing: expected finite values > 0, found {v!r} in {spacing!r}.")
        out.append(float(v))
    return (out[0], out[1], out[2])


def _check_class_ids(class_ids: Sequence[int]) -> list[int]:
    ids = list(class_ids)
    if not ids:
        raise MetricInputError("class_ids: expected at least one class id, found an empty list.")
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise MetricInputError(f"class_ids: expected integers, found {c!r} in {class_ids!r}.")
    if len(set(ids)) != len(ids):
        raise MetricInputError(f"class_ids: expected distinct ids, found {class_ids!r}.")
    return [int(c) for c in ids]


# --------------------------------------------------------------------------- per-mask metrics


def dice(pred: np.ndarray, gt: np.ndarray, empty_policy: str | EmptyPolicy = "nan") -> float:
    """Dice coefficient 2|P & G| / (|P| + |G|) of two boolean masks.

    Args:
        pred: (X, Y, Z) bool.
        gt: (X, Y, Z) bool, same shape.
        empty_policy: gives the value when both masks are empty (``dice_both_empty``, NaN by
            default). Exactly one empty mask gives 0.

    Raises:
        MetricInputError: not boolean, not 3D, or shapes differ.
    """
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _check_same_shape(pred, gt, ("pred", "gt"))
    return _dice(pred, gt, resolve_empty_policy(empty_policy))


def _dice(pred: np.ndarray, gt: np.ndarray, policy: EmptyPolicy) -> float:
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return float(policy.dice_both_empty)
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


def _distances_or_none(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None, connectivity: int
) -> SurfaceDistances | None:
    """Validated distance sets, or None when a mask is empty (the policy decides the value)."""
    pred, gt = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _check_same_shape(pred, gt, ("pred", "gt"))
    sp = check_spacing(spacing)
    if not pred.any() or not gt.any():
        return None
    return surface_distances(pred, gt, sp, connectivity)


def assd(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    variant: str = "pooled",
    empty_policy: str | EmptyPolicy = "nan",
    connectivity: int = 1,
) -> float:
    """Average symmetric surface distance of two boolean masks.

    Args:
        pred: (X, Y, Z) bool.
        gt: (X, Y, Z) bool, same shape.
        spacing: voxel size per axis in mm; None gives voxel units.
        variant: ``"pooled"`` (equals MONAI ``compute_average_surface_distance(symmetric=True)``)
            or ``"mean_of_means"`` (older medpy, SIFA-era papers).
        empty_policy: value when either mask is empty (``distance_value``).
        connectivity: surface erosion connectivity (1 = MONAI/medpy cross, 3 = full cube).

    Raises:
        MetricInputError: invalid masks or spacing.
        ConfigError: unknown variant, policy or connectivity.
    """
    check_option(variant, ASSD_VARIANTS, "assd variant")
    policy = resolve_empty_policy(empty_policy)
    d = _distances_or_none(pred, gt, spacing, connectivity)
    return policy.distance_value if d is None else assd_from_distances(d, variant)


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | None = None,
    variant: str = "max_directed",
    empty_policy: str | EmptyPolicy = "nan",
    connectivity: int = 1,
) -> float:
    """95th-percentile Hausdorff distance of two boolean masks.

    Args:
        pred: (X, Y, Z) bool.
        gt: (X, Y, Z) bool, same shape.
        spacing: voxel size per axis in mm; None gives voxel units.
        variant: ``"max_directed"`` (default; equals MONAI ``compute_hausdorff_distance(
            percentile=95)``) or ``"pooled"`` (medpy ``hd95``).
        empty_policy: value when either mask is empty (``distance_value``).
        connectivity: surface erosion connectivity (1 = MONAI/medpy cross, 3 = full cube).

    Raises:
        MetricInputError: invalid masks or spacing.
        ConfigError: unknown variant, policy or connectivity.
    """
    check_option(variant, HD_VARIANTS, "hd95 variant")
    policy = resolve_empty_policy(empty_policy)
    d = _distances_or_none(pred, gt, spacing, connectivity)
    return policy.distance_value if d is None else hd_percentile_from_distances(d, 95.0, variant)


# --------------------------------------------------------------------------- per-case metrics


def metric_names(
    spacing_given: bool, assd_variants: Sequence[str] = ASSD_VARIANTS, hd95_variant: str = "max_directed"
) -> list[str]:
    """Names of the metrics :func:`compute_case_metrics` returns, in order.

    ``dice``, then ``assd_<unit>_<variant>`` per ASSD variant, then ``hd95_<unit>`` (MONAI-style
    max_directed) or ``hd95_<unit>_pooled``; ``<unit>`` is ``mm`` with a spacing, ``vox`` without.
    """
    check_option(hd95_variant, HD_VARIANTS, "hd95_variant")
    unit = "mm" if spacing_given else "vox"
    hd_name = f"hd95_{unit}" if hd95_variant == "max_directed" else f"hd95_{unit}_{hd95_variant}"
    return ["dice", *(f"assd_{unit}_{v}" for v in assd_variants), hd_name]


def parse_metric_name(name: str) -> tuple[str, str | None, str | None]:
    """``(kind, unit, variant)`` of a metric name of :func:`metric_names`.

    ``dice`` -> ``("dice", None, None)``; ``assd_mm_pooled`` -> ``("assd", "mm", "pooled")``;
    ``hd95_vox`` -> ``("hd95", "vox", "max_directed")`` (the default variant has no suffix);
    ``hd95_mm_pooled`` -> ``("hd95", "mm", "pooled")``.

    Raises:
        MetricInputError: a name that :func:`metric_names` never produces.
    """
    if name == "dice":
        return "dice", None, None
    kind, _, rest = name.partition("_")
    unit, _, variant = rest.partition("_")
    if unit in ("mm", "vox"):
        if kind == "assd" and variant in ASSD_VARIANTS:
            return kind, unit, variant
        if kind == "hd95" and (variant in HD_VARIANTS[1:] or variant == ""):
            return kind, unit, variant or HD_VARIANTS[0]
    raise MetricInputError(
        f"metric name: expected dice, assd_<mm|vox>_<{'|'.join(ASSD_VARIANTS)}> or hd95_<mm|vox>[_pooled], "
        f"found {name!r}."
    )


def metric_definition(name: str) -> str:
    """The definition of a metric name, with its unit and variant (written into outputs).

    Raises:
        MetricInputError: an unknown metric name.
    """
    kind, unit, variant = parse_metric_name(name)
    if kind == "dice":
        return "Dice coefficient 2|P & G| / (|P| + |G|)"
    units = "mm" if unit == "mm" else "voxels"
    if kind == "assd":
        return f"ASSD in {units}, {variant}: {ASSD_DEFINITIONS[str(variant)]}"
    return f"HD95 in {units}, {variant}: {HD_DEFINITIONS[str(variant)]}"


def compute_case_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    class_ids: Sequence[int],
    spacing: Sequence[float] | None = None,
    assd_variants: Sequence[str] = ("pooled", "mean_of_means"),
    empty_policy: str | EmptyPolicy = "nan",
    hd95_variant: str = "max_directed",
    connectivity: int = 1,
) -> CaseMetrics:
    """Dice, ASSD and HD95 of every requested class of one volume.

    The surface distances of a class are computed once and reduced to every requested variant.

    Args:
        pred_labels: (X, Y, Z) integer label map predicted for the whole volume.
        gt_labels: (X, Y, Z) integer ground-truth label map on the same grid.
        class_ids: classes to evaluate (usually the foreground ids of dataset.json).
        spacing: voxel size along the array axes in mm (e.g. ``Volume.spacing``); None gives
            distances in voxels and metric names with ``vox``.
        assd_variants: subset of ``("pooled", "mean_of_means")``, at least one.
        empty_policy: name in :data:`EMPTY_POLICIES` or an :class:`EmptyPolicy`.
        hd95_variant: ``"max_directed"`` (MONAI) or ``"pooled"`` (medpy).
        connectivity: surface erosion connectivity (1 = MONAI/medpy cross, 3 = full cube).

    Returns:
        class id -> metric name -> value; names as :func:`metric_names`.

    Raises:
        MetricInputError: arrays not 3D integer label maps of equal shape, bad spacing or class ids.
        ConfigError: unknown variant, policy or connectivity.
    """
    pred_labels, gt_labels = _as_labels(pred_labels, "pred_labels"), _as_labels(gt_labels, "gt_labels")
    _check_same_shape(pred_labels, gt_labels, ("pred_labels", "gt_labels"))
    ids = _check_class_ids(class_ids)
    sp = check_spacing(spacing)
    variants = list(assd_variants)
    if not variants or len(set(variants)) != len(variants):
        raise ConfigError(f"assd_variants: expected distinct names from {ASSD_VARIANTS}, found {assd_variants!r}.")
    for v in variants:
        check_option(v, ASSD_VARIANTS, "assd_variants")
    check_option(hd95_variant, HD_VARIANTS, "hd95_variant")
    policy = resolve_empty_policy(empty_policy)
    names = metric_names(sp is not None, variants, hd95_variant)

    out: CaseMetrics = {}
    for c in ids:
        pred, gt = pred_labels == c, gt_labels == c
        values = [_dice(pred, gt, policy)]
        if pred.any() and gt.any():
            d = surface_distances(pred, gt, sp, connectivity)
            values += [assd_from_distances(d, v) for v in variants]
            values.append(hd_percentile_from_distances(d, 95.0, hd95_variant))
        else:
            values += [policy.distance_value] * (len(variants) + 1)
        out[c] = dict(zip(names, values, strict=True))
    return out


# --------------------------------------------------------------------------- accumulator


def _stats(values: np.ndarray, ddof: int) -> dict[str, float | int]:
    """NaN-aware mean/std of a 1D array, with the counts of defined and NaN values."""
    valid = values[~np.isnan(values)]
    n = int(valid.size)
    mean = float(valid.mean()) if n else NAN
    std = float(valid.std(ddof=ddof)) if n - ddof > 0 else NAN
    return {"mean": mean, "std": std, "n": n, "n_nan": int(values.size - n)}


def _json_safe(obj: Any) -> Any:
    """Replace NaN by None (JSON has no NaN) and mapping keys by strings."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


class MetricAccumulator:
    """Collects :func:`compute_case_metrics` results over volumes and summarises them.

    Every case must report the same classes and metric names (checked in :meth:`add`), so each
    summary statistic is over the same set of volumes and the NaN counts are comparable.

    Args:
        class_names: optional class id -> name, written into rows and files.
        meta: optional settings to record in the JSON file (e.g. spacing unit, empty policy,
            checkpoint selection); stored verbatim.
    """

    def __init__(self, class_names: Mapping[int, str] | None = None, meta: Mapping[str, Any] | None = None) -> None:
        self.class_names: dict[int, str] = {int(k): str(v) for k, v in (class_names or {}).items()}
        self.meta: dict[str, Any] = dict(meta or {})
        self._cases: dict[str, CaseMetrics] = {}
        self._class_ids: list[int] | None = None
        self._metric_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def case_ids(self) -> list[str]:
        """Case ids in the order they were added."""
        return list(self._cases)

    @property
    def class_ids(self) -> list[int]:
        """Class ids of the first added case (all cases have the same)."""
        return list(self._class_ids or [])

    @property
    def metric_names(self) -> list[str]:
        """Metric names of the first added case (all cases have the same)."""
        return list(self._metric_names or [])

    def add(self, case_id: str, metrics: Mapping[int, Mapping[str, float]]) -> None:
        """Record the metrics of one volume.

        Raises:
            MetricInputError: empty or repeated ``case_id``, no classes, classes or metric names
                that differ from the first case, or a value that is not a number.
        """
        if not isinstance(case_id, str) or not case_id:
            raise MetricInputError(f"case_id: expected a non-empty string, found {case_id!r}.")
        if case_id in self._cases:
            raise MetricInputError(f"case_id {case_id!r}: already added; each volume is evaluated once.")
        if not metrics:
            raise MetricInputError(f"case {case_id!r}: expected metrics for at least one class, found none.")
        class_ids = [int(c) for c in metrics]
        first = next(iter(metrics.values()))
        names = list(first)
        if self._class_ids is not None and class_ids != self._class_ids:
            raise MetricInputError(
                f"case {case_id!r}: expected classes {self._class_ids} as earlier cases, found {class_ids}."
            )
        expected_names = self._metric_names if self._metric_names is not None else names
        record: CaseMetrics = {}
        for c, per_class in metrics.items():
            if list(per_class) != expected_names:
                raise MetricInputError(
                    f"case {case_id!r}, class {c}: expected metrics {expected_names}, found {list(per_class)}."
                )
            row: dict[str, float] = {}
            for name, value in per_class.items():
                if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                    raise MetricInputError(f"case {case_id!r}, class {c}, {name}: expected a number, found {value!r}.")
                row[name] = float(value)
            record[int(c)] = row
        self._cases[case_id] = record
        self._class_ids, self._metric_names = class_ids, expected_names

    @property
    def hd95_variants(self) -> dict[str, str]:
        """HD95 metric name -> the variant it was computed with (``max_directed`` or ``pooled``)."""
        out: dict[str, str] = {}
        for name in self.metric_names:
            kind, _, variant = parse_metric_name(name)
            if kind == "hd95" and variant is not None:
                out[name] = variant
        return out

    @property
    def hd95_variant(self) -> str | None:
        """The HD95 variant of the recorded metrics; None without HD95.

        Raises:
            MetricInputError: the recorded metrics mix both variants (name both in tables then).
        """
        variants = sorted(set(self.hd95_variants.values()))
        if len(variants) > 1:
            raise MetricInputError(f"hd95 variant: the recorded metrics mix {variants}; report them by metric name.")
        return variants[0] if variants else None

    def metric_definitions(self) -> dict[str, str]:
        """Metric name -> its definition (:func:`metric_definition`), in metric order."""
        return {name: metric_definition(name) for name in self.metric_names}

    def values(self, class_id: int, metric: str) -> np.ndarray:
        """(n_cases,) float64 values of one class and metric, in case order (NaN kept)."""
        if class_id not in (self._class_ids or []):
            raise MetricInputError(f"class_id: expected one of {self._class_ids}, found {class_id!r}.")
        if metric not in (self._metric_names or []):
            raise MetricInputError(f"metric: expected one of {self._metric_names}, found {metric!r}.")
        return np.array([case[class_id][metric] for case in self._cases.values()], dtype=np.float64)

    def to_rows(self) -> list[dict[str, Any]]:
        """Long format: one row per (case, class) with ``case``, ``class``, [``class_name``], metrics."""
        rows = []
        for case_id, record in self._cases.items():
            for c, per_class in record.items():
                row: dict[str, Any] = {"case": case_id, "class": c}
                if self.class_names:
                    row["class_name"] = self.class_names.get(c, str(c))
                row.update(per_class)
                rows.append(row)
        return rows

    def summary(self, ddof: int = 0) -> dict[str, Any]:
        """Per-class mean/std over volumes and the mean over classes, NaN-aware.

        Args:
            ddof: delta degrees of freedom of the std (0 = population std, as ``numpy.std`` in the
                released evaluations; 1 = sample std).

        Returns:
            ``{"n_cases": int, "classes": {class_id: {metric: stats}}, "class_mean": {metric:
            stats}}`` where stats = ``{"mean", "std", "n", "n_nan"}``. Per class: over volumes,
            NaN values excluded from mean/std and counted in ``n_nan``. ``class_mean``: ``mean`` is
            the mean over classes of the per-class means (the paper's "average" column; NaN if a
            class has no defined value); ``std``, ``n`` and ``n_nan`` are over the per-volume class
            averages of the volumes where every class is defined (``n_nan`` counts the others).
        """
        if self._class_ids is None or self._metric_names is None:
            raise MetricInputError("summary: no case has been added.")
        classes: dict[int, dict[str, dict[str, float | int]]] = {}
        class_mean: dict[str, dict[str, float | int]] = {}
        for metric in self._metric_names:
            table = np.stack([self.values(c, metric) for c in self._class_ids], axis=1)  # (n_cases, n_classes)
            per_class = {c: _stats(table[:, j], ddof) for j, c in enumerate(self._class_ids)}
            for c, stats in per_class.items():
                classes.setdefault(c, {})[metric] = stats
            means = [float(s["mean"]) for s in per_class.values()]
            per_volume = table.mean(axis=1)  # NaN where any class of that volume is undefined
            stats = _stats(per_volume, ddof)
            stats["mean"] = NAN if any(math.isnan(m) for m in means) else float(np.mean(means))
            class_mean[metric] = stats
        return {"n_cases": len(self._cases), "classes": classes, "class_mean": class_mean}

    def to_csv(self, path: str | os.PathLike[str], hd95_variant_column: bool = False) -> None:
        """Write :meth:`to_rows` as CSV atomically (NaN written as ``nan``).

        Args:
            path: destination file.
            hd95_variant_column: add a last column ``hd95_variant`` (``max_directed`` or
                ``pooled``) when an HD95 metric is recorded, so the file says which definition
                its HD95 values follow.
        """
        rows = self.to_rows()
        if not rows:
            raise MetricInputError(f"{path}: no case has been added, nothing to write.")
        variant = self.hd95_variant if hd95_variant_column else None
        if variant is not None:
            rows = [{**row, "hd95_variant": variant} for row in rows]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        atomic_write_text(path, buf.getvalue())

    def to_json(self, path: str | os.PathLike[str], ddof: int = 0) -> None:
        """Write the results as JSON atomically (NaN -> null).

        Keys: ``meta``, ``class_names``, ``metric_definitions`` (metric name -> definition, unit
        and variant), ``hd95_variants`` (HD95 metric name -> ``max_directed`` | ``pooled``),
        ``rows`` and ``summary``.
        """
        payload = {
            "meta": self.meta,
            "class_names": self.class_names,
            "metric_definitions": self.metric_definitions(),
            "hd95_variants": self.hd95_variants,
            "rows": self.to_rows(),
            "summary": self.summary(ddof=ddof),
        }
        atomic_write_json(path, _json_safe(payload))
