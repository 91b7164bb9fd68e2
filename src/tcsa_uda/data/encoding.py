"""The network's input encoding: how normalised grey slices become 3-channel network inputs.

Every path into a segmenter goes through :func:`encode_slices` -- the training dataset, slice
inference (selection, evaluation, predict, report), Grad-CAM and t-SNE -- with the encoding a run
was trained with (``model.input_encoding``, recorded in checkpoints under
``["preprocessing"]["input_encoding"]``). Two encodings exist:

* ``grey`` (default): the slice value in [-1, 1] repeated to 3 channels.
* ``caffe_bgr``: the authors' released TCSA-UDA pipeline (inherited from the Caffe DeepLab
  models): ``(x + 1) * 127.5`` (so [0, 255]), channels in B, G, R order, minus the Caffe ImageNet
  mean :data:`CAFFE_MEAN_BGR` per channel. For a grey slice the three channels differ only by
  their means. Released checkpoints and ImageNet weights converted from Caffe expect it.

Shapes: ``(H, W) -> (3, H, W)`` and ``(S, H, W) -> (S, 3, H, W)``, float32.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, cast

import numpy as np
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.train_config import InputEncoding

__all__ = [
    "CAFFE_MEAN_BGR",
    "DEFAULT_INPUT_ENCODING",
    "IMAGE_CHANNELS",
    "INPUT_ENCODINGS",
    "InputEncoding",
    "check_input_encoding",
    "encode_slices",
    "input_encoding_of",
]

IMAGE_CHANNELS: Final[int] = 3
"""Input channels of the segmentation network."""

INPUT_ENCODINGS: Final[tuple[str, ...]] = ("grey", "caffe_bgr")
DEFAULT_INPUT_ENCODING: Final[InputEncoding] = "grey"
"""The encoding of every checkpoint written before the setting was recorded."""

CAFFE_MEAN_BGR: Final[tuple[float, float, float]] = (104.00698793, 116.66876762, 122.67891434)
"""Caffe ImageNet mean in channel order (B, G, R), subtracted by the released code."""


def check_input_encoding(value: Any, where: str = "input_encoding") -> InputEncoding:
    """Validate an input-encoding name.

    Raises:
        ConfigError: naming ``where``, the valid names and the value found.
    """
    if not isinstance(value, str) or value not in INPUT_ENCODINGS:
        raise ConfigError(f"{where}: expected one of {', '.join(INPUT_ENCODINGS)}, found {value!r}.")
    return cast(InputEncoding, value)


def input_encoding_of(checkpoint: Mapping[str, Any], source: str = "checkpoint") -> InputEncoding:
    """The encoding recorded in a checkpoint (``["preprocessing"]["input_encoding"]``).

    A checkpoint without the record was written before encodings existed, when every network
    was fed ``grey`` slices; it gets ``grey``.

    Raises:
        ConfigError: the record holds an unknown name.
    """
    prep = checkpoint.get("preprocessing")
    if not isinstance(prep, Mapping) or "input_encoding" not in prep:
        return DEFAULT_INPUT_ENCODING
    return check_input_encoding(prep["input_encoding"], f"{source} ['preprocessing']['input_encoding']")


def encode_slices(slices: np.ndarray | torch.Tensor, encoding: InputEncoding) -> torch.Tensor:
    """Normalised grey slices -> network input (module docstring).

    Args:
        slices: ``(H, W)`` or ``(S, H, W)`` grey values in [-1, 1] (numpy arrays, memory maps
            included, are copied).
        encoding: ``grey`` or ``caffe_bgr``.

    Returns:
        float32 ``(3, H, W)`` or ``(S, 3, H, W)`` on the device of ``slices`` (CPU for numpy).

    Raises:
        ConfigError: an unknown encoding, or ``slices`` not 2-D or 3-D.
    """
    check_input_encoding(encoding)
    if isinstance(slices, torch.Tensor):
        tensor = slices.float()
    else:
        tensor = torch.from_numpy(np.array(slices, dtype=np.float32))  # copy out of the memory map
    if tensor.dim() not in (2, 3):
        raise ConfigError(f"encode_slices: expected (H, W) or (S, H, W) slices, found shape {tuple(tensor.shape)}.")
    grey = tensor.unsqueeze(-3).repeat_interleave(IMAGE_CHANNELS, dim=-3)  # (..., 3, H, W)
    if encoding == "grey":
        return grey
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32, device=grey.device).view(IMAGE_CHANNELS, 1, 1)
    # (x + 1) * 127.5 in RGB, reversed to BGR (a no-op for grey values), minus the mean of each channel
    return (grey + 1.0) * 127.5 - mean
