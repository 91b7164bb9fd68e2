"""Endless, resumable, deterministic batch streams for iteration-based training."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tcsa_uda.errors import ConfigError, DatasetError


class _EpochBatches(Sampler[list[int]]):
    """Index batches of every epoch from the loader's position on, forever.

    Epoch ``e`` is the permutation ``randperm(n, generator=seed + e)`` cut into full batches (the
    incomplete last batch is dropped). Each ``iter()`` starts at the owner's current
    ``(epoch, position)``, read in the main process, so a fresh iterator after
    :meth:`EndlessLoader.load_state_dict` resumes exactly where the state says.
    """

    def __init__(self, owner: EndlessLoader) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[list[int]]:
        owner = self.owner
        n, bs = len(owner.dataset), owner.batch_size  # type: ignore[arg-type]
        epoch, skip = owner.epoch, owner.position
        while True:
            g = torch.Generator().manual_seed(owner.seed + epoch)
            order = torch.randperm(n, generator=g).tolist()
            for b in range(skip, n // bs):
                yield order[b * bs : (b + 1) * bs]
            epoch, skip = epoch + 1, 0


class EndlessLoader:
    """Yields batches forever, reshuffling every epoch with a seeded generator.

    The position (epoch, batch within epoch) is part of :meth:`state_dict`, so a resumed run sees
    exactly the batches it would have seen, with or without worker processes. Incomplete last
    batches are dropped (training only; inference never drops slices).

    One :class:`~torch.utils.data.DataLoader` serves the whole stream: its batch sampler is endless,
    so worker processes start once and keep ``prefetch_factor`` batches each in flight; the
    position counts the batches handed out, not those prefetched. The loader draws its workers'
    base seed from its own generator (seeded with ``seed``), never from the global RNG, so creating
    or re-creating it does not shift the training's random stream.

    Args:
        dataset: map-style dataset of dict items.
        batch_size: items per batch.
        seed: base seed; epoch e uses permutation ``randperm(n, generator=seed + e)``.
        num_workers: DataLoader worker processes (0 loads in the training process).
        name: used in error messages.
        pin_memory: put batches in page-locked memory (for asynchronous copies to a GPU).
        prefetch_factor: batches loaded in advance by each worker (with ``num_workers > 0``).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        name: str = "dataset",
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}.")
        if num_workers < 0:
            raise ConfigError(f"num_workers: expected 0 or more, found {num_workers!r}.")
        if prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor: expected 1 or more, found {prefetch_factor!r}.")
        n = len(dataset)  # type: ignore[arg-type]
        if n < batch_size:
            raise DatasetError(
                f"{name}: {n} slices, fewer than one batch of {batch_size}; lower data.batch_size or add cases."
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.epoch = 0
        self.position = 0  # batches consumed in the current epoch
        self._loader: DataLoader | None = None
        self._iter: Iterator[Any] | None = None

    def _make_loader(self) -> DataLoader:
        workers = self.num_workers > 0
        return DataLoader(
            self.dataset,
            batch_sampler=_EpochBatches(self),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers,
            prefetch_factor=self.prefetch_factor if workers else None,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def __iter__(self) -> EndlessLoader:
        return self

    def __next__(self) -> Any:
        if self._iter is None:
            if self._loader is None:
                self._loader = self._make_loader()
            self._iter = iter(self._loader)
        batch = next(self._iter)
        self.position += 1
        if self.position == len(self.dataset) // self.batch_size:  # type: ignore[arg-type]
            self.epoch += 1
            self.position = 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``; batches already prefetched from the old position are discarded."""
        seed = int(state["seed"])
        if seed != self.seed:
            self._loader = None  # the worker seed generator depends on the seed
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = seed
        self._iter = None
