"""Data and results roots, resolved from arguments or environment variables.

No literal machine paths exist anywhere in the package: a command either receives a path as an
argument or falls back to one of these environment variables, and says how to set it when both
are missing (the nnU-Net convention).

``TCSA_UDA_DATA``    root under which datasets (``dataset.json`` folders) live.
``TCSA_UDA_RESULTS`` root under which run folders are written.
``TCSA_UDA_CACHE``   cache for text embeddings (default: ``<results>/.cache`` or ``./.tcsa_uda_cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tcsa_uda.errors import MissingPathError

DATA_ENV = "TCSA_UDA_DATA"
RESULTS_ENV = "TCSA_UDA_RESULTS"
CACHE_ENV = "TCSA_UDA_CACHE"


def _from_env(name: str, what: str, given: str | os.PathLike[str] | None) -> Path:
    if given is not None:
        return Path(given)
    value = os.environ.get(name)
    if not value:
        raise MissingPathError(
            f"No {what} given: pass it as an argument or set the environment variable {name} "
            f"(for example `export {name}=$HOME/tcsa_uda/{what.split()[0]}`)."
        )
    return Path(value)


def data_root(given: str | os.PathLike[str] | None = None) -> Path:
    """The datasets root: ``given`` if not None, else ``$TCSA_UDA_DATA``."""
    return _from_env(DATA_ENV, "data root", given)


def results_root(given: str | os.PathLike[str] | None = None) -> Path:
    """The run folders root: ``given`` if not None, else ``$TCSA_UDA_RESULTS``."""
    return _from_env(RESULTS_ENV, "results root", given)


def cache_root(given: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``given``, else ``$TCSA_UDA_CACHE``, else ``./.tcsa_uda_cache``."""
    if given is not None:
        return Path(given)
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else Path(".tcsa_uda_cache")
