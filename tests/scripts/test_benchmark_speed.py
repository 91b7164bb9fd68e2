"""Tests of scripts/benchmark_speed.py on its tiny configuration (the numbers are not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_speed.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def _rows(lines: list[str], first: str) -> list[list[str]]:
    """The body rows of the markdown table whose header line starts with ``first``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(first)) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_one_run_prints_the_ratio_tables_of_every_setting() -> None:
    res = _run("--tiny", "--device", "cpu", "--threads", "1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# benchmark_speed: torch ") and "0 warm-up + 1 timed iterations" in lines[0]
    assert "## tiny: light {'base_width': 8}, 32x32, 2+2 slices/it, 5 classes, text dim 16" in lines
    train = _rows(lines, "| setting | stage | s/it |")
    names = ["fp32", "bf16", "fp16", "channels_last", "bf16+channels_last", "bf16+channels_last+compile"]
    assert [r[0] for r in train] == [n for n in names for _ in range(2)]
    assert [r[1] for r in train[:2]] == ["1 adaoutput", "2 tcsa"]
    for row in train[:2]:  # the baseline: ratio 1, FLOPs counted, achieved FLOP/s from them
        assert float(row[2]) > 0 and row[3] == "1.00x" and row[5] == "1.00x"
        assert float(row[6]) > 0 and re.fullmatch(r"\d+\.\d\d [MGT]FLOP/s", row[7]) and float(row[9]) >= 0, row
    assert re.fullmatch(r"\d+\.\d h", train[1][8])  # 50,000 it of stage 1 + stage 2
    for row in train[2:4] + train[6:10]:  # measured settings: a time and two ratios
        assert float(row[2]) > 0 and re.fullmatch(r"\d+\.\d\dx", row[3]) and re.fullmatch(r"\d+\.\d\dx", row[5])
    assert train[4][2] == train[5][2] == "n/a (fp16 needs CUDA)"
    assert train[10][2].startswith("n/a (compile not measured on CPU")
    infer = _rows(lines, "| setting | slices/s |")
    assert [r[0] for r in infer] == names
    assert float(infer[0][1]) > 0 and infer[0][2] == "1.00x" and infer[2][1] == "n/a (fp16 needs CUDA)"
    assert re.fullmatch(r"\d+\.\d\dx", infer[1][2])


def test_bad_arguments_are_refused() -> None:
    res = _run("--iterations", "0")
    assert res.returncode == 2 and "--iterations and --inference-slices must be >= 1" in res.stderr
    res = _run("--settings", "fp32,fp8")
    assert res.returncode == 2 and "--settings: unknown ['fp8']" in res.stderr


def test_exclusive_mode_measures_the_other_processes() -> None:
    """``--exclusive`` samples the CPU use of other processes (waiting at most 0 s here, no re-timing)."""
    res = _run("--tiny", "--device", "cpu", "--threads", "1", "--settings", "fp32", "--exclusive",
               "--max-wait", "0", "--retries", "0")  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    train = _rows(lines, "| setting | stage | s/it |")
    assert [r[0] for r in train] == ["fp32", "fp32"]
    assert all(0.0 <= float(r[9]) <= os.cpu_count() for r in train)  # type: ignore[operator]
