"""Audited segmentation metrics (Dice, ASSD, HD95) and their accumulation over cases.

Pure NumPy/SciPy, below the engine and the evaluation stage so both can use them: the training
engine scores label-free selection with :func:`dice`, the evaluator computes every metric per
volume (docs/evaluation.md).
"""

from tcsa_uda.metrics.surface import (
    ASSD_VARIANTS,
    HD_VARIANTS,
    MetricInputError,
    SurfaceDistances,
    assd_from_distances,
    hd_percentile_from_distances,
    surface_distances,
    surface_voxels,
)
from tcsa_uda.metrics.volume import (
    EMPTY_POLICIES,
    CaseMetrics,
    EmptyPolicy,
    MetricAccumulator,
    assd,
    check_spacing,
    compute_case_metrics,
    dice,
    hd95,
    metric_names,
    resolve_empty_policy,
)

__all__ = [
    "ASSD_VARIANTS",
    "EMPTY_POLICIES",
    "HD_VARIANTS",
    "CaseMetrics",
    "EmptyPolicy",
    "MetricAccumulator",
    "MetricInputError",
    "SurfaceDistances",
    "assd",
    "assd_from_distances",
    "check_spacing",
    "compute_case_metrics",
    "dice",
    "hd95",
    "hd_percentile_from_distances",
    "metric_names",
    "resolve_empty_policy",
    "surface_distances",
    "surface_voxels",
]
