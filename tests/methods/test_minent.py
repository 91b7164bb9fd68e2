"""Tests of the MinEnt baseline (tcsa_uda.methods.minent)."""

from __future__ import annotations

import pytest
import torch

from tcsa_uda.losses import entropy_loss, source_segmentation_loss
from tcsa_uda.methods import build_method


def test_loss_is_source_segmentation_plus_weighted_target_entropy(make_context, make_batches):
    ctx = make_context("light", 3, base_width=8)
    method = build_method("minent", ctx, {"ent_main": 0.5, "ent_aux": 0.25})
    assert not method.discriminators  # no adversary
    src, tgt = make_batches(2, 32, 3)
    out = method.forward(src, tgt)
    loss, logs = method.generator_loss(out, src, iteration=1)
    seg, _ = source_segmentation_loss(out.main_s, out.aux_s, src["label"], aux_weight=method.options.aux_weight)
    expect = seg + 0.5 * entropy_loss(out.main_t) + 0.25 * entropy_loss(out.aux_t)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    assert logs["ent_main"] == pytest.approx(entropy_loss(out.main_t).item(), rel=1e-6)


@pytest.mark.slow
def test_training_lowers_target_entropy(make_context, make_batches):
    ctx = make_context("light", 3, base_width=8)
    method = build_method("minent", ctx, {"ent_main": 5.0, "ent_aux": 5.0})  # entropy term dominates
    opts = method.build_optimizers()
    src, tgt = make_batches(2, 32, 3)
    with torch.no_grad():
        before = entropy_loss(method.forward(src, tgt).main_t).item()
    for it in range(5):
        logs = method.training_step(src, tgt, iteration=it + 1, optimizers=opts)
    with torch.no_grad():
        after = entropy_loss(method.forward(src, tgt).main_t).item()
    assert after < before and "ent" in logs


def test_needs_a_target_batch(make_context, make_batches):
    method = build_method("minent", make_context("light", 3, base_width=8))
    src, _ = make_batches(2, 32, 3)
    with pytest.raises(RuntimeError, match="needs a target batch"):
        method.generator_loss(method.forward(src, None), src, iteration=1)
