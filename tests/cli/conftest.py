"""Shared data of the CLI tests: a tiny phantom, prepared, and a random text-embedding file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tcsa_uda.data.phantom import generate_phantom
from tcsa_uda.data.prepare import prepare_dataset


def _tiny_data(root: Path) -> None:
    """``root/raw`` (5 cases per domain, 16 x 48 x 48), ``root/prepared`` (32 px) and ``root/text.pt``
    (2 domains x classes x 16, seeded)."""
    generate_phantom(root / "raw", seed=3, cases=5, shape=(16, 48, 48), progress=False)
    index = prepare_dataset(root / "raw", root / "prepared", size=32, progress=False)
    g = torch.Generator().manual_seed(0)
    torch.save({"embeddings": torch.randn(2, index.num_classes, 16, generator=g)}, root / "text.pt")


@pytest.fixture(scope="session")
def tiny_data() -> Callable[[Path], None]:
    """``tiny_data(root)``: write the tiny phantom, its prepared folder and ``text.pt`` under ``root``."""
    return _tiny_data
