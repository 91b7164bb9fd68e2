"""Slice-level inference: a stack of normalised 2D slices through a segmenter, in batches.

Shared by the training engine (label-free model selection) and the evaluation stage (whole
volumes, :mod:`tcsa_uda.evaluation.inference`), so both see the same forward pass: slices through
the model's input encoding (:func:`tcsa_uda.data.encoding.encode_slices`), logits upsampled to
the slice size (bilinear, ``align_corners=True``, as the released code does), no slice dropped to
fill a batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import InputEncoding, check_input_encoding, encode_slices
from tcsa_uda.errors import ConfigError
from tcsa_uda.models.segmenter import upsample_logits

__all__ = ["check_batch_size", "predict_slices", "slice_logits"]


def check_batch_size(batch_size: int) -> None:
    """Raise a ConfigError unless ``batch_size`` is a positive integer."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a positive integer, found {batch_size!r}.")


@torch.no_grad()
def slice_logits(
    model: nn.Module,
    slices: np.ndarray | Tensor,
    text: Tensor,
    batch_size: int = 16,
    *,
    encoding: InputEncoding,
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Main and auxiliary logits of a slice stack, batch by batch.

    Args:
        model: a segmenter returning ``SegmenterOutput``; the caller sets eval mode.
        slices: (S, H, W) float32 normalised slices.
        text: (C, D_text) text embeddings of the slices' modality, on the model's device.
        batch_size: slices per forward pass (the last batch may be smaller).
        encoding: the model's input encoding (``grey`` or ``caffe_bgr``).

    Yields:
        ``(start, main, aux)``: the index of the batch's first slice and its (b, C, H, W) main and
        auxiliary logits, upsampled to the slice size, on the model's device.
    """
    check_batch_size(batch_size)
    check_input_encoding(encoding)
    device = text.device
    size = tuple(slices.shape[-2:])
    for start in range(0, slices.shape[0], batch_size):
        x = encode_slices(slices[start : start + batch_size], encoding).to(device)  # (b, 3, H, W)
        out = model(x, text)
        yield start, upsample_logits(out.main, size), upsample_logits(out.aux, size)


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    slices: np.ndarray | Tensor,
    text: Tensor,
    batch_size: int = 16,
    flip: bool = False,
    *,
    encoding: InputEncoding,
) -> np.ndarray:
    """Class probabilities of the main head on a slice stack.

    Args:
        model: a segmenter returning ``SegmenterOutput``; the caller sets eval mode.
        slices: (S, H, W) float32 normalised slices.
        text: (C, D_text) text embeddings of the slices' modality, on the model's device.
        batch_size: slices per forward pass (the last batch may be smaller; with ``flip`` the pass holds 2x).
        flip: average with the prediction of the horizontally flipped slices (test-time augmentation).
            The slices and their mirror images go through ONE forward pass (a batch of 2b).
        encoding: the model's input encoding (``grey`` or ``caffe_bgr``).

    Returns:
        (S, C, H, W) float32 softmax probabilities (upsampled and normalised in float32 also when
        the caller runs the network under autocast).
    """
    check_batch_size(batch_size)
    check_input_encoding(encoding)
    device = text.device
    out = []
    size = tuple(slices.shape[-2:])
    for start in range(0, slices.shape[0], batch_size):
        x = encode_slices(slices[start : start + batch_size], encoding).to(device)  # (b, 3, H, W)
        b = x.shape[0]
        if flip:
            x = torch.cat([x, torch.flip(x, dims=[-1])])  # (2b, 3, H, W)
        prob = torch.softmax(upsample_logits(model(x, text).main.float(), size), dim=1)
        if flip:
            prob = 0.5 * (prob[:b] + torch.flip(prob[b:], dims=[-1]))
        out.append(prob.cpu().numpy())
    return np.concatenate(out, axis=0)
