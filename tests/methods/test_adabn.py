"""Tests of AdaBN (tcsa_uda.methods.adabn): BatchNorm statistics re-estimated on target batches."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tcsa_uda.errors import ConfigError
from tcsa_uda.methods import build_method
from tcsa_uda.methods.adabn import recompute_batchnorm_statistics


def test_cumulative_statistics_of_a_single_layer_are_the_batch_statistics():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    bn.running_mean.fill_(5.0)
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(4, 3, 5, 5, generator=gen) * (i + 1) + i} for i in range(3)]
    bn.eval()
    used = recompute_batchnorm_statistics(bn, batches, bn)
    assert used == 3 and bn.momentum == 0.1 and not bn.training  # momentum and mode restored
    means = torch.stack([b["image"].mean(dim=(0, 2, 3)) for b in batches])
    vars_ = torch.stack([b["image"].transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for b in batches])
    torch.testing.assert_close(bn.running_mean, means.mean(dim=0))  # cumulative average of the batch means
    torch.testing.assert_close(bn.running_var, vars_.mean(dim=0))
    assert int(bn.num_batches_tracked) == 3
    assert recompute_batchnorm_statistics(bn, batches, bn, limit=1) == 1
    torch.testing.assert_close(bn.running_mean, means[0])
    with pytest.raises(ConfigError, match="no target batch"):
        recompute_batchnorm_statistics(bn, [], bn)


@pytest.mark.slow
def test_adabn_trains_source_only_and_sets_every_batchnorm_to_the_target_statistics(make_context, make_batches):
    ctx = make_context("light", 3, base_width=8)
    method = build_method("adabn", ctx)
    src, tgt = make_batches(2, 48, 3, seed=2)
    out = method.forward(src, tgt)
    assert out.target is None and out.main_t is None  # target images are not forwarded while training
    seg = ctx.segmenter
    weights = {k: v.clone() for k, v in seg.state_dict().items() if "running" not in k and "num_batches" not in k}
    # the inputs of every BatchNorm layer on the target batch, in train mode, from an identical copy
    twin = copy.deepcopy(seg)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, _out, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, m in twin.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        twin(tgt["image"], ctx.text_target)
    for h in hooks:
        h.remove()
    logs = method.on_stage_end(iter([tgt]))
    assert logs == {"adabn_batches": 1.0}
    layers = dict(seg.named_modules())
    assert len(inputs) > 5
    for name, x in inputs.items():
        bn = layers[name]
        torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            bn.running_var, x.transpose(0, 1).reshape(x.shape[1], -1).var(dim=1), rtol=1e-4, atol=1e-5
        )
        assert bn.momentum is not None
    after = {k: v for k, v in seg.state_dict().items() if k in weights}
    assert all(torch.equal(after[k], weights[k]) for k in weights)  # only the statistics changed
    assert seg.training


def test_bn_batches_option(make_context, make_batches):
    method = build_method("adabn", make_context("light", 3, base_width=8), {"bn_batches": 1})
    _, tgt = make_batches(2, 48, 3)
    assert method.on_stage_end(iter([tgt, tgt, tgt])) == {"adabn_batches": 1.0}
    with pytest.raises(ConfigError, match="bn_batches"):
        method.parse_options({"bn_batches": -1})
