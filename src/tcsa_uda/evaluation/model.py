"""Models restored from checkpoints for inference: :func:`load_model` and :class:`LoadedModel`.

Used by ``evaluate``, ``predict``, ``report`` and the demo, and the public Python API
(``tcsa_uda.load_model``, README "Python API"): a checkpoint carries the network's name and options
(its ``variant`` included), its weights, the class names, the frozen text embeddings it was trained
with, the preprocessing settings and the input encoding, so no dataset folder is needed to use it.

Example::

    import tcsa_uda

    lm = tcsa_uda.load_model("run/final.pt")      # eval mode, on the CPU
    x = lm.preprocess(raw_slices, domain="CT")     # (S, H, W) raw -> (S, 3, H, W) network input
    logits = lm.segment(x, domain="CT")            # (S, C, H, W) main logits
    labels = logits.argmax(dim=1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import IMAGE_CHANNELS, InputEncoding, encode_slices, input_encoding_of
from tcsa_uda.data.normalize import normalize_with
from tcsa_uda.engine.checkpoint import CheckpointError, load_checkpoint
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.evaluation.inference import PreprocessingSettings
from tcsa_uda.layout import FINAL, LAST
from tcsa_uda.models import build_segmenter, upsample_logits
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
    def device(self) -> torch.device:
        """Where the network's parameters are."""
        return next(self.model.parameters()).device

    def _domain(self, domain: str | None) -> str:
        """``domain``, or the training target when None (the released code's test-time choice)."""
        if domain is not None:
            return domain
        if self.target is None:
            raise ConfigError(
                f"{self.path or 'checkpoint'}: no target domain recorded; pass domain= one of {self.text.domains}."
            )
        return self.target

    @torch.no_grad()
    def segment(self, x: Tensor, domain: str | None = None) -> Tensor:
        """Main logits of images already in the network's input space, at the input size.

        Args:
            x: float ``(B, 3, H, W)`` network inputs (:meth:`preprocess` gives them from raw slices).
            domain: the images' domain, whose text embeddings condition the network; default the
                training target (the released code feeds the target modality's text at test time).

        Returns:
            float32 ``(B, C, H, W)`` main logits on the model's device, upsampled from the feature grid
            bilinearly with ``align_corners=True`` (as the released evaluation); no gradient.

        Raises:
            ConfigError: ``x`` is not ``(B, 3, H, W)`` floats, or ``domain`` is not one of the checkpoint's.
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != IMAGE_CHANNELS or not x.is_floating_point():
            found = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ConfigError(f"segment: expected a float tensor (B, {IMAGE_CHANNELS}, H, W), found {found}.")
        device = self.device
        text = self.text_for(self._domain(domain), device)
        out = self.model(x.to(device=device, dtype=torch.float32), text)
        return upsample_logits(out.main, tuple(x.shape[-2:]))

    def preprocess(self, slices: np.ndarray | Tensor, domain: str | None = None) -> Tensor:
        """Raw slices -> network input: the checkpoint's intensity normalisation, then its input encoding.

        The stack is normalised as one volume (``percentile_zscore`` fits its statistics on the
        whole stack; ``fixed`` uses the range of ``domain``), then encoded (``grey`` or
        ``caffe_bgr``). The slices keep their size: resizing and padding to the training size are
        the caller's choice (``evaluate`` and ``predict`` do them with the recorded geometry).

        Args:
            slices: ``(S, H, W)`` raw intensities.
            domain: the slices' domain (fixed normalisation ranges); default the training target.

        Returns:
            float32 ``(S, 3, H, W)`` on the CPU.

        Raises:
            ConfigError: ``slices`` is not ``(S, H, W)``, or no range for ``domain``.
            DatasetError: non-finite or non-numeric intensities.
        """
        arr = slices.detach().cpu().numpy() if isinstance(slices, Tensor) else np.asarray(slices)
        if arr.ndim != 3:
            raise ConfigError(f"preprocess: expected raw slices (S, H, W), found shape {arr.shape}.")
        settings = self.preprocessing
        normalised, _ = normalize_with(
            arr, settings.normalization, self._domain(domain), settings.clip_percentiles, what="slices"
        )
        return encode_slices(normalised, self.input_encoding)

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
        record, the iteration the checkpoint holds is named. A checkpoint trained with target labels
        (its ``upper_bound`` record, e.g. the ``oracle`` method) says so after a semicolon.
        """
        text = self._selection_text()
        bound = self.checkpoint.get("upper_bound")
        return f"{text}; {bound}" if isinstance(bound, str) and bound else text

    def _selection_text(self) -> str:
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
    """Rebuild the segmenter stored in a checkpoint (training engine or ``import-released``), in eval mode.

    This is the public ``tcsa_uda.load_model`` (README, Python API).

    Args:
        path: a checkpoint file (a run folder's ``final.pt``, a stage's ``best.pt``, an imported release).
        device: where to put the network (``"cpu"``, ``"cuda"``, a ``torch.device``).

    Returns:
        :class:`LoadedModel`: the network in eval mode with :meth:`LoadedModel.segment` and
        :meth:`LoadedModel.preprocess`, its text embeddings, class names and the checkpoint.

    Raises:
        MissingPathError: no file at ``path``.
        CheckpointError: not a training checkpoint, or its parts disagree (class names of the
            text embeddings, weights for another network or class count).
    """
    path = Path(path)
    ck = load_checkpoint(path, map_location=device)
    return model_from_checkpoint(ck, device, path)


def model_from_checkpoint(
    ck: dict[str, Any], device: torch.device | str = "cpu", path: Path | None = None
) -> LoadedModel:
    """:func:`load_model` on a checkpoint mapping already in memory (``path`` names it in messages).

    Raises:
        CheckpointError: see :func:`load_model`.
    """
    where = str(path) if path is not None else "checkpoint"
    missing = [k for k in _CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(
            f"{where}: expected a training checkpoint with keys {list(_CHECKPOINT_KEYS)}, missing {missing}."
        )
    class_names = [str(c) for c in ck["class_names"]]
    try:
        text = TextEmbeddings.from_dict(ck["text"], source=f"{where} ['text']")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    if text.class_names != class_names:
        raise CheckpointError(
            f"{where}: the text embeddings are for classes {text.class_names}, the model for {class_names}."
        )
    try:
        model = build_segmenter(ck["model_name"], len(class_names), text.dim, **ck.get("model_kwargs", {}))
        model.load_state_dict(ck["model"])
    except (RuntimeError, ConfigError) as exc:
        raise CheckpointError(
            f"{where}: the weights do not fit model {ck['model_name']!r} with {len(class_names)} classes "
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
