"""Atomic file writes: a reader never sees a half-written file.

Each writer writes to a temporary file in the destination folder and renames it over the
destination (``os.replace`` is atomic on POSIX and Windows for files on one volume). An
interrupted run therefore leaves either the old file, or no file, or a ``*.tmp-*`` file that no
reader trusts (:data:`TEMPORARY_GLOB`; ``train`` removes them when a run starts or resumes).

A write that fails for a reason of the file system (permission denied, read-only or full disk)
raises :class:`~tcsa_uda.errors.OutputWriteError` naming the destination and the reason.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from tcsa_uda.errors import OutputWriteError

TEMPORARY_GLOB = ".*.tmp-*"
"""Names of the temporary files of unfinished atomic writes (``.<name>.tmp-<random><suffix>``)."""

_REASONS: dict[int, str] = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def output_write_error(path: str | os.PathLike[str], exc: OSError) -> OutputWriteError:
    """A one-line :class:`OutputWriteError` for ``exc`` raised while writing ``path``."""
    reason = _REASONS.get(exc.errno or 0) or (exc.strerror or str(exc) or type(exc).__name__)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some space or choose an output folder on another disk"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose an output folder you can write to"
    else:
        hint = "check the output folder"
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return OutputWriteError(f"{path}: cannot write, {reason}{where}; {hint}.")


def make_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and its parents) if needed.

    Raises:
        OutputWriteError: it cannot be created (permission, read-only disk, a file in the way).
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_write_error(p, exc) from exc
    return p


@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it is renamed to ``dest``.

    ``suffix`` is appended to the temporary name (some writers, e.g. ``numpy.save`` or nibabel,
    choose the format from the extension). The body must only write the temporary file: an
    ``OSError`` raised in it is reported as a failure to write ``dest``.

    Raises:
        OutputWriteError: the folder, the temporary file or ``dest`` cannot be written (named).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", suffix=suffix, dir=dest.parent)
        os.close(fd)
    except OSError as exc:
        raise output_write_error(dest, exc) from exc
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        yield tmp_path
        os.replace(tmp_path, dest)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise output_write_error(dest, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON and write it to ``dest`` atomically."""
    atomic_write_text(dest, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def atomic_write_with(dest: str | os.PathLike[str], writer: Callable[[BinaryIO], None]) -> None:
    """Call ``writer(fh)`` on a binary file handle and move the result to ``dest`` atomically.

    Used for ``torch.save`` and ``numpy.save``, which accept open file objects.
    """
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
