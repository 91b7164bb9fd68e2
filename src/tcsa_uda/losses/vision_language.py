"""Vision-language covariance cosine loss, VLCoL (docs/method.md, Losses 4 and Fidelity modes).

TCSA-UDA (Maurya et al., arXiv 2511.05782) asks the per-class visual prototypes to have the same
inter-class relations as the projected text embeddings of the class prompts. With ``P`` and ``T``
the row-wise L2-normalised prototypes and text projections of the classes ``K`` seen so far,

``S_v = P P^T``, ``S_t = T T^T``, ``L_vl = 1 - cos(vec S_v, vec S_t)``.

Two fidelity modes (docs/method.md, Paper vs released fidelity):

* ``paper``: one bank per domain (the method builds two), updated once per batch with the batch
  centroid ``p_k`` of each present class (``p~_k = lambda M_k.detach() + (1 - lambda) p_k``);
  the loss reaches the visual features through ``p_k``.
* ``released``: the authors' code -- ONE bank that the source and the target calls share, updated
  image by image and class by class (background included) with the detached per-image class mean
  ``sum / (count + 1e-6)`` (``M_k <- p`` the first time, then ``M_k <- lambda M_k + (1 - lambda) p``,
  so with ``B`` images per call the old bank keeps ``lambda^B``); the loss is computed on the
  (detached) bank rows of the classes seen so far, so only the text projection receives gradient.

Similarity matrices (``similarity``, docs/method.md, Letting the text term carry signal): the paper's
``cosine`` Gram ``S = X X^T`` of row-normalised ``X``; ``centred``, the same Gram after subtracting
the mean row over the K classes (a covariance between classes: every row of ``S`` sums to 0);
``correlation``, the centred Gram scaled to a unit diagonal. The text side may have another width
than the prototypes (the raw text embeddings as a fixed anchor): only the K x K matrices are compared.
"""

from __future__ import annotations

from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.prototype import batch_centroids, downsample_labels
from tcsa_uda.losses.segmentation import check_label_range
from tcsa_uda.precision import float32
from tcsa_uda.train_config import Fidelity

__all__ = [
    "FIDELITY_MODES",
    "SIMILARITY_KINDS",
    "FidelityMode",
    "SimilarityKind",
    "VLCovarianceLoss",
    "covariance_cosine_loss",
    "off_diagonal_spread",
    "similarity_matrices",
]

FidelityMode = Fidelity
FIDELITY_MODES: Final[tuple[str, ...]] = ("paper", "released")
SimilarityKind = Literal["cosine", "centred", "correlation"]
SIMILARITY_KINDS: Final[tuple[str, ...]] = ("cosine", "centred", "correlation")
#: floor of a norm before dividing by it (a centred row can be exactly zero)
_NORM_EPS: Final[float] = 1e-12
#: the released code divides a class's pixel sum by ``count + RELEASED_COUNT_EPS``
RELEASED_COUNT_EPS: Final[float] = 1e-6


