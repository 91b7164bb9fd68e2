"""Vision-language covariance cosine loss, VLCoL (docs/method.md, Losses 4 and Fidelity modes).

TCSA-UDA (Maurya et al., arXiv 2511.05782) asks the per-class visual prototypes to have the same
inter-class relations as the projected text embeddings of the class prompts. With ``P`` and ``T``
the row-wise L2-normalised prototypes and text projections of the classes ``K`` seen so far,

``S_v = P P^T``, ``S_t = T T^T``, ``L_vl = 1 - cos(vec S_v, vec S_t)``.

Prototypes come from a memory bank updated with the current batch
(``p~_k = lambda M_k.detach() + (1 - lambda) p_k``). Fidelity ``paper`` lets the loss reach the
visual features through ``p_k``; fidelity ``released`` detaches the visual side as the authors'
code does, so only the text projection receives gradient.
"""

from __future__ import annotations

from typing import Final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.prototype import batch_centroids, downsample_labels
from tcsa_uda.train_config import Fidelity

__all__ = ["FIDELITY_MODES", "FidelityMode", "VLCovarianceLoss", "covariance_cosine_loss"]

FidelityMode = Fidelity
FIDELITY_MODES: Final[tuple[str, ...]] = ("paper", "released")


def covariance_cosine_loss(protos: Tensor, text: Tensor) -> Tensor:
    """``1 - cos(vec(P P^T), vec(T T^T))`` with row-wise L2-normalised ``P`` and ``T``.

    Invariant to a positive rescaling of any row of either input. Computed in float32.

    Args:
        protos: Visual prototypes of K classes, shape ``(K, D)``.
        text: Text projections of the same K classes in the same order, shape ``(K, D)``.

    Returns:
        Scalar loss in ``[0, 2]``; 0 when the two similarity matrices are proportional.

    Raises:
        ConfigError: The inputs are not two ``(K, D)`` tensors of the same shape with K >= 1.
    """
    if protos.dim() != 2 or protos.shape != text.shape or protos.shape[0] < 1:
        raise ConfigError(
            f"protos, text: expected two (K, D) tensors of the same shape with K >= 1, "
            f"found {tuple(protos.shape)} and {tuple(text.shape)}."
        )
    p = F.normalize(protos.float(), dim=1)  # (K, D)
    t = F.normalize(text.float(), dim=1)  # (K, D)
    s_v = (p @ p.t()).reshape(1, -1)  # (1, K*K)
    s_t = (t @ t.t()).reshape(1, -1)  # (1, K*K)
    return 1.0 - F.cosine_similarity(s_v, s_t, dim=1).squeeze(0)


class VLCovarianceLoss(nn.Module):
    """VLCoL with a memory bank of class prototypes for one domain.

    On each call, for every class ``k`` present in ``labels``: ``p_k`` is the mean of ``f_vis``
    over its pixels; ``p~_k = lambda M_k.detach() + (1 - lambda) p_k`` (``p~_k = p_k`` the first
    time the class is seen); ``p~_k.detach()`` is written to the bank. The loss is taken over the
    classes seen so far: present classes use ``p~_k`` (with gradient in ``paper`` mode), the
    others their bank row.

    Bank initialisation: the bank starts at zeros with ``seen`` all False, and a class's first
    prototype is stored as is rather than blended with the zero row. Blending with zeros would not
    change the first loss (rows are normalised) but would under-weight the first batch in every
    later EMA step; the released code's behaviour here is not known.

    Args:
        num_classes: Number of classes C.
        dim: Visual embedding dimension D (256 in the paper).
        bank_momentum: ``lambda``, weight of the bank (0.5 for MR->CT, 0.9 for CT->MR in the
            released code).
        mode: ``"paper"`` (gradient reaches ``f_vis``) or ``"released"`` (``f_vis`` detached).

    Attributes:
        bank: Buffer ``(C, D)`` of detached prototypes.
        seen: Buffer ``(C,)`` bool, classes that have been present in at least one batch.

    Raises:
        ConfigError: Invalid ``num_classes``, ``dim``, ``bank_momentum`` or ``mode``.
    """

    bank: Tensor
    seen: Tensor

    def __init__(
        self, num_classes: int, dim: int = 256, bank_momentum: float = 0.5, mode: FidelityMode = "paper"
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
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.bank_momentum = float(bank_momentum)
        self.mode: FidelityMode = mode
        self.register_buffer("bank", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, f_vis: Tensor, labels: Tensor, text: Tensor) -> Tensor:
        """Update the bank with one batch and return ``L_vl``.

        Args:
            f_vis: Visual embeddings, shape ``(B, D, h, w)``.
            labels: Class indices at image resolution, shape ``(B, H, W)`` (ground truth for the
                source, pseudo-labels for the target); nearest-downsampled to ``(h, w)`` here.
            text: Projected text embeddings of all classes, shape ``(C, D)``.

        Returns:
            Scalar loss; a zero connected to ``text`` while fewer than 2 classes have been seen.

        Raises:
            ConfigError: Shapes disagree with ``(num_classes, dim)`` or with each other.
            DatasetError: A label value lies outside ``[0, C)``.
        """
        if f_vis.dim() != 4 or f_vis.shape[1] != self.dim:
            raise ConfigError(f"f_vis: expected shape (B, {self.dim}, h, w), found {tuple(f_vis.shape)}.")
        if tuple(text.shape) != (self.num_classes, self.dim):
            raise ConfigError(f"text: expected shape ({self.num_classes}, {self.dim}), found {tuple(text.shape)}.")
        if self.mode == "released":
            f_vis = f_vis.detach()  # released code: no gradient to the image encoder
        y = downsample_labels(labels, (f_vis.shape[2], f_vis.shape[3]))  # (B, h, w)
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
            return text.sum() * 0.0 + protos.sum() * 0.0
        return covariance_cosine_loss(protos[keep], text[keep])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, bank_momentum={self.bank_momentum}, mode={self.mode!r}"
