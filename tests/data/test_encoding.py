"""The network input encodings: grey repeated, and the released code's Caffe BGR pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tcsa_uda.data.encoding import (
    CAFFE_MEAN_BGR,
    INPUT_ENCODINGS,
    check_input_encoding,
    encode_slices,
    input_encoding_of,
)
from tcsa_uda.errors import ConfigError


def test_grey_repeats_the_slice() -> None:
    x = np.array([[-1.0, 0.0], [0.5, 1.0]], dtype=np.float32)
    out = encode_slices(x, "grey")
    assert out.shape == (3, 2, 2) and out.dtype == torch.float32
    for c in range(3):
        assert torch.equal(out[c], torch.from_numpy(x))
    assert encode_slices(np.zeros((4, 5, 6), np.float32), "grey").shape == (4, 3, 5, 6)


def test_caffe_bgr_hand_computed() -> None:
    """(x + 1) * 127.5, then minus the Caffe mean in B, G, R order: -1 -> -104.007.., 1 -> 255 - mean."""
    x = torch.tensor([[[-1.0, 1.0]], [[0.0, 0.2]]])  # (S=2, H=1, W=2)
    out = encode_slices(x, "caffe_bgr")
    assert out.shape == (2, 3, 1, 2)
    for c, mean in enumerate(CAFFE_MEAN_BGR):
        expected = (np.array([[[-1.0, 1.0]], [[0.0, 0.2]]]) + 1.0) * 127.5 - mean  # float64 reference
        np.testing.assert_allclose(out[:, c].numpy(), expected[:, 0][:, None], rtol=0, atol=2e-5)
    assert out[0, 0, 0, 0].item() == pytest.approx(-104.00698793, abs=1e-4)  # B channel of a -1 pixel
    assert out[0, 2, 0, 1].item() == pytest.approx(255.0 - 122.67891434, abs=1e-4)  # R channel of a +1 pixel


def test_tensor_input_keeps_its_device_and_memmap_is_copied(tmp_path) -> None:
    path = tmp_path / "s.npy"
    np.save(path, np.zeros((2, 3, 3), np.float32))
    mm = np.load(path, mmap_mode="r")
    out = encode_slices(mm, "caffe_bgr")
    out += 1.0  # writable: not a view of the read-only map
    assert encode_slices(torch.zeros(3, 3), "grey").device.type == "cpu"


def test_bad_encoding_or_shape() -> None:
    with pytest.raises(ConfigError, match="input_encoding: expected one of grey, caffe_bgr, found 'rgb'"):
        encode_slices(np.zeros((2, 2), np.float32), "rgb")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"expected \(H, W\) or \(S, H, W\) slices, found shape \(1, 1, 2, 2\)"):
        encode_slices(np.zeros((1, 1, 2, 2), np.float32), "grey")
    assert check_input_encoding("caffe_bgr") == "caffe_bgr" and INPUT_ENCODINGS == ("grey", "caffe_bgr")


def test_checkpoint_record() -> None:
    assert input_encoding_of({}) == "grey"  # written before the setting existed: grey was the only one
    assert input_encoding_of({"preprocessing": {"prepare": {}}}) == "grey"
    assert input_encoding_of({"preprocessing": {"input_encoding": "caffe_bgr"}}) == "caffe_bgr"
    with pytest.raises(ConfigError, match=r"run.pt \['preprocessing'\]\['input_encoding'\]: expected one of"):
        input_encoding_of({"preprocessing": {"input_encoding": "bgr"}}, "run.pt")
