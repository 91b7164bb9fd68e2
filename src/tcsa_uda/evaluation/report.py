"""``tcsa-uda report RUN``: a markdown report of a training run, with tables and PNG figures.

:func:`build_report` writes into ``RUN/report/`` (or ``out``)::

    report.md               the report (links the figures below by relative path)
    evaluation/             metrics.csv, metrics.json, summary.md, summary.tex (run_evaluation)
    training_curves.png     losses of every stage end to end, stage boundaries, selection scores
    vl_diagnostics.png      VL loss, its gradient norms and the similarity spread (runs with a VL term)
    overlays.png            image | ground truth | prediction on target test slices
    gradcam.png             Grad-CAM per foreground class on the same slices
    tsne.png                t-SNE of source and target pixel features, before and after adaptation

Choices (also stated in the report itself and in docs/evaluation.md):

* **Model.** "after" is ``RUN/final.pt`` (the run's selected weights). "before" is ``--before``
  (a run folder or checkpoint), or by default, for a run of two or more stages, the selected
  checkpoint of stage 1 (``stage1_<method>/best.pt``, else ``final.pt``): the weights the
  second stage started from. A one-stage run without ``--before`` gets only the "after" t-SNE,
  with a note.
* **Data.** The prepared folder recorded in the checkpoint (``config.data.prepared``) unless
  ``--dataset`` is given; figures use its stored slices, so it must be a prepared folder made
  with the checkpoint's preprocessing settings (the evaluation checks this).
* **Slices.** Overlays and Grad-CAM use ``n_slices`` target test slices with foreground in the
  ground truth, evenly spread over the list of all such slices of all test cases (in case
  order). The t-SNE uses up to ``tsne_slices`` such slices of each domain's test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcsa_uda import __version__
from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.data.contract import DATASET_FILE
from tcsa_uda.data.prepared import INDEX_FILE, PreparedCase, PreparedIndex, load_prepared
from tcsa_uda.errors import ConfigError, DatasetError, MissingPathError
from tcsa_uda.evaluation.evaluate import EvaluationResult, run_evaluation
from tcsa_uda.evaluation.figures import (
    StageMetrics,
    has_vl_diagnostics,
    load_run_metrics,
    plot_gradcam,
    plot_overlays,
    plot_training_curves,
    plot_tsne,
    plot_vl_diagnostics,
)
from tcsa_uda.evaluation.gradcam import grad_cam
from tcsa_uda.evaluation.model import LoadedModel, load_model, resolve_checkpoint
from tcsa_uda.evaluation.selection_study import study_markdown, study_stage
from tcsa_uda.evaluation.settings import EvalSettings
from tcsa_uda.evaluation.tsne import FEATURES, PixelFeatures, TsneEmbedding, pixel_features, tsne_embedding
from tcsa_uda.layout import selected_checkpoint, stage_folders
from tcsa_uda.models.inference import predict_slices
from tcsa_uda.outputs import OutputFolder
from tcsa_uda.paths import resolve_data_path

__all__ = [
    "FIGURE_FILES",
    "REPORT_DIR",
    "REPORT_FILE",
    "ReportOptions",
    "ReportResult",
    "SliceRef",
    "build_report",
    "default_before",
    "report_dataset",
    "spread_slices",
]

REPORT_DIR = "report"
REPORT_FILE = "report.md"
EVALUATION_DIR = "evaluation"
FIGURE_FILES: dict[str, str] = {
    "curves": "training_curves.png",
    "vl": "vl_diagnostics.png",
    "overlays": "overlays.png",
    "gradcam": "gradcam.png",
    "tsne": "tsne.png",
}
"""Figure kind -> file name inside the report folder."""


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows and how much it computes.

    Attributes:
        n_slices: target test slices in the overlay and Grad-CAM figures.
        tsne_slices: most test slices per domain whose pixels feed the t-SNE.
        tsne_per_class: most pixels per class per domain in the t-SNE.
        feature: feature map embedded by the t-SNE, ``f_hi`` (default) or ``f_vis``.
        seed: seed of the pixel sampling and of t-SNE.
        batch_size: slices per forward pass.
        settings: evaluation settings of the table (units, ASSD variant, empty policy).
    """

    n_slices: int = 5
    tsne_slices: int = 12
    tsne_per_class: int = 100
    feature: str = "f_hi"
    seed: int = 0
    batch_size: int = 8
    settings: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        for name in ("n_slices", "tsne_slices", "tsne_per_class", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"report {name}: expected a positive integer, found {value!r}.")
        if self.feature not in FEATURES:
            raise ConfigError(f"report feature: expected one of {', '.join(FEATURES)}, found {self.feature!r}.")


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        path: the ``report.md`` file.
        figures: figure kind (keys of :data:`FIGURE_FILES`) -> PNG path, for the figures drawn.
        evaluation: the evaluation of the final checkpoint on the target test split.
        before: the checkpoint used as "before adaptation", or None when there was none.
        notes: what was skipped or substituted, one sentence each (also in the report).
    """

    path: Path
    figures: dict[str, Path]
    evaluation: EvaluationResult
    before: Path | None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SliceRef:
    """One prepared slice: a case and a slice index into its stack."""

    case: PreparedCase
    index: int

    @property
    def title(self) -> str:
        return f"{self.case.id} / slice {self.index}"


# --------------------------------------------------------------------------------------------
# Resolving inputs


def report_dataset(checkpoint: dict[str, Any], dataset: str | Path | None, what: str) -> PreparedIndex:
    """The prepared folder of the report: ``dataset``, else the checkpoint's ``config.data.prepared``.

    Raises:
        ConfigError: no dataset given and none recorded, or ``dataset`` is a raw dataset folder.
        MissingPathError: the recorded or given folder does not exist or is not prepared.
    """
    if dataset is None:
        recorded = ((checkpoint.get("config") or {}).get("data") or {}).get("prepared") or ""
        if not recorded:
            raise ConfigError(
                f"{what}: no prepared dataset recorded (config data.prepared); pass --dataset PREPARED_DIR."
            )
        root = resolve_data_path(str(recorded))
        if not (root / INDEX_FILE).is_file():
            raise MissingPathError(
                f"{what}: the prepared dataset recorded in config data.prepared, {root}, has no {INDEX_FILE} (moved or "
                "deleted?); pass --dataset PREPARED_DIR."
            )
    else:
        root = resolve_data_path(dataset)
    if not (root / INDEX_FILE).is_file() and (root / DATASET_FILE).is_file():
        raise ConfigError(
            f"{root}: a raw dataset folder ({DATASET_FILE}); the report draws prepared slices, so pass the folder "
            f"written by `tcsa-uda prepare` with the checkpoint's settings."
        )
    return load_prepared(root)


def _stage_dirs(run: Path) -> list[Path]:
    return [stage.path for stage in stage_folders(run)]


def default_before(run: str | Path) -> Path | None:
    """The default "before adaptation" checkpoint of a run: stage 1's selected weights.

    For a run with two or more stage folders, the checkpoint that stage 2 started from
    (``stage1_<method>/best.pt`` when a selection criterion wrote one, else ``final.pt``);
    None for a one-stage run or when that file is missing.
    """
    stages = _stage_dirs(Path(run))
    if len(stages) < 2:
        return None
    path = selected_checkpoint(stages[0])
    return path if path.is_file() else None


def spread_slices(cases: Sequence[PreparedCase], n: int) -> list[SliceRef]:
    """Up to ``n`` slices with foreground, evenly spread over all such slices of ``cases``.

    The foreground slices of every labelled case are listed in case order, and ``n`` of them are
    taken at evenly spaced positions of that list (first and last included).
    """
    pool = [SliceRef(c, int(i)) for c in cases if c.labelled for i in (c.foreground_slices or ())]
    if not pool or n < 1:
        return []
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, min(n, len(pool)))).astype(int))
    return [pool[i] for i in picks]


def load_slices(refs: Sequence[SliceRef]) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, H, W)`` float32 and labels ``(N, H, W)`` int64 of the slices."""
    images = np.stack([np.asarray(r.case.load_image()[r.index], dtype=np.float32) for r in refs])
    labels = np.stack([np.asarray(r.case.load_label()[r.index], dtype=np.int64) for r in refs])
    return images, labels


