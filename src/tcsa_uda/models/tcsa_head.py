"""The text-conditioned heads of TCSA-UDA (arXiv 2511.05782, section Architecture).

Data flow for one image with ``C`` class prompts (``D_hi`` = backbone channels, ``E`` = 256)::

    F_hi (D_hi, h, w) --VisualEmbeddingHead--> F_vis (E, h, w)
    F_hi --GlobalToken--> g (1, E)        text E_m (C, D_text) --TextProjection--> T (C, E)
    [T ; g] --FusionTransformer--> Z (C, E)
    mean_c Z --DynamicController--> per-image 1x1 conv (E -> 128) applied to F_vis -> (128, h, w)
    --SegmentationHead--> P_main (C, h, w)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError

__all__ = [
    "DynamicController",
    "FusionTransformer",
    "GlobalToken",
    "MultiHeadAttention",
    "SegmentationHead",
    "TextProjection",
    "VisualEmbeddingHead",
    "embedding_schedule",
]

RELEASED_ATTENTION_DROPOUT = 0.1
"""Dropout of the released code's attention (on the attention weights and on the output projection)."""


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{owner} '{name}': expected a positive integer, found {value!r}.")


def embedding_schedule(
    in_channels: int, out_channels: int = 256, n_blocks: int = 5, min_channels: int = 16
) -> list[int]:
    """Output channels of each block of the visual embedding head.

    Halves the width ``n_blocks - 1`` times from ``in_channels`` (never below ``min_channels``), then
    maps to ``out_channels``. For ``in_channels = 2048`` this is the paper schedule
    ``[1024, 512, 256, 128, 256]``; for the light backbone (256) it is ``[128, 64, 32, 16, 256]``.
    """
    _check_positive("embedding_schedule", in_channels=in_channels, out_channels=out_channels, n_blocks=n_blocks)
    return [max(in_channels // 2**i, min_channels) for i in range(1, n_blocks)] + [out_channels]


class VisualEmbeddingHead(nn.Module):
    """Stack of ``[3x3 conv, BN, ReLU]`` blocks, no upsampling: ``F_hi -> F_vis``.

    Args:
        in_channels: channels of ``F_hi``.
        out_channels: channels of ``F_vis`` (paper: 256).
        channels: explicit per-block output channels; default :func:`embedding_schedule`.

    Raises:
        ConfigError: if ``channels`` does not end with ``out_channels`` or holds a non-positive width.
    """

    def __init__(self, in_channels: int, out_channels: int = 256, channels: list[int] | None = None) -> None:
        super().__init__()
        _check_positive("VisualEmbeddingHead", in_channels=in_channels, out_channels=out_channels)
        channels = embedding_schedule(in_channels, out_channels) if channels is None else list(channels)
        if not channels or channels[-1] != out_channels or any(c < 1 for c in channels):
            raise ConfigError(
                f"VisualEmbeddingHead 'channels': expected positive widths ending with {out_channels}, found "
                f"{channels}."
            )
        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            prev = width
        self.blocks = nn.Sequential(*layers)
        self.channels = channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, f_hi: Tensor) -> Tensor:
        """Map ``(B, in_channels, h, w)`` to ``F_vis`` ``(B, out_channels, h, w)``."""
        return self.blocks(f_hi)

    def pre_activation(self, f_hi: Tensor) -> Tensor:
        """The map before the final ReLU, ``(B, out_channels, h, w)``: ``F_vis = ReLU(pre_activation(F_hi))``.

        Runs every module of :attr:`blocks` but the last (the final in-place ReLU), so the
        returned tensor is not overwritten; the state-dict keys are those of :meth:`forward`.
        """
        return self.blocks[:-1](f_hi)


class TextProjection(nn.Module):
    """``T = ReLU(Linear(D_text -> E)(E_m))``: class-prompt embeddings into the visual space."""

    def __init__(self, text_dim: int, embed_dim: int = 256) -> None:
        super().__init__()
        _check_positive("TextProjection", text_dim=text_dim, embed_dim=embed_dim)
        self.linear = nn.Linear(text_dim, embed_dim)

    def forward(self, text: Tensor) -> Tensor:
        """Map ``(..., C, D_text)`` to ``(..., C, embed_dim)``."""
        return F.relu(self.linear(text))


class GlobalToken(nn.Module):
    """``g = Conv1x1(D_hi -> E)(AvgPool(ReLU(GroupNorm(8, D_hi)(F_hi))))``, one token per image.

    Raises:
        ConfigError: if ``in_channels`` is not divisible by ``groups``.
    """

    def __init__(self, in_channels: int, embed_dim: int = 256, groups: int = 8) -> None:
        super().__init__()
        _check_positive("GlobalToken", in_channels=in_channels, embed_dim=embed_dim, groups=groups)
        if in_channels % groups:
            raise ConfigError(
                f"GlobalToken: GroupNorm needs in_channels divisible by groups={groups}, found "
                f"in_channels={in_channels}."
            )
        self.norm = nn.GroupNorm(groups, in_channels)
        self.proj = nn.Conv2d(in_channels, embed_dim, 1)

    def forward(self, f_hi: Tensor) -> Tensor:
        """Map ``(B, D_hi, h, w)`` to the global token ``(B, 1, embed_dim)``."""
        x = F.adaptive_avg_pool2d(F.relu(self.norm(f_hi)), 1)  # (B, D_hi, 1, 1)
        return self.proj(x).flatten(1).unsqueeze(1)  # (B, 1, E)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``num_heads`` heads of ``head_dim`` channels each.

    Unlike :class:`torch.nn.MultiheadAttention`, the head width is independent of the model width
    (TCSA-UDA: 3 heads with ``d_k = d_v = 256`` on a 256-wide model), so the projections map
    ``E -> num_heads * head_dim`` and the output projection ``num_heads * head_dim -> E``.

    Two variants (docs/method.md, Paper vs released fidelity):

    * ``activation=False, dropout=0`` (paper): ``out_proj(concat_h softmax(q_h k_h^T / sqrt(d)) v_h)``.
    * ``activation=True, dropout=0.1`` (the authors' released code): ReLU on the projected
      ``q``, ``k``, ``v``; dropout on the attention weights; ``ReLU(dropout(out_proj(.)))`` at the end.
      :meth:`reset_parameters_released` gives the release's initialisation
      (``q/k/v`` weights ``N(0, sqrt(2 / (E + d)))``, output weight Xavier-normal, biases PyTorch's default).

    Args:
        embed_dim: model width ``E``.
        num_heads: number of heads.
        head_dim: width ``d`` of each head.
        activation: apply the ReLUs of the released code.
        dropout: dropout probability on the attention weights and on the output projection.

    Raises:
        ConfigError: a non-positive width or head count, or ``dropout`` outside ``[0, 1)``.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 3,
        head_dim: int = 256,
        activation: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive("MultiHeadAttention", embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim)
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"MultiHeadAttention 'dropout': expected a probability in [0, 1), found {dropout!r}.")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.activation = bool(activation)
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner)
        self.k_proj = nn.Linear(embed_dim, inner)
        self.v_proj = nn.Linear(embed_dim, inner)
        self.out_proj = nn.Linear(inner, embed_dim)
        self.attn_dropout = nn.Dropout(dropout)
        self.out_dropout = nn.Dropout(dropout)

    def reset_parameters_released(self) -> None:
        """The released code's initialisation of the four projections (see the class docstring)."""
        embed_dim = self.q_proj.in_features
        std = math.sqrt(2.0 / (embed_dim + self.head_dim))  # 0.0625 for E = d = 256
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(proj.weight, 0.0, std)
        nn.init.xavier_normal_(self.out_proj.weight)

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Attend from ``query`` ``(B, Lq, E)`` to ``key``/``value`` ``(B, Lk, E)``; returns ``(B, Lq, E)``."""
        b, lq, _ = query.shape
        lk = key.shape[1]
        q = self.q_proj(query).view(b, lq, self.num_heads, self.head_dim)  # (B, Lq, h, d)
        k = self.k_proj(key).view(b, lk, self.num_heads, self.head_dim)  # (B, Lk, h, d)
        v = self.v_proj(value).view(b, lk, self.num_heads, self.head_dim)  # (B, Lk, h, d)
        if self.activation:
            q, k, v = F.relu(q), F.relu(k), F.relu(v)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, h, L, d)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)  # (B, h, Lq, Lk)
        attn = self.attn_dropout(attn)
        out = (attn @ v).transpose(1, 2).reshape(b, lq, self.num_heads * self.head_dim)  # (B, Lq, h*d)
        out = self.out_dropout(self.out_proj(out))  # (B, Lq, E)
        return F.relu(out) if self.activation else out


class FusionTransformer(nn.Module):
    """Fuse the class text tokens with the image's global token into class queries ``Z``.

    ``Q0 = ReLU(Linear(2E -> E)([T ; g]))``; ``Q1 = LN(Q0 + MHA(Q0, g, g))``;
    ``Z = LN(Q1 + MLP(Q1))`` with ``MLP = Linear(E -> mlp_dim), GELU, Linear(mlp_dim -> E)``.

    With a single key token (``g``) every attention weight is 1 (in eval mode), so the attention
    output is ``out_proj(v_proj(g))`` for every class (``ReLU(out_proj(ReLU(v_proj(g))))`` in the
    released variant); it is kept as the paper specifies it.

    Args:
        embed_dim: width ``E``.
        num_heads: attention heads (each ``head_dim`` wide).
        head_dim: width of each head.
        mlp_dim: hidden width of the MLP.
        variant: ``paper`` (plain attention) or ``released`` (the release's ReLUs, 0.1 dropouts and
            projection initialisation, :class:`MultiHeadAttention`).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 3,
        head_dim: int = 256,
        mlp_dim: int = 512,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        _check_positive("FusionTransformer", embed_dim=embed_dim, mlp_dim=mlp_dim)
        if variant not in ("paper", "released"):
            raise ConfigError(f"FusionTransformer 'variant': expected 'paper' or 'released', found {variant!r}.")
        released = variant == "released"
        self.query = nn.Linear(2 * embed_dim, embed_dim)
        self.attn = MultiHeadAttention(
            embed_dim, num_heads, head_dim, activation=released, dropout=RELEASED_ATTENTION_DROPOUT if released else 0.0
        )
        if released:
            self.attn.reset_parameters_released()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, embed_dim))
        self.norm2 = nn.LayerNorm(embed_dim)

    def forward(self, text: Tensor, token: Tensor) -> Tensor:
        """Fuse projected text ``(B, C, E)`` with the global token ``(B, 1, E)``; returns ``Z`` ``(B, C, E)``."""
        g = token.expand(-1, text.shape[1], -1)  # (B, C, E), g broadcast over classes
        q0 = F.relu(self.query(torch.cat([text, g], dim=-1)))  # (B, C, E)
        q1 = self.norm1(q0 + self.attn(q0, token, token))  # (B, C, E)
        return self.norm2(q1 + self.mlp(q1))  # (B, C, E)


