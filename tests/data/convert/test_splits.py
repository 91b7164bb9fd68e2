"""Converter splits: the seeded val share and split files."""

from __future__ import annotations

import json

import pytest

from tcsa_uda.data.convert.splits import carve_val, read_split_file, write_split_file
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError


def test_carve_val_is_deterministic_small_and_only_for_enough_cases():
    ids = [str(1001 + i) for i in range(16)]
    val = carve_val(ids, 0.1, seed=0, domain="CT")
    assert len(val) == 2 and set(val) <= set(ids)
    assert carve_val(list(reversed(ids)), 0.1, seed=0, domain="CT") == val  # order of the input does not matter
    assert carve_val(ids, 0.1, seed=0, domain="MR") != val or carve_val(ids, 0.1, seed=1, domain="CT") != val
    assert carve_val(ids[:9], 0.1, seed=0, domain="CT") == []  # fewer than 10 cases: no val
    assert carve_val(ids, 0.0, seed=0, domain="CT") == []
    with pytest.raises(ConfigError, match=r"val fraction: expected a fraction in \[0, 1\), found 1.5"):
        carve_val(ids, 1.5, seed=0, domain="CT")


def test_split_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "split.json"
    write_split_file(path, "x", 3, {"A": {"train": ["b", "a"], "test": ["c"]}, "B": {"train": ["d"], "test": ["e"]}})
    got = read_split_file(path, ["A", "B"])
    assert got["A"] == {"train": ["a", "b"], "val": [], "test": ["c"]}
    with pytest.raises(DatasetError, match=r"expected domain 'C'"):
        read_split_file(path, ["A", "C"])
    data = json.loads(path.read_text())
    data["domains"]["B"]["test"] = ["a"]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"case 'a' is listed twice \(A/train and B/test\)"):
        read_split_file(path, ["A", "B"])
    path.write_text("{}")
    with pytest.raises(DatasetError, match="expected a split file"):
        read_split_file(path, ["A"])
    with pytest.raises(MissingPathError):
        read_split_file(tmp_path / "none.json", ["A"])
