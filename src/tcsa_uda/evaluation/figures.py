"""PNG figures of a run: training curves, overlays, Grad-CAM maps and t-SNE embeddings.

Figures are drawn on the matplotlib Agg canvas with the object-oriented API (no ``pyplot``
global state, so nothing depends on a display or on the active backend) and written
atomically. The computations live elsewhere (:mod:`tcsa_uda.evaluation.gradcam`,
:mod:`tcsa_uda.evaluation.tsne`); this module only draws.

Class colours come from the ``tab10`` palette by class id (background transparent in overlays,
grey in the t-SNE); the two domains are blue (first) and orange (second).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tcsa_uda.atomic import atomic_path
from tcsa_uda.engine.logging import logged_float, read_metrics
from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.tsne import TsneEmbedding
from tcsa_uda.layout import METRICS_FILE, stage_folders
from tcsa_uda.methods.tcsa import VL_GRAD_KEYS, VL_SPREAD_KEYS

__all__ = [
    "NON_LOSS_KEYS",
    "StageMetrics",
    "class_colors",
    "has_vl_diagnostics",
    "load_run_metrics",
    "plot_gradcam",
    "plot_overlays",
    "plot_training_curves",
    "plot_tsne",
    "plot_vl_diagnostics",
    "save_figure",
]

NON_LOSS_KEYS: frozenset[str] = frozenset({"step", "kind", "lr", "sec_per_it", *VL_GRAD_KEYS, *VL_SPREAD_KEYS})
"""Keys of ``train`` rows of ``metrics.jsonl`` that are not losses (not plotted as loss panels; the VL
diagnostics have their own figure, :func:`plot_vl_diagnostics`)."""

_DOMAIN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
_BACKGROUND_GREY = (0.6, 0.6, 0.6, 1.0)
DPI = 110


# --------------------------------------------------------------------------------------------
# Helpers


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Render ``fig`` on the Agg canvas and write it to ``path`` as PNG, atomically."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def class_colors(num_classes: int) -> np.ndarray:
    """``(C, 4)`` RGBA colour of each class id (``tab10``, then ``tab20`` beyond 10 classes)."""
    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N) for i in range(num_classes)], dtype=np.float64)


def _label_rgba(labels: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``(H, W, 4)`` overlay of a label map: class colours, background fully transparent."""
    rgba = colors[np.clip(labels, 0, len(colors) - 1)].copy()
    rgba[..., 3] = np.where(labels > 0, alpha, 0.0)
    return rgba


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _grey(ax: Axes, image: np.ndarray) -> None:
    # Slices are normalised to [-1, 1] (prepare); a fixed range keeps slices comparable.
    ax.imshow(image, cmap="gray", vmin=-1.0, vmax=1.0, interpolation="nearest")
    _bare(ax)


