"""Tests of tcsa_uda.evaluation.tsne: pixel sampling carries classes and domains, t-SNE embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.tsne import PixelFeatures, adapted_perplexity, pixel_features, tsne_embedding
from tcsa_uda.models import SegmenterOutput


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StrideTwoModel(nn.Module):
    """F_hi = the image at stride 2 (channel 0) and a constant 7 (channel 1); f_vis = -F_hi."""

    def forward(self, x: Tensor, text: Tensor) -> SegmenterOutput:
        img = x[:, :1, ::2, ::2]  # (B, 1, H/2, W/2): same pixels as nearest downsampling
        f_hi = torch.cat([img, torch.full_like(img, 7.0)], dim=1)
        return SegmenterOutput(main=f_hi, aux=f_hi, f_hi=f_hi, f_vis=-f_hi, text=text[None])


def _stack(n: int = 2, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Slices whose value equals the class id, so a sampled feature tells its pixel's class."""
    labels = np.zeros((n, size, size), dtype=np.int64)
    labels[:, 0:4, 0:4] = 1
    labels[:, 4:8, 4:6] = 2
    return labels.astype(np.float32), labels


@pytest.mark.parametrize("n, expected", [(3, 1.0), (4, 1.0), (10, 3.0), (31, 10.0), (91, 30.0), (5000, 30.0)])
def test_adapted_perplexity(n, expected):
    assert adapted_perplexity(n) == pytest.approx(expected)
    assert adapted_perplexity(n) < n


def test_pixel_features_carry_class_and_domain_and_bound_counts():
    images, labels = _stack()
    # feature grid 4x4 per slice: class 1 -> 2x2 = 4 px, class 2 -> 2x1 = 2 px, background 10 px
    text = torch.zeros(3, 4)
    got = pixel_features(
        StrideTwoModel(), images, labels, text, domain=1, domain_names=["MR", "CT"], per_class=3, encoding="grey"
    )
    assert got.domain_names == ("MR", "CT")
    assert got.domains.tolist() == [1] * len(got)
    assert got.counts() == {("CT", 0): 3, ("CT", 1): 3, ("CT", 2): 3}
    np.testing.assert_array_equal(got.features[:, 0], got.classes.astype(np.float32))  # labels aligned with pixels
    assert np.all(got.features[:, 1] == 7.0)
    unbounded = pixel_features(StrideTwoModel(), images, labels, text, 0, ["MR", "CT"], per_class=100, encoding="grey")
    assert unbounded.counts() == {("MR", 0): 20, ("MR", 1): 8, ("MR", 2): 4}
    vis = pixel_features(
        StrideTwoModel(), images, labels, text, 0, ["MR", "CT"], per_class=100, feature="f_vis", encoding="grey"
    )
    np.testing.assert_array_equal(vis.features, -unbounded.features)


def test_same_seed_same_pixels():
    images, labels = _stack(n=3, size=16)
    images = images + np.random.default_rng(1).normal(size=images.shape).astype(np.float32) * 0.01
    args = (StrideTwoModel(), images, labels, torch.zeros(3, 4), 0, ["MR"])
    a = pixel_features(*args, per_class=5, seed=0, encoding="grey")
    b = pixel_features(*args, per_class=5, seed=0, encoding="grey")
    c = pixel_features(*args, per_class=5, seed=1, encoding="grey")
    np.testing.assert_array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)


def _clusters(seed: int = 0) -> PixelFeatures:
    rng = np.random.default_rng(seed)
    feats, classes, domains = [], [], []
    for c in range(3):
        for d in range(2):
            centre = np.zeros(64)
            centre[c] = 20.0
            feats.append(centre + rng.normal(size=(15, 64)))
            classes += [c] * 15
            domains += [d] * 15
    return PixelFeatures(np.concatenate(feats).astype(np.float32), np.array(classes), np.array(domains), ("MR", "CT"))


@pytest.mark.slow
def test_tsne_embedding_keeps_labels_separates_classes_and_is_reproducible():
    samples = _clusters()
    emb = tsne_embedding(samples, random_state=0, feature="f_vis")
    assert emb.points.shape == (90, 2) and emb.feature == "f_vis"
    np.testing.assert_array_equal(emb.classes, samples.classes)
    np.testing.assert_array_equal(emb.domains, samples.domains)
    assert emb.domain_names == ("MR", "CT") and emb.perplexity == pytest.approx(adapted_perplexity(90))
    dist = np.linalg.norm(emb.points[:, None] - emb.points[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(axis=1)
    assert np.mean(emb.classes[nearest] == emb.classes) > 0.95  # classes far apart in feature space stay apart
    again = tsne_embedding(samples, random_state=0)
    np.testing.assert_allclose(again.points, emb.points, atol=1e-4)


def test_concat_and_errors():
    a = _clusters()
    both = PixelFeatures.concat([a, a])
    assert len(both) == 180 and both.counts()[("CT", 2)] == 30
    other = PixelFeatures(a.features, a.classes, a.domains, ("CT", "MR"))
    with pytest.raises(ConfigError, match="differ in domains"):
        PixelFeatures.concat([a, other])
    with pytest.raises(ConfigError, match="domain indices"):
        PixelFeatures(a.features, a.classes, a.domains + 1, ("MR", "CT"))
    with pytest.raises(ConfigError, match="at least 3"):
        tsne_embedding(PixelFeatures(a.features[:2], a.classes[:2], a.domains[:2], ("MR", "CT")))
    images, labels = _stack()
    with pytest.raises(ConfigError, match="f_hi, f_vis"):
        pixel_features(StrideTwoModel(), images, labels, torch.zeros(3, 4), 0, ["MR"], feature="aux", encoding="grey")
    with pytest.raises(ConfigError, match="one shape"):
        pixel_features(StrideTwoModel(), images, labels[:, :4], torch.zeros(3, 4), 0, ["MR"], encoding="grey")
