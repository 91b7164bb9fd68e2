"""Tests of scripts/benchmark_inference.py on a tiny configuration (the numbers are not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_inference.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_prints_the_time_of_one_volume() -> None:
    res = _run("--model", "light", "--size", "32", "--depth", "5", "--batch", "2", "--text-dim", "16",
               "--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    header, line = res.stdout.strip().splitlines()
    assert header.startswith("# light eval, 5 slices of 32x32 in batches of 2, 5 classes, text dim 16")
    m = re.fullmatch(
        r"volume: (\d+\.\d+) s \(median of 1; 0 warm-up\); (\d+\.\d+) s/slice; process max RSS (\d+\.\d+) GiB", line
    )
    assert m is not None, line
    assert float(m.group(1)) > 0 and float(m.group(3)) > 0


def test_bad_arguments_are_refused() -> None:
    res = _run("--depth", "0")
    assert res.returncode == 2 and "--repeats, --depth and --batch must be >= 1" in res.stderr
