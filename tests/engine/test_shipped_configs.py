"""Every config shipped with the package loads, names registered methods, and the phantom ones pair up."""

from __future__ import annotations

from pathlib import Path

import pytest

import tcsa_uda
from tcsa_uda.config import load_config
from tcsa_uda.methods import available_methods, method_class
from tcsa_uda.train_config import TrainConfig

CONFIGS = sorted((Path(tcsa_uda.__file__).parent / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    names = {p.name for p in CONFIGS}
    for d in ("mr2ct", "ct2mr"):
        assert {f"phantom_{d}.yaml", f"phantom_{d}_source_only.yaml", f"phantom_{d}_minent.yaml"} <= names
        assert {f"phantom_{d}_{m}.yaml" for m in ("oracle", "adabn", "mpscl")} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_with_registered_methods(path: Path) -> None:
    cfg = load_config(TrainConfig, path)
    assert cfg.stages and all(s.method in available_methods() for s in cfg.stages)
    assert cfg.data.source != cfg.data.target
    for i, stage in enumerate(cfg.stages):  # every option a valid option of its method
        method_class(stage.method).parse_options(stage.options, f"{path.name}: stages.{i}.options")


@pytest.mark.parametrize("baseline", ["source_only", "minent", "oracle", "adabn"])
def test_phantom_baselines_match_each_other_except_the_method(baseline: str) -> None:
    """Baselines differ from source-only only in the method, so their numbers are comparable."""
    for d in ("mr2ct", "ct2mr"):
        ref = load_config(TrainConfig, CONFIGS[0].parent / f"phantom_{d}_source_only.yaml")
        cfg = load_config(TrainConfig, CONFIGS[0].parent / f"phantom_{d}_{baseline}.yaml")
        assert cfg.stages[0].method == baseline
        assert (cfg.data, cfg.model, cfg.optim, cfg.stages[0].iterations) == (
            ref.data,
            ref.model,
            ref.optim,
            ref.stages[0].iterations,
        )


def test_phantom_mpscl_matches_tcsa_except_the_methods() -> None:
    """MPSCL: ADVENT warm-up + MPSCL with the budget, data, network and optimiser of the TCSA configs."""
    for d in ("mr2ct", "ct2mr"):
        ref = load_config(TrainConfig, CONFIGS[0].parent / f"phantom_{d}.yaml")
        cfg = load_config(TrainConfig, CONFIGS[0].parent / f"phantom_{d}_mpscl.yaml")
        assert [s.method for s in cfg.stages] == ["advent", "mpscl"] and cfg.stages[1].init == "previous"
        assert [s.iterations for s in cfg.stages] == [s.iterations for s in ref.stages]
        assert (cfg.data, cfg.model, cfg.optim, cfg.fidelity) == (ref.data, ref.model, ref.optim, ref.fidelity)
    ct2mr = load_config(TrainConfig, CONFIGS[0].parent / "phantom_ct2mr_mpscl.yaml").stages[1].options
    assert (ct2mr["source_temperature"], ct2mr["source_margin"]) == (2.0, 0.2)  # the released CT->MR values
