"""Endless, resumable, deterministic batch streams for iteration-based training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from tcsa_uda.errors import ConfigError, DatasetError


class EndlessLoader:
    """Yields batches forever, reshuffling every epoch with a seeded generator.

    The position (epoch, batch within epoch) is part of :meth:`state_dict`, so a resumed run sees
    exactly the batches it would have seen. Incomplete last batches are dropped (training only;
    inference never drops slices).

    Args:
        dataset: map-style dataset of dict items.
        batch_size: items per batch.
        seed: base seed; epoch e uses permutation ``randperm(n, generator=seed + e)``.
        num_workers: DataLoader workers.
        name: used in error messages.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, name: str = "dataset"
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}.")
        if num_workers < 0:
            raise ConfigError(f"num_workers: expected 0 or more, found {num_workers!r}.")
        n = len(dataset)  # type: ignore[arg-type]
        if n < batch_size:
            raise DatasetError(
                f"{name}: {n} slices, fewer than one batch of {batch_size}; lower data.batch_size or add cases."
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.epoch = 0
        self.position = 0  # batches consumed in the current epoch
        self._iter: Iterator[Any] | None = None

    def _epoch_iter(self) -> Iterator[Any]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()  # type: ignore[arg-type]
        n_batches = len(order) // self.batch_size
        order = order[self.position * self.batch_size : n_batches * self.batch_size]
        # The loader draws its workers' base seed from ``g``, not from the global torch generator, so
        # starting an iterator (a new epoch, or a resume mid-epoch) leaves the global random streams alone.
        loader = DataLoader(
            torch.utils.data.Subset(self.dataset, order),
            batch_size=self.batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=self.num_workers,
            generator=g,
        )
        return iter(loader)

    def __iter__(self) -> EndlessLoader:
        return self

    def __next__(self) -> Any:
        while True:
            if self._iter is None:
                self._iter = self._epoch_iter()
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch += 1
                self.position = 0
                self._iter = None
                continue
            self.position += 1
            return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])
        self._iter = None
