"""The built-in cross-modality phantom benchmark (``tcsa-uda phantom``, see docs/phantom.md).

Writes a dataset in the contract of :mod:`tcsa_uda.data.contract`: two unpaired domains, "CT"
and "MR", of cardiac-like 3D volumes with the four MM-WHS foreground classes. Every subject is
drawn from one anatomy prior (:mod:`~tcsa_uda.data.phantom_anatomy`), each domain images its own
subjects with its own contrast (:mod:`~tcsa_uda.data.phantom_contrast`), voxel spacing and
field of view. Output is deterministic for a seed: case ``i`` of domain ``d`` is generated from
``SeedSequence(seed, spawn_key=(d, i))``, so it does not depend on ``cases`` either.

Arrays are written as ``(X, Y, Z) = (H, W, D)`` with ``Z`` the axial (superior-inferior) axis
and a RAS+ affine, so ``image[:, :, k]`` is an ``H x W`` axial slice.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from tcsa_uda import __version__
from tcsa_uda.atomic import atomic_write_json, make_dir
from tcsa_uda.data.contract import DATASET_FILE, CaseSpec, DatasetSpec, DomainSpec, write_dataset_json
from tcsa_uda.data.io import save_nifti
from tcsa_uda.data.phantom_anatomy import LABELS, AnatomyParams, AnatomyPrior, render_anatomy, sample_anatomy
from tcsa_uda.data.phantom_contrast import ContrastModel, CTContrast, MRContrast, contrast_to_dict, render_image
from tcsa_uda.errors import ConfigError, TcsaUdaError

DEFAULT_SHAPE: tuple[int, int, int] = (48, 96, 96)  # (D, H, W)
DEFAULT_CASES = 10
MIN_SIDE = 16
DATASET_NAME = "phantom_cardiac"
RECORD_FILE = "phantom.json"

CLASS_DESCRIPTIONS: dict[str, str] = {
    "background": "everything that is not one of the four cardiac structures: body wall, lungs, "
    "spine, liver, right ventricle, descending aorta, fat and air",
    "myocardium": "the myocardium of the left ventricle, a thick muscular ring that surrounds "
    "the left ventricle blood cavity",
    "left atrium blood cavity": "the blood pool of the left atrium, a rounded chamber at the "
    "back of the heart above the left ventricle",
    "left ventricle blood cavity": "the blood pool of the left ventricle, an elongated chamber "
    "enclosed by the myocardium and pointing to the apex, left, front and down",
    "ascending aorta": "the ascending aorta, a round tube of blood leaving the left ventricle "
    "and running upwards in front of the left atrium",
}


@dataclass(frozen=True)
class AcquisitionGeometry:
    """Field of view and voxel shape of one domain.

    In-plane pixels are square: ``pixel = fov_mm / max(H, W)``; slices are ``slice_ratio``
    times thicker, so isotropy (CT) or anisotropy (MR) holds for every ``--shape``, and the
    axial extent is ``D * pixel * slice_ratio``.

    Attributes:
        fov_mm: in-plane extent (mm) of the longer of the two in-plane axes.
        slice_ratio: slice spacing divided by the in-plane pixel size (1 = isotropic).
        centre_on: ``"body"`` centres the field of view on the torso in-plane (CT), ``"heart"``
            on the left ventricle (cardiac MR planning).
        centre_jitter_mm: std of a per-case random shift of the field-of-view centre (x, y, z).
        axial_offset_mm: axial centre of the field of view above the heart centre.
    """

    fov_mm: float
    slice_ratio: float = 1.0
    centre_on: Literal["body", "heart"] = "body"
    centre_jitter_mm: float = 5.0
    axial_offset_mm: float = 10.0

    def __post_init__(self) -> None:
        if not self.fov_mm > 0:
            raise ConfigError(f"geometry.fov_mm: expected a number > 0, found {self.fov_mm!r}")
        if not self.slice_ratio > 0:
            raise ConfigError(f"geometry.slice_ratio: expected a number > 0, found {self.slice_ratio!r}")
        if self.centre_on not in ("body", "heart"):
            raise ConfigError(f"geometry.centre_on: expected 'body' or 'heart', found {self.centre_on!r}")
        if not self.centre_jitter_mm >= 0:
            raise ConfigError(f"geometry.centre_jitter_mm: expected a number >= 0, found {self.centre_jitter_mm!r}")

    def spacing(self, grid: tuple[int, int, int]) -> tuple[float, float, float]:
        """Voxel size (mm) along (X, Y, Z) for an array of shape ``grid = (X, Y, Z)``."""
        pixel = self.fov_mm / max(grid[0], grid[1])
        return (pixel, pixel, pixel * self.slice_ratio)

    def affine(self, grid: tuple[int, int, int], centre: np.ndarray) -> np.ndarray:
        """RAS+ voxel-to-world affine ``(4, 4)`` of a grid centred on world point ``centre``."""
        spacing = np.asarray(self.spacing(grid))
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = centre - spacing * (np.asarray(grid) - 1) / 2.0
        return affine


@dataclass(frozen=True)
class PhantomDomain:
    """One imaging domain of the phantom: its name, modality phrase, contrast and geometry."""

    name: str
    modality: str
    contrast: ContrastModel
    geometry: AcquisitionGeometry


def default_domains() -> tuple[PhantomDomain, PhantomDomain]:
    """The two built-in domains.

    Both are heart-centred crops, as the SIFA line prepares MM-WHS (heart-centred crop before
    slicing), so the four structures are large in the slice. CT: 200 mm in-plane field of view,
    isotropic voxels (2.08 mm and a 100 mm axial extent at the default shape 48 x 96 x 96). MR: a
    180 mm field of view with slices 1.5 times thicker than the pixels (1.88 x 1.88 x 2.81 mm and
    135 mm axial extent at the default shape).
    """
    return (
        PhantomDomain(
            name="CT",
            modality="computed tomography",
            contrast=CTContrast(),
            geometry=AcquisitionGeometry(fov_mm=200.0, slice_ratio=1.0, centre_on="heart", centre_jitter_mm=8.0),
        ),
        PhantomDomain(
            name="MR",
            modality="magnetic resonance imaging",
            contrast=MRContrast(),
            geometry=AcquisitionGeometry(fov_mm=180.0, slice_ratio=1.5, centre_on="heart", centre_jitter_mm=8.0),
        ),
    )


def split_counts(cases: int) -> dict[str, int]:
    """Number of train / val / test cases for ``cases`` cases per domain.

    For ``cases >= 5``: val = max(1, round(10%)), test = max(2, cases - round(60%) - val), the
    rest train (10 -> 6 / 1 / 3, 20 -> 12 / 2 / 6). Fewer cases fill train first, then test,
    then val (1 -> 1/0/0, 2 -> 1/0/1, 3 -> 1/1/1, 4 -> 2/1/1).
    """
    if cases >= 5:
        val = max(1, math.floor(0.1 * cases + 0.5))
        test = max(2, cases - math.floor(0.6 * cases + 0.5) - val)
        return {"train": cases - val - test, "val": val, "test": test}
    test = 1 if cases >= 2 else 0
    val = 1 if cases >= 3 else 0
    return {"train": cases - val - test, "val": val, "test": test}


def assign_splits(cases: int) -> list[str]:
    """Split of each case index: the first cases train, then val, then test."""
    counts = split_counts(cases)
    return [s for s in ("train", "val", "test") for _ in range(counts[s])]


@dataclass
class PhantomCase:
    """One generated volume in memory."""

    image: np.ndarray  # (X, Y, Z) float32
    labels: np.ndarray  # (X, Y, Z) uint8
    tissue: np.ndarray  # (X, Y, Z) uint8 Tissue values (not written; for tests and figures)
    affine: np.ndarray  # (4, 4)
    anatomy: AnatomyParams
    record: dict[str, object] = field(default_factory=dict)


def case_seed(seed: int, domain_index: int, case_index: int) -> np.random.SeedSequence:
    """The seed sequence of one case (independent streams per domain and per case)."""
    return np.random.SeedSequence(seed, spawn_key=(domain_index, case_index))


def generate_case(
    domain: PhantomDomain,
    seed_sequence: np.random.SeedSequence,
    grid: tuple[int, int, int],
    prior: AnatomyPrior | None = None,
) -> PhantomCase:
    """Sample a subject and image it in ``domain`` on an array of shape ``grid = (X, Y, Z)``.

    The anatomy, the field-of-view placement and the appearance use separate child streams,
    so tuning the contrast model does not change the anatomy of a case.
    """
    anatomy_ss, geometry_ss, appearance_ss = seed_sequence.spawn(3)
    anatomy = sample_anatomy(np.random.default_rng(anatomy_ss), prior)
    geo = domain.geometry
    hx, hy, hz = anatomy.heart_centre
    in_plane = (hx, hy) if geo.centre_on == "heart" else anatomy.body_centre
    jitter = geo.centre_jitter_mm * np.random.default_rng(geometry_ss).standard_normal(3)
    centre = np.array([in_plane[0], in_plane[1], hz + geo.axial_offset_mm]) + jitter
    affine = geo.affine(grid, centre)
    axes = [np.arange(n, dtype=np.float64) for n in grid]
    index = np.stack(np.meshgrid(*axes, indexing="ij"))  # (3, X, Y, Z)
    points = np.tensordot(affine[:3, :3], index, axes=1) + affine[:3, 3].reshape(3, 1, 1, 1)
    tissue, labels = render_anatomy(anatomy, points)
    image = render_image(tissue, domain.contrast, np.random.default_rng(appearance_ss), points)
    record: dict[str, object] = {
        "fov_centre_mm": [float(c) for c in centre],
        "spacing_mm": list(geo.spacing(grid)),
    }
    return PhantomCase(image=image, labels=labels, tissue=tissue, affine=affine, anatomy=anatomy, record=record)


def _validate(seed: int, cases: int, shape: Sequence[int], domains: Sequence[PhantomDomain]) -> tuple[int, int, int]:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"phantom --seed: expected an integer >= 0, found {seed!r}")
    if isinstance(cases, bool) or not isinstance(cases, int) or cases < 1:
        raise ConfigError(f"phantom --cases: expected an integer >= 1 (cases per domain), found {cases!r}")
    dims = tuple(shape)
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
        raise ConfigError(f"phantom --shape: expected three integers D H W, found {shape!r}")
    if any(d < MIN_SIDE for d in dims):
        raise ConfigError(f"phantom --shape: expected every dimension >= {MIN_SIDE} (D H W), found {list(dims)}")
    names = [d.name for d in domains]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"phantom domains: expected distinct domain names, found {names}")
    return (dims[0], dims[1], dims[2])


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"phantom --out {out}: expected a folder, found a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"phantom --out {out}: the folder exists and is not empty; choose a new folder or pass --overwrite"
            )
        # Remove the old index first, so an interrupted run never leaves a dataset.json that
        # mixes old and new cases or points to files not yet written.
        (out / DATASET_FILE).unlink(missing_ok=True)
    make_dir(out)


def generate_phantom(
    out: Path,
    seed: int = 0,
    cases: int = DEFAULT_CASES,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    *,
    domains: Sequence[PhantomDomain] | None = None,
    prior: AnatomyPrior | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetSpec:
    """Generate the phantom benchmark into the folder ``out``.

    Writes ``<domain>/images/<id>.nii.gz`` (float32) and ``<domain>/labels/<id>.nii.gz``
    (uint8, ids of :data:`~tcsa_uda.data.phantom_anatomy.LABELS`) for every case, then
    ``phantom.json`` (everything that produced the data, per-case parameters included) and
    ``dataset.json`` last, so an interrupted run leaves no index pointing to missing files.
    All cases carry labels; target-domain training labels exist only for evaluation.

    Args:
        out: dataset folder (created; must be empty or absent unless ``overwrite``).
        seed: non-negative integer seed; the output arrays are identical for a seed.
        cases: number of cases per domain (split by :func:`split_counts`).
        shape: ``(D, H, W)``: D axial slices of H x W pixels; arrays are stored (H, W, D).
        domains: imaging domains (default :func:`default_domains`: "CT" and "MR").
        prior: anatomy prior (default :class:`AnatomyPrior`).
        overwrite: allow writing into a non-empty folder (the old dataset.json is removed first).
        progress: show a progress bar.

    Returns:
        The :class:`DatasetSpec` written to ``out/dataset.json``.

    Raises:
        ConfigError: an argument is invalid or ``out`` is not empty.
        TcsaUdaError: a foreground class is missing from a generated volume (shape too small).
    """
    domains = tuple(domains) if domains is not None else default_domains()
    depth, height, width = _validate(seed, cases, shape, domains)
    grid = (height, width, depth)
    out = Path(out)
    _prepare_out(out, overwrite)
    splits = assign_splits(cases)
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    domain_specs: dict[str, DomainSpec] = {}
    records: dict[str, list[dict[str, object]]] = {}
    bar = tqdm(total=cases * len(domains), desc="phantom", unit="case", disable=not progress)
    with bar:
        for d_index, domain in enumerate(domains):
            specs: list[CaseSpec] = []
            records[domain.name] = []
            for i in range(cases):
                case_id = f"{domain.name.lower()}_{i:04d}"
                case = generate_case(domain, case_seed(seed, d_index, i), grid, prior)
                _check_classes(case.labels, domain.name, case_id, shape)
                image_rel = f"{domain.name}/images/{case_id}.nii.gz"
                label_rel = f"{domain.name}/labels/{case_id}.nii.gz"
                save_nifti(out / image_rel, case.image, case.affine, header)
                save_nifti(out / label_rel, case.labels, case.affine, header, kind="label")
                specs.append(CaseSpec(id=case_id, image=image_rel, split=splits[i], label=label_rel))
                records[domain.name].append(
                    {"id": case_id, "split": splits[i], **case.record, "anatomy": dataclasses.asdict(case.anatomy)}
                )
                bar.update(1)
            domain_specs[domain.name] = DomainSpec(name=domain.name, modality=domain.modality, cases=tuple(specs))
    atomic_write_json(
        out / RECORD_FILE,
        {
            "generator": "tcsa_uda.data.phantom",
            "version": __version__,
            "seed": seed,
            "cases_per_domain": cases,
            "shape_dhw": [depth, height, width],
            "array_shape_xyz": list(grid),
            "splits": split_counts(cases),
            "prior": dataclasses.asdict(prior or AnatomyPrior()),
            "domains": {
                d.name: {
                    "modality": d.modality,
                    "contrast": contrast_to_dict(d.contrast),
                    "geometry": dataclasses.asdict(d.geometry),
                }
                for d in domains
            },
            "cases": records,
        },
    )
    spec = DatasetSpec(
        name=DATASET_NAME,
        labels=dict(LABELS),
        domains=domain_specs,
        root=out,
        class_descriptions=dict(CLASS_DESCRIPTIONS),
    )
    write_dataset_json(spec)
    return spec


def _check_classes(labels: np.ndarray, domain: str, case_id: str, shape: Sequence[int]) -> None:
    present = set(np.unique(labels).tolist())
    missing = [name for name, value in LABELS.items() if value not in present]
    if missing:
        raise TcsaUdaError(
            f"phantom {domain}/{case_id}: expected every class in the volume, found none of {missing} "
            f"at --shape {list(shape)}; use a larger --shape"
        )
