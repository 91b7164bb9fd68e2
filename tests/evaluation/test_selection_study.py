"""Tests of tcsa_uda.evaluation.selection_study: replaying criteria on logged selection scores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.selection_study import replay, study_markdown, study_run

# step: source_val_dice, target_entropy (lower better), target_aux_agreement, oracle
TABLE = {
    25: (0.30, 0.20, 0.80, 0.10),
    50: (0.60, 0.10, 0.85, 0.40),  # best source_val_dice, best oracle
    75: (0.50, 0.05, 0.95, 0.30),  # lowest entropy, highest agreement
    100: (0.55, 0.08, 0.90, 0.20),  # last
}


def _rows(table: Mapping[int, tuple[float, float, float, float]]) -> list[dict]:
    rows = []
    for step, (sv, ent, agree, oracle) in table.items():
        rows.append({"step": step, "kind": "train", "loss": 1.0 / step})
        rows.append(
            {
                "step": step,
                "kind": "select",
                "source_val_dice": sv,
                "oracle": oracle,
                "target_entropy": ent,
                "target_aux_agreement": agree,
            }
        )
    return rows


def _write_run(run: Path, stages: dict[str, list[dict]]) -> Path:
    for name, rows in stages.items():
        (run / name).mkdir(parents=True)
        (run / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return run


def test_replay_follows_each_rule() -> None:
    rows = [r for r in _rows(TABLE) if r["kind"] == "select"]
    assert replay(rows, "last") == 100
    assert replay(rows, "source_val_dice") == 50
    assert replay(rows, "target_entropy") == 75  # lower is better
    assert replay(rows, "target_aux_agreement") == 75
    assert replay(rows, "oracle") == 50


def test_replay_ties_keep_the_first_point_like_the_engine() -> None:
    rows = [
        {"step": 10, "source_val_dice": 0.5},
        {"step": 20, "source_val_dice": 0.5},
        {"step": 30, "source_val_dice": math.nan},
    ]
    assert replay(rows, "source_val_dice") == 10


def test_replay_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="no 'select' rows"):
        replay([], "last")
    with pytest.raises(ConfigError, match="'oracle' was not logged"):
        replay([{"step": 1, "source_val_dice": 0.1}], "oracle")
    with pytest.raises(ConfigError, match="NaN at every"):
        replay([{"step": 1, "source_val_dice": math.nan}], "source_val_dice")


def test_study_run_picks_regret_and_correlation(tmp_path: Path) -> None:
    run = _write_run(
        tmp_path / "run",
        {
            "stage1_adaoutput": _rows(TABLE),
            "stage2_tcsa": _rows({10: (0.1, 0.5, 0.5, 0.2), 20: (0.2, 0.4, 0.6, 0.3), 30: (0.3, 0.3, 0.7, 0.4)}),
        },
    )
    s1, s2 = study_run(run)
    assert s1.stage == "stage 1 (adaoutput)" and s1.points == 4
    assert {c: p.step for c, p in s1.picks.items()} == {
        "last": 100,
        "source_val_dice": 50,
        "target_entropy": 75,
        "target_aux_agreement": 75,
    }
    assert s1.best.step == 50 and s1.best.oracle == pytest.approx(0.40)
    assert s1.regret("last") == pytest.approx(0.20)
    assert s1.regret("target_entropy") == pytest.approx(0.10)
    assert s1.regret("source_val_dice") == 0.0
    # stage 2: every score moves with the oracle -> signed Spearman +1 (entropy falls as oracle rises)
    assert s2.correlation == pytest.approx({"source_val_dice": 1.0, "target_entropy": 1.0, "target_aux_agreement": 1.0})
    # stage 1: source_val_dice ranks 25<75<100<50 vs oracle 25<100<75<50 -> rho = 0.8
    assert s1.correlation["source_val_dice"] == pytest.approx(0.8)


def test_a_resumed_run_keeps_the_later_row_of_a_step(tmp_path: Path) -> None:
    rows = [
        *_rows(TABLE),
        {
            "step": 100,
            "kind": "select",
            "source_val_dice": 0.9,
            "oracle": 0.9,
            "target_entropy": 0.01,
            "target_aux_agreement": 0.99,
        },
    ]
    (study,) = study_run(_write_run(tmp_path / "run", {"stage1_tcsa": rows}))
    assert study.points == 4
    assert study.best.step == 100 and study.picks["source_val_dice"].step == 100


def test_missing_oracle_or_select_rows_are_clear_errors(tmp_path: Path) -> None:
    no_oracle = [{k: v for k, v in r.items() if k != "oracle"} for r in _rows(TABLE)]
    with pytest.raises(ConfigError, match="log_oracle=true"):
        study_run(_write_run(tmp_path / "a", {"stage1_tcsa": no_oracle}))
    with pytest.raises(ConfigError, match="no stage folder with 'select' rows"):
        study_run(_write_run(tmp_path / "b", {"stage1_tcsa": [{"step": 1, "kind": "train", "loss": 1.0}]}))


@pytest.mark.slow
def test_markdown_table_and_script(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "seed0", {"stage1_tcsa": _rows(TABLE)})
    b = _write_run(
        tmp_path / "seed1", {"stage1_tcsa": _rows({k: (v[0], v[1], v[2], v[3] + 0.1) for k, v in TABLE.items()})}
    )
    md = study_markdown({"seed0": study_run(a)[0], "seed1": study_run(b)[0]})
    assert "| `last` | 20.0 (100) | 30.0 (100) | 20.0 |" in md
    assert "| `source_val_dice` | 40.0 (50) | 50.0 (50) | 0.0 | +0.80 |" in md
    assert "| oracle (upper bound, uses target test labels) | 40.0 (50) | 50.0 (50) |" in md
    script = Path(__file__).resolve().parents[2] / "scripts" / "selection_study.py"
    out = subprocess.run(
        [sys.executable, str(script), str(a), str(b)], capture_output=True, text=True, check=True
    ).stdout
    assert "### stage 1 (tcsa): 4 logged points per run" in out and "| criterion | seed0 | seed1 |" in out
