"""evaluation stage of tcsa-uda: audited metrics (Dice, ASSD, HD95) and their accumulation."""

from tcsa_uda.evaluation.metrics import (
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
from tcsa_uda.evaluation.metrics_surface import (
    ASSD_VARIANTS,
    HD_VARIANTS,
    MetricInputError,
    SurfaceDistances,
    assd_from_distances,
    hd_percentile_from_distances,
    surface_distances,
    surface_voxels,
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
