"""Tests of the torch datasets over prepared slices and of the infinite loader."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tcsa_uda.data.encoding import encode_slices
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import PreparedIndex
from tcsa_uda.data.slices import SliceDataset
from tcsa_uda.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> PreparedIndex:
    """ct: a (3 slices, train) and b (2 slices, val), labelled; mr: u (4 slices, train), unlabelled."""
    root = tmp_path_factory.mktemp("slices")
    rng = np.random.default_rng(0)
    domains: dict[str, dict[str, object]] = {}
    for dname, cases in {
        "ct": [("a", 3, "train", True), ("b", 2, "val", True)],
        "mr": [("u", 4, "train", False)],
    }.items():
        entries = []
        for cid, depth, split, labelled in cases:
            lab = rng.integers(0, 2, size=(4, 4, depth)).astype(np.uint8)
            entry = {"id": cid, "split": split, "image": f"{dname}/{cid}.nii.gz"}
            nib.save(
                nib.Nifti1Image(rng.normal(size=lab.shape).astype(np.float32), np.eye(4)),
                str(_mk(root / entry["image"])),
            )
            if labelled:
                entry["label"] = f"{dname}/{cid}_seg.nii.gz"
                nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / entry["label"]))
            entries.append(entry)
        domains[dname] = {"modality": dname, "cases": entries}
    data = {"name": "t", "labels": {"background": 0, "organ": 1}, "domains": domains}
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return prepare_dataset(root, root / "prepared", size=4, progress=False)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_items_have_three_equal_channels_and_exact_labels(index: PreparedIndex) -> None:
    ds = SliceDataset(index, "ct", split=("train", "val"), encoding="grey")
    assert len(ds) == 5
    assert [(it["case"], it["slice"]) for it in (ds[i] for i in range(5))] == [
        ("a", 0),
        ("a", 1),
        ("a", 2),
        ("b", 0),
        ("b", 1),
    ]
    item = ds[4]
    img, lab = item["image"], item["label"]
    assert img.dtype == torch.float32 and img.shape == (3, 4, 4)
    assert lab.dtype == torch.int64 and lab.shape == (4, 4)
    case = index.case("ct", "b")
    torch.testing.assert_close(img[0], torch.from_numpy(np.array(case.load_image()[1])))
    assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
    assert torch.equal(lab, torch.from_numpy(case.load_label()[1].astype(np.int64)))


def test_default_split_is_train(index: PreparedIndex) -> None:
    assert {SliceDataset(index, "ct", encoding="grey")[i]["case"] for i in range(3)} == {"a"}
    assert len(SliceDataset(index, "ct", encoding="grey")) == 3


def test_labels_of_an_unlabelled_case_are_an_error_naming_it(index: PreparedIndex) -> None:
    with pytest.raises(DatasetError, match=r"case\(s\) u of domain 'mr'"):
        SliceDataset(index, "mr", with_labels=True, encoding="grey")
    item = SliceDataset(index, "mr", with_labels=False, encoding="grey")[3]
    assert set(item) == {"image", "case", "slice"} and item["slice"] == 3


def test_an_empty_selection_is_an_error(index: PreparedIndex) -> None:
    with pytest.raises(DatasetError, match="no prepared case in split 'test'"):
        SliceDataset(index, "ct", split="test", encoding="grey")


def test_dataset_pickles_without_its_memory_maps(index: PreparedIndex) -> None:
    ds = SliceDataset(index, "ct", encoding="grey")
    first = ds[0]
    assert ds._images  # opened lazily on first access
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._images == {}
    assert torch.equal(clone[0]["image"], first["image"])


def test_prepared_case_stacks_and_the_unlabelled_error(index: PreparedIndex) -> None:
    case = index.case("ct", "a")
    assert case.load_image().shape == (3, 4, 4) and case.load_image().dtype == np.float32
    assert encode_slices(case.load_image(), "grey").shape == (3, 3, 4, 4)
    assert case.load_label().shape == (3, 4, 4)
    with pytest.raises(DatasetError, match="mr/u is unlabelled"):
        index.case("mr", "u").load_label()


def test_dataset_serves_the_encoded_image(index: PreparedIndex) -> None:
    grey = SliceDataset(index, "ct", encoding="grey")[0]["image"]
    caffe = SliceDataset(index, "ct", encoding="caffe_bgr")[0]["image"]
    torch.testing.assert_close(caffe, encode_slices(grey[0], "caffe_bgr"))
    assert not torch.allclose(caffe, grey)
    with pytest.raises(ConfigError, match="SliceDataset encoding: expected one of grey, caffe_bgr, found 'rgb'"):
        SliceDataset(index, "ct", encoding="rgb")  # type: ignore[arg-type]
