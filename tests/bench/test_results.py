"""Tests of the bench's results document on hand-made cells whose verdicts are known in advance."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tcsa_uda.bench.results import group_conclusion, vl_curves, wall_time, write_results
from tcsa_uda.bench.runner import CELL_FILE, cell_spec
from tcsa_uda.bench.suite import Cell, Suite, load_suite
from tcsa_uda.cli.app import app
from tcsa_uda.errors import ConfigError

# class-mean Dice of each entry (both classes equal); "noisy" alternates around tcsa's value
LEVEL = {"so": 0.20, "tcsa": 0.50, "better": 0.60, "worse": 0.40, "twin": 0.50, "orc": 0.80}
CASES = ("c0", "c1", "c2")


def dice(entry: str, seed: int, i: int) -> float:
    if entry == "noisy":  # tcsa's value +- 5 points: 4 units up, 5 down -> mean -0.6 points
        return dice("tcsa", seed, i) + (0.05 if (seed + i) % 2 else -0.05)
    return LEVEL[entry] + 0.01 * seed + 0.02 * i


def write_cell(out: Path, suite: Suite, cell: Cell, vl: bool = False) -> None:
    """A complete cell (evaluation files, cell record with times) and, with ``vl``, a TCSA stage log."""
    cdir = out / cell.rel_dir
    (cdir / "eval").mkdir(parents=True)
    rows = ["case,class,class_name,dice,assd_mm_pooled"]
    for i, case in enumerate(CASES):
        for k, name in ((1, "A"), (2, "B")):
            d = dice(cell.entry, cell.seed, i)
            rows.append(f"{case},{k},{name},{d!r},{10 - 10 * d!r}")
    (cdir / "eval/metrics.csv").write_text("\n".join(rows) + "\n")
    meta = {"domain": cell.target, "split": "test", "model_selection": "last iteration", "settings": {}}
    (cdir / "eval/metrics.json").write_text(json.dumps({"meta": meta}))
    for name in ("summary.md", "summary.tex"):
        (cdir / "eval" / name).write_text("-")
    minute = 10 * cell.seed + len(cell.entry)  # distinct start times; each cell lasts 1 min
    record = {
        "spec": cell_spec(suite, cell),
        "status": "done",
        "started": f"2026-01-01T10:{minute:02d}:00Z",
        "finished": f"2026-01-01T10:{minute + 1:02d}:00Z",
        "total_wall_s": 60.0,
    }
    (cdir / CELL_FILE).write_text(json.dumps(record))
    if vl:
        stage = cdir / "run/stage2_tcsa"
        stage.mkdir(parents=True)
        lines = [{"step": 1, "kind": "performance"}]
        for step in (10, 20):
            lines.append(
                {
                    "step": step,
                    "kind": "train",
                    "vl_s": 0.1 * step + cell.seed,
                    "vl_t": 0.3 * step + cell.seed,
                    "vl_grad_f_vis": 1e-3 * step,
                    "vl_grad_embed": 1.0,
                    "vl_s_sv_std": 0.2,
                    "vl_t_sv_std": 0.4,
                }
            )
        lines.append({"step": 20, "kind": "select", "target_entropy": 0.1})
        (stage / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")


@pytest.fixture
def suite(tmp_path, write_suite, prepared_folder) -> Suite:
    cfg = "phantom_mr2ct.yaml"
    data = {
        "name": "hand",
        "entries": {
            "so": {"config": cfg, "lower_bound": True, "label": "Source only"},
            "tcsa": {"config": cfg, "reference": True},
            "orc": {"config": cfg, "upper_bound": True, "label": "Oracle"},
            "better": {"config": cfg, "group": "abl", "overrides": ["stages.1.options.vl=false"]},
            "worse": {"config": cfg, "group": "abl", "overrides": ["stages.1.options.proto=false"]},
            "twin": {"config": cfg, "group": "text", "overrides": ["text.shuffle=true"]},
            "noisy": {"config": cfg, "group": "text", "overrides": ["text.encoder=onehot"]},
        },
        "groups": {
            "main": {"title": "Main table", "question": "Does a baseline differ?"},
            "abl": {"title": "Ablations"},
            "text": {"title": "Text", "question": "Does the text matter?"},
        },
        "datasets": {"ds": {"prepared": str(prepared_folder(tmp_path / "prepared"))}},
        "directions": {"MR2CT": {"source": "MR", "target": "CT"}},
        "seeds": [0, 1, 2],
        "statistics": {"n_boot": 500},
    }
    return load_suite(write_suite(tmp_path / "suite.yaml", data))


def _fill(out: Path, suite: Suite) -> None:
    for cell in suite.cells():
        write_cell(out, suite, cell, vl=cell.entry in ("tcsa", "better"))


def test_document_tables_conclusions_and_figures(tmp_path, suite) -> None:
    out, page = tmp_path / "out", tmp_path / "out/results.md"
    _fill(out, suite)
    files = write_results(suite, out, page, "tcsa-uda bench suite.yaml --out out --results out/results.md")
    assert files == {
        "markdown": page,
        "dice_figure": page.with_name("results_dice.png"),
        "vl_figure": page.with_name("results_vl.png"),
    }
    for key in ("dice_figure", "vl_figure"):
        assert files[key].read_bytes()[:4] == b"\x89PNG"
    md = page.read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == [
        "## Setup",
        "## Main table",
        "## Ablations",
        "## Text",
        "## Vision-language diagnostics",
        "## Conclusions",
    ]
    assert "Generated by `tcsa-uda bench suite.yaml --out out --results out/results.md`" in md
    assert "21 of 21 cells complete" in md
    # 21 cells of 1 min each; the first starts at 10:02 (so, seed 0) and the last ends at 10:27 (better, seed 2)
    assert "Wall time: 0:25:00 from the first cell's start" in md and "0:21:00 summed over the cells" in md
    ablations = md.split("## Ablations")[1].split("##")[0]
    assert "| tcsa | 3 | 53.0 ± 1.0 |" in ablations  # the reference heads every group table
    assert "| better | 3 | 63.0 ± 1.0 | 3.7 ± 0.1 | +10.0 [+10.0, +10.0] (n=9) |" in ablations
    main = md.split("## Main table")[1].split("##")[0]
    assert "MR2CT gap closed (%)" in main and "| Oracle † | 3 | 83.0 ± 1.0 |" in main
    assert "| tcsa | 3 | 53.0 ± 1.0 | 4.7 ± 0.1 | reference | 50 |" in main  # (53 - 23) / (83 - 23)

    vl = md.split("## Vision-language diagnostics")[1].split("##")[0]
    # (vl_s + vl_t) / 2 = 0.2 x step + seed -> mean over seeds 3 at it 10, 5 at it 20; grad 1e-3 x step
    assert "| tcsa | MR2CT | 3 (it 10) -> 5 (it 20) | 0.01 (it 10) -> 0.02 (it 20) | 0.3 (it 10) -> 0.3 (it 20) |" in vl
    assert "| better | MR2CT |" in vl and "| Source only |" not in vl

    conclusions = md.split("## Conclusions")[1]
    assert "of these 5 comparisons, about 0.3 would exclude zero by chance alone" in conclusions
    # the oracle is not a baseline; the only baseline differs
    assert (
        "**Does a baseline differ?** In 1 of 1 entry/block pair(s) the 95% CI of the difference to tcsa "
        "excludes zero (listed below)." in conclusions
    )
    assert "Lower Dice than tcsa (95% CI below zero): Source only (-30.0 [-30.0, -30.0] (n=9))." in conclusions
    assert "Higher Dice than tcsa (95% CI above zero): better (+10.0" in conclusions
    assert "Lower Dice than tcsa (95% CI below zero): worse (-10.0" in conclusions
    assert "**Does the text matter?** No detectable effect" in conclusions
    assert "(largest mean |ΔDice| 0.6 points)" in conclusions  # noisy: -0.6, twin: 0
    assert (
        "No detectable difference from tcsa (the CI contains zero) in 2 entry/block pair(s): twin, noisy."
        in conclusions
    )
    assert "MR2CT: tcsa ranks 1 of 2 by mean Dice among the entries without target labels (best: tcsa, 53.0)." in (
        conclusions
    )
    assert (
        "MR2CT: of the 60.0-point gap between Source only (23.0) and Oracle † (83.0), the entries close tcsa 50%."
        in (conclusions)
    )


def test_a_detectable_difference_answers_the_question_with_the_list(tmp_path, suite) -> None:
    out = tmp_path / "out"
    _fill(out, suite)
    from tcsa_uda.bench.report import collect, summarise_block

    rows, infos = collect(suite, out)
    block = ("ds", "MR2CT")
    blocks = {block: (infos[block], summarise_block(rows, block, infos[block], suite))}
    lines = group_conclusion(suite, "abl", blocks)
    assert lines[0].startswith("Higher Dice than tcsa") and lines[1].startswith("Lower Dice than tcsa")
    assert len(lines) == 2  # the group has no question


def test_vl_curves_are_means_over_seeds(tmp_path, suite) -> None:
    out = tmp_path / "out"
    _fill(out, suite)
    curves = vl_curves(suite, out, "vl_loss")
    assert set(curves) == {"tcsa", "better"}
    steps, values = curves["tcsa"][("ds", "MR2CT")]
    assert steps.tolist() == [10.0, 20.0]
    # (vl_s + vl_t) / 2 = 0.2 x step + seed, mean over seeds 0, 1, 2 -> 0.2 x step + 1
    assert values.tolist() == pytest.approx([3.0, 5.0])
    sv = vl_curves(suite, out, "vl_sv_std")["better"][("ds", "MR2CT")][1]
    assert sv.tolist() == pytest.approx([0.3, 0.3])


def test_gap_closed_undefined_is_said(tmp_path, suite, monkeypatch) -> None:
    out, page = tmp_path / "out", tmp_path / "r.md"
    monkeypatch.setitem(LEVEL, "orc", 0.10)  # the upper bound below the lower bound
    _fill(out, suite)
    write_results(suite, out, page, "cmd")
    md = page.read_text()
    assert (
        "MR2CT: gap closed is undefined: the upper bound Oracle † (13.0) is not detectably above the lower bound "
        "Source only (23.0) at this budget." in md
    )
    assert "MR2CT: tcsa ranks 1 of 2" in md


def test_gap_within_noise_is_undefined_in_every_table(tmp_path, suite, monkeypatch) -> None:
    out, page = tmp_path / "out", tmp_path / "r.md"
    plain = dice

    def noisy_oracle(entry: str, seed: int, i: int) -> float:
        # the oracle 0.3 points above source-only on average, +5 / -3.5 points per unit: CI contains zero
        if entry == "orc":
            return plain("so", seed, i) + (0.05 if (seed + i) % 2 else -0.035)
        return plain(entry, seed, i)

    monkeypatch.setitem(globals(), "dice", noisy_oracle)
    _fill(out, suite)
    write_results(suite, out, page, "cmd")
    md = page.read_text()
    assert "MR2CT: gap closed is undefined: the upper bound Oracle † (23.3) is not detectably above" in md
    main = md.split("## Main table")[1].split("##")[0]
    assert "| tcsa | 3 | 53.0 ± 1.0 | 4.7 ± 0.1 | reference | n/a |" in main
    from tcsa_uda.bench.report import write_report

    bench_md = write_report(suite, out)["markdown"].read_text()
    assert "Gap closed: n/a, the upper bound 'Oracle' is not detectably above the lower bound 'Source only'" in bench_md


def test_no_vl_logs_no_vl_figure_and_wall_time_of_nothing(tmp_path, suite) -> None:
    out, page = tmp_path / "out", tmp_path / "r.md"
    for cell in suite.cells():
        write_cell(out, suite, cell)
    files = write_results(suite, out, page, "cmd")
    assert "vl_figure" not in files and "Vision-language diagnostics" not in page.read_text()
    elapsed, summed, n = wall_time(suite, tmp_path / "empty")
    assert math.isnan(elapsed) and summed == 0.0 and n == 0


def test_unknown_group_is_refused(tmp_path, write_suite, prepared_folder) -> None:
    data = {
        "entries": {"a": {"config": "phantom_mr2ct.yaml", "reference": True, "group": "mian"}},
        "groups": {"main": {"title": "Main"}},
        "datasets": {"ds": {"prepared": str(prepared_folder(tmp_path / "prepared"))}},
        "directions": {"MR2CT": {"source": "MR", "target": "CT"}},
        "seeds": [0],
    }
    with pytest.raises(ConfigError, match=r"entries\.a\.group: expected one of main .*found 'mian'"):
        load_suite(write_suite(tmp_path / "s.yaml", data))


def test_cli_report_only_writes_the_results_document(tmp_path, suite) -> None:
    out, page = tmp_path / "out", tmp_path / "pages/res.md"
    _fill(out, suite)
    result = CliRunner().invoke(
        app, ["bench", str(suite.path), "--out", str(out), "--report-only", "--jobs", "2", "--results", str(page)]
    )
    assert result.exit_code == 0, result.output
    assert "results: " in result.output and page.is_file()
    assert f"--jobs 2 --results {page}`" in page.read_text()
    assert (out / "bench.md").is_file()
