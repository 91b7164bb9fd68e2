"""Source supervision: class-balanced cross-entropy plus soft Dice (docs/method.md, Losses 1).

TCSA-UDA (Maurya et al., arXiv 2511.05782) trains the segmenter on the labelled source batch with

``L_seg = CE_w(P_main, y) + 0.1 CE_w(P_aux, y) + Dice(P_main, y) + 0.1 Dice(P_aux, y)``

where the class weights of ``CE_w`` are recomputed on every batch and Dice includes background.

Shapes: logits ``(B, C, H, W)`` already upsampled to the label size by the caller; labels
``(B, H, W)`` integer class indices in ``[0, C)``.

The label checks in this module (:func:`check_logits_and_labels`, :func:`check_label_range`) are
shared by the other loss modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.precision import float32

__all__ = [
    "SourceSegmentationLoss",
    "check_label_range",
    "check_logits_and_labels",
    "class_balance_weights",
    "dice_loss",
    "source_segmentation_loss",
    "weighted_cross_entropy",
]


_DICE_EPS = 1e-5


def check_label_range(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    """Check that ``labels`` is an integer tensor with every value in ``[0, num_classes)``.

    Args:
        labels: Class indices of any shape.
        num_classes: Number of classes C, background included.
        name: Name of the tensor used in the error message.

    Raises:
        ConfigError: ``labels`` is not an integer tensor or ``num_classes`` < 1.
        DatasetError: A label value lies outside ``[0, num_classes)``; the message lists the
            offending values.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes: expected an integer >= 1, found {num_classes}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ConfigError(f"{name}: expected an integer tensor of class indices, found dtype {labels.dtype}.")
    if labels.numel() == 0:
        return
    lo, hi = torch.aminmax(labels)
    if int(lo) < 0 or int(hi) >= num_classes:
        bad = torch.unique(labels[(labels < 0) | (labels >= num_classes)]).tolist()
        shown = ", ".join(str(v) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise DatasetError(
            f"{name}: expected class indices in [0, {num_classes}) (num_classes = {num_classes}), "
            f"found values {shown}. Check the labels of the dataset and its 'labels' entry in dataset.json."
        )


def check_logits_and_labels(logits: Tensor, target: Tensor, name: str = "logits") -> None:
    """Check that logits ``(B, C, H, W)`` and labels ``(B, H, W)`` agree and labels are in range.

    Args:
        logits: Unnormalised scores, shape ``(B, C, H, W)``.
        target: Class indices, shape ``(B, H, W)``.
        name: Name of the logits tensor used in error messages.

    Raises:
        ConfigError: Wrong number of dimensions or mismatched batch/spatial sizes.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    if logits.dim() != 4:
        raise ConfigError(f"{name}: expected shape (B, C, H, W), found {tuple(logits.shape)}.")
    if target.dim() != 3:
        raise ConfigError(f"labels: expected shape (B, H, W), found {tuple(target.shape)}.")
    b, _, h, w = logits.shape
    if tuple(target.shape) != (b, h, w):
        raise ConfigError(
            f"labels: expected shape {(b, h, w)} to match {name} {tuple(logits.shape)} "
            f"(logits must be upsampled to the label size), found {tuple(target.shape)}."
        )
    check_label_range(target, logits.shape[1])


def class_balance_weights(target: Tensor, num_classes: int) -> Tensor:
    """Per-batch class weights ``w_c = 1 - (n_c + 1) / N`` (docs/method.md, Losses 1).

    ``n_c`` is the number of pixels of class ``c`` in the whole batch and ``N`` the number of
    pixels, so rare classes weigh close to 1 and a dominant background less.

    Args:
        target: Class indices, shape ``(B, H, W)`` (any shape is accepted).
        num_classes: Number of classes C, background included.

    Returns:
        Float weights of shape ``(C,)`` on the device of ``target``.

    Raises:
        ConfigError: ``target`` is empty or not integer.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    check_label_range(target, num_classes, name="labels")
    if target.numel() == 0:
        raise ConfigError("labels: expected at least one pixel to compute class weights, found an empty tensor.")
    return _class_weights(target, num_classes)


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Class-weighted cross-entropy ``CE_w``.

    The reduction is PyTorch's weighted mean ``sum_i w_{y_i} nll_i / sum_i w_{y_i}``. With the
    per-batch weights a class covering the whole batch gets ``w = -1/N``, which the weighted mean
    cancels (plain mean); a class covering all pixels but one gets ``w = 0``.

    Args:
        logits: Unnormalised scores, shape ``(B, C, H, W)``.
        target: Class indices, shape ``(B, H, W)``.
        weight: Class weights ``(C,)``; ``None`` computes :func:`class_balance_weights` from
            ``target``.

    Returns:
        Scalar loss.

    Raises:
        ConfigError: Shapes disagree or ``weight`` is not ``(C,)``.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    check_logits_and_labels(logits, target)
    c = logits.shape[1]
    if weight is None:
        if target.numel() == 0:
            raise ConfigError("labels: expected at least one pixel to compute class weights, found an empty tensor.")
        weight = _class_weights(target, c)
    elif tuple(weight.shape) != (c,):
        raise ConfigError(f"weight: expected shape ({c},) for {c} classes, found {tuple(weight.shape)}.")
    return _weighted_ce(logits, target, weight)


def _class_weights(target: Tensor, num_classes: int) -> Tensor:
    """Unchecked :func:`class_balance_weights`; ``target`` must be non-empty and in range."""
    counts = torch.bincount(target.reshape(-1), minlength=num_classes).to(torch.float32)
    return 1.0 - (counts + 1.0) / float(target.numel())


@float32
def _weighted_ce(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Unchecked :func:`weighted_cross_entropy` (weighted-mean reduction), in float32 (bf16 makes 0.998 0.996)."""
    return F.cross_entropy(logits, target, weight=weight.to(device=logits.device, dtype=logits.dtype))


def dice_loss(logits: Tensor, target: Tensor, eps: float = _DICE_EPS) -> Tensor:
    """Soft Dice loss on softmax probabilities, background included.

    ``1 - mean_{b, c} 2 sum_hw(p g) / (sum_hw p^2 + sum_hw g^2 + eps)`` with ``g`` the one-hot
    labels. As the formula implies, a class absent from an image scores 0 (loss 1) for that image
    even when it is not predicted there.

    Args:
        logits: Unnormalised scores, shape ``(B, C, H, W)``.
        target: Class indices, shape ``(B, H, W)``.
        eps: Added to the denominator only.

    Returns:
        Scalar loss in ``[0, 1]``.

    Raises:
        ConfigError: Shapes disagree.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    check_logits_and_labels(logits, target)
    return _dice(logits, target, eps)


@float32
def _dice(logits: Tensor, target: Tensor, eps: float) -> Tensor:
    """Unchecked :func:`dice_loss`, computed in float32 (pixel sums overflow float16)."""
    prob = torch.softmax(logits.float(), dim=1)  # (B, C, H, W)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(prob.dtype)  # (B, C, H, W)
    inter = (prob * onehot).sum(dim=(2, 3))  # (B, C)
    denom = (prob * prob).sum(dim=(2, 3)) + onehot.sum(dim=(2, 3)) + eps  # g^2 = g for one-hot
    return 1.0 - (2.0 * inter / denom).mean()


def source_segmentation_loss(
    main_logits: Tensor, aux_logits: Tensor, target: Tensor, aux_weight: float = 0.1
) -> tuple[Tensor, dict[str, Tensor]]:
    """Source supervision ``L_seg`` on the main and auxiliary predictions.

    ``CE_w(main) + a CE_w(aux) + Dice(main) + a Dice(aux)`` with ``a = aux_weight``; the class
    weights are computed once from ``target`` and shared by both heads.

    Args:
        main_logits: Main head logits, shape ``(B, C, H, W)``.
        aux_logits: Auxiliary head logits, shape ``(B, C, H, W)``.
        target: Class indices, shape ``(B, H, W)``.
        aux_weight: Weight ``a`` of the auxiliary terms (0.1 in the paper).

    Returns:
        The total scalar loss and its detached parts ``ce_main``, ``ce_aux``, ``dice_main``,
        ``dice_aux`` (unweighted).

    Raises:
        ConfigError: Shapes disagree or ``aux_weight`` < 0.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    if aux_weight < 0:
        raise ConfigError(f"aux_weight: expected a value >= 0, found {aux_weight}.")
    if main_logits.shape != aux_logits.shape:
        raise ConfigError(
            f"aux_logits: expected the shape of main_logits {tuple(main_logits.shape)}, "
            f"found {tuple(aux_logits.shape)}."
        )
    check_logits_and_labels(main_logits, target, name="main_logits")  # labels checked once
    weight = _class_weights(target, main_logits.shape[1])
    parts = {
        "ce_main": _weighted_ce(main_logits, target, weight),
        "ce_aux": _weighted_ce(aux_logits, target, weight),
        "dice_main": _dice(main_logits, target, _DICE_EPS),
        "dice_aux": _dice(aux_logits, target, _DICE_EPS),
    }
    total = parts["ce_main"] + parts["dice_main"] + aux_weight * (parts["ce_aux"] + parts["dice_aux"])
    return total, {k: v.detach() for k, v in parts.items()}


class SourceSegmentationLoss(nn.Module):
    """Module form of :func:`source_segmentation_loss`.

    Args:
        aux_weight: Weight of the auxiliary cross-entropy and Dice terms (0.1 in the paper).

    Raises:
        ConfigError: ``aux_weight`` < 0.
    """

    def __init__(self, aux_weight: float = 0.1) -> None:
        super().__init__()
        if aux_weight < 0:
            raise ConfigError(f"aux_weight: expected a value >= 0, found {aux_weight}.")
        self.aux_weight = float(aux_weight)

    def forward(self, main_logits: Tensor, aux_logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(L_seg, detached parts)``; see :func:`source_segmentation_loss`."""
        return source_segmentation_loss(main_logits, aux_logits, target, aux_weight=self.aux_weight)
