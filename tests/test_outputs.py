"""Tests of output folders: no command writes over a file it did not create without --overwrite."""

from __future__ import annotations

import json

import pytest

from tcsa_uda.errors import OutputExistsError
from tcsa_uda.outputs import RECORD_FILE, OutputFolder, check_new_file


def test_claim_refuses_foreign_files_and_allows_a_rerun(tmp_path):
    out = tmp_path / "out"
    first = OutputFolder(out, "evaluate")
    first.claim([out / "metrics.csv", out / "predictions" / "a.nii.gz"])
    assert json.loads((out / RECORD_FILE).read_text())["files"] == {
        "metrics.csv": "evaluate",
        "predictions/a.nii.gz": "evaluate",
    }
    (out / "metrics.csv").write_text("old")
    OutputFolder(out, "evaluate").claim([out / "metrics.csv"])  # its own file: a rerun may replace it
    (out / "notes.md").write_text("mine")
    with pytest.raises(OutputExistsError) as info:
        OutputFolder(out, "evaluate").claim([out / "metrics.csv", out / "notes.md"])
    message = str(info.value)
    assert (
        f"evaluate --out {out}: would write over 1 file(s) that evaluate did not create ({out / 'notes.md'})" in message
    )
    assert "--overwrite" in message
    with pytest.raises(OutputExistsError, match="predict did not create"):
        OutputFolder(out, "predict").claim([out / "metrics.csv"])  # another command's file
    OutputFolder(out, "evaluate", overwrite=True).claim([out / "notes.md"])
    assert OutputFolder(out, "evaluate").owns("notes.md")
    with pytest.raises(OutputExistsError, match="not a file inside the output folder"):
        OutputFolder(out, "evaluate").claim([tmp_path / "elsewhere.csv"])


@pytest.mark.parametrize("marker", ["dataset.json", "index.json"])
def test_a_dataset_folder_is_refused_as_an_output_folder(tmp_path, marker):
    (tmp_path / marker).write_text("{}")
    with pytest.raises(OutputExistsError, match=rf"holds a dataset \({marker}\) that evaluate did not write"):
        OutputFolder(tmp_path, "evaluate")
    OutputFolder(tmp_path, "evaluate", overwrite=True)
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputExistsError, match="expected a folder, found a file"):
        OutputFolder(tmp_path / "f", "evaluate")


def test_claim_folder_needs_an_empty_or_own_folder(tmp_path):
    out = tmp_path / "conv"
    OutputFolder(out, "convert").claim_folder()
    (out / "dataset.json").write_text("{}")
    OutputFolder(out, "convert").claim_folder()  # a rerun of the same command
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("")
    with pytest.raises(OutputExistsError, match=r"demo --out .*other: the folder is not empty \(x.txt\)"):
        OutputFolder(other, "demo").claim_folder()
    OutputFolder(other, "demo", overwrite=True).claim_folder()
    OutputFolder(other, "demo").claim_folder()  # recorded now


def test_check_new_file(tmp_path):
    check_new_file(tmp_path / "e.pt", "embed-text")
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(OutputExistsError, match=r"embed-text --out .*e.pt: the file exists.*--overwrite"):
        check_new_file(tmp_path / "e.pt", "embed-text")
    check_new_file(tmp_path / "e.pt", "embed-text", overwrite=True)