def _domain_slices(index: PreparedIndex, domain: str, n: int, notes: list[str]) -> list[SliceRef]:
    """Foreground test slices of ``domain`` (falling back to all splits, with a note)."""
    refs = spread_slices(index.cases(domain, "test"), n)
    if not refs:
        refs = spread_slices(index.cases(domain), n)
        if refs:
            notes.append(
                f"Domain {domain} has no labelled test slice with foreground; its t-SNE pixels come from all splits."
            )
    return refs


# --------------------------------------------------------------------------------------------
# The report


def build_report(
    run: str | Path,
    dataset: str | Path | None = None,
    domain: str | None = None,
    out: str | Path | None = None,
    before: str | Path | None = None,
    options: ReportOptions | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    overwrite: bool = False,
) -> ReportResult:
    """Evaluate a run on the target test split and write ``report.md`` with its figures.

    Args:
        run: the run folder (holding ``final.pt`` and the ``stage<k>_<method>`` folders).
        dataset: prepared folder; default the checkpoint's ``config.data.prepared``.
        domain: the domain shown and evaluated; default the checkpoint's target.
        out: report folder; default ``RUN/report``.
        before: "before adaptation" run folder or checkpoint; default :func:`default_before`.
        options: what to draw (:class:`ReportOptions`).
        device: torch device of the models.
        progress: show the evaluation's progress bar.
        overwrite: write into ``out`` even over files report (and evaluate) did not create there.

    Returns:
        :class:`ReportResult`.

    Raises:
        ConfigError: ``run`` is not a run folder, no dataset can be found, or the "before"
            checkpoint is for another class set.
        MissingPathError: ``final.pt`` or the dataset is missing.
        DatasetError: the domain has no labelled test slice with foreground.
        OutputExistsError: ``out`` holds files report did not write (without ``overwrite``).
    """
    options = options or ReportOptions()
    run = Path(run)
    if not run.is_dir():
        raise ConfigError(
            f"{run}: expected a run folder (with final.pt and stage<k>_<method>/ folders), found no folder."
        )
    final_path = resolve_checkpoint(run)
    loaded = load_model(final_path, device)
    index = report_dataset(loaded.checkpoint, dataset, str(final_path))
    domain = domain or loaded.target
    if domain is None:
        raise ConfigError(f"{final_path}: no target domain recorded; pass --domain.")
    source = str(loaded.checkpoint.get("source") or "")
    out = Path(out) if out is not None else run / REPORT_DIR
    OutputFolder(out, "report", overwrite=overwrite).claim(
        [out / REPORT_FILE, *(out / f for f in FIGURE_FILES.values())]
    )
    notes: list[str] = []

    evaluation = run_evaluation(
        index.root, out / EVALUATION_DIR, checkpoint=final_path, domain=domain, split="test",
        settings=options.settings, batch_size=options.batch_size, device=device, progress=progress,
        overwrite=overwrite,
    )  # fmt: skip

    figures: dict[str, Path] = {}
    stages = load_run_metrics(run)
    if any(r.get("kind", "train") == "train" for s in stages for r in s.rows):
        plot_training_curves(stages, out / FIGURE_FILES["curves"])
        figures["curves"] = out / FIGURE_FILES["curves"]
    else:
        notes.append("No metrics.jsonl with training rows in the run's stage folders: no training curves.")
    if has_vl_diagnostics(stages):
        plot_vl_diagnostics(stages, out / FIGURE_FILES["vl"])
        figures["vl"] = out / FIGURE_FILES["vl"]

    refs = spread_slices(index.cases(domain, "test"), options.n_slices)
    if not refs:
        raise DatasetError(
            f"{index.root / INDEX_FILE}: domain {domain!r} has no labelled test slice with foreground to show."
        )
    images, labels = load_slices(refs)
    titles = [r.title for r in refs]
    text = loaded.text_for(domain, device)
    prob = predict_slices(
        loaded.model, images, text, batch_size=options.batch_size, encoding=loaded.input_encoding
    )  # (N, C, H, W)
    pred = prob.argmax(axis=1)
    plot_overlays(images, labels, pred, loaded.class_names, titles, out / FIGURE_FILES["overlays"])
    figures["overlays"] = out / FIGURE_FILES["overlays"]

    fg = list(range(1, len(loaded.class_names)))
    cam = grad_cam(loaded.model, images, text, fg, batch_size=options.batch_size, encoding=loaded.input_encoding)
    plot_gradcam(images, cam.maps, fg, loaded.class_names, titles, out / FIGURE_FILES["gradcam"], ground_truth=labels)
    figures["gradcam"] = out / FIGURE_FILES["gradcam"]
    n_whole = int(cam.whole_image.sum())
    if n_whole:
        notes.append(
            f"Grad-CAM: in {n_whole} of {cam.whole_image.size} (slice, class) cells the class was not predicted, so "
            "its logits were summed over the whole image."
        )

    before_path = Path(before) if before is not None else default_before(run)
    if before_path is not None:
        before_path = resolve_checkpoint(before_path)
    tsne_info = _tsne_section(index, loaded, before_path, source, domain, options, out, device, notes)
    if tsne_info is not None:
        figures["tsne"] = out / FIGURE_FILES["tsne"]

    text_md = _markdown(
        run, final_path, loaded, index, domain, source, evaluation, figures, refs, tsne_info, before_path, options,
        notes, out, _selection_markdown(run, stages),
    )  # fmt: skip
    path = out / REPORT_FILE
    atomic_write_text(path, text_md)
    return ReportResult(path=path, figures=figures, evaluation=evaluation, before=before_path, notes=notes)


