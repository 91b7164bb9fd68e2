"""Cross-domain prototype alignment with EMA class centres (docs/method.md, Losses 3).

TCSA-UDA (Maurya et al., arXiv 2511.05782) keeps one centre per class and domain on the
high-level features ``F_hi`` and pulls the source and target centres together:

- labels: ground truth for the source, argmax pseudo-labels for the target (chosen by the
  caller), nearest-downsampled to the feature resolution;
- batch centroid ``mu_k`` = mean of the features over the pixels of class ``k``; for a class
  absent from the batch ``mu_k = c_k.detach()`` (its centre is kept);
- update ``c_k <- m c_k.detach() + (1 - m) mu_k`` with ``m = 0.01``: the returned centres carry
  gradient to the current features, the stored buffer is detached;
- ``L_proto = sum_k mean_d (c_s[k, d] - c_t[k, d])^2``.

Shapes: features ``(B, D, h, w)``; labels ``(B, h, w)`` at feature resolution (or ``(B, H, W)``
at image resolution for :class:`PrototypeAlignmentLoss`, which downsamples them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.segmentation import check_label_range
from tcsa_uda.precision import float32

__all__ = [
    "EMAPrototypes",
    "PrototypeAlignmentLoss",
    "batch_centroids",
    "downsample_labels",
    "prototype_alignment_loss",
]


def downsample_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a label map (labels are never interpolated bilinearly).

    Uses ``F.interpolate(mode="nearest")``: output pixel ``i`` takes input pixel
    ``floor(i * H / h)``.

    Args:
        labels: Integer class indices, shape ``(B, H, W)``.
        size: Output size ``(h, w)``.

    Returns:
        Labels of shape ``(B, h, w)`` with the dtype of ``labels``.

    Raises:
        ConfigError: ``labels`` is not a 3-D integer tensor or ``size`` is not two positive ints.
    """
    if labels.dim() != 3:
        raise ConfigError(f"labels: expected shape (B, H, W), found {tuple(labels.shape)}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ConfigError(f"labels: expected an integer tensor of class indices, found dtype {labels.dtype}.")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ConfigError(f"size: expected two positive integers (h, w), found {tuple(size)}.")
    if tuple(labels.shape[1:]) == (h, w):
        return labels
    # float32 represents class indices exactly; nearest mode never mixes values.
    resized = F.interpolate(labels[:, None].to(torch.float32), size=(h, w), mode="nearest")
    return resized[:, 0].to(labels.dtype)


def _check_features_labels(features: Tensor, labels: Tensor, num_classes: int, name: str) -> None:
    if features.dim() != 4:
        raise ConfigError(f"{name}: expected shape (B, D, h, w), found {tuple(features.shape)}.")
    b, _, h, w = features.shape
    if tuple(labels.shape) != (b, h, w):
        raise ConfigError(
            f"labels: expected shape {(b, h, w)} to match {name} {tuple(features.shape)}, found {tuple(labels.shape)}."
        )
    check_label_range(labels, num_classes)


@float32
def batch_centroids(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean feature of a batch, vectorised with a one-hot matrix product.

    Args:
        features: Feature maps, shape ``(B, D, h, w)``.
        labels: Class indices at feature resolution, shape ``(B, h, w)``.
        num_classes: Number of classes C.

    Returns:
        ``(centroids, present)``: float32 centroids ``(C, D)`` (zero rows for absent classes) that
        carry gradient to ``features``, and a bool mask ``(C,)`` of the classes with >= 1 pixel.

    Raises:
        ConfigError: Shapes disagree.
        DatasetError: A label value lies outside ``[0, C)``.
    """
    _check_features_labels(features, labels, num_classes, "features")
    d = features.shape[1]
    feats = features.permute(0, 2, 3, 1).reshape(-1, d).to(torch.float32)  # (N, D); fp32 sums
    onehot = F.one_hot(labels.reshape(-1), num_classes).to(torch.float32)  # (N, C)
    counts = onehot.sum(dim=0)  # (C,)
    sums = onehot.t() @ feats  # (C, D)
    return sums / counts.clamp_min(1.0)[:, None], counts > 0


def _check_momentum(momentum: float, name: str) -> None:
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"{name}: expected a value in [0, 1], found {momentum}.")


class EMAPrototypes(nn.Module):
    """Class centres of one domain, updated by an exponential moving average.

    Args:
        num_classes: Number of classes C.
        dim: Feature dimension D (2048 for ``F_hi`` of ResNet-101).
        momentum: Weight ``m`` of the previous centre (0.01 in the released code).

    Attributes:
        centers: Buffer ``(C, D)``, zeros initially; the detached centres after the last update.

    Raises:
        ConfigError: ``num_classes`` or ``dim`` < 1, or ``momentum`` outside ``[0, 1]``.
    """

    centers: Tensor

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.01) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes: expected an integer >= 1, found {num_classes}.")
        if dim < 1:
            raise ConfigError(f"dim: expected an integer >= 1, found {dim}.")
        _check_momentum(momentum, "momentum")
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def update(self, features: Tensor, labels: Tensor) -> Tensor:
        """Update the centres with one batch and return them with gradient.

        Args:
            features: Feature maps, shape ``(B, D, h, w)``.
            labels: Class indices at feature resolution, shape ``(B, h, w)``.

        Returns:
            Centres ``(C, D)``: ``m c.detach() + (1 - m) mu``; rows of present classes carry
            gradient to ``features``, rows of absent classes equal the previous centres.

        Raises:
            ConfigError: Shapes disagree or the feature dimension is not ``dim``.
            DatasetError: A label value lies outside ``[0, C)``.
        """
        if features.dim() == 4 and features.shape[1] != self.dim:
            raise ConfigError(f"features: expected {self.dim} channels, found shape {tuple(features.shape)}.")
        mu, present = batch_centroids(features, labels, self.num_classes)  # (C, D), (C,)
        old = self.centers.detach().clone()
        # Absent class: mu_k = c_k, so m c_k + (1 - m) c_k = c_k; taken as is to avoid rounding drift.
        new = torch.where(present[:, None], self.momentum * old + (1.0 - self.momentum) * mu, old)
        with torch.no_grad():
            self.centers.copy_(new.detach())
        return new

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Alias of :meth:`update`."""
        return self.update(features, labels)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, momentum={self.momentum}"


@float32
def prototype_alignment_loss(c_s: Tensor, c_t: Tensor) -> Tensor:
    """``L_proto = sum_k mean_d (c_s[k, d] - c_t[k, d])^2``.

    Args:
        c_s: Source centres, shape ``(C, D)``.
        c_t: Target centres, shape ``(C, D)``.

    Returns:
        Scalar loss.

    Raises:
        ConfigError: The shapes differ or are not 2-D.
    """
    if c_s.dim() != 2 or c_s.shape != c_t.shape:
        raise ConfigError(
            f"c_s, c_t: expected two (C, D) tensors of the same shape, found {tuple(c_s.shape)} and {tuple(c_t.shape)}."
        )
    return (c_s - c_t).pow(2).mean(dim=1).sum()


class PrototypeAlignmentLoss(nn.Module):
    """EMA centres of the source and target domains and the loss between them.

    Args:
        num_classes: Number of classes C.
        dim: Feature dimension D.
        momentum: EMA weight ``m`` of the previous centre (0.01 in the released code).

    Raises:
        ConfigError: Invalid ``num_classes``, ``dim`` or ``momentum``.
    """

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.source = EMAPrototypes(num_classes, dim, momentum)
        self.target = EMAPrototypes(num_classes, dim, momentum)

    def forward(self, f_s: Tensor, y_s: Tensor, f_t: Tensor, y_t: Tensor) -> Tensor:
        """Update both centre sets and return ``L_proto``.

        Args:
            f_s: Source features, shape ``(B, D, h, w)``.
            y_s: Source ground-truth labels at image resolution, shape ``(B, H, W)``.
            f_t: Target features, shape ``(B', D, h', w')``.
            y_t: Target pseudo-labels (argmax of the main prediction, chosen by the caller),
                shape ``(B', H', W')``.

        Returns:
            Scalar loss with gradient to ``f_s`` and ``f_t``.

        Raises:
            ConfigError: Shapes disagree.
            DatasetError: A label value lies outside ``[0, C)``.
        """
        for name, f in (("f_s", f_s), ("f_t", f_t)):
            if f.dim() != 4:
                raise ConfigError(f"{name}: expected shape (B, D, h, w), found {tuple(f.shape)}.")
        c_s = self.source.update(f_s, downsample_labels(y_s, (f_s.shape[2], f_s.shape[3])))
        c_t = self.target.update(f_t, downsample_labels(y_t, (f_t.shape[2], f_t.shape[3])))
        return prototype_alignment_loss(c_s, c_t)
