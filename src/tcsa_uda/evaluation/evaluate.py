"""Evaluate segmentations of one domain and split against the dataset's ground truth.

Three sources of predictions share one scoring path (:func:`score_case`):

* a checkpoint on a PREPARED folder (:func:`evaluate_domain`): the slices ``prepare`` stored;
* a checkpoint on a RAW dataset folder (:func:`evaluate_dataset`): each volume is preprocessed in
  memory with the checkpoint's own settings, exactly as ``prepare`` would (no cache is written:
  evaluation reads each volume once, and only the volumes of the evaluated domain and split);
* label maps already on disk (:func:`evaluate_predictions`, ``--pred``), like nnU-Net's
  evaluate-folder.

Every volume is predicted whole (no slice dropped) on its original voxel grid and compared
with the original label file; distances in mm use the spacing of the ground-truth affine. The
``released_batch32`` tail policy (``--parity mpscl``) then sets to background the last
``D mod 32`` slices along the slicing axis, as the released evaluation leaves them, and records
their number per case in ``meta["tail_slices"]``. The ground truth is checked like a prediction
(integer ids of the dataset's classes only). A label map on disk whose grid (shape or affine)
differs from its ground truth's is an error unless ``resample_to_gt`` (nearest neighbour in
world space onto the ground-truth grid); the outputs record which cases were resampled. The
output folder is claimed before the evaluation starts (:class:`~tcsa_uda.outputs.OutputFolder`):
files evaluate did not write are never replaced without ``overwrite``.
:func:`run_evaluation` resolves the command-line inputs, evaluates and writes
``metrics.csv``, ``metrics.json``, ``summary.md`` and ``summary.tex`` (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tcsa_uda import __version__
from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.data.contract import DatasetSpec
from tcsa_uda.data.io import Volume, load_nifti, save_nifti
from tcsa_uda.data.prepared import PreparedIndex
from tcsa_uda.data.verify import grid_problems
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError
from tcsa_uda.evaluation.batching import inference_options
from tcsa_uda.evaluation.ground_truth import (
    GroundTruthCase,
    check_classes,
    ground_truth_cases,
    load_evaluation_source,
    read_ground_truth,
)
from tcsa_uda.evaluation.inference import predict_stack, predict_volume
from tcsa_uda.evaluation.model import LoadedModel, load_model, resolve_checkpoint
from tcsa_uda.evaluation.predictions import find_predictions, read_prediction, resample_to_grid, safe_case_name
from tcsa_uda.evaluation.settings import EvalSettings, apply_tail_policy, score_case
from tcsa_uda.evaluation.tables import TableRow, TableSpec, latex_table, markdown_table
from tcsa_uda.metrics.volume import MetricAccumulator
from tcsa_uda.outputs import OutputFolder
from tcsa_uda.precision import autocast

OUTPUT_FILES: dict[str, str] = {
    "csv": "metrics.csv",
    "json": "metrics.json",
    "markdown": "summary.md",
    "latex": "summary.tex",
}
PREDICTIONS_DIR = "predictions"


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
        gt = read_ground_truth(case.label, class_names)
        pred = predict(case, gt)
        if pred.shape != gt.array.shape:
            raise DatasetError(
                f"case {case.id}: the prediction has shape {pred.shape} but the ground truth {case.label} has "
                f"shape {gt.array.shape}."
            )
        acc.add(case.id, score_case(pred, gt.array, class_ids, gt.spacing, settings))
        if save_dir is not None:
            path = save_dir / f"{safe_case_name(case.id)}.nii.gz"
            save_nifti(path, pred.astype(np.uint8), gt.affine, gt.header, kind="label")
    return acc


def evaluate_domain(
    loaded: LoadedModel,
    index: PreparedIndex,
    domain: str,
    split: str = "test",
    *,
    settings: EvalSettings | None = None,
    batch_size: int | str = 16,
    device: torch.device | str = "cpu",
    flip: bool = False,
    progress: bool = False,
    save_dir: Path | None = None,
    precision: str = "auto",
) -> MetricAccumulator:
    """Per-volume metrics of ``loaded`` on ``domain``/``split`` of a prepared folder.

    Args:
        loaded: the model (:func:`load_model`).
        index: the prepared folder; its settings must be the checkpoint's.
        domain: the domain to evaluate (its text embeddings must be in the checkpoint).
        split: ``train``, ``val`` or ``test``.
        batch_size: slices per forward pass (no slice is dropped), or ``auto``
            (:mod:`tcsa_uda.evaluation.batching`).
        device: where the model and the text embeddings are.
        settings: every evaluation choice (metrics, units, ASSD variant, empty policy); default
            :class:`EvalSettings` (all metrics, mm).
        flip: horizontal-flip test-time augmentation.
        progress: show a progress bar over the volumes.
        save_dir: write each predicted label map there as ``<case>.nii.gz`` (ground-truth header).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` autocast of the network.

    Raises:
        DatasetError: the class names differ from the model's, or the split has no labelled case.
        ConfigError: the prepared settings differ from the checkpoint's, or no text for ``domain``.
    """
    settings = settings or EvalSettings()
    check_classes(loaded.class_names, index, "checkpoint")
    if "preprocessing" in loaded.checkpoint and not loaded.preprocessing.matches(index.settings):
        raise ConfigError(
            f"{index.root}: prepared with {index.settings}, but the model was trained on slices prepared with "
            f"{loaded.preprocessing.to_dict()}; evaluate on the raw dataset folder instead (it is then "
            "preprocessed with the checkpoint's settings) or prepare it again with those settings."
        )
    cases, unlabelled = ground_truth_cases(index, domain, split)
    text = loaded.text_for(domain, device)
    batch, prec = inference_options(
        loaded.model, text, index.size, batch_size, precision, flip, encoding=loaded.input_encoding
    )
    tails: dict[str, int] = {}

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        prepared = case.prepared
        if prepared is None:
            raise DatasetError(f"case {case.id}: no prepared slices in {index.root}.")
        image = np.asarray(prepared.load_image())
        with autocast(prec, text.device):
            labels = predict_stack(
                loaded.model, image, prepared.geometry, text, batch, flip, encoding=loaded.input_encoding
            ).labels
        labels, tails[case.id] = apply_tail_policy(labels, prepared.geometry.axis, settings.tail_policy)
        return labels

    meta = _meta(domain, split, settings, unlabelled, batch, prec)
    acc = _evaluate_cases(cases, predict, loaded.class_names, settings, meta, progress, save_dir)
    return _with_tails(acc, tails, settings)


def evaluate_dataset(
    loaded: LoadedModel,
    spec: DatasetSpec,
    domain: str,
    split: str = "test",
    *,
    settings: EvalSettings | None = None,
    batch_size: int | str = 16,
    device: torch.device | str = "cpu",
    flip: bool = False,
    progress: bool = False,
    save_dir: Path | None = None,
    precision: str = "auto",
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
    check_classes(loaded.class_names, spec, "checkpoint")
    prep = loaded.preprocessing
    cases, unlabelled = ground_truth_cases(spec, domain, split)
    text = loaded.text_for(domain, device)
    batch, prec = inference_options(
        loaded.model, text, prep.size, batch_size, precision, flip, encoding=loaded.input_encoding
    )
    tails: dict[str, int] = {}

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        if case.image is None:
            raise MissingPathError(f"case {case.id}: no image path to predict from.")
        image = load_nifti(case.image, channel=case.channel, what="image")
        with autocast(prec, text.device):
            pred = predict_volume(
                loaded.model,
                image.array,
                image.affine,
                text,
                prep,
                batch,
                flip,
                what=str(case.image),
                domain=domain,
                encoding=loaded.input_encoding,
            )
        labels, tails[case.id] = apply_tail_policy(pred.labels, pred.geometry.axis, settings.tail_policy)
        return labels

    meta = _meta(domain, split, settings, unlabelled, batch, prec)
    acc = _evaluate_cases(cases, predict, loaded.class_names, settings, meta, progress, save_dir)
    return _with_tails(acc, tails, settings)


def _meta(
    domain: str, split: str, settings: EvalSettings, unlabelled: list[str], batch: int, precision: str
) -> dict[str, Any]:
    """The ``meta`` both evaluation paths record: what was evaluated and how it was run."""
    return {
        "domain": domain,
        "split": split,
        "metrics": settings.metrics,
        "unlabelled_cases": unlabelled,
        "batch_size": batch,
        "precision": precision,
    }


def _with_tails(acc: MetricAccumulator, tails: dict[str, int], settings: EvalSettings) -> MetricAccumulator:
    """Record the number of tail slices set to background per case (tail policies other than ``none``)."""
    if settings.tail_policy != "none":
        acc.meta = {**acc.meta, "tail_slices": dict(tails)}
    return acc


def evaluate_predictions(
    pred_dir: str | Path,
    source: PreparedIndex | DatasetSpec,
    domain: str,
    split: str = "test",
    settings: EvalSettings | None = None,
    allow_missing: bool = False,
    progress: bool = False,
    resample_to_gt: bool = False,
) -> MetricAccumulator:
    """Score label maps on disk (one NIfTI per case, any nesting, ``<case>.nii.gz``).

    A case whose file is missing is an error unless ``allow_missing``; then it is scored as an
    empty prediction (all background), counted and listed in ``meta["missing_predictions"]``.
    A prediction on another grid than its ground truth (shape, or an affine that differs by more
    than 1e-3 mm in any entry: flipped, permuted, shifted) is an error unless ``resample_to_gt``;
    then it is resampled onto the ground truth's grid by nearest neighbour in world space
    (:func:`resample_to_grid`) and listed in ``meta["resampled_cases"]``. Metrics use the
    ground truth's spacing.

    Raises:
        MissingPathError: ``pred_dir`` does not exist, or predictions are missing.
        DatasetError: see :func:`read_prediction`; a prediction on another grid without ``resample_to_gt``.
    """
    settings = settings or EvalSettings()
    if settings.tail_policy != "none":
        raise ConfigError(
            f"tail policy {settings.tail_policy}: it sets to background the slices a released evaluation never "
            "predicted, which needs the model; label maps on disk are scored as they are. For the other mpscl "
            "conventions use --units vox --assd-variant mean_of_means --empty-policy mpscl."
        )
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
    class_names = list(source.class_names)
    resampled: list[str] = []

    def predict(case: GroundTruthCase, gt: Volume) -> np.ndarray:
        path = files.get(keys[case.id])
        if path is None:
            return np.zeros(gt.array.shape, dtype=np.uint8)
        vol = read_prediction(path, case.label, None if resample_to_gt else gt.array.shape, class_names)
        problems = grid_problems(gt, vol, what="prediction", reference_what="ground truth")
        if not problems:
            return vol.array
        if not resample_to_gt:
            raise DatasetError(
                f"prediction {path} is not on the grid of its ground truth {case.label}: {problems[0]}. Write "
                "predictions on the ground truth's grid, or pass --resample-to-gt (nearest neighbour in world space)."
            )
        resampled.append(case.id)
        return resample_to_grid(vol.array, vol.affine, gt.array.shape, gt.affine)

    used = {keys[c.id] for c in cases}
    meta = {
        "domain": domain,
        "split": split,
        "metrics": settings.metrics,
        "unlabelled_cases": unlabelled,
        "missing_predictions": missing,
        "unused_prediction_files": sum(1 for k in files if k not in used),
        "resample_to_gt": resample_to_gt,
    }
    acc = _evaluate_cases(cases, predict, class_names, settings, meta, progress)
    acc.meta["resampled_cases"] = resampled
    return acc


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
    batch_size: int | str = 16,
    device: torch.device | str = "cpu",
    allow_missing: bool = False,
    save_predictions: bool = False,
    label: str | None = None,
    model_selection: str | None = None,
    class_order: Sequence[str] | None = None,
    progress: bool = True,
    resample_to_gt: bool = False,
    overwrite: bool = False,
    precision: str = "auto",
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
        batch_size: slices per forward pass, or ``auto`` (:mod:`tcsa_uda.evaluation.batching`).
        device: torch device of the model.
        allow_missing: with ``pred_dir``, score missing predictions as empty instead of failing.
        save_predictions: write the model's label maps to ``out/predictions``.
        label: the table row's name (default: the checkpoint's method or the folder name).
        model_selection: how the model was chosen, printed in the tables (default: from the
            checkpoint; unknown for a prediction folder).
        class_order: class names in table column order (default: id order).
        progress: show a progress bar.
        resample_to_gt: with ``pred_dir``, resample predictions on another grid onto the ground
            truth's (nearest neighbour in world space) instead of failing; recorded in the outputs.
        overwrite: write into ``out`` even over files evaluate did not create there, or into a
            dataset folder.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16`` inference.

    Raises:
        ConfigError: contradictory options.
        OutputExistsError: ``out`` holds files evaluate did not write, or a dataset (without ``overwrite``).
        TcsaUdaError: any input problem, with the file named.
    """
    settings = settings or EvalSettings()
    if (checkpoint is None) == (pred_dir is None):
        raise ConfigError("evaluate: give either a run folder / checkpoint or --pred DIR (exactly one of them).")
    if pred_dir is not None and (flip or save_predictions):
        raise ConfigError(
            "evaluate --pred scores label maps already on disk: --flip and --save-predictions need a model."
        )
    if pred_dir is None and resample_to_gt:
        raise ConfigError(
            "evaluate --resample-to-gt applies to --pred label maps; a model predicts on the ground truth's grid."
        )
    out = Path(out)
    guard = OutputFolder(out, "evaluate", overwrite=overwrite)  # checks only; files are claimed below
    outputs = [out / name for name in OUTPUT_FILES.values()]
    source = load_evaluation_source(dataset)
    columns = order_classes(list(source.class_names), class_order)  # checked before the (slow) evaluation
    kind = "prepared" if isinstance(source, PreparedIndex) else "raw"
    meta: dict[str, Any] = {
        "tool": f"tcsa-uda {__version__} evaluate",
        "dataset": str(dataset),
        "dataset_kind": kind,
        "resample_to_gt": resample_to_gt,
    }
    if pred_dir is not None:
        if domain is None:
            raise ConfigError("evaluate --pred: --domain is required (there is no checkpoint to take it from).")
        guard.claim(outputs)  # every input is checked; claimed before the (slow) evaluation
        acc = evaluate_predictions(pred_dir, source, domain, split, settings, allow_missing, progress, resample_to_gt)
        row_label = label or Path(pred_dir).name
        meta["predictions"] = {"kind": "folder", "path": str(pred_dir)}
    else:
        loaded = load_model(resolve_checkpoint(checkpoint), device)  # type: ignore[arg-type]
        domain = domain or loaded.target
        if domain is None:
            raise ConfigError(f"{loaded.path}: no target domain recorded; pass --domain.")
        save_dir = out / PREDICTIONS_DIR if save_predictions else None
        if save_dir is not None:
            cases, _ = ground_truth_cases(source, domain, split)
            outputs += [save_dir / f"{safe_case_name(c.id)}.nii.gz" for c in cases]
        guard.claim(outputs)
        options: dict[str, Any] = {
            "settings": settings,
            "batch_size": batch_size,
            "device": device,
            "flip": flip,
            "progress": progress,
            "save_dir": save_dir,
            "precision": precision,
        }
        if isinstance(source, PreparedIndex):
            acc = evaluate_domain(loaded, source, domain, split, **options)
        else:
            acc = evaluate_dataset(loaded, source, domain, split, **options)
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
            "input_encoding": loaded.input_encoding,
        }
        meta["flip"] = flip  # the batch size and precision used are recorded by evaluate_domain/evaluate_dataset
    acc.meta = {**meta, **acc.meta, "settings": settings.to_dict(), "model_selection": model_selection, "ddof": 0}
    table = TableSpec(
        class_names=columns,
        assd_metric=settings.table_assd_metric,
        empty_policy=settings.empty_policy,
        parity=settings.parity,
        tail_policy=settings.tail_policy,
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
    "OUTPUT_FILES",
    "EvaluationResult",
    "evaluate_dataset",
    "evaluate_domain",
    "evaluate_predictions",
    "order_classes",
    "run_evaluation",
    "write_evaluation",
]
