"""Tests of ``tcsa-uda phantom`` (tcsa_uda.cli.phantom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.cli import main
from tcsa_uda.data.contract import DATASET_FILE, load_dataset
from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.phantom import case_seed, default_domains, generate_case


def test_phantom_command_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "phantom"
    status = main(["phantom", "--out", str(out), "--seed", "3", "--cases", "2", "--shape", "16", "48", "48", "--quiet"])
    assert status == 0
    assert "dataset.json" in capsys.readouterr().out
    spec = load_dataset(out)
    assert spec.num_classes == 5 and set(spec.domains) == {"CT", "MR"}
    for dom in spec.domains.values():
        assert [c.split for c in dom.cases] == ["train", "test"]
    # The command is a thin shim over the API: same seed and shape, same arrays.
    mr = default_domains()[1]
    expected = generate_case(mr, case_seed(3, 1, 1), (48, 48, 16))
    written = load_nifti(spec.domain("MR").cases[1].image_path(out))
    assert written.array.shape == (48, 48, 16)
    np.testing.assert_array_equal(written.array, expected.image)


def test_phantom_command_reports_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phantom", "--out", str(tmp_path / "a"), "--cases", "0"]) == 2
    assert "--cases" in capsys.readouterr().err
    assert main(["phantom", "--out", str(tmp_path / "b"), "--shape", "8", "96", "96"]) == 2
    assert "--shape" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_phantom_command_refuses_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "phantom"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["phantom", "--out", str(out), "--cases", "1", "--shape", "16", "48", "48", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not (out / DATASET_FILE).exists()
    args = ["phantom", "--out", str(out), "--cases", "1", "--shape", "16", "48", "48", "--quiet", "--overwrite"]
    assert main(args) == 0
    assert (out / DATASET_FILE).is_file() and (out / "notes.txt").read_text() == "keep me"
