"""Evaluate segmentations of one domain and split against the dataset's ground truth.

Three sources of predictions share one scoring path (:func:`score_case`):

* a checkpoint on a PREPARED folder (:func:`evaluate_domain`): the slices ``prepare`` stored;
* a checkpoint on a RAW dataset folder (:func:`evaluate_dataset`): each volume is preprocessed in
  memory with the checkpoint's own settings, exactly as ``prepare`` would (no cache is written:
  evaluation reads each volume once, and only the volumes of the evaluated domain and split);
* label maps already on disk (:func:`evaluate_predictions`, ``--pred``), like nnU-Net's
  evaluate-folder.

Every volume is predicted whole (no slice dropped) on its original voxel grid and compared
with the original label file; distances in mm use the spacing of the ground-truth affine.
:func:`run_evaluation` resolves the command-line inputs, evaluates and writes
``metrics.csv``, ``metrics.json``, ``summary.md`` and ``summary.tex`` (docs/evaluation.md).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tcsa_uda import __version__
from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.data.contract import DATASET_FILE, SPLITS, DatasetSpec, load_dataset
from tcsa_uda.data.io import Volume, is_nifti, load_nifti, save_nifti
from tcsa_uda.data.prepare import INDEX_FILE, PreparedCase, PreparedIndex, load_prepared
from tcsa_uda.engine.checkpoint import CheckpointError, load_checkpoint
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError
from tcsa_uda.evaluation.inference import PreprocessingSettings, predict_stack, predict_volume
from tcsa_uda.evaluation.metrics import (
    CaseMetrics,
    MetricAccumulator,
    compute_case_metrics,
    dice,
    resolve_empty_policy,
)
from tcsa_uda.evaluation.metrics_surface import ASSD_VARIANTS, check_option
from tcsa_uda.evaluation.tables import TableRow, TableSpec, latex_table, markdown_table
from tcsa_uda.models import build_segmenter
from tcsa_uda.text import TextEmbeddings

METRIC_SETS: tuple[str, ...] = ("dice", "all")
"""``dice``: Dice only (fast). ``all``: Dice, ASSD (both variants) and HD95."""

UNITS: tuple[str, ...] = ("mm", "vox", "both")
"""Distance units: ``mm`` (spacing from the affine), ``vox`` (evaluated grid), or both."""

PARITY_PRESETS: dict[str, dict[str, str]] = {
    # The released SIFA/MPSCL evaluation: ASSD in voxels, older medpy definition, ASSD = 1 when
    # a structure is missing (PROTOCOLS.md, Evaluation).
    "sifa": {"units": "vox", "assd_variant": "mean_of_means", "empty_policy": "sifa_mpscl"},
}

OUTPUT_FILES: dict[str, str] = {
    "csv": "metrics.csv",
    "json": "metrics.json",
    "markdown": "summary.md",
    "latex": "summary.tex",
}
PREDICTIONS_DIR = "predictions"
FINAL_CHECKPOINT = "final.pt"
_CHECKPOINT_KEYS: tuple[str, ...] = ("model", "model_name", "class_names", "text")


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class EvalSettings:
    """Every choice that changes an evaluation number (see docs/evaluation.md).

    Attributes:
        metrics: ``dice`` or ``all`` (:data:`METRIC_SETS`).
        units: ``mm``, ``vox`` or ``both`` (:data:`UNITS`); ``dice`` is unit-free.
        assd_variant: the ASSD definition shown in the summary tables (the CSV/JSON hold both).
        empty_policy: missing-structure policy, a name in ``EMPTY_POLICIES``.
        parity: the parity preset these settings come from, or None.
    """

    metrics: str = "all"
    units: str = "mm"
    assd_variant: str = "pooled"
    empty_policy: str = "nan"
    parity: str | None = None

    def __post_init__(self) -> None:
        check_option(self.metrics, METRIC_SETS, "metrics")
        check_option(self.units, UNITS, "units")
        check_option(self.assd_variant, ASSD_VARIANTS, "assd_variant")
        resolve_empty_policy(self.empty_policy)
        if self.parity is not None:
            check_option(self.parity, tuple(PARITY_PRESETS), "parity")

    @property
    def table_unit(self) -> str:
        """The distance unit shown in tables: ``vox`` for ``units=vox``, else ``mm``."""
        return "vox" if self.units == "vox" else "mm"

    @property
    def table_assd_metric(self) -> str | None:
        """The ASSD column of the tables (e.g. ``assd_mm_pooled``), None for Dice only."""
        return None if self.metrics == "dice" else f"assd_{self.table_unit}_{self.assd_variant}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "units": self.units,
            "assd_variant": self.assd_variant,
            "empty_policy": self.empty_policy,
            "parity": self.parity,
        }


def resolve_settings(
    metrics: str = "all",
    units: str | None = None,
    assd_variant: str | None = None,
    empty_policy: str | None = None,
    parity: str | None = None,
) -> EvalSettings:
    """Combine explicit options with a parity preset; defaults mm, pooled, nan.

    Raises:
        ConfigError: an unknown value, or an explicit option that contradicts the preset.
    """
    given = {"units": units, "assd_variant": assd_variant, "empty_policy": empty_policy}
    values = {"units": "mm", "assd_variant": "pooled", "empty_policy": "nan"}
    if parity is not None:
        preset = PARITY_PRESETS[check_option(parity, tuple(PARITY_PRESETS), "parity")]
        for key, value in given.items():
            if value is not None and value != preset[key]:
                raise ConfigError(
                    f"{key}={value!r} contradicts --parity {parity} (which uses {key}={preset[key]!r}); "
                    f"drop one of the two options."
                )
        values.update(preset)
    values.update({k: v for k, v in given.items() if v is not None})
    return EvalSettings(metrics=metrics, parity=parity, **values)


# --------------------------------------------------------------------------------------------
# Scoring


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    class_ids: Sequence[int],
    spacing: Sequence[float] | None,
    settings: EvalSettings,
) -> CaseMetrics:
    """The metrics of one volume as ``settings`` ask.

    Args:
        pred: (X, Y, Z) integer predicted label map.
        gt: (X, Y, Z) integer ground truth on the same grid.
        class_ids: foreground classes to score.
        spacing: voxel size in mm along the array axes (used for ``mm`` units).
        settings: metrics, units and empty policy.

    Returns:
        class id -> metric name -> value: ``dice``, then the ``mm`` metrics, then the ``vox``
        metrics (names as :func:`~tcsa_uda.evaluation.metrics.metric_names`).
    """
    if settings.metrics == "dice":
        return {c: {"dice": dice(pred == c, gt == c, settings.empty_policy)} for c in class_ids}
    out: CaseMetrics = {c: {} for c in class_ids}
    units = ("mm", "vox") if settings.units == "both" else (settings.units,)
    for unit in units:
        part = compute_case_metrics(
            pred, gt, class_ids, spacing=spacing if unit == "mm" else None, empty_policy=settings.empty_policy
        )
        for c in class_ids:
            out[c].update(part[c])
    return out


# --------------------------------------------------------------------------------------------
# Models


@dataclass
class LoadedModel:
    """A segmenter restored from a checkpoint, with the text embeddings it was trained with.

    Attributes:
        model: the network in eval mode.
        text: the frozen prompt embeddings of the training domains.
        class_names: class names ordered by id (background first).
        checkpoint: the whole checkpoint mapping.
        path: the checkpoint file, when loaded from one.
    """

    model: nn.Module
    text: TextEmbeddings
    class_names: list[str]
    checkpoint: dict
    path: Path | None = None

    def text_for(self, domain: str, device: torch.device | str = "cpu") -> torch.Tensor:
        """The (C, D_text) embeddings of ``domain``.

        Raises:
            ConfigError: the checkpoint has no text embeddings for ``domain``.
        """
        if domain not in self.text.domains:
            raise ConfigError(
                f"{self.path or 'checkpoint'}: domain {domain!r} is not one the model was trained with; "
                f"its text embeddings cover {self.text.domains} (classes {self.class_names})."
            )
        return self.text.for_domain(domain).to(device)

    @property
    def target(self) -> str | None:
        """The target domain of training, when recorded."""
        value = self.checkpoint.get("target")
        return None if value is None else str(value)

    @property
    def preprocessing(self) -> PreprocessingSettings:
        """The ``prepare`` settings the model was trained with."""
        return PreprocessingSettings.from_checkpoint(self.checkpoint, str(self.path or "checkpoint"))

    def model_selection(self) -> str:
        """How this checkpoint was chosen, from its ``selection`` record (training engine).

        ``{"criterion": "last"}`` gives the last iteration; a label-free criterion names itself
        and the iteration it chose; ``oracle`` says that target test labels were used. Without a
        record, the iteration the checkpoint holds is named.
        """
        sel = self.checkpoint.get("selection")
        it = self.checkpoint.get("iteration")
        if isinstance(sel, str) and sel:
            return sel
        if isinstance(sel, Mapping) and sel.get("criterion"):
            crit, at = str(sel["criterion"]), sel.get("iteration", it)
            if crit == "last":
                return f"last iteration ({at}); no selection on target labels"
            value = sel.get("value")
            score = f", score {float(value):.4g}" if isinstance(value, (int, float)) else ""
            if crit == "oracle":
                return f"oracle: best target test Dice, iteration {at}{score} (uses target test labels)"
            return f"label-free criterion {crit}: best at iteration {at}{score}"
        name = self.path.name if self.path is not None else "checkpoint"
        stage, method = self.checkpoint.get("stage"), self.checkpoint.get("method")
        where = f"iteration {it}" if it is not None else "unknown iteration"
        if stage is not None:
            where += f" of stage {int(stage) + 1}"
        if method:
            where += f" ({method})"
        return f"fixed checkpoint {name}, {where}; no selection rule recorded"


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the segmenter stored in a checkpoint written by the training engine (eval mode).

    Raises:
        MissingPathError: no file at ``path``.
        CheckpointError: not a training checkpoint, or its parts disagree (class names of the
            text embeddings, weights for another network or class count).
    """
    path = Path(path)
    ck = load_checkpoint(path, map_location=device)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise CheckpointError(
            f"{path}: expected a training checkpoint with keys {list(_CHECKPOINT_KEYS)}, missing {missing}."
        )
    class_names = [str(c) for c in ck["class_names"]]
    try:
        text = TextEmbeddings.from_dict(ck["text"], source=f"{path} ['text']")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    if text.class_names != class_names:
        raise CheckpointError(
            f"{path}: the text embeddings are for classes {text.class_names}, the model for {class_names}."
        )
    try:
        model = build_segmenter(ck["model_name"], len(class_names), text.dim, **ck.get("model_kwargs", {}))
        model.load_state_dict(ck["model"])
    except (RuntimeError, ConfigError) as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit model {ck['model_name']!r} with {len(class_names)} classes "
            f"and text width {text.dim} ({type(exc).__name__}: {str(exc).splitlines()[0]})."
        ) from exc
    model.to(device).eval()
    return LoadedModel(model=model, text=text, class_names=class_names, checkpoint=ck, path=path)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (its ``final.pt``) or a checkpoint file.

    Raises:
        MissingPathError: neither exists.
    """
    p = Path(path)
    if p.is_dir():
        ck = p / FINAL_CHECKPOINT
        if not ck.is_file():
            raise MissingPathError(
                f"{p}: run folder without {FINAL_CHECKPOINT} (training not finished?); pass a checkpoint file "
                f"instead, e.g. {p / 'stage1_<method>' / 'checkpoint_last.pt'}."
            )
        return ck
    if not p.is_file():
        raise MissingPathError(f"{p}: no such run folder or checkpoint file.")
    return p


# --------------------------------------------------------------------------------------------
# Ground truth


@dataclass(frozen=True)
class GroundTruthCase:
    """One labelled volume to evaluate.

    Attributes:
        id: the case id of ``dataset.json``.
        label: the ground-truth label file.
        image: the image file (None when unknown).
        channel: the domain's channel of a 4D image.
        prepared: the prepared case, when evaluating a prepared folder.
    """

    id: str
    label: Path
    image: Path | None = None
    channel: int | None = None
    prepared: PreparedCase | None = None


def load_evaluation_source(path: str | Path) -> PreparedIndex | DatasetSpec:
    """A prepared folder (``index.json``) or a raw dataset folder (``dataset.json``).

    Raises:
        MissingPathError: the folder holds neither file.
    """
    p = Path(path)
    if (p / INDEX_FILE).is_file():
        return load_prepared(p)
    if (p / DATASET_FILE).is_file() or (p.is_file() and p.name == DATASET_FILE):
        return load_dataset(p)
    raise MissingPathError(
        f"{p}: expected a prepared folder ({INDEX_FILE}, from `tcsa-uda prepare`) or a dataset folder "
        f"({DATASET_FILE}); found neither."
    )


def ground_truth_cases(
    source: PreparedIndex | DatasetSpec, domain: str, split: str = "test"
) -> tuple[list[GroundTruthCase], list[str]]:
    """The labelled cases of ``domain``/``split`` and the ids of the unlabelled ones.

    Raises:
        DatasetError: unknown domain or split, or no labelled case.
    """
    if split not in SPLITS:
        raise DatasetError(f"split: expected one of {list(SPLITS)}, found {split!r}.")
    labelled: list[GroundTruthCase] = []
    unlabelled: list[str] = []
    if isinstance(source, PreparedIndex):
        root = Path(source.dataset_path)
        where = str(source.root / INDEX_FILE)
        for case in source.cases(domain, split):
            rec = case.source.get("label")
            if not rec:
                unlabelled.append(case.id)
                continue
            image = case.source.get("image")
            labelled.append(
                GroundTruthCase(case.id, root / rec["path"], root / image["path"] if image else None, prepared=case)
            )
    else:
        dom = source.domain(domain)
        where = str(source.root / DATASET_FILE)
        for spec_case in dom.select(split):
            label = spec_case.label_path(source.root)
            if label is None:
                unlabelled.append(spec_case.id)
                continue
            labelled.append(GroundTruthCase(spec_case.id, label, spec_case.image_path(source.root), dom.channel))
    if not labelled:
        raise DatasetError(f"{where}: no labelled case in {domain}/{split} to evaluate.")
    return labelled, unlabelled


def _class_names(source: PreparedIndex | DatasetSpec) -> list[str]:
    return list(source.class_names)


def _check_classes(model_classes: Sequence[str], source: PreparedIndex | DatasetSpec, what: str) -> None:
    data_classes = _class_names(source)
    if list(model_classes) != data_classes:
        root = source.root
        raise DatasetError(f"{root}: classes {data_classes} differ from the {what}'s {list(model_classes)}.")


# --------------------------------------------------------------------------------------------
# The evaluation loop

Predictor = Callable[[GroundTruthCase, Volume], np.ndarray]


def _evaluate_cases(
    cases: Sequence[GroundTruthCase],
    predict: Predictor,
    class_names: Sequence[str],
    settings: EvalSettings,
    meta: Mapping[str, Any],
    progress: bool = False,
    save_dir: Path | None = None,
) -> MetricAccumulator:
    names = {i: n for i, n in enumerate(class_names) if i > 0}
    acc = MetricAccumulator(class_names=names, meta=meta)
    class_ids = sorted(names)
    for case in tqdm(cases, desc="evaluate", unit="case", disable=not progress):
        gt = load_nifti(case.label, what="label")
        pred = predict(case, gt)
        if pred.shape != gt.array.shape:
            raise DatasetError(
                f"case {case.id}: the prediction has shape {pred.shape} but the ground truth {case.label} has "
                f"shape {gt.array.shape}."
            )
        gt_arr = np.asarray(gt.array).astype(np.int64)
        acc.add(case.id, score_case(pred, gt_arr, class_ids, gt.spacing, settings))
        if save_dir is not None:
            save_nifti(save_dir / f"{safe_case_name(case.id)}.nii.gz", pred.astype(np.uint8), gt.affine, gt.header)
    return acc


def safe_case_name(case_id: str) -> str:
    """The file stem used for a case id (characters other than ``A-Za-z0-9._-`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def evaluate_domain(
    loaded: LoadedModel,
    index: PreparedIndex,
    domain: str,
    split: str = "test",
    metrics: str = "dice",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    *,
    settings: EvalSettings | None = None,
    flip: bool = False,
    progress: bool = False,
    save_dir: Path | None = None,
) -> MetricAccumulator:
    """Per-volume metrics of ``loaded`` on ``domain``/``split`` of a prepared folder.

    Args:
        loaded: the model (:func:`load_model`).
        index: the prepared folder; its settings must be the checkpoint's.
        domain: the domain to evaluate (its text embeddings must be in the checkpoint).
        split: ``train``, ``val`` or ``test``.
        metrics: ``dice`` or ``all`` (in mm); a shortcut ignored when ``settings`` is given.
        batch_size: slices per forward pass (no slice is dropped).
        device: where the model and the text embeddings are.
        settings: every evaluation choice (units, ASSD variant, empty policy).
        flip: horizontal-flip test-time augmentation.
        progress: show a progress bar over the volumes.
        save_dir: write each predicted label map there as ``<case>.nii.gz`` (ground-truth header).

    Raises:
        DatasetError: the class names differ from the model's, or the split has no labelled case.
        ConfigError: the prepared settings differ from the checkpoint's, or no text for ``domain``.
    """
    settings = settings or EvalSettings(metrics=metrics)
    _check_classes(loaded.class_names, index, "checkpoint")
    if "preprocessing" in loaded.checkpoint and not loaded.preprocessing.matches(index.settings):
        raise ConfigError(
            f"{index.root}: prepared with {index.settings}, but the model was trained on slices prepared with "
            f"{loaded.preprocessing.to_dict()}; evaluate on the raw dataset folder instead (it is then "
            "preprocessed with the checkpoint's settings) or prepare it again with those settings."
        )
    cases, unlabelled = ground_truth_cases(index, domain, split)
    text = loaded.text_for(domain, device)

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        prepared = case.prepared
        if prepared is None:
            raise DatasetError(f"case {case.id}: no prepared slices in {index.root}.")
        return predict_stack(
            loaded.model, np.asarray(prepared.load_image()), prepared.geometry, text, batch_size, flip
        ).labels

    meta = {"domain": domain, "split": split, "metrics": settings.metrics, "unlabelled_cases": unlabelled}
    return _evaluate_cases(cases, predict, loaded.class_names, settings, meta, progress, save_dir)


def evaluate_dataset(
    loaded: LoadedModel,
    spec: DatasetSpec,
    domain: str,
    split: str = "test",
    settings: EvalSettings | None = None,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    flip: bool = False,
    progress: bool = False,
    save_dir: Path | None = None,
) -> MetricAccumulator:
    """Like :func:`evaluate_domain` on a RAW dataset folder, preprocessing in memory.

    Each image is normalised, sliced and resized with the checkpoint's ``prepare`` settings by
    the same functions ``prepare`` uses, so the numbers equal those on a folder prepared with
    these settings.

    Raises:
        DatasetError: the class names differ from the model's, or the split has no labelled case.
        ConfigError: the checkpoint has no preprocessing settings, or no text for ``domain``.
    """
    settings = settings or EvalSettings()
    _check_classes(loaded.class_names, spec, "checkpoint")
    prep = loaded.preprocessing
    cases, unlabelled = ground_truth_cases(spec, domain, split)
    text = loaded.text_for(domain, device)

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        if case.image is None:
            raise MissingPathError(f"case {case.id}: no image path to predict from.")
        image = load_nifti(case.image, channel=case.channel, what="image")
        return predict_volume(
            loaded.model, image.array, image.affine, text, prep, batch_size, flip, what=str(case.image)
        ).labels

    meta = {"domain": domain, "split": split, "metrics": settings.metrics, "unlabelled_cases": unlabelled}
    return _evaluate_cases(cases, predict, loaded.class_names, settings, meta, progress, save_dir)


# --------------------------------------------------------------------------------------------
# Label maps on disk (--pred)


def nifti_stem(name: str) -> str:
    """``case.nii.gz`` -> ``case`` (also ``.nii``), case preserved."""
    lower = name.lower()
    for suffix in (".nii.gz", ".nii"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_predictions(folder: str | Path) -> dict[str, Path]:
    """Every NIfTI file under ``folder`` (any depth), keyed by its lower-cased case name.

    Hidden files (names starting with ``.``, e.g. unfinished atomic writes) are ignored.

    Raises:
        MissingPathError: ``folder`` is not a folder.
        DatasetError: two files map to the same case name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingPathError(f"{root}: prediction folder does not exist.")
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".") or not path.is_file() or not is_nifti(path):
            continue
        key = safe_case_name(nifti_stem(path.name)).lower()
        if key in out:
            raise DatasetError(
                f"{root}: two prediction files for case {key!r}: {out[key]} and {path}; keep one per case."
            )
        out[key] = path
    return out


def read_prediction(path: Path, gt_path: Path, gt_shape: tuple[int, ...], class_names: Sequence[str]) -> Volume:
    """Load a predicted label map and check it against its ground truth.

    Raises:
        DatasetError: unreadable, not 3D, non-integer values, shape different from the ground
            truth (both files and shapes named), or labels outside the dataset's class ids.
    """
    vol = load_nifti(path, what="prediction")
    arr = np.asarray(vol.array)
    if arr.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: expected an integer label map, found dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
        raise DatasetError(f"{path}: expected integer label ids, found non-integer values.")
    if arr.shape != tuple(gt_shape):
        raise DatasetError(
            f"prediction {path} has shape {arr.shape} but the ground truth {gt_path} has shape {tuple(gt_shape)}; "
            "predictions must be on the ground truth's voxel grid."
        )
    labels = arr.astype(np.int64)
    present = np.unique(labels)
    bad = [int(v) for v in present if v < 0 or v >= len(class_names)]
    if bad:
        raise DatasetError(
            f"{path}: expected label ids 0..{len(class_names) - 1} ({', '.join(class_names)}), found {bad[:10]}; "
            "is it a prediction for another class set or with raw label codes?"
        )
    return Volume(array=labels, affine=vol.affine, header=vol.header)


def evaluate_predictions(
    pred_dir: str | Path,
    source: PreparedIndex | DatasetSpec,
    domain: str,
    split: str = "test",
    settings: EvalSettings | None = None,
    allow_missing: bool = False,
    progress: bool = False,
) -> MetricAccumulator:
    """Score label maps on disk (one NIfTI per case, any nesting, ``<case>.nii.gz``).

    A case whose file is missing is an error unless ``allow_missing``; then it is scored as an
    empty prediction (all background), counted and listed in ``meta["missing_predictions"]``.
    A prediction whose affine differs from the ground truth's (beyond 1e-3) gives a warning;
    metrics use the ground truth's spacing.

    Raises:
        MissingPathError: ``pred_dir`` does not exist, or predictions are missing.
        DatasetError: see :func:`read_prediction`.
    """
    settings = settings or EvalSettings()
    pred_dir = Path(pred_dir)
    files = find_predictions(pred_dir)
    cases, unlabelled = ground_truth_cases(source, domain, split)
    keys = {case.id: safe_case_name(case.id).lower() for case in cases}
    missing = [case.id for case in cases if keys[case.id] not in files]
    if missing and not allow_missing:
        raise MissingPathError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(cases)} {domain}/{split} case(s): "
            f"{', '.join(missing)} (expected files named <case>.nii.gz); pass --allow-missing to score them as "
            "empty predictions."
        )
    class_names = _class_names(source)

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        path = files.get(keys[case.id])
        if path is None:
            return np.zeros(gt.array.shape, dtype=np.uint8)
        vol = read_prediction(path, case.label, gt.array.shape, class_names)
        if not np.allclose(vol.affine, gt.affine, atol=1e-3):
            warnings.warn(
                f"{path}: affine differs from the ground truth {case.label}; scored on the voxel grid with the "
                "ground truth's spacing.",
                UserWarning,
                stacklevel=2,
            )
        return vol.array

    used = {keys[c.id] for c in cases}
    meta = {
        "domain": domain,
        "split": split,
        "metrics": settings.metrics,
        "unlabelled_cases": unlabelled,
        "missing_predictions": missing,
        "unused_prediction_files": sum(1 for k in files if k not in used),
    }
    return _evaluate_cases(cases, predict, class_names, settings, meta, progress)


# --------------------------------------------------------------------------------------------
# The command: resolve, evaluate, write


@dataclass
class EvaluationResult:
    """What :func:`run_evaluation` computed and wrote.

    Attributes:
        accumulator: per-case metrics (its ``meta`` is the JSON ``meta``).
        settings: the evaluation choices.
        table: the table specification (class order, conventions).
        row: the table row.
        files: kind (``csv``, ``json``, ``markdown``, ``latex``) -> written path.
    """

    accumulator: MetricAccumulator
    settings: EvalSettings
    table: TableSpec
    row: TableRow
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        return markdown_table([self.row], self.table)


def order_classes(class_names: Sequence[str], order: Sequence[str] | None) -> dict[int, str]:
    """Foreground id -> name in table column order (id order, or ``order`` by name).

    Raises:
        ConfigError: ``order`` is not a permutation of the foreground class names.
    """
    fg = {i: n for i, n in enumerate(class_names) if i > 0}
    if not order:
        return fg
    if sorted(order) != sorted(fg.values()):
        raise ConfigError(
            f"class order: expected each foreground class once, {sorted(fg.values())}, found {list(order)}."
        )
    by_name = {n: i for i, n in fg.items()}
    return {by_name[n]: n for n in order}


def run_evaluation(
    dataset: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    pred_dir: str | Path | None = None,
    domain: str | None = None,
    split: str = "test",
    settings: EvalSettings | None = None,
    flip: bool = False,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    allow_missing: bool = False,
    save_predictions: bool = False,
    label: str | None = None,
    model_selection: str | None = None,
    class_order: Sequence[str] | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate a checkpoint (or a prediction folder) and write the result files into ``out``.

    Args:
        dataset: a prepared folder or a raw dataset folder (see :func:`load_evaluation_source`).
        out: output folder for ``metrics.csv``, ``metrics.json``, ``summary.md``, ``summary.tex``
            (and ``predictions/`` with ``save_predictions``).
        checkpoint: a run folder (its ``final.pt``) or a checkpoint file; exclusive with ``pred_dir``.
        pred_dir: a folder of predicted label maps to score instead of a model.
        domain: the evaluated domain; default the checkpoint's target (required with ``pred_dir``).
        split: the evaluated split.
        settings: evaluation choices (default :class:`EvalSettings`).
        flip: horizontal-flip test-time augmentation (model only).
        batch_size: slices per forward pass.
        device: torch device of the model.
        allow_missing: with ``pred_dir``, score missing predictions as empty instead of failing.
        save_predictions: write the model's label maps to ``out/predictions``.
        label: the table row's name (default: the checkpoint's method or the folder name).
        model_selection: how the model was chosen, printed in the tables (default: from the
            checkpoint; unknown for a prediction folder).
        class_order: class names in table column order (default: id order).
        progress: show a progress bar.

    Raises:
        ConfigError: contradictory options.
        TcsaUdaError: any input problem, with the file named.
    """
    settings = settings or EvalSettings()
    if (checkpoint is None) == (pred_dir is None):
        raise ConfigError("evaluate: give either a run folder / checkpoint or --pred DIR (exactly one of them).")
    if pred_dir is not None and (flip or save_predictions):
        raise ConfigError(
            "evaluate --pred scores label maps already on disk: --flip and --save-predictions need a model."
        )
    source = load_evaluation_source(dataset)
    columns = order_classes(_class_names(source), class_order)  # checked before the (slow) evaluation
    kind = "prepared" if isinstance(source, PreparedIndex) else "raw"
    out = Path(out)
    meta: dict[str, Any] = {"tool": f"tcsa-uda {__version__} evaluate", "dataset": str(dataset), "dataset_kind": kind}
    if pred_dir is not None:
        if domain is None:
            raise ConfigError("evaluate --pred: --domain is required (there is no checkpoint to take it from).")
        acc = evaluate_predictions(pred_dir, source, domain, split, settings, allow_missing, progress)
        row_label = label or Path(pred_dir).name
        meta["predictions"] = {"kind": "folder", "path": str(pred_dir)}
    else:
        loaded = load_model(resolve_checkpoint(checkpoint), device)  # type: ignore[arg-type]
        domain = domain or loaded.target
        if domain is None:
            raise ConfigError(f"{loaded.path}: no target domain recorded; pass --domain.")
        save_dir = out / PREDICTIONS_DIR if save_predictions else None
        if isinstance(source, PreparedIndex):
            acc = evaluate_domain(
                loaded,
                source,
                domain,
                split,
                batch_size=batch_size,
                device=device,
                settings=settings,
                flip=flip,
                progress=progress,
                save_dir=save_dir,
            )
        else:
            acc = evaluate_dataset(
                loaded, source, domain, split, settings, batch_size, device, flip, progress, save_dir
            )
        model_selection = model_selection or loaded.model_selection()
        ck = loaded.checkpoint
        row_label = label or str(ck.get("method") or Path(str(loaded.path)).stem)
        meta["predictions"] = {
            "kind": "checkpoint",
            "path": str(loaded.path),
            "method": ck.get("method"),
            "iteration": ck.get("iteration"),
            "selection": ck.get("selection"),
            "source": ck.get("source"),
            "target": ck.get("target"),
            "preprocessing": loaded.preprocessing.to_dict(),
        }
        meta.update({"flip": flip, "batch_size": batch_size})
    acc.meta = {**meta, **acc.meta, "settings": settings.to_dict(), "model_selection": model_selection, "ddof": 0}
    table = TableSpec(
        class_names=columns,
        assd_metric=settings.table_assd_metric,
        empty_policy=settings.empty_policy,
        parity=settings.parity,
        model_selection=model_selection,
        domain=domain,
        split=split,
    )
    row = TableRow(row_label, acc.summary(), tuple(acc.meta.get("missing_predictions", ())))
    result = EvaluationResult(accumulator=acc, settings=settings, table=table, row=row)
    result.files = write_evaluation(result, out)
    return result


def write_evaluation(result: EvaluationResult, out: str | Path) -> dict[str, Path]:
    """Write the per-case CSV and JSON and the markdown and LaTeX summaries (atomically)."""
    out = Path(out)
    files = {kind: out / name for kind, name in OUTPUT_FILES.items()}
    result.accumulator.to_csv(files["csv"])
    result.accumulator.to_json(files["json"])
    atomic_write_text(files["markdown"], result.markdown)
    atomic_write_text(files["latex"], latex_table([result.row], result.table))
    return files


__all__ = [
    "METRIC_SETS",
    "OUTPUT_FILES",
    "PARITY_PRESETS",
    "UNITS",
    "EvalSettings",
    "EvaluationResult",
    "GroundTruthCase",
    "LoadedModel",
    "evaluate_dataset",
    "evaluate_domain",
    "evaluate_predictions",
    "find_predictions",
    "ground_truth_cases",
    "load_evaluation_source",
    "load_model",
    "order_classes",
    "read_prediction",
    "resolve_checkpoint",
    "resolve_settings",
    "run_evaluation",
    "score_case",
    "write_evaluation",
]
