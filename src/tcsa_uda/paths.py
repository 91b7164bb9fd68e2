"""Data, results and cache roots, resolved from arguments or environment variables.

No literal machine paths exist anywhere in the package: a command either receives a path as an
argument or falls back to one of these environment variables, and says how to set it when both
are missing (the nnU-Net convention).

``TCSA_UDA_DATA``    root under which datasets (``dataset.json`` folders) and prepared folders
                     live: a relative dataset path that does not exist where the command runs
                     is looked up there (:func:`resolve_data_path`).
``TCSA_UDA_RESULTS`` root under which run folders are written when ``train`` gets no ``--out``.
``TCSA_UDA_CACHE``   cache for text embeddings (default: ``./.tcsa_uda_cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tcsa_uda.errors import MissingPathError

DATA_ENV = "TCSA_UDA_DATA"
RESULTS_ENV = "TCSA_UDA_RESULTS"
CACHE_ENV = "TCSA_UDA_CACHE"
DEFAULT_CACHE = ".tcsa_uda_cache"


def resolve_data_path(path: str | os.PathLike[str]) -> Path:
    """A dataset or prepared folder (or a file in one) given on the command line or in a config.

    ``path`` as given when it exists or is absolute; else ``$TCSA_UDA_DATA/path`` when that
    variable is set and the path exists there; else ``path`` as given (the caller's own "not
    found" error then names it, see :func:`data_path_hint`).
    """
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    root = os.environ.get(DATA_ENV)
    if root and (Path(root) / p).exists():
        return Path(root) / p
    return p


def data_path_hint() -> str:
    """Where relative dataset paths are looked up, for "not found" messages."""
    root = os.environ.get(DATA_ENV)
    return f"looked in the current folder and under ${DATA_ENV}={root}" if root else f"${DATA_ENV} is not set"


def results_root(given: str | os.PathLike[str] | None = None) -> Path:
    """The run folders root: ``given`` if not None, else ``$TCSA_UDA_RESULTS``.

    Raises:
        MissingPathError: neither is set; the message says how to set the variable.
    """
    if given is not None:
        return Path(given)
    value = os.environ.get(RESULTS_ENV)
    if not value:
        raise MissingPathError(
            f"No results root given: pass --out or set the environment variable {RESULTS_ENV} "
            f"(for example `export {RESULTS_ENV}=$HOME/tcsa_uda/results`)."
        )
    return Path(value)


def cache_root(given: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``given``, else ``$TCSA_UDA_CACHE``, else ``./.tcsa_uda_cache``."""
    if given is not None:
        return Path(given)
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else Path(DEFAULT_CACHE)
