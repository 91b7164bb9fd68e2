"""Helpers of the bench tests: suite files and a fake ``python -m tcsa_uda`` that trains in milliseconds.

The fake interpreter is a small script the runner calls exactly as it calls Python
(``FAKE -m tcsa_uda train|evaluate|phantom|prepare ...``). It writes the files the real commands
write (``run/config.yaml``, ``run/final.pt``, the four evaluation files, ``index.json``), records
every call in ``calls.log`` next to it, and fails a ``train`` whose overrides contain
``fail=train`` (with an ``error: ...`` line, like the real command). So the runner's logic
(states, resume, failures, parallel jobs) is tested without torch; ``tests/cli/test_bench_cli.py``
runs the real commands.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

FAKE = """#!{python}
import json, pathlib, sys
args = sys.argv[3:]
here = pathlib.Path(__file__).parent
with open(here / "calls.log", "a") as fh:
    fh.write(" ".join(args) + "\\n")
def opt(name):
    return args[args.index(name) + 1]
cmd = args[0]
if cmd == "train":
    if "fail=train" in args:
        print("error: fail=train: unknown config key 'fail'.")
        sys.exit(2)
    out = pathlib.Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text("seed: 0\\n")
    print("resumed" if "--resume" in args else "trained")
    (out / "final.pt").write_bytes(b"weights")
elif cmd == "evaluate":
    out = pathlib.Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    seed = int(pathlib.Path(args[1]).parent.name.removeprefix("seed"))
    rows = ["case,class,class_name,dice,assd_mm_pooled,assd_mm_mean_of_means,hd95_mm"]
    for i, case in enumerate(("c0", "c1")):
        for k, name in ((1, "A"), (2, "B")):
            rows.append(f"{{case}},{{k}},{{name}},{{0.5 + 0.1 * seed + 0.01 * i + 0.1 * k}},2.0,2.0,3.0")
    (out / "metrics.csv").write_text("\\n".join(rows) + "\\n")
    meta = {{"domain": opt("--domain"), "split": opt("--split"), "model_selection": "last iteration",
            "settings": {{"metrics": "all", "units": "mm", "assd_variant": "pooled", "empty_policy": "nan"}}}}
    (out / "metrics.json").write_text(json.dumps({{"meta": meta}}))
    (out / "summary.md").write_text("table")
    (out / "summary.tex").write_text("table")
elif cmd == "phantom":
    out = pathlib.Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "dataset.json").write_text("{{}}")
elif cmd == "prepare":
    out = pathlib.Path(opt("--out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "index.json").write_text("{{}}")
else:
    print("error: unknown command " + cmd)
    sys.exit(2)
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """An executable that behaves like ``python -m tcsa_uda`` for the bench (see the module docstring)."""
    path = tmp_path / "fake" / "python"
    path.parent.mkdir()
    path.write_text(FAKE.format(python=sys.executable), encoding="utf-8")
    path.chmod(0o755)
    return path


def _calls(fake: Path) -> list[str]:
    log = fake.parent / "calls.log"
    return log.read_text(encoding="utf-8").splitlines() if log.is_file() else []


def _write_suite(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _prepared_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.json").write_text(json.dumps({"complete": True}), encoding="utf-8")
    return root


@pytest.fixture
def fake_calls() -> Callable[[Path], list[str]]:
    """``fake_calls(fake)``: every command line the fake received (without ``-m tcsa_uda``)."""
    return _calls


@pytest.fixture
def write_suite() -> Callable[[Path, dict[str, Any]], Path]:
    """``write_suite(path, mapping)``: write a suite mapping as YAML and return its path."""
    return _write_suite


@pytest.fixture
def prepared_folder() -> Callable[[Path], Path]:
    """``prepared_folder(root)``: an (empty) prepared folder with the ``index.json`` the bench looks for."""
    return _prepared_folder


@pytest.fixture
def basic_suite(tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """``basic_suite(**extra)``: two entries and one failing entry, one prepared dataset, one direction, two seeds."""

    def make(**extra: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": "tiny",
            "entries": {
                "base": {"config": "phantom_mr2ct_source_only.yaml", "reference": True, "lower_bound": True},
                "other": {"config": "phantom_mr2ct_minent.yaml"},
                "broken": {"config": "phantom_mr2ct_source_only.yaml", "overrides": ["fail=train"]},
            },
            "datasets": {"ds": {"prepared": str(_prepared_folder(tmp_path / "prepared"))}},
            "directions": {"MR2CT": {"source": "MR", "target": "CT"}},
            "seeds": [0, 1],
            "statistics": {"n_boot": 200},
        }
        data.update(extra)
        return data

    return make
