"""Whole-volume inference: every slice of a volume, batched, mapped back to the original grid.

No slice is dropped to fill a batch (the last batch is simply smaller), unlike the released
evaluation of this family of papers (METHOD.md, Evaluation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.io import load_nifti
from tcsa_uda.data.prepare import PreparedCase, PreparedIndex, slices_to_volume
from tcsa_uda.data.slices import to_three_channels
from tcsa_uda.errors import MissingPathError
from tcsa_uda.models import upsample_logits


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    slices: np.ndarray,
    text: Tensor,
    batch_size: int = 16,
    flip: bool = False,
) -> np.ndarray:
    """Class probabilities of a slice stack.

    Args:
        model: a segmenter returning ``SegmenterOutput``; put in eval mode by the caller.
        slices: (S, H, W) float32 normalised slices.
        text: (C, D_text) text embeddings of the slices' modality.
        batch_size: slices per forward pass (the last batch may be smaller).
        flip: average with the prediction of the horizontally flipped slices (test-time augmentation).

    Returns:
        (S, C, H, W) float32 softmax probabilities of the main head.
    """
    device = text.device
    out = []
    size = tuple(slices.shape[-2:])
    for start in range(0, slices.shape[0], batch_size):
        x = torch.from_numpy(np.array(slices[start : start + batch_size], dtype=np.float32))
        x = to_three_channels(x).to(device)  # (b, 3, H, W)
        prob = torch.softmax(upsample_logits(model(x, text).main, size), dim=1)
        if flip:
            xf = torch.flip(x, dims=[-1])
            pf = torch.softmax(upsample_logits(model(xf, text).main, size), dim=1)
            prob = 0.5 * (prob + torch.flip(pf, dims=[-1]))
        out.append(prob.float().cpu().numpy())
    return np.concatenate(out, axis=0)


def predict_case(
    model: nn.Module, case: PreparedCase, text: Tensor, batch_size: int = 16, flip: bool = False
) -> np.ndarray:
    """Label map of one prepared case on its ORIGINAL voxel grid, (X, Y, Z) uint8."""
    probs = predict_slices(model, np.asarray(case.load_image()), text, batch_size=batch_size, flip=flip)
    vol = slices_to_volume(probs, case.geometry)  # (C, X, Y, Z)
    return np.argmax(vol, axis=0).astype(np.uint8)


def original_label(index: PreparedIndex, case: PreparedCase) -> np.ndarray:
    """The ground-truth label volume of ``case`` read from the original dataset file."""
    rec = case.source.get("label")
    if not rec:
        raise MissingPathError(f"Case {case.domain}/{case.id} has no label in {index.dataset_path}.")
    path = Path(index.dataset_path) / rec["path"]
    return np.asarray(load_nifti(path, what="label").array).astype(np.int64)
