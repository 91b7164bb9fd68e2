"""Output folders: a command never writes over a file it did not create, unless told to with ``--overwrite``.

A command that writes into a folder first *claims* the files it will write
(:meth:`OutputFolder.claim`), before any slow work:

* a file that does not exist may be written;
* a file that the same command wrote there before may be replaced (a rerun);
* any other existing file (the user's own, another command's, another tool's) is refused,
  naming the file, unless ``overwrite``.

The files a command wrote are recorded in ``OUT/.tcsa-uda-outputs.json`` (relative path ->
command), written before the files themselves. A folder that holds a dataset (``dataset.json``)
or a prepared dataset (``index.json``) that the command did not write is refused as a whole
unless ``overwrite``: its labels and index are not the command's to replace.

Commands that own a whole folder (``convert``, ``demo``) use :meth:`OutputFolder.claim_folder`:
the folder must be absent, empty, or written by the same command before.

``overwrite`` never deletes anything: it lets the command write over the files it names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcsa_uda.atomic import atomic_write_json, output_write_error
from tcsa_uda.errors import OutputExistsError

RECORD_FILE = ".tcsa-uda-outputs.json"
"""What tcsa-uda wrote in an output folder: ``{"format": 1, "files": {path: command}, "folder": command}``."""

DATASET_FILES: tuple[str, ...] = ("dataset.json", "index.json")
"""Files that mark a dataset folder (``dataset.json``) or a prepared folder (``index.json``)."""

_LISTED = 5  # existing files named in one message


class OutputFolder:
    """The output folder of one command, with what tcsa-uda wrote there before.

    Args:
        folder: the output folder (created when the first file is claimed).
        command: the command's name, recorded with every file it claims (e.g. ``evaluate``).
        overwrite: allow writing over files the command did not create.

    Raises:
        OutputExistsError: ``folder`` is a file, or holds a dataset or prepared dataset that
            ``command`` did not write (unless ``overwrite``).
    """

    def __init__(self, folder: str | os.PathLike[str], command: str, *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.command = command
        self.overwrite = overwrite
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputExistsError(f"{command} --out {self.folder}: expected a folder, found a file.")
        self._record = _read_record(self.folder / RECORD_FILE)
        if not overwrite and self._record.get("folder") != command:
            foreign = [name for name in DATASET_FILES if (self.folder / name).exists() and not self.owns(name)]
            if foreign:
                raise OutputExistsError(
                    f"{command} --out {self.folder}: the folder holds a dataset ({', '.join(foreign)}) that {command} "
                    "did not write; choose another output folder, or pass --overwrite to write into it anyway."
                )

    def owns(self, relative: str | os.PathLike[str]) -> bool:
        """True when ``relative`` was written into this folder by this command before."""
        return self._record["files"].get(Path(relative).as_posix()) == self.command

    def claim(self, paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
        """Check and record the files the command will write (each given as ``folder / relative path``).

        Creates the folder and records the claim in :data:`RECORD_FILE`, so a rerun of the same
        command may replace them.

        Returns:
            The claimed paths, absolute (``folder / relative``).

        Raises:
            OutputExistsError: a path lies outside the folder, or an existing file was not written
                by this command (up to five are named), unless ``overwrite``.
            OutputWriteError: the folder or the record cannot be written.
        """
        rels = [self._relative(p) for p in paths]
        if not self.overwrite:
            foreign = [r for r in rels if (self.folder / r).exists() and not self.owns(r)]
            if foreign:
                shown = ", ".join(str(self.folder / r) for r in foreign[:_LISTED])
                more = f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else ""
                raise OutputExistsError(
                    f"{self.command} --out {self.folder}: would write over {len(foreign)} file(s) that "
                    f"{self.command} did not create ({shown}{more}); choose another output folder, or pass "
                    "--overwrite to replace them."
                )
        new = {r: self.command for r in rels if self._record["files"].get(r) != self.command}
        if new:
            self._record["files"].update(new)
            self._save()
        return [self.folder / r for r in rels]

    def claim_folder(self) -> None:
        """Claim the whole folder: it must be absent, empty, or written by this command before.

        Raises:
            OutputExistsError: the folder holds files of something else (named), unless ``overwrite``.
            OutputWriteError: the folder or the record cannot be written.
        """
        if self._record.get("folder") != self.command and not self.overwrite and self.folder.is_dir():
            others = sorted(p.name for p in self.folder.iterdir() if p.name != RECORD_FILE)
            if others:
                shown = ", ".join(others[:_LISTED]) + (", ..." if len(others) > _LISTED else "")
                raise OutputExistsError(
                    f"{self.command} --out {self.folder}: the folder is not empty ({shown}) and was not written by "
                    f"{self.command}; choose a new folder, or pass --overwrite to write into it anyway."
                )
        if self._record.get("folder") != self.command:
            self._record["folder"] = self.command
            self._save()

    def _relative(self, path: str | os.PathLike[str]) -> str:
        try:
            rel = Path(path).relative_to(self.folder)
        except ValueError:
            rel = None
        if rel is None or ".." in rel.parts or not rel.parts:
            raise OutputExistsError(f"{self.command}: {path} is not a file inside the output folder {self.folder}.")
        return rel.as_posix()

    def _save(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_write_error(self.folder, exc) from exc
        atomic_write_json(self.folder / RECORD_FILE, self._record)


def _read_record(path: Path) -> dict[str, Any]:
    """The record of ``path``; an absent or unreadable record records nothing (every file is foreign)."""
    empty: dict[str, Any] = {"format": 1, "files": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return empty
    files = {str(k): str(v) for k, v in data["files"].items()}
    out: dict[str, Any] = {"format": 1, "files": files}
    if isinstance(data.get("folder"), str):
        out["folder"] = data["folder"]
    return out


def check_new_file(path: str | os.PathLike[str], command: str, *, overwrite: bool = False) -> Path:
    """For commands that write one file the user names: refuse an existing file unless ``overwrite``.

    Raises:
        OutputExistsError: ``path`` exists (or is a folder).
    """
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(f"{command} --out {p}: expected a file name, found a folder.")
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"{command} --out {p}: the file exists; choose another name, or pass --overwrite to replace it."
        )
    return p
