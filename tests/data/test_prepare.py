"""Tests of slice preparation: geometry, axis selection, index, idempotency, interruption."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml

import tcsa_uda.data.prepare as prep
from tcsa_uda.data.geometry import slices_to_volume
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.normalize import NormalizationRecord
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import INDEX_FILE, load_prepared
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError

LABELS = {"background": 0, "liver": 1, "spleen": 2}

PERMUTED = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
"""Array axis 0 runs S, axis 1 runs R, axis 2 runs A (codes ('S', 'R', 'A'))."""


def _blob_label(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Two boxes of classes 1 and 2 (their placement depends on ``seed``), background elsewhere."""
    lab = np.zeros(shape, dtype=np.uint8)
    x, y, z = shape
    lab[1 : x // 2 + 1, 1 : y - 1, 1 : z - 1] = 1
    lab[x // 2 + 1 : x - 1, 1 + seed % 2 : y // 2 + 2, : z // 2] = 2
    return lab


def _image_for(label: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (label * 50.0 + rng.normal(0.0, 5.0, size=label.shape)).astype(np.float32)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def _write_dataset(root: Path, cases: dict[str, list[dict[str, Any]]], channel: dict[str, int] | None = None) -> Path:
    """Write ``root/dataset.json`` for ``cases``: domain -> [{id, split, image array, label array?, affine?}]."""
    domains: dict[str, Any] = {}
    for dname, items in cases.items():
        entries = []
        for c in items:
            affine = c.get("affine")
            entry = {"id": c["id"], "split": c["split"], "image": f"{dname}/{c['id']}_img.nii.gz"}
            _save(root / entry["image"], c["image"], affine)
            if c.get("label") is not None:
                entry["label"] = f"{dname}/{c['id']}_seg.nii.gz"
                _save(root / entry["label"], c["label"], affine)
            entries.append(entry)
        dom: dict[str, Any] = {"modality": f"{dname} imaging", "cases": entries}
        if channel and dname in channel:
            dom["channel"] = channel[dname]
        domains[dname] = dom
    data = {"name": "tiny", "labels": LABELS, "domains": domains}
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def _two_domain_dataset(root: Path) -> Path:
    la, lb = _blob_label((6, 8, 5), 0), _blob_label((7, 5, 4), 1)
    return _write_dataset(
        root,
        {
            "ct": [
                {"id": "c1", "split": "train", "image": _image_for(la), "label": la},
                {"id": "c2", "split": "test", "image": _image_for(lb, 1), "label": lb},
            ],
            "mr": [{"id": "m1", "split": "train", "image": _image_for(la, 2) * 3.0}],
        },
    )


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- geometry


def test_axial_slices_agree_between_ras_and_permuted_files(tmp_path: Path) -> None:
    lab = _blob_label((5, 6, 4))  # (R, A, S)
    img = _image_for(lab)
    permuted = {"image": img.transpose(2, 0, 1), "label": lab.transpose(2, 0, 1), "affine": PERMUTED}  # (S, R, A)
    ds = _write_dataset(
        tmp_path / "ds",
        {
            "ras": [{"id": "a", "split": "train", "image": img, "label": lab}],
            "perm": [{"id": "a", "split": "train", **permuted}],
        },
    )
    index = prepare_dataset(ds, tmp_path / "out", axis="axial", size=6, progress=False)
    ras, perm = index.case("ras", "a"), index.case("perm", "a")
    assert (ras.geometry.axis, perm.geometry.axis) == (2, 0)
    assert ras.load_label().shape == (4, 6, 6)
    np.testing.assert_array_equal(ras.load_label(), perm.load_label())
    np.testing.assert_allclose(ras.load_image(), perm.load_image(), atol=1e-6)
    np.testing.assert_array_equal(slices_to_volume(np.asarray(perm.load_label()), perm.geometry), permuted["label"])


# ---------------------------------------------------------------------------------- prepare


def test_prepare_writes_stacks_and_a_complete_index(tmp_path: Path) -> None:
    ds = _two_domain_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    index = prepare_dataset(ds, out, axis="axial", size=8, clip_percentiles=(1.0, 99.0), progress=False)

    assert index.class_names == ["background", "liver", "spleen"]
    assert index.labels == LABELS
    assert index.domains == ["ct", "mr"]
    assert index.modalities["mr"] == "mr imaging"
    assert index.settings == {
        "axis": "axial",
        "size": 8,
        "clip_percentiles": [1.0, 99.0],
        "normalization": {"method": "percentile_zscore"},
    }
    assert [c.id for c in index.cases("ct", "train")] == ["c1"]
    assert [c.id for c in index.cases("ct", ("train", "test"))] == ["c1", "c2"]

    c1 = index.case("ct", "c1")
    assert c1.image == out / "ct" / "c1_img.npy" and c1.label == out / "ct" / "c1_seg.npy"
    img, lab = c1.load_image(), c1.load_label()
    assert isinstance(img, np.memmap)
    assert img.dtype == np.float32 and img.shape == (5, 8, 8)
    assert lab.dtype == np.uint8 and lab.shape == (5, 8, 8)
    assert img.min() == -1.0 and img.max() == 1.0
    assert c1.original_shape == (6, 8, 5) and c1.geometry.pad == ((1, 1), (0, 0))
    np.testing.assert_array_equal(slices_to_volume(np.asarray(lab), c1.geometry), _blob_label((6, 8, 5), 0))
    assert c1.foreground_slices == tuple(int(s) for s in range(5) if lab[s].any())
    np.testing.assert_array_equal(c1.affine, np.eye(4))
    assert isinstance(c1.normalization, NormalizationRecord)
    assert c1.normalization.percentiles == (1.0, 99.0)
    raw = _image_for(_blob_label((6, 8, 5), 0))
    assert c1.normalization.clip_high == pytest.approx(np.percentile(raw, 99.0), rel=1e-5)

    m1 = index.case("mr", "m1")
    assert not m1.labelled and m1.label is None and m1.foreground_slices is None
    assert not (out / "mr" / "m1_seg.npy").exists()
    with pytest.raises(DatasetError, match="mr/m1 is unlabelled"):
        m1.load_label()

    data = json.loads((out / INDEX_FILE).read_text())
    assert data["complete"] is True
    assert data["dataset"]["path"] == str((tmp_path / "ds").resolve())
    entry = data["cases"][0]
    assert entry["files"] == {"image": "ct/c1_img.npy", "label": "ct/c1_seg.npy"}
    assert entry["n_slices"] == 5 and entry["labelled"] is True and entry["original_shape"] == [6, 8, 5]
    cfg = yaml.safe_load((out / "prepare.yaml").read_text())
    assert cfg["axis"] == "axial" and cfg["size"] == 8 and cfg["clip_percentiles"] == [1.0, 99.0]
    assert load_prepared(out).all_cases[1].id == "c2"


def test_prepare_honours_the_domain_channel(tmp_path: Path) -> None:
    lab = _blob_label((4, 4, 3))
    four_d = np.stack([np.zeros(lab.shape), _image_for(lab) + 1000.0], axis=-1).astype(np.float32)
    ds = _write_dataset(
        tmp_path / "ds", {"mr": [{"id": "m", "split": "train", "image": four_d, "label": lab}]}, {"mr": 1}
    )
    index = prepare_dataset(ds, tmp_path / "out", size=4, clip_percentiles=(0.0, 100.0), progress=False)
    rec = index.case("mr", "m").normalization
    assert isinstance(rec, NormalizationRecord)
    assert rec.mean == pytest.approx(float(four_d[..., 1].mean()), rel=1e-5)


def test_second_run_rewrites_nothing_and_changes_redo_only_what_changed(tmp_path: Path) -> None:
    ds = _two_domain_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    prepare_dataset(ds, out, size=8, progress=False)
    first = _mtimes(out)
    prepare_dataset(ds, out, size=8, progress=False)
    assert _mtimes(out) == first

    # A newer source file re-prepares that case only.
    src = ds / "ct" / "c2_img.nii.gz"
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    prepare_dataset(ds, out, size=8, progress=False)
    now = _mtimes(out)
    changed = {k for k in first if now[k] != first[k]}
    assert changed == {"ct/c2_img.npy", "ct/c2_seg.npy", INDEX_FILE}

    # Another setting re-prepares every case.
    index = prepare_dataset(ds, out, size=10, progress=False)
    assert index.case("ct", "c1").load_image().shape == (5, 10, 10)
    later = _mtimes(out)
    assert all(later[k] != now[k] for k in now if k.endswith(".npy"))


def test_a_missing_listed_file_is_reported_then_reprepared(tmp_path: Path) -> None:
    ds = _two_domain_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    prepare_dataset(ds, out, size=8, progress=False)
    (out / "ct" / "c1_seg.npy").unlink()
    with pytest.raises(MissingPathError, match=r"c1_seg.npy"):
        load_prepared(out)
    prepare_dataset(ds, out, size=8, progress=False)
    assert load_prepared(out).case("ct", "c1").load_label().shape == (5, 8, 8)


def test_an_interrupted_run_leaves_no_trusted_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _two_domain_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    real_save = prep._save_npy

    def failing_save(path: Path, array: np.ndarray) -> None:
        if path.name == "c2_seg.npy":
            # What a killed process leaves: a half-written temporary file, never renamed.
            (path.parent / f".{path.name}.tmp-dead").write_bytes(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        real_save(path, array)

    monkeypatch.setattr(prep, "_save_npy", failing_save)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(ds, out, size=8, progress=False)
    data = json.loads((out / INDEX_FILE).read_text())
    assert data["complete"] is False
    assert [c["id"] for c in data["cases"]] == ["c1"]
    assert not (out / "ct" / "c2_seg.npy").exists()
    with pytest.raises(DatasetError, match="interrupted"):
        load_prepared(out)

    monkeypatch.setattr(prep, "_save_npy", real_save)
    c1_mtime = (out / "ct" / "c1_img.npy").stat().st_mtime_ns
    index = prepare_dataset(ds, out, size=8, progress=False)
    assert (out / "ct" / "c1_img.npy").stat().st_mtime_ns == c1_mtime  # resumed, not redone
    listed = {p for c in index.all_cases for p in (c.image, c.label) if p is not None}
    assert out / "ct" / ".c2_seg.npy.tmp-dead" not in listed
    assert index.case("ct", "c2").load_label().shape == (4, 8, 8)


def test_load_prepared_without_index_says_to_run_prepare(tmp_path: Path) -> None:
    with pytest.raises(MissingPathError, match=r"index\.json is missing.*tcsa-uda prepare"):
        load_prepared(tmp_path)


def test_unknown_domain_and_split_are_errors(tmp_path: Path) -> None:
    index = prepare_dataset(_two_domain_dataset(tmp_path / "ds"), tmp_path / "out", size=8, progress=False)
    with pytest.raises(DatasetError, match="prepared domains are ct, mr"):
        index.cases("us")
    with pytest.raises(DatasetError, match="split"):
        index.cases("ct", "training")


def test_out_of_range_label_raises_naming_the_file(tmp_path: Path) -> None:
    lab = _blob_label((4, 4, 3))
    lab[0, 0, 0] = 7
    ds = _write_dataset(
        tmp_path / "ds", {"ct": [{"id": "bad", "split": "train", "image": _image_for(lab), "label": lab}]}
    )
    with pytest.raises(DatasetError, match=r"\[ct/bad\] .*bad_seg\.nii\.gz: .*declared ids \[0, 1, 2\].*\[7\]"):
        prepare_dataset(ds, tmp_path / "out", size=4, progress=False)


@pytest.mark.parametrize(
    "affine, what",
    [
        (np.diag([-1.0, 1.0, 1.0, 1.0]), "flipped"),
        (np.array([[1, 0, 0, 4.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "shifted"),
    ],
)
def test_label_on_another_grid_is_refused_like_verify(tmp_path: Path, affine: np.ndarray, what: str) -> None:
    """prepare runs the checks of verify (one code path): a flipped or shifted label affine is refused."""
    from tcsa_uda.data.verify import verify_dataset

    ds = _two_domain_dataset(tmp_path / "ds")
    la = _blob_label((6, 8, 5), 0)
    _save(ds / "ct" / "c1_seg.nii.gz", la, affine)  # same array, another grid
    problems = [str(p) for p in verify_dataset(ds).problems]
    assert len(problems) == 1 and "label affine" in problems[0], what
    with pytest.raises(DatasetError) as info:
        prepare_dataset(ds, tmp_path / "out", size=4, progress=False)
    assert str(info.value).startswith(problems[0]) and "\n" not in str(info.value)
    assert not (tmp_path / "out" / INDEX_FILE).exists()


def test_out_folder_must_be_empty_or_a_prepare_of_the_same_dataset(tmp_path: Path) -> None:
    from tcsa_uda.errors import OutputExistsError

    ds = _two_domain_dataset(tmp_path / "ds")
    other = _two_domain_dataset(tmp_path / "other")
    out = tmp_path / "out"
    prepare_dataset(ds, out, size=4, progress=False)
    prepare_dataset(ds, out, size=4, progress=False)  # a previous prepare of the same dataset: reused
    index_before = (out / INDEX_FILE).read_bytes()
    with pytest.raises(OutputExistsError) as info:
        prepare_dataset(other, out, size=4, progress=False)
    message = str(info.value)
    assert f"prepare --out {out}" in message and f"a prepare of another dataset ({ds.resolve()})" in message
    assert "--overwrite" in message and (out / INDEX_FILE).read_bytes() == index_before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match=r"not empty and is not a previous prepare"):
        prepare_dataset(ds, mine, size=4, progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    index = prepare_dataset(other, out, size=4, progress=False, overwrite=True)
    assert index.dataset_path == str(other.resolve())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"axis": "oblique"}, "axis"), ({"size": 0}, "size"), ({"clip_percentiles": (50.0, 10.0)}, "clip_percentiles")],
)
def test_bad_settings_raise_config_error(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prepare_dataset(tmp_path, tmp_path / "out", progress=False, **kwargs)


# ---------------------------------------------------------------------------------- normalization choice


def _z_dataset(root: Path, ranges: dict[str, list[float]] | None = None) -> Path:
    """Domains CT and MR holding z-score-like intensities; ``ranges`` become dataset.json intensity ranges."""
    lab = _blob_label((6, 6, 4))
    img = (lab * 1.5 - 1.0 + np.random.default_rng(0).normal(0.0, 0.1, lab.shape)).astype(np.float32)
    ds = _write_dataset(
        root,
        {
            "CT": [{"id": "c", "split": "train", "image": img, "label": lab}],
            "MR": [{"id": "m", "split": "train", "image": img * 2.0, "label": lab}],
        },
    )
    if ranges:
        data = json.loads((ds / "dataset.json").read_text())
        for dname, pair in ranges.items():
            data["domains"][dname]["intensity_range"] = pair
        (ds / "dataset.json").write_text(json.dumps(data))
    return ds


def _raw(ds: Path, dname: str, cid: str) -> np.ndarray:
    return np.asarray(load_nifti(ds / dname / f"{cid}_img.nii.gz").array, dtype=np.float64)


def test_fixed_preset_maps_each_domain_with_its_own_range(tmp_path: Path) -> None:
    ds = _z_dataset(tmp_path / "ds")
    index = prepare_dataset(
        ds, tmp_path / "out", axis="2", size=6, normalization="fixed", fixed_preset="sifa", progress=False
    )
    assert index.settings["normalization"] == {"method": "fixed", "ranges": {"CT": [-2.8, 3.2], "MR": [-1.8, 4.4]}}
    for dname, cid, (lo, hi) in (("CT", "c", (-2.8, 3.2)), ("MR", "m", (-1.8, 4.4))):
        expected = np.moveaxis(2.0 * (_raw(ds, dname, cid) - lo) / (hi - lo) - 1.0, 2, 0)  # (S, 6, 6), no resize
        case = index.case(dname, cid)
        np.testing.assert_allclose(case.load_image(), expected, atol=1e-6)
        assert case.normalization.to_dict() == {"method": "fixed_range_to_unit", "domain": dname, "low": lo, "high": hi}


def test_fixed_ranges_come_from_flags_then_preset_then_dataset_json(tmp_path: Path) -> None:
    ds = _z_dataset(tmp_path / "ds", ranges={"CT": [-1.0, 1.0], "MR": [-4.0, 4.0]})
    index = prepare_dataset(ds, tmp_path / "a", axis="2", size=6, normalization="fixed", progress=False)
    assert index.settings["normalization"]["ranges"] == {"CT": [-1.0, 1.0], "MR": [-4.0, 4.0]}
    index = prepare_dataset(
        ds,
        tmp_path / "b",
        axis="2",
        size=6,
        normalization="fixed",
        fixed_preset="sifa",
        fixed_ranges={"CT": (0.0, 2.0)},
        progress=False,
    )
    assert index.settings["normalization"]["ranges"] == {"CT": [0.0, 2.0], "MR": [-1.8, 4.4]}
    np.testing.assert_allclose(
        index.case("CT", "c").load_image(), np.moveaxis(_raw(ds, "CT", "c") - 1.0, 2, 0), atol=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"normalization": "fixed"}, ConfigError, r"no intensity range for domain\(s\) \['CT', 'MR'\]"),
        ({"normalization": "fixed", "fixed_ranges": {"CT": (0.0, 1.0)}}, ConfigError, r"domain\(s\) \['MR'\]"),
        ({"normalization": "fixed", "fixed_ranges": {"PET": (0.0, 1.0)}}, ConfigError, r"no domain\(s\) \['PET'\]"),
        ({"normalization": "fixed", "fixed_preset": "mpscl"}, ConfigError, "--fixed-preset: expected one of 'sifa'"),
        ({"fixed_preset": "sifa"}, ConfigError, "apply to --normalization fixed, not to 'percentile_zscore'"),
        ({"normalization": "minmax"}, ConfigError, "expected one of 'percentile_zscore', 'fixed', 'none'"),
        ({"normalization": "none"}, DatasetError, "none expects intensities already in"),
    ],
)
def test_bad_normalization_choices_are_clear_errors(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    ds = _z_dataset(tmp_path / "ds")
    with pytest.raises(error, match=match):
        prepare_dataset(ds, tmp_path / "out", axis="2", size=6, progress=False, **kwargs)


def test_none_keeps_unit_range_data_and_a_folder_of_the_old_format_is_reused(tmp_path: Path) -> None:
    lab = _blob_label((6, 6, 4))
    img = np.clip(lab * 0.5 - 0.5, -1.0, 1.0).astype(np.float32)
    ds = _write_dataset(tmp_path / "ds", {"ct": [{"id": "c", "split": "train", "image": img, "label": lab}]})
    index = prepare_dataset(ds, tmp_path / "none", axis="2", size=6, normalization="none", progress=False)
    np.testing.assert_array_equal(index.case("ct", "c").load_image(), np.moveaxis(img, 2, 0))

    out = tmp_path / "old"
    prepare_dataset(ds, out, axis="2", size=6, progress=False)
    data = json.loads((out / INDEX_FILE).read_text())  # as written before the normalization option existed
    del data["settings"]["normalization"]
    for entry in data["cases"]:
        del entry["settings"]["normalization"]
    (out / INDEX_FILE).write_text(json.dumps(data))
    npy = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    index = prepare_dataset(ds, out, axis="2", size=6, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == npy  # reused, not prepared again
    assert index.settings["normalization"] == {"method": "percentile_zscore"}
