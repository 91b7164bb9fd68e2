"""Checkpoints: tensors and plain values only, a content hash, written atomically, loaded without running code.

A checkpoint is a mapping saved with ``torch.save`` that holds only tensors and plain values
(``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool``, ``None``), so it is always
read with ``torch.load(weights_only=True)``: a file that carries any other pickled object (a class
instance whose ``__reduce__`` would run code) is refused before that object is built, and nothing
in it runs.

Each checkpoint stores ``sha256``, the SHA-256 of a canonical serialisation of everything else in
it (:func:`content_hash`: every tensor's dtype, shape and bytes, every plain value, mapping keys in
a fixed order), computed when it is saved and checked when it is loaded; a checkpoint whose bytes
changed after saving (a flipped bit, a truncated copy, a hand edit) is refused with the file named.

:func:`check_compatible` compares the network and class set a checkpoint was written for with the
ones a run or an evaluation expects and names every field that differs.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from tcsa_uda.atomic import atomic_write_with
from tcsa_uda.errors import MissingPathError, TcsaUdaError

CHECKPOINT_FORMAT = 2
"""Version of the checkpoint layout (2: tensors and plain values only, with ``sha256``)."""

HASH_KEY = "sha256"
"""The key of the content hash in a checkpoint."""

ARCHITECTURE_KEYS: tuple[str, ...] = ("model_name", "model_kwargs", "class_names", "text_dim")
"""What :func:`architecture` records: the network, its options, the class set and the text width."""


class CheckpointError(TcsaUdaError):
    """A checkpoint file is unreadable, modified, unsafe or was written for something else."""


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> None:
    """``torch.save`` ``state`` with its content hash to ``path`` atomically (an interrupted save leaves the old file).

    Raises:
        CheckpointError: ``state`` holds a value that is neither a tensor nor a plain value (the
            key path is named); such a checkpoint could not be loaded safely.
    """
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, **{k: v for k, v in state.items() if k != HASH_KEY}}
    payload[HASH_KEY] = content_hash(payload, where=str(path))
    atomic_write_with(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    The file is read with ``torch.load(weights_only=True)`` (no pickled object is ever built), its
    format is checked and its content hash recomputed. The returned mapping has no ``sha256`` key.

    Raises:
        MissingPathError: no file at ``path``.
        CheckpointError: unreadable, holding a pickled object other than tensors and plain values,
            another format, or a content hash that does not match (each naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickling_detail(exc)
        if detail.startswith("global "):
            raise CheckpointError(
                f"Checkpoint {path}: refused, it holds a pickled object that is not a tensor or a plain value "
                f"({detail}); tcsa-uda never runs code from a checkpoint. Use only checkpoints written by tcsa-uda."
            ) from exc
        raise CheckpointError(
            f"Checkpoint {path} cannot be read as tensors and plain values ({detail}): not a torch.save file, or a "
            "pickle that would need code to load (tcsa-uda never runs code from a checkpoint)."
        ) from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(exc).__name__}: {first}).") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        older = (
            " (format 1 was written by an earlier tcsa-uda without a content hash; train again)" if found == 1 else ""
        )
        raise CheckpointError(
            f"Checkpoint {path}: expected a tcsa-uda checkpoint (format {CHECKPOINT_FORMAT}), "
            f"found {type(state).__name__} with format {found!r}{older}."
        )
    stored = state.pop(HASH_KEY, None)
    if not isinstance(stored, str):
        raise CheckpointError(f"Checkpoint {path}: no content hash ({HASH_KEY!r}); the file is incomplete or modified.")
    try:
        actual = content_hash(state, where=str(path))
    except CheckpointError as exc:
        raise CheckpointError(f"Checkpoint {path}: the content cannot be checked ({exc}).") from exc
    if actual != stored:
        raise CheckpointError(
            f"Checkpoint {path}: the content hash does not match (stored sha256 {stored[:16]}..., computed "
            f"{actual[:16]}...): the file was corrupted or modified after it was written; use another copy."
        )
    if torch.device(map_location) != torch.device("cpu"):
        state = _to_device(state, torch.device(map_location))
    return state


def _unpickling_detail(exc: BaseException) -> str:
    """The one informative part of torch's weights-only error (which global or operand was refused)."""
    text = str(exc)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if m:
        return f"global {m.group(1)}"
    m = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if m:
        return m.group(1).strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        out = type(obj)()
        for k, v in obj.items():
            out[k] = _to_device(v, device)
        if hasattr(obj, "_metadata"):  # module state dicts carry version metadata
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_device(v, device) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# Content hash