@float32
def similarity_matrices(protos: Tensor, text: Tensor, kind: SimilarityKind = "cosine") -> tuple[Tensor, Tensor]:
    """The class-by-class similarity matrices ``S_v`` and ``S_t`` that VLCoL compares.

    Rows are L2-normalised first (so a row's scale never matters), then

    * ``cosine`` (the paper): ``S = X X^T``, entries in ``[-1, 1]``, unit diagonal;
    * ``centred``: ``X_c = X - mean_k X_k`` (the mean over the K classes), ``S = X_c X_c^T``: a
      covariance between classes, each row sums to 0;
    * ``correlation``: the centred ``S`` scaled to a unit diagonal, ``S_kl / sqrt(S_kk S_ll)``.

    With K = 2 classes the centred and correlation matrices are the same for any input up to scale
    (``[[1, -1], [-1, 1]]``), so those two kinds carry signal from K = 3 on. Computed in float32.

    Args:
        protos: visual prototypes of K classes, shape ``(K, D_v)``.
        text: text embeddings of the same K classes in the same order, shape ``(K, D_t)`` (``D_t``
            may differ from ``D_v``).
        kind: ``cosine``, ``centred`` or ``correlation``.

    Returns:
        ``(S_v, S_t)``, each ``(K, K)``.

    Raises:
        ConfigError: the inputs are not two 2-D tensors with the same K >= 1, or ``kind`` is unknown.
    """
    if protos.dim() != 2 or text.dim() != 2 or protos.shape[0] != text.shape[0] or protos.shape[0] < 1:
        raise ConfigError(
            f"protos, text: expected two (K, D) tensors with the same K >= 1, "
            f"found {tuple(protos.shape)} and {tuple(text.shape)}."
        )
    if kind not in SIMILARITY_KINDS:
        raise ConfigError(f"similarity: expected one of {', '.join(SIMILARITY_KINDS)}, found {kind!r}.")
    return _similarity(protos, kind), _similarity(text, kind)


def _similarity(x: Tensor, kind: SimilarityKind) -> Tensor:
    """``(K, D) -> (K, K)`` similarity of :func:`similarity_matrices`."""
    u = F.normalize(x.float(), dim=1, eps=_NORM_EPS)  # (K, D)
    if kind == "cosine":
        return u @ u.t()
    c = u - u.mean(dim=0, keepdim=True)  # (K, D), centred over the classes
    s = c @ c.t()  # (K, K)
    if kind == "centred":
        return s
    d = s.diagonal().clamp_min(_NORM_EPS).sqrt()  # (K,)
    return s / (d[:, None] * d[None, :])


@float32
def covariance_cosine_loss(protos: Tensor, text: Tensor, kind: SimilarityKind = "cosine") -> Tensor:
    """``1 - cos(vec S_v, vec S_t)`` with the matrices of :func:`similarity_matrices`.

    Invariant to a positive rescaling of any row of either input. Computed in float32.

    Args:
        protos: Visual prototypes of K classes, shape ``(K, D)``.
        text: Text projections of the same K classes in the same order, shape ``(K, D_t)``.
        kind: ``cosine`` (the paper's ``P P^T``), ``centred`` or ``correlation``.

    Returns:
        Scalar loss in ``[0, 2]``; 0 when the two similarity matrices are proportional.

    Raises:
        ConfigError: The inputs are not two ``(K, D)`` tensors with the same K >= 1.
    """
    s_v, s_t = similarity_matrices(protos, text, kind)
    return _matrix_cosine_loss(s_v, s_t)


def _matrix_cosine_loss(s_v: Tensor, s_t: Tensor) -> Tensor:
    """``1 - cos(vec S_v, vec S_t)`` of two ``(K, K)`` matrices."""
    return 1.0 - F.cosine_similarity(s_v.reshape(1, -1), s_t.reshape(1, -1), dim=1).squeeze(0)


