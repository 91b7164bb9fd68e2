"""``tcsa-uda bench`` end to end on a tiny phantom with the real train and evaluate commands.

Two entries (source-only as reference and lower bound, MinEnt) on two seeds and one entry with a
bad override on one seed, one direction, 3 iterations of the light model at width 8 on 32x32 slices, ``--jobs 2``.
Checks: the failing cells are reported with exit status 1 while the others complete; the tables
agree with ``bench.csv``; a second call skips the finished cells and resumes a half-trained one.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tcsa_uda.cli import main

CELL = "cells/{entry}/tiny/MR2CT/seed{seed}"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench_cli")
    g = torch.Generator().manual_seed(0)
    torch.save({"embeddings": torch.randn(2, 5, 16, generator=g)}, root / "text.pt")
    common = [
        "model.base_width=8",
        "model.disc_width=8",
        "data.batch_size=2",
        "stages.0.iterations=3",
        f"text.encoder=file:{root / 'text.pt'}",
        "tensorboard=false",
        "device=cpu",
        "checkpoint_every=2",
    ]
    suite = {
        "name": "tiny",
        "entries": {
            "source_only": {"config": "phantom_mr2ct_source_only.yaml", "reference": True, "lower_bound": True},
            "minent": {"config": "phantom_mr2ct_minent.yaml", "label": "MinEnt"},
            "broken": {"config": "phantom_mr2ct_source_only.yaml", "overrides": ["optim.bogus=1"], "seeds": [0]},
        },
        "datasets": {"tiny": {"phantom": {"seed": 3, "cases": 6, "shape": [16, 32, 32], "size": 32}}},
        "directions": {"MR2CT": {"source": "MR", "target": "CT"}},
        "seeds": [0, 1],
        "overrides": common,
        "evaluation": {"device": "cpu"},
        "statistics": {"n_boot": 1000},
    }
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


def _bench(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["bench", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_lists_cells_and_writes_nothing(tmp_path, suite_file, capsys) -> None:
    code, out, _ = _bench(capsys, str(suite_file), "--out", str(tmp_path / "b"), "--dry-run")
    assert code == 0
    assert "new       source_only/tiny/MR2CT/seed0" in out and "cells: 5 new of 5" in out
    assert "-m tcsa_uda train" in out and "num_threads=1 progress=false" in out and "-m tcsa_uda evaluate" in out
    assert not (tmp_path / "b").exists()


@pytest.mark.slow  # trains and evaluates five tiny cells in subprocesses (about a minute of CPU)
def test_bench_end_to_end_failures_tables_and_resume(tmp_path, suite_file, capsys) -> None:
    out = tmp_path / "bench"
    code, _, err = _bench(capsys, str(suite_file), "--out", str(out), "--jobs", "2")
    assert code == 1
    assert "1 cell(s) failed:" in err
    assert "broken/tiny/MR2CT/seed0: train exited with 2: error:" in err and "optim.bogus" in err
    assert (out / CELL.format(entry="broken", seed=0) / "train.log").is_file()
    for entry in ("source_only", "minent"):
        for seed in (0, 1):
            record = json.loads((out / CELL.format(entry=entry, seed=seed) / "cell.json").read_text())
            assert record["status"] == "done"
    for name in ("bench.csv", "bench.md", "bench.tex", "bench.png"):
        assert (out / name).is_file()

    # The table agrees with bench.csv: Dice Mean per entry and the paired difference.
    with open(out / "bench.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["metric"] == "dice"]
    classes = list(dict.fromkeys(r["class"] for r in rows))
    vals: dict[tuple[str, int, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        vals[(r["entry"], int(r["seed"]), r["case"])][r["class"]] = float(r["value"])
    assert {k[0] for k in vals} == {"source_only", "minent"}

    def dice_mean(entry: str) -> tuple[float, float]:
        seeds = []
        for s in (0, 1):
            cases = [v for k, v in vals.items() if k[0] == entry and k[1] == s]
            seeds.append(np.mean([np.nanmean([c[k] for c in cases]) for k in classes]))
        return float(np.mean(seeds)), float(np.std(seeds, ddof=1))

    md = (out / "bench.md").read_text()
    table, header = {}, []
    for line in md.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if cells[0] == "Entry":
                header = cells
            else:
                table[cells[0]] = cells
    col = {name: i for i, name in enumerate(header)}
    for label, entry in (("source_only", "source_only"), ("MinEnt", "minent")):
        mean, std = dice_mean(entry)
        assert table[label][col["Dice Mean"]].rstrip("*") == f"{100 * mean:.1f} ± {100 * std:.1f}"
    units = sorted(k[1:] for k in vals if k[0] == "minent")
    diffs = [np.mean([vals[("minent", *u)][k] - vals[("source_only", *u)][k] for k in classes]) for u in units]
    delta = table["MinEnt"][col["ΔDice vs source_only [95% CI]"]]
    point = re.escape(f"{100 * np.mean(diffs):+.1f}")
    assert re.match(rf"^{point} \[[-+]\d+\.\d, [-+]\d+\.\d\] \(n=4\)$", delta), delta
    assert table["source_only"][col["ΔDice vs source_only [95% CI]"]] == "reference"
    assert "Gap closed (%)" not in col  # no upper-bound entry
    assert "No complete cell (failed or not run): broken." in md
    assert "percentile bootstrap CI (B=1000, seed 0)" in md

    # Second call: finished cells are skipped, a half-trained cell resumes, failures are retried.
    done = out / CELL.format(entry="source_only", seed=0)
    mtime = (done / "eval/metrics.csv").stat().st_mtime_ns
    half = out / CELL.format(entry="minent", seed=1)
    shutil.rmtree(half / "eval")
    (half / "run/final.pt").unlink()
    code, _, err = _bench(capsys, str(suite_file), "--out", str(out), "--jobs", "2")
    assert code == 1 and "1 cell(s) failed:" in err
    assert (done / "eval/metrics.csv").stat().st_mtime_ns == mtime
    log = (out / "bench.log").read_text()
    assert "skip source_only/tiny/MR2CT/seed0: evaluation complete" in log
    assert "start minent/tiny/MR2CT/seed1: resume training + evaluate" in log
    assert " --resume\n" in (half / "train.log").read_text()
    assert (half / "eval/metrics.csv").is_file()
    assert json.loads((half / "cell.json").read_text())["attempts"] == 2
