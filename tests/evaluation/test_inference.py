"""Tests of tcsa_uda.evaluation.inference: every slice predicted, batched, mapped back exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from tcsa_uda.data.geometry import image_to_slices, make_geometry, slices_to_volume
from tcsa_uda.data.normalize import NormalizationSpec, normalize_volume
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.errors import ConfigError, DatasetError
from tcsa_uda.evaluation.inference import (
    PreprocessingSettings,
    original_label_volume,
    predict_case,
    predict_stack,
    predict_volume,
)
from tcsa_uda.models.inference import predict_slices


class ThresholdStub(nn.Module):
    """Two-class 'segmenter': class 1 where the (normalised) pixel is > 0; records batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> SimpleNamespace:
        self.batches.append(int(x.shape[0]))
        grey = x[:, :1]  # (B, 1, H, W)
        return SimpleNamespace(main=torch.cat([torch.zeros_like(grey), grey], dim=1))


class RampStub(nn.Module):
    """Logits that grow from left to right: not symmetric under a horizontal flip."""

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> SimpleNamespace:
        b, _, h, w = x.shape
        ramp = torch.linspace(-2.0, 2.0, w).expand(b, 1, h, w)
        return SimpleNamespace(main=torch.cat([torch.zeros_like(ramp), ramp], dim=1))


