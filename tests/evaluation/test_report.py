"""End-to-end test of tcsa_uda.evaluation.report on a tiny trained two-stage run (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from tcsa_uda.config import load_config
from tcsa_uda.data.phantom import generate_phantom
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.engine.checkpoint import load_checkpoint, save_checkpoint
from tcsa_uda.engine.trainer import train
from tcsa_uda.errors import ConfigError, MissingPathError
from tcsa_uda.evaluation.report import (
    FIGURE_FILES,
    ReportOptions,
    build_report,
    default_before,
    report_dataset,
    spread_slices,
)
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

FAST = ReportOptions(n_slices=3, tsne_slices=4, tsne_per_class=20)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Phantom (16, 48, 48) x 5 cases -> prepared at 32 -> adaoutput 2 its + tcsa 2 its."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    generate_phantom(root / "raw", seed=3, cases=5, shape=(16, 48, 48), progress=False)
    prepare_dataset(root / "raw", root / "prepared", size=32, progress=False)
    idx = load_prepared(root / "prepared")
    g = torch.Generator().manual_seed(0)
    torch.save({"embeddings": torch.randn(2, idx.num_classes, 16, generator=g)}, root / "text.pt")
    overrides = [
        f"data.prepared={root / 'prepared'}", "data.source=MR", "data.target=CT", "data.batch_size=2",
        "model.name=light", "model.base_width=8", "model.disc_width=8", f"text.encoder=file:{root / 'text.pt'}",
        "tensorboard=false", "progress=false", "device=cpu", "log_every=1",
        "selection.every=1", "selection.log_oracle=true",
        "stages=[{method: adaoutput, iterations: 2}, {method: tcsa, iterations: 2}]",
        "stages.1.options.align_start=1",  # after stages=: the VL term acts at stage 2's 2nd iteration
    ]  # fmt: skip
    train(load_config(TrainConfig, None, overrides), root / "run")
    yield root / "run"
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def report(tiny_run):
    return build_report(tiny_run, options=FAST)


def test_report_lists_every_figure_and_each_is_a_png(report, tiny_run):
    out = tiny_run / "report"
    assert report.path == out / "report.md"
    md = report.path.read_text(encoding="utf-8")
    assert set(report.figures) == set(FIGURE_FILES)
    for kind, name in FIGURE_FILES.items():
        assert f"]({name})" in md, kind
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50 and img.shape[2] in (3, 4)
    assert "### Vision-language term" in md  # stage 2 logged the VL diagnostics
    # the evaluation table and its files, the model-selection note
    assert "| Method | Dice myocardium" in md and "Dice Mean" in md
    assert "Model selection: last iteration (2); no selection on target labels" in md
    for name in ("metrics.csv", "metrics.json", "summary.md", "summary.tex"):
        assert (out / "evaluation" / name).is_file()
        assert f"(evaluation/{name})" in md
    meta = json.loads((out / "evaluation" / "metrics.json").read_text())["meta"]
    assert meta["domain"] == "CT" and meta["split"] == "test"
    # the oracle was logged: each stage's label-free criteria are replayed against it
    assert "## Model selection against the oracle" in md
    assert "### stage 1 (adaoutput): 2 selection points" in md and "### stage 2 (tcsa): 2 selection points" in md
    assert "| `source_val_dice` |" in md and "| oracle (upper bound, uses target test labels) |" in md


def test_report_before_is_stage_one_and_tsne_uses_both_domains(report, tiny_run):
    stage1 = tiny_run / "stage1_adaoutput" / "final.pt"
    assert report.before == stage1 == default_before(tiny_run)
    md = report.path.read_text(encoding="utf-8")
    assert f"Before adaptation: `{stage1}` (stage 1's selected checkpoint" in md
    assert "from 4 MR slices, 4 CT slices" in md
    assert "Features: f_hi" in md


def test_spread_slices_even_and_foreground(tiny_run):
    index = load_prepared(tiny_run.parent / "prepared")
    cases = index.cases("CT", "test")
    pool = [(c.id, i) for c in cases for i in c.foreground_slices]
    refs = spread_slices(cases, 3)
    got = [(r.case.id, r.index) for r in refs]
    assert len(pool) > 3 and len(set(got)) == 3
    assert got[0] == pool[0] and got[-1] == pool[-1]  # first and last foreground slices of the split
    assert abs(pool.index(got[1]) - (len(pool) - 1) / 2) <= 0.5  # the middle one
    for r in refs:
        assert np.asarray(r.case.load_label()[r.index]).any()
    assert len(spread_slices(cases, 10_000)) == len(pool)
    assert spread_slices(cases, 0) == []


def test_default_before_needs_two_stages(tmp_path, tiny_run):
    (tmp_path / "one" / "stage1_source_only").mkdir(parents=True)
    assert default_before(tmp_path / "one") is None
    two = tmp_path / "two"
    for name in ("stage1_adaoutput", "stage2_tcsa"):
        (two / name).mkdir(parents=True)
    assert default_before(two) is None  # stage 1 has no checkpoint
    shutil.copy(tiny_run / "stage1_adaoutput" / "final.pt", two / "stage1_adaoutput" / "final.pt")
    assert default_before(two) == two / "stage1_adaoutput" / "final.pt"
    shutil.copy(tiny_run / "stage1_adaoutput" / "final.pt", two / "stage1_adaoutput" / "best.pt")
    assert default_before(two) == two / "stage1_adaoutput" / "best.pt"  # the selected weights


def test_dataset_from_checkpoint_or_option(tmp_path, tiny_run):
    ck = load_checkpoint(tiny_run / "final.pt")
    prepared = tiny_run.parent / "prepared"
    assert report_dataset(ck, None, "final.pt").root == prepared
    ck["config"]["data"]["prepared"] = str(tmp_path / "gone")
    with pytest.raises(MissingPathError, match="pass --dataset PREPARED_DIR"):
        report_dataset(ck, None, "final.pt")
    assert report_dataset(ck, prepared, "final.pt").root == prepared
    ck["config"]["data"]["prepared"] = ""
    with pytest.raises(ConfigError, match="no prepared dataset recorded"):
        report_dataset(ck, None, "final.pt")
    with pytest.raises(ConfigError, match="raw dataset folder"):
        report_dataset(ck, tiny_run.parent / "raw", "final.pt")


def test_one_stage_run_skips_before_with_note(tmp_path, tiny_run):
    run = tmp_path / "single"
    (run / "stage1_tcsa").mkdir(parents=True)
    rows = [json.loads(line) for line in (tiny_run / "stage2_tcsa" / "metrics.jsonl").read_text().splitlines()]
    lines = [json.dumps({k: v for k, v in r.items() if k != "oracle"}) for r in rows]  # a run without the oracle
    (run / "stage1_tcsa" / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ck = load_checkpoint(tiny_run / "final.pt")
    save_checkpoint(run / "final.pt", {k: v for k, v in ck.items() if k != "format"})
    res = build_report(run, out=tmp_path / "rep", options=ReportOptions(n_slices=2, tsne_slices=2, tsne_per_class=10))
    assert res.before is None and set(res.figures) == set(FIGURE_FILES)
    assert any("shows the final model only" in n for n in res.notes)
    md = res.path.read_text(encoding="utf-8")
    assert "Before adaptation: none (see notes)" in md and "## Notes" in md
    assert "Model selection against the oracle" not in md
    assert res.path == tmp_path / "rep" / "report.md"


def test_not_a_run_folder(tiny_run):
    with pytest.raises(ConfigError, match="expected a run folder"):
        build_report(tiny_run / "final.pt")
