"""Random cardiac-like thoracic anatomy for the built-in phantom benchmark (see docs/phantom.md).

A subject is a small set of scalar parameters (:class:`AnatomyParams`) drawn from a prior
(:class:`AnatomyPrior`) by :func:`sample_anatomy`. :func:`render_anatomy` evaluates analytic
shapes (elliptic cylinders, ellipsoids, tubes) at the world coordinates of any voxel grid and
returns a tissue map and a label map. Sampling is kept apart from rendering (as TorchIO keeps
``get_params`` apart from the transform), so one subject can be rendered on the grid of any
domain, resolution or field of view, and the parameters of every case can be recorded.

World coordinates are millimetres in the RAS+ convention: ``x`` towards the patient's right,
``y`` anterior, ``z`` superior. The heart's long axis points from the base (posterior,
superior, right) to the apex (left, anterior, inferior), as in a real chest.

The labels follow the MM-WHS convention of the SIFA line (Chen et al., 2019): 1 myocardium of
the left ventricle, 2 left atrium blood cavity, 3 left ventricle blood cavity, 4 ascending
aorta; everything else (right ventricle, descending aorta, lungs, ...) is background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np
from scipy import ndimage

from tcsa_uda.errors import ConfigError

Range = tuple[float, float]

#: World box (mm, ``(min, max)`` per axis) over which the smooth random fields are defined. It
#: contains every field of view of the default domains, so a field does not depend on the grid.
FIELD_BOX: tuple[Range, Range, Range] = ((-320.0, 320.0), (-320.0, 320.0), (-240.0, 240.0))


class Tissue(IntEnum):
    """Tissue classes of the rendered anatomy; the contrast model gives each an intensity."""

    AIR = 0
    SOFT_TISSUE = 1  # muscle, mediastinum, abdominal organs other than the liver
    FAT = 2  # subcutaneous and epicardial fat
    LUNG = 3
    BONE = 4  # ribs, sternum, vertebrae
    LIVER = 5
    MYOCARDIUM = 6  # left-ventricular wall (labelled) and right-ventricular wall (background)
    BLOOD = 7  # left heart, ascending and descending aorta (arterial blood)
    RIGHT_BLOOD = 8  # right ventricle (venous blood, less enhanced in CT)


#: Label ids written to the label maps (the dataset's ``labels`` mapping).
LABELS: dict[str, int] = {
    "background": 0,
    "myocardium": 1,
    "left atrium blood cavity": 2,
    "left ventricle blood cavity": 3,
    "ascending aorta": 4,
}


@dataclass(frozen=True)
class AnatomyPrior:
    """Uniform ranges ``(low, high)`` from which every subject parameter is drawn.

    Lengths are in millimetres and angles in degrees. The defaults describe an adult chest: a
    torso about 30 x 22 cm, a left-ventricular cavity 4-5 cm wide with a 7-11 mm wall, a left
    atrium about 4 cm and an ascending aorta about 2.5 cm across.
    """

    body_half_width: Range = (140.0, 168.0)  # torso semi-axis, left-right
    body_half_depth: Range = (95.0, 118.0)  # torso semi-axis, anterior-posterior
    body_offset: Range = (-8.0, 8.0)  # torso centre, x and y
    body_taper: Range = (0.0, 0.12)  # relative growth of the torso per 100 mm downwards
    subcutaneous_fat: Range = (5.0, 20.0)
    muscle: Range = (8.0, 16.0)  # chest-wall muscle between fat and ribs
    rib_thickness: Range = (6.0, 9.0)
    rib_period: Range = (24.0, 32.0)  # craniocaudal distance between ribs
    rib_slope: Range = (0.2, 0.5)  # ribs descend anteriorly: z shift per mm of y
    vertebra_radius: Range = (15.0, 19.0)
    diaphragm_below_heart: Range = (25.0, 40.0)  # dome top below the heart centre
    mediastinum_half_width: Range = (12.0, 22.0)  # lung-free band between the lungs
    heart_offset_x: Range = (-22.0, -5.0)  # left-ventricle centre relative to the torso
    heart_offset_y: Range = (5.0, 25.0)
    heart_azimuth: Range = (30.0, 60.0)  # long axis from the left towards anterior
    heart_elevation: Range = (20.0, 40.0)  # long axis downwards (apex inferior)
    heart_roll: Range = (-15.0, 15.0)
    lv_half_length: Range = (34.0, 44.0)  # cavity semi-axis along the long axis
    lv_radius: Range = (20.0, 25.0)  # cavity semi-axis across the long axis
    lv_flattening: Range = (0.85, 1.0)  # ratio of the two short cavity semi-axes
    wall_thickness: Range = (7.0, 11.0)  # left-ventricular myocardium
    base_cut: Range = (0.45, 0.6)  # base plane at this fraction of the half length
    la_radius: Range = (17.0, 22.0)
    la_axis_scale: Range = (0.85, 1.15)  # per-axis scale of the atrium ellipsoid
    ra_radius: Range = (18.0, 23.0)  # right atrium (background), right of the left atrium
    ao_radius: Range = (11.0, 15.0)
    ao_tilt_right: Range = (0.05, 0.35)  # tangent of the aorta's tilt from vertical
    ao_tilt_anterior: Range = (-0.2, 0.2)
    rv_depth: Range = (10.0, 18.0)  # thickness of the right-ventricular crescent
    rv_wall: Range = (2.5, 4.0)
    epicardial_fat: Range = (3.0, 8.0)
    descending_aorta_radius: Range = (9.0, 12.0)
    deformation_mm: Range = (3.0, 7.0)  # amplitude of the whole-body smooth deformation
    heart_irregularity_mm: Range = (1.5, 3.5)  # amplitude of the heart-only deformation
    deformation_spacing: float = 80.0  # control-point spacing of the whole-body field
    heart_irregularity_spacing: float = 30.0  # control-point spacing of the heart field
    fat_patch_spacing: float = 20.0  # control-point spacing of the epicardial fat pattern

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                ok = len(value) == 2 and all(math.isfinite(v) for v in value) and value[0] <= value[1]
                if not ok:
                    raise ConfigError(
                        f"anatomy prior {f.name}: expected a range (low, high) with low <= high, found {value!r}"
                    )
            elif not (math.isfinite(value) and value > 0):
                raise ConfigError(f"anatomy prior {f.name}: expected a spacing > 0 (mm), found {value!r}")


@dataclass(frozen=True)
class AnatomyParams:
    """One subject: every number needed to render it (JSON-serialisable).

    ``field_seed`` seeds the smooth random fields (deformations, fat pattern), which are drawn on
    the fixed world box :data:`FIELD_BOX` and therefore do not depend on the voxel grid.
    """

    body_half_width: float
    body_half_depth: float
    body_centre: tuple[float, float]
    body_taper: float
    subcutaneous_fat: float
    muscle: float
    rib_thickness: float
    rib_period: float
    rib_phase: float  # radians
    rib_slope: float
    vertebra_radius: float
    diaphragm_z: float
    mediastinum_half_width: float
    heart_centre: tuple[float, float, float]
    heart_azimuth: float
    heart_elevation: float
    heart_roll: float
    lv_half_length: float
    lv_radius: float
    lv_flattening: float
    wall_thickness: float
    base_cut: float
    la_radii: tuple[float, float, float]
    ra_radius: float
    ao_radius: float
    ao_tilt: tuple[float, float]
    rv_depth: float
    rv_wall: float
    epicardial_fat: float
    descending_aorta_radius: float
    deformation_mm: float
    heart_irregularity_mm: float
    deformation_spacing: float
    heart_irregularity_spacing: float
    fat_patch_spacing: float
    field_seed: int


def sample_anatomy(rng: np.random.Generator, prior: AnatomyPrior | None = None) -> AnatomyParams:
    """Draw one subject from ``prior`` (default :class:`AnatomyPrior`).

    The draws happen in a fixed order, so a generator in a given state always yields the same
    subject.
    """
    p = prior or AnatomyPrior()

    def u(r: Range) -> float:
        return float(rng.uniform(r[0], r[1]))

    width, depth = u(p.body_half_width), u(p.body_half_depth)
    centre = (u(p.body_offset), u(p.body_offset))
    heart = (centre[0] + u(p.heart_offset_x), centre[1] + u(p.heart_offset_y), 0.0)
    scale = u(p.la_axis_scale), u(p.la_axis_scale), u(p.la_axis_scale)
    la = u(p.la_radius)
    return AnatomyParams(
        body_half_width=width,
        body_half_depth=depth,
        body_centre=centre,
        body_taper=u(p.body_taper),
        subcutaneous_fat=u(p.subcutaneous_fat),
        muscle=u(p.muscle),
        rib_thickness=u(p.rib_thickness),
        rib_period=u(p.rib_period),
        rib_phase=u((0.0, 2.0 * math.pi)),
        rib_slope=u(p.rib_slope),
        vertebra_radius=u(p.vertebra_radius),
        diaphragm_z=-u(p.diaphragm_below_heart),
        mediastinum_half_width=u(p.mediastinum_half_width),
        heart_centre=heart,
        heart_azimuth=u(p.heart_azimuth),
        heart_elevation=u(p.heart_elevation),
        heart_roll=u(p.heart_roll),
        lv_half_length=u(p.lv_half_length),
        lv_radius=u(p.lv_radius),
        lv_flattening=u(p.lv_flattening),
        wall_thickness=u(p.wall_thickness),
        base_cut=u(p.base_cut),
        la_radii=(la * scale[0], la * scale[1], la * scale[2]),
        ra_radius=u(p.ra_radius),
        ao_radius=u(p.ao_radius),
        ao_tilt=(u(p.ao_tilt_right), u(p.ao_tilt_anterior)),
        rv_depth=u(p.rv_depth),
        rv_wall=u(p.rv_wall),
        epicardial_fat=u(p.epicardial_fat),
        descending_aorta_radius=u(p.descending_aorta_radius),
        deformation_mm=u(p.deformation_mm),
        heart_irregularity_mm=u(p.heart_irregularity_mm),
        deformation_spacing=p.deformation_spacing,
        heart_irregularity_spacing=p.heart_irregularity_spacing,
        fat_patch_spacing=p.fat_patch_spacing,
        field_seed=int(rng.integers(0, 2**63 - 1)),
    )


def smooth_random_field(rng: np.random.Generator, components: int, spacing_mm: float, points: np.ndarray) -> np.ndarray:
    """A smooth random field with unit-scale values, evaluated at world ``points``.

    Standard-normal coefficients on a control grid of ``spacing_mm`` over :data:`FIELD_BOX` are
    interpolated with cubic B-splines, so the field varies on the scale of ``spacing_mm`` and
    its values do not depend on where it is sampled.

    Args:
        rng: source of the coefficients (``components`` grids are drawn from it in order).
        components: number of independent fields (3 for a displacement field).
        spacing_mm: control-point spacing in mm.
        points: world coordinates, shape ``(3, *grid)``.

    Returns:
        Array of shape ``(components, *grid)``.
    """
    dims = tuple(math.ceil((hi - lo) / spacing_mm) + 1 for lo, hi in FIELD_BOX)
    coeffs = rng.standard_normal((components, *dims))
    index = np.stack([(points[i] - FIELD_BOX[i][0]) / spacing_mm for i in range(3)])
    return np.stack([ndimage.map_coordinates(coeffs[c], index, order=3, mode="nearest") for c in range(components)])


def heart_frame(params: AnatomyParams) -> np.ndarray:
    """Orthonormal heart frame as the rows of a ``(3, 3)`` matrix ``(e_u, e_v, e_w)``.

    ``e_u`` is the long axis from base to apex, ``e_v`` points posterior (across the long axis)
    and ``e_w`` towards the patient's right; the roll angle turns ``e_v``/``e_w`` about ``e_u``.
    """
    az, el, roll = (math.radians(a) for a in (params.heart_azimuth, params.heart_elevation, params.heart_roll))
    e_u = np.array([-math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), -math.sin(el)])
    posterior = np.array([0.0, -1.0, 0.0])
    e_v = posterior - posterior.dot(e_u) * e_u
    e_v /= np.linalg.norm(e_v)
    e_w = np.cross(e_u, e_v)
    if e_w[0] < 0:  # make e_w point towards the patient's right
        e_w = -e_w
    c, s = math.cos(roll), math.sin(roll)
    return np.stack([e_u, c * e_v + s * e_w, -s * e_v + c * e_w])


def _ellipsoid_radius(q: np.ndarray, centre: np.ndarray, semi_axes: tuple[float, float, float]) -> np.ndarray:
    """Normalised radius ``sqrt(sum(((q - c) / a)**2))`` of local coordinates ``q`` (3, ...)."""
    total = np.zeros(q.shape[1:])
    for i in range(3):
        total += ((q[i] - centre[i]) / semi_axes[i]) ** 2
    return np.sqrt(total)


def _distance_to_ray(points: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Distance of ``points`` (3, ...) to the ray ``origin + t * direction``, ``t >= 0``."""
    rel = points - origin.reshape(3, *([1] * (points.ndim - 1)))
    t = np.maximum(np.tensordot(direction, rel, axes=1), 0.0)
    closest = rel - direction.reshape(3, *([1] * (points.ndim - 1))) * t
    return np.sqrt((closest**2).sum(axis=0))


