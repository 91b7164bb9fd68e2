"""Tests of the endless, resumable training loader."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils.data import Dataset

from tcsa_uda.engine.loaders import EndlessLoader
from tcsa_uda.errors import ConfigError, DatasetError


class Items(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"i": torch.tensor(i)}


def _ids(batches) -> list[int]:
    return [int(x) for b in batches for x in b["i"]]


def test_deterministic_and_reshuffles_each_epoch():
    run1 = list(itertools.islice(EndlessLoader(Items(5), 2, seed=7), 12))
    run2 = list(itertools.islice(EndlessLoader(Items(5), 2, seed=7), 12))
    assert _ids(run1) == _ids(run2)
    epochs = [_ids(run1[i : i + 2]) for i in range(0, 12, 2)]  # 2 full batches per epoch of 5
    assert all(len(set(e)) == 4 for e in epochs)  # no repeat within an epoch, one item dropped
    assert len({tuple(e) for e in epochs}) > 1  # a new permutation per epoch
    assert _ids(itertools.islice(EndlessLoader(Items(5), 2, seed=8), 12)) != _ids(run1)


def test_resume_continues_the_same_stream():
    full = _ids(itertools.islice(EndlessLoader(Items(7), 3, seed=1), 9))
    first = EndlessLoader(Items(7), 3, seed=1)
    head = _ids(itertools.islice(first, 4))
    state = first.state_dict()
    second = EndlessLoader(Items(7), 3, seed=99)
    second.load_state_dict(state)
    assert head + _ids(itertools.islice(second, 5)) == full


def test_rejects_impossible_batches():
    with pytest.raises(DatasetError, match="fewer than one batch"):
        EndlessLoader(Items(3), 4, seed=0)
    with pytest.raises(ConfigError, match="batch_size"):
        EndlessLoader(Items(3), 0, seed=0)


def test_resumed_loader_with_workers_yields_the_batches_of_an_uninterrupted_one():
    """Worker processes prefetch ahead of the position; a resumed loader still continues exactly."""
    full = _ids(itertools.islice(EndlessLoader(Items(7), 3, seed=1, num_workers=2), 9))
    assert full == _ids(itertools.islice(EndlessLoader(Items(7), 3, seed=1), 9))  # workers change nothing
    first = EndlessLoader(Items(7), 3, seed=1, num_workers=2, prefetch_factor=2)
    head = _ids(itertools.islice(first, 4))  # its workers have already loaded batches beyond the 4th
    assert first.state_dict() == {"epoch": 2, "position": 0, "seed": 1}  # 2 full batches per epoch of 7
    second = EndlessLoader(Items(7), 3, seed=99, num_workers=2)
    second.load_state_dict(first.state_dict())
    assert head + _ids(itertools.islice(second, 5)) == full
    # The same loader moved back in place: its persistent workers drop what they had prefetched.
    first.load_state_dict({"epoch": 0, "position": 1, "seed": 1})
    assert _ids(itertools.islice(first, 3)) == full[3:12]


def test_loader_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    loader = EndlessLoader(Items(5), 2, seed=3)
    list(itertools.islice(loader, 7))  # crosses three epochs
    loader.load_state_dict(loader.state_dict())
    next(loader)
    assert torch.equal(torch.rand(3), expected)
