"""``DatasetWriter``: files, dataset.json, split.json, summary and verification of a conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tcsa_uda.data.convert.writer import DatasetWriter
from tcsa_uda.errors import DatasetError


def test_writer_rejects_ids_outside_the_classes_and_verifies(tmp_path):
    w = DatasetWriter(
        out=tmp_path / "ds", name="t", class_names=("background", "x"), modalities={"CT": "computed tomography"}
    )
    img = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(DatasetError, match=r"expected class ids in 0..1, found values in \[2, 2\]"):
        w.add("CT", "1", "train", img, np.eye(4), np.full((4, 4, 3), 2, np.uint8), source="s")
    with pytest.raises(DatasetError, match=r"label shape to equal the image shape"):
        w.add("CT", "1", "train", img, np.eye(4), np.zeros((4, 4, 2), np.uint8), source="s")
    w.add("CT", "1", "test", img + 1, np.eye(4), np.ones((4, 4, 3), np.uint8), source="s")
    res = w.finish()
    assert res.report.ok
    assert res.summary["domains"]["CT"]["voxels"] == {"background": 0, "x": 48}
    assert json.loads((tmp_path / "ds" / "split.json").read_text())["domains"]["CT"]["test"] == ["1"]


def test_writer_fails_loudly_when_verify_finds_a_problem(tmp_path):
    w = DatasetWriter(
        out=tmp_path / "ds", name="t", class_names=("background", "x"), modalities={"MR": "magnetic resonance imaging"}
    )
    img = np.ones((4, 4, 3), np.float32)
    img[0, 0, 0] = np.nan
    w.add("MR", "1", "test", img, np.eye(4), np.ones((4, 4, 3), np.uint8), source="s")
    with pytest.raises(
        DatasetError, match=r"(?s)failed verification:\n.*\[MR/1\].*expected finite intensities, found 1 NaN"
    ):
        w.finish()
    summary = json.loads((tmp_path / "ds" / "summary.json").read_text())
    assert summary["verify"]["ok"] is False and "NaN" in summary["verify"]["problems"][0]


def test_writer_refuses_a_domain_without_cases(tmp_path):
    w = DatasetWriter(
        out=tmp_path / "ds", name="t", class_names=("background", "x"), modalities={"CT": "ct", "MR": "mr"}
    )
    w.add("CT", "1", "test", np.ones((2, 2, 2), np.float32), np.eye(4), None, source="s")
    w.note("MR: nothing found")
    with pytest.raises(DatasetError, match=r"no case was converted for domain\(s\) \['MR'\].*\nMR: nothing found"):
        w.finish()
