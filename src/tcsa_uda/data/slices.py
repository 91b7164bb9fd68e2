"""Torch dataset over prepared slices (see :mod:`tcsa_uda.data.prepared`).

:class:`SliceDataset` serves single 2D slices of one domain for training; the engine's
``EndlessLoader`` draws shuffled fixed-size batches from it forever with a seeded generator. Each
grey slice becomes the network's 3-channel input with the run's input encoding
(:func:`tcsa_uda.data.encoding.encode_slices`).

The ``.npy`` stacks are memory-mapped (``np.load(mmap_mode="r")``) on first access in the
process that reads them, so a dataset is cheap to create and to send to DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tcsa_uda.data.encoding import InputEncoding, check_input_encoding, encode_slices
from tcsa_uda.data.prepared import PreparedCase, PreparedIndex
from tcsa_uda.errors import DatasetError


class SliceDataset(Dataset[dict[str, Any]]):
    """Every slice of the cases of one domain and split(s).

    Items are dicts with ``image`` float32 (3, H, W) (the slice in [-1, 1] through ``encoding``),
    ``label`` int64 (H, W) (only when ``with_labels``), ``case`` (the case id) and ``slice`` (the
    slice index in its volume).

    Args:
        index: the prepared folder's index (:func:`tcsa_uda.data.prepare.load_prepared`).
        domain: the domain to serve.
        split: one split name or several.
        with_labels: serve labels; every selected case must then be labelled.
        encoding: the network's input encoding (``model.input_encoding``).

    Raises:
        DatasetError: unknown domain/split, no case selected, or an unlabelled case while
            ``with_labels`` is True (the message names the case).
        ConfigError: an unknown ``encoding``.
    """

    def __init__(
        self,
        index: PreparedIndex,
        domain: str,
        split: str | Sequence[str] = "train",
        with_labels: bool = True,
        *,
        encoding: InputEncoding,
    ) -> None:
        self.encoding = check_input_encoding(encoding, "SliceDataset encoding")
        self.domain = domain
        self.split = split
        self.with_labels = with_labels
        self.cases: list[PreparedCase] = index.cases(domain, split)
        if not self.cases:
            raise DatasetError(f"{index.root}: domain {domain!r} has no prepared case in split {split!r}.")
        if with_labels:
            unlabelled = [c.id for c in self.cases if not c.labelled]
            if unlabelled:
                raise DatasetError(
                    f"{index.root}: with_labels=True but case(s) {', '.join(unlabelled)} of domain {domain!r} "
                    f"(split {split!r}) have no label; use with_labels=False for unlabelled target data."
                )
        # (case position, slice index) for every slice, in case order.
        self._items: list[tuple[int, int]] = [
            (ci, s) for ci, case in enumerate(self.cases) for s in range(case.n_slices)
        ]
        self._images: dict[int, np.ndarray] = {}
        self._labels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, s = self._items[i]
        case = self.cases[ci]
        if ci not in self._images:
            self._images[ci] = case.load_image()
        item: dict[str, Any] = {
            "image": encode_slices(self._images[ci][s], self.encoding),  # (3, H, W)
            "case": case.id,
            "slice": s,
        }
        if self.with_labels:
            if ci not in self._labels:
                self._labels[ci] = case.load_label()
            item["label"] = torch.from_numpy(self._labels[ci][s].astype(np.int64))  # (H, W)
        return item

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each worker instead of being pickled (which would copy them).
        state = self.__dict__.copy()
        state["_images"], state["_labels"] = {}, {}
        return state
