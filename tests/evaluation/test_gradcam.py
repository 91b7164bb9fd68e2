"""Tests of tcsa_uda.evaluation.gradcam: a hand-built model with a known answer, a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.gradcam import grad_cam
from tcsa_uda.models import SegmenterOutput, build_segmenter

H = W = 8


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class HalvesModel(nn.Module):
    """F_hi channel 0 = the image on the left half, channel 1 = the image on the right half.

    Main logits: background 0.5 everywhere, class 1 = channel 0, class 2 = channel 1. So a bright
    square on the left is predicted as class 1, on the right as class 2, and the Grad-CAM of a
    class is exactly its bright square (normalised to 1).
    """

    left: Tensor  # registered buffer (H, W)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        left = torch.zeros(H, W)
        left[:, : W // 2] = 1.0
        self.register_buffer("left", left)

    def forward(self, x: Tensor, text: Tensor) -> SegmenterOutput:
        img = x[:, 0]  # (B, H, W)
        f_hi = self.scale * torch.stack([img * self.left, img * (1 - self.left)], dim=1)  # (B, 2, H, W)
        bg = torch.full_like(f_hi[:, :1], 0.5)
        main = torch.cat([bg, f_hi], dim=1)  # (B, 3, H, W)
        return SegmenterOutput(main=main, aux=main, f_hi=f_hi, f_vis=f_hi, text=text[None])


def _squares(left: bool = True, right: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img = np.zeros((H, W), dtype=np.float32)
    lmask = np.zeros((H, W), dtype=bool)
    rmask = np.zeros((H, W), dtype=bool)
    lmask[2:6, 1:3] = left
    rmask[3:7, 5:8] = right
    img[lmask | rmask] = 1.0
    return img, lmask, rmask


def test_known_answer_each_class_lights_its_own_square():
    img, lmask, rmask = _squares()
    res = grad_cam(HalvesModel().eval(), img[None], torch.zeros(3, 4), classes=[1, 2])
    assert res.maps.shape == (1, 2, H, W) and res.classes == (1, 2)
    np.testing.assert_allclose(res.maps[0, 0], lmask.astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(res.maps[0, 1], rmask.astype(np.float32), atol=1e-6)
    assert not res.whole_image.any()
    expected_pred = np.where(lmask, 1, np.where(rmask, 2, 0))
    np.testing.assert_array_equal(res.prediction[0], expected_pred)


def test_class_not_predicted_uses_whole_image_and_stays_zero():
    img, lmask, _ = _squares(right=False)
    res = grad_cam(HalvesModel().eval(), img[None], torch.zeros(3, 4), classes=[1, 2])
    np.testing.assert_allclose(res.maps[0, 0], lmask.astype(np.float32), atol=1e-6)
    assert res.whole_image.tolist() == [[False, True]]
    assert np.all(res.maps[0, 1] == 0.0)  # nothing bright on the right: zero evidence, not NaN


def test_batches_are_independent_and_chunking_does_not_change_maps():
    a, _, _ = _squares()
    b, _, _ = _squares(left=False)
    stack = np.stack([a, b])
    model = HalvesModel().eval()
    whole = grad_cam(model, stack, torch.zeros(3, 4), classes=[1, 2], batch_size=2)
    single = grad_cam(model, stack, torch.zeros(3, 4), classes=[1, 2], batch_size=1)
    np.testing.assert_allclose(whole.maps, single.maps, atol=1e-6)
    assert whole.whole_image.tolist() == [[False, False], [True, False]]


def test_real_model_maps_in_unit_range_image_shaped_and_class_specific():
    torch.manual_seed(0)
    model = build_segmenter("light", 3, 8, base_width=8).eval()
    text = torch.randn(3, 8)
    slices = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32)).astype(np.float32)
    res = grad_cam(model, slices, text, classes=[1, 2])
    assert res.maps.shape == (2, 2, 32, 32) and res.maps.dtype == np.float32
    assert res.maps.min() >= 0.0 and res.maps.max() <= 1.0
    for s in range(2):
        for k in range(2):
            peak = res.maps[s, k].max()
            assert peak == 0.0 or abs(peak - 1.0) < 1e-6  # normalised by the maximum
    assert not np.allclose(res.maps[:, 0], res.maps[:, 1])
    assert res.prediction.shape == (2, 32, 32)
    assert all(p.grad is None for p in model.parameters())  # no gradient left on the weights


@pytest.mark.parametrize(
    "slices, classes, match",
    [
        (np.zeros((H, W), np.float32), [1], "S, H, W"),
        (np.zeros((1, H, W), np.float32), [3], "ids in 0..2"),
        (np.zeros((1, H, W), np.float32), [], "ids in 0..2"),
    ],
)
def test_bad_inputs(slices, classes, match):
    with pytest.raises(ConfigError, match=match):
        grad_cam(HalvesModel().eval(), slices, torch.zeros(3, 4), classes=classes)
