"""t-SNE of pixel features from the source and target domains (feature alignment at a glance).

Adaptation should bring the two domains' features of one class together while keeping classes
apart. :func:`pixel_features` samples a bounded number of pixels per class from the feature
map of a set of slices, with the ground truth nearest-downsampled to the feature grid (the same
:func:`~tcsa_uda.losses.prototype.downsample_labels` the prototype loss uses), and
:func:`tsne_embedding` embeds the samples of both domains together in 2D.

Feature choice: ``f_hi`` (default), the backbone's layer4 output on which TCSA-UDA aligns the
class prototypes of the two domains (arXiv 2511.05782, docs/method.md loss 3), so its t-SNE shows
directly what that alignment acts on; ``f_vis`` (the visual embedding the vision-language loss
uses) is available.

Embedding: features are reduced to at most 50 dimensions with PCA (a standard step that makes
t-SNE faster and less noisy), then ``sklearn.manifold.TSNE(init="pca", learning_rate="auto")``
with a fixed ``random_state`` and a perplexity adapted to the number of samples
(:func:`adapted_perplexity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import InputEncoding, check_input_encoding, encode_slices
from tcsa_uda.errors import ConfigError
from tcsa_uda.losses.prototype import downsample_labels

__all__ = [
    "FEATURES",
    "PixelFeatures",
    "TsneEmbedding",
    "adapted_perplexity",
    "pixel_features",
    "tsne_embedding",
]

FEATURES: tuple[str, ...] = ("f_hi", "f_vis")
"""Feature maps of :class:`~tcsa_uda.models.segmenter.SegmenterOutput` that can be embedded."""

PCA_DIMS = 50
MAX_PERPLEXITY = 30.0


@dataclass(frozen=True)
class PixelFeatures:
    """Sampled pixel features with their class and domain.

    Attributes:
        features: ``(N, D)`` float32 feature vectors.
        classes: ``(N,)`` int64 ground-truth class of each pixel.
        domains: ``(N,)`` int64 index into ``domain_names``.
        domain_names: the domains, e.g. ``("MR", "CT")``.
    """

    features: np.ndarray
    classes: np.ndarray
    domains: np.ndarray
    domain_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.features.shape[0]
        if self.features.ndim != 2 or self.classes.shape != (n,) or self.domains.shape != (n,):
            raise ConfigError(
                f"PixelFeatures: expected features (N, D), classes (N,), domains (N,), found "
                f"{self.features.shape}, {self.classes.shape}, {self.domains.shape}."
            )
        if n and (self.domains.min() < 0 or self.domains.max() >= len(self.domain_names)):
            raise ConfigError(
                f"PixelFeatures: domain indices must be in 0..{len(self.domain_names) - 1} ({self.domain_names}), "
                f"found {sorted(set(self.domains.tolist()))}."
            )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @staticmethod
    def concat(parts: Sequence[PixelFeatures]) -> PixelFeatures:
        """Join samples of several domains; every part must name the same domains.

        Raises:
            ConfigError: no part, or parts with different domain lists or feature widths.
        """
        if not parts:
            raise ConfigError("PixelFeatures.concat: expected at least one part, found none.")
        names = parts[0].domain_names
        widths = {p.features.shape[1] for p in parts}
        if any(p.domain_names != names for p in parts) or len(widths) != 1:
            raise ConfigError(
                f"PixelFeatures.concat: parts differ in domains {[p.domain_names for p in parts]} or feature "
                f"width {sorted(widths)}."
            )
        return PixelFeatures(
            features=np.concatenate([p.features for p in parts]),
            classes=np.concatenate([p.classes for p in parts]),
            domains=np.concatenate([p.domains for p in parts]),
            domain_names=names,
        )

    def counts(self) -> dict[tuple[str, int], int]:
        """``(domain, class) -> number of samples``."""
        out: dict[tuple[str, int], int] = {}
        for d, c in zip(self.domains.tolist(), self.classes.tolist(), strict=True):
            key = (self.domain_names[d], int(c))
            out[key] = out.get(key, 0) + 1
        return out


@torch.no_grad()
def pixel_features(
    model: nn.Module,
    slices: np.ndarray,
    labels: np.ndarray,
    text: Tensor,
    domain: int,
    domain_names: Sequence[str],
    per_class: int = 100,
    feature: str = "f_hi",
    seed: int = 0,
    batch_size: int = 8,
    *,
    encoding: InputEncoding,
) -> PixelFeatures:
    """Sample up to ``per_class`` pixel features of every class present in ``labels``.

    Args:
        model: a segmenter in eval mode returning ``SegmenterOutput``.
        slices: ``(S, H, W)`` normalised grey slices of one domain.
        labels: ``(S, H, W)`` integer ground truth of the slices.
        text: ``(C, D_text)`` text embeddings of the slices' modality (on the model's device).
        domain: index of the slices' domain in ``domain_names``.
        domain_names: every domain of the figure.
        per_class: most pixels kept per class (uniformly without replacement; all when fewer).
        feature: ``f_hi`` or ``f_vis`` (:data:`FEATURES`).
        seed: seed of the pixel sampling (the same seed picks the same pixels for two models
            of the same architecture, so "before" and "after" embed the same pixels).
        batch_size: slices per forward pass.
        encoding: the model's input encoding (``LoadedModel.input_encoding``).

    Returns:
        :class:`PixelFeatures` with classes in increasing order.

    Raises:
        ConfigError: unknown ``feature`` or ``encoding``, mismatched shapes, or a non-positive ``per_class``.
    """
    check_input_encoding(encoding)
    if feature not in FEATURES:
        raise ConfigError(f"t-SNE feature: expected one of {', '.join(FEATURES)}, found {feature!r}.")
    if slices.ndim != 3 or labels.shape != slices.shape:
        raise ConfigError(
            f"pixel_features: expected slices and labels of one shape (S, H, W), found {slices.shape} and "
            f"{labels.shape}."
        )
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"t-SNE per_class: expected a positive integer, found {per_class!r}.")
    if not 0 <= domain < len(domain_names):
        raise ConfigError(f"pixel_features domain: expected an index in 0..{len(domain_names) - 1}, found {domain}.")
    feats, labs = [], []
    for start in range(0, slices.shape[0], batch_size):
        x = encode_slices(np.asarray(slices[start : start + batch_size]), encoding).to(text.device)  # (b, 3, H, W)
        f = getattr(model(x, text), feature)  # (b, D, h, w)
        y = torch.from_numpy(np.array(labels[start : start + batch_size], dtype=np.int64))  # (b, H, W)
        y = downsample_labels(y, tuple(f.shape[-2:]))  # (b, h, w)
        feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).float().cpu())  # (b*h*w, D)
        labs.append(y.reshape(-1))
    all_f = torch.cat(feats).numpy()
    all_y = torch.cat(labs).numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(all_y):
        idx = np.flatnonzero(all_y == c)
        keep.append(idx if idx.size <= per_class else np.sort(rng.choice(idx, size=per_class, replace=False)))
    sel = np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
    return PixelFeatures(
        features=np.ascontiguousarray(all_f[sel], dtype=np.float32),
        classes=all_y[sel].astype(np.int64),
        domains=np.full(sel.size, domain, dtype=np.int64),
        domain_names=tuple(domain_names),
    )


def adapted_perplexity(n_samples: int) -> float:
    """t-SNE perplexity for ``n_samples`` points: ``(n - 1) / 3`` clipped to [1, 30].

    30 is the usual value for a few hundred points or more; fewer points need a smaller value
    (sklearn requires ``perplexity < n_samples``; with ``(n - 1) / 3`` each point still has
    about three times as many neighbours as the effective neighbourhood size).
    """
    return float(min(MAX_PERPLEXITY, max(1.0, (n_samples - 1) / 3.0)))


@dataclass(frozen=True)
class TsneEmbedding:
    """A 2D t-SNE embedding of pixel features.

    Attributes:
        points: ``(N, 2)`` float32 coordinates.
        classes: ``(N,)`` class of each point.
        domains: ``(N,)`` domain index of each point.
        domain_names: the domains.
        perplexity: the perplexity used.
        feature: the embedded feature map (``f_hi`` or ``f_vis``).
    """

    points: np.ndarray
    classes: np.ndarray
    domains: np.ndarray
    domain_names: tuple[str, ...]
    perplexity: float
    feature: str = "f_hi"


def tsne_embedding(
    samples: PixelFeatures, random_state: int = 0, perplexity: float | None = None, feature: str = "f_hi"
) -> TsneEmbedding:
    """Embed pixel features of all domains together in 2D.

    Args:
        samples: features with class and domain labels (:func:`pixel_features`, concatenated).
        random_state: seed of t-SNE (fixed, so the figure is reproducible).
        perplexity: default :func:`adapted_perplexity` of the sample count.
        feature: the name of the embedded features, carried into the result.

    Raises:
        ConfigError: fewer than 3 samples, or a perplexity not in ``(0, N)``.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = len(samples)
    if n < 3:
        raise ConfigError(f"t-SNE: expected at least 3 pixel samples, found {n}.")
    perp = adapted_perplexity(n) if perplexity is None else float(perplexity)
    if not 0 < perp < n:
        raise ConfigError(f"t-SNE perplexity: expected a value in (0, {n}) for {n} samples, found {perp}.")
    x = samples.features.astype(np.float64)
    dims = min(PCA_DIMS, n, x.shape[1])
    if x.shape[1] > dims:
        x = PCA(n_components=dims, svd_solver="full", random_state=random_state).fit_transform(x)
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=random_state)
    points = tsne.fit_transform(x).astype(np.float32)
    return TsneEmbedding(
        points=points,
        classes=samples.classes.copy(),
        domains=samples.domains.copy(),
        domain_names=samples.domain_names,
        perplexity=perp,
        feature=feature,
    )
