"""A tiny prepared two-domain dataset for engine tests (written with the real pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcsa_uda.data.phantom import generate_phantom
from tcsa_uda.data.prepare import prepare_dataset


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    generate_phantom(root / "raw", seed=3, cases=5, shape=(16, 48, 48))
    prepare_dataset(root / "raw", root / "prepared", size=32, progress=False)
    return root / "prepared"


@pytest.fixture
def tiny_overrides(tiny_prepared) -> list[str]:
    return [
        f"data.prepared={tiny_prepared}",
        "data.source=MR",
        "data.target=CT",
        "data.batch_size=2",
        "model.name=light",
        "model.base_width=8",
        "text.encoder=file:" + str(tiny_prepared.parent / "text.pt"),
        "tensorboard=false",
        "progress=false",
        "device=cpu",
    ]


@pytest.fixture(autouse=True)
def _text_file(tiny_prepared):
    """A precomputed text-embedding file, so engine tests do not load the MiniLM model."""
    import torch

    from tcsa_uda.data.prepared import load_prepared

    path = tiny_prepared.parent / "text.pt"
    if not path.exists():
        idx = load_prepared(tiny_prepared)
        g = torch.Generator().manual_seed(0)
        torch.save({"embeddings": torch.randn(2, idx.num_classes, 16, generator=g)}, path)
    return path
