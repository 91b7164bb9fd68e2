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


def _released_reference(mha: MultiHeadAttention, q_in: torch.Tensor, kv_in: torch.Tensor) -> torch.Tensor:
    """The released attention in eval mode, head by head: ReLU on q, k, v and on the output."""
    q, k, v = (F.relu(p(x)) for p, x in ((mha.q_proj, q_in), (mha.k_proj, kv_in), (mha.v_proj, kv_in)))
    d = mha.head_dim
    heads = []
    for h in range(mha.num_heads):
        sl = slice(d * h, d * (h + 1))
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        heads.append(w @ v[..., sl])
    return F.relu(mha.out_proj(torch.cat(heads, dim=-1)))


def test_released_mha_eval_matches_reference_with_relus() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim=6, num_heads=3, head_dim=4, activation=True, dropout=0.1).eval()
    q_in, kv_in = torch.randn(2, 5, 6), torch.randn(2, 3, 6)
    out = mha(q_in, kv_in, kv_in)
    torch.testing.assert_close(out, _released_reference(mha, q_in, kv_in))
    assert float(out.detach().min()) >= 0.0  # ReLU on the output
    plain = MultiHeadAttention(embed_dim=6, num_heads=3, head_dim=4)
    plain.load_state_dict(mha.state_dict())  # same keys in both variants
    assert not torch.allclose(plain(q_in, kv_in, kv_in), out)


def test_released_mha_dropout_on_weights_and_output_in_train_mode() -> None:
    """One key token: eval weights are all 1; in train mode each (image, head, query) weight is
    0 or 1/0.9, and the output projection is dropped the same way."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim=8, num_heads=3, head_dim=8, activation=True, dropout=0.1)
    assert mha.attn_dropout.p == 0.1 and mha.out_dropout.p == 0.1
    query, token = torch.randn(64, 4, 8), torch.randn(64, 1, 8)
    mha.eval()
    ref = mha(query, token, token)
    torch.testing.assert_close(ref, F.relu(mha.out_proj(F.relu(mha.v_proj(token)))).expand(-1, 4, -1))
    mha.train()
    out = mha(query, token, token)
    assert not torch.allclose(out, ref)
    mha.out_dropout.p = 0.0  # attention-weight dropout alone: outputs are ReLU(out_proj(mix of 0 and v/0.9))
    mha.attn_dropout.p = 1.0  # every weight dropped: v never reaches the output
    torch.testing.assert_close(mha(query, token, token), F.relu(mha.out_proj.bias).expand(64, 4, -1))


def test_released_mha_initialisation() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim=256, num_heads=3, head_dim=256, activation=True, dropout=0.1)
    mha.reset_parameters_released()
    for proj in (mha.q_proj, mha.k_proj, mha.v_proj):
        assert float(proj.weight.detach().mean().abs()) < 2e-3
        assert float(proj.weight.detach().std()) == pytest.approx(math.sqrt(2 / 512), rel=0.02)  # 0.0625
    xavier = math.sqrt(2.0 / (768 + 256))
    assert float(mha.out_proj.weight.detach().std()) == pytest.approx(xavier, rel=0.02)


def test_fusion_variants() -> None:
    paper = FusionTransformer(embed_dim=16, num_heads=3, head_dim=16, mlp_dim=32)
    released = FusionTransformer(embed_dim=16, num_heads=3, head_dim=16, mlp_dim=32, variant="released")
    assert not paper.attn.activation and paper.attn.attn_dropout.p == 0.0
    assert released.attn.activation and released.attn.attn_dropout.p == 0.1 and released.attn.out_dropout.p == 0.1
    assert list(paper.state_dict()) == list(released.state_dict())
    with pytest.raises(ConfigError, match="'variant': expected 'paper' or 'released', found 'other'"):
        FusionTransformer(16, 3, 16, 32, variant="other")


def test_mha_rejects_bad_dropout() -> None:
    with pytest.raises(ConfigError, match=r"'dropout': expected a probability in \[0, 1\), found 1.0"):
        MultiHeadAttention(8, 1, 8, dropout=1.0)
