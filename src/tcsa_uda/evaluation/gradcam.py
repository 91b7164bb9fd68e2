"""Grad-CAM class-activation maps of the main head on the backbone output ``F_hi``.

TCSA-UDA (arXiv 2511.05782) shows with Grad-CAM (Selvaraju et al., ICCV 2017) where the adapted
model looks for each structure. The target layer is the backbone's last layer, ``F_hi``
(layer4, ``(B, D_hi, h, w)``), which both heads and the prototype alignment read. For a class
``c`` and an image:

1. ``score_c`` = sum of the main logits of class ``c`` over the pixels predicted as ``c`` (feature
   resolution ``h x w``); over the whole image when no pixel is predicted as ``c``, so that an
   empty prediction still gives a map (recorded in :attr:`GradCamResult.whole_image`);
2. ``alpha_c = mean_{h,w} d score_c / d F_hi`` (one weight per channel);
3. ``cam_c = ReLU(sum_k alpha_c[k] F_hi[k])``, upsampled bilinearly (``align_corners=True``, as
   the logits) to the image size;
4. normalised to [0, 1] by its maximum (a map that is zero everywhere stays zero).

The gradient is taken with respect to the ``f_hi`` tensor the forward pass returns
(:class:`~tcsa_uda.models.segmenter.SegmenterOutput`), which is the tensor the rest of the
network consumes, so no hooks are needed and any model with that output contract works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.data.encoding import InputEncoding, check_input_encoding, encode_slices
from tcsa_uda.errors import ConfigError

__all__ = ["GradCamResult", "grad_cam"]


@dataclass(frozen=True)
class GradCamResult:
    """Grad-CAM maps of a batch of slices.

    Attributes:
        maps: ``(S, K, H, W)`` float32 maps in [0, 1], one per slice and requested class.
        classes: the K class ids, in the order of ``maps``' second axis.
        prediction: ``(S, H, W)`` argmax of the upsampled main logits (what the model predicts).
        whole_image: ``(S, K)`` bool, True where class ``c`` was not predicted in the slice and
            its score was summed over the whole image instead.
    """

    maps: np.ndarray
    classes: tuple[int, ...]
    prediction: np.ndarray
    whole_image: np.ndarray


def grad_cam(
    model: nn.Module,
    slices: np.ndarray | Tensor,
    text: Tensor,
    classes: Sequence[int],
    batch_size: int = 8,
    *,
    encoding: InputEncoding,
) -> GradCamResult:
    """Grad-CAM maps of the main head for each class on each slice.

    Args:
        model: a segmenter returning ``SegmenterOutput`` (``main`` and ``f_hi``); it is put in
            eval mode by the caller (BatchNorm statistics must not change).
        slices: ``(S, H, W)`` normalised grey slices (encoded to the network input here), on the CPU.
        text: ``(C, D_text)`` text embeddings of the slices' modality, on the model's device.
        classes: class ids (``0 <= c < C``) to compute maps for.
        batch_size: slices per forward/backward pass.
        encoding: the model's input encoding (``LoadedModel.input_encoding``).

    Returns:
        :class:`GradCamResult` with ``(S, K, H, W)`` maps.

    Raises:
        ConfigError: ``slices`` is not ``(S, H, W)``, ``classes`` is empty or holds an id
            outside the model's classes, ``batch_size`` is not positive, or ``encoding`` is unknown.
    """
    check_input_encoding(encoding)
    stack = slices if isinstance(slices, Tensor) else torch.from_numpy(np.array(slices, dtype=np.float32))
    if stack.dim() != 3 or stack.shape[0] < 1:
        raise ConfigError(f"grad_cam slices: expected a (S, H, W) stack with S >= 1, found shape {tuple(stack.shape)}.")
    ids = tuple(int(c) for c in classes)
    num_classes = int(text.shape[0])
    if not ids or any(c < 0 or c >= num_classes for c in ids):
        raise ConfigError(f"grad_cam classes: expected ids in 0..{num_classes - 1}, found {list(ids)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"grad_cam batch_size: expected a positive integer, found {batch_size!r}.")
    device = text.device
    size = (int(stack.shape[-2]), int(stack.shape[-1]))
    maps, preds, whole = [], [], []
    for start in range(0, stack.shape[0], batch_size):
        x = encode_slices(stack[start : start + batch_size], encoding).to(device)  # (b, 3, H, W)
        m, p, w = _batch_cam(model, x, text, ids, size)
        maps.append(m)
        preds.append(p)
        whole.append(w)
    return GradCamResult(
        maps=np.concatenate(maps), classes=ids, prediction=np.concatenate(preds), whole_image=np.concatenate(whole)
    )


def _batch_cam(
    model: nn.Module, x: Tensor, text: Tensor, ids: tuple[int, ...], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps ``(b, K, H, W)``, prediction ``(b, H, W)`` and the whole-image flags ``(b, K)`` of one batch."""
    with torch.enable_grad():
        out = model(x, text)
        main, f_hi = out.main, out.f_hi  # (b, C, h, w), (b, D_hi, h, w)
        if not f_hi.requires_grad:
            raise ConfigError(
                "grad_cam: the model's f_hi does not require grad; its parameters are frozen or it is detached."
            )
        pred_low = main.argmax(dim=1)  # (b, h, w)
        cams, whole = [], []
        for k, c in enumerate(ids):
            region = (pred_low == c).float()  # (b, h, w)
            empty = region.flatten(1).sum(dim=1) == 0  # (b,)
            region[empty] = 1.0
            # Images are independent in eval mode, so one backward of the batch sum gives each
            # image's own gradient.
            score = (main[:, c] * region).sum()
            (grad,) = torch.autograd.grad(score, f_hi, retain_graph=k < len(ids) - 1)
            alpha = grad.mean(dim=(2, 3), keepdim=True)  # (b, D_hi, 1, 1)
            cam = F.relu((alpha * f_hi.detach()).sum(dim=1, keepdim=True))  # (b, 1, h, w)
            cams.append(F.interpolate(cam, size=size, mode="bilinear", align_corners=True))
            whole.append(empty)
        cam_all = torch.cat(cams, dim=1)  # (b, K, H, W)
        peak = cam_all.flatten(2).amax(dim=2)[..., None, None]  # (b, K, 1, 1)
        cam_all = torch.where(peak > 0, cam_all / peak.clamp_min(1e-12), torch.zeros_like(cam_all))
        pred = F.interpolate(main.detach(), size=size, mode="bilinear", align_corners=True).argmax(dim=1)
    return (
        cam_all.clamp(0.0, 1.0).float().cpu().numpy(),
        pred.cpu().numpy().astype(np.int64),
        torch.stack(whole, dim=1).cpu().numpy(),
    )
