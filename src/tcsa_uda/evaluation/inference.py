"""Whole-volume inference: every slice of a volume, batched, mapped back to the original grid.

No slice is dropped to fill a batch (the last batch is simply smaller), unlike the released
evaluation of this family of papers (docs/evaluation.md). Each batch of slice predictions is
mapped back onto the original in-plane grid as soon as it is computed, so memory holds one
batch of network-resolution probabilities plus the original-grid result.

Two entry points give the same numbers for the same volume:

* :func:`predict_case` reads the slices that ``tcsa-uda prepare`` stored;
* :func:`predict_volume` preprocesses an image array in memory exactly as ``prepare`` does
  (:func:`~tcsa_uda.data.normalize.normalize_with`, :func:`~tcsa_uda.data.prepare.resolve_axis`,
  :func:`~tcsa_uda.data.prepare.make_geometry`, :func:`~tcsa_uda.data.prepare.image_to_slices`)
  with the settings a checkpoint recorded (:class:`PreprocessingSettings`), so ``predict`` and
  ``evaluate`` on a raw dataset need no prepared folder.

Probabilities are resized bilinearly back to the original grid and the label map is their
argmax there (not a nearest-neighbour resize of the network-resolution argmax).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from tcsa_uda.data.geometry import (
    SliceGeometry,
    image_to_slices,
    make_geometry,
    parse_axis,
    resolve_axis,
    slices_to_volume,
)
from tcsa_uda.data.io import Volume, load_nifti
from tcsa_uda.data.normalize import PERCENTILE_ZSCORE, NormalizationSpec, check_percentiles, normalize_with
from tcsa_uda.data.prepared import PreparedCase, PreparedIndex
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError
from tcsa_uda.models.inference import check_batch_size, predict_slices


@dataclass(frozen=True)
class PreprocessingSettings:
    """The ``prepare`` settings a model was trained with (``checkpoint["preprocessing"]["prepare"]``).

    Attributes:
        axis: slicing axis, an anatomical name (``axial``/``coronal``/``sagittal``, found from
            each volume's affine) or an array axis ``"0"``/``"1"``/``"2"``.
        size: side of the square network input in pixels.
        clip_percentiles: (low, high) intensity percentiles each volume is clipped to.
        normalization: the intensity map (``percentile_zscore`` when the settings predate it).
    """

    axis: str
    size: int
    clip_percentiles: tuple[float, float]
    normalization: NormalizationSpec = field(default_factory=NormalizationSpec)

    def __post_init__(self) -> None:
        parse_axis(self.axis)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"preprocessing size: expected a positive integer (pixels), found {self.size!r}.")
        check_percentiles(self.clip_percentiles, "preprocessing clip_percentiles")

    @classmethod
    def from_mapping(cls, data: Any, source: str = "checkpoint") -> PreprocessingSettings:
        """Read ``{"axis", "size", "clip_percentiles"}`` (extra keys are ignored).

        Raises:
            ConfigError: a key is missing or invalid; the message names ``source``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected preprocessing settings with keys axis, size, clip_percentiles, "
                f"found {type(data).__name__}."
            )
        missing = [k for k in ("axis", "size", "clip_percentiles") if k not in data]
        if missing:
            raise ConfigError(f"{source}: preprocessing settings lack {missing} (found keys {sorted(data)}).")
        try:
            axis = str(parse_axis(data["axis"]))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        size = data["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{source}: size: expected a positive integer (pixels), found {size!r}.")
        clip = data["clip_percentiles"]
        if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
            raise ConfigError(f"{source}: clip_percentiles: expected two numbers (low, high), found {clip!r}.")
        low, high = check_percentiles((clip[0], clip[1]), f"{source}: clip_percentiles")
        norm = NormalizationSpec.from_dict(data.get("normalization"), source)
        return cls(axis=axis, size=size, clip_percentiles=(low, high), normalization=norm)

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], source: str = "checkpoint") -> PreprocessingSettings:
        """The settings stored by the training engine under ``["preprocessing"]["prepare"]``."""
        prep = checkpoint.get("preprocessing")
        if not isinstance(prep, Mapping) or "prepare" not in prep:
            raise ConfigError(
                f"{source}: no preprocessing settings (expected key ['preprocessing']['prepare'] written by "
                "`tcsa-uda train`); without them the input pipeline cannot be reproduced."
            )
        return cls.from_mapping(prep["prepare"], f"{source} ['preprocessing']['prepare']")

    def to_dict(self) -> dict[str, Any]:
        """The mapping ``prepare`` records in ``index.json`` settings."""
        return {
            "axis": self.axis,
            "size": self.size,
            "clip_percentiles": list(self.clip_percentiles),
            "normalization": self.normalization.to_dict(),
        }

    def matches(self, settings: Mapping[str, Any]) -> bool:
        """True when a prepared index's ``settings`` equal these (percentiles only count for percentile_zscore)."""
        try:
            other = PreprocessingSettings.from_mapping(settings)
        except ConfigError:
            return False
        if self.normalization.method != PERCENTILE_ZSCORE:
            other = PreprocessingSettings(other.axis, other.size, self.clip_percentiles, other.normalization)
        return other == self


