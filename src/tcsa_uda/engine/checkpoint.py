"""Checkpoints: written atomically, loaded with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tcsa_uda.atomic import atomic_write_with
from tcsa_uda.errors import MissingPathError, TcsaUdaError

CHECKPOINT_FORMAT = 1


class CheckpointError(TcsaUdaError):
    """A checkpoint file is unreadable or was written for something else."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically (an interrupted save leaves the old file)."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    atomic_write_with(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises:
        MissingPathError: no file at ``path``.
        CheckpointError: the file is not a tcsa-uda checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Checkpoint {path}: expected a tcsa-uda checkpoint (format {CHECKPOINT_FORMAT}), "
            f"found {type(state).__name__} with format {state.get('format') if isinstance(state, dict) else None!r}."
        )
    return state
