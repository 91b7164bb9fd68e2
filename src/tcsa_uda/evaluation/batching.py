"""Inference batch size and precision of ``evaluate`` and ``predict`` (``--batch-size``, ``--precision``).

``--batch-size auto`` chooses the number of slices per forward pass from the free memory:

- CUDA: the footprint of one slice is MEASURED with the loaded model (peak allocated memory of a
  forward pass of 1 and of 3 slices at the checkpoint's input size, in the chosen precision, with
  flip test-time augmentation when asked, so the mirror images count), and the batch is
  ``(MEMORY_FRACTION x free - fixed) / per_slice`` with ``free`` from ``torch.cuda.mem_get_info``
  plus the allocator's cached blocks, clamped to ``[1, MAX_BATCH_SIZE]``;
- CPU: a fixed :data:`CPU_BATCH_SIZE` = 16 slices (the earlier default); nothing is measured.

``--precision auto`` is bf16 on CUDA with bfloat16 support (else fp16) and fp32 on CPU
(:func:`tcsa_uda.precision.resolve_precision`); inference needs no loss scaling, so fp16 is
plain autocast here. Probabilities are always upsampled and normalised in float32.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import DEFAULT_INPUT_ENCODING, InputEncoding
from tcsa_uda.errors import ConfigError
from tcsa_uda.models.inference import check_batch_size, predict_slices
from tcsa_uda.precision import Precision, autocast, resolve_precision

AUTO: Final[str] = "auto"
CPU_BATCH_SIZE: Final[int] = 16
MAX_BATCH_SIZE: Final[int] = 128
MEMORY_FRACTION: Final[float] = 0.8

__all__ = [
    "AUTO",
    "CPU_BATCH_SIZE",
    "MAX_BATCH_SIZE",
    "MEMORY_FRACTION",
    "inference_options",
    "parse_batch_size",
    "resolve_batch_size",
    "slice_footprint",
    "slices_that_fit",
]


def parse_batch_size(value: int | str, key: str = "--batch-size") -> int | str:
    """``auto`` or a positive integer (given as int or text), else a ConfigError naming ``key``."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if not text.isdigit():
            raise ConfigError(f"{key}: expected a positive integer or auto, found {value!r}.")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: expected a positive integer or auto, found {value!r}.")
    return value


def slices_that_fit(free_bytes: int, per_slice_bytes: float, fixed_bytes: float = 0.0) -> int:
    """Slices per forward pass in ``MEMORY_FRACTION`` of ``free_bytes``, clamped to ``[1, MAX_BATCH_SIZE]``."""
    if per_slice_bytes <= 0:
        return MAX_BATCH_SIZE
    fit = math.floor((MEMORY_FRACTION * free_bytes - max(fixed_bytes, 0.0)) / per_slice_bytes)
    return max(1, min(MAX_BATCH_SIZE, fit))


def slice_footprint(
    model: nn.Module,
    text: Tensor,
    size: int,
    precision: Precision,
    flip: bool = False,
    encoding: InputEncoding = DEFAULT_INPUT_ENCODING,
) -> tuple[float, float]:
    """``(per_slice, fixed)`` bytes of CUDA memory of an inference forward pass (measured).

    Runs :func:`~tcsa_uda.models.inference.predict_slices` on 1 and on 3 zero slices of
    ``size x size`` and fits ``peak = fixed + per_slice x slices`` to the two peaks above the
    memory allocated before.

    Raises:
        ConfigError: ``text`` is not on a CUDA device.
    """
    device = text.device
    if device.type != "cuda":
        raise ConfigError(f"slice_footprint: measures CUDA memory; the model is on {device}.")
    peaks = []
    for n in (1, 3):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with autocast(precision, device):
            zeros = np.zeros((n, size, size), np.float32)
            predict_slices(model, zeros, text, batch_size=n, flip=flip, encoding=encoding)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    per_slice = max((peaks[1] - peaks[0]) / 2.0, 1.0)
    return per_slice, peaks[0] - per_slice


def resolve_batch_size(
    option: int | str,
    model: nn.Module,
    text: Tensor,
    size: int,
    precision: Precision,
    flip: bool = False,
    encoding: InputEncoding = DEFAULT_INPUT_ENCODING,
) -> int:
    """The slices per forward pass for ``--batch-size option`` (module docstring).

    Args:
        option: a positive integer (used as is) or ``auto``.
        model: the segmenter in eval mode, on its device.
        text: (C, D_text) text embeddings on the model's device (tells the device).
        size: side of the network input (the checkpoint's preprocessing size).
        precision: the inference precision (the footprint is measured in it).
        flip: flip test-time augmentation (doubles each forward pass).
        encoding: the model's input encoding (``grey`` or ``caffe_bgr``).

    Raises:
        ConfigError: ``option`` is neither ``auto`` nor a positive integer.
    """
    value = parse_batch_size(option)
    if isinstance(value, int):
        check_batch_size(value)
        return value
    device = text.device
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    per_slice, fixed = slice_footprint(model, text, size, precision, flip, encoding)
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return slices_that_fit(int(free + cached), per_slice, fixed)


def inference_options(
    model: nn.Module,
    text: Tensor,
    size: int,
    batch_size: int | str,
    precision: str,
    flip: bool = False,
    encoding: InputEncoding = DEFAULT_INPUT_ENCODING,
) -> tuple[int, Precision]:
    """``(slices per forward pass, precision)`` for the ``--batch-size`` and ``--precision`` options.

    Raises:
        ConfigError: an invalid option, or a precision the device cannot run (``fp16`` on CPU).
    """
    resolved = resolve_precision(precision, text.device, "--precision")
    return resolve_batch_size(batch_size, model, text, size, resolved, flip, encoding), resolved
