"""The generic test of every registered method and every declared ablation switch (methods/ablation.py).

Driven by the declarations next to the code: each method class lists its switches
(``UDAMethod.ablations``: option values and run-level overrides, the logged keys each removes or
adds), the options under which all its terms act within two iterations (``smoke_options``) and the
keys that depend on the data (``conditional_log_keys``). For every method, and for every switch of
every method, the real engine trains 2 iterations on a tiny phantom with every iteration logged,
and the test reads ``metrics.jsonl``:

- every logged value of every train row is finite;
- a switch's ``removes`` keys are logged without the switch (the declaration is not vacuous) and
  never with it; its ``adds`` keys appear only with it;
- every other key the method logs without the switch is still logged with it (a switch removes
  only what it declares), except the data-dependent ones.

A new method or switch is tested by registering or declaring it; nothing here names a method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tcsa_uda.config import load_config
from tcsa_uda.engine.trainer import train
from tcsa_uda.methods import Ablation, available_methods, method_class
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

CASES: list[tuple[str, Ablation | None]] = [
    (name, ab) for name in available_methods() for ab in (None, *method_class(name).ablations)
]
NOT_LOGGED_VALUES = ("step", "kind")


def _run(root: Path, overrides: list[str], name: str, ablation: Ablation | None) -> list[dict[str, Any]]:
    """Train ``name`` (with ``ablation``) for 2 logged iterations; the train rows of metrics.jsonl."""
    cls = method_class(name)
    smoke = Ablation("smoke", "smoke options", dict(cls.smoke_options))
    extra = [
        f"stages=[{{method: {name}, iterations: 2}}]",
        *smoke.option_overrides(0),
        *(ablation.option_overrides(0) if ablation is not None else []),
    ]
    out = root / f"{name}_{ablation.name if ablation else 'base'}"
    train(load_config(TrainConfig, None, [*overrides, *extra]), out)
    lines = (out / f"stage1_{name}" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


@pytest.fixture(scope="module")
def logs_of(tiny_run_overrides, tmp_path_factory) -> Callable[[str, Ablation | None], list[dict[str, Any]]]:
    """Train rows of a (method, switch) run, each run trained once per module."""
    root = tmp_path_factory.mktemp("ablation_runs")
    cache: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def get(name: str, ablation: Ablation | None) -> list[dict[str, Any]]:
        key = (name, ablation.name if ablation else "")
        if key not in cache:
            cache[key] = _run(root, tiny_run_overrides, name, ablation)
        return cache[key]

    return get


def _keys(rows: list[dict[str, Any]]) -> set[str]:
    return {k for r in rows for k in r if k not in NOT_LOGGED_VALUES}


@pytest.mark.parametrize(("name", "ablation"), CASES, ids=[f"{n}-{a.name if a else 'default'}" for n, a in CASES])
def test_every_method_and_switch_trains_and_logs_what_it_declares(logs_of, name, ablation):
    rows = logs_of(name, ablation)
    assert [r["step"] for r in rows] == [1, 2]
    bad = {(r["step"], k): v for r in rows for k, v in r.items() if k not in NOT_LOGGED_VALUES}
    bad = {k: v for k, v in bad.items() if not (isinstance(v, (int, float)) and math.isfinite(v))}
    assert not bad, f"non-finite logged values: {bad}"
    assert {"loss", "seg"} <= _keys(rows)
    if ablation is None:
        return
    base = _keys(logs_of(name, None))
    got = _keys(rows)
    removes, adds = set(ablation.removes), set(ablation.adds)
    conditional = set(method_class(name).conditional_log_keys)
    assert removes <= base, f"{ablation.name} declares it removes keys the method never logs: {removes - base}"
    assert not removes & got, f"{ablation.name}: switched-off terms still logged: {removes & got}"
    assert adds <= got and not adds & base, f"{ablation.name} adds {adds}; base {sorted(base)}, got {sorted(got)}"
    missing = (base - removes - conditional) - got
    assert not missing, f"{ablation.name} also removed {missing}, which it does not declare"


@pytest.mark.parametrize("name", available_methods())
def test_declarations_are_valid_options_with_unique_names(name):
    cls = method_class(name)
    names = [a.name for a in cls.ablations]
    assert len(set(names)) == len(names)
    for ab in cls.ablations:
        cls.parse_options({**cls.smoke_options, **ab.options}, f"{name} ablation {ab.name}")
        assert not set(ab.removes) & set(ab.adds)
        assert ab.options or ab.overrides, f"{name}/{ab.name} switches nothing"
    cls.parse_options(dict(cls.smoke_options), f"{name} smoke options")


def test_option_overrides_are_config_overrides():
    ab = Ablation("x", "x", {"vl": False, "vl_text": "raw", "vl_ramp": 3}, overrides=("fidelity=released",))
    assert ab.option_overrides(1) == [
        "stages.1.options.vl=false",
        "stages.1.options.vl_text=raw",
        "stages.1.options.vl_ramp=3",
        "fidelity=released",
    ]
    cfg = load_config(TrainConfig, None, ["stages=[{method: source_only}, {method: tcsa}]", *ab.option_overrides(1)])
    assert cfg.stages[1].options == {"vl": False, "vl_text": "raw", "vl_ramp": 3} and cfg.fidelity == "released"


def test_the_test_covers_every_switch_of_tcsa():
    """The TCSA switches the issue asks for are declared (so the generic test runs them)."""
    declared = {a.name for a in method_class("tcsa").ablations}
    switches = {"no_vl", "no_proto", "no_adversarial", "text_random", "text_onehot", "text_shuffle", "released"}
    options = {"vl_detached", "vl_raw", "vl_centred", "vl_correlation", "vl_pre_relu", "vl_linear", "vl_cosine"}
    assert switches | options <= declared