@dataclass
class VolumePrediction:
    """The prediction of one volume on its original voxel grid.

    Attributes:
        labels: (X, Y, Z) uint8 argmax label map (int16 beyond 256 classes).
        probabilities: (C, X, Y, Z) float32 softmax probabilities, or None when not kept.
        geometry: how the volume was sliced.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    geometry: SliceGeometry


def _label_dtype(num_classes: int) -> type[np.integer]:
    return np.uint8 if num_classes <= 256 else np.int16


def predict_stack(
    model: nn.Module,
    slices: np.ndarray,
    geometry: SliceGeometry,
    text: Tensor,
    batch_size: int = 16,
    flip: bool = False,
    keep_probabilities: bool = False,
) -> VolumePrediction:
    """Predict every slice of a prepared stack and map it back onto the original grid.

    Args:
        model: a segmenter in eval mode.
        slices: (S, size, size) float32 normalised slices; ``S = geometry.n_slices``.
        geometry: the :class:`SliceGeometry` the stack was made with.
        text: (C, D_text) text embeddings of the volume's modality (on the model's device).
        batch_size: slices per forward pass; the last batch may be smaller, none is dropped.
        flip: horizontal-flip test-time augmentation.
        keep_probabilities: also return the (C, X, Y, Z) probabilities on the original grid.

    Raises:
        DatasetError: the stack does not match ``geometry``.
        ConfigError: invalid ``batch_size``.
    """
    check_batch_size(batch_size)
    n, size = geometry.n_slices, geometry.size
    if slices.ndim != 3 or slices.shape != (n, size, size):
        raise DatasetError(f"predict_stack: expected a slice stack of shape {(n, size, size)}, found {slices.shape}.")
    h, w = geometry.in_plane_shape
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    for start in range(0, n, batch_size):
        p = predict_slices(model, slices[start : start + batch_size], text, batch_size=batch_size, flip=flip)
        b, c = p.shape[:2]
        chunk = _chunk_geometry(geometry, b)
        vol = np.moveaxis(slices_to_volume(p, chunk), 1 + geometry.axis, 1)  # (C, b, H, W)
        if labels is None:
            labels = np.empty((n, h, w), dtype=_label_dtype(c))
            probs = np.empty((n, c, h, w), dtype=np.float32) if keep_probabilities else None
        labels[start : start + b] = np.argmax(vol, axis=0)
        if probs is not None:
            probs[start : start + b] = vol.transpose(1, 0, 2, 3)
    if labels is None:
        raise DatasetError(f"predict_stack: the volume of shape {geometry.original_shape} has no slice to predict.")
    out_probs = None
    if probs is not None:
        out_probs = np.ascontiguousarray(np.moveaxis(probs.transpose(1, 0, 2, 3), 1, 1 + geometry.axis))
    return VolumePrediction(
        labels=np.ascontiguousarray(np.moveaxis(labels, 0, geometry.axis)),
        probabilities=out_probs,
        geometry=geometry,
    )


def _chunk_geometry(geometry: SliceGeometry, n: int) -> SliceGeometry:
    """The geometry of ``n`` consecutive slices of ``geometry`` (same in-plane mapping)."""
    shape = list(geometry.original_shape)
    shape[geometry.axis] = n
    return SliceGeometry(axis=geometry.axis, original_shape=tuple(shape), pad=geometry.pad, size=geometry.size)  # type: ignore[arg-type]


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    affine: np.ndarray,
    text: Tensor,
    settings: PreprocessingSettings,
    batch_size: int = 16,
    flip: bool = False,
    keep_probabilities: bool = False,
    what: str = "image",
    domain: str | None = None,
) -> VolumePrediction:
    """Preprocess a raw image volume as ``prepare`` does, predict it and map back to its grid.

    Args:
        model: a segmenter in eval mode.
        image: (X, Y, Z) raw intensities in the file's voxel order.
        affine: (4, 4) voxel-to-world affine (finds the anatomical slicing axis).
        text: (C, D_text) text embeddings of the image's modality.
        settings: the checkpoint's preprocessing settings.
        batch_size: slices per forward pass.
        flip: horizontal-flip test-time augmentation.
        keep_probabilities: also return the (C, X, Y, Z) probabilities.
        what: the image's name (file path) in error messages.
        domain: the image's domain; picks its intensity range under ``fixed`` normalisation.

    Raises:
        DatasetError: the image is not 3D, not finite, or its affine does not fix the axis.
    """
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise DatasetError(f"{what}: expected a 3D image (X, Y, Z), found {arr.ndim}D data of shape {arr.shape}.")
    normalised, _ = normalize_with(arr, settings.normalization, domain, settings.clip_percentiles, what=what)
    axis = resolve_axis(affine, settings.axis, what=what)
    geometry = make_geometry(normalised.shape, axis, settings.size)
    slices = image_to_slices(normalised, geometry)  # (S, size, size)
    return predict_stack(model, slices, geometry, text, batch_size, flip, keep_probabilities)


def predict_case(
    model: nn.Module, case: PreparedCase, text: Tensor, batch_size: int = 16, flip: bool = False
) -> np.ndarray:
    """Label map of one prepared case on its ORIGINAL voxel grid, (X, Y, Z) uint8."""
    return predict_stack(model, np.asarray(case.load_image()), case.geometry, text, batch_size, flip).labels


def original_label_volume(index: PreparedIndex, case: PreparedCase) -> Volume:
    """The ground-truth label volume of ``case`` (array, affine, header) from the original dataset.

    Raises:
        MissingPathError: the case has no label, or the file has moved since ``prepare``.
    """
    rec = case.source.get("label")
    if not rec:
        raise MissingPathError(f"Case {case.domain}/{case.id} has no label in {index.dataset_path}.")
    return load_nifti(Path(index.dataset_path) / rec["path"], what="label")
