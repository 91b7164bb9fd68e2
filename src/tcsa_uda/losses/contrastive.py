"""Margin-preserving prototype contrast of MPSCL (Liu et al., IEEE JBHI 26(2):638-647, 2022; arXiv 2103.08454).

Each pixel's L2-normalised feature ``f`` (layer4, ``F_hi``) is contrasted with the C normalised class
centres ``c_k`` of the SOURCE domain: its own class ``y`` is the positive, every other class a
negative, and the positive carries an additive angular margin ``m`` (ArcFace), so a pixel must be
closer to its centre than to the others by an angle ``m``. With ``cos_k = f . c_k``:

- ``phi_k = cos(theta_k + m) = cos_k cos(m) - sin_k sin(m)``, ``sin_k = sqrt(clamp(1 - cos_k^2, 1e-4, 1))``;
  where ``cos_k <= cos(pi - m)`` (the angle would pass pi) ``phi_k = cos_k - m sin(pi - m)``;
- ``paper`` (the standard margin softmax):
  ``loss = -(T / T_base) log(e^{phi_y/T} / (e^{phi_y/T} + sum_{k != y} e^{cos_k/T}))``;
- ``released`` (the released code, ``MPCL`` of github.com/TFboys-lzz/MPSCL): the positive logit is
  ``phi_y/T - max_j phi_j/T`` and the negatives ``cos_k/T - max_j cos_j/T`` (two different maxima,
  which down-weights the negatives by ``e^{max phi - max cos}`` per pixel), and
  ``log_prob = z_y - log(sum_k e^{z_k} + 1e-4)``.

Reductions: the mean over all pixels for the source; for the target the mean over the selected
pixels (``released``: ``sum / (count + 1e-4)``; ``paper``: ``sum / max(count, 1)``).

Target pseudo-labels: the class of the most cosine-similar centre, kept where the top-1 minus the
top-2 cosine exceeds a threshold (:func:`cosine_pseudo_labels`). The centres are an EMA of the
detached per-class means of the source features (:class:`SourceClassCenters`): they carry no
gradient.
"""

from __future__ import annotations

import math
from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.prototype import batch_centroids
from tcsa_uda.losses.segmentation import check_label_range
from tcsa_uda.precision import float32
from tcsa_uda.train_config import Fidelity

__all__ = ["RELEASED_EPS", "SourceClassCenters", "cosine_pseudo_labels", "margin_contrastive_loss"]

RELEASED_EPS: Final[float] = 1e-4
"""The released code adds this inside the log of the softmax denominator and to the target pixel count."""
_SIN_FLOOR: Final[float] = 1e-4


def _flatten(features: Tensor, labels: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """``(B, D, h, w)``, ``(B, h, w)`` -> ``(N, D)``, ``(N,)``."""
    if features.dim() != 4:
        raise ConfigError(f"{what}: expected features of shape (B, D, h, w), found {tuple(features.shape)}.")
    b, d, h, w = features.shape
    if tuple(labels.shape) != (b, h, w):
        raise ConfigError(
            f"{what}: expected labels of shape {(b, h, w)} to match features {tuple(features.shape)}, "
            f"found {tuple(labels.shape)}."
        )
    return features.permute(0, 2, 3, 1).reshape(-1, d), labels.reshape(-1)


@float32
def margin_contrastive_loss(
    features: Tensor,
    labels: Tensor,
    centers: Tensor,
    margin: float,
    temperature: float = 1.0,
    base_temperature: float = 1.0,
    mask: Tensor | None = None,
    mode: Fidelity = "paper",
) -> Tensor:
    """MPSCL's margin-preserving contrastive loss of pixels against class centres (module docstring).

    Args:
        features: pixel features, shape ``(B, D, h, w)`` (normalised here; gradient flows into them).
        labels: class of each pixel, shape ``(B, h, w)`` (ground truth or pseudo-labels).
        centers: class centres, shape ``(C, D)`` (normalised here; used as constants).
        margin: additive angular margin ``m`` in radians (>= 0).
        temperature: ``T`` (> 0); the loss is scaled by ``T / base_temperature``.
        base_temperature: ``T_base`` (> 0).
        mask: optional ``(B, h, w)`` bool of the pixels that count (target selection); all when None.
        mode: ``paper`` (standard margin softmax) or ``released`` (the released code's two maxima
            and ``1e-4`` terms).

    Returns:
        Scalar loss (0 when the mask selects no pixel).

    Raises:
        ConfigError: shapes disagree, or a margin/temperature is out of range.
        DatasetError: a label lies outside ``[0, C)``.
    """
    if margin < 0 or temperature <= 0 or base_temperature <= 0:
        raise ConfigError(
            f"margin_contrastive_loss: expected margin >= 0 and temperatures > 0, found margin={margin}, "
            f"temperature={temperature}, base_temperature={base_temperature}."
        )
    if centers.dim() != 2 or centers.shape[1] != features.shape[1]:
        raise ConfigError(
            f"centers: expected shape (C, {features.shape[1]}) to match features {tuple(features.shape)}, "
            f"found {tuple(centers.shape)}."
        )
    f, y = _flatten(features, labels, "margin_contrastive_loss")
    num_classes = centers.shape[0]
    check_label_range(y, num_classes)
    f = F.normalize(f.float(), dim=1)  # (N, D)
    c = F.normalize(centers.detach().float(), dim=1)  # (C, D)
    cos = f @ c.t()  # (N, C)
    sin = (1.0 - cos.pow(2)).clamp(_SIN_FLOOR, 1.0).sqrt()
    phi = cos * math.cos(margin) - sin * math.sin(margin)  # cos(theta + m)
    phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - margin * math.sin(math.pi - margin))
    positive = F.one_hot(y.long(), num_classes).bool()  # (N, C)
    t = temperature
    if mode == "released":
        neg = cos / t - (cos / t).amax(dim=1, keepdim=True)
        pos = phi / t - (phi / t).amax(dim=1, keepdim=True)
        z = torch.where(positive, pos, neg)  # (N, C)
        log_prob = z.gather(1, y.long()[:, None]).squeeze(1) - torch.log(z.exp().sum(dim=1) + RELEASED_EPS)
    elif mode == "paper":
        z = torch.where(positive, phi, cos) / t
        log_prob = z.gather(1, y.long()[:, None]).squeeze(1) - torch.logsumexp(z, dim=1)
    else:
        raise ConfigError(f"mode: expected 'paper' or 'released', found {mode!r}.")
    per_pixel = -(t / base_temperature) * log_prob  # (N,)
    if mask is None:
        return per_pixel.mean()
    m = mask.reshape(-1).to(per_pixel.dtype)
    if m.numel() != per_pixel.numel():
        raise ConfigError(
            f"mask: expected {per_pixel.numel()} pixels like the labels, found shape {tuple(mask.shape)}."
        )
    count = m.sum()
    denom = count + RELEASED_EPS if mode == "released" else count.clamp_min(1.0)
    return (m * per_pixel).sum() / denom


