"""Device options (tcsa_uda.engine.device): no silent fallback from CUDA to CPU."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.engine.device import resolve_device
from tcsa_uda.errors import ConfigError


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "CPU", "tpu:0", ""])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)


def test_cuda_without_cuda_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(name)


def test_cuda_index_beyond_the_devices_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 CUDA device"):
        resolve_device("cuda:2")
