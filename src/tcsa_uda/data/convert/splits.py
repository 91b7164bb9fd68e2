"""Splits of the converters: the literature's test ids, a small seeded val share, split files.

``split.json`` (written by every converter, read back by ``convert brats --split``) lists the case
ids of every domain and split, with the seed that drew any random part.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from tcsa_uda.atomic import atomic_write_json
from tcsa_uda.data.contract import SPLITS
from tcsa_uda.data.convert.common import natural_key
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError

SPLIT_FILE = "split.json"
SPLIT_FORMAT = "tcsa-uda split v1"
MIN_CASES_FOR_VAL = 10
"""A domain needs at least this many labelled training cases before a val split is carved."""
DEFAULT_VAL_FRACTION = 0.1
"""Share of the labelled training cases moved to ``val`` (rounded, at least 1) by default."""


def check_fraction(value: float, name: str) -> float:
    """Validate a split fraction in [0, 1).

    Raises:
        ConfigError: naming the option and the value found.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name}: expected a fraction in [0, 1), found {value!r}.")
    return float(value)


def domain_rng(seed: int, domain: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the domain name (stable across runs)."""
    return np.random.default_rng([int(seed), zlib.crc32(domain.encode("utf-8"))])


def carve_val(
    train_ids: Sequence[str], fraction: float, seed: int, domain: str, min_cases: int = MIN_CASES_FOR_VAL
) -> list[str]:
    """The training ids moved to ``val``: deterministic for ``seed`` and ``domain``.

    ``k = max(1, round(fraction * n))`` ids are drawn from the ``n`` sorted ids when
    ``n >= min_cases`` and ``fraction > 0``; otherwise none (small downloads keep every case for
    training).

    Returns:
        The val ids, sorted naturally.
    """
    fraction = check_fraction(fraction, "val fraction")
    n = len(train_ids)
    if fraction <= 0.0 or n < min_cases:
        return []
    k = max(1, math.floor(fraction * n + 0.5))
    pool = sorted(train_ids, key=natural_key)
    picked = domain_rng(seed, domain).choice(len(pool), size=k, replace=False)
    return sorted((pool[int(i)] for i in picked), key=natural_key)


def write_split_file(
    path: Path, dataset: str, seed: int, splits: Mapping[str, Mapping[str, Sequence[str]]], notes: Sequence[str] = ()
) -> None:
    """Write ``split.json``: ``{"format", "dataset", "seed", "domains": {domain: {split: [ids]}}}``."""
    domains = {d: {s: sorted(per.get(s, []), key=natural_key) for s in SPLITS} for d, per in splits.items()}
    atomic_write_json(
        path, {"format": SPLIT_FORMAT, "dataset": dataset, "seed": int(seed), "domains": domains, "notes": list(notes)}
    )


def read_split_file(path: str | os.PathLike[str], domains: Collection[str]) -> dict[str, dict[str, list[str]]]:
    """Read a ``split.json`` written by a converter and check it.

    Args:
        path: the split file.
        domains: the domain names the file must define.

    Returns:
        domain -> split -> case ids.

    Raises:
        MissingPathError: the file does not exist.
        DatasetError: not a split file, a domain or split missing, an id listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(
            f"{path}: split file does not exist (expected a split.json written by tcsa-uda convert)."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: expected a JSON split file, found unreadable content ({exc}).") from exc
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT or not isinstance(data.get("domains"), dict):
        raise DatasetError(
            f"{path}: expected a split file with format {SPLIT_FORMAT!r} and a 'domains' mapping, found "
            f"{str(data)[:120]!r}."
        )
    out: dict[str, dict[str, list[str]]] = {}
    seen: dict[str, str] = {}
    for domain in domains:
        per = data["domains"].get(domain)
        if not isinstance(per, dict):
            raise DatasetError(f"{path}: expected domain {domain!r} in 'domains', found {sorted(data['domains'])}.")
        out[domain] = {}
        for split in SPLITS:
            ids = per.get(split, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise DatasetError(f"{path}: domains.{domain}.{split}: expected a list of case ids, found {ids!r}.")
            for cid in ids:
                if cid in seen:
                    raise DatasetError(
                        f"{path}: case {cid!r} is listed twice ({seen[cid]} and {domain}/{split}); each case belongs "
                        "to one domain and split."
                    )
                seen[cid] = f"{domain}/{split}"
            out[domain][split] = list(ids)
    return out
