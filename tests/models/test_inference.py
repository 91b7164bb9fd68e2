"""Slice inference (tcsa_uda.models.inference): flip test-time augmentation in one forward pass, autocast."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tcsa_uda.data.encoding import encode_slices
from tcsa_uda.models import build_segmenter, upsample_logits
from tcsa_uda.models.inference import predict_slices
from tcsa_uda.precision import autocast


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_segmenter("light", 4, 16, base_width=8).eval()


def _slices(n: int = 5, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, size, size)).astype(np.float32)


def _two_pass_flip(model: nn.Module, slices: np.ndarray, text: Tensor, batch_size: int) -> np.ndarray:
    """The former implementation: one forward pass for the slices, a second for their mirror images."""
    out = []
    size = slices.shape[-2:]
    with torch.no_grad():
        for start in range(0, slices.shape[0], batch_size):
            x = encode_slices(slices[start : start + batch_size], "grey")
            prob = torch.softmax(upsample_logits(model(x, text).main, size), dim=1)
            xf = torch.flip(x, dims=[-1])
            pf = torch.softmax(upsample_logits(model(xf, text).main, size), dim=1)
            out.append((0.5 * (prob + torch.flip(pf, dims=[-1]))).numpy())
    return np.concatenate(out)


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.batches: list[int] = []

    def forward(self, x: Tensor, text: Tensor) -> object:
        self.batches.append(x.shape[0])
        return self.inner(x, text)


def test_flip_in_one_batch_equals_the_two_pass_flip() -> None:
    model, slices = _model(), _slices()
    text = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    counting = CountingModel(model)
    one_batch = predict_slices(counting, slices, text, batch_size=2, flip=True, encoding="grey")
    assert counting.batches == [4, 4, 2]  # slices and mirror images together; the last slice is not dropped
    np.testing.assert_allclose(one_batch, _two_pass_flip(model, slices, text, 2), rtol=0, atol=1e-5)
    plain = predict_slices(model, slices, text, batch_size=2, encoding="grey")
    assert np.abs(one_batch - plain).max() > 1e-3  # the augmentation changed the probabilities


def test_probabilities_are_float32_under_bf16_autocast_and_close_to_fp32() -> None:
    model, slices = _model(), _slices(3)
    text = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    reference = predict_slices(model, slices, text, batch_size=3, flip=True, encoding="grey")
    with autocast("bf16", torch.device("cpu")):
        low = predict_slices(model, slices, text, batch_size=3, flip=True, encoding="grey")
    assert low.dtype == np.float32
    np.testing.assert_allclose(low.sum(axis=1), 1.0, atol=1e-5)  # normalised in float32
    assert 0 < np.abs(low - reference).max() < 5e-2
