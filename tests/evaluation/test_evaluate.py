"""Tests of tcsa_uda.evaluation.evaluate: settings, scoring, --pred mode, model mode, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from tcsa_uda.data.contract import load_dataset
from tcsa_uda.data.prepare import prepare_dataset
from tcsa_uda.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError, OutputExistsError
from tcsa_uda.evaluation.evaluate import evaluate_dataset, evaluate_domain, evaluate_predictions, run_evaluation
from tcsa_uda.evaluation.model import LoadedModel, load_model, resolve_checkpoint
from tcsa_uda.evaluation.predictions import find_predictions
from tcsa_uda.evaluation.settings import EvalSettings, resolve_settings, score_case
from tcsa_uda.evaluation.tables import TableRow, TableSpec, markdown_table
from tcsa_uda.metrics.volume import compute_case_metrics
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

SHAPE = (8, 8, 6)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
CLASSES = ["background", "a", "b"]


def _gt(case: str) -> np.ndarray:
    lab = np.zeros(SHAPE, dtype=np.uint8)
    if case == "t1":
        lab[1:5, 1:5, 1:5] = 1  # 64 voxels
        lab[5:7, 5:7, 1:3] = 2
    else:
        lab[2:6, 2:6, 2:4] = 1
        lab[0:2, 0:2, 0:2] = 2
    return lab


def _pred_t1() -> np.ndarray:
    """Class 1 shifted by one voxel along x (overlap 48 of 64: Dice 0.75); class 2 missing."""
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[2:6, 1:5, 1:5] = 1
    return lab


def _save(path: Path, arr: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def _dataset(root: Path, classes: list[str] = CLASSES) -> Path:
    """Domain CT: t1, t2 (test, labelled), u1 (test, unlabelled), r1 (train); domain MR: m1."""
    rng = np.random.default_rng(0)
    cases = []
    for cid, split, labelled in (
        ("t1", "test", True),
        ("t2", "test", True),
        ("u1", "test", False),
        ("r1", "train", True),
    ):
        img = (_gt("t1" if cid != "t2" else "t2") * 50 + rng.normal(size=SHAPE) * 5).astype(np.float32)
        _save(root / f"{cid}.nii.gz", img)
        entry = {"id": cid, "image": f"{cid}.nii.gz", "split": split}
        if labelled:
            _save(root / f"{cid}_seg.nii.gz", np.minimum(_gt(cid if cid != "r1" else "t1"), len(classes) - 1))
            entry["label"] = f"{cid}_seg.nii.gz"
        cases.append(entry)
    _save(root / "m1.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
    data = {
        "name": "evaltest",
        "labels": {n: i for i, n in enumerate(classes)},
        "domains": {
            "CT": {"modality": "computed tomography", "cases": cases},
            "MR": {
                "modality": "magnetic resonance imaging",
                "cases": [{"id": "m1", "image": "m1.nii.gz", "split": "train"}],
            },
        },
    }
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return root


def _checkpoint(
    path: Path, classes: list[str] = CLASSES, size: int = 16, text_classes: list[str] | None = None
) -> Path:
    """An untrained light model saved with the keys the training engine writes."""
    torch.manual_seed(0)
    model = build_segmenter("light", len(classes), 8, base_width=8)
    tc = text_classes or classes
    text = TextEmbeddings(
        domains=["MR", "CT"],
        class_names=tc,
        prompts=[[f"{d} {c}" for c in tc] for d in ("MR", "CT")],
        embeddings=torch.randn(2, len(tc), 8),
        encoder="test",
    )
    save_checkpoint(
        path,
        {
            "config": {},
            "stage": 0,
            "method": "source_only",
            "iteration": 3,
            "model": model.state_dict(),
            "model_name": "light",
            "model_kwargs": {"base_width": 8},
            "class_names": classes,
            "source": "MR",
            "target": "CT",
            "text": text.to_dict(),
            "preprocessing": {
                "prepare": {"axis": "axial", "size": size, "clip_percentiles": [0.5, 99.5]},
                "size": size,
                "modalities": {"MR": "mri", "CT": "ct"},
            },
        },
    )
    return path


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "raw")


@pytest.fixture
def preds(tmp_path: Path) -> Path:
    folder = tmp_path / "preds"
    _save(folder / "nested" / "deeper" / "T1.nii.gz", _pred_t1())  # any nesting, any letter case
    _save(folder / "t2.nii", _gt("t2"))  # perfect
    _save(folder / "other_case.nii.gz", _gt("t2"))  # matches no case: ignored, counted
    return folder


# ------------------------------------------------------------------------------------ settings


def test_settings_defaults_and_parity_preset():
    assert resolve_settings() == EvalSettings("all", "mm", "pooled", "nan", None)
    sifa = resolve_settings(parity="sifa")
    assert (sifa.units, sifa.assd_variant, sifa.empty_policy, sifa.parity) == (
        "vox",
        "mean_of_means",
        "sifa_mpscl",
        "sifa",
    )
    assert sifa.table_assd_metric == "assd_vox_mean_of_means"
    assert resolve_settings(units="both").table_assd_metric == "assd_mm_pooled"
    assert resolve_settings(metrics="dice").table_assd_metric is None
    assert resolve_settings(parity="sifa", units="vox").units == "vox"  # agreeing explicit value is fine
    with pytest.raises(ConfigError, match="units='mm' contradicts --parity sifa"):
        resolve_settings(parity="sifa", units="mm")
    with pytest.raises(ConfigError, match=r"units: expected one of 'mm', 'vox', 'both', found 'cm'"):
        resolve_settings(units="cm")
    with pytest.raises(ConfigError, match="parity: expected one of 'sifa'"):
        resolve_settings(parity="nnunet")
    with pytest.raises(ConfigError, match="empty_policy: expected one of"):
        resolve_settings(empty_policy="zero")


def test_score_case_units_and_names():
    pred, gt = _pred_t1().astype(np.int64), _gt("t1").astype(np.int64)
    both = score_case(pred, gt, [1, 2], (2.0, 1.0, 1.0), resolve_settings(units="both"))
    assert list(both[1]) == [
        "dice",
        "assd_mm_pooled",
        "assd_mm_mean_of_means",
        "hd95_mm",
        "assd_vox_pooled",
        "assd_vox_mean_of_means",
        "hd95_vox",
    ]
    assert both[1]["dice"] == pytest.approx(0.75)
    ref = compute_case_metrics(pred, gt, [1], spacing=None)[1]
    assert both[1]["assd_vox_pooled"] == pytest.approx(ref["assd_vox_pooled"])
    ref_mm = compute_case_metrics(pred, gt, [1], spacing=(2.0, 1.0, 1.0))[1]
    assert both[1]["assd_mm_pooled"] == pytest.approx(ref_mm["assd_mm_pooled"])
    assert both[1]["assd_mm_pooled"] > 1.5 * both[1]["assd_vox_pooled"]  # the shift is along the 2 mm axis
    assert math.isnan(both[2]["assd_mm_pooled"]) and both[2]["dice"] == 0.0
    dice_only = score_case(pred, gt, [1, 2], None, resolve_settings(metrics="dice"))
    assert dice_only == {1: {"dice": pytest.approx(0.75)}, 2: {"dice": 0.0}}


# ------------------------------------------------------------------------------------ --pred


def test_pred_folder_gives_the_hand_computed_dice(raw, preds):
    acc = evaluate_predictions(preds, load_dataset(raw), "CT", "test")
    assert acc.case_ids == ["t1", "t2"]  # u1 has no label: reported, not scored
    assert acc.meta["unlabelled_cases"] == ["u1"] and acc.meta["unused_prediction_files"] == 1
    assert acc.values(1, "dice").tolist() == pytest.approx([0.75, 1.0])
    assert acc.values(2, "dice").tolist() == pytest.approx([0.0, 1.0])
    assert math.isnan(acc.values(2, "assd_mm_pooled")[0])  # default policy: undefined, counted
    s = acc.summary()
    assert s["classes"][2]["assd_mm_pooled"]["n_nan"] == 1
    assert s["class_mean"]["dice"]["mean"] == pytest.approx((0.875 + 0.5) / 2)


def test_pred_folder_on_a_prepared_folder_reads_the_original_labels(tmp_path, raw, preds):
    index = prepare_dataset(raw, tmp_path / "prep", size=8, progress=False)
    a = evaluate_predictions(preds, index, "CT", "test")
    b = evaluate_predictions(preds, load_dataset(raw), "CT", "test")
    assert a.to_rows() == b.to_rows()


def test_parity_sifa_uses_voxels_and_assd_one_for_a_missing_structure(raw, preds):
    acc = evaluate_predictions(preds, load_dataset(raw), "CT", "test", resolve_settings(parity="sifa"))
    assert acc.metric_names == ["dice", "assd_vox_pooled", "assd_vox_mean_of_means", "hd95_vox"]
    assert acc.values(2, "assd_vox_mean_of_means").tolist() == [1.0, 0.0]
    expected = compute_case_metrics(_pred_t1(), _gt("t1"), [1], spacing=None, assd_variants=("mean_of_means",))
    assert acc.values(1, "assd_vox_mean_of_means")[0] == pytest.approx(expected[1]["assd_vox_mean_of_means"])


def test_missing_prediction_is_an_error_or_scored_empty_and_listed(raw, preds):
    (preds / "t2.nii").unlink()
    with pytest.raises(MissingPathError, match=r"no prediction for 1 of 2 CT/test case\(s\): t2 .*--allow-missing"):
        evaluate_predictions(preds, load_dataset(raw), "CT", "test")
    acc = evaluate_predictions(preds, load_dataset(raw), "CT", "test", allow_missing=True)
    assert acc.case_ids == ["t1", "t2"] and acc.meta["missing_predictions"] == ["t2"]
    assert acc.values(1, "dice").tolist() == pytest.approx([0.75, 0.0])


def test_prediction_with_another_shape_names_both_files(raw, preds):
    bad = _save(preds / "t2.nii", np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(DatasetError) as err:
        evaluate_predictions(preds, load_dataset(raw), "CT", "test")
    msg = str(err.value)
    assert str(bad) in msg and str(raw / "t2_seg.nii.gz") in msg and "(8, 8, 5)" in msg and "(8, 8, 6)" in msg


def test_prediction_with_labels_of_another_class_set_is_rejected(raw, preds):
    wrong = _gt("t2")
    wrong[wrong == 2] = 205  # a raw MM-WHS code
    _save(preds / "t2.nii", wrong)
    with pytest.raises(DatasetError, match=r"t2.nii: expected label ids 0..2 \(background, a, b\), found \[205\]"):
        evaluate_predictions(preds, load_dataset(raw), "CT", "test")


def test_two_files_for_one_case_are_rejected(tmp_path, preds):
    _save(preds / "x" / "t1.nii.gz", _pred_t1())
    with pytest.raises(DatasetError, match="two prediction files for case 't1'"):
        find_predictions(preds)
    with pytest.raises(MissingPathError, match="prediction folder does not exist"):
        find_predictions(tmp_path / "none")


def test_run_evaluation_pred_mode_writes_every_file(tmp_path, raw, preds):
    res = run_evaluation(
        raw, tmp_path / "out", pred_dir=preds, domain="CT", settings=resolve_settings(units="both"), progress=False
    )
    with open(res.files["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == [
        "case",
        "class",
        "class_name",
        "dice",
        "assd_mm_pooled",
        "assd_mm_mean_of_means",
        "hd95_mm",
        "assd_vox_pooled",
        "assd_vox_mean_of_means",
        "hd95_vox",
    ]
    assert [(r["case"], r["class"], float(r["dice"])) for r in rows] == [
        ("t1", "1", 0.75),
        ("t1", "2", 0.0),
        ("t2", "1", 1.0),
        ("t2", "2", 1.0),
    ]
    data = json.loads(res.files["json"].read_text())
    assert data["meta"]["predictions"] == {"kind": "folder", "path": str(preds)}
    assert data["meta"]["settings"]["units"] == "both" and data["rows"][1]["assd_mm_pooled"] is None
    assert "| preds | 87.5 (12.5) | 50.0 (50.0) | 68.8" in res.files["markdown"].read_text()
    assert r"\begin{table}" in res.files["latex"].read_text()
    with pytest.raises(ConfigError, match="--domain is required"):
        run_evaluation(raw, tmp_path / "o2", pred_dir=preds, progress=False)
    with pytest.raises(ConfigError, match="exactly one of them"):
        run_evaluation(raw, tmp_path / "o3", progress=False)
    with pytest.raises(ConfigError, match="--flip and --save-predictions need a model"):
        run_evaluation(raw, tmp_path / "o4", pred_dir=preds, domain="CT", flip=True, progress=False)


@pytest.mark.parametrize(
    "value, dtype, found",
    [(205, np.int16, r"expected label ids 0..2 \(background, a, b\), found \[205\] in the ground truth"),
     (2.9999, np.float32, r"expected integer label ids in the ground truth, found non-integer values in 1 voxel")],
)  # fmt: skip
def test_ground_truth_is_checked_like_a_prediction(raw, preds, value, dtype, found):
    """A raw code or a non-integer value in a ground-truth file is an error naming it, never cast."""
    gt = _gt("t2").astype(dtype)
    gt[0, 0, 0] = value
    _save(raw / "t2_seg.nii.gz", gt)
    with pytest.raises(DatasetError, match=rf"^{raw / 't2_seg.nii.gz'}: {found}"):
        evaluate_predictions(preds, load_dataset(raw), "CT", "test")


def test_prediction_on_another_grid_is_an_error_unless_resampled_to_the_ground_truth(tmp_path, raw, preds):
    # The ground truth of t2 flipped along x, with the affine that puts every voxel at the same world position.
    flip = np.array([[-1.0, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    _save(preds / "t2.nii", _gt("t2")[::-1].copy(), AFFINE @ flip)
    with pytest.raises(DatasetError) as info:
        evaluate_predictions(preds, load_dataset(raw), "CT", "test")
    message = str(info.value)
    assert f"prediction {preds / 't2.nii'} is not on the grid of its ground truth {raw / 't2_seg.nii.gz'}" in message
    assert (
        "expected the prediction affine to equal the ground truth affine" in message and "--resample-to-gt" in message
    )
    res = run_evaluation(raw, tmp_path / "out", pred_dir=preds, domain="CT", resample_to_gt=True, progress=False)
    assert res.accumulator.values(1, "dice").tolist() == pytest.approx([0.75, 1.0])  # world-identical: perfect
    assert res.accumulator.values(2, "dice").tolist() == pytest.approx([0.0, 1.0])
    meta = json.loads(res.files["json"].read_text())["meta"]
    assert meta["resample_to_gt"] is True and meta["resampled_cases"] == ["t2"]
    with pytest.raises(ConfigError, match="--resample-to-gt applies to --pred"):
        run_evaluation(raw, tmp_path / "o", checkpoint=tmp_path / "ck.pt", resample_to_gt=True, progress=False)


def test_resample_to_grid_is_nearest_neighbour_in_world_space():
    from tcsa_uda.evaluation.predictions import resample_to_grid

    labels = np.zeros((4, 4, 2), dtype=np.uint8)
    labels[1, 2, 0] = 3
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])  # voxel (1, 2, 0) covers world x 2, y 4, z 0
    out = resample_to_grid(labels, coarse, (8, 8, 4), np.eye(4))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 4)
    # world points nearest to the source voxel (1, 2, 0): x in [1, 3), y in [3, 5), z < 1
    assert sorted(zip(*np.nonzero(out), strict=True)) == [(x, y, 0) for x in (1, 2) for y in (3, 4)]
    shifted = np.eye(4)
    shifted[0, 3] = 100.0  # entirely outside the source volume: background
    assert not resample_to_grid(labels, coarse, (8, 8, 4), shifted).any()


@pytest.mark.parametrize("variant, column", [("max_directed", "hd95_mm"), ("pooled", "hd95_mm_pooled")])
def test_hd95_variant_is_passed_through_and_recorded(tmp_path, raw, preds, variant, column):
    settings = resolve_settings(hd95_variant=variant)
    res = run_evaluation(raw, tmp_path / "out", pred_dir=preds, domain="CT", settings=settings, progress=False)
    with open(res.files["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-1] == column and "hd95_variant" not in rows[0]  # the column name says the variant
    expected = compute_case_metrics(_pred_t1(), _gt("t1"), [1], spacing=(1.0, 1.0, 2.0), hd95_variant=variant)
    assert float(rows[0][column]) == pytest.approx(expected[1][column])
    meta = json.loads(res.files["json"].read_text())["meta"]
    assert meta["settings"]["hd95_variant"] == variant
    assert json.loads(res.files["json"].read_text())["hd95_variants"] == {column: variant}
    with pytest.raises(ConfigError, match="hd95_variant: expected one of 'max_directed', 'pooled'"):
        resolve_settings(hd95_variant="medpy")


def test_output_folder_keeps_files_evaluate_did_not_write(tmp_path, raw, preds):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("my notes")
    with pytest.raises(
        OutputExistsError, match=r"would write over 1 file\(s\) that evaluate did not create .*summary.md"
    ):
        run_evaluation(raw, out, pred_dir=preds, domain="CT", progress=False)
    assert (out / "summary.md").read_text() == "my notes" and not (out / "metrics.csv").exists()
    with pytest.raises(OutputExistsError, match=r"holds a dataset \(dataset.json\) that evaluate did not write"):
        run_evaluation(raw, raw, pred_dir=preds, domain="CT", progress=False)
    run_evaluation(raw, out, pred_dir=preds, domain="CT", progress=False, overwrite=True)
    run_evaluation(raw, out, pred_dir=preds, domain="CT", progress=False)  # a rerun replaces its own files
    assert (out / "summary.md").read_text() != "my notes"


# ------------------------------------------------------------------------------------ model


@pytest.mark.slow
def test_model_on_prepared_and_raw_folders_gives_the_same_numbers(tmp_path, raw):
    loaded = load_model(_checkpoint(tmp_path / "ck.pt"))
    index = prepare_dataset(raw, tmp_path / "prep", size=16, progress=False)
    a = evaluate_domain(loaded, index, "CT", "test", batch_size=4, save_dir=tmp_path / "p")
    b = evaluate_dataset(loaded, load_dataset(raw), "CT", "test", batch_size=3)
    assert a.case_ids == b.case_ids == ["t1", "t2"]
    np.testing.assert_allclose(a.values(1, "dice"), b.values(1, "dice"))
    np.testing.assert_allclose(a.values(2, "hd95_mm"), b.values(2, "hd95_mm"))
    # The saved label maps score the same as the model itself.
    c = evaluate_predictions(tmp_path / "p", index, "CT", "test")
    assert c.to_rows() == a.to_rows()
    saved = nib.load(str(tmp_path / "p" / "t1.nii.gz"))
    assert saved.shape == SHAPE and int(saved.header["intent_code"]) == 1002  # written as a label map


@pytest.mark.slow
def test_model_errors_name_the_problem(tmp_path, raw):
    ck = _checkpoint(tmp_path / "ck.pt")
    loaded = load_model(ck)
    other = prepare_dataset(raw, tmp_path / "prep8", size=8, progress=False)
    with pytest.raises(ConfigError, match=r"trained on slices prepared with .*'size': 16.*evaluate on the raw dataset"):
        evaluate_domain(loaded, other, "CT")
    with pytest.raises(ConfigError, match=r"domain 'PET' is not one the model was trained with; .*\['MR', 'CT'\]"):
        loaded.text_for("PET")
    two = load_dataset(_dataset(tmp_path / "two", ["background", "a"]))
    with pytest.raises(DatasetError, match=r"classes \['background', 'a'\] differ from the checkpoint's"):
        evaluate_dataset(loaded, two, "CT")
    with pytest.raises(DatasetError, match="no domain 'PET'"):
        evaluate_dataset(loaded, load_dataset(raw), "PET")
    with pytest.raises(CheckpointError, match=r"text embeddings are for classes \['background', 'x', 'y'\]"):
        load_model(_checkpoint(tmp_path / "t.pt", text_classes=["background", "x", "y"]))
    state = load_checkpoint(ck)
    state["class_names"] = ["background", "a"]
    state["text"] = TextEmbeddings(
        ["MR", "CT"], ["background", "a"], [["m", "n"], ["o", "p"]], torch.randn(2, 2, 8), "test"
    ).to_dict()
    save_checkpoint(tmp_path / "w.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match="weights do not fit model 'light' with 2 classes"):
        load_model(tmp_path / "w.pt")
    (tmp_path / "run").mkdir()
    with pytest.raises(MissingPathError, match=r"run folder without final.pt"):
        resolve_checkpoint(tmp_path / "run")


@pytest.mark.slow
def test_model_selection_is_recorded(tmp_path, raw):
    res = run_evaluation(
        raw,
        tmp_path / "out",
        checkpoint=_checkpoint(tmp_path / "ck.pt"),
        settings=resolve_settings(metrics="dice"),
        progress=False,
        class_order=["b", "a"],
    )
    assert res.accumulator.meta["model_selection"] == (
        "fixed checkpoint ck.pt, iteration 3 of stage 1 (source_only); no selection rule recorded"
    )
    assert res.accumulator.meta["domain"] == "CT"  # the checkpoint's target by default
    md = res.files["markdown"].read_text()
    assert "| Method | Dice b | Dice a | Dice Mean |" in md
    assert "Model selection: fixed checkpoint ck.pt" in md
    with pytest.raises(ConfigError, match="class order: expected each foreground class once"):
        run_evaluation(raw, tmp_path / "o", checkpoint=tmp_path / "ck.pt", progress=False, class_order=["a"])


@pytest.mark.parametrize(
    "selection, expected",
    [
        ({"criterion": "last", "iteration": 50}, "last iteration (50); no selection on target labels"),
        (
            {"criterion": "target_entropy", "iteration": 30, "value": 0.12345},
            "label-free criterion target_entropy: best at iteration 30, score 0.1235",
        ),
        (
            {"criterion": "oracle", "iteration": 40, "value": 0.8},
            "oracle: best target test Dice, iteration 40, score 0.8 (uses target test labels)",
        ),
        ("chosen by hand", "chosen by hand"),
    ],
)
def test_model_selection_text_follows_the_checkpoint_record(selection, expected):
    loaded = LoadedModel(
        model=torch.nn.Identity(),
        text=None,
        class_names=[],
        checkpoint={
            "selection": selection,
            "iteration": 50,
        },
        path=Path("run/final.pt"),
    )
    assert loaded.model_selection() == expected
    spec = TableSpec(class_names={1: "a"}, model_selection=expected)
    ok = {"mean": 0.5, "std": 0.0, "n_nan": 0}
    md = markdown_table([TableRow("r", {"n_cases": 1, "classes": {1: {"dice": ok}}, "class_mean": {"dice": ok}})], spec)
    assert ("ORACLE selection" in md) == (
        selection.get("criterion") == "oracle" if isinstance(selection, dict) else False
    )


# ------------------------------------------------------------------------------------ --parity mpscl


class _NearestLevelStub(torch.nn.Module):
    """Class k where the (normalised) pixel is nearest to -1, 0, +1 for k = 0, 1, 2: a perfect 'network'."""

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> SimpleNamespace:
        grey = x[:, :1]
        logits = torch.cat([-((grey - level) ** 2) for level in (-1.0, 0.0, 1.0)], dim=1)
        return SimpleNamespace(main=logits, aux=logits)


def _tail_dataset(root: Path) -> tuple[Path, np.ndarray]:
    """CT test case 't' of 33 slices along axis 2: class 1 only in slice 32, class 2 in slices 5..8."""
    gt = np.zeros((6, 6, 33), dtype=np.uint8)
    gt[1:3, 1:3, 32] = 1
    gt[3:5, 3:5, 5:9] = 2
    image = np.where(gt == 1, 0.0, np.where(gt == 2, 1.0, -1.0)).astype(np.float32)
    _save(root / "t.nii.gz", image, np.eye(4))
    _save(root / "t_seg.nii.gz", gt, np.eye(4))
    data = {
        "name": "tail",
        "labels": {n: i for i, n in enumerate(CLASSES)},
        "domains": {
            "CT": {
                "modality": "computed tomography",
                "cases": [{"id": "t", "image": "t.nii.gz", "label": "t_seg.nii.gz", "split": "test"}],
            }
        },
    }
    (root / "dataset.json").write_text(json.dumps(data), encoding="utf-8")
    return root, gt


def _stub_model() -> LoadedModel:
    text = TextEmbeddings(
        domains=["CT"], class_names=CLASSES, prompts=[list(CLASSES)], embeddings=torch.zeros(1, 3, 4), encoder="t"
    )
    # A fixed map from [-1, 1] onto itself: the raw-folder path must pass the volume's domain to find it.
    norm = {"method": "fixed", "ranges": {"CT": [-1.0, 1.0]}}
    prep = {"axis": "2", "size": 6, "clip_percentiles": [0.5, 99.5], "normalization": norm}
    return LoadedModel(_NearestLevelStub(), text, list(CLASSES), {"preprocessing": {"prepare": prep}})


def test_parity_mpscl_leaves_the_last_d_mod_32_slices_background_on_raw_and_prepared_folders(tmp_path):
    ds, _ = _tail_dataset(tmp_path / "ds")
    loaded, mpscl = _stub_model(), resolve_settings(parity="mpscl")
    whole = evaluate_dataset(loaded, load_dataset(ds), "CT", settings=resolve_settings(parity="sifa"), batch_size=7)
    assert whole.values(1, "dice").tolist() == [1.0] and whole.values(2, "dice").tolist() == [1.0]
    assert "tail_slices" not in whole.meta
    index = prepare_dataset(
        ds, tmp_path / "prep", axis="2", size=6, normalization="fixed", fixed_ranges={"CT": (-1.0, 1.0)}, progress=False
    )
    for acc in (
        evaluate_dataset(loaded, load_dataset(ds), "CT", settings=mpscl, batch_size=7),
        evaluate_domain(loaded, index, "CT", settings=mpscl, batch_size=5),
    ):
        # Class 1 lives only in slice 32, which the released evaluation never predicts: Dice 0, ASSD 1.
        assert acc.values(1, "dice").tolist() == [0.0] and acc.values(1, "assd_vox_mean_of_means").tolist() == [1.0]
        assert acc.values(2, "dice").tolist() == [1.0] and acc.values(2, "assd_vox_mean_of_means").tolist() == [0.0]
        assert acc.meta["tail_slices"] == {"t": 1}


def test_parity_mpscl_needs_a_model(tmp_path, raw, preds):
    with pytest.raises(ConfigError, match=r"tail policy released_batch32: .* needs the model"):
        evaluate_predictions(preds, load_dataset(raw), "CT", settings=resolve_settings(parity="mpscl"))
    acc = evaluate_predictions(
        preds,
        load_dataset(raw),
        "CT",
        settings=resolve_settings(units="vox", assd_variant="mean_of_means", empty_policy="mpscl"),
    )
    assert acc.values(2, "assd_vox_mean_of_means").tolist() == [1.0, 0.0]  # t1 misses class 2 -> 1


def test_an_upper_bound_checkpoint_is_flagged_in_the_selection_text_and_the_table():
    """A run trained with target labels (the oracle method) says so; it is not an oracle *selection*."""
    bound = "UPPER BOUND: trained with target training labels, not a UDA result"
    loaded = LoadedModel(
        model=torch.nn.Identity(),
        text=None,
        class_names=[],
        checkpoint={"selection": {"criterion": "last", "iteration": 5, "upper_bound": bound}, "upper_bound": bound},
        path=Path("run/final.pt"),
    )
    text = loaded.model_selection()
    assert text == f"last iteration (5); no selection on target labels; {bound}"
    ok = {"mean": 0.5, "std": 0.0, "n_nan": 0}
    row = TableRow("r", {"n_cases": 1, "classes": {1: {"dice": ok}}, "class_mean": {"dice": ok}})
    md = markdown_table([row], TableSpec(class_names={1: "a"}, model_selection=text))
    assert "UPPER BOUND: trained with target labels, not an unsupervised domain adaptation result." in md
    assert "ORACLE selection" not in md
    plain = markdown_table([row], TableSpec(class_names={1: "a"}, model_selection="last iteration (5)"))
    assert "UPPER BOUND" not in plain
