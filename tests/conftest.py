"""Shared test settings: offline model hub, deterministic CPU threads."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class _WritesMarker:
    """A pickled object whose unpickling would create ``path`` (the payload of a hostile checkpoint)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def poison_checkpoint(tmp_path):
    """``poison(src, dest) -> marker``: copy the checkpoint ``src`` to ``dest`` with one extra pickled entry.

    Unpickling ``dest`` without ``weights_only`` would create the returned marker file, so a test
    proves that nothing in the checkpoint ran by asserting that the marker does not exist.
    """
    import torch

    def poison(src, dest):
        marker = tmp_path / f"payload_ran_{dest.name}"
        state = torch.load(src, map_location="cpu", weights_only=True)
        state["extra"] = _WritesMarker(str(marker))
        dest.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, dest)
        assert not marker.exists()
        return marker

    return poison
