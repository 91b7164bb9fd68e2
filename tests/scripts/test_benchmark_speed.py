"""Tests of scripts/benchmark_speed.py on a tiny configuration (the numbers are not asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_speed.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_prints_one_timed_line_per_method() -> None:
    res = _run("--model", "light", "--size", "32", "--batch", "2", "--text-dim", "16", "--iterations", "1",
               "--warmup", "0", "--device", "cpu", "--threads", "1")  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("# light, 32x32, 2+2 slices/it, 5 classes, text dim 16")
    for name, line in zip(("adaoutput", "tcsa"), lines[1:], strict=True):
        m = re.fullmatch(
            rf"\s*{name}: (\d+\.\d+) s/it over 1 it \(0 warm-up\); process max RSS (\d+\.\d+) GiB; 50,000 it = .* h",
            line,
        )
        assert m is not None, line
        assert float(m.group(1)) > 0 and float(m.group(2)) > 0


def test_bad_arguments_are_refused() -> None:
    res = _run("--iterations", "0")
    assert res.returncode == 2 and "--iterations must be >= 1" in res.stderr