class DynamicController(nn.Module):
    """Generate a per-image 1x1 convolution from the class queries and apply it to ``F_vis``.

    ``z = mean_c Z``; ``MLP(E -> hidden -> out * in + out)`` gives a weight ``(out, in)`` and a bias
    ``(out,)`` per image, applied to the whole batch in one ``einsum`` (no loop over images).

    Args:
        embed_dim: width of ``Z`` (256).
        in_channels: channels of ``F_vis`` (256).
        out_channels: channels of the generated convolution's output (128).
        hidden_dim: hidden width of the controller MLP (512).
    """

    def __init__(
        self, embed_dim: int = 256, in_channels: int = 256, out_channels: int = 128, hidden_dim: int = 512
    ) -> None:
        super().__init__()
        _check_positive(
            "DynamicController",
            embed_dim=embed_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_dim=hidden_dim,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_channels * in_channels + out_channels),
        )

    def generate(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Per-image convolution parameters from the class queries.

        Args:
            z: class queries ``Z`` ``(B, C, E)``.

        Returns:
            ``(weight, bias)`` of shapes ``(B, out, in)`` and ``(B, out)``.
        """
        params = self.mlp(z.mean(dim=1))  # (B, out * in + out)
        n_w = self.out_channels * self.in_channels
        weight = params[:, :n_w].view(-1, self.out_channels, self.in_channels)  # (B, out, in)
        bias = params[:, n_w:]  # (B, out)
        return weight, bias

    def forward(self, z: Tensor, f_vis: Tensor) -> Tensor:
        """Apply each image's generated 1x1 conv to its ``F_vis`` ``(B, in, h, w)``; returns ``(B, out, h, w)``."""
        weight, bias = self.generate(z)  # (B, out, in), (B, out)
        return torch.einsum("boi,bihw->bohw", weight, f_vis) + bias[:, :, None, None]  # (B, out, h, w)


class SegmentationHead(nn.Module):
    """``Conv1x1(in -> hidden), ReLU, Conv1x1(hidden -> C)``: the main logits ``P_main``."""

    def __init__(self, in_channels: int, num_classes: int, hidden_channels: int = 64) -> None:
        super().__init__()
        _check_positive(
            "SegmentationHead", in_channels=in_channels, num_classes=num_classes, hidden_channels=hidden_channels
        )
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, in, h, w)`` to logits ``(B, C, h, w)``."""
        return self.layers(x)