@dataclass(frozen=True)
class _TsneInfo:
    embeddings: dict[str, TsneEmbedding]
    counts: dict[tuple[str, int], int]
    n_slices: dict[str, int]


def _tsne_section(
    index: PreparedIndex,
    loaded: LoadedModel,
    before_path: Path | None,
    source: str,
    domain: str,
    options: ReportOptions,
    out: Path,
    device: torch.device | str,
    notes: list[str],
) -> _TsneInfo | None:
    """Sample pixel features of both domains for each model, embed them and draw the figure."""
    domains = [d for d in (source, domain) if d and d in index.modalities]
    domains = list(dict.fromkeys(domains))
    refs = {d: _domain_slices(index, d, options.tsne_slices, notes) for d in domains}
    domains = [d for d in domains if refs[d]]
    if not domains:
        notes.append("No labelled slice with foreground in either domain: no t-SNE.")
        return None
    if len(domains) < 2:
        notes.append(f"Only domain {domains[0]} has labelled foreground slices: the t-SNE shows one domain.")
    models: dict[str, LoadedModel] = {}
    if before_path is not None:
        prior = load_model(before_path, device)
        if prior.class_names != loaded.class_names:
            raise ConfigError(
                f"{before_path}: the 'before' checkpoint has classes {prior.class_names}, the run {loaded.class_names}."
            )
        models[f"before ({_short(before_path)})"] = prior
    else:
        notes.append(
            "No 'before adaptation' checkpoint (--before not given, and the run has no stage-1 checkpoint before a "
            "later stage): the t-SNE shows the final model only."
        )
    models[f"after ({_short(loaded.path)})"] = loaded
    embeddings: dict[str, TsneEmbedding] = {}
    counts: dict[tuple[str, int], int] = {}
    for title, model in models.items():
        parts = []
        for k, d in enumerate(domains):
            images, labels = load_slices(refs[d])
            parts.append(
                pixel_features(
                    model.model, images, labels, model.text_for(d, device), k, domains,
                    per_class=options.tsne_per_class, feature=options.feature,
                    seed=options.seed + k, batch_size=options.batch_size, encoding=model.input_encoding,
                )
            )  # fmt: skip
        samples = PixelFeatures.concat(parts)
        counts = samples.counts()
        embeddings[title] = tsne_embedding(samples, random_state=options.seed, feature=options.feature)
    plot_tsne(embeddings, loaded.class_names, out / FIGURE_FILES["tsne"])
    return _TsneInfo(embeddings=embeddings, counts=counts, n_slices={d: len(r) for d, r in refs.items() if r})