def render_anatomy(params: AnatomyParams, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render the tissue map and the label map of one subject on a voxel grid.

    Structures are painted in a fixed order, later ones over earlier ones: torso, subcutaneous
    fat, ribs and sternum, lungs, liver, spine, descending aorta, epicardial fat, right
    ventricle, right atrium, left atrium, ascending aorta, left-ventricular myocardium and
    cavity (see docs/phantom.md).

    Args:
        params: the subject.
        points: world coordinates (mm, RAS+) of the voxel centres, shape ``(3, X, Y, Z)``.

    Returns:
        ``(tissue, labels)``, both ``uint8`` of shape ``(X, Y, Z)``: :class:`Tissue` values and
        :data:`LABELS` ids.
    """
    rng = np.random.default_rng(params.field_seed)
    # Whole-body smooth deformation: shapes are evaluated at displaced coordinates.
    p = points + params.deformation_mm * smooth_random_field(rng, 3, params.deformation_spacing, points)
    heart_p = p + params.heart_irregularity_mm * smooth_random_field(rng, 3, params.heart_irregularity_spacing, points)
    fat_pattern = smooth_random_field(rng, 1, params.fat_patch_spacing, points)[0]

    tissue = np.full(points.shape[1:], Tissue.AIR, dtype=np.uint8)
    _paint_torso(tissue, params, p)
    heart = _heart_geometry(params, heart_p)
    _paint_heart(tissue, heart, fat_pattern)
    return tissue, _heart_labels(heart)


def _paint_torso(tissue: np.ndarray, params: AnatomyParams, p: np.ndarray) -> None:
    x, y, z = p
    bx, by = params.body_centre
    grow = 1.0 + params.body_taper * np.clip(-z, 0.0, None) / 100.0  # wider towards the abdomen
    ax, ay = params.body_half_width * grow, params.body_half_depth * grow
    dx, dy = x - bx, y - by

    def ellipse(shrink: float | np.ndarray) -> np.ndarray:
        return np.sqrt((dx / (ax - shrink)) ** 2 + (dy / (ay - shrink)) ** 2)

    tissue[ellipse(0.0) < 1.0] = Tissue.SOFT_TISSUE
    fat_inner = ellipse(params.subcutaneous_fat)
    tissue[(ellipse(0.0) < 1.0) & (fat_inner >= 1.0)] = Tissue.FAT

    cage_shrink = params.subcutaneous_fat + params.muscle
    cage = ellipse(cage_shrink)
    inside_cage = ellipse(cage_shrink + params.rib_thickness) < 1.0
    rib_band = (cage < 1.0) & ~inside_cage
    rib_wave = np.sin(2.0 * math.pi * (z + params.rib_slope * dy) / params.rib_period + params.rib_phase)
    tissue[rib_band & (rib_wave > 0.6)] = Tissue.BONE
    cage_depth = params.body_half_depth - cage_shrink
    sternum_y = by + cage_depth * grow - params.rib_thickness / 2.0
    tissue[((dx / 12.0) ** 2 + ((y - sternum_y) / (params.rib_thickness * 0.8)) ** 2) < 1.0] = Tissue.BONE

    # Diaphragm: a dome, the right one (x > 0) higher, lungs above, liver below on the right.
    hx, hy, _ = params.heart_centre
    dome = params.diaphragm_z - 0.004 * ((x - hx) ** 2 + (y - hy) ** 2) + 12.0 * (dx > 0)
    lung_rx = 0.48 * (ax - cage_shrink)
    lung_ry = 0.85 * (ay - cage_shrink)
    mediastinum = np.abs(dx) < params.mediastinum_half_width
    for side in (-1.0, 1.0):
        cx = bx + side * 0.52 * (ax - cage_shrink)
        lobe = ((x - cx) / lung_rx) ** 2 + ((y - (by - 0.1 * ay)) / lung_ry) ** 2 < 1.0
        tissue[inside_cage & lobe & ~mediastinum & (z > dome)] = Tissue.LUNG
    tissue[inside_cage & (z <= dome) & (dx > -0.3 * ax)] = Tissue.LIVER

    # Spine: vertebral body, a bony ring around the canal behind it, paraspinal muscle around.
    vr = params.vertebra_radius
    vy = by - (ay - cage_shrink) + vr
    tissue[np.hypot(dx, y - vy) < vr] = Tissue.BONE
    canal = np.hypot(dx, y - (vy - vr - 9.0))
    tissue[(canal < 12.0) & (canal >= 7.0)] = Tissue.BONE
    tissue[canal < 7.0] = Tissue.SOFT_TISSUE

    da_r = params.descending_aorta_radius
    tissue[np.hypot(x - (bx - 22.0), y - (vy + vr + 6.0 + da_r)) < da_r] = Tissue.BLOOD


def _heart_geometry(params: AnatomyParams, heart_p: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the heart structures (before priorities are applied)."""
    frame = heart_frame(params)
    centre = np.asarray(params.heart_centre)
    q = np.tensordot(frame, heart_p - centre.reshape(3, 1, 1, 1), axes=1)  # (3, X, Y, Z) local
    lc, rc, w = params.lv_half_length, params.lv_radius, params.wall_thickness
    rw = rc * params.lv_flattening
    zero = np.zeros(3)
    inner = _ellipsoid_radius(q, zero, (lc, rc, rw))
    outer = _ellipsoid_radius(q, zero, (lc + 0.8 * w, rc + w, rw + w))
    s_base = -params.base_cut * lc
    ventricular = q[0] >= s_base
    basal_radius = rc * math.sqrt(1.0 - params.base_cut**2)

    # Right ventricle: an ellipsoid anterior-right of the left ventricle, minus the left ventricle.
    rv_dir = np.array([0.0, -1.0, 1.0]) / math.sqrt(2.0)  # anterior (-e_v) and right (+e_w)
    rv_centre = rv_dir * 0.7 * (rc + w)
    rv_axes = (0.75 * (lc + w), 0.7 * (rc + w) + params.rv_depth, 1.15 * (rc + w))  # shorter: the LV forms the apex
    rv_radius = _ellipsoid_radius(_rotate_about_u(q, rv_centre, rv_dir), zero, rv_axes)
    rv_wall_scale = 1.0 + params.rv_wall / min(rv_axes)
    lv_outer = (outer < 1.0) & ventricular
    rv_blood = (rv_radius < 1.0) & ~lv_outer & (q[0] >= s_base - 5.0)
    rv_wall = (rv_radius < rv_wall_scale) & ~rv_blood & ~lv_outer & (q[0] >= s_base - 5.0 - params.rv_wall)

    la_centre = np.array([s_base - 0.8 * params.la_radii[0], 0.4 * basal_radius, 0.0])
    la = (_ellipsoid_radius(q, la_centre, params.la_radii) < 1.0) & ~ventricular
    ra_r = params.ra_radius
    ra_centre = np.array([s_base - 0.3 * ra_r, 0.1 * basal_radius, basal_radius + 0.7 * ra_r])
    ra = (_ellipsoid_radius(q, ra_centre, (1.2 * ra_r, ra_r, ra_r)) < 1.0) & ~lv_outer & ~la

    root_local = np.array([s_base, -0.45 * basal_radius, 0.45 * basal_radius])
    root = centre + frame.T @ root_local
    tilt_r, tilt_a = params.ao_tilt
    direction = np.array([tilt_r, tilt_a, 1.0])
    direction /= np.linalg.norm(direction)
    ao = (_distance_to_ray(heart_p, root, direction) < params.ao_radius) & ~ventricular

    heart_outer = lv_outer | (rv_radius < rv_wall_scale)
    fat_scale = 1.0 + params.epicardial_fat / (rc + w)
    lv_band = (outer < fat_scale) & (q[0] >= s_base - params.epicardial_fat)
    fat_band = lv_band | (rv_radius < rv_wall_scale * fat_scale)
    return {
        "lv_cavity": (inner < 1.0) & ventricular,
        "myocardium": lv_outer & ~((inner < 1.0) & ventricular),
        "rv_blood": rv_blood,
        "ra": ra,
        "rv_wall": rv_wall,
        "la": la,
        "ao": ao,
        "fat_band": fat_band & ~heart_outer,
    }


def _rotate_about_u(q: np.ndarray, centre: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Local coordinates re-expressed in a frame whose second axis is ``direction`` (in v-w)."""
    rel = q - centre.reshape(3, 1, 1, 1)
    other = np.array([0.0, -direction[2], direction[1]])
    return np.stack([rel[0], np.tensordot(direction[1:], rel[1:], axes=1), np.tensordot(other[1:], rel[1:], axes=1)])


def _paint_heart(tissue: np.ndarray, g: dict[str, np.ndarray], fat_pattern: np.ndarray) -> None:
    tissue[g["fat_band"] & (fat_pattern > 0.0)] = Tissue.FAT
    tissue[g["rv_wall"]] = Tissue.MYOCARDIUM
    tissue[g["rv_blood"]] = Tissue.RIGHT_BLOOD
    tissue[g["ra"]] = Tissue.RIGHT_BLOOD
    tissue[g["la"]] = Tissue.BLOOD
    tissue[g["ao"]] = Tissue.BLOOD
    tissue[g["myocardium"]] = Tissue.MYOCARDIUM
    tissue[g["lv_cavity"]] = Tissue.BLOOD


def _heart_labels(g: dict[str, np.ndarray]) -> np.ndarray:
    labels = np.zeros(g["lv_cavity"].shape, dtype=np.uint8)
    labels[g["la"]] = LABELS["left atrium blood cavity"]
    labels[g["ao"]] = LABELS["ascending aorta"]
    labels[g["myocardium"]] = LABELS["myocardium"]
    labels[g["lv_cavity"]] = LABELS["left ventricle blood cavity"]
    return labels
