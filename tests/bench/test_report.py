"""Tests of the bench report on hand-made cells whose table values can be computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tcsa_uda.bench.report import read_long_csv, write_report
from tcsa_uda.bench.runner import CELL_FILE, BenchError, cell_spec
from tcsa_uda.bench.suite import Cell, Suite, load_suite

CLASSES = {1: "A", 2: "B"}
CASES = ("c0", "c1", "c2")
BASE = {"so": 0.25, "tcsa": 0.55, "abl": 0.65, "orc": 0.85}
NAN_AT = ("abl", 2, "c0", 1)  # (entry, seed, case, class) whose Dice is undefined


def dice_value(entry: str, seed: int, i: int, k: int) -> float:
    if (entry, seed, CASES[i], k) == NAN_AT:
        return math.nan
    return BASE[entry] + 0.01 * seed + 0.02 * i + 0.04 * (k - 1)


def write_cell(out: Path, suite: Suite, cell: Cell, classes: dict[int, str] = CLASSES) -> None:
    """The files of a complete cell, as the runner and ``tcsa-uda evaluate`` leave them."""
    cdir = out / cell.rel_dir
    (cdir / "eval").mkdir(parents=True)
    rows = ["case,class,class_name,dice,assd_mm_pooled,assd_mm_mean_of_means,hd95_mm"]
    for i, case in enumerate(CASES):
        for k, name in classes.items():
            d = dice_value(cell.entry, cell.seed, i, k)
            rows.append(f"{case},{k},{name},{d!r},{10 - 10 * d!r},{10 - 9 * d!r},{20 - 10 * d!r}")
    (cdir / "eval/metrics.csv").write_text("\n".join(rows) + "\n")
    meta = {
        "domain": cell.target,
        "split": "test",
        "model_selection": "last iteration (10); no selection on target labels",
        "settings": {"metrics": "all", "units": "mm", "assd_variant": "pooled", "empty_policy": "nan", "parity": None},
    }
    (cdir / "eval/metrics.json").write_text(json.dumps({"meta": meta}))
    for name in ("summary.md", "summary.tex"):
        (cdir / "eval" / name).write_text("-")
    record = {"spec": cell_spec(suite, cell), "status": "done", "total_wall_s": 60.0}
    (cdir / CELL_FILE).write_text(json.dumps(record))


@pytest.fixture
def suite(tmp_path, write_suite, prepared_folder) -> Suite:
    data = {
        "name": "hand",
        "entries": {
            "so": {"config": "phantom_mr2ct_source_only.yaml", "lower_bound": True, "label": "Source only"},
            "tcsa": {"config": "phantom_mr2ct.yaml", "reference": True},
            "abl": {"config": "phantom_mr2ct.yaml", "overrides": ["stages.1.options.proto_weight=0"]},
            "orc": {"config": "phantom_mr2ct_source_only.yaml", "upper_bound": True, "label": "Oracle"},
        },
        "datasets": {"ds": {"prepared": str(prepared_folder(tmp_path / "prepared"))}},
        "directions": {"MR2CT": {"source": "MR", "target": "CT"}},
        "seeds": [0, 1, 2],
        "statistics": {"n_boot": 500},
    }
    return load_suite(write_suite(tmp_path / "suite.yaml", data))


def _table_rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| Entry"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def _expected_dice_mean(entry: str) -> tuple[float, float]:
    """Mean and sample std over seeds of the per-seed class mean of the per-class means over volumes."""
    per_seed = []
    for s in (0, 1, 2):
        per_class = [np.nanmean([dice_value(entry, s, i, k) for i in range(3)]) for k in CLASSES]
        per_seed.append(np.mean(per_class))
    return float(np.mean(per_seed)), float(np.std(per_seed, ddof=1))


def test_tables_csv_and_figure(tmp_path, suite) -> None:
    out = tmp_path / "out"
    for cell in suite.cells():
        write_cell(out, suite, cell)
    files = write_report(suite, out)
    assert {p.name for p in files.values()} == {"bench.csv", "bench.md", "bench.tex", "bench.png"}
    assert files["figure"].read_bytes()[:4] == b"\x89PNG"
    rows = read_long_csv(files["csv"])
    assert len(rows) == 4 * 3 * 3 * 2 * 4  # entries x seeds x volumes x classes x metrics
    nan_rows = [r for r in rows if math.isnan(r.value)]
    assert [(r.entry, r.seed, r.case, r.cls, r.metric) for r in nan_rows if r.metric == "dice"] == [
        ("abl", 2, "c0", "A", "dice")
    ]

    md = files["markdown"].read_text()
    table = _table_rows(md)
    assert list(table) == ["Source only", "tcsa", "abl", "Oracle †"]
    header = next(line for line in md.splitlines() if line.startswith("| Entry"))
    assert header.endswith("| ΔDice vs tcsa [95% CI] | Gap closed (%) |")
    # columns: Seeds, Dice A, Dice B, Dice Mean, ASSD A, ASSD B, ASSD Mean, ΔDice, Gap closed
    # by hand: class A = 0.25 + 0.01 x mean seed (1) + 0.02 x mean volume (1) = 0.28, class B = 0.32;
    # the per-seed values differ by 0.01 per seed, so the sample std over seeds is 0.01
    assert table["Source only"][:4] == ["3", "28.0 ± 1.0", "32.0 ± 1.0", "30.0 ± 1.0"]
    for label, entry in (("tcsa", "tcsa"), ("abl", "abl"), ("Oracle †", "orc")):
        mean, std = _expected_dice_mean(entry)
        assert table[label][3].rstrip("*") == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert table["Source only"][4] == "7.2 ± 0.1"  # ASSD A = 10 - 10 x Dice A
    assert table["abl"][1].endswith("*") and table["abl"][3].endswith("*") and not table["tcsa"][3].endswith("*")
    # paired differences: constant per unit, so the interval collapses to the point
    assert table["tcsa"][7] == "reference"
    assert table["Source only"][7] == "-30.0 [-30.0, -30.0] (n=9)"
    assert table["abl"][7] == "+10.0 [+10.0, +10.0] (n=8, 1 dropped)"
    assert table["Oracle †"][7] == "+30.0 [+30.0, +30.0] (n=9)"
    # gap closed on the Dice Mean column
    lo, hi = _expected_dice_mean("so")[0], _expected_dice_mean("orc")[0]
    assert table["Source only"][8] == "0 (lower)" and table["Oracle †"][8] == "100 (upper)"
    assert table["tcsa"][8] == "50"
    assert table["abl"][8] == f"{100 * (_expected_dice_mean('abl')[0] - lo) / (hi - lo):.0f}" == "67"

    assert "95% percentile bootstrap CI (B=500, seed 0)" in md
    assert "paired over (seed, test volume) units" in md
    assert "lower = 'Source only', upper = 'Oracle'" in md
    assert "† upper bound (trained with target labels): not a UDA result" in md
    assert "mean ± std over 3 training seed(s) of the per-seed mean over 3 CT test volume(s)" in md
    assert "Cells complete: 12 of 12" in md and "0:12:00" in md  # 12 cells x 60 s

    tex = files["latex"].read_text()
    assert r"\caption{ds: MR2CT (MR $\to$ CT)." in tex and "percentile bootstrap CI" in tex
    assert r"Oracle $^\dagger$ & 3 &" in tex and r"$\pm$" in tex and r"$\Delta$Dice vs tcsa" in tex


def test_missing_cells_are_named_and_do_not_break_the_table(tmp_path, suite) -> None:
    out = tmp_path / "out"
    for cell in suite.cells():
        if not (cell.entry == "abl" and cell.seed == 1) and cell.entry != "orc":
            write_cell(out, suite, cell)
    failed = out / "cells/orc/ds/MR2CT/seed0"
    failed.mkdir(parents=True)
    (failed / CELL_FILE).write_text(json.dumps({"status": "failed", "message": "train exited with 2: error: boom"}))
    md = write_report(suite, out)["markdown"].read_text()
    table = _table_rows(md)
    assert list(table) == ["Source only", "tcsa", "abl"]
    assert table["abl"][0] == "2"
    header = next(line for line in md.splitlines() if line.startswith("| Entry"))
    assert "ΔDice vs tcsa [95% CI]" in header and "Gap closed" not in header  # no upper bound with results
    assert "abl: 1 of 3 seed(s) without a complete cell (failed or not run): 1." in md
    assert "No complete cell (failed or not run): Oracle." in md
    assert "`orc/ds/MR2CT/seed0`: train exited with 2: error: boom" in md
    assert "`abl/ds/MR2CT/seed1`: not run" in md
    assert "Cells complete: 8 of 12" in md


def test_cells_that_disagree_on_classes_are_an_error(tmp_path, suite) -> None:
    out = tmp_path / "out"
    cells = suite.cells()
    write_cell(out, suite, cells[0])
    write_cell(out, suite, cells[1], classes={1: "A", 2: "C"})
    with pytest.raises(BenchError, match="classes or evaluation settings differ"):
        write_report(suite, out)


def test_no_complete_cell_is_an_error(tmp_path, suite) -> None:
    with pytest.raises(BenchError, match="no complete cell"):
        write_report(suite, tmp_path / "out")
