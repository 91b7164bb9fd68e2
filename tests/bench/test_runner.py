"""Tests of the bench runner with a fake ``python -m tcsa_uda`` (states, resume, failures, jobs, datasets)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tcsa_uda.bench.runner import (
    CELL_FILE,
    EVAL_OUTPUTS,
    LOCK_FILE,
    BenchError,
    BenchOptions,
    cell_spec,
    cell_state,
    child_env,
    dataset_paths,
    format_seconds,
    plan,
    run_bench,
)
from tcsa_uda.bench.suite import load_suite
from tcsa_uda.errors import MissingPathError


def _opts(out: Path, fake: Path, jobs: int = 2) -> BenchOptions:
    return BenchOptions(out=out, jobs=jobs, threads=1, progress=False, python=str(fake))


def test_runs_cells_records_failures_and_continues(tmp_path, fake_python, write_suite, basic_suite, fake_calls) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite()))
    reported: list[Path] = []

    def report(s, out):
        reported.append(out)
        return {"markdown": out / "bench.md"}

    res = run_bench(suite, _opts(tmp_path / "out", fake_python), report)
    status = {o.cell.name: o.status for o in res.outcomes}
    assert status == {
        "base/ds/MR2CT/seed0": "done",
        "other/ds/MR2CT/seed0": "done",
        "broken/ds/MR2CT/seed0": "failed",
        "base/ds/MR2CT/seed1": "done",
        "other/ds/MR2CT/seed1": "done",
        "broken/ds/MR2CT/seed1": "failed",
    }
    assert reported == [(tmp_path / "out").resolve()]
    fail = res.failures[0]
    assert "train exited with 2: error: fail=train" in fail.message
    assert fail.log is not None and fail.log.name == "train.log" and "unknown config key" in fail.log.read_text()
    record = json.loads((tmp_path / "out/cells/broken/ds/MR2CT/seed0" / CELL_FILE).read_text())
    assert (record["status"], record["step"], record["returncode"]) == ("failed", "train", 2)
    done = json.loads((tmp_path / "out/cells/base/ds/MR2CT/seed0" / CELL_FILE).read_text())
    assert done["status"] == "done" and set(done["wall_s"]) == {"train", "evaluate"}
    train_calls = [c for c in fake_calls(fake_python) if c.startswith("train")]
    assert len(train_calls) == 6
    assert all("num_threads=1" in c and "progress=false" in c and "--resume" not in c for c in train_calls)
    assert any("data.source=MR data.target=CT seed=1" in c for c in train_calls)


def test_second_run_skips_finished_cells_and_retries_failed_ones(
    tmp_path, fake_python, write_suite, basic_suite, fake_calls
) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite()))
    out = tmp_path / "out"
    run_bench(suite, _opts(out, fake_python))
    before = (out / "cells/base/ds/MR2CT/seed0/eval/metrics.csv").stat().st_mtime_ns
    n_calls = len(fake_calls(fake_python))
    res = run_bench(suite, _opts(out, fake_python))
    assert [o.status for o in res.outcomes if o.cell.entry != "broken"] == ["skipped"] * 4
    assert len(res.failures) == 2
    assert (out / "cells/base/ds/MR2CT/seed0/eval/metrics.csv").stat().st_mtime_ns == before
    assert len(fake_calls(fake_python)) == n_calls + 2  # only the two failing trainings again
    log = (out / "bench.log").read_text()
    assert "skip base/ds/MR2CT/seed0: evaluation complete" in log
    assert "4 complete (skipped), 2 to run" in log


def test_half_trained_cell_resumes_and_trained_cell_only_evaluates(
    tmp_path, fake_python, write_suite, basic_suite, fake_calls
) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite(seeds=[0])))
    out = tmp_path / "out"
    run_bench(suite, _opts(out, fake_python))
    base, other = out / "cells/base/ds/MR2CT/seed0", out / "cells/other/ds/MR2CT/seed0"
    shutil.rmtree(base / "eval")
    (base / "run/final.pt").unlink()  # interrupted training: config.yaml but no final.pt
    shutil.rmtree(other / "eval")  # trained, not evaluated
    spec = cell_spec(suite, suite.cells()[0])
    assert cell_state(base, spec) == ("resume", "")
    n_calls = len(fake_calls(fake_python))
    res = run_bench(suite, _opts(out, fake_python, jobs=1))
    assert {o.cell.entry: o.status for o in res.outcomes} == {"base": "done", "other": "done", "broken": "failed"}
    new = fake_calls(fake_python)[n_calls:]
    trains = [c for c in new if c.startswith("train")]
    assert any(c.endswith("--resume") and "/cells/base/" in c for c in trains)
    assert not any("/cells/other/" in c for c in trains)
    assert any(c.startswith("evaluate") and "/cells/other/" in c for c in new)
    assert "resumed" in (base / "train.log").read_text()
    assert json.loads((base / CELL_FILE).read_text())["attempts"] == 2


def test_changed_spec_makes_a_cell_stale_and_leaves_it_alone(tmp_path, fake_python, write_suite, basic_suite) -> None:
    data = basic_suite(seeds=[0])
    suite = load_suite(write_suite(tmp_path / "suite.yaml", data))
    out = tmp_path / "out"
    run_bench(suite, _opts(out, fake_python))
    data["entries"]["other"]["overrides"] = ["optim.lr=0.1"]
    suite2 = load_suite(write_suite(tmp_path / "suite.yaml", data))
    before = (out / "cells/other/ds/MR2CT/seed0/eval/metrics.csv").stat().st_mtime_ns
    res = run_bench(suite2, _opts(out, fake_python))
    stale = [o for o in res.failures if o.cell.entry == "other"]
    assert len(stale) == 1 and "stale" in stale[0].message and "overrides" in stale[0].message
    assert (out / "cells/other/ds/MR2CT/seed0/eval/metrics.csv").stat().st_mtime_ns == before
    assert {o.cell.entry: o.status for o in res.outcomes}["base"] == "skipped"


def test_cell_states(tmp_path) -> None:
    cell = tmp_path / "cell"
    spec = {"seed": 0}
    assert cell_state(cell, spec) == ("new", "")
    (cell / "run").mkdir(parents=True)
    (cell / "run/config.yaml").write_text("x")
    assert cell_state(cell, spec)[0] == "resume"
    (cell / "run/final.pt").write_bytes(b"x")
    assert cell_state(cell, spec)[0] == "evaluate"
    (cell / "eval").mkdir()
    for name in EVAL_OUTPUTS[:-1]:
        (cell / "eval" / name).write_text("x")
    assert cell_state(cell, spec)[0] == "evaluate"  # an incomplete evaluation is redone
    (cell / "eval" / EVAL_OUTPUTS[-1]).write_text("x")
    assert cell_state(cell, spec)[0] == "done"
    (cell / CELL_FILE).write_text(json.dumps({"spec": {"seed": 1}}))
    assert cell_state(cell, spec) == ("stale", "seed")


def test_plan_commands(tmp_path, write_suite, basic_suite) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite()))
    prepared = dataset_paths(suite, tmp_path / "out")
    planned = plan(suite, tmp_path / "out", prepared, "PY", threads=1)
    first = planned[0]
    assert first.train[:4] == ["PY", "-m", "tcsa_uda", "train"]
    assert first.train[-2:] == ["--out", str(tmp_path / "out/cells/base/ds/MR2CT/seed0/run")]
    assert f"data.prepared={prepared['ds']}" in first.train
    ev = first.evaluate
    assert ev[3:5] == ["evaluate", str(tmp_path / "out/cells/base/ds/MR2CT/seed0/run")]
    assert ev[ev.index("--domain") + 1] == "CT" and ev[ev.index("--split") + 1] == "test"
    assert ev[-1] == "--no-progress"
    broken = next(p for p in planned if p.cell.entry == "broken")
    assert "fail=train" in broken.train


def test_child_env_pins_threads_and_this_package(monkeypatch) -> None:
    import tcsa_uda

    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    env = child_env(1)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    root = str(Path(tcsa_uda.__file__).resolve().parent.parent)
    assert env["PYTHONPATH"] == root + os.pathsep + "elsewhere"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in child_env(0)


def test_phantom_dataset_is_built_once_and_options_are_checked(
    tmp_path, fake_python, write_suite, basic_suite, fake_calls
) -> None:
    data = basic_suite(seeds=[0])
    data["datasets"] = {"ph": {"phantom": {"seed": 1, "cases": 4, "shape": [16, 32, 32], "size": 32}}}
    data["entries"].pop("broken")
    out = tmp_path / "out"
    suite = load_suite(write_suite(tmp_path / "suite.yaml", data))
    run_bench(suite, _opts(out, fake_python))
    run_bench(suite, _opts(out, fake_python))
    calls = fake_calls(fake_python)
    assert sum(c.startswith("phantom") for c in calls) == 1
    assert any(c.startswith("phantom") and "--shape 16 32 32" in c and "--cases 4" in c for c in calls)
    assert any(c.startswith("prepare") and "--size 32" in c for c in calls)
    data["datasets"]["ph"]["phantom"]["cases"] = 5
    with pytest.raises(BenchError, match="was built with"):
        run_bench(load_suite(write_suite(tmp_path / "suite.yaml", data)), _opts(out, fake_python))


def test_prepared_dataset_must_exist_and_be_prepared(tmp_path, write_suite, basic_suite, prepared_folder) -> None:
    data = basic_suite()
    data["datasets"]["ds"]["prepared"] = str(tmp_path / "nowhere")
    suite = load_suite(write_suite(tmp_path / "suite.yaml", data))
    with pytest.raises(MissingPathError, match=r"nowhere.*tcsa-uda prepare"):
        dataset_paths(suite, tmp_path / "out")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(BenchError, match=r"index\.json"):
        dataset_paths(suite, tmp_path / "out")
    prepared_folder(tmp_path / "nowhere")
    assert dataset_paths(suite, tmp_path / "out")["ds"] == (tmp_path / "nowhere").resolve()


def test_bad_options_are_refused(tmp_path, fake_python, write_suite, basic_suite) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite()))
    with pytest.raises(BenchError, match="jobs >= 1"):
        run_bench(suite, _opts(tmp_path / "out", fake_python, jobs=0))


def test_format_seconds() -> None:
    assert format_seconds(3725.4) == "1:02:05"
    assert format_seconds(-1) == "0:00:00"


def test_a_running_bench_locks_its_folder_and_a_stale_lock_is_taken_over(
    tmp_path, fake_python, write_suite, basic_suite
) -> None:
    suite = load_suite(write_suite(tmp_path / "suite.yaml", basic_suite(seeds=[0])))
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_FILE).write_text(f"{os.getpid()}\n")  # a live process holds it
    with pytest.raises(BenchError, match=rf"another bench \(process {os.getpid()}\) is running"):
        run_bench(suite, _opts(out, fake_python))
    (out / LOCK_FILE).write_text("999999999\n")  # no such process
    res = run_bench(suite, _opts(out, fake_python))
    assert len(res.outcomes) == 3 and not (out / LOCK_FILE).exists()
