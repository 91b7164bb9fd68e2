"""Registry of segmentation networks, chosen by name in the configuration.

``deeplabv2_r101`` is the paper configuration (DeepLab-v2 ResNet-101); ``light`` has the same
heads on a ResNet-18-like backbone (base width 32 by default) for CPU runs and tests. A new
network registers a builder with :func:`register_segmenter`; the tests loop over
:func:`available_models`, so it is tested automatically.

Every builder takes ``variant`` (``paper`` or ``released``: the authors' code-exact forward pass,
docs/method.md, Paper vs released fidelity).

Example::

    model = build_segmenter("light", num_classes=5, text_dim=384, base_width=16)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcsa_uda.errors import ConfigError
from tcsa_uda.models.backbones import deeplabv2_resnet101, light_resnet, load_backbone_weights
from tcsa_uda.models.segmenter import TCSASegmenter

__all__ = ["available_models", "build_segmenter", "register_segmenter"]

SegmenterBuilder = Callable[..., TCSASegmenter]

_REGISTRY: dict[str, SegmenterBuilder] = {}


def register_segmenter(name: str) -> Callable[[SegmenterBuilder], SegmenterBuilder]:
    """Register ``builder(num_classes, text_dim, **options) -> TCSASegmenter`` under ``name``.

    Raises:
        ConfigError: if ``name`` is already registered.
    """

    def decorator(builder: SegmenterBuilder) -> SegmenterBuilder:
        if name in _REGISTRY:
            raise ConfigError(f"Segmenter '{name}' is already registered.")
        _REGISTRY[name] = builder
        return builder

    return decorator


@register_segmenter("deeplabv2_r101")
def _deeplabv2_r101(num_classes: int, text_dim: int, variant: str = "paper") -> TCSASegmenter:
    """The paper configuration: DeepLab-v2 ResNet-101 with the TCSA heads (``variant``: paper or released)."""
    return TCSASegmenter(deeplabv2_resnet101(), num_classes, text_dim, variant=variant)


@register_segmenter("light")
def _light(num_classes: int, text_dim: int, base_width: int = 32, variant: str = "paper") -> TCSASegmenter:
    """ResNet-18-like backbone (channels ``base_width * (1, 2, 4, 8)``) with the TCSA heads."""
    return TCSASegmenter(light_resnet(base_width), num_classes, text_dim, variant=variant)


def available_models() -> list[str]:
    """Names accepted by :func:`build_segmenter`, sorted."""
    return sorted(_REGISTRY)


def build_segmenter(
    name: str, num_classes: int, text_dim: int, weights: Path | None = None, **kwargs: Any
) -> TCSASegmenter:
    """Build a registered segmentation network, optionally loading backbone weights.

    Args:
        name: a name from :func:`available_models`.
        num_classes: number of classes ``C`` including background (>= 2).
        text_dim: width of the class-prompt embeddings (>= 1).
        weights: optional local file with a backbone state_dict (see
            :func:`~tcsa_uda.models.backbones.load_backbone_weights`); ``None`` keeps the random init.
        **kwargs: options of the chosen network (both: ``variant`` ``paper``/``released``, see
            :data:`~tcsa_uda.models.segmenter.MODEL_VARIANTS`; ``light``: ``base_width``).

    Returns:
        The network, in train mode.

    Raises:
        ConfigError: for an unknown name or option (the valid ones are listed), invalid sizes, or
            a weights file that does not match the backbone.
        MissingPathError: if ``weights`` does not exist.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"Unknown model '{name}': expected one of {', '.join(available_models())}.")
    builder = _REGISTRY[name]
    options = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "text_dim")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        valid = ", ".join(options) if options else "none"
        raise ConfigError(f"Model '{name}': unknown option(s) {', '.join(unknown)}; valid options: {valid}.")
    model = builder(num_classes, text_dim, **kwargs)
    if weights is not None:
        load_backbone_weights(model.backbone, weights)
    return model
