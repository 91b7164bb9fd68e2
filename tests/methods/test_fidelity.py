"""The two fidelity modes at method level (docs/method.md, Fidelity modes and Paper vs released fidelity)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tcsa_uda.losses import VLCovarianceLoss
from tcsa_uda.methods import available_methods, build_method, method_class
from tcsa_uda.models import parameter_groups


def _run(fidelity: str, make_context, make_batches):
    ctx = make_context("light", 3, fidelity=fidelity, base_width=8)
    method = build_method("tcsa", ctx, {"align_start": 0})
    opts = method.build_optimizers()
    groups = parameter_groups(ctx.model)
    before = [p.detach().clone() for p in groups["fusion"]]
    src, tgt = make_batches(2, 64, 3)
    method.training_step(src, tgt, iteration=1, optimizers=opts)
    changed = [not torch.equal(b, p.detach()) for b, p in zip(before, groups["fusion"], strict=True)]
    return method, changed


def test_paper_mode_updates_fusion_modules(make_context, make_batches):
    _, changed = _run("paper", make_context, make_batches)
    assert all(changed)


def test_released_mode_leaves_fusion_modules_at_init(make_context, make_batches):
    _, changed = _run("released", make_context, make_batches)
    assert not any(changed)


def test_vl_gradient_reaches_visual_embedding_only_in_paper_mode(make_context, make_batches):
    for fidelity, expect in (("paper", True), ("released", False)):
        ctx = make_context("light", 3, fidelity=fidelity, base_width=8)
        method = build_method("tcsa", ctx, {"align_start": 0})
        src, tgt = make_batches(2, 64, 3)
        out = method.forward(src, tgt)
        text = ctx.segmenter.project_text(ctx.text_source)
        vl = method.extra["vl_source" if fidelity == "paper" else "vl"](out.source.f_vis, src["label"], text)
        head_params = list(ctx.segmenter.embed_head.parameters())
        grads = torch.autograd.grad(vl, head_params, allow_unused=True)
        has_grad = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has_grad is expect, fidelity


@pytest.mark.slow
def test_every_method_runs_one_iteration(make_context, make_batches):
    for name in available_methods():
        ctx = make_context("light", 3, base_width=8)
        method = build_method(name, ctx, dict(method_class(name).smoke_options))
        opts = method.build_optimizers()
        src, tgt = make_batches(2, 64, 3)
        if method.uses_target_labels:  # as the engine does: labelled target batches for those methods only
            tgt["label"] = src["label"].clone()
        logs = method.training_step(src, tgt if method.uses_target else None, iteration=1, optimizers=opts)
        assert torch.isfinite(torch.tensor(logs["loss"])), name


def test_alignment_starts_at_101st_paper_and_102nd_released_iteration(make_context, make_batches):
    """The released code aligns when its 0-based i_iter > 100; the engine passes 1-based iterations."""
    for fidelity, first in (("paper", 101), ("released", 102)):
        ctx = make_context("light", 3, fidelity=fidelity, base_width=8)
        method = build_method("tcsa", ctx, {"align_start": 100})
        assert method.first_aligned_iteration() == first
        src, tgt = make_batches(2, 64, 3)
        with torch.no_grad():
            out = method.forward(src, tgt)
            _, before = method.generator_loss(out, src, first - 1)
            _, at = method.generator_loss(out, src, first)
        assert "proto" not in before and "vl_s" not in before, fidelity
        assert {"proto", "vl_s", "vl_t"} <= set(at), fidelity


def test_released_mode_shares_one_bank_between_source_and_target(make_context, make_batches):
    ctx = make_context("light", 3, fidelity="released", base_width=8)
    method = build_method("tcsa", ctx, {"align_start": 0, "bank_momentum": 0.5})
    assert set(method.extra) == {"proto", "vl"}
    paper = build_method("tcsa", make_context("light", 3, base_width=8), {"align_start": 0})
    assert set(paper.extra) == {"proto", "vl_source", "vl_target"}
    src, tgt = make_batches(2, 64, 3)
    with torch.no_grad():
        out = method.forward(src, tgt)
        method.generator_loss(out, src, method.first_aligned_iteration())
        # the same two calls on one fresh bank: source first, then the target's pseudo-labels
        ref = VLCovarianceLoss(3, int(ctx.segmenter.embed_dim), bank_momentum=0.5, mode="released")
        text = ctx.segmenter.project_text(ctx.text_source)
        ref(out.source.f_vis, src["label"], text)
        ref(out.target.f_vis, out.main_t.argmax(dim=1), text)
    torch.testing.assert_close(method.extra["vl"].bank, ref.bank)
    assert torch.equal(method.extra["vl"].seen, ref.seen)


def test_released_mode_uses_batch_norm_discriminators(make_context):
    for name in ("adaoutput", "advent", "tcsa"):
        for fidelity, expect in (("paper", False), ("released", True)):
            method = build_method(name, make_context("light", 3, fidelity=fidelity, base_width=8), {})
            has_bn = any(isinstance(m, nn.BatchNorm2d) for m in method.discriminators.modules())
            assert has_bn is expect, (name, fidelity)


def test_released_mode_builds_the_released_network_in_the_trainer():
    from tcsa_uda.engine.trainer import model_kwargs
    from tcsa_uda.train_config import TrainConfig

    assert model_kwargs(TrainConfig(fidelity="released"))["variant"] == "released"
    assert model_kwargs(TrainConfig())["variant"] == "paper"
