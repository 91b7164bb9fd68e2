"""On-disk cache of text embeddings, keyed by encoder identity and the exact prompts.

A cache entry is one ``torch.save`` file ``<cache root>/text/<key>.pt`` holding the mapping of
:meth:`tcsa_uda.text.embeddings.TextEmbeddings.to_dict`. The key is a SHA-256 over the encoder's
identity (name, path and, for model folders, the files' sizes and mtimes) and the prompts, so a
new template, class name, modality phrase or model file gives a new entry. Entries are written
atomically; an entry that cannot be read is reported and treated as a miss (a cache is never
the only copy of anything).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tcsa_uda.atomic import atomic_write_with
from tcsa_uda.paths import cache_root
from tcsa_uda.text.encoders import TORCH_LOAD_ERRORS

CACHE_SUBDIR = "text"
CACHE_VERSION = 1


def cache_key(identity: str, domains: Sequence[str], prompts: Sequence[Sequence[str]]) -> str:
    """Hex SHA-256 of the encoder identity, the domain names and the ``domains x classes`` prompts."""
    payload = {
        "version": CACHE_VERSION,
        "encoder": identity,
        "domains": list(domains),
        "prompts": [list(row) for row in prompts],
    }
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A folder of cached embedding mappings.

    Args:
        root: the cache root; ``None`` uses :func:`tcsa_uda.paths.cache_root`
            (``$TCSA_UDA_CACHE`` or ``./.tcsa_uda_cache``). Entries live in ``root/text``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.folder = cache_root(root) / CACHE_SUBDIR

    def path(self, key: str) -> Path:
        """The file of entry ``key``."""
        return self.folder / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The mapping stored under ``key``, or None when there is none or it is unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except TORCH_LOAD_ERRORS as exc:
            warnings.warn(f"{path}: unreadable text-embedding cache entry ignored ({exc})", UserWarning, stacklevel=2)
            return None
        if not isinstance(obj, Mapping):
            warnings.warn(
                f"{path}: cache entry is not a mapping ({type(obj).__name__}); ignored", UserWarning, stacklevel=2
            )
            return None
        return dict(obj)

    def save(self, key: str, payload: Mapping[str, Any]) -> Path:
        """Store ``payload`` under ``key`` atomically and return the file."""
        path = self.path(key)
        data = dict(payload)
        atomic_write_with(path, lambda fh: torch.save(data, fh))
        return path
