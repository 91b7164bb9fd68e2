"""Tests of the TCSA-UDA heads: embedding head, text projection, global token, fusion, controller."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.models.tcsa_head import (
    DynamicController,
    FusionTransformer,
    GlobalToken,
    MultiHeadAttention,
    SegmentationHead,
    TextProjection,
    VisualEmbeddingHead,
    embedding_schedule,
)


@pytest.mark.parametrize(
    ("in_channels", "expected"),
    [(2048, [1024, 512, 256, 128, 256]), (256, [128, 64, 32, 16, 256]), (64, [32, 16, 16, 16, 256])],
)
def test_embedding_schedule(in_channels: int, expected: list[int]) -> None:
    assert embedding_schedule(in_channels) == expected


def test_visual_embedding_head_blocks_and_shape() -> None:
    head = VisualEmbeddingHead(64, 32, channels=[32, 16, 8, 4, 32])
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(64, 32), (32, 16), (16, 8), (8, 4), (4, 32)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 5
    out = head(torch.randn(2, 64, 7, 7))
    assert tuple(out.shape) == (2, 32, 7, 7)
    assert float(out.detach().min()) >= 0.0  # ends with ReLU


def test_visual_embedding_head_rejects_bad_schedule() -> None:
    with pytest.raises(ConfigError, match="channels"):
        VisualEmbeddingHead(64, 32, channels=[16, 8])


def test_text_projection_is_relu_linear() -> None:
    torch.manual_seed(0)
    proj = TextProjection(6, 8)
    text = torch.randn(3, 6)
    expected = torch.clamp(text @ proj.linear.weight.T + proj.linear.bias, min=0)
    torch.testing.assert_close(proj(text), expected)
    assert tuple(proj(torch.randn(2, 3, 6)).shape) == (2, 3, 8)


def test_global_token_reference() -> None:
    torch.manual_seed(0)
    tok = GlobalToken(16, 8)
    torch.nn.init.normal_(tok.norm.weight)
    torch.nn.init.normal_(tok.norm.bias)
    f_hi = torch.randn(2, 16, 5, 5)
    assert tok.proj.bias is not None
    pooled = F.relu(F.group_norm(f_hi, 8, tok.norm.weight, tok.norm.bias)).mean(dim=(2, 3))  # (B, 16)
    expected = pooled @ tok.proj.weight.view(8, 16).T + tok.proj.bias
    out = tok(f_hi)
    assert tuple(out.shape) == (2, 1, 8)
    torch.testing.assert_close(out[:, 0], expected)


def test_global_token_rejects_indivisible_channels() -> None:
    with pytest.raises(ConfigError, match="in_channels=12"):
        GlobalToken(12, 8)


def test_mha_matches_per_head_reference() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim=6, num_heads=3, head_dim=4)
    assert (mha.q_proj.in_features, mha.q_proj.out_features, mha.out_proj.in_features) == (6, 12, 12)
    q_in, kv_in = torch.randn(2, 5, 6), torch.randn(2, 3, 6)
    q, k, v = mha.q_proj(q_in), mha.k_proj(kv_in), mha.v_proj(kv_in)
    heads = []
    for h in range(3):
        sl = slice(4 * h, 4 * (h + 1))
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(w @ v[..., sl])
    expected = mha.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(mha(q_in, kv_in, kv_in), expected)


def test_mha_with_single_key_returns_projected_value() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim=8, num_heads=3, head_dim=8)
    query, token = torch.randn(2, 4, 8), torch.randn(2, 1, 8)
    out = mha(query, token, token)
    expected = mha.out_proj(mha.v_proj(token)).expand(-1, 4, -1)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    # all attention weights are 1: the query/key projections receive exactly zero gradient
    q_grad, v_grad = mha.q_proj.weight.grad, mha.v_proj.weight.grad
    assert q_grad is not None and v_grad is not None
    assert float(q_grad.abs().max()) == 0.0
    assert float(v_grad.abs().max()) > 0.0


def test_fusion_transformer_shape_and_layer_norm() -> None:
    torch.manual_seed(0)
    fusion = FusionTransformer(embed_dim=16, num_heads=3, head_dim=16, mlp_dim=32)
    assert fusion.query.in_features == 32 and fusion.attn.q_proj.out_features == 48
    z = fusion(torch.randn(2, 4, 16), torch.randn(2, 1, 16))
    assert tuple(z.shape) == (2, 4, 16)
    torch.testing.assert_close(z.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)


def test_fusion_uses_text_and_token() -> None:
    torch.manual_seed(0)
    fusion = FusionTransformer(embed_dim=16, num_heads=3, head_dim=16, mlp_dim=32)
    text, token = torch.randn(1, 4, 16), torch.randn(1, 1, 16)
    base = fusion(text, token)
    assert not torch.allclose(base, fusion(text, token + 1.0))
    assert not torch.allclose(base, fusion(text.flip(1), token))


def test_controller_batched_equals_per_sample_loop() -> None:
    torch.manual_seed(0)
    ctrl = DynamicController(embed_dim=8, in_channels=6, out_channels=4, hidden_dim=16)
    assert ctrl.mlp[-1].out_features == 4 * 6 + 4
    z = torch.randn(3, 5, 8)
    f_vis = torch.randn(3, 6, 7, 7)
    out = ctrl(z, f_vis)
    weight, bias = ctrl.generate(z)
    assert tuple(weight.shape) == (3, 4, 6) and tuple(bias.shape) == (3, 4)
    assert not torch.allclose(weight[0], weight[1])
    ref = torch.cat([F.conv2d(f_vis[i : i + 1], weight[i, :, :, None, None], bias[i]) for i in range(3)])
    assert tuple(out.shape) == (3, 4, 7, 7)
    torch.testing.assert_close(out, ref)
    # the generated parameters depend only on the class mean of Z
    torch.testing.assert_close(ctrl.generate(z.flip(1))[0], weight)


def test_segmentation_head() -> None:
    head = SegmentationHead(128, 5)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(128, 64, (1, 1)), (64, 5, (1, 1))]
    assert tuple(head(torch.randn(1, 128, 3, 3)).shape) == (1, 5, 3, 3)


@pytest.mark.parametrize("cls", [TextProjection, MultiHeadAttention])
def test_heads_reject_non_positive_sizes(cls) -> None:
    with pytest.raises(ConfigError, match="expected a positive integer, found 0"):
        cls(0)
