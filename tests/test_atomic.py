"""Tests of atomic writes: an interrupted write leaves the old file and no trusted partial file."""

import pytest

from tcsa_uda.atomic import atomic_write_text, atomic_write_with


def test_interrupted_write_keeps_old_file(tmp_path):
    dest = tmp_path / "f.txt"
    atomic_write_text(dest, "old")

    def failing(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_with(dest, failing)
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_written_files_get_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt").stat().st_mode & 0o777 == 0o644
