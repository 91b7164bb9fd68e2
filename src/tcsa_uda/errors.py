"""Exceptions that carry a message meant for the user.

Every error that results from bad input (a file, a field, an option) is raised as a
:class:`TcsaUdaError` subclass whose message names the file or field, what was expected and
what was found. The command line prints these messages without a traceback.
"""

from __future__ import annotations


class TcsaUdaError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(TcsaUdaError, ValueError):
    """A configuration key, value or file is invalid."""


class DatasetError(TcsaUdaError, ValueError):
    """A dataset folder or its ``dataset.json`` is invalid."""


class MissingPathError(TcsaUdaError, FileNotFoundError):
    """A file or folder that is required does not exist."""


class VolumeSizeError(DatasetError):
    """A volume file claims more data than it holds, or more than the memory budget allows.

    Raised before the voxel data is read, so a corrupt header or a decompression bomb never
    allocates the memory it claims (see docs/reliability.md).
    """


class OutputExistsError(TcsaUdaError):
    """A command would write over a file it did not create, or into another dataset's folder.

    The message names the file or folder and the option that allows it (``--overwrite``).
    """


class OutputWriteError(TcsaUdaError):
    """An output file or folder cannot be written (permission denied, read-only or full disk).

    Raised where the file is written, naming the path and the reason, instead of a raw ``OSError``.
    """
