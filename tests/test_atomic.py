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


@pytest.mark.parametrize(
    "code, reason",
    [(28, "the disk is full"), (13, "permission denied"), (30, "the file system is read-only")],
)
def test_write_failures_name_the_file_and_the_reason(tmp_path, monkeypatch, code, reason):
    import errno
    import os

    from tcsa_uda.errors import OutputWriteError

    assert code in (errno.ENOSPC, errno.EACCES, errno.EROFS)

    def failing(fh):
        raise OSError(code, os.strerror(code))

    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(OutputWriteError) as info:
        atomic_write_with(dest, failing)
    assert str(info.value).startswith(f"{dest}: cannot write, {reason}") and "\n" not in str(info.value)
    assert list(dest.parent.iterdir()) == []  # no temporary file left

    def no_folder(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "ro"))

    monkeypatch.setattr("tempfile.mkstemp", no_folder)
    with pytest.raises(OutputWriteError, match=r"ro.*f.txt: cannot write, permission denied"):
        atomic_write_text(tmp_path / "ro" / "f.txt", "x")


def test_make_dir_names_the_folder_that_cannot_be_created(tmp_path):
    from tcsa_uda.atomic import make_dir
    from tcsa_uda.errors import OutputWriteError

    (tmp_path / "file").write_text("")
    assert make_dir(tmp_path / "a" / "b").is_dir()
    with pytest.raises(OutputWriteError, match=r"file/sub: cannot write, .*; check the output folder"):
        make_dir(tmp_path / "file" / "sub")
