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
    model_kwargs.setdefault("variant", "released" if fidelity == "released" else "paper")  # as the trainer does
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


@pytest.fixture(scope="session")
def tiny_run_overrides(tmp_path_factory) -> list[str]:
    """Training overrides for 2-iteration engine runs on a tiny prepared phantom (both domains labelled).

    The phantom and a random text-embedding file are written once per session with the real
    pipeline, so no test loads the text model.
    """
    from tcsa_uda.data.phantom import generate_phantom
    from tcsa_uda.data.prepare import prepare_dataset
    from tcsa_uda.data.prepared import load_prepared

    root = tmp_path_factory.mktemp("methods_tiny")
    generate_phantom(root / "raw", seed=3, cases=4, shape=(16, 64, 64), progress=False)
    prepare_dataset(root / "raw", root / "prepared", size=48, progress=False)
    idx = load_prepared(root / "prepared")
    g = torch.Generator().manual_seed(0)
    torch.save({"embeddings": torch.randn(2, idx.num_classes, 16, generator=g)}, root / "text.pt")
    return [
        f"data.prepared={root / 'prepared'}",
        "data.source=MR",
        "data.target=CT",
        "data.batch_size=2",
        "model.name=light",
        "model.base_width=8",
        "model.disc_width=8",
        f"text.encoder=file:{root / 'text.pt'}",
        f"text.cache_dir={root / 'cache'}",
        "tensorboard=false",
        "progress=false",
        "device=cpu",
        "num_threads=1",
        "log_every=1",
        "selection.max_slices=4",
    ]
