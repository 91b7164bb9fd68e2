"""Surface distances between two binary masks, and the ASSD / HD95 reductions of them.

This is the distance core of :mod:`tcsa_uda.metrics.volume`: it assumes both masks are
validated, 3D, of equal shape and **non-empty** (the empty cases are a policy decision taken
by the caller, see :class:`tcsa_uda.metrics.volume.EmptyPolicy`).

Conventions (docs/evaluation.md):

* Surface of a mask ``M`` = ``M`` minus its binary erosion, with voxels outside the array
  counted as background (a mask touching the border has a surface there). The erosion uses
  ``scipy.ndimage.generate_binary_structure(3, connectivity)``: ``connectivity=1`` (default,
  the 6-neighbour cross) is what MONAI and medpy use; ``3`` is the full 3x3x3 cube (a voxel
  with any of its 26 neighbours outside the mask is on the surface; a thicker surface).
* Directed distances ``d(A->B)``: for every surface voxel of ``A``, the exact Euclidean distance
  to the nearest surface voxel of ``B`` (``scipy.ndimage.distance_transform_edt`` with
  ``sampling=spacing``; ``spacing=None`` gives voxel units).
* ASSD ``"mean_of_means"`` = (mean d(A->B) + mean d(B->A)) / 2 (older medpy, SIFA-era papers);
  ``"pooled"`` = mean of the concatenation of both sets (medpy 0.5, MONAI ``symmetric=True``).
* HD95 ``"max_directed"`` = max of the two directed 95th percentiles (MONAI);
  ``"pooled"`` = 95th percentile of the concatenation (medpy). Percentiles use linear
  interpolation (``numpy.percentile``'s default, equal to ``torch.quantile``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from tcsa_uda.errors import ConfigError, TcsaUdaError

ASSD_VARIANTS: tuple[str, ...] = ("pooled", "mean_of_means")
HD_VARIANTS: tuple[str, ...] = ("max_directed", "pooled")
"""The HD95 definitions; ``max_directed`` (the first) is the default everywhere."""
ASSD_DEFINITIONS: dict[str, str] = {
    "pooled": "mean of the union of both directed surface-distance sets (MONAI symmetric=True, medpy 0.5 assd)",
    "mean_of_means": "mean of the two directed mean surface distances (older medpy assd, SIFA-era papers)",
}
"""ASSD variant -> its definition, as written into evaluation outputs."""
HD_DEFINITIONS: dict[str, str] = {
    "max_directed": (
        "max of the two directed 95th percentiles of the surface distances "
        "(MONAI compute_hausdorff_distance(percentile=95))"
    ),
    "pooled": "95th percentile of the union of both directed surface-distance sets (medpy.metric.binary.hd95)",
}
"""HD95 variant -> its definition, as written into evaluation outputs."""
CONNECTIVITIES: tuple[int, ...] = (1, 2, 3)

Spacing = tuple[float, float, float]


class MetricInputError(TcsaUdaError, ValueError):
    """An array or argument given to a metric is invalid (shape, dtype, spacing, emptiness)."""


@dataclass(frozen=True)
class SurfaceDistances:
    """The two directed surface-distance sets of a pair of masks (pred ``A``, ground truth ``B``).

    Attributes:
        pred_to_gt: (N_A,) float64, d(A->B) for every surface voxel of the prediction.
        gt_to_pred: (N_B,) float64, d(B->A) for every surface voxel of the ground truth.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        """(N_A + N_B,) the concatenation of both directed sets."""
        return np.concatenate([self.pred_to_gt, self.gt_to_pred])


