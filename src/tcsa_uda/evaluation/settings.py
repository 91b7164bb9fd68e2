"""Evaluation settings: every choice that changes an evaluation number, and scoring one volume with them.

Metric set (Dice only or all), distance units (mm, voxels or both), the ASSD definition shown in
tables, the HD95 definition, the missing-structure policy, the tail policy (slices a released
evaluation never predicted), and named parity presets that reproduce the conventions of
published evaluations (docs/evaluation.md):

* ``sifa``: the metric conventions of the SIFA-era papers on a whole-volume prediction: ASSD in
  voxels, mean of the two directed means (medpy's ``assd``), a missing structure scored ASSD 1
  (the MPSCL rule), Dice of two empty masks undefined (NaN), every slice predicted. It reproduces
  no released script exactly: SIFA's ``evaluate.py`` predicts in batches of 128 slices and leaves
  the last ``D mod 128`` as background, and it stops on a missing structure.
* ``mpscl``: the released MPSCL / TCSA-UDA evaluation (``eval_UDA.py``) exactly: the same ASSD,
  ASSD 1 when either mask is empty, Dice 0 when both are, and slices predicted in batches of 32
  with the last ``D mod 32`` slices of each volume left as background but still scored
  (``tail_policy = released_batch32``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcsa_uda.errors import ConfigError
from tcsa_uda.metrics.surface import ASSD_VARIANTS, check_option
from tcsa_uda.metrics.volume import HD_VARIANTS, CaseMetrics, compute_case_metrics, dice, resolve_empty_policy

METRIC_SETS: tuple[str, ...] = ("dice", "all")
"""``dice``: Dice only (fast). ``all``: Dice, ASSD (both variants) and HD95."""

UNITS: tuple[str, ...] = ("mm", "vox", "both")
"""Distance units: ``mm`` (spacing from the affine), ``vox`` (evaluated grid), or both."""

TAIL_POLICIES: dict[str, int | None] = {"none": None, "released_batch32": 32}
"""Slices a released evaluation leaves unpredicted: ``none`` (every slice predicted) or
``released_batch32`` (batches of 32; the last ``D mod 32`` slices along the slicing axis are
background in the prediction and stay in the scored volume). Value: the batch size."""

PARITY_PRESETS: dict[str, dict[str, str]] = {
    # SIFA-era metric conventions on whole-volume predictions (module docstring): no script's exact output.
    "sifa": {"units": "vox", "assd_variant": "mean_of_means", "empty_policy": "sifa_mpscl", "tail_policy": "none"},
    # The released MPSCL / TCSA-UDA eval_UDA.py, tail of D mod 32 unpredicted slices included.
    "mpscl": {
        "units": "vox",
        "assd_variant": "mean_of_means",
        "empty_policy": "mpscl",
        "tail_policy": "released_batch32",
    },
}


@dataclass(frozen=True)
class EvalSettings:
    """Every choice that changes an evaluation number (see docs/evaluation.md).

    Attributes:
        metrics: ``dice`` or ``all`` (:data:`METRIC_SETS`).
        units: ``mm``, ``vox`` or ``both`` (:data:`UNITS`); ``dice`` is unit-free.
        assd_variant: the ASSD definition shown in the summary tables (the CSV/JSON hold both).
        empty_policy: missing-structure policy, a name in ``EMPTY_POLICIES``.
        parity: the parity preset these settings come from, or None.
        tail_policy: a name in :data:`TAIL_POLICIES`; applies to model predictions only.
        hd95_variant: the HD95 definition, ``max_directed`` (MONAI; metric ``hd95_<unit>``) or
            ``pooled`` (medpy; metric ``hd95_<unit>_pooled``), :data:`~tcsa_uda.metrics.volume.HD_VARIANTS`.
    """

    metrics: str = "all"
    units: str = "mm"
    assd_variant: str = "pooled"
    empty_policy: str = "nan"
    parity: str | None = None
    tail_policy: str = "none"
    hd95_variant: str = "max_directed"

    def __post_init__(self) -> None:
        check_option(self.metrics, METRIC_SETS, "metrics")
        check_option(self.units, UNITS, "units")
        check_option(self.assd_variant, ASSD_VARIANTS, "assd_variant")
        resolve_empty_policy(self.empty_policy)
        check_option(self.tail_policy, tuple(TAIL_POLICIES), "tail_policy")
        if self.parity is not None:
            check_option(self.parity, tuple(PARITY_PRESETS), "parity")
        check_option(self.hd95_variant, HD_VARIANTS, "hd95_variant")

    @property
    def table_unit(self) -> str:
        """The distance unit shown in tables: ``vox`` for ``units=vox``, else ``mm``."""
        return "vox" if self.units == "vox" else "mm"

    @property
    def table_assd_metric(self) -> str | None:
        """The ASSD column of the tables (e.g. ``assd_mm_pooled``), None for Dice only."""
        return None if self.metrics == "dice" else f"assd_{self.table_unit}_{self.assd_variant}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "units": self.units,
            "assd_variant": self.assd_variant,
            "empty_policy": self.empty_policy,
            "parity": self.parity,
            "tail_policy": self.tail_policy,
            "hd95_variant": self.hd95_variant,
        }


def apply_tail_policy(labels: np.ndarray, axis: int, policy: str) -> tuple[np.ndarray, int]:
    """Set to background the slices a released evaluation would not have predicted.

    Under ``released_batch32`` the slices along ``axis`` (the slicing axis of the prediction)
    are predicted in batches of 32 and only ``32 * floor(D / 32)`` of the ``D`` slices are; the
    last ``D mod 32`` stay background in the prediction while the ground truth keeps them.

    Args:
        labels: (X, Y, Z) predicted label map.
        axis: the array axis the volume was sliced along.
        policy: a name in :data:`TAIL_POLICIES`.

    Returns:
        ``(labels, n)``: a copy with the tail set to 0 (``labels`` itself for ``none``) and the
        number ``n`` of tail slices.
    """
    batch = TAIL_POLICIES[check_option(policy, tuple(TAIL_POLICIES), "tail_policy")]
    if batch is None:
        return labels, 0
    depth = labels.shape[axis]
    tail = depth % batch
    if not tail:
        return labels, 0
    out = np.array(labels, copy=True)
    index: list[slice] = [slice(None)] * out.ndim
    index[axis] = slice(depth - tail, depth)
    out[tuple(index)] = 0
    return out, tail


def resolve_settings(
    metrics: str = "all",
    units: str | None = None,
    assd_variant: str | None = None,
    empty_policy: str | None = None,
    parity: str | None = None,
    tail_policy: str | None = None,
    hd95_variant: str | None = None,
) -> EvalSettings:
    """Combine explicit options with a parity preset; defaults mm, pooled, nan, no tail, HD95 max_directed.

    Raises:
        ConfigError: an unknown value, or an explicit option that contradicts the preset.
    """
    given = {"units": units, "assd_variant": assd_variant, "empty_policy": empty_policy, "tail_policy": tail_policy}
    values = {"units": "mm", "assd_variant": "pooled", "empty_policy": "nan", "tail_policy": "none"}
    if parity is not None:
        preset = PARITY_PRESETS[check_option(parity, tuple(PARITY_PRESETS), "parity")]
        for key, value in given.items():
            if value is not None and value != preset[key]:
                raise ConfigError(
                    f"{key}={value!r} contradicts --parity {parity} (which uses {key}={preset[key]!r}); "
                    f"drop one of the two options."
                )
        values.update(preset)
    values.update({k: v for k, v in given.items() if v is not None})
    return EvalSettings(metrics=metrics, parity=parity, hd95_variant=hd95_variant or "max_directed", **values)


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    class_ids: Sequence[int],
    spacing: Sequence[float] | None,
    settings: EvalSettings,
) -> CaseMetrics:
    """The metrics of one volume as ``settings`` ask.

    Args:
        pred: (X, Y, Z) integer predicted label map.
        gt: (X, Y, Z) integer ground truth on the same grid.
        class_ids: foreground classes to score.
        spacing: voxel size in mm along the array axes (used for ``mm`` units).
        settings: metrics, units, empty policy and HD95 variant.

    Returns:
        class id -> metric name -> value: ``dice``, then the ``mm`` metrics, then the ``vox``
        metrics (names as :func:`~tcsa_uda.metrics.volume.metric_names`).
    """
    if settings.metrics == "dice":
        return {c: {"dice": dice(pred == c, gt == c, settings.empty_policy)} for c in class_ids}
    out: CaseMetrics = {c: {} for c in class_ids}
    units = ("mm", "vox") if settings.units == "both" else (settings.units,)
    for unit in units:
        part = compute_case_metrics(
            pred,
            gt,
            class_ids,
            spacing=spacing if unit == "mm" else None,
            empty_policy=settings.empty_policy,
            hd95_variant=settings.hd95_variant,
        )
        for c in class_ids:
            out[c].update(part[c])
    return out
