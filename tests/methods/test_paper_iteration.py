"""One full training iteration of the paper configuration on CPU (issue: method end to end).

DeepLab-v2 ResNet-101, 256x256, 4 source + 4 target slices; stage 1 (adaoutput) and stage 2
(tcsa) losses with all optimisers. Checks output shapes and that every parameter group that
should change did change.
"""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.methods import build_method
from tcsa_uda.models import parameter_groups


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _changed(before, params) -> bool:
    return all(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def _fraction_changed(before, params) -> float:
    flags = [not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True)]
    return sum(flags) / max(len(flags), 1)


@pytest.mark.slow
@pytest.mark.parametrize("method_name", ["adaoutput", "tcsa"])
def test_paper_configuration_one_iteration(method_name, make_context, make_batches):
    torch.set_num_threads(2)
    c = 5
    ctx = make_context("deeplabv2_r101", c, fidelity="paper")
    method = build_method(method_name, ctx, {"align_start": 0} if method_name == "tcsa" else {})
    opts = method.build_optimizers()
    groups = parameter_groups(ctx.model)
    before = {k: _snapshot(v) for k, v in groups.items()}
    d_before = _snapshot(list(method.discriminators.parameters()))
    src, tgt = make_batches(4, 256, c)

    out = method.forward(src, tgt)
    assert out.source.main.shape == (4, c, 33, 33)
    assert out.source.aux.shape == (4, c, 33, 33)
    assert out.source.f_hi.shape == (4, 2048, 33, 33)
    assert out.source.f_vis.shape == (4, 256, 33, 33)
    assert out.main_s.shape == (4, c, 256, 256) and out.main_t.shape == (4, c, 256, 256)

    logs = method.training_step(src, tgt, iteration=1, optimizers=opts)
    assert torch.isfinite(torch.tensor(logs["loss"]))
    for key in ("seg", "adv", "d_main", "d_aux"):
        assert key in logs
    if method_name == "tcsa":
        for key in ("proto", "vl_s", "vl_t"):
            assert key in logs
    # Every trainable parameter tensor of the backbone, heads and discriminators changed.
    assert _changed(before["backbone"], groups["backbone"])
    assert _changed(before["heads"], groups["heads"])
    assert _changed(d_before, list(method.discriminators.parameters()))
    # Fusion group (AdamW): the attention q/k projections get exactly zero gradient with a single
    # key token (docs/method.md note) but AdamW's weight decay still moves them; all must change.
    assert _fraction_changed(before["fusion"], groups["fusion"]) == 1.0