def _selection_markdown(run: Path, stages: Sequence[StageMetrics]) -> list[str]:
    """A "Model selection against the oracle" section for stages that logged the oracle, else nothing."""
    studied = [s for s in stages if any(r.get("kind") == "select" and "oracle" in r for r in s.rows)]
    if not studied:
        return []
    lines = [
        "## Model selection against the oracle",
        "",
        "The run logged the oracle score (`selection.log_oracle: true`), so each label-free criterion is replayed "
        "on the logged selection points (docs/evaluation.md, Model selection).",
        "",
    ]
    for stage in studied:
        study = study_stage(stage)
        lines += [
            f"### {study.stage}: {study.points} selection points",
            "",
            study_markdown({run.name: study}).rstrip(),
            "",
        ]
    return lines


def _short(path: Path | None) -> str:
    """A checkpoint path as ``<parent>/<name>`` for titles."""
    if path is None:
        return "checkpoint"
    return f"{path.parent.name}/{path.name}"


def _rel(path: Path, out: Path) -> str:
    try:
        return path.relative_to(out).as_posix()
    except ValueError:
        return str(path)


_FEATURE_TEXT: dict[str, str] = {
    "f_hi": "backbone layer4, where the class prototypes of the two domains are aligned",
    "f_vis": "visual embedding of the vision-language loss",
}


