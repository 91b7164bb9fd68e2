"""The TCSA-UDA segmentation network (arXiv 2511.05782, section Architecture).

A dilated ResNet gives layer3 and layer4 maps at output stride 8. The auxiliary ASPP classifier on
layer3 gives ``P_aux``. The main branch embeds ``F_hi`` (layer4) into ``F_vis``, fuses the class text
embeddings of the image's own modality with a global image token, and turns the fused class queries
into a per-image 1x1 convolution applied to ``F_vis`` before a small segmentation head gives
``P_main``. Logits stay at feature resolution; :func:`upsample_logits` brings them to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch.nn.functional as F
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError, TcsaUdaError
from tcsa_uda.models.aspp import ASPPClassifier
from tcsa_uda.models.backbones import DilatedResNet
from tcsa_uda.models.tcsa_head import (
    DynamicController,
    FusionTransformer,
    GlobalToken,
    SegmentationHead,
    TextProjection,
    VisualEmbeddingHead,
)

__all__ = [
    "MODEL_VARIANTS",
    "PARAMETER_GROUPS",
    "SegmenterOutput",
    "TCSASegmenter",
    "parameter_groups",
    "upsample_logits",
]

MODEL_VARIANTS: Final[tuple[str, ...]] = ("paper", "released")
"""``paper``: the network as the paper describes it. ``released``: code-exact to the authors' release
(attention ReLUs and dropouts, the release's initialisation of the attention projections and of the
aux ASPP and embedding heads); same modules and state-dict keys (docs/method.md, Paper vs released fidelity)."""

#: Child modules of :class:`TCSASegmenter` in each optimiser group (docs/method.md, Training):
#: ``backbone`` SGD lr x1, ``heads`` SGD lr x10, ``fusion`` AdamW.
PARAMETER_GROUPS: dict[str, tuple[str, ...]] = {
    "backbone": ("backbone",),
    "heads": ("aux_head", "embed_head"),
    "fusion": ("text_proj", "global_token", "fusion", "controller", "seg_head"),
}


@dataclass
class SegmenterOutput:
    """What one forward pass of :class:`TCSASegmenter` returns (all at feature resolution h x w).

    Attributes:
        main: main logits ``P_main`` ``(B, C, h, w)``.
        aux: auxiliary (layer3 ASPP) logits ``P_aux`` ``(B, C, h, w)``.
        f_hi: layer4 features ``(B, D_hi, h, w)`` (prototype alignment).
        f_vis: visual embeddings ``(B, E, h, w)`` (vision-language loss).
        text: projected text ``T`` of each image's modality ``(B, C, E)``.
        f_vis_pre: the visual embedding before the embedding head's final ReLU ``(B, E, h, w)``
            (``f_vis = ReLU(f_vis_pre)``); None when the producer does not expose it.
    """

    main: Tensor
    aux: Tensor
    f_hi: Tensor
    f_vis: Tensor
    text: Tensor
    f_vis_pre: Tensor | None = None


def upsample_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinearly upsample ``(B, C, h, w)`` logits to ``(B, C, H, W)`` with ``align_corners=True``."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


class TCSASegmenter(nn.Module):
    """Text-conditioned segmentation network of TCSA-UDA.

    Args:
        backbone: a :class:`DilatedResNet` (its ``mid_channels``/``out_channels`` size the heads).
        num_classes: number of classes ``C`` including background (>= 2).
        text_dim: width ``D_text`` of the class-prompt embeddings (>= 1).
        embed_dim: width ``E`` of ``F_vis``, ``T``, ``g`` and ``Z`` (paper: 256).
        embed_channels: per-block widths of the visual embedding head; default halves from
            ``D_hi`` (2048 -> 1024 -> 512 -> 256 -> 128 -> 256 for ResNet-101).
        num_heads: attention heads of the fusion transformer (paper: 3, each ``embed_dim`` wide).
        dynamic_channels: output channels of the generated 1x1 conv (paper: 128).
        head_channels: hidden channels of the segmentation head (paper: 64).
        variant: ``paper`` or ``released`` (:data:`MODEL_VARIANTS`); checkpoints record it in
            ``model_kwargs`` so the same forward pass is rebuilt.

    Attributes:
        hi_channels: ``D_hi``, channels of ``f_hi``.
        embed_dim: ``E``, channels of ``f_vis`` and width of ``text``.

    Raises:
        ConfigError: if ``num_classes < 2``, ``text_dim < 1``, an unknown ``variant`` (or a head
            width is invalid).
    """

    def __init__(
        self,
        backbone: DilatedResNet,
        num_classes: int,
        text_dim: int,
        embed_dim: int = 256,
        embed_channels: list[int] | None = None,
        num_heads: int = 3,
        dynamic_channels: int = 128,
        head_channels: int = 64,
        variant: str = "paper",
    ) -> None:
        super().__init__()
        if variant not in MODEL_VARIANTS:
            raise ConfigError(
                f"TCSASegmenter 'variant': expected one of {', '.join(MODEL_VARIANTS)}, found {variant!r}."
            )
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ConfigError(
                f"TCSASegmenter 'num_classes': expected an integer >= 2 (background included), found {num_classes!r}."
            )
        if not isinstance(text_dim, int) or isinstance(text_dim, bool) or text_dim < 1:
            raise ConfigError(f"TCSASegmenter 'text_dim': expected an integer >= 1, found {text_dim!r}.")
        self.num_classes = num_classes
        self.text_dim = text_dim
        self.embed_dim = embed_dim
        self.variant = variant
        self.hi_channels = int(backbone.out_channels)
        self.in_channels = int(backbone.in_channels)
        self.backbone = backbone
        self.aux_head = ASPPClassifier(int(backbone.mid_channels), num_classes)
        self.embed_head = VisualEmbeddingHead(self.hi_channels, embed_dim, embed_channels)
        self.text_proj = TextProjection(text_dim, embed_dim)
        self.global_token = GlobalToken(self.hi_channels, embed_dim)
        self.fusion = FusionTransformer(
            embed_dim, num_heads=num_heads, head_dim=embed_dim, mlp_dim=2 * embed_dim, variant=variant
        )
        self.controller = DynamicController(embed_dim, embed_dim, dynamic_channels, hidden_dim=2 * embed_dim)
        self.seg_head = SegmentationHead(dynamic_channels, num_classes, head_channels)
        if variant == "released":
            self._reset_heads_released()

    def _reset_heads_released(self) -> None:
        """The release's initialisation of the aux ASPP and the embedding head (DeepLab-v2 style).

        Every convolution weight ``N(0, 0.01)``; the ASPP biases keep PyTorch's default uniform
        initialisation (the release does not zero them); BatchNorm weight 1, bias 0 (PyTorch's default).
        """
        for conv in self.aux_head.branches:
            if isinstance(conv, nn.Conv2d):
                conv.reset_parameters()  # PyTorch default, biases included
                nn.init.normal_(conv.weight, 0.0, 0.01)
        for m in self.embed_head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def _check_text(self, text: Tensor, batch: int | None) -> None:
        expected = f"(C, D_text) or (B, C, D_text) with C={self.num_classes}, D_text={self.text_dim}"
        if batch is not None:
            expected += f", B={batch}"
        ok = text.dim() in (2, 3) and tuple(text.shape[-2:]) == (self.num_classes, self.text_dim)
        if ok and text.dim() == 3 and batch is not None:
            ok = text.shape[0] == batch
        if not ok:
            raise ConfigError(f"TCSASegmenter text embeddings: expected shape {expected}, found {tuple(text.shape)}.")

    def project_text(self, text: Tensor) -> Tensor:
        """Project class-prompt embeddings: ``(C, D_text) -> T (C, E)`` (or ``(B, C, D_text) -> (B, C, E)``).

        This is the ``T`` the vision-language covariance loss compares prototypes with.

        Raises:
            ConfigError: if ``text`` does not have ``C`` rows of width ``D_text``.
        """
        self._check_text(text, None)
        return self.text_proj(text)

    def forward(self, x: Tensor, text: Tensor) -> SegmenterOutput:
        """Segment images, each fused with the text embeddings of its own modality.

        Args:
            x: images ``(B, 3, H, W)``.
            text: class-prompt embeddings ``(C, D_text)`` shared by the batch, or ``(B, C, D_text)``
                one set per image.

        Returns:
            :class:`SegmenterOutput` with logits at feature resolution (``h = 33`` for ``H = 256``).

        Raises:
            ConfigError: if ``x`` or ``text`` has the wrong shape.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"TCSASegmenter input: expected images of shape (B, {self.in_channels}, H, W), found {tuple(x.shape)}."
            )
        b = x.shape[0]
        self._check_text(text, b)
        if text.dim() == 2:
            text = text.unsqueeze(0).expand(b, -1, -1)  # (B, C, D_text)
        f_mid, f_hi = self.backbone(x)  # (B, D_mid, h, w), (B, D_hi, h, w)
        aux = self.aux_head(f_mid)  # (B, C, h, w)
        f_vis_pre = self.embed_head.pre_activation(f_hi)  # (B, E, h, w), before the final ReLU
        f_vis = F.relu(f_vis_pre)  # (B, E, h, w): embed_head(f_hi), the pre-activation map kept intact
        t = self.text_proj(text)  # (B, C, E)
        g = self.global_token(f_hi)  # (B, 1, E)
        z = self.fusion(t, g)  # (B, C, E)
        dyn = self.controller(z, f_vis)  # (B, dynamic_channels, h, w)
        main = self.seg_head(dyn)  # (B, C, h, w)
        return SegmenterOutput(main=main, aux=aux, f_hi=f_hi, f_vis=f_vis, text=t, f_vis_pre=f_vis_pre)


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split the trainable parameters of a :class:`TCSASegmenter` into its three optimiser groups.

    Args:
        model: the segmenter, or a ``DataParallel``/``DistributedDataParallel`` wrapper of it.

    Returns:
        ``{"backbone": [...], "heads": [...], "fusion": [...]}``: backbone (SGD, lr x1), the aux
        ASPP and visual embedding heads (SGD, lr x10), and text projection, global token, fusion
        transformer, controller and segmentation head (AdamW). Frozen parameters (the backbone's
        BatchNorm affine parameters) are left out; every trainable parameter is in exactly one group.

    Raises:
        TcsaUdaError: if the model has a child module with trainable parameters that no group names.
    """
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    owner = {child: group for group, children in PARAMETER_GROUPS.items() for child in children}
    groups: dict[str, list[nn.Parameter]] = {group: [] for group in PARAMETER_GROUPS}
    for name, child in model.named_children():
        params = [p for p in child.parameters() if p.requires_grad]
        if name not in owner:
            if params:
                raise TcsaUdaError(
                    f"parameter_groups: module '{name}' of {type(model).__name__} has trainable parameters but is in "
                    f"no group; expected children {sorted(owner)}."
                )
            continue
        groups[owner[name]].extend(params)
    if any(p.requires_grad for p in model.parameters(recurse=False)):
        raise TcsaUdaError(f"parameter_groups: {type(model).__name__} has direct parameters that are in no group.")
    return groups
