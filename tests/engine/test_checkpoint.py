"""Tests of checkpoints: weights-only loading, the content hash, plain values only, compatibility checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tcsa_uda.engine.checkpoint import (
    CheckpointError,
    architecture,
    check_compatible,
    content_hash,
    load_checkpoint,
    save_checkpoint,
)
from tcsa_uda.engine.seed import rng_state, set_rng_state
from tcsa_uda.errors import MissingPathError


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.arange(5, dtype=torch.int64)},
        "class_names": ["background", "liver"],
        "iteration": 7,
        "selection": {"criterion": "last", "value": 0.25, "nan": float("nan")},
        "flags": (True, None, "x"),
        "optimizers": {"sgd": {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 1e-3}]}},
    }


def test_checkpoint_errors(tmp_path):
    with pytest.raises(MissingPathError):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk.pt cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other.pt: expected a tcsa-uda checkpoint \(format 2\)"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": 1, "model": {}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old.pt.*format 1 was written by an earlier tcsa-uda"):
        load_checkpoint(tmp_path / "old.pt")
    save_checkpoint(tmp_path / "ok.pt", {"x": torch.ones(2)})
    loaded = load_checkpoint(tmp_path / "ok.pt")
    assert torch.equal(loaded["x"], torch.ones(2)) and "sha256" not in loaded


def test_pickled_payload_is_refused_and_never_runs(tmp_path, poison_checkpoint):
    save_checkpoint(tmp_path / "ok.pt", _state())
    marker = poison_checkpoint(tmp_path / "ok.pt", tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "evil.pt")
    message = str(info.value)
    assert "evil.pt" in message and "pickled object" in message and "open" in message
    assert "\n" not in message
    assert not marker.exists()


def test_flipped_bytes_are_refused_or_change_nothing(tmp_path):
    """Flip one byte at a time across the whole file: every flip is refused, or the content is unchanged."""
    save_checkpoint(tmp_path / "ok.pt", _state())
    data = (tmp_path / "ok.pt").read_bytes()
    reference = content_hash(load_checkpoint(tmp_path / "ok.pt"))
    bad = tmp_path / "bad.pt"
    refused = by_hash = 0
    for pos in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            state = load_checkpoint(bad)
        except CheckpointError as exc:
            assert "bad.pt" in str(exc)
            refused += 1
            by_hash += "content hash does not match" in str(exc)
            continue
        assert content_hash(state) == reference, f"byte {pos}: changed content was accepted"
    assert refused > 0 and by_hash > 0  # tensor bytes are caught by the hash, not by torch


def test_flipped_tensor_byte_names_the_hash_mismatch(tmp_path):
    w = torch.full((64,), 3.0)
    save_checkpoint(tmp_path / "ck.pt", {"model": {"w": w}})
    data = bytearray((tmp_path / "ck.pt").read_bytes())
    pos = bytes(data).index(w.numpy().tobytes())
    data[pos + 5] ^= 0x01
    (tmp_path / "ck.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ck.pt: the content hash does not match .*corrupted or modified"):
        load_checkpoint(tmp_path / "ck.pt")


def test_only_tensors_and_plain_values_can_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match=r"\['rng'\]\['numpy'\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"rng": {"numpy": np.zeros(3)}})
    with pytest.raises(CheckpointError, match=r"\['cfg'\] is a pathlib"):
        save_checkpoint(tmp_path / "x.pt", {"cfg": tmp_path})
    assert not (tmp_path / "x.pt").exists()


def test_content_hash_ignores_key_order_but_not_values():
    a = {"x": torch.ones(2), "y": [1, 2.5, "s"]}
    b = {"y": [1, 2.5, "s"], "x": torch.ones(2)}
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash({**a, "y": [1, 2.5, "t"]})
    assert content_hash(a) != content_hash({**a, "x": torch.ones(2, dtype=torch.float64)})
    assert content_hash({"v": 1}) != content_hash({"v": True}) != content_hash({"v": 1.0})


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian is part of NumPy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.standard_normal(2).tolist(), torch.rand(2).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.standard_normal(2).tolist(), torch.rand(2).tolist()) == expected


def test_check_compatible_names_every_difference(tmp_path):
    state = {
        "model_name": "light",
        "model_kwargs": {"base_width": 8},
        "class_names": ["background", "liver"],
        "text": {"embeddings": torch.zeros(2, 2, 16)},
    }
    check_compatible("ck.pt", state, architecture("light", {"base_width": 8}, ["background", "liver"], 16))
    with pytest.raises(CheckpointError) as info:
        check_compatible("ck.pt", state, architecture("light", {"base_width": 16}, ["background", "spleen"], 32))
    message = str(info.value)
    assert "Checkpoint ck.pt" in message and "model_name" not in message
    assert "model_kwargs: checkpoint {'base_width': 8}, expected {'base_width': 16}" in message
    assert "class_names: checkpoint ['background', 'liver'], expected ['background', 'spleen']" in message
    assert "text_dim: checkpoint 16, expected 32" in message