def off_diagonal_spread(sim: Tensor) -> dict[str, float]:
    """Standard deviation (population), minimum and maximum of the off-diagonal entries of ``sim``.

    The spread of ``S_v`` and ``S_t`` says whether the VL loss can tell classes apart: cosine
    matrices of non-negative features have every entry in [0, 1] and little spread.

    Args:
        sim: a ``(K, K)`` similarity matrix with ``K >= 2``.

    Returns:
        ``{"std": ..., "min": ..., "max": ...}``.

    Raises:
        ConfigError: ``sim`` is not square with K >= 2.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ConfigError(f"sim: expected a (K, K) matrix with K >= 2, found {tuple(sim.shape)}.")
    k = sim.shape[0]
    off = sim.detach().float()[~torch.eye(k, dtype=torch.bool, device=sim.device)]  # (K*(K-1),)
    return {"std": float(off.std(unbiased=False)), "min": float(off.min()), "max": float(off.max())}


class VLCovarianceLoss(nn.Module):
    """VLCoL with a memory bank of class prototypes.

    ``paper`` mode (one instance per domain): on each call, for every class ``k`` present in
    ``labels``: ``p_k`` is the mean of ``f_vis`` over its pixels of the whole batch;
    ``p~_k = lambda M_k.detach() + (1 - lambda) p_k`` (``p~_k = p_k`` the first time the class is
    seen); ``p~_k.detach()`` is written to the bank. The loss is taken over the classes seen so far:
    present classes use ``p~_k`` (with gradient), the others their bank row.

    ``released`` mode (one instance shared by the source and the target calls): the bank is updated
    image by image, each image's present classes in turn, with the detached image mean
    ``p = sum / (count + 1e-6)`` (``M_k <- p`` when ``k`` was never seen, else
    ``M_k <- lambda M_k + (1 - lambda) p``); the loss compares the bank rows of the seen classes with
    the text, so no gradient reaches ``f_vis``.

    Bank initialisation: the bank starts at zeros with ``seen`` all False, and a class's first
    prototype is stored as is rather than blended with the zero row. Blending with zeros would not
    change the first loss (rows are normalised) but would under-weight the first batch in every
    later EMA step; the released code's behaviour here is not known.

    Args:
        num_classes: Number of classes C.
        dim: Visual embedding dimension D (256 in the paper).
        bank_momentum: ``lambda``, weight of the bank (0.5 for MR->CT, 0.9 for CT->MR in the
            released code).
        mode: ``"paper"`` (batch update, gradient reaches ``f_vis``) or ``"released"`` (image-by-image
            update of a bank shared by both domains, ``f_vis`` detached).
        similarity: the matrices compared (:func:`similarity_matrices`): ``cosine`` (the paper),
            ``centred`` or ``correlation``.

    Attributes:
        bank: Buffer ``(C, D)`` of detached prototypes.
        seen: Buffer ``(C,)`` bool, classes that have been present in at least one batch.
        last_similarities: ``(S_v, S_t)`` of the last call, detached (None before the first call
            with 2 classes seen), for diagnostics; not saved in checkpoints.

    Raises:
        ConfigError: Invalid ``num_classes``, ``dim``, ``bank_momentum``, ``mode`` or ``similarity``.
    """

    bank: Tensor
    seen: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int = 256,
        bank_momentum: float = 0.5,
        mode: FidelityMode = "paper",
        similarity: SimilarityKind = "cosine",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes: expected an integer >= 1, found {num_classes}.")
        if dim < 1:
            raise ConfigError(f"dim: expected an integer >= 1, found {dim}.")
        if not 0.0 <= bank_momentum <= 1.0:
            raise ConfigError(f"bank_momentum: expected a value in [0, 1], found {bank_momentum}.")
        if mode not in FIDELITY_MODES:
            raise ConfigError(f"mode: expected one of {', '.join(FIDELITY_MODES)}, found {mode!r}.")
        if similarity not in SIMILARITY_KINDS:
            raise ConfigError(f"similarity: expected one of {', '.join(SIMILARITY_KINDS)}, found {similarity!r}.")
        self.similarity: SimilarityKind = similarity
        self.last_similarities: tuple[Tensor, Tensor] | None = None
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.bank_momentum = float(bank_momentum)
        self.mode: FidelityMode = mode
        self.register_buffer("bank", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @float32  # the released mode's per-image class means are a batched matrix product
    def forward(self, f_vis: Tensor, labels: Tensor, text: Tensor) -> Tensor:
        """Update the bank with one batch and return ``L_vl`` (in float32 under any autocast).

        Args:
            f_vis: Visual embeddings, shape ``(B, D, h, w)``.
            labels: Class indices at image resolution, shape ``(B, H, W)`` (ground truth for the
                source, pseudo-labels for the target); nearest-downsampled to ``(h, w)`` here.
            text: Text embeddings of all classes, shape ``(C, D_t)``: the projected text (``D_t = D``),
                or any fixed class embedding (the raw text encoder output).

        Returns:
            Scalar loss; a zero connected to ``text`` while fewer than 2 classes have been seen (the
            released code returns a fresh zero there; the gradient is zero in both).

        Raises:
            ConfigError: Shapes disagree with ``(num_classes, dim)`` or with each other.
            DatasetError: A label value lies outside ``[0, C)``.
        """
        if f_vis.dim() != 4 or f_vis.shape[1] != self.dim:
            raise ConfigError(f"f_vis: expected shape (B, {self.dim}, h, w), found {tuple(f_vis.shape)}.")
        if text.dim() != 2 or text.shape[0] != self.num_classes:
            raise ConfigError(f"text: expected shape ({self.num_classes}, D_t), found {tuple(text.shape)}.")
        y = downsample_labels(labels, (f_vis.shape[2], f_vis.shape[3]))  # (B, h, w)
        if self.mode == "released":
            return self._forward_released(f_vis, y, text)
        p, present = batch_centroids(f_vis, y, self.num_classes)  # (C, D), (C,)
        lam = self.bank_momentum
        bank = self.bank.detach().clone()
        blended = torch.where((present & self.seen)[:, None], lam * bank + (1.0 - lam) * p, p)
        protos = torch.where(present[:, None], blended, bank)  # (C, D)
        with torch.no_grad():
            self.bank.copy_(protos.detach())  # absent rows are unchanged
            self.seen |= present
        keep = self.seen.nonzero().squeeze(1)  # (|K|,)
        if keep.numel() < 2:
            self.last_similarities = None
            return text.sum() * 0.0 + protos.sum() * 0.0
        return self._loss(protos[keep], text[keep])

    def _loss(self, protos: Tensor, text: Tensor) -> Tensor:
        """The loss of the kept classes; remembers the two matrices for diagnostics."""
        s_v, s_t = similarity_matrices(protos, text, self.similarity)
        self.last_similarities = (s_v.detach(), s_t.detach())
        return _matrix_cosine_loss(s_v, s_t)

    def _forward_released(self, f_vis: Tensor, y: Tensor, text: Tensor) -> Tensor:
        """The released code's update (image by image) and loss (bank rows vs text); ``y`` is ``(B, h, w)``."""
        b, d = f_vis.shape[:2]
        if y.shape[0] != b:
            raise ConfigError(
                f"labels: expected {b} label maps to match f_vis {tuple(f_vis.shape)}, found {y.shape[0]}."
            )
        check_label_range(y, self.num_classes)
        feats = f_vis.detach().permute(0, 2, 3, 1).reshape(b, -1, d).to(torch.float32)  # (B, h*w, D)
        onehot = F.one_hot(y.reshape(b, -1).long(), self.num_classes).to(torch.float32)  # (B, h*w, C)
        counts = onehot.sum(dim=1)  # (B, C)
        means = (onehot.transpose(1, 2) @ feats) / (counts[..., None] + RELEASED_COUNT_EPS)  # (B, C, D)
        lam = self.bank_momentum
        with torch.no_grad():
            for i in range(b):  # sequential: each image blends into what the previous one wrote
                present = counts[i] >= 1  # (C,)
                blended = torch.where(self.seen[:, None], lam * self.bank + (1.0 - lam) * means[i], means[i])
                self.bank.copy_(torch.where(present[:, None], blended, self.bank))
                self.seen |= present
        keep = self.seen.nonzero().squeeze(1)  # (|K|,)
        if keep.numel() < 2:
            self.last_similarities = None
            return text.sum() * 0.0
        return self._loss(self.bank[keep].clone(), text[keep])

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, bank_momentum={self.bank_momentum}, mode={self.mode!r}, "
            f"similarity={self.similarity!r}"
        )
