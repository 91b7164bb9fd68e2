"""The public Python API: ``tcsa_uda.load_model`` and the model's ``segment`` / ``preprocess`` (README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tcsa_uda
from tcsa_uda.data.encoding import encode_slices
from tcsa_uda.data.normalize import normalize_volume
from tcsa_uda.engine.checkpoint import save_checkpoint
from tcsa_uda.errors import ConfigError
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

CLASSES = ["background", "a", "b"]


def _checkpoint(path: Path, encoding: str = "grey") -> Path:
    torch.manual_seed(0)
    model = build_segmenter("light", len(CLASSES), 8, base_width=8)
    text = TextEmbeddings(
        domains=["MR", "CT"],
        class_names=CLASSES,
        prompts=[[f"{d} {c}" for c in CLASSES] for d in ("MR", "CT")],
        embeddings=torch.randn(2, len(CLASSES), 8),
        encoder="test",
    )
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_name": "light",
            "model_kwargs": {"base_width": 8},
            "class_names": CLASSES,
            "source": "MR",
            "target": "CT",
            "text": text.to_dict(),
            "preprocessing": {
                "prepare": {"axis": "axial", "size": 32, "clip_percentiles": [1.0, 99.0]},
                "input_encoding": encoding,
            },
        },
    )
    return path


@pytest.mark.slow
def test_load_model_is_lazy_and_public() -> None:
    code = (
        "import sys, tcsa_uda.data; "
        "assert not [m for m in sys.modules if m.startswith('tcsa_uda.evaluation')], 'evaluation imported'; "
        "import tcsa_uda; f = tcsa_uda.load_model; "
        "assert 'tcsa_uda.evaluation.model' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    from tcsa_uda.evaluation.model import LoadedModel, load_model

    assert tcsa_uda.load_model is load_model and tcsa_uda.LoadedModel is LoadedModel
    assert {"load_model", "LoadedModel"} <= set(tcsa_uda.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'segment'"):
        _ = tcsa_uda.segment


def test_segment_returns_upsampled_main_logits_in_eval_mode(tmp_path) -> None:
    lm = tcsa_uda.load_model(_checkpoint(tmp_path / "m.pt"), device="cpu")
    assert not lm.model.training
    x = torch.randn(2, 3, 40, 36)
    logits = lm.segment(x)  # default domain: the training target (CT)
    assert logits.shape == (2, 3, 40, 36) and not logits.requires_grad
    with torch.no_grad():
        main = lm.model(x, lm.text_for("CT")).main
    torch.testing.assert_close(logits, F.interpolate(main, size=(40, 36), mode="bilinear", align_corners=True))
    assert not torch.allclose(lm.segment(x, domain="MR"), logits)  # the text row matters
    with pytest.raises(ConfigError, match=r"segment: expected a float tensor \(B, 3, H, W\), found \(3, 40, 36\)"):
        lm.segment(x[0])
    with pytest.raises(ConfigError, match="domain 'PET' is not one the model was trained with"):
        lm.segment(x, domain="PET")


@pytest.mark.parametrize("encoding", ["grey", "caffe_bgr"])
def test_preprocess_applies_the_intensity_pipeline_and_the_encoding(tmp_path, encoding) -> None:
    lm = tcsa_uda.load_model(_checkpoint(tmp_path / "m.pt", encoding))
    raw = np.random.default_rng(0).normal(100.0, 30.0, size=(4, 20, 24)).astype(np.float32)
    x = lm.preprocess(raw)
    normalised, _ = normalize_volume(raw, (1.0, 99.0))  # the stack as one volume, the checkpoint's percentiles
    torch.testing.assert_close(x, encode_slices(normalised, encoding))
    assert x.shape == (4, 3, 20, 24)
    assert lm.segment(x).shape == (4, 3, 20, 24)
    with pytest.raises(ConfigError, match=r"preprocess: expected raw slices \(S, H, W\), found shape \(20, 24\)"):
        lm.preprocess(raw[0])
