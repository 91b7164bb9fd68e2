"""Tests of the model registry; every registered network runs the same checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.models.backbones import BasicBlock
from tcsa_uda.models.factory import available_models, build_segmenter, register_segmenter
from tcsa_uda.models.segmenter import TCSASegmenter, parameter_groups

C, D = 3, 8


def test_available_models() -> None:
    names = available_models()
    assert {"deeplabv2_r101", "light"} <= set(names)
    assert names == sorted(names)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"Unknown model 'unet'.*deeplabv2_r101, light"):
        build_segmenter("unet", C, D)


def test_unknown_option_lists_valid_options() -> None:
    with pytest.raises(ConfigError, match=r"unknown option.*depth; valid options: base_width"):
        build_segmenter("light", C, D, depth=3)
    with pytest.raises(ConfigError, match="valid options: none"):
        build_segmenter("deeplabv2_r101", C, D, base_width=3)


def test_duplicate_registration_rejected() -> None:
    def builder(num_classes: int, text_dim: int) -> TCSASegmenter:
        raise AssertionError("a rejected builder must never be called")

    with pytest.raises(ConfigError, match="already registered"):
        register_segmenter("light")(builder)


def test_light_base_width_option() -> None:
    model = build_segmenter("light", C, D, base_width=8)
    assert model.hi_channels == 64 and model.backbone.mid_channels == 32


@pytest.mark.parametrize(("num_classes", "text_dim"), [(1, D), (C, 0)])
def test_factory_validates_sizes(num_classes: int, text_dim: int) -> None:
    with pytest.raises(ConfigError):
        build_segmenter("light", num_classes, text_dim)


# ResNet-101 takes seconds per forward/backward on a CPU: it runs in the slow tier.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "deeplabv2_r101" else n for n in available_models()]
)
def test_every_model_stride_8_and_gradients_reach_all_groups(name: str) -> None:
    """One forward+backward per registered model on a tiny 65x65 input (the only r101 pass)."""
    torch.manual_seed(0)
    model = build_segmenter(name, C, D)
    assert isinstance(model, TCSASegmenter)
    out = model(torch.randn(1, 3, 65, 65), torch.randn(C, D))
    for logits in (out.main, out.aux):
        assert tuple(logits.shape) == (1, C, 9, 9)  # output stride 8: (65 - 1) / 8 + 1
    assert tuple(out.f_hi.shape) == (1, model.hi_channels, 9, 9)
    assert tuple(out.f_vis.shape) == (1, model.embed_dim, 9, 9)
    assert tuple(out.text.shape) == (1, C, model.embed_dim)
    (out.main.sum() + out.aux.sum()).backward()
    groups = parameter_groups(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(len(v) for v in groups.values()) == len(trainable)
    assert {id(p) for v in groups.values() for p in v} == {id(p) for p in trainable}
    for group, params in groups.items():
        grads = [p.grad for p in params if p.grad is not None]
        assert len(grads) == len(params), group
        assert sum(float(g.abs().sum()) for g in grads) > 0.0, group


def test_weights_round_trip_through_factory(tmp_path) -> None:
    torch.manual_seed(3)
    src = build_segmenter("light", C, D, base_width=8)
    path = tmp_path / "light_backbone.pt"
    torch.save(src.backbone.state_dict(), path)
    dst = build_segmenter("light", C, D, weights=path, base_width=8)
    dst_block, src_block = dst.backbone.layer3[0], src.backbone.layer3[0]
    assert isinstance(dst_block, BasicBlock) and isinstance(src_block, BasicBlock)
    assert torch.equal(dst_block.conv1.weight, src_block.conv1.weight)
    dst_aux, src_aux = dst.aux_head.branches[0], src.aux_head.branches[0]
    assert isinstance(dst_aux, nn.Conv2d) and isinstance(src_aux, nn.Conv2d)
    assert not torch.equal(dst_aux.weight, src_aux.weight)  # heads stay random


def test_weights_missing_file_through_factory(tmp_path) -> None:
    with pytest.raises(MissingPathError, match=r"absent.pt"):
        build_segmenter("light", C, D, weights=tmp_path / "absent.pt", base_width=8)


def test_weights_of_other_backbone_rejected(tmp_path) -> None:
    path = tmp_path / "w16.pt"
    torch.save(build_segmenter("light", C, D, base_width=16).backbone.state_dict(), path)
    with pytest.raises(ConfigError, match=r"w16.pt.*shape mismatch"):
        build_segmenter("light", C, D, weights=path, base_width=8)
