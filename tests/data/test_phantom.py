"""Tests of the built-in phantom benchmark (tcsa_uda.data.phantom*)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.data import phantom as phantom_module
from tcsa_uda.data.contract import DATASET_FILE, CaseSpec, load_dataset
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.phantom import (
    RECORD_FILE,
    AcquisitionGeometry,
    PhantomCase,
    PhantomDomain,
    assign_splits,
    case_seed,
    default_domains,
    generate_case,
    generate_phantom,
    split_counts,
)
from tcsa_uda.data.phantom_anatomy import LABELS, AnatomyPrior, Tissue
from tcsa_uda.data.phantom_contrast import (
    ContrastModel,
    CTContrast,
    MRContrast,
    TissueIntensities,
    sample_intensities,
)
from tcsa_uda.errors import ConfigError

# (D, H, W) with the default 1:3 ratio, so the CT voxels stay isotropic, at a fraction of the size.
SMALL_SHAPE = (16, 48, 48)
SMALL_GRID = (48, 48, 16)  # the same as the stored (X, Y, Z) array shape


def _label_path(case: CaseSpec, root: Path) -> Path:
    path = case.label_path(root)
    assert path is not None, f"case {case.id} has no label"
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "ds"
    generate_phantom(out, seed=0, cases=3, shape=SMALL_SHAPE, progress=False)
    return out


@pytest.fixture(scope="module")
def cases() -> dict[str, PhantomCase]:
    """One in-memory case per default domain at the default shape (with its tissue map)."""
    return {dom.name: generate_case(dom, case_seed(3, i, 0), (96, 96, 32)) for i, dom in enumerate(default_domains())}


def test_dataset_follows_the_contract(dataset: Path) -> None:
    spec = load_dataset(dataset)
    assert spec.labels == {
        "background": 0,
        "myocardium": 1,
        "left atrium blood cavity": 2,
        "left ventricle blood cavity": 3,
        "ascending aorta": 4,
    }
    assert set(spec.class_descriptions) == set(spec.labels)
    assert {n: d.modality for n, d in spec.domains.items()} == {
        "CT": "computed tomography",
        "MR": "magnetic resonance imaging",
    }
    for dom in spec.domains.values():
        assert [c.split for c in dom.cases] == ["train", "val", "test"]
        for case in dom.cases:
            assert not Path(case.image).is_absolute() and case.label is not None
            image = load_nifti(case.image_path(dataset))
            label = load_nifti(_label_path(case, dataset), what="label")
            assert image.array.shape == label.array.shape == SMALL_GRID
            assert image.array.dtype == np.float32 and label.array.dtype == np.uint8
            np.testing.assert_array_equal(image.affine, label.affine)
            assert set(np.unique(label.array).tolist()) == {0, 1, 2, 3, 4}


def test_domains_have_distinct_subjects(dataset: Path) -> None:
    spec = load_dataset(dataset)
    ct = load_nifti(_label_path(spec.domain("CT").cases[0], dataset)).array
    mr = load_nifti(_label_path(spec.domain("MR").cases[0], dataset)).array
    ct1 = load_nifti(_label_path(spec.domain("CT").cases[1], dataset)).array
    assert not np.array_equal(ct, mr)
    assert not np.array_equal(ct, ct1)


def test_same_seed_gives_identical_arrays(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_phantom(again, seed=0, cases=1, shape=SMALL_SHAPE, progress=False)
    other = tmp_path / "other"
    generate_phantom(other, seed=1, cases=1, shape=SMALL_SHAPE, progress=False)
    for rel in ("CT/images/ct_0000.nii.gz", "MR/images/mr_0000.nii.gz", "MR/labels/mr_0000.nii.gz"):
        first = load_nifti(dataset / rel)
        second = load_nifti(again / rel)
        # Case 0 does not depend on the number of cases either (per-case seed streams).
        assert first.array.tobytes() == second.array.tobytes()
        np.testing.assert_array_equal(first.affine, second.affine)
        assert not np.array_equal(first.array, load_nifti(other / rel).array)


def test_generate_case_is_deterministic() -> None:
    _ct, mr = default_domains()
    a = generate_case(mr, case_seed(7, 1, 2), (32, 32, 16))
    b = generate_case(mr, case_seed(7, 1, 2), (32, 32, 16))
    c = generate_case(mr, case_seed(8, 1, 2), (32, 32, 16))
    assert a.image.tobytes() == b.image.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert not np.array_equal(a.image, c.image)
    assert a.anatomy == b.anatomy != c.anatomy


def test_contrast_does_not_change_the_anatomy() -> None:
    ct, _mr = default_domains()
    same_subject_mr_contrast = PhantomDomain("CT", ct.modality, MRContrast(), ct.geometry)
    a = generate_case(ct, case_seed(0, 0, 0), (32, 32, 16))
    b = generate_case(same_subject_mr_contrast, case_seed(0, 0, 0), (32, 32, 16))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.image, b.image)


def _median(case: PhantomCase, tissue: Tissue) -> float:
    return float(np.median(case.image[case.tissue == tissue]))


@pytest.mark.parametrize("subject", range(20))
def test_tissue_contrast_orderings_hold_for_every_subject(subject: int) -> None:
    rng = np.random.default_rng(subject)
    ct = sample_intensities(CTContrast(), rng)
    mr = sample_intensities(MRContrast(), rng)
    t = Tissue
    # CT: lung < fat < soft tissue < myocardium < blood < bone.
    assert ct[t.LUNG] < ct[t.FAT] < ct[t.SOFT_TISSUE] < ct[t.MYOCARDIUM] < ct[t.BLOOD] < ct[t.BONE]
    # MR (bSSFP): lung, bone < myocardium < soft tissue < fat < blood.
    assert max(mr[t.LUNG], mr[t.BONE]) < mr[t.MYOCARDIUM] < mr[t.SOFT_TISSUE] < mr[t.FAT] < mr[t.BLOOD]


def test_contrast_relations_differ_between_domains(cases: dict[str, PhantomCase]) -> None:
    ct, mr = cases["CT"], cases["MR"]
    # CT: fat < myocardium < blood, and bone is the brightest tissue.
    assert _median(ct, Tissue.FAT) < _median(ct, Tissue.MYOCARDIUM) < _median(ct, Tissue.BLOOD)
    assert _median(ct, Tissue.BONE) > _median(ct, Tissue.BLOOD)
    assert _median(ct, Tissue.FAT) < _median(ct, Tissue.SOFT_TISSUE)
    # MR: myocardium darker than fat and blood, fat brighter than soft tissue, bone dark.
    assert _median(mr, Tissue.MYOCARDIUM) < min(_median(mr, Tissue.FAT), _median(mr, Tissue.BLOOD))
    assert _median(mr, Tissue.FAT) > _median(mr, Tissue.SOFT_TISSUE)
    assert _median(mr, Tissue.BONE) < _median(mr, Tissue.SOFT_TISSUE)
    # Labelled classes: blood cavities brighter than the myocardium in both domains.
    for case in (ct, mr):
        myo = np.median(case.image[case.labels == LABELS["myocardium"]])
        lv = np.median(case.image[case.labels == LABELS["left ventricle blood cavity"]])
        assert lv > myo


def test_ct_is_hounsfield_like_and_mr_is_positive(cases: dict[str, PhantomCase]) -> None:
    ct, mr = cases["CT"], cases["MR"]
    assert -1100 < _median(ct, Tissue.AIR) < -900
    assert -900 < _median(ct, Tissue.LUNG) < -700
    assert 200 < _median(ct, Tissue.BLOOD) < 400
    assert mr.image.min() >= 0.0  # Rician magnitude
    # heart-centred crops keep little air, mostly next to the skin where blur lifts it
    assert _median(mr, Tissue.AIR) < 0.25 * _median(mr, Tissue.BLOOD)


def test_mr_voxels_are_anisotropic_and_ct_isotropic(dataset: Path) -> None:
    spec = load_dataset(dataset)
    ct = load_nifti(spec.domain("CT").cases[0].image_path(dataset)).spacing
    mr = load_nifti(spec.domain("MR").cases[0].image_path(dataset)).spacing
    assert ct == pytest.approx((200 / 48, 200 / 48, 200 / 48))
    assert mr == pytest.approx((180 / 48, 180 / 48, 1.5 * 180 / 48))
    ct_default, mr_default = (d.geometry.spacing((96, 96, 32)) for d in default_domains())
    assert ct_default == pytest.approx((200 / 96,) * 3)
    assert mr_default[2] / mr_default[0] == pytest.approx(1.5)


def test_affine_is_ras_with_axial_last_axis(dataset: Path) -> None:
    import nibabel as nib

    image = load_nifti(dataset / "CT/images/ct_0000.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    # Slices along the last axis are axial: the heart centre (z = 0) lies inside the volume.
    z = image.affine[2, 3] + image.affine[2, 2] * np.arange(image.array.shape[2])
    assert z.min() < 0 < z.max()


def test_heart_fills_most_slices_at_the_default_shape(cases: dict[str, PhantomCase]) -> None:
    for name, case in cases.items():
        depth = case.labels.shape[2]
        per_slice = (case.labels > 0).reshape(-1, depth).any(axis=0)
        assert per_slice.mean() >= 0.6, name
        for cls, value in LABELS.items():
            if value == 0:
                continue
            counts = (case.labels == value).reshape(-1, depth).sum(axis=0)
            assert np.median(counts[counts > 0]) >= 20, (name, cls)
        # The heart lies in the central part of the slices.
        xs, ys, _ = np.nonzero(case.labels)
        assert 20 < xs.mean() < 76 and 20 < ys.mean() < 76, name


@pytest.mark.parametrize(
    ("cases", "expected"),
    [(1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (2, 1, 2)), (10, (6, 1, 3)), (20, (12, 2, 6))],
)
def test_split_counts(cases: int, expected: tuple[int, int, int]) -> None:
    counts = split_counts(cases)
    assert (counts["train"], counts["val"], counts["test"]) == expected
    assert assign_splits(cases) == ["train"] * expected[0] + ["val"] * expected[1] + ["test"] * expected[2]


def test_split_counts_rules_for_many_sizes() -> None:
    for n in range(5, 60):
        c = split_counts(n)
        assert c["train"] + c["val"] + c["test"] == n
        assert c["val"] >= 1 and c["test"] >= 2 and 0.4 * n <= c["train"] <= 0.65 * n
        assert 0.1 * n - 0.5 <= c["val"] <= 0.2 * n
        if n >= 10:
            assert c["train"] >= 0.55 * n


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"cases": 0}, "--cases"),
        ({"cases": True}, "--cases"),
        ({"seed": -1}, "--seed"),
        ({"shape": (15, 96, 96)}, "--shape"),
        ({"shape": (32, 96)}, "--shape"),
        ({"shape": (32.0, 96, 96)}, "--shape"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        generate_phantom(tmp_path / "x", progress=False, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_bad_contrast_and_geometry_are_rejected() -> None:
    with pytest.raises(ConfigError, match="noise"):
        CTContrast(noise="poisson")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="noise_std"):
        MRContrast(noise_std=-1.0)
    with pytest.raises(ConfigError, match="blur_sigma_vox"):
        ContrastModel(intensities=CTContrast().intensities, blur_sigma_vox=(1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="slice_ratio"):
        AcquisitionGeometry(fov_mm=300.0, slice_ratio=0.0)
    with pytest.raises(ConfigError, match="wall_thickness"):
        AnatomyPrior(wall_thickness=(11.0, 7.0))
    with pytest.raises(ConfigError, match="deformation_spacing"):
        AnatomyPrior(deformation_spacing=0.0)
    with pytest.raises(ConfigError, match="centre_on"):
        AcquisitionGeometry(fov_mm=300.0, centre_on="lung")  # type: ignore[arg-type]


def test_tissue_intensity_lookup_covers_every_tissue() -> None:
    table = MRContrast().intensities.lookup()
    assert table.shape == (len(Tissue),)
    assert table[Tissue.FAT] == 780.0 and table[Tissue.MYOCARDIUM] == 180.0
    custom = TissueIntensities(*range(9))
    np.testing.assert_array_equal(custom.lookup()[[Tissue.AIR, Tissue.RIGHT_BLOOD]], [0.0, 8.0])


def test_non_empty_folder_needs_overwrite(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_phantom(out, cases=1, shape=SMALL_SHAPE, progress=False)
    with pytest.raises(ConfigError, match="--overwrite"):
        generate_phantom(out, cases=1, shape=SMALL_SHAPE, progress=False)
    spec = generate_phantom(out, seed=5, cases=2, shape=SMALL_SHAPE, overwrite=True, progress=False)
    assert len(load_dataset(out).domain("CT").cases) == 2 == len(spec.domain("MR").cases)
    assert json.loads((out / RECORD_FILE).read_text())["seed"] == 5


def test_interrupted_run_leaves_no_dataset_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ds"
    generate_phantom(out, cases=1, shape=SMALL_SHAPE, progress=False)
    assert (out / DATASET_FILE).is_file()
    calls = {"n": 0}
    real = phantom_module.generate_case

    def failing(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(phantom_module, "generate_case", failing)
    with pytest.raises(KeyboardInterrupt):
        generate_phantom(out, cases=2, shape=SMALL_SHAPE, overwrite=True, progress=False)
    assert not (out / DATASET_FILE).exists()
    assert not list(out.rglob("*.tmp-*"))


def test_record_file_describes_the_generation(dataset: Path) -> None:
    record = json.loads((dataset / RECORD_FILE).read_text())
    assert record["seed"] == 0 and record["shape_dhw"] == list(SMALL_SHAPE)
    assert record["array_shape_xyz"] == list(SMALL_GRID)
    assert record["domains"]["MR"]["contrast"]["model"] == "MRContrast"
    assert record["domains"]["MR"]["contrast"]["noise"] == "rician"
    mr0 = record["cases"]["MR"][0]
    assert mr0["id"] == "mr_0000" and mr0["split"] == "train"
    assert mr0["spacing_mm"] == pytest.approx([180 / 48, 180 / 48, 1.5 * 180 / 48])
    assert 7.0 <= mr0["anatomy"]["wall_thickness"] <= 11.0


def test_label_files_are_written_as_label_maps(dataset: Path) -> None:
    import nibabel as nib

    spec = load_dataset(dataset)
    case = spec.domain("CT").cases[0]
    assert case.label is not None
    header = nib.Nifti1Image.from_filename(str(dataset / case.label)).header
    assert int(header["intent_code"]) == 1002  # NIFTI_INTENT_LABEL
    assert header.get_data_dtype().kind == "u" and float(header["cal_max"]) == len(LABELS) - 1
    image_header = nib.Nifti1Image.from_filename(str(case.image_path(dataset))).header
    assert int(image_header["intent_code"]) == 0
