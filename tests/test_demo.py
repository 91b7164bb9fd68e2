"""The README's main job, `tcsa-uda demo`, at a tiny scale (a few iterations)."""

from __future__ import annotations

import json

import pytest

from tcsa_uda.cli import main
from tcsa_uda.demo import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_end_to_end_tiny(tmp_path):
    settings = DemoSettings(
        out=tmp_path / "demo",
        cases=5,
        shape=(16, 48, 48),
        size=32,
        iterations_scale=0.005,
        overrides=("model.base_width=8", "model.disc_width=8", "tensorboard=false", "device=cpu"),
        progress=False,
    )
    res = run_demo(settings)
    out = tmp_path / "demo"
    data = json.loads((out / "results.json").read_text())
    assert data == json.loads(json.dumps(data))  # plain JSON (no NaN)
    assert data["source"] == "MR" and data["target"] == "CT"
    classes = ["myocardium", "left atrium blood cavity", "left ventricle blood cavity", "ascending aorta"]
    assert data["class_names"] == classes
    for method, domain in (("source_only", "MR"), ("source_only", "CT"), ("tcsa", "CT")):
        entry = data["methods"][method][domain]
        assert set(entry["per_class"]) == set(classes)
        assert all(v is None or 0.0 <= v <= 1.0 for v in entry["per_class"].values())
        assert len({row["case"] for row in entry["cases"]}) == 2  # both test volumes evaluated
    md = (out / "results.md").read_text()
    assert "| source-only | CT test |" in md and "| TCSA-UDA | CT test |" in md
    assert (out / "figure.png").stat().st_size > 1000
    assert res["methods"]["tcsa"]["CT"]["mean"] == data["methods"]["tcsa"]["CT"]["mean"]

    # A second run reuses everything: no retraining.
    final = out / "runs" / "tcsa_MR2CT" / "final.pt"
    before = final.stat().st_mtime_ns
    run_demo(settings)
    assert final.stat().st_mtime_ns == before


def test_demo_rejects_unknown_direction(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--direction", "PET2CT", "--no-progress", "--cases", "5"]) == 2
    assert "MR2CT" in capsys.readouterr().err


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "thesis.tex").write_text("keep")
    assert main(["demo", "--out", str(out), "--no-progress", "--cases", "5"]) == 2
    err = capsys.readouterr().err
    assert f"demo --out {out}: the folder is not empty (thesis.tex) and was not written by demo" in err
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