def _markdown(
    run: Path,
    final_path: Path,
    loaded: LoadedModel,
    index: PreparedIndex,
    domain: str,
    source: str,
    evaluation: EvaluationResult,
    figures: dict[str, Path],
    refs: Sequence[SliceRef],
    tsne: _TsneInfo | None,
    before: Path | None,
    options: ReportOptions,
    notes: Sequence[str],
    out: Path,
    selection: Sequence[str] = (),
) -> str:
    ck = loaded.checkpoint
    stage = ck.get("stage")
    lines = [
        f"# Report: {run.name}",
        "",
        f"- Run: `{run}`",
        f"- Checkpoint: `{final_path}` (method {ck.get('method')}, stage {None if stage is None else int(stage) + 1}, "
        f"iteration {ck.get('iteration')})",
        f"- Source -> target: {source or '?'} -> {loaded.target or '?'}; shown and evaluated: {domain}, split test",
        f"- Prepared dataset: `{index.root}` ({index.dataset_name}, slices {index.size} x {index.size})",
        f"- Classes: {', '.join(f'{i} {n}' for i, n in enumerate(loaded.class_names))}",
        f"- Model selection: {loaded.model_selection()}",
        f"- Written by tcsa-uda {__version__} `report`",
        "",
        f"## Evaluation ({domain} test)",
        "",
        evaluation.markdown.replace("### ", "#### ", 1).rstrip(),
        "",
        "Per-case values: " + ", ".join(f"[{p.name}]({_rel(p, out)})" for p in evaluation.files.values()) + ".",
        "",
        *selection,
        "## Figures",
        "",
    ]
    if "curves" in figures:
        lines += [
            "### Training curves",
            "",
            f"![Training curves]({FIGURE_FILES['curves']})",
            "",
            "Every loss logged in the stages' `metrics.jsonl` against the iteration counted over all stages "
            "(dashed lines: stage boundaries); the last panel holds the label-free selection scores (`select` rows).",
            "",
        ]
    if "vl" in figures:
        lines += [
            "### Vision-language term",
            "",
            f"![VL diagnostics]({FIGURE_FILES['vl']})",
            "",
            "Logged at every log step of the stages with a VL term (docs/method.md, VL diagnostics): the VL losses "
            "`vl_s` and `vl_t`; the L2 norm of the gradient that the weighted VL term alone sends to the feature maps "
            "it reads (F_vis), to the visual embedding head's parameters and to the text projection's parameters "
            "(log scale, zeros not drawn); the standard deviation (line) and range (band) of the off-diagonal "
            "entries of the image similarity matrix S_v and the text one S_t, source call solid, target call dashed. "
            "A loss near 0 with a vanishing gradient to the image side means the text term no longer shapes the "
            "features.",
            "",
        ]
    lines += [
        "### Predictions",
        "",
        f"![Image, ground truth and prediction]({FIGURE_FILES['overlays']})",
        "",
        f"{len(refs)} {domain} test slices with foreground, evenly spread over all such slices of the test cases: "
        f"{', '.join(r.title for r in refs)}. Shown on the prepared {index.size} x {index.size} grid; the prediction "
        "is the argmax of the main head's upsampled logits.",
        "",
        "### Grad-CAM",
        "",
        f"![Grad-CAM per class]({FIGURE_FILES['gradcam']})",
        "",
        "One row per slice, one column per foreground class. Target layer: the backbone output F_hi. The score of "
        "class c is the sum of its main logits over the pixels predicted as c (the whole image when none is); the "
        "channel weights are the spatial means of its gradient with respect to F_hi; the map is ReLU of the weighted "
        "sum, upsampled bilinearly to the slice and divided by its maximum (so in [0, 1]). White outlines: ground "
        "truth of the class.",
        "",
    ]
    if tsne is not None:
        lines += _tsne_markdown(tsne, loaded.class_names, run, final_path, before, options)
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def _tsne_markdown(
    tsne: _TsneInfo,
    class_names: Sequence[str],
    run: Path,
    final_path: Path,
    before: Path | None,
    options: ReportOptions,
) -> list[str]:
    per_domain = []
    for d in tsne.n_slices:
        counts = ", ".join(f"{class_names[c]} {n}" for (dd, c), n in sorted(tsne.counts.items()) if dd == d)
        per_domain.append(f"{d}: {counts}")
    slices = ", ".join(f"{n} {d} slices" for d, n in tsne.n_slices.items())
    perplexities = ", ".join(sorted({f"{e.perplexity:.1f}" for e in tsne.embeddings.values()}))
    if before is None:
        before_text = "none (see notes)"
    elif _given_before(before, run):
        before_text = f"`{before}` (given with --before)"
    else:
        before_text = f"`{before}` (stage 1's selected checkpoint, the weights stage 2 started from)"
    return [
        "### t-SNE of pixel features",
        "",
        f"![t-SNE before and after adaptation]({FIGURE_FILES['tsne']})",
        "",
        f"Features: {options.feature} ({_FEATURE_TEXT[options.feature]}), at ground-truth pixels nearest-downsampled "
        f"to the feature grid, from {slices} (test split, foreground slices evenly spread); at most "
        f"{options.tsne_per_class} pixels per class per domain ({'; '.join(per_domain)}). PCA to at most 50 "
        f"dimensions, then sklearn TSNE (init pca, perplexity {perplexities}, random_state {options.seed}); the same "
        "pixels for every model.",
        "",
        f"- Before adaptation: {before_text}.",
        f"- After adaptation: `{final_path}`.",
        "",
    ]


def _given_before(before: Path | None, run: Path) -> bool:
    """True when ``before`` is not the run's default stage-1 checkpoint."""
    default = default_before(run)
    return before is not None and (default is None or before.resolve() != default.resolve())
