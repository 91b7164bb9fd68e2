"""Helpers for method tests: random batches and a method context on any registered model."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.methods import MethodContext
from tcsa_uda.models import build_segmenter
from tcsa_uda.train_config import Fidelity, OptimConfig


def make_context(
    model_name: str, num_classes: int, fidelity: Fidelity = "paper", text_dim: int = 24, **model_kwargs
) -> MethodContext:
    torch.manual_seed(0)
    model = build_segmenter(model_name, num_classes, text_dim, **model_kwargs)
    model.train()
    return MethodContext(
        model=model,
        num_classes=num_classes,
        text_source=torch.randn(num_classes, text_dim),
        text_target=torch.randn(num_classes, text_dim),
        optim=OptimConfig(),
        fidelity=fidelity,
        device=torch.device("cpu"),
        core=model,
    )


def make_batches(batch: int, size: int, num_classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # A label map with every class present: vertical bands.
    label = torch.zeros(batch, size, size, dtype=torch.long)
    for c in range(num_classes):
        label[:, :, c * size // num_classes : (c + 1) * size // num_classes] = c
    src = {"image": torch.randn(batch, 3, size, size, generator=g), "label": label}
    tgt = {"image": torch.randn(batch, 3, size, size, generator=g)}
    return src, tgt


@pytest.fixture(name="make_context")
def make_context_fixture():
    return make_context


@pytest.fixture(name="make_batches")
def make_batches_fixture():
    return make_batches
