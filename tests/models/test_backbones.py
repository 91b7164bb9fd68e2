"""Tests of the dilated ResNet backbones and backbone weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.models.backbones import (
    BasicBlock,
    Bottleneck,
    DilatedResNet,
    deeplabv2_resnet101,
    light_resnet,
    load_backbone_weights,
)


def _bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _basic(block: nn.Module) -> BasicBlock:
    assert isinstance(block, BasicBlock), type(block).__name__
    return block


def _bottleneck(block: nn.Module) -> Bottleneck:
    assert isinstance(block, Bottleneck), type(block).__name__
    return block


def _running_mean(bn: nn.BatchNorm2d) -> Tensor:
    assert bn.running_mean is not None
    return bn.running_mean


def test_light_backbone_256_gives_33x33_with_expected_channels() -> None:
    torch.manual_seed(0)
    net = light_resnet()  # base width 32
    assert (net.mid_channels, net.out_channels) == (128, 256)
    assert [_basic(net.layer1[0]).conv1.out_channels, _basic(net.layer2[0]).conv1.out_channels] == [32, 64]
    f_mid, f_hi = net(torch.randn(1, 3, 256, 256))
    assert tuple(f_mid.shape) == (1, 128, 33, 33)
    assert tuple(f_hi.shape) == (1, 256, 33, 33)


@pytest.mark.parametrize(("size", "expected"), [(65, 9), (64, 9), (33, 5)])
def test_light_backbone_output_stride_8(size: int, expected: int) -> None:
    net = light_resnet(base_width=8)
    _, f_hi = net(torch.randn(1, 3, size, size))
    assert tuple(f_hi.shape[-2:]) == (expected, expected)


def test_dilation_scheme_and_maxpool_ceil_mode() -> None:
    net = light_resnet(base_width=8)
    assert net.maxpool.ceil_mode is True
    assert net.conv1.kernel_size == (7, 7) and net.conv1.stride == (2, 2)
    assert _basic(net.layer2[0]).conv1.stride == (2, 2)
    for layer, dilation in ((net.layer1, 1), (net.layer2, 1), (net.layer3, 2), (net.layer4, 4)):
        for block in map(_basic, layer):
            assert block.conv1.dilation == (dilation, dilation)
            assert block.conv2.dilation == (dilation, dilation)
    assert _basic(net.layer3[0]).conv1.stride == (1, 1) and _basic(net.layer4[0]).conv1.stride == (1, 1)


def test_resnet101_structure() -> None:
    net = deeplabv2_resnet101()
    assert [len(net.layer1), len(net.layer2), len(net.layer3), len(net.layer4)] == [3, 4, 23, 3]
    assert all(isinstance(b, Bottleneck) for b in net.layer3)
    last_blocks = [_bottleneck(layer[-1]) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    assert [b.conv3.out_channels for b in last_blocks] == [256, 512, 1024, 2048]
    assert (net.mid_channels, net.out_channels) == (1024, 2048)
    assert _bottleneck(net.layer3[5]).conv2.dilation == (2, 2) and _bottleneck(net.layer4[0]).conv2.dilation == (4, 4)
    assert _bottleneck(net.layer2[0]).conv1.stride == (2, 2)  # DeepLab-v2: stride on the first 1x1 conv
    assert all(not p.requires_grad for bn in _bn_layers(net) for p in bn.parameters())


def test_bn_affine_frozen_but_running_stats_update_in_train_mode() -> None:
    torch.manual_seed(0)
    net = light_resnet(base_width=8)
    net.train()
    bns = _bn_layers(net)
    assert bns and all(bn.training for bn in bns)
    assert all(not bn.weight.requires_grad and not bn.bias.requires_grad for bn in bns)
    before = [_running_mean(bn).clone() for bn in bns]
    f_mid, f_hi = net(torch.randn(2, 3, 40, 40))
    (f_mid.mean() + f_hi.mean()).backward()
    changed = [not torch.equal(b, _running_mean(bn)) for b, bn in zip(before, bns, strict=True)]
    assert all(changed)
    assert all(bn.weight.grad is None and bn.bias.grad is None for bn in bns)
    assert net.conv1.weight.grad is not None and net.conv1.weight.grad.abs().sum() > 0


def test_bn_running_stats_fixed_in_eval_mode() -> None:
    net = light_resnet(base_width=8).eval()
    before = _running_mean(net.bn1).clone()
    net(torch.randn(1, 3, 40, 40))
    assert torch.equal(before, _running_mean(net.bn1))


def test_weights_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    src = light_resnet(base_width=8)
    src(torch.randn(2, 3, 40, 40))  # move running stats away from their defaults
    path = tmp_path / "backbone.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    dst = light_resnet(base_width=8)
    assert not torch.equal(dst.conv1.weight, src.conv1.weight)
    load_backbone_weights(dst, path)
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value), key
    assert not dst.bn1.weight.requires_grad  # still frozen after loading


def test_weights_without_num_batches_tracked_load(tmp_path) -> None:
    src = light_resnet(base_width=8)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    dst = light_resnet(base_width=8)
    load_backbone_weights(dst, path)
    assert torch.equal(_basic(dst.layer4[1]).conv2.weight, _basic(src.layer4[1]).conv2.weight)


def test_weights_missing_file(tmp_path) -> None:
    with pytest.raises(MissingPathError, match=r"nope.pt"):
        load_backbone_weights(light_resnet(base_width=8), tmp_path / "nope.pt")


def test_weights_key_errors_are_listed(tmp_path) -> None:
    state = light_resnet(base_width=8).state_dict()
    del state["layer1.0.conv1.weight"]
    state["fc.weight"] = torch.zeros(3, 3)
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad_weights.pt"
    torch.save(state, path)
    with pytest.raises(ConfigError) as info:
        load_backbone_weights(light_resnet(base_width=8), path)
    msg = str(info.value)
    assert "bad_weights.pt" in msg
    assert "1 missing key(s): layer1.0.conv1.weight" in msg
    assert "1 unexpected key(s): fc.weight" in msg
    assert "conv1.weight (expected (8, 3, 7, 7), found (8, 3, 3, 3))" in msg


def test_weights_wrong_content(tmp_path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ConfigError, match=r"list.pt.*mapping of parameter names to tensors, found list"):
        load_backbone_weights(light_resnet(base_width=8), path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk.pt"):
        load_backbone_weights(light_resnet(base_width=8), junk)


@pytest.mark.parametrize("base_width", [0, -4, 2.5, True])
def test_light_rejects_bad_base_width(base_width) -> None:
    with pytest.raises(ConfigError, match="base_width"):
        light_resnet(base_width=base_width)


def test_rejects_bad_layer_counts() -> None:
    with pytest.raises(ConfigError, match="layers"):
        DilatedResNet(BasicBlock, (2, 2, 2))
    with pytest.raises(ConfigError, match="layers"):
        DilatedResNet(BasicBlock, (2, 0, 2, 2))
