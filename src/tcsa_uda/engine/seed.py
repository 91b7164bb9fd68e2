"""Seeding of every random number generator a run uses, and their states as checkpoint values.

:func:`rng_state` returns the states of Python's ``random``, NumPy's global generator and torch's
CPU and CUDA generators as tensors and plain values only, so a checkpoint holding them is read
with ``torch.load(weights_only=True)`` (:mod:`tcsa_uda.engine.checkpoint`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Capture the RNG states so a resumed run continues the same random streams.

    Returns:
        ``python``: ``random.getstate()`` (a tuple of ints); ``numpy``: the MT19937 key as an
        int64 tensor (624,) with ``pos``, ``has_gauss`` and ``cached_gaussian``; ``torch``: the
        CPU generator state (uint8 tensor); ``cuda``: one state per visible GPU, when CUDA is available.
    """
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states captured by :func:`rng_state`."""
    random.setstate(_as_tuple(state["python"]))
    npy = state["numpy"]
    key = np.asarray(npy["key"].numpy() if isinstance(npy["key"], torch.Tensor) else npy["key"]).astype(np.uint32)
    np.random.set_state(
        (str(npy["bit_generator"]), key, int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"]))
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` needs tuples where a serialiser may have written lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
