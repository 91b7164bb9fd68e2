"""The two fidelity modes at method level (docs/method.md, Fidelity modes)."""

from __future__ import annotations

import torch

from tcsa_uda.methods import available_methods, build_method
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
        vl = method.extra["vl_source"](out.source.f_vis, src["label"], text)
        head_params = list(ctx.segmenter.embed_head.parameters())
        grads = torch.autograd.grad(vl, head_params, allow_unused=True)
        has_grad = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert has_grad is expect, fidelity


def test_every_method_runs_one_iteration(make_context, make_batches):
    for name in available_methods():
        ctx = make_context("light", 3, base_width=8)
        method = build_method(name, ctx, {"align_start": 0} if name == "tcsa" else {})
        opts = method.build_optimizers()
        src, tgt = make_batches(2, 64, 3)
        logs = method.training_step(src, tgt if method.uses_target else None, iteration=1, optimizers=opts)
        assert torch.isfinite(torch.tensor(logs["loss"])), name
