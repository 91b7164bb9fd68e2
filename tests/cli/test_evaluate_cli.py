"""Tests of ``tcsa-uda evaluate`` on a tiny trained run (phantom, 2 iterations, CPU)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tcsa_uda.cli import main
from tcsa_uda.config import load_config
from tcsa_uda.data.contract import load_dataset, write_dataset_json
from tcsa_uda.data.prepared import load_prepared
from tcsa_uda.engine.trainer import train
from tcsa_uda.evaluation.evaluate import evaluate_domain
from tcsa_uda.evaluation.model import load_model
from tcsa_uda.train_config import TrainConfig

pytestmark = pytest.mark.slow  # trainings through the engine: seconds each (README, Tests)

CLASS_NAMES = ["myocardium", "left atrium blood cavity", "left ventricle blood cavity", "ascending aorta"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_data) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_eval")
    tiny_data(root)
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"data.prepared={root / 'prepared'}",
            "data.source=MR",
            "data.target=CT",
            "data.batch_size=2",
            "model.name=light",
            "model.base_width=8",
            f"text.encoder=file:{root / 'text.pt'}",
            "tensorboard=false",
            "progress=false",
            "device=cpu",
            "stages=[{method: source_only, iterations: 2}]",
        ],
    )
    train(cfg, root / "run")
    return {"root": root, "raw": root / "raw", "prepared": root / "prepared", "run": root / "run"}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args, "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def evaluated(tiny) -> Path:
    """``tcsa-uda evaluate RUN --dataset PREPARED --out OUT --save-predictions``, run once."""
    out = tiny["root"] / "ev"
    code = main(
        [
            "evaluate",
            str(tiny["run"]),
            "--dataset",
            str(tiny["prepared"]),
            "--out",
            str(out),
            "--save-predictions",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    return out


def test_evaluate_run_writes_csv_json_md_tex_and_reproduces_evaluate_domain(tiny, evaluated):
    out = evaluated
    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == [
        "case",
        "class",
        "class_name",
        "dice",
        "assd_mm_pooled",
        "assd_mm_mean_of_means",
        "hd95_mm",
    ]
    index = load_prepared(tiny["prepared"])
    test_ids = [c.id for c in index.cases("CT", "test")]
    assert [r["case"] for r in rows] == [i for i in test_ids for _ in range(4)]
    assert [r["class_name"] for r in rows[:4]] == CLASS_NAMES
    # The command reproduces evaluate_domain (what the demo prints).
    ref = evaluate_domain(load_model(tiny["run"] / "final.pt"), index, "CT", "test")
    for c in range(1, 5):
        got = [float(r["dice"]) for r in rows if r["class"] == str(c)]
        np.testing.assert_allclose(got, ref.values(c, "dice"), rtol=0, atol=1e-12)
    data = json.loads((out / "metrics.json").read_text())
    assert data["meta"]["domain"] == "CT" and data["meta"]["split"] == "test"  # the checkpoint's target
    assert (
        data["meta"]["predictions"]["kind"] == "checkpoint" and data["meta"]["predictions"]["method"] == "source_only"
    )
    assert data["meta"]["settings"] == {
        "metrics": "all",
        "units": "mm",
        "assd_variant": "pooled",
        "empty_policy": "nan",
        "parity": None,
        "hd95_variant": "max_directed",
        "tail_policy": "none",
    }
    assert data["meta"]["resample_to_gt"] is False and data["hd95_variants"] == {"hd95_mm": "max_directed"}
    assert data["summary"]["n_cases"] == len(test_ids)
    assert data["meta"]["batch_size"] == 16 and data["meta"]["precision"] == "fp32"  # auto on CPU
    md = (out / "summary.md").read_text()
    assert (
        "| Method | Dice myocardium |" in md
        and "ASSD (mm, pooled)" in md
        and "Model selection: last iteration (2); no selection on target labels" in md
    )
    tex = (out / "summary.tex").read_text()
    assert r"\multicolumn{5}{c}{Dice (\%) $\uparrow$}" in tex and "ASSD (mm, pooled)" in tex
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(f"{i}.nii.gz" for i in test_ids)


def test_raw_dataset_units_both_and_pred_mode_agree(tiny, evaluated, tmp_path, capsys):
    raw_out = tmp_path / "raw"
    code, printed, err = _evaluate(
        capsys, str(tiny["run"] / "final.pt"), "--dataset", str(tiny["raw"]), "--out", str(raw_out), "--units", "both"
    )
    assert code == 0, err
    assert (raw_out / "summary.md").read_text().strip() in printed
    raw_rows = _rows(raw_out / "metrics.csv")
    assert list(raw_rows[0])[3:] == [
        "dice",
        "assd_mm_pooled",
        "assd_mm_mean_of_means",
        "hd95_mm",
        "assd_vox_pooled",
        "assd_vox_mean_of_means",
        "hd95_vox",
    ]
    ref = _rows(evaluated / "metrics.csv")
    assert [r["dice"] for r in raw_rows] == [r["dice"] for r in ref]  # raw preprocessing in memory == prepared
    pred_out = tmp_path / "pred"
    code, _, err = _evaluate(
        capsys,
        "--pred",
        str(evaluated / "predictions"),
        "--dataset",
        str(tiny["raw"]),
        "--domain",
        "CT",
        "--out",
        str(pred_out),
    )
    assert code == 0, err
    assert _rows(pred_out / "metrics.csv") == ref


def test_parity_sifa_uses_voxels_and_says_so(tiny, evaluated, tmp_path, capsys):
    out = tmp_path / "sifa"
    code, _, err = _evaluate(
        capsys, str(tiny["run"]), "--dataset", str(tiny["prepared"]), "--out", str(out), "--parity", "sifa"
    )
    assert code == 0, err
    rows = _rows(out / "metrics.csv")
    assert list(rows[0])[3:] == ["dice", "assd_vox_pooled", "assd_vox_mean_of_means", "hd95_vox"]
    default = _rows(evaluated / "metrics.csv")
    missing = 0
    for r, d in zip(rows, default, strict=True):
        pred = np.asarray(nib.load(str(evaluated / "predictions" / f"{r['case']}.nii.gz")).dataobj)
        if not (pred == int(r["class"])).any():  # structure missing from the prediction
            missing += 1
            assert float(r["assd_vox_mean_of_means"]) == 1.0 and float(r["hd95_vox"]) == 1.0
            assert d["assd_mm_pooled"] == "nan"  # the default policy leaves it undefined
        else:
            assert float(r["assd_vox_mean_of_means"]) > 0.0 and d["assd_mm_pooled"] != "nan"
    assert missing > 0  # the 2-iteration model misses structures, so the policy is exercised
    md = (out / "summary.md").read_text()
    assert "ASSD (vox, mean_of_means)" in md and "Parity preset sifa" in md and "ASSD = 1" in md
    code, _, err = _evaluate(
        capsys,
        str(tiny["run"]),
        "--dataset",
        str(tiny["prepared"]),
        "--out",
        str(out),
        "--parity",
        "sifa",
        "--units",
        "mm",
    )
    assert code == 2 and "units='mm' contradicts --parity sifa" in err and "Traceback" not in err


def test_hd95_variant_option_reaches_the_metrics(tiny, evaluated, tmp_path, capsys):
    out = tmp_path / "pooled"
    code, _, err = _evaluate(
        capsys,
        "--pred",
        str(evaluated / "predictions"),
        "--dataset",
        str(tiny["prepared"]),
        "--domain",
        "CT",
        "--out",
        str(out),
        "--hd95-variant",
        "pooled",
    )
    assert code == 0, err
    rows = _rows(out / "metrics.csv")
    assert list(rows[0])[-1] == "hd95_mm_pooled" and "hd95_mm" not in rows[0]
    data = json.loads((out / "metrics.json").read_text())
    assert data["meta"]["settings"]["hd95_variant"] == "pooled" and data["hd95_variants"] == {
        "hd95_mm_pooled": "pooled"
    }
    code, _, err = _evaluate(
        capsys, "--pred", str(evaluated / "predictions"), "--dataset", str(tiny["prepared"]), "--domain", "CT",
        "--out", str(tmp_path / "x"), "--hd95-variant", "medpy",
    )  # fmt: skip
    assert code == 2 and "hd95_variant: expected one of 'max_directed', 'pooled', found 'medpy'" in err


def test_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tiny, tmp_path, capsys, poison_checkpoint):
    evil = tmp_path / "evil" / "final.pt"
    marker = poison_checkpoint(tiny["run"] / "final.pt", evil)
    code, _, err = _evaluate(capsys, str(evil), "--dataset", str(tiny["prepared"]), "--out", str(tmp_path / "o"))
    assert code == 2 and f"Checkpoint {evil}: refused, it holds a pickled object" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def _label_of(raw: Path, case_id: str) -> Path:
    spec = load_dataset(raw)
    case = next(c for c in spec.domain("CT").cases if c.id == case_id)
    assert case.label is not None, case_id
    return spec.root / case.label


def test_pred_mode_errors_missing_and_shape(tiny, tmp_path, capsys):
    index = load_prepared(tiny["prepared"])
    ids = [c.id for c in index.cases("CT", "test")]
    preds = tmp_path / "preds"
    preds.mkdir()
    shutil.copy(_label_of(tiny["raw"], ids[0]), preds / f"{ids[0].upper()}.nii.gz")  # ground truth as prediction
    code, _, err = _evaluate(
        capsys, "--pred", str(preds), "--dataset", str(tiny["prepared"]), "--domain", "CT", "--out", str(tmp_path / "o")
    )
    assert code == 2 and f"no prediction for 1 of 2 CT/test case(s): {ids[1]}" in err
    code, _, err = _evaluate(
        capsys,
        "--pred",
        str(preds),
        "--dataset",
        str(tiny["prepared"]),
        "--domain",
        "CT",
        "--out",
        str(tmp_path / "o"),
        "--allow-missing",
    )
    assert code == 0, err
    rows = _rows(tmp_path / "o" / "metrics.csv")
    assert [float(r["dice"]) for r in rows] == [1.0] * 4 + [0.0] * 4
    meta = json.loads((tmp_path / "o" / "metrics.json").read_text())["meta"]
    assert meta["missing_predictions"] == [ids[1]]
    assert (
        f"1 case(s) without a prediction file, scored as empty predictions: {ids[1]}"
        in (tmp_path / "o" / "summary.md").read_text()
    )
    gt = nib.load(str(_label_of(tiny["raw"], ids[1])))
    nib.save(nib.Nifti1Image(np.zeros((*gt.shape[:2], 3), np.uint8), gt.affine), str(preds / f"{ids[1]}.nii.gz"))
    code, _, err = _evaluate(
        capsys,
        "--pred",
        str(preds),
        "--dataset",
        str(tiny["prepared"]),
        "--domain",
        "CT",
        "--out",
        str(tmp_path / "o2"),
    )
    assert code == 2
    assert f"{preds / (ids[1] + '.nii.gz')} has shape (48, 48, 3)" in err and str(_label_of(tiny["raw"], ids[1])) in err


def test_wrong_class_set_and_domain_are_refused(tiny, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny["raw"], other)
    spec = load_dataset(other)
    labels = {**spec.labels}
    labels["pulmonary artery"] = labels.pop("ascending aorta")
    write_dataset_json(type(spec)(name=spec.name, labels=labels, domains=spec.domains, root=other))
    code, _, err = _evaluate(capsys, str(tiny["run"]), "--dataset", str(other), "--out", str(tmp_path / "o"))
    assert code == 2 and "differ from the checkpoint's" in err and "pulmonary artery" in err
    code, _, err = _evaluate(
        capsys, str(tiny["run"]), "--dataset", str(tiny["raw"]), "--out", str(tmp_path / "o"), "--domain", "PET"
    )
    assert code == 2 and "no domain 'PET'" in err
    code, _, err = _evaluate(
        capsys, str(tmp_path / "nothing"), "--dataset", str(tiny["raw"]), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "no such run folder or checkpoint file" in err
    code, _, err = _evaluate(capsys, str(tiny["run"]), "--dataset", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "expected a prepared folder (index.json" in err
