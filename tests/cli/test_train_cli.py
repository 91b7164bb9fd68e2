"""Tests of ``tcsa-uda train``: user errors are one line with exit status 2, and runs stop safely."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

from tcsa_uda.cli import main
from tcsa_uda.config import load_config, save_config
from tcsa_uda.engine.checkpoint import load_checkpoint
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_data) -> Path:
    """A YAML config of a tiny 1-stage run (phantom, light model, CPU, checkpoint every 2 iterations)."""
    root = tmp_path_factory.mktemp("train_cli")
    tiny_data(root)
    cfg = load_config(TrainConfig, None, [
        f"data.prepared={root / 'prepared'}", "data.source=MR", "data.target=CT", "data.batch_size=2",
        "model.name=light", "model.base_width=8", f"text.encoder=file:{root / 'text.pt'}", "tensorboard=false",
        "progress=false", "device=cpu", "checkpoint_every=2", "stages=[{method: source_only, iterations: 4}]",
    ])  # fmt: skip
    save_config(cfg, root / "tiny.yaml")
    return root / "tiny.yaml"


def _train(capsys, *args: str) -> tuple[int, str]:
    code = main(["train", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_resume_refuses_a_checkpoint_with_a_pickled_payload(config, tmp_path, capsys, poison_checkpoint):
    run = tmp_path / "run"
    code, err = _train(capsys, str(config), "--out", str(run))
    assert code == 0, err
    sdir = run / "stage1_source_only"
    (sdir / "final.pt").unlink()
    (run / "final.pt").unlink()
    marker = poison_checkpoint(sdir / "checkpoint_last.pt", sdir / "checkpoint_last.pt")
    before = (run / "config.yaml").read_bytes()
    code, err = _train(capsys, str(config), "--out", str(run), "--resume")
    assert code == 2 and f"Checkpoint {sdir / 'checkpoint_last.pt'}: refused, it holds a pickled object" in _one_line(
        err
    )
    assert not marker.exists() and (run / "config.yaml").read_bytes() == before


def test_non_finite_loss_stops_with_the_iteration_and_the_term_keeping_the_last_good_checkpoint(
    config, tmp_path, capsys, monkeypatch
):
    from tcsa_uda.methods.base import UDAMethod

    real = UDAMethod.training_step

    def diverging(self, batch_s, batch_t, iteration, optimizers):
        logs = real(self, batch_s, batch_t, iteration, optimizers)
        if iteration == 3:  # the step diverged: NaN weights and a NaN loss term
            with torch.no_grad():
                next(self.ctx.segmenter.parameters()).fill_(float("nan"))
            logs["seg"] = float("nan")
        return logs

    monkeypatch.setattr(UDAMethod, "training_step", diverging)
    run = tmp_path / "run"
    code, err = _train(capsys, str(config), "--out", str(run))
    line = _one_line(err)
    last = run / "stage1_source_only" / "checkpoint_last.pt"
    assert code == 2 and "stage 1 (source_only), iteration 3: non-finite loss term(s) seg=nan" in line
    assert f"the last good checkpoint is {last} (iteration 2)" in line and "optim.lr" in line
    state = load_checkpoint(last)
    assert state["iteration"] == 2 and all(
        bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point()
    )
    assert not (run / "stage1_source_only" / "final.pt").exists() and not (run / "final.pt").exists()
    rows = [json.loads(r) for r in (run / "stage1_source_only" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["seg"] == "nan"  # the diverged step is logged


def test_non_finite_weights_are_never_saved(config, tmp_path, capsys, monkeypatch):
    from tcsa_uda.methods.base import UDAMethod

    real = UDAMethod.training_step

    def nan_weights(self, batch_s, batch_t, iteration, optimizers):
        logs = real(self, batch_s, batch_t, iteration, optimizers)
        if iteration == 2:  # the loss was finite, the update was not; iteration 2 is a checkpoint step
            with torch.no_grad():
                dict(self.ctx.segmenter.named_parameters())["backbone.conv1.weight"].fill_(float("inf"))
        return logs

    monkeypatch.setattr(UDAMethod, "training_step", nan_weights)
    run = tmp_path / "run"
    code, err = _train(capsys, str(config), "--out", str(run))
    line = _one_line(err)
    assert code == 2 and "iteration 2: non-finite weights in backbone.conv1.weight" in line
    assert "no checkpoint of this stage was saved yet" in line
    assert not (run / "stage1_source_only" / "checkpoint_last.pt").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["optim.lr=-1"], "optim.lr: expected a finite number > 0, found -1.0."),
        (["optim.lr=.nan"], "Config key 'optim.lr': expected a finite number, found nan."),
    ],
)
def test_bad_learning_rate_is_one_line(config, tmp_path, capsys, extra, message):
    code, err = _train(capsys, str(config), *extra, "--out", str(tmp_path / "run"))
    assert code == 2 and message in _one_line(err) and not (tmp_path / "run").exists()


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 0  # réglage\n".encode("latin-1"))
    code, err = _train(capsys, str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and f"Config file {path} is not UTF-8 text" in _one_line(err)


def test_existing_run_and_unwritable_or_full_output_are_one_line(config, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, err = _train(capsys, str(config), "stages.0.iterations=1", "--out", str(run))
    assert code == 0, err
    code, err = _train(capsys, str(config), "stages.0.iterations=1", "--out", str(run))
    assert code == 2 and f"train --out {run}: the folder already holds a run" in _one_line(err)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = _train(capsys, str(config), "stages.0.iterations=1", "--out", str(blocker / "run"))
    assert code == 2 and f"{blocker / 'run'}: cannot write" in _one_line(err)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)  # every checkpoint write runs out of space
    code, err = _train(capsys, str(config), "stages.0.iterations=1", "--out", str(tmp_path / "full"))
    line = _one_line(err)
    assert (
        code == 2 and f"{tmp_path / 'full' / 'stage1_source_only' / 'final.pt'}: cannot write, the disk is full" in line
    )
