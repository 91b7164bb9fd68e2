"""Finding and reading the files of the SIFA / MPSCL releases (tcsa_uda.data.convert.sifa_release)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.data.convert.sifa_release import (
    SliceFile,
    VolumeFile,
    find_release_files,
    read_npy_slice,
    read_test_volume,
    read_tfrecord_slices,
    release_labels,
)
from tcsa_uda.errors import DatasetError


def test_mpscl_lists_pair_images_and_labels_resolved_by_name(raw, tmp_path: Path) -> None:
    truth = raw.write_mpscl(tmp_path)
    found = find_release_files(tmp_path)
    files = found.slices[("MR", "train")]
    assert [f.number for f in files] == list(range(12))  # numeric order, not the lists' string order
    first = files[0]
    assert first.image == tmp_path / "data_np" / "train_mr" / "mr_train_slice0.npy"
    assert first.label == tmp_path / "data_np" / "gt_train_mr" / "mr_train_slice0_gt.npy"
    assert first.origin == "train_mr.txt:1" and files[10].origin == "train_mr.txt:3"  # slice0, slice1, slice10
    assert sorted(found.slices) == [("CT", "train"), ("CT", "val"), ("MR", "train"), ("MR", "val")]
    assert "MR train: 12 npy slice file(s), found by datalists train_mr.txt + train_mr_gt.txt" in found.notes
    assert sorted(found.tests["MR"]) == ["1007", "1009", "1018", "1019"]
    assert found.tests["CT"]["1003"].kind == "npz"
    image, label = read_npy_slice(files[5])
    _, unit, lab = truth["slices"][("MR", "train")][5]
    np.testing.assert_array_equal(image, unit)
    np.testing.assert_array_equal(label, lab)


def test_without_datalists_the_slices_are_found_by_their_names(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path)
    shutil.rmtree(tmp_path / "datalist")
    found = find_release_files(tmp_path)
    assert [f.number for f in found.slices[("CT", "val")]] == [0, 1, 2]
    assert all(f.origin == "by name" for f in found.slices[("CT", "val")])
    assert "CT val: 3 npy slice file(s), found by file names" in found.notes
    (tmp_path / "data_np" / "gt_val_ct" / "ct_val_slice1_gt.npy").unlink()
    with pytest.raises(DatasetError, match=r"ct_val_slice1.npy: expected its label ct_val_slice1_gt.npy .*gt_val_ct"):
        find_release_files(tmp_path)


def _rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_datalist_problems_are_named_with_file_and_line(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path)
    lists = tmp_path / "datalist"
    _rewrite(lists / "train_mr_gt.txt", lambda ls: [ls[1], ls[0], *ls[2:]])
    with pytest.raises(
        DatasetError, match=r"train_mr_gt.txt:1: expected the label of mr_train_slice0.npy \(train_mr.txt:1\)"
    ):
        find_release_files(tmp_path)
    _rewrite(lists / "train_mr_gt.txt", lambda ls: ls[:-1])
    with pytest.raises(DatasetError, match=r"train_mr_gt.txt: expected one label path per image .* found 11 lines"):
        find_release_files(tmp_path)
    (lists / "train_mr_gt.txt").unlink()
    with pytest.raises(DatasetError, match=r"train_mr.txt: expected its partner list train_mr_gt.txt"):
        find_release_files(tmp_path)


def test_foreign_paths_that_are_missing_or_ambiguous_are_errors(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path)
    (tmp_path / "data_np" / "val_ct" / "ct_val_slice2.npy").unlink()
    with pytest.raises(
        DatasetError,
        match=rf"val_ct.txt:3: expected the file 'ct_val_slice2.npy' \(listed as '{raw.FOREIGN_ROOT}/val_ct/"
        r"ct_val_slice2.npy'\) under .*, found none",
    ):
        find_release_files(tmp_path)

    raw.write_mpscl(tmp_path / "b")
    copy = tmp_path / "b" / "backup" / "mr_val_slice0.npy"
    copy.parent.mkdir()
    shutil.copy(tmp_path / "b" / "data_np" / "val_mr" / "mr_val_slice0.npy", copy)
    with pytest.raises(DatasetError, match=r"val_mr.txt:1: the file name 'mr_val_slice0.npy' is ambiguous"):
        find_release_files(tmp_path / "b")


def test_a_misnamed_listed_file_is_refused(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path)
    swap = "ct_val_slice0", "mr_val_slice0"
    _rewrite(tmp_path / "datalist" / "val_ct.txt", lambda ls: [ls[0].replace(*swap), *ls[1:]])
    with pytest.raises(DatasetError, match=r"val_ct.txt:1: expected a file named ct_val_slice<N>.npy, found"):
        find_release_files(tmp_path)


def test_test_lists_select_the_test_volumes(raw, tmp_path: Path) -> None:
    raw.write_mpscl(tmp_path)
    _rewrite(tmp_path / "datalist" / "test_mr.txt", lambda ls: ls[:2])
    found = find_release_files(tmp_path)
    assert sorted(found.tests["MR"]) == ["1007", "1009"]
    assert "MR: test volume(s) ['1018', '1019'] found but not listed in test_mr.txt; ignored" in found.notes


def test_sifa_tfrecords_give_the_middle_slice(raw, tmp_path: Path) -> None:
    truth = raw.write_sifa(tmp_path)
    found = find_release_files(tmp_path)
    files = found.slices[("CT", "train")]
    assert [f.number for f in files] == list(range(8)) and files[0].kind == "tfrecords" and files[0].label is None
    (image, label_raw), *_ = read_tfrecord_slices(files[3])
    z, lab = truth["slices"][("CT", "train")][3]
    np.testing.assert_array_equal(image, z)
    label, fives = release_labels(label_raw, "x")
    np.testing.assert_array_equal(label, lab)
    assert fives == 3 and label_raw[0, :3].tolist() == [5.0, 5.0, 5.0]
    assert sorted(found.tests["CT"]) == ["1003", "1008", "1014", "1019"]
    assert found.tests["CT"]["1003"].kind == "nifti"


def test_a_tfrecord_with_wrong_sizes_or_features_is_refused(raw, tmp_path: Path) -> None:
    path = tmp_path / "mr_val_slice0.tfrecords"
    feats = raw.sifa_slice_features(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32))
    del feats["dsize_dim0"]
    path.write_bytes(raw.tfrecord_bytes([raw.encode_example(feats)]))
    entry = SliceFile("MR", "val", 0, path, None, "by name")
    with pytest.raises(DatasetError, match=r"record 0: expected the SIFA features \['dsize_dim0'\] too"):
        read_tfrecord_slices(entry)
    feats = raw.sifa_slice_features(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.float32))
    feats["lsize_dim2"] = raw.feature_int64(3)  # says 3 slices, holds 2
    path.write_bytes(raw.tfrecord_bytes([raw.encode_example(feats)]))
    with pytest.raises(
        DatasetError, match=r"expected label_vol to hold float32 values of shape \(4, 4, 3\) \(192 bytes\), found 128"
    ):
        read_tfrecord_slices(entry)


def test_npy_and_tfrecords_of_one_modality_cannot_be_mixed(raw, tmp_path: Path) -> None:
    raw.write_sifa(tmp_path / "s")
    raw.write_mpscl(tmp_path / "m")
    shutil.move(tmp_path / "m", tmp_path / "s" / "m")
    with pytest.raises(DatasetError, match=r"CT train slices exist both as .npy \(12\) and as .tfrecords \(8\)"):
        find_release_files(tmp_path / "s")


def test_test_volumes_have_the_flip_undone_in_both_forms(raw, tmp_path: Path) -> None:
    for writer, folder in ((raw.write_mpscl, "m"), (raw.write_sifa, "s")):
        truth = writer(tmp_path / folder)
        found = find_release_files(tmp_path / folder)
        image, label = read_test_volume(found.tests["MR"]["1018"])
        z, lab = truth["test"][("MR", "1018")]
        np.testing.assert_allclose(image, z, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(label, lab)
    (tmp_path / "s" / "test_ct_image_n_labels" / "gth_ct_1014.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"image_ct_1014.nii.gz: expected its label gth_ct_1014.nii.gz"):
        find_release_files(tmp_path / "s")


def test_a_test_npz_without_its_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image_ct_1003.nii.gz.npz"
    np.savez(path, np.zeros((3, 3, 3)))
    with pytest.raises(DatasetError, match=r"expected the arrays arr_0 \(image\) and arr_1 \(label\), found \['arr_0"):
        read_test_volume(VolumeFile("CT", "1003", path, None))


def test_release_labels_map_five_to_background_and_refuse_other_values() -> None:
    label, n = release_labels(np.array([[0.0, 4.0], [5.0, 5.0]], dtype=np.float32), "x")
    assert label.dtype == np.uint8 and label.tolist() == [[0, 4], [0, 0]] and n == 2
    with pytest.raises(DatasetError, match=r"gt.npy: expected the SIFA class ids 0..4 .* found values \[7\]"):
        release_labels(np.array([[0, 7]]), "gt.npy")
    with pytest.raises(DatasetError, match="non-integer label values"):
        release_labels(np.array([[0.5]]), "gt.npy")
