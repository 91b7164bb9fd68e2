"""Tests of the tcsa method's switches, VL options and VL diagnostics (tcsa_uda.methods.tcsa)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.methods import build_method
from tcsa_uda.methods.tcsa import TCSA, VL_GRAD_KEYS, VL_LOG_KEYS, VL_SPREAD_KEYS, TCSAOptions


def _method(make_context, fidelity="paper", **options):
    ctx = make_context("light", 3, fidelity=fidelity, base_width=8)
    return build_method("tcsa", ctx, {"align_start": 0, **options})


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


def _vl_only(method, make_batches):
    """The VL term of one batch pair computed by hand (both domains, projected source text)."""
    src, tgt = make_batches(2, 64, 3)
    out = method.forward(src, tgt)
    pseudo = out.main_t.detach().argmax(dim=1)
    text = method.vl_text()
    key_s, key_t = ("vl", "vl") if "vl" in method.extra else ("vl_source", "vl_target")
    vl = method.extra[key_s](out.source.f_vis, src["label"], text) + method.extra[key_t](out.target.f_vis, pseudo, text)
    return out, vl


@pytest.mark.parametrize(("vl_text", "reaches_text"), [("projected", True), ("detached", False), ("raw", False)])
def test_stop_gradient_gives_zero_grad_to_the_text_projection(make_context, make_batches, vl_text, reaches_text):
    method = _method(make_context, vl_text=vl_text)
    _, vl = _vl_only(method, make_batches)
    seg = method.ctx.segmenter
    text_grads = torch.autograd.grad(vl, list(seg.text_proj.parameters()), retain_graph=True, allow_unused=True)
    head_grads = torch.autograd.grad(vl, list(seg.embed_head.parameters()), allow_unused=True)
    assert (_norm(text_grads) > 0) is reaches_text
    assert _norm(head_grads) > 0  # the image side still gets the loss's gradient (paper fidelity)


def test_raw_text_is_the_frozen_embedding_of_the_source_modality(make_context):
    method = _method(make_context, vl_text="raw")
    assert method.vl_text() is method.ctx.text_source
    assert _method(make_context, vl_text="detached").vl_text().requires_grad is False


def test_gradient_norm_diagnostics_equal_a_manual_autograd_grad(make_context, make_batches):
    method = _method(make_context)
    twin = copy.deepcopy(method)  # same weights and state: the manual computation runs on the twin
    method.set_log_schedule(every=1, last=1)
    src, tgt = make_batches(2, 64, 3)
    out = method.forward(src, tgt)
    loss, logs = method.generator_loss(out, src, 1)
    assert set(VL_GRAD_KEYS) <= set(logs)
    seg = method.ctx.segmenter
    assert all(p.grad is None for p in seg.parameters())  # diagnostics never touch .grad
    loss.backward()  # the graph was kept for the real backward

    out2, vl = _vl_only(twin, make_batches)
    seg2 = twin.ctx.segmenter
    expected = {
        "vl_grad_f_vis": _norm(torch.autograd.grad(vl, [out2.source.f_vis, out2.target.f_vis], retain_graph=True)),
        "vl_grad_embed": _norm(torch.autograd.grad(vl, list(seg2.embed_head.parameters()), retain_graph=True)),
        "vl_grad_text": _norm(torch.autograd.grad(vl, list(seg2.text_proj.parameters()))),
    }
    for key, value in expected.items():
        assert value > 0 and logs[key] == pytest.approx(value, rel=1e-4), key


def test_diagnostics_only_on_logged_iterations(make_context, make_batches):
    method = _method(make_context)
    src, tgt = make_batches(2, 64, 3)
    calls: list[int] = []
    real = method.vl_gradient_norms

    def spy(vl, features):
        calls.append(1)
        return real(vl, features)

    method.vl_gradient_norms = spy
    with torch.no_grad():
        out = method.forward(src, tgt)
    _, logs = method.generator_loss(out, src, 1)  # no schedule set: nothing is logged
    assert not calls and not set(VL_GRAD_KEYS) & set(logs) and not set(VL_SPREAD_KEYS) & set(logs)
    method.set_log_schedule(every=5, last=7)
    assert [it for it in range(1, 9) if method.is_logged(it)] == [5, 7]
    for it in (3, 5):
        out = method.forward(src, tgt)
        _, logs = method.generator_loss(out, src, it)
        assert (set(VL_GRAD_KEYS) <= set(logs)) is (it == 5)
    assert len(calls) == 1


def test_released_fidelity_sends_no_vl_gradient_to_the_image_side(make_context, make_batches):
    method = _method(make_context, fidelity="released")
    method.set_log_schedule(every=1, last=2)
    src, tgt = make_batches(2, 64, 3)
    _, logs = method.generator_loss(method.forward(src, tgt), src, 2)  # released aligns from the 2nd iteration
    assert logs["vl_grad_f_vis"] == 0.0 and logs["vl_grad_embed"] == 0.0 and logs["vl_grad_text"] > 0


def test_spread_of_the_similarity_matrices_is_logged(make_context, make_batches):
    method = _method(make_context, vl_similarity="centred")
    method.set_log_schedule(every=1, last=1)
    src, tgt = make_batches(2, 64, 3)
    _, logs = method.generator_loss(method.forward(src, tgt), src, 1)
    assert {f"vl_s_{m}_{s}" for m in ("sv", "st") for s in ("std", "min", "max")} <= set(logs)
    assert logs["vl_s_sv_min"] <= logs["vl_s_sv_max"] and logs["vl_s_sv_std"] >= 0
    assert logs["vl_s_st_min"] < 0  # centred matrices have negative off-diagonal entries


@pytest.mark.parametrize(
    ("options", "absent_modules", "absent_logs"),
    [
        ({"vl": False}, {"vl_source", "vl_target"}, set(VL_LOG_KEYS)),
        ({"proto": False}, {"proto"}, {"proto"}),
        ({"vl": False, "proto": False}, {"vl_source", "vl_target", "proto"}, {"proto", *VL_LOG_KEYS}),
    ],
)
@pytest.mark.slow
def test_switched_off_terms_are_not_built_computed_or_logged(
    make_context, make_batches, options, absent_modules, absent_logs
):
    method = _method(make_context, **options)
    method.set_log_schedule(every=1, last=1)
    assert not absent_modules & set(method.extra)
    src, tgt = make_batches(2, 64, 3)
    logs = method.training_step(src, tgt, 1, method.build_optimizers())
    assert not absent_logs & set(logs) and math.isfinite(logs["loss"])


def test_without_the_adversarial_term_no_discriminator_exists(make_context, make_batches):
    method = _method(make_context, adversarial=False)
    assert not method.discriminators and "disc" not in method.build_optimizers()
    src, tgt = make_batches(2, 64, 3)
    logs = method.training_step(src, tgt, 1, method.build_optimizers())
    assert not {"adv", "d_main", "d_aux"} & set(logs) and {"proto", "vl_s", "vl_t"} <= set(logs)


def test_pre_relu_prototypes_read_the_map_before_the_relu(make_context, make_batches):
    method = _method(make_context, vl_features="pre_relu")
    seen = []
    module = method.extra["vl_source"]
    real = module.forward
    module.forward = lambda f, y, t: (seen.append(f), real(f, y, t))[1]
    src, tgt = make_batches(2, 64, 3)
    out = method.forward(src, tgt)
    method.generator_loss(out, src, 1)
    assert seen and seen[0] is out.source.f_vis_pre and bool((seen[0] < 0).any())


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("constant", [1.0, 1.0, 1.0, 1.0, 1.0]),
        ("linear", [0.25, 0.5, 0.75, 1.0, 1.0]),
        ("cosine", [(1 - math.cos(math.pi * r)) / 2 for r in (0.25, 0.5, 0.75, 1.0, 1.0)]),
    ],
)
def test_vl_weight_schedule(make_context, schedule, expected):
    ramp = 0 if schedule == "constant" else 4
    for fidelity, first in (("paper", 3), ("released", 4)):  # align_start 2: first aligned 3 (paper), 4 (released)
        ctx = make_context("light", 3, fidelity=fidelity, base_width=8)
        method = build_method("tcsa", ctx, {"align_start": 2, "vl_schedule": schedule, "vl_ramp": ramp})
        assert isinstance(method, TCSA) and method.first_aligned_iteration() == first
        got = [method.vl_weight(first + i) for i in range(5)]
        assert got == pytest.approx(expected), fidelity


def test_the_schedule_weights_the_vl_terms_and_is_logged(make_context, make_batches):
    src, tgt = make_batches(2, 64, 3)
    values = {}
    for schedule, ramp in (("constant", 0), ("linear", 4)):
        method = _method(make_context, vl_schedule=schedule, vl_ramp=ramp, proto=False, adversarial=False)
        out = method.forward(src, tgt)
        loss, logs = method.generator_loss(out, src, 1)
        values[schedule] = (float(loss.detach()) - logs["seg"], logs)
    const, linear = values["constant"], values["linear"]
    assert "vl_weight" not in const[1] and linear[1]["vl_weight"] == 0.25
    assert linear[0] == pytest.approx(0.25 * const[0], rel=1e-5)  # same VL values, a quarter of the weight


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"vl_ramp": 10}, "expected 0 with vl_schedule constant"),
        ({"vl_schedule": "linear"}, "expected >= 1 iterations with vl_schedule linear"),
        ({"vl_source_weight": -1.0}, "vl_source_weight: expected >= 0"),
        ({"vl_text": "frozen"}, "vl_text"),
        ({"vl_similarity": "covariance"}, "vl_similarity"),
        ({"align_start": -1}, "align_start"),
    ],
)
def test_bad_options_are_one_clear_error(options, match):
    with pytest.raises(ConfigError, match=match):
        TCSA.parse_options(options, "stages.1.options")


def test_defaults_are_the_paper_recipe():
    o = TCSAOptions()
    assert (o.vl, o.proto, o.adversarial) == (True, True, True)
    assert (o.vl_text, o.vl_similarity, o.vl_features, o.vl_schedule, o.vl_ramp) == (
        "projected",
        "cosine",
        "post_relu",
        "constant",
        0,
    )