@float32
def cosine_pseudo_labels(features: Tensor, centers: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Target pseudo-labels from the cosine similarity of each pixel to the class centres.

    Args:
        features: target pixel features ``(B, D, h, w)`` (used detached).
        centers: class centres ``(C, D)``, ``C >= 2`` (a zero row has cosine 0 with every pixel).
        threshold: a pixel is selected when its top-1 cosine exceeds its top-2 cosine by more than this.

    Returns:
        ``(labels, mask)``: ``(B, h, w)`` int64 argmax classes and ``(B, h, w)`` bool selection.

    Raises:
        ConfigError: shapes disagree or fewer than 2 classes.
    """
    if features.dim() != 4 or centers.dim() != 2 or centers.shape[1] != features.shape[1] or centers.shape[0] < 2:
        raise ConfigError(
            f"cosine_pseudo_labels: expected features (B, D, h, w) and centres (C >= 2, D), found "
            f"{tuple(features.shape)} and {tuple(centers.shape)}."
        )
    b, d, h, w = features.shape
    f = F.normalize(features.detach().float().permute(0, 2, 3, 1).reshape(-1, d), dim=1)  # (N, D)
    c = F.normalize(centers.detach().float(), dim=1)  # (C, D)
    top2 = (f @ c.t()).topk(2, dim=1)  # values and indices (N, 2)
    labels = top2.indices[:, 0].reshape(b, h, w)
    mask = (top2.values[:, 0] - top2.values[:, 1] > threshold).reshape(b, h, w)
    return labels, mask


class SourceClassCenters(nn.Module):
    """EMA class centres of the source features, without gradient (MPSCL).

    For each class present in a batch, ``c_k <- m c_k + (1 - m) mu_k`` with ``mu_k`` the mean of the
    detached features of its pixels; a class seen for the first time stores ``mu_k`` as is (the
    released code starts from centres computed offline by the warm-up model; see docs/method.md,
    Baselines); an absent class keeps its centre.

    Args:
        num_classes: C (background included).
        dim: feature channels D.
        momentum: ``m``, the weight of the previous centre (0.2 in the released configs).

    Attributes:
        centers: buffer ``(C, D)``.
        seen: buffer ``(C,)`` bool.

    Raises:
        ConfigError: ``num_classes < 2``, ``dim < 1`` or ``momentum`` outside [0, 1].
    """

    centers: Tensor
    seen: Tensor

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.2) -> None:
        super().__init__()
        if num_classes < 2 or dim < 1:
            raise ConfigError(
                f"SourceClassCenters: expected num_classes >= 2 and dim >= 1, found {num_classes} and {dim}."
            )
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"center_momentum: expected a value in [0, 1], found {momentum}.")
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> Tensor:
        """Update with one source batch and return the centres (a detached copy).

        Args:
            features: ``(B, D, h, w)`` source features.
            labels: ``(B, h, w)`` ground truth at feature resolution.

        Returns:
            ``(C, D)`` centres after the update.
        """
        mu, present = batch_centroids(features.detach(), labels, self.num_classes)  # (C, D), (C,)
        m = self.momentum
        blended = torch.where(self.seen[:, None], m * self.centers + (1.0 - m) * mu, mu)
        self.centers.copy_(torch.where(present[:, None], blended, self.centers))
        self.seen |= present
        return self.centers.clone()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.centers.shape[1]}, momentum={self.momentum}"