def _check_stack(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ConfigError(f"{name}: expected shape {shape}, found {arr.shape}.")


# --------------------------------------------------------------------------------------------
# Training curves


@dataclass(frozen=True)
class StageMetrics:
    """The ``metrics.jsonl`` rows of one stage of a run.

    Attributes:
        index: 1-based stage number (from the folder name ``stage<k>_<method>``).
        method: the stage's method.
        rows: every row (``{"step", "kind", ...}``) in file order.
    """

    index: int
    method: str
    rows: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        return f"stage {self.index} ({self.method})"

    @property
    def last_step(self) -> int:
        """The largest logged step (the stage length: the engine always logs the last iteration)."""
        return max((int(r["step"]) for r in self.rows), default=0)


def load_run_metrics(run: str | Path) -> list[StageMetrics]:
    """The metrics of every stage folder ``stage<k>_<method>/metrics.jsonl`` of a run, by stage number.

    Stage folders without ``metrics.jsonl`` are left out (nothing was logged).
    """
    stages = []
    for stage in stage_folders(run):
        path = stage.path / METRICS_FILE
        if path.is_file():
            stages.append(StageMetrics(stage.index, stage.method, tuple(read_metrics(path))))
    return sorted(stages, key=lambda s: s.index)


def _keys(stages: Sequence[StageMetrics], kind: str, skip: frozenset[str]) -> list[str]:
    keys: dict[str, None] = {}
    for stage in stages:
        for row in stage.rows:
            if row.get("kind", "train") == kind:
                keys.update((k, None) for k in row if k not in skip)
    return list(keys)


def plot_training_curves(stages: Sequence[StageMetrics], path: str | Path) -> list[str]:
    """Losses against the run's iteration, one panel per loss key, stages end to end.

    Each stage's steps are shifted by the lengths of the stages before it; a dashed line marks
    each stage boundary. A last panel shows the label-free selection scores (``select`` rows),
    when any were logged.

    Args:
        stages: from :func:`load_run_metrics`.
        path: the PNG to write.

    Returns:
        The panel titles, in drawing order (loss keys, then ``selection scores``).

    Raises:
        ConfigError: no ``train`` row in any stage.
    """
    loss_keys = _keys(stages, "train", NON_LOSS_KEYS)
    select_keys = _keys(stages, "select", frozenset({"step", "kind"}))
    if not loss_keys:
        raise ConfigError("training curves: no 'train' rows with loss values in any stage's metrics.jsonl.")
    panels = [*loss_keys, *(["selection scores"] if select_keys else [])]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    offsets = np.cumsum([0, *(s.last_step for s in stages)])
    for ax, title in zip(axes, panels, strict=False):
        labelled: set[str] = set()
        for k, stage in enumerate(stages):
            kind = "select" if title == "selection scores" else "train"
            rows = [r for r in stage.rows if r.get("kind", "train") == kind]
            x = np.array([offsets[k] + int(r["step"]) for r in rows], dtype=np.float64)
            if kind == "train":
                y = np.array([logged_float(r.get(title)) if title in r else math.nan for r in rows])
                if np.isfinite(y).any():
                    # Markers keep short series (and single logged points) visible.
                    marker = "o" if np.isfinite(y).sum() < 30 else None
                    ax.plot(x, y, color=f"C{k % 10}", lw=1.0, marker=marker, ms=3, label=stage.name)
            else:
                for j, key in enumerate(select_keys):
                    y = np.array([logged_float(r.get(key)) if key in r else math.nan for r in rows])
                    if np.isfinite(y).any():
                        label = None if key in labelled else key
                        labelled.add(key)
                        ax.plot(x, y, color=f"C{j % 10}", marker="o", ms=3, lw=1.0, label=label)
        for b in offsets[1:-1]:
            ax.axvline(b, color="k", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration (all stages)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if len(stages) > 1:
        fig.suptitle("Training curves; dashed lines: stage boundaries", fontsize=10)
    else:
        fig.suptitle("Training curves", fontsize=10)
    save_figure(fig, path)
    return panels


# --------------------------------------------------------------------------------------------
# VL diagnostics

_VL_GRAD_LABELS: dict[str, str] = {
    "vl_grad_f_vis": "to F_vis (features)",
    "vl_grad_embed": "to the embedding head",
    "vl_grad_text": "to the text projection",
}


def has_vl_diagnostics(stages: Sequence[StageMetrics]) -> bool:
    """Whether any stage logged the VL gradient-norm diagnostics (a ``tcsa`` stage with the VL term on)."""
    return any(r.get("kind", "train") == "train" and "vl_grad_embed" in r for s in stages for r in s.rows)


def plot_vl_diagnostics(stages: Sequence[StageMetrics], path: str | Path) -> list[str]:
    """The VL term's diagnostics against the run's iteration (stages end to end, as the training curves).

    Four panels: the VL losses ``vl_s`` and ``vl_t``; the L2 norms of the gradient the weighted VL
    term sends to ``F_vis``, the embedding head and the text projection (log scale; zeros are not
    drawn); the off-diagonal spread of the image similarity matrices ``S_v`` and of the text ones
    ``S_t`` (line: std; band: min to max), source call solid, target call dashed.

    Args:
        stages: from :func:`load_run_metrics`.
        path: the PNG to write.

    Returns:
        The panel titles.

    Raises:
        ConfigError: no stage logged the diagnostics.
    """
    if not has_vl_diagnostics(stages):
        raise ConfigError("VL diagnostics: no 'train' row with vl_grad_embed in any stage's metrics.jsonl.")
    titles = [
        "VL loss",
        "gradient norm of the weighted VL term",
        "S_v off-diagonal (std; band min-max)",
        "S_t off-diagonal (std; band min-max)",
    ]
    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    axes = fig.subplots(2, 2, squeeze=False).ravel()
    offsets = np.cumsum([0, *(s.last_step for s in stages)])

    def series(stage: StageMetrics, k: int, key: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [r for r in stage.rows if r.get("kind", "train") == "train" and key in r]
        x = np.array([offsets[k] + int(r["step"]) for r in rows], dtype=np.float64)
        return x, np.array([logged_float(r[key]) for r in rows], dtype=np.float64)

    labelled: set[str] = set()

    def lab(text: str) -> str | None:
        """Each legend entry once, across stages."""
        if text in labelled:
            return None
        labelled.add(text)
        return text

    for k, stage in enumerate(stages):
        for key, ls in (("vl_s", "-"), ("vl_t", "--")):
            x, y = series(stage, k, key)
            if x.size:
                mk = "o" if x.size < 30 else None
                axes[0].plot(x, y, ls=ls, color="C0", lw=1.0, marker=mk, ms=3, label=lab(key))
        for j, (key, text) in enumerate(_VL_GRAD_LABELS.items()):
            x, y = series(stage, k, key)
            keep = np.isfinite(y) & (y > 0)
            if keep.any():
                mk = "o" if keep.sum() < 30 else None
                axes[1].plot(x[keep], y[keep], color=f"C{j}", lw=1.0, marker=mk, ms=3, label=lab(text))
        for ax, mat in ((axes[2], "sv"), (axes[3], "st")):
            for d, ls, color in (("s", "-", "C0"), ("t", "--", "C1")):
                x, std = series(stage, k, f"vl_{d}_{mat}_std")
                _, lo = series(stage, k, f"vl_{d}_{mat}_min")
                _, hi = series(stage, k, f"vl_{d}_{mat}_max")
                if x.size and lo.size == x.size and hi.size == x.size:
                    name = "source" if d == "s" else "target"
                    ax.plot(x, std, ls=ls, color=color, lw=1.0, label=lab(f"{mat} {name} std"))
                    ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    if any(line.get_ydata().size for line in axes[1].get_lines()):
        axes[1].set_yscale("log")
    for ax, title in zip(axes, titles, strict=True):
        for b in offsets[1:-1]:
            ax.axvline(b, color="k", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration (all stages)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle("Vision-language term diagnostics (logged iterations)", fontsize=10)
    save_figure(fig, path)
    return titles


# --------------------------------------------------------------------------------------------
# Overlays


def plot_overlays(
    images: np.ndarray,
    ground_truth: np.ndarray,
    prediction: np.ndarray | Mapping[str, np.ndarray],
    class_names: Sequence[str],
    titles: Sequence[str],
    path: str | Path,
    alpha: float = 0.5,
    suptitle: str | None = None,
) -> Path:
    """One row per slice: the image, the ground truth over it, each prediction over it.

    Args:
        images: ``(N, H, W)`` normalised slices.
        ground_truth: ``(N, H, W)`` integer labels.
        prediction: ``(N, H, W)`` integer labels, or a mapping column title -> such an array
            (e.g. source-only and TCSA-UDA side by side).
        class_names: names by class id (background first).
        titles: one row title per slice (e.g. ``case 12, slice 40``).
        path: the PNG to write.
        alpha: opacity of the label colours.

    Raises:
        ConfigError: shapes or title count do not match.
    """
    n = images.shape[0]
    _check_stack("overlay images", images, (n, *images.shape[1:3]))
    _check_stack("overlay ground truth", ground_truth, images.shape)
    predictions = dict(prediction) if isinstance(prediction, Mapping) else {"prediction": prediction}
    for head, pred in predictions.items():
        _check_stack(f"overlay {head}", pred, images.shape)
    if len(titles) != n or n == 0:
        raise ConfigError(f"overlay titles: expected one per slice ({n}, at least 1), found {len(titles)}.")
    colors = class_colors(len(class_names))
    ncol = 2 + len(predictions)
    fig = Figure(figsize=(2.5 * ncol, 2.5 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, ncol, squeeze=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    for i in range(n):
        columns = [("image", None), ("ground truth", ground_truth[i])] + [(h, pr[i]) for h, pr in predictions.items()]
        for j, (head, lab) in enumerate(columns):
            ax = axes[i, j]
            _grey(ax, images[i])
            if lab is not None:
                ax.imshow(_label_rgba(np.asarray(lab), colors, alpha), interpolation="nearest")
            if i == 0:
                ax.set_title(head, fontsize=9)
        axes[i, 0].set_ylabel(titles[i], fontsize=8)
    handles = [Patch(color=colors[c], label=name) for c, name in enumerate(class_names) if c > 0]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    save_figure(fig, path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Grad-CAM


def plot_gradcam(
    images: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    class_names: Sequence[str],
    titles: Sequence[str],
    path: str | Path,
    ground_truth: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Path:
    """Grad-CAM maps: one row per slice, one column per class, over the grey image.

    Args:
        images: ``(N, H, W)`` normalised slices.
        maps: ``(N, K, H, W)`` maps in [0, 1] (:func:`~tcsa_uda.evaluation.gradcam.grad_cam`).
        classes: the K class ids of the columns.
        class_names: names by class id.
        titles: one row title per slice.
        path: the PNG to write.
        ground_truth: ``(N, H, W)`` labels; when given, each class's ground-truth outline is
            drawn in white for reference.
        alpha: opacity of the heat map.

    Raises:
        ConfigError: shapes, class count or title count do not match.
    """
    n = images.shape[0]
    if maps.ndim != 4 or maps.shape[0] != n or maps.shape[1] != len(classes) or maps.shape[2:] != images.shape[1:]:
        raise ConfigError(f"Grad-CAM maps: expected shape {(n, len(classes), *images.shape[1:])}, found {maps.shape}.")
    if ground_truth is not None:
        _check_stack("Grad-CAM ground truth", ground_truth, images.shape)
    if len(titles) != n or n == 0:
        raise ConfigError(f"Grad-CAM titles: expected one per slice ({n}, at least 1), found {len(titles)}.")
    k = len(classes)
    fig = Figure(figsize=(2.3 * k + 0.8, 2.3 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, k, squeeze=False)
    image = None
    for i in range(n):
        for j, c in enumerate(classes):
            ax = axes[i, j]
            _grey(ax, images[i])
            image = ax.imshow(maps[i, j], cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear")
            if ground_truth is not None:
                mask = (ground_truth[i] == c).astype(np.float32)
                if 0 < mask.sum() < mask.size:  # contour needs both levels present
                    ax.contour(mask, levels=[0.5], colors="white", linewidths=0.7)
            if i == 0:
                ax.set_title(class_names[c], fontsize=9)
        axes[i, 0].set_ylabel(titles[i], fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="Grad-CAM (normalised)")
    save_figure(fig, path)
    return Path(path)


# --------------------------------------------------------------------------------------------
# t-SNE


def plot_tsne(embeddings: Mapping[str, TsneEmbedding], class_names: Sequence[str], path: str | Path) -> Path:
    """t-SNE scatter plots: one row per model, coloured by domain (left) and by class (right).

    Args:
        embeddings: row title (e.g. ``before adaptation (stage1_adaoutput/best.pt)``) -> embedding.
        class_names: names by class id.
        path: the PNG to write.

    Raises:
        ConfigError: no embedding.
    """
    if not embeddings:
        raise ConfigError("t-SNE figure: expected at least one embedding, found none.")
    colors = class_colors(len(class_names))
    colors[0] = _BACKGROUND_GREY
    n = len(embeddings)
    fig = Figure(figsize=(9.0, 4.0 * n), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    for i, (title, emb) in enumerate(embeddings.items()):
        pts = emb.points
        by_domain, by_class = axes[i]
        for d, name in enumerate(emb.domain_names):
            sel = emb.domains == d
            color = _DOMAIN_COLORS[d % len(_DOMAIN_COLORS)]
            by_domain.scatter(pts[sel, 0], pts[sel, 1], s=4, alpha=0.6, color=color, label=name)
        for c in np.unique(emb.classes):
            sel = emb.classes == c
            by_class.scatter(pts[sel, 0], pts[sel, 1], s=4, alpha=0.6, color=colors[int(c)], label=class_names[int(c)])
        by_domain.set_title(f"{title}: by domain", fontsize=9)
        by_class.set_title(f"{title}: by class", fontsize=9)
        for ax in (by_domain, by_class):
            _bare(ax)
            # Below the axes, so the legend never hides points.
            ax.legend(fontsize=7, markerscale=3, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    first = next(iter(embeddings.values()))
    fig.suptitle(f"t-SNE of {first.feature} pixel features (perplexity {first.perplexity:.1f})", fontsize=10)
    save_figure(fig, path)
    return Path(path)
