"""Tests of the full TCSA-UDA network, its output, parameter groups and logit upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tcsa_uda.errors import ConfigError, TcsaUdaError
from tcsa_uda.models.backbones import light_resnet
from tcsa_uda.models.factory import build_segmenter
from tcsa_uda.models.segmenter import SegmenterOutput, TCSASegmenter, parameter_groups, upsample_logits

C, D = 3, 6


def _tiny(seed: int = 0) -> TCSASegmenter:
    torch.manual_seed(seed)
    return TCSASegmenter(light_resnet(base_width=8), C, D, embed_dim=16, dynamic_channels=8, head_channels=4)


def test_light_default_at_256_gives_33x33_outputs() -> None:
    torch.manual_seed(0)
    model = TCSASegmenter(light_resnet(), 5, 12)
    out = model(torch.randn(1, 3, 256, 256), torch.randn(5, 12))
    assert isinstance(out, SegmenterOutput)
    assert tuple(out.main.shape) == (1, 5, 33, 33)
    assert tuple(out.aux.shape) == (1, 5, 33, 33)
    assert tuple(out.f_hi.shape) == (1, 256, 33, 33)
    assert tuple(out.f_vis.shape) == (1, 256, 33, 33)
    assert tuple(out.text.shape) == (1, 5, 256)
    assert (model.hi_channels, model.embed_dim) == (256, 256)
    assert model.embed_head.channels == [128, 64, 32, 16, 256]
    assert model.controller.mlp[-1].out_features == 128 * 256 + 128


def test_text_2d_and_3d_give_the_same_result() -> None:
    model = _tiny().eval()
    x, text = torch.randn(2, 3, 24, 24), torch.randn(C, D)
    with torch.no_grad():
        a = model(x, text)
        b = model(x, text.expand(2, C, D))
    torch.testing.assert_close(a.main, b.main)
    torch.testing.assert_close(a.text, b.text)


def test_each_image_is_fused_with_its_own_text() -> None:
    model = _tiny().eval()
    x = torch.randn(2, 3, 24, 24)
    t0, t1 = torch.randn(C, D), torch.randn(C, D)
    with torch.no_grad():
        both = model(x, torch.stack([t0, t1]))
        first = model(x[:1], t0)
        second = model(x[1:], t1)
        swapped = model(x[1:], t0)
    torch.testing.assert_close(both.main[0], first.main[0])
    torch.testing.assert_close(both.main[1], second.main[0])
    torch.testing.assert_close(both.text[1], model.project_text(t1))
    assert not torch.allclose(second.main, swapped.main)  # the text changes the main prediction ...
    torch.testing.assert_close(second.aux, swapped.aux)  # ... but not the text-free aux branch


def test_controller_is_batched_and_per_image() -> None:
    model = _tiny().eval()
    x, text = torch.randn(2, 3, 24, 24), torch.randn(C, D)
    x[1] = x[1] * 3.0 + 1.0  # different images, different F_hi
    with torch.no_grad():
        out = model(x, text)
        assert not torch.allclose(out.f_hi[0], out.f_hi[1])
        z = model.fusion(model.text_proj(text).expand(2, -1, -1), model.global_token(out.f_hi))
        weight, bias = model.controller.generate(z)
        assert not torch.allclose(weight[0], weight[1])
        ref = torch.cat(
            [model.seg_head(F.conv2d(out.f_vis[i : i + 1], weight[i, :, :, None, None], bias[i])) for i in range(2)]
        )
    torch.testing.assert_close(out.main, ref)


def test_project_text() -> None:
    model = _tiny()
    text = torch.randn(C, D)
    t = model.project_text(text)
    assert tuple(t.shape) == (C, 16)
    torch.testing.assert_close(t, F.relu(model.text_proj.linear(text)))
    with pytest.raises(ConfigError, match=r"found \(4, 6\)"):
        model.project_text(torch.randn(4, D))


def test_parameter_groups_partition() -> None:
    model = _tiny()
    groups = parameter_groups(model)
    assert list(groups) == ["backbone", "heads", "fusion"]
    ids = {name: [id(p) for p in params] for name, params in groups.items()}
    all_ids = [i for v in ids.values() for i in v]
    assert len(all_ids) == len(set(all_ids))  # no parameter twice
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(all_ids) == trainable
    assert id(model.backbone.conv1.weight) in ids["backbone"]
    assert id(model.backbone.bn1.weight) not in set(all_ids)  # frozen BN affine
    assert id(model.aux_head.branches[0].weight) in ids["heads"]
    assert id(model.embed_head.blocks[1].weight) in ids["heads"]  # head BN is trainable
    for module in (model.text_proj, model.global_token, model.fusion, model.controller, model.seg_head):
        assert {id(p) for p in module.parameters()} <= set(ids["fusion"])


def test_parameter_groups_rejects_unknown_trainable_child() -> None:
    model = _tiny()
    model.extra = nn.Linear(2, 2)
    with pytest.raises(TcsaUdaError, match="'extra'"):
        parameter_groups(model)


@pytest.mark.parametrize(
    ("num_classes", "text_dim", "field"),
    [(1, 4, "num_classes"), (2.0, 4, "num_classes"), (3, 0, "text_dim"), (3, True, "text_dim")],
)
def test_rejects_bad_sizes(num_classes, text_dim, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TCSASegmenter(light_resnet(base_width=8), num_classes, text_dim)


@pytest.mark.parametrize(
    ("x_shape", "text_shape", "pattern"),
    [
        ((1, 1, 24, 24), (C, D), r"input: expected images of shape \(B, 3, H, W\), found \(1, 1, 24, 24\)"),
        ((2, 3, 24, 24), (C, D + 1), r"D_text=6.*found \(3, 7\)"),
        ((2, 3, 24, 24), (C + 1, D), r"C=3.*found \(4, 6\)"),
        ((2, 3, 24, 24), (3, C, D), r"B=2.*found \(3, 3, 6\)"),
        ((2, 3, 24, 24), (D,), r"found \(6,\)"),
    ],
)
def test_forward_rejects_bad_shapes(x_shape, text_shape, pattern: str) -> None:
    model = _tiny()
    with pytest.raises(ConfigError, match=pattern):
        model(torch.randn(*x_shape), torch.randn(*text_shape))


def test_upsample_logits_align_corners() -> None:
    logits = torch.tensor([[0.0, 2.0], [4.0, 6.0]]).view(1, 1, 2, 2).expand(2, 3, 2, 2)
    up = upsample_logits(logits, (3, 3))
    assert tuple(up.shape) == (2, 3, 3, 3)
    expected = torch.tensor([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]])
    torch.testing.assert_close(up[1, 2], expected)
    assert tuple(upsample_logits(torch.zeros(1, 5, 33, 33), [256, 256]).shape) == (1, 5, 256, 256)


def test_released_variant_has_the_same_keys_and_release_initialisation() -> None:
    torch.manual_seed(0)
    paper = build_segmenter("light", 3, 8, base_width=8)
    released = build_segmenter("light", 3, 8, base_width=8, variant="released")
    assert paper.variant == "paper" and released.variant == "released"
    assert list(paper.state_dict()) == list(released.state_dict())
    assert released.fusion.attn.activation and not paper.fusion.attn.activation
    # ASPP: weights N(0, 0.01), biases PyTorch's default uniform (not zero) in the release
    paper_aspp = [b for b in paper.aux_head.branches if isinstance(b, nn.Conv2d) and b.bias is not None]
    released_aspp = [b for b in released.aux_head.branches if isinstance(b, nn.Conv2d) and b.bias is not None]
    assert len(paper_aspp) == len(released_aspp) == 4
    assert all(float(b.bias.detach().abs().max()) == 0.0 for b in paper_aspp if b.bias is not None)
    assert all(float(b.bias.detach().abs().max()) > 0.0 for b in released_aspp if b.bias is not None)
    embed = torch.cat([m.weight.detach().flatten() for m in released.embed_head.modules() if isinstance(m, nn.Conv2d)])
    assert float(embed.std()) == pytest.approx(0.01, rel=0.05)


def test_released_variant_forward_differs_from_paper_with_the_same_weights() -> None:
    torch.manual_seed(0)
    paper = build_segmenter("light", 3, 8, base_width=8).eval()
    released = build_segmenter("light", 3, 8, base_width=8, variant="released").eval()
    released.load_state_dict(paper.state_dict())
    x, text = torch.randn(2, 3, 64, 64), torch.randn(3, 8)
    with torch.no_grad():
        a, b = paper(x, text), released(x, text)
    torch.testing.assert_close(a.aux, b.aux)  # the attention only reaches the main branch
    assert not torch.allclose(a.main, b.main)


def test_rejects_unknown_variant() -> None:
    with pytest.raises(ConfigError, match="'variant': expected one of paper, released, found 'code'"):
        build_segmenter("light", 3, 8, base_width=8, variant="code")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pre_relu_map_is_exposed_and_f_vis_unchanged(mode: str) -> None:
    """``f_vis_pre`` is the embedding head before its final ReLU; ``f_vis`` is what the head's forward gives."""
    model = _tiny()
    model.train(mode == "train")
    x = torch.randn(2, 3, 24, 24)
    out = model(x, torch.randn(C, D))
    assert out.f_vis_pre is not None and out.f_vis_pre.shape == out.f_vis.shape
    assert (out.f_vis_pre < 0).any()  # not a post-ReLU map
    torch.testing.assert_close(out.f_vis, F.relu(out.f_vis_pre), rtol=0, atol=0)
    if mode == "eval":  # BatchNorm statistics fixed: the head's own forward gives the same map
        with torch.no_grad():
            _, f_hi = model.backbone(x)
            torch.testing.assert_close(out.f_vis, model.embed_head(f_hi), rtol=0, atol=0)
            torch.testing.assert_close(out.f_vis_pre, model.embed_head.pre_activation(f_hi), rtol=0, atol=0)
