"""Tests of ``tcsa-uda report`` on a tiny trained two-stage run (phantom, 2 + 2 iterations, CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from tcsa_uda.cli import main
from tcsa_uda.config import load_config
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.engine.checkpoint import load_checkpoint, save_checkpoint
from tcsa_uda.engine.trainer import train
from tcsa_uda.evaluation.report import FIGURE_FILES
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

FAST = ["--slices", "2", "--tsne-slices", "2", "--tsne-pixels", "10", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> Iterator[Path]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report_cli")
    tiny_data(root)
    cfg = load_config(TrainConfig, None, [
        f"data.prepared={root / 'prepared'}", "data.source=MR", "data.target=CT", "data.batch_size=2",
        "model.name=light", "model.base_width=8", "model.disc_width=8", f"text.encoder=file:{root / 'text.pt'}",
        "tensorboard=false", "progress=false", "device=cpu",
        "stages=[{method: adaoutput, iterations: 2}, {method: tcsa, iterations: 2}]",
        "stages.1.options.align_start=1",  # after stages=: the VL term (and its diagnostics) at iteration 2
    ])  # fmt: skip
    train(cfg, root / "run")
    yield root / "run"
    torch.set_num_threads(threads)


def test_report_command_writes_report_and_figures(tiny_run, tmp_path, capsys):
    out = tmp_path / "rep"
    # --before with a run folder: its final.pt (here the run itself, only to exercise the option)
    code = main(["report", str(tiny_run), "--out", str(out), "--before", str(tiny_run), "--feature", "f_vis", *FAST])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"report: {out / 'report.md'}" in printed
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in FIGURE_FILES.values():
        assert f"]({name})" in md
        assert imread(out / name).ndim == 3
    assert f"Before adaptation: `{tiny_run / 'final.pt'}` (given with --before)" in md
    assert "Features: f_vis" in md
    assert (out / "evaluation" / "summary.md").is_file()
    assert load_prepared(tiny_run.parent / "prepared").root.is_dir()


def test_report_command_needs_dataset_when_recorded_one_is_gone(tiny_run, tmp_path, capsys):
    run = tmp_path / "moved"
    run.mkdir()
    ck = load_checkpoint(tiny_run / "final.pt")
    ck["config"]["data"]["prepared"] = str(tmp_path / "nowhere")
    save_checkpoint(run / "final.pt", {k: v for k, v in ck.items() if k != "format"})
    code = main(["report", str(run), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "pass --dataset PREPARED_DIR" in err and "Traceback" not in err
    assert not (run / "report" / "report.md").exists()


@pytest.mark.parametrize("args, match", [(["--feature", "aux"], "f_hi, f_vis"), (["--slices", "0"], "n_slices")])
def test_report_command_bad_options(tiny_run, tmp_path, capsys, args, match):
    code = main(["report", str(tiny_run), "--out", str(tmp_path / "r"), *args])
    assert code == 2 and match in capsys.readouterr().err


def test_report_refuses_a_checkpoint_with_a_pickled_payload(tiny_run, tmp_path, capsys, poison_checkpoint):
    run = tmp_path / "evil_run"
    marker = poison_checkpoint(tiny_run / "final.pt", run / "final.pt")
    code = main(["report", str(run), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and f"Checkpoint {run / 'final.pt'}: refused, it holds a pickled object" in err
    assert "Traceback" not in err and not marker.exists() and not (run / "report").exists()


def test_report_keeps_files_it_did_not_write(tiny_run, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.md").write_text("my report")
    code = main(["report", str(tiny_run), "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and f"report --out {out}: would write over 1 file(s) that report did not create" in err
    assert "--overwrite" in err and (out / "report.md").read_text() == "my report"
    assert not (out / "evaluation").exists()
