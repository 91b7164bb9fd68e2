"""Tests of the suite schema: loading, cells, config lookup and the rules (one clear error each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcsa_uda.bench.suite import load_suite, packaged_configs_dir
from tcsa_uda.errors import ConfigError, MissingPathError


def test_cells_are_entry_x_dataset_x_direction_x_seed(tmp_path, write_suite, basic_suite) -> None:
    data = basic_suite(overrides=["device=cpu"])
    data["directions"]["CT2MR"] = {"source": "CT", "target": "MR"}
    data["datasets"]["ds"]["overrides"] = ["data.batch_size=2"]
    data["entries"]["other"]["overrides"] = ["optim.lr=0.1"]
    suite = load_suite(write_suite(tmp_path / "s.yaml", data))
    cells = suite.cells()
    assert len(cells) == 3 * 1 * 2 * 2
    assert [c.name for c in cells[:3]] == ["base/ds/MR2CT/seed0", "other/ds/MR2CT/seed0", "broken/ds/MR2CT/seed0"]
    other = cells[1]
    assert other.overrides == ("device=cpu", "data.batch_size=2", "optim.lr=0.1")
    assert other.config == (packaged_configs_dir() / "phantom_mr2ct_minent.yaml").resolve()
    assert (cells[3].source, cells[3].target) == ("CT", "MR")
    assert other.rel_dir == Path("cells/other/ds/MR2CT/seed0")
    assert (suite.reference, suite.lower_bound, suite.upper_bounds) == ("base", "base", [])
    assert suite.name == "tiny" and suite.blocks() == [("ds", "MR2CT"), ("ds", "CT2MR")]


def test_config_next_to_the_suite_wins_and_mappings_pick_the_most_specific_key(
    tmp_path, write_suite, basic_suite
) -> None:
    (tmp_path / "mine.yaml").write_text("seed: 0\n")
    (tmp_path / "ct2mr.yaml").write_text("seed: 0\n")
    data = basic_suite()
    data["directions"]["CT2MR"] = {"source": "CT", "target": "MR"}
    data["entries"]["base"]["config"] = "mine.yaml"
    data["entries"]["other"]["config"] = {"*": "phantom_mr2ct_minent.yaml", "ds/CT2MR": "ct2mr.yaml"}
    suite = load_suite(write_suite(tmp_path / "s.yaml", data))
    assert suite.config_for("base", "ds", "MR2CT") == (tmp_path / "mine.yaml").resolve()
    assert suite.config_for("other", "ds", "CT2MR") == (tmp_path / "ct2mr.yaml").resolve()
    assert suite.config_for("other", "ds", "MR2CT").name == "phantom_mr2ct_minent.yaml"


def test_entries_may_have_their_own_seeds(tmp_path, write_suite, basic_suite) -> None:
    data = basic_suite(seeds=[0, 1, 2])
    data["entries"]["broken"]["seeds"] = [0]
    data["entries"]["other"]["seeds"] = [1, 7]
    suite = load_suite(write_suite(tmp_path / "s.yaml", data))
    assert suite.all_seeds() == [0, 1, 2, 7]
    assert [c.name for c in suite.cells()] == [
        "base/ds/MR2CT/seed0",
        "broken/ds/MR2CT/seed0",
        "base/ds/MR2CT/seed1",
        "other/ds/MR2CT/seed1",
        "base/ds/MR2CT/seed2",
        "other/ds/MR2CT/seed7",
    ]


def test_dataset_directions_restrict_the_blocks(tmp_path, write_suite, basic_suite, prepared_folder) -> None:
    data = basic_suite()
    data["directions"]["T12T2"] = {"source": "T1", "target": "T2"}
    data["datasets"]["ds"]["directions"] = ["MR2CT"]
    data["datasets"]["brain"] = {"prepared": str(prepared_folder(tmp_path / "brain")), "directions": ["T12T2"]}
    suite = load_suite(write_suite(tmp_path / "s.yaml", data))
    assert suite.blocks() == [("ds", "MR2CT"), ("brain", "T12T2")]
    assert len(suite.cells()) == 3 * 2 * 2


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(bogus=1), r"Unknown config key\(s\) 'bogus'.*valid keys: datasets, description"),
        (lambda d: d["entries"]["other"].update(reference=True), "exactly one entry with reference: true, found 2"),
        (lambda d: d["entries"]["base"].update(reference=False), "exactly one entry with reference: true, found 0"),
        (lambda d: d["entries"]["other"].update(lower_bound=True), "at most one entry with lower_bound"),
        (lambda d: d["entries"]["base"].update(upper_bound=True), "upper_bound entry cannot also be the reference"),
        (lambda d: d["entries"].update({"a b": {"config": "x.yaml"}}), "entries.a b: expected a name of letters"),
        (lambda d: d["datasets"]["ds"].update(phantom={}), "exactly one of 'prepared' or 'phantom'"),
        (lambda d: d["datasets"]["ds"].update(directions=["XY"]), r"datasets.ds.directions: expected names among"),
        (lambda d: d.update(directions={"ds": {"source": "MR", "target": "CT"}}), "expected distinct names"),
        (lambda d: d["directions"]["MR2CT"].update(target="MR"), "different source and target"),
        (lambda d: d.update(seeds=[0, 0]), "seeds: expected a non-empty list of distinct"),
        (lambda d: d["entries"]["other"].update(seeds=[]), "entries.other.seeds: expected a non-empty list"),
        (lambda d: d["entries"]["other"].update(overrides=["seed=3"]), "sets a key the bench sets"),
        (lambda d: d.update(overrides=["data.prepared=x"]), r"overrides: 'data.prepared=x' sets a key"),
        (lambda d: d["entries"]["other"].update(overrides=["noequals"]), "expected the form key.sub=value"),
        (
            lambda d: (
                d["directions"].update(CT2MR={"source": "CT", "target": "MR"}),
                d["entries"]["other"].update(config={"MR2CT": "phantom_mr2ct_minent.yaml"}),
            ),
            "no config for dataset 'ds', direction 'CT2MR'",
        ),
        (lambda d: d["entries"]["other"].update(config={"nope": "x.yaml"}), "expected keys DATASET/DIRECTION"),
        (lambda d: d["statistics"].update(ci="wilcoxon"), "statistics.ci"),
        (lambda d: d["statistics"].update(level=95), "0 < level < 1"),
        (lambda d: d.update(seeds="0"), "seeds"),
    ],
)
def test_rules_give_one_clear_error_naming_the_file(tmp_path, write_suite, basic_suite, change, match) -> None:
    data = basic_suite()
    change(data)
    path = write_suite(tmp_path / "s.yaml", data)
    with pytest.raises(ConfigError, match=match) as info:
        load_suite(path)
    assert str(path) in str(info.value)


def test_missing_config_lists_where_it_looked(tmp_path, write_suite, basic_suite) -> None:
    data = basic_suite()
    data["entries"]["other"]["config"] = "nowhere.yaml"
    with pytest.raises(MissingPathError, match=r"entries.other.config: config 'nowhere.yaml' not found \(looked at"):
        load_suite(write_suite(tmp_path / "s.yaml", data))


def test_evaluation_options_become_evaluate_flags(tmp_path, write_suite, basic_suite) -> None:
    data = basic_suite(evaluation={"parity": "sifa", "flip": True, "device": "cpu"})
    suite = load_suite(write_suite(tmp_path / "s.yaml", data))
    args = suite.spec.evaluation.cli_args()
    assert args[:4] == ["--split", "test", "--metrics", "all"]
    assert args[args.index("--parity") + 1] == "sifa" and "--flip" in args and "--units" not in args
    assert "--device" not in suite.spec.evaluation.result_args()