def check_option(value: str, valid: tuple[str, ...], name: str) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise a ConfigError listing them."""
    if value not in valid:
        raise ConfigError(f"{name}: expected one of {', '.join(repr(v) for v in valid)}, found {value!r}.")
    return value


def _structure(connectivity: int) -> np.ndarray:
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(
            f"connectivity: expected one of {', '.join(map(str, CONNECTIVITIES))} "
            f"(1 = 6-neighbour cross as MONAI/medpy, 3 = full 3x3x3 cube), found {connectivity!r}."
        )
    return ndimage.generate_binary_structure(3, connectivity)


def surface_voxels(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Surface voxels of a boolean mask: the mask minus its erosion (outside counts as background).

    Args:
        mask: (X, Y, Z) bool.
        connectivity: erosion structure ``generate_binary_structure(3, connectivity)``; 1 (default,
            MONAI/medpy) is the 6-neighbour cross, 3 the full 3x3x3 cube.

    Returns:
        (X, Y, Z) bool, True on surface voxels.
    """
    structure = _structure(connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by one voxel and clipped to the array.

    Cropping to it changes no surface voxel (the margin is background or outside the array,
    both background for the erosion) and no distance (every surface voxel lies inside).
    """
    union = a | b
    box = []
    for axis in range(union.ndim):
        others = tuple(i for i in range(union.ndim) if i != axis)
        idx = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, union.shape[axis])))
    return tuple(box)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Spacing | None = None, connectivity: int = 1
) -> SurfaceDistances:
    """Directed surface distances between two non-empty boolean masks.

    Args:
        pred: (X, Y, Z) bool prediction, non-empty.
        gt: (X, Y, Z) bool ground truth, non-empty, same shape.
        spacing: voxel size along the three array axes (mm); None means 1 (voxel units).
        connectivity: erosion connectivity for the surfaces, see :func:`surface_voxels`.

    Returns:
        The directed distance sets d(pred->gt) and d(gt->pred).

    Raises:
        MetricInputError: a mask is empty (distances are undefined) or the shapes differ.
    """
    if pred.shape != gt.shape:
        raise MetricInputError(f"pred and gt must have the same shape, found {pred.shape} and {gt.shape}.")
    for name, mask in (("pred", pred), ("gt", gt)):
        if not mask.any():
            raise MetricInputError(
                f"{name} mask is empty: surface distances are undefined; apply an EmptyPolicy first."
            )
    box = _union_box(pred, gt)
    surf_pred = surface_voxels(pred[box], connectivity)
    surf_gt = surface_voxels(gt[box], connectivity)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    # EDT of the complement gives, at every voxel, the distance to the nearest surface voxel.
    dist_to_gt = ndimage.distance_transform_edt(~surf_gt, sampling=sampling)
    dist_to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)
    return SurfaceDistances(
        pred_to_gt=np.asarray(dist_to_gt[surf_pred], dtype=np.float64),
        gt_to_pred=np.asarray(dist_to_pred[surf_gt], dtype=np.float64),
    )


def assd_from_distances(distances: SurfaceDistances, variant: str = "pooled") -> float:
    """Average symmetric surface distance in one of :data:`ASSD_VARIANTS`.

    ``"pooled"`` weights every surface voxel of both masks equally (MONAI ``symmetric=True``);
    ``"mean_of_means"`` weights the two directions equally (older medpy, SIFA-era papers).
    """
    check_option(variant, ASSD_VARIANTS, "assd variant")
    if variant == "pooled":
        return float(distances.pooled.mean())
    return float((distances.pred_to_gt.mean() + distances.gt_to_pred.mean()) / 2.0)


def hd_percentile_from_distances(
    distances: SurfaceDistances, percentile: float = 95.0, variant: str = "max_directed"
) -> float:
    """Percentile Hausdorff distance (HD95 by default) in one of :data:`HD_VARIANTS`.

    ``"max_directed"`` = max(P(d(A->B)), P(d(B->A))) as MONAI ``compute_hausdorff_distance``;
    ``"pooled"`` = P(d(A->B) ++ d(B->A)) as medpy ``hd95``. P is the linear-interpolation
    percentile.
    """
    check_option(variant, HD_VARIANTS, "hd95 variant")
    if not 0.0 <= float(percentile) <= 100.0:
        raise ConfigError(f"percentile: expected a value in [0, 100], found {percentile!r}.")
    if variant == "pooled":
        return float(np.percentile(distances.pooled, percentile))
    return float(max(np.percentile(distances.pred_to_gt, percentile), np.percentile(distances.gt_to_pred, percentile)))
