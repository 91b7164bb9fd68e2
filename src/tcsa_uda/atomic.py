"""Atomic file writes: a reader never sees a half-written file.

Each writer writes to a temporary file in the destination folder and renames it over the
destination (``os.replace`` is atomic on POSIX and Windows for files on one volume). An
interrupted run therefore leaves either the old file, or no file, or a ``*.tmp-*`` file that no
reader trusts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it is renamed to ``dest``.

    ``suffix`` is appended to the temporary name (some writers, e.g. ``numpy.save`` or nibabel,
    choose the format from the extension).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", suffix=suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
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
