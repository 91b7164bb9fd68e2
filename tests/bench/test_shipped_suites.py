"""The suites shipped in configs/bench load, and every cell's training config and overrides are valid."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from tcsa_uda.bench.suite import load_suite, packaged_configs_dir
from tcsa_uda.config import load_config
from tcsa_uda.engine.trainer import validate_config
from tcsa_uda.train_config import TrainConfig

SUITES = sorted((packaged_configs_dir() / "bench").glob("*.yaml"))


def test_suites_are_shipped() -> None:
    assert {p.name for p in SUITES} >= {"phantom_cpu.yaml", "paper.yaml"}


@pytest.mark.parametrize("path", SUITES, ids=[p.name for p in SUITES])
def test_every_cell_has_a_valid_training_config(path: Path) -> None:
    suite = load_suite(path)
    assert suite.reference in suite.spec.entries and suite.lower_bound == "source_only"
    assert len(suite.spec.seeds) >= 3
    for cell in suite.cells():
        bench_keys = [f"data.source={cell.source}", f"data.target={cell.target}", f"seed={cell.seed}"]
        cfg = load_config(TrainConfig, cell.config, [*cell.overrides, *bench_keys, "num_threads=1", "progress=false"])
        validate_config(cfg)


def test_phantom_cpu_compares_tcsa_with_the_baselines_on_both_directions() -> None:
    suite = load_suite(packaged_configs_dir() / "bench" / "phantom_cpu.yaml")
    assert suite.blocks() == [("phantom", "MR2CT"), ("phantom", "CT2MR")]
    assert suite.reference == "tcsa" and len(suite.spec.seeds) >= 5
    assert {"source_only", "adaoutput", "advent", "minent", "adabn", "mpscl", "tcsa"} <= set(suite.spec.entries)
    assert suite.spec.entries["oracle"].upper_bound and suite.upper_bounds == ["oracle"]


def test_phantom_cpu_has_a_row_for_every_declared_tcsa_switch_with_3_seeds() -> None:
    """Every switch of methods/tcsa.py (TCSA.ablations) sets, in some 3-seed entry, the keys it sets."""
    from tcsa_uda.methods import method_class

    suite = load_suite(packaged_configs_dir() / "bench" / "phantom_cpu.yaml")
    ablation_rows = {n: e for n, e in suite.spec.entries.items() if n.startswith("tcsa_")}
    assert ablation_rows and all(e.seeds == [0, 1, 2] for e in ablation_rows.values())
    main = [e for n, e in suite.spec.entries.items() if n not in ablation_rows]
    assert all(e.seeds is None for e in main) and suite.spec.seeds == [0, 1, 2, 3, 4]

    def keys(overrides: list[str]) -> set[str]:
        return {o.split("=", 1)[0] for o in overrides}

    for ab in method_class("tcsa").ablations:
        wanted = keys(ab.option_overrides(1))
        assert any(wanted <= keys(e.overrides) for e in ablation_rows.values()), ab.name


def test_package_data_ships_the_suites() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"\[tool\.setuptools\.package-data\]\s*\ntcsa_uda = \[(.*?)\]", text, re.S)
    assert block is not None
    patterns = re.findall(r'"([^"]+)"', block.group(1))
    package = packaged_configs_dir().parent
    for path in SUITES:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), rel
