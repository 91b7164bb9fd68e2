"""Models restored from checkpoints for inference: :func:`load_model` and :class:`LoadedModel`.

Used by ``evaluate``, ``predict``, ``report`` and the demo: a checkpoint carries the network's
name and options, its weights, the class names, the frozen text embeddings it was trained with
and the preprocessing settings, so no dataset folder is needed to use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tcsa_uda.data.encoding import InputEncoding, input_encoding_of
from tcsa_uda.engine.checkpoint import CheckpointError, load_checkpoint
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.evaluation.inference import PreprocessingSettings
from tcsa_uda.layout import FINAL, LAST
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

_CHECKPOINT_KEYS: tuple[str, ...] = ("model", "model_name", "class_names", "text")


@dataclass
class LoadedModel:
    """A segmenter restored from a checkpoint, with the text embeddings it was trained with.

    Attributes:
        model: the network in eval mode.
        text: the frozen prompt embeddings of the training domains.
        class_names: class names ordered by id (background first).
        checkpoint: the whole checkpoint mapping.
        path: the checkpoint file, when loaded from one.
    """

    model: nn.Module
    text: TextEmbeddings
    class_names: list[str]
    checkpoint: dict
    path: Path | None = None

    def text_for(self, domain: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """The (C, D_text) embeddings of ``domain``.

        Raises:
            ConfigError: the checkpoint has no text embeddings for ``domain``.
        """
        if domain not in self.text.domains:
            raise ConfigError(
                f"{self.path or 'checkpoint'}: domain {domain!r} is not one the model was trained with; "
                f"its text embeddings cover {self.text.domains} (classes {self.class_names})."
            )
        return self.text.for_domain(domain).to(device)

    @property
    def target(self) -> str | None:
        """The target domain of training, when recorded."""
        value = self.checkpoint.get("target")
        return None if value is None else str(value)

    @property
    def input_encoding(self) -> InputEncoding:
        """How slices become the network's input (``grey`` for checkpoints that do not record it).

        Raises:
            ConfigError: the checkpoint records an unknown encoding.
        """
        return input_encoding_of(self.checkpoint, str(self.path or "checkpoint"))

    @property
    def preprocessing(self) -> PreprocessingSettings:
        """The ``prepare`` settings the model was trained with."""
        return PreprocessingSettings.from_checkpoint(self.checkpoint, str(self.path or "checkpoint"))

    def model_selection(self) -> str:
        """How this checkpoint was chosen, from its ``selection`` record (training engine).

        ``{"criterion": "last"}`` gives the last iteration; a label-free criterion names itself
        and the iteration it chose; ``oracle`` says that target test labels were used. Without a
        record, the iteration the checkpoint holds is named.
        """
        sel = self.checkpoint.get("selection")
        it = self.checkpoint.get("iteration")
        if isinstance(sel, str) and sel:
            return sel
        if isinstance(sel, Mapping) and sel.get("criterion"):
            crit, at = str(sel["criterion"]), sel.get("iteration", it)
            if crit == "last":
                return f"last iteration ({at}); no selection on target labels"
            value = sel.get("value")
            score = f", score {float(value):.4g}" if isinstance(value, (int, float)) else ""
            if crit == "oracle":
                return f"oracle: best target test Dice, iteration {at}{score} (uses target test labels)"
            return f"label-free criterion {crit}: best at iteration {at}{score}"
        name = self.path.name if self.path is not None else "checkpoint"
        stage, method = self.checkpoint.get("stage"), self.checkpoint.get("method")
        where = f"iteration {it}" if it is not None else "unknown iteration"
        if stage is not None:
            where += f" of stage {int(stage) + 1}"
        if method:
            where += f" ({method})"
        return f"fixed checkpoint {name}, {where}; no selection rule recorded"


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the segmenter stored in a checkpoint written by the training engine (eval mode).

    Raises:
        MissingPathError: no file at ``path``.
        CheckpointError: not a training checkpoint, or its parts disagree (class names of the
            text embeddings, weights for another network or class count).
    """
    path = Path(path)
    ck = load_checkpoint(path, map_location=device)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(
            f"{path}: expected a training checkpoint with keys {list(_CHECKPOINT_KEYS)}, missing {missing}."
        )
    class_names = [str(c) for c in ck["class_names"]]
    try:
        text = TextEmbeddings.from_dict(ck["text"], source=f"{path} ['text']")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    if text.class_names != class_names:
        raise CheckpointError(
            f"{path}: the text embeddings are for classes {text.class_names}, the model for {class_names}."
        )
    try:
        model = build_segmenter(ck["model_name"], len(class_names), text.dim, **ck.get("model_kwargs", {}))
        model.load_state_dict(ck["model"])
    except (RuntimeError, ConfigError) as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit model {ck['model_name']!r} with {len(class_names)} classes "
            f"and text width {text.dim} ({type(exc).__name__}: {str(exc).splitlines()[0]})."
        ) from exc
    model.to(device).eval()
    return LoadedModel(model=model, text=text, class_names=class_names, checkpoint=ck, path=path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (its ``final.pt``) or a checkpoint file.

    Raises:
        MissingPathError: neither exists.
    """
    p = Path(path)
    if p.is_dir():
        ck = p / FINAL
        if not ck.is_file():
            raise MissingPathError(
                f"{p}: run folder without {FINAL} (training not finished?); pass a checkpoint file "
                f"instead, e.g. {p / 'stage1_<method>' / LAST}."
            )
        return ck
    if not p.is_file():
        raise MissingPathError(f"{p}: no such run folder or checkpoint file.")
    return p