def _volume(shape=(6, 5, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 50 + 100


TEXT = torch.zeros(2, 4)


@pytest.mark.parametrize("axis", ["0", "1", "2"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_every_slice_is_predicted_and_mapped_back_exactly(axis, batch_size):
    vol = _volume()
    in_plane = [n for i, n in enumerate(vol.shape) if i != int(axis)]
    settings = PreprocessingSettings(axis=axis, size=max(in_plane), clip_percentiles=(0.5, 99.5))
    stub = ThresholdStub()
    pred = predict_volume(stub, vol, np.eye(4), TEXT, settings, batch_size=batch_size, keep_probabilities=True)
    normalised, _ = normalize_volume(vol, (0.5, 99.5))
    np.testing.assert_array_equal(pred.labels, (normalised > 0).astype(np.uint8))
    assert pred.labels.dtype == np.uint8 and pred.labels.shape == vol.shape
    n = vol.shape[int(axis)]
    assert sum(stub.batches) == n  # no slice dropped, none predicted twice
    assert max(stub.batches) <= batch_size
    assert pred.probabilities is not None and pred.probabilities.shape == (2, *vol.shape)
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-6)


def test_named_axis_follows_the_oblique_affine():
    # A rotated, anisotropic affine whose third array axis is still the S/I axis.
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 3.0])
    vol = _volume((6, 6, 5), seed=1)
    settings = PreprocessingSettings(axis="axial", size=6, clip_percentiles=(0.5, 99.5))
    stub = ThresholdStub()
    pred = predict_volume(stub, vol, affine, TEXT, settings, batch_size=2)
    assert pred.geometry.axis == 2
    assert sum(stub.batches) == 5
    normalised, _ = normalize_volume(vol, (0.5, 99.5))
    np.testing.assert_array_equal(pred.labels, normalised > 0)


def test_resized_stack_matches_whole_volume_mapping():
    """Batch-wise mapping back equals mapping the full probability stack at once."""
    vol = _volume((9, 7, 5), seed=2)
    settings = PreprocessingSettings(axis="2", size=4, clip_percentiles=(0.5, 99.5))
    stub = ThresholdStub()
    pred = predict_volume(stub, vol, np.eye(4), TEXT, settings, batch_size=2, keep_probabilities=True)
    normalised, _ = normalize_volume(vol, (0.5, 99.5))
    geometry = make_geometry(vol.shape, 2, 4)
    probs = predict_slices(stub, image_to_slices(normalised, geometry), TEXT, batch_size=100)
    full = slices_to_volume(probs, geometry)  # (C, X, Y, Z)
    np.testing.assert_allclose(pred.probabilities, full, atol=1e-6)
    np.testing.assert_array_equal(pred.labels, np.argmax(full, axis=0))


def test_flip_averages_with_the_mirrored_prediction():
    slices = np.zeros((3, 8, 8), dtype=np.float32)
    plain = predict_slices(RampStub(), slices, TEXT, batch_size=2)
    flipped = predict_slices(RampStub(), slices, TEXT, batch_size=2, flip=True)
    assert plain[0, 1, 0, -1] > 0.85 and plain[0, 1, 0, 0] < 0.15  # the ramp is visible without TTA
    np.testing.assert_allclose(flipped[:, 1], 0.5, atol=1e-6)  # sigmoid(r) and sigmoid(-r) average to 0.5


def test_predict_stack_rejects_a_stack_of_the_wrong_shape():
    geometry = make_geometry((4, 4, 3), 2, 4)
    with pytest.raises(DatasetError, match=r"expected a slice stack of shape \(3, 4, 4\), found \(2, 4, 4\)"):
        predict_stack(ThresholdStub(), np.zeros((2, 4, 4), np.float32), geometry, TEXT)
    with pytest.raises(ConfigError, match="batch_size: expected a positive integer, found 0"):
        predict_stack(ThresholdStub(), np.zeros((3, 4, 4), np.float32), geometry, TEXT, batch_size=0)


def test_predict_volume_rejects_a_2d_image():
    settings = PreprocessingSettings(axis="axial", size=4, clip_percentiles=(0.5, 99.5))
    with pytest.raises(DatasetError, match=r"img.nii: expected a 3D image \(X, Y, Z\), found 2D"):
        predict_volume(ThresholdStub(), np.zeros((4, 4)), np.eye(4), TEXT, settings, what="img.nii")


def test_prepared_case_and_raw_volume_give_the_same_labels(tmp_path: Path):
    rng = np.random.default_rng(4)
    ds = tmp_path / "ds"
    ds.mkdir()
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    img = rng.normal(size=(10, 8, 6)).astype(np.float32)
    lab = (img > 0.5).astype(np.uint8)
    nib.save(nib.Nifti1Image(img, affine), str(ds / "c1.nii.gz"))
    nib.save(nib.Nifti1Image(lab, affine), str(ds / "c1_seg.nii.gz"))
    data = {
        "name": "t",
        "labels": {"background": 0, "fg": 1},
        "domains": {
            "CT": {
                "modality": "computed tomography",
                "cases": [{"id": "c1", "image": "c1.nii.gz", "label": "c1_seg.nii.gz", "split": "test"}],
            }
        },
    }
    (ds / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    index = prepare_dataset(ds, tmp_path / "prep", size=12, progress=False)
    case = index.case("CT", "c1")
    from_prepared = predict_case(ThresholdStub(), case, TEXT, batch_size=4)
    settings = PreprocessingSettings.from_mapping(load_prepared(tmp_path / "prep").settings)
    from_raw = predict_volume(ThresholdStub(), img, affine, TEXT, settings, batch_size=5).labels
    np.testing.assert_array_equal(from_prepared, from_raw)
    assert from_prepared.shape == (10, 8, 6)
    np.testing.assert_array_equal(np.asarray(original_label_volume(index, case).array).astype(np.int64), lab)


def test_preprocessing_settings_from_checkpoint():
    ck = {"preprocessing": {"prepare": {"axis": "coronal", "size": 64, "clip_percentiles": [1, 99]}}}
    s = PreprocessingSettings.from_checkpoint(ck)
    assert s == PreprocessingSettings("coronal", 64, (1.0, 99.0))
    assert s.matches({"axis": "coronal", "size": 64, "clip_percentiles": [1.0, 99.0], "channel": None})
    assert not s.matches({"axis": "coronal", "size": 32, "clip_percentiles": [1.0, 99.0]})
    with pytest.raises(
        ConfigError, match=r"run.pt: no preprocessing settings \(expected key \['preprocessing'\]\['prepare'\]"
    ):
        PreprocessingSettings.from_checkpoint({}, "run.pt")
    bad = {"preprocessing": {"prepare": {"axis": "axial", "size": 0, "clip_percentiles": [1, 99]}}}
    with pytest.raises(ConfigError, match="size: expected a positive integer"):
        PreprocessingSettings.from_checkpoint(bad, "run.pt")
    bad["preprocessing"]["prepare"].update(size=8, axis="oblique")
    with pytest.raises(ConfigError, match=r"run.pt .*axis: expected one of axial"):
        PreprocessingSettings.from_checkpoint(bad, "run.pt")


def test_fixed_normalization_is_carried_and_applied_with_the_volume_domain(tmp_path: Path):
    fixed = NormalizationSpec.fixed({"CT": (-2.0, 2.0), "MR": (0.0, 8.0)})
    s = PreprocessingSettings.from_mapping(
        {"axis": "2", "size": 4, "clip_percentiles": [0.5, 99.5], "normalization": fixed.to_dict()}
    )
    assert s.normalization == fixed
    assert PreprocessingSettings.from_mapping(s.to_dict()) == s
    # Percentiles play no part in a fixed map, so they do not have to agree; the ranges do.
    assert s.matches({**s.to_dict(), "clip_percentiles": [0.0, 98.0]})
    assert not s.matches({**s.to_dict(), "normalization": {"method": "percentile_zscore"}})
    vol = np.full((4, 4, 3), 1.0, dtype=np.float32)  # CT: 2(1 + 2)/4 - 1 = 0.5 > 0; MR: 2(1 - 0)/8 - 1 < 0
    ct = predict_volume(ThresholdStub(), vol, np.eye(4), TEXT, s, domain="CT").labels
    mr = predict_volume(ThresholdStub(), vol, np.eye(4), TEXT, s, domain="MR").labels
    assert ct.min() == 1 and mr.max() == 0
    with pytest.raises(ConfigError, match="not for None"):
        predict_volume(ThresholdStub(), vol, np.eye(4), TEXT, s)
