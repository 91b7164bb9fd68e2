"""Dilated ResNet backbones with output stride 8 (DeepLab-v2).

Two backbones share one layout, so that every head adapts to them through two channel counts:

* :func:`deeplabv2_resnet101`: the paper's DeepLab-v2 ResNet-101 (Chen et al., TPAMI 2018;
  TCSA-UDA, arXiv 2511.05782, section Architecture). Bottleneck blocks ``[3, 4, 23, 3]``,
  channels 256/512/1024/2048.
* :func:`light_resnet`: a ResNet-18-like variant with BasicBlocks ``[2, 2, 2, 2]`` and a base width
  (default 32 -> channels 32/64/128/256) that trains in minutes on a CPU.

Both use the DeepLab-v2 stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool with ``ceil_mode=True``),
stride 2 in layer2, and dilations 2 and 4 (stride 1) in layer3 and layer4: a 256x256 input gives
33x33 maps. As in DeepLab-v2, the BatchNorm affine parameters are frozen (``requires_grad`` False)
while the BatchNorm layers stay in train mode, so their running statistics keep updating.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0`` ...), so a converted ImageNet state_dict without its ``fc`` keys loads
with :func:`load_backbone_weights`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError, MissingPathError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DilatedResNet",
    "deeplabv2_resnet101",
    "freeze_bn_affine",
    "light_resnet",
    "load_backbone_weights",
]

#: Dilation of layer1..layer4 (layer3 and layer4 trade their stride for dilation: output stride 8).
_DILATIONS = (1, 1, 2, 4)
#: Stride of layer1..layer4.
_STRIDES = (1, 2, 1, 1)


def freeze_bn_affine(module: nn.Module) -> None:
    """Freeze the affine parameters of every BatchNorm layer in ``module`` (DeepLab-v2).

    The layers stay in whatever mode the module is in; in train mode their running mean and
    variance still update.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block).

    The stride sits on the first convolution; both convolutions use ``dilation``.
    """

    expansion = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, planes, H / stride, W / stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (dilated) -> 1x1 bottleneck with a residual connection (ResNet-50/101 block).

    As in the original (Caffe) DeepLab-v2 ResNet, the stride sits on the first 1x1 convolution.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, C_in, H, W)`` to ``(B, 4 * planes, H / stride, W / stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet with the DeepLab-v2 stem and dilated layer3/layer4 (output stride 8).

    Args:
        block: residual block class (:class:`BasicBlock` or :class:`Bottleneck`).
        layers: number of blocks in layer1..layer4.
        base_width: planes of layer1; layer ``i`` has ``base_width * 2**i`` planes.
        stem_channels: output channels of the 7x7 stem convolution.
        in_channels: image channels.

    Attributes:
        mid_channels: channels of the layer3 output (input of the auxiliary classifier).
        out_channels: channels of the layer4 output (``F_hi``).

    Raises:
        ConfigError: if a layer count or width is not a positive integer.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        base_width: int = 64,
        stem_channels: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ConfigError(f"DilatedResNet 'layers': expected four positive block counts, found {list(layers)}.")
        for name, value in (("base_width", base_width), ("stem_channels", stem_channels), ("in_channels", in_channels)):
            if value < 1:
                raise ConfigError(f"DilatedResNet '{name}': expected a positive integer, found {value}.")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)  # ceil: 256 -> 65 -> 33
        width = stem_channels
        stages = []
        for i, (n_blocks, stride, dilation) in enumerate(zip(layers, _STRIDES, _DILATIONS, strict=True)):
            stage, width = _make_layer(block, width, base_width * 2**i, int(n_blocks), stride, dilation)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.mid_channels = base_width * 4 * block.expansion
        self.out_channels = width
        self._init_weights()
        freeze_bn_affine(self)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                # gamma stays 1: it is frozen, so a zero-initialised gamma would never recover.
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Extract the layer3 and layer4 feature maps.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            ``(f_mid, f_hi)``: layer3 output ``(B, mid_channels, h, w)`` and layer4 output
            ``(B, out_channels, h, w)`` with ``h ~ H / 8`` (33 for H = 256).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, stem, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (B, 2 * base * e, h, w), stride 8
        f_mid = self.layer3(x)  # (B, mid_channels, h, w), dilation 2
        f_hi = self.layer4(f_mid)  # (B, out_channels, h, w), dilation 4
        return f_mid, f_hi


def _make_layer(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, planes: int, n_blocks: int, stride: int, dilation: int
) -> tuple[nn.Sequential, int]:
    """Build one ResNet stage; every block of the stage uses ``dilation`` (DeepLab-v2)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    blocks: list[nn.Module] = [block(in_channels, planes, stride, dilation, downsample)]
    blocks += [block(out_channels, planes, 1, dilation) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks), out_channels


def deeplabv2_resnet101(in_channels: int = 3) -> DilatedResNet:
    """DeepLab-v2 ResNet-101: Bottleneck ``[3, 4, 23, 3]``, channels 256/512/1024/2048, random init."""
    return DilatedResNet(Bottleneck, (3, 4, 23, 3), base_width=64, stem_channels=64, in_channels=in_channels)


def light_resnet(base_width: int = 32, in_channels: int = 3) -> DilatedResNet:
    """ResNet-18-like backbone: BasicBlock ``[2, 2, 2, 2]``, channels ``base_width * (1, 2, 4, 8)``.

    Raises:
        ConfigError: if ``base_width`` is not a positive integer.
    """
    if not isinstance(base_width, int) or isinstance(base_width, bool) or base_width < 1:
        raise ConfigError(f"light model 'base_width': expected a positive integer, found {base_width!r}.")
    return DilatedResNet(
        BasicBlock, (2, 2, 2, 2), base_width=base_width, stem_channels=base_width, in_channels=in_channels
    )


def _describe(keys: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a user-supplied backbone state_dict from a local file, matched key by key.

    The file holds a mapping from parameter/buffer names (``conv1.weight``, ``layer1.0.bn1.running_mean``
    ...) to tensors, as written by ``torch.save(backbone.state_dict(), path)``. Keys must match
    exactly, except that ``num_batches_tracked`` buffers may be absent. The frozen state of the
    BatchNorm affine parameters is kept.

    Args:
        backbone: the backbone module to fill in place.
        path: the ``.pt``/``.pth`` file.

    Raises:
        MissingPathError: if ``path`` does not exist.
        ConfigError: if the file cannot be read as a state_dict, or if keys are missing,
            unexpected or of the wrong shape (all are listed, with the file name).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Backbone weights file '{path}' does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(
            f"Backbone weights file '{path}': expected a torch state_dict, could not read it ({exc})."
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ConfigError(
            f"Backbone weights file '{path}': expected a mapping of parameter names to tensors, "
            f"found {type(state).__name__}."
        )
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)})"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_describe(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_describe(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_describe(mismatched)}")
    if problems:
        raise ConfigError(
            f"Backbone weights file '{path}' does not match the {type(backbone).__name__} backbone: "
            + "; ".join(problems)
            + "."
        )
    backbone.load_state_dict(dict(state), strict=False)
