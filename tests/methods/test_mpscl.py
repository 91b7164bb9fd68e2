"""Tests of the MPSCL baseline (tcsa_uda.methods.mpscl)."""

from __future__ import annotations

import copy

import pytest
import torch

from tcsa_uda.errors import ConfigError
from tcsa_uda.losses import cosine_pseudo_labels, downsample_labels, margin_contrastive_loss
from tcsa_uda.methods import build_method
from tcsa_uda.methods.mpscl import MPSCL


def test_loss_is_advent_plus_the_two_weighted_contrastive_terms(make_context, make_batches):
    opts = {"mpcl_source_weight": 0.7, "mpcl_target_weight": 0.3, "selection_threshold": 0.0}
    method = build_method("mpscl", make_context("light", 3, base_width=8), opts)
    advent = build_method("advent", make_context("light", 3, base_width=8))
    advent.discriminators.load_state_dict(method.discriminators.state_dict())
    twin = copy.deepcopy(method)
    src, tgt = make_batches(2, 48, 3)
    out = method.forward(src, tgt)
    loss, logs = method.generator_loss(out, src, 1)
    base, _ = advent.generator_loss(advent.forward(src, tgt), src, 1)
    # by hand on the twin: centres from this source batch, pseudo-labels, both losses
    out2 = twin.forward(src, tgt)
    f_s, f_t = out2.source.f_hi, out2.target.f_hi
    y_s = downsample_labels(src["label"], tuple(f_s.shape[-2:]))
    centers = twin.centers.update(f_s, y_s)
    pseudo, mask = cosine_pseudo_labels(f_t, centers, 0.0)
    l_s = margin_contrastive_loss(f_s, y_s, centers, 0.4)
    l_t = margin_contrastive_loss(f_t, pseudo, centers, 0.2, mask=mask)
    assert logs["mpcl_s"] == pytest.approx(l_s.item(), rel=1e-5) and logs["mpcl_t"] == pytest.approx(
        l_t.item(), rel=1e-5
    )
    assert loss.item() == pytest.approx(base.item() + 0.7 * l_s.item() + 0.3 * l_t.item(), rel=1e-5)
    assert 0.0 < logs["mpcl_t_selected"] <= 1.0 and "mpcl_threshold" not in logs
    assert torch.equal(method.centers.centers, twin.centers.centers)  # method state: the updated centres
    assert "extra" in method.state_dict() and "centers.centers" in method.state_dict()["extra"]


def test_threshold_schedules(make_context):
    constant = build_method("mpscl", make_context("light", 3, base_width=8))
    assert isinstance(constant, MPSCL)
    assert [constant.threshold(i) for i in (1, 50, 500)] == [0.25, 0.25, 0.25]
    paced = build_method(
        "mpscl",
        make_context("light", 3, base_width=8),
        {"threshold_schedule": "self_paced", "threshold_start": 0.65, "selection_threshold": 0.25, "threshold_ramp": 4},
    )
    assert isinstance(paced, MPSCL)
    assert [paced.threshold(i) for i in range(1, 7)] == pytest.approx([0.65, 0.55, 0.45, 0.35, 0.25, 0.25])


def test_released_fidelity_uses_the_released_loss(make_context, make_batches):
    src, tgt = make_batches(2, 48, 3)
    values = {}
    for fidelity in ("paper", "released"):
        method = build_method("mpscl", make_context("light", 3, fidelity=fidelity, base_width=8))
        _, logs = method.generator_loss(method.forward(src, tgt), src, 1)
        values[fidelity] = logs["mpcl_s"]
    assert values["paper"] != pytest.approx(values["released"], rel=1e-3)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"threshold_ramp": 5}, "expected 0 with threshold_schedule constant"),
        ({"threshold_schedule": "self_paced"}, "expected >= 1 with threshold_schedule self_paced"),
        ({"source_temperature": 0.0}, "source_temperature: expected > 0"),
        ({"center_momentum": 2.0}, r"center_momentum: expected in \[0, 1\]"),
        ({"selection_threshold": 3.0}, "selection_threshold"),
        ({"threshold_schedule": "curriculum"}, "threshold_schedule"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        MPSCL.parse_options(options, "stages.1.options")