def content_hash(payload: Mapping[str, Any], where: str = "checkpoint") -> str:
    """SHA-256 (hex) of a canonical serialisation of ``payload`` (its ``sha256`` key excluded).

    Every value is written with a type tag: tensors as dtype, shape and raw bytes (on the CPU,
    contiguous), numbers and strings as text, sequences in order, mappings with their entries
    sorted by the serialised key (so the insertion order does not matter). The hash is therefore
    the same for the payload that was saved and the one ``torch.load`` returns.

    Raises:
        CheckpointError: a value that is neither a tensor nor a plain value, naming its key path.
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != HASH_KEY}, where, "")
    return h.hexdigest()


def _key_bytes(key: Any, where: str, at: str) -> bytes:
    h = hashlib.sha256()
    _feed(h, key, where, at)
    return h.digest()


def _feed(h: Any, obj: Any, where: str, at: str) -> None:
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(b"I%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"F" + (obj.hex() if math.isfinite(obj) else repr(obj)).encode() + b";")
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"S%d:" % len(data) + data)
    elif isinstance(obj, bytes):
        h.update(b"Y%d:" % len(obj) + obj)
    elif isinstance(obj, torch.Tensor):
        _feed_tensor(h, obj, where, at)
    elif isinstance(obj, Mapping):
        items = [(_key_bytes(k, where, f"{at}[{k!r}]"), k, v) for k, v in obj.items()]
        h.update(b"D%d:" % len(items))
        for kb, k, v in sorted(items, key=lambda item: item[0]):
            h.update(kb)
            _feed(h, v, where, f"{at}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        h.update(b"L%d:" % len(obj))
        for i, v in enumerate(obj):
            _feed(h, v, where, f"{at}[{i}]")
    else:
        raise CheckpointError(
            f"{where}: the value at {at or 'the top level'} is a {type(obj).__module__}.{type(obj).__qualname__}; "
            "a checkpoint holds only tensors, dict, list, tuple, str, int, float, bool and None."
        )


def _feed_tensor(h: Any, t: torch.Tensor, where: str, at: str) -> None:
    if t.layout != torch.strided or t.is_quantized:
        raise CheckpointError(f"{where}: the tensor at {at} has layout {t.layout}; only dense tensors are stored.")
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    h.update(f"X{t.dtype}:{tuple(t.shape)}:".encode())
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy().tobytes())


# --------------------------------------------------------------------------------------------
# What a checkpoint was written for


def architecture(
    model_name: str, model_kwargs: Mapping[str, Any], class_names: Sequence[str], text_dim: int
) -> dict[str, Any]:
    """The record :func:`check_compatible` compares (keys :data:`ARCHITECTURE_KEYS`)."""
    return {
        "model_name": str(model_name),
        "model_kwargs": dict(model_kwargs),
        "class_names": [str(c) for c in class_names],
        "text_dim": int(text_dim),
    }


def checkpoint_architecture(state: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`architecture` record of a loaded checkpoint (``text_dim`` from its text embeddings)."""
    text = state.get("text")
    dim = None
    if isinstance(text, Mapping) and isinstance(text.get("embeddings"), torch.Tensor):
        dim = int(text["embeddings"].shape[-1])
    return {
        "model_name": state.get("model_name"),
        "model_kwargs": dict(state.get("model_kwargs") or {}),
        "class_names": [str(c) for c in state.get("class_names") or []],
        "text_dim": dim,
    }


def check_compatible(path: str | os.PathLike[str], state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a checkpoint written for another network, class set or text width.

    Args:
        path: the checkpoint file (named in the message).
        state: the loaded checkpoint.
        expected: the :func:`architecture` record of the run or evaluation.

    Raises:
        CheckpointError: naming each field that differs, with the checkpoint's and the expected value.
    """
    found = checkpoint_architecture(state)
    diffs = [
        f"{k}: checkpoint {found[k]!r}, expected {expected[k]!r}" for k in ARCHITECTURE_KEYS if found[k] != expected[k]
    ]
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} was written for another network or class set ({'; '.join(diffs)}); "
            "use a checkpoint of this run's configuration."
        )
