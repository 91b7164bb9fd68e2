"""The results document of a bench: one markdown page with its figures, written from the cells alone.

``tcsa-uda bench SUITE --out DIR --results PAGE.md`` (or with ``--report-only``) writes:

* ``PAGE.md``: the setup (suite, datasets, cells complete, wall time), one compact table per
  entry **group** of the suite (e.g. main comparison, TCSA ablations, text, VL options; see
  :class:`tcsa_uda.bench.suite.SuiteGroup`) with, per dataset/direction block, the Dice and
  ASSD class means (mean ± std over seeds), the paired ΔDice against the reference entry with its
  confidence interval and, in a group holding the lower and upper bound, the share of the
  lower -> upper gap each entry closes; then **conclusions** generated from the confidence
  intervals only: per group, which entries are detectably higher or lower than the reference in
  which block, and the answer to the group's question.
* ``PAGE_dice.png``: per-class Dice of the first group's entries (:func:`~tcsa_uda.bench.report.plot_bench`).
* ``PAGE_vl.png``: the vision-language diagnostics of every entry that logged them (the VL loss,
  the gradient norm it sends to ``F_vis`` and the off-diagonal spread of the image similarity
  matrix), mean over seeds against the iteration of the stage that logged them, one row per block.

Every number comes from the cells' evaluation files and ``metrics.jsonl``; the per-class tables
stay in ``bench.md``. The document is regenerated whole on every call (nothing typed by hand).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.bench.report import (
    UPPER_MARK,
    Block,
    BlockInfo,
    EntrySummary,
    collect,
    complete_cells,
    fmt_diff,
    fmt_stat,
    gap_entries,
    plot_bench,
    row_label,
    summarise_block,
)
from tcsa_uda.bench.runner import BenchError, format_seconds, read_record
from tcsa_uda.bench.suite import Suite
from tcsa_uda.engine.logging import logged_float
from tcsa_uda.evaluation.figures import load_run_metrics, save_figure
from tcsa_uda.evaluation.tables import assd_parts

VL_PANELS: tuple[tuple[str, str], ...] = (
    ("vl_loss", "VL loss (vl_s + vl_t) / 2"),
    ("vl_grad_f_vis", "gradient norm of the VL term to F_vis"),
    ("vl_sv_std", "S_v off-diagonal std (source, target mean)"),
)
"""The panels of ``PAGE_vl.png``: derived key and title."""
VL_KEYS: tuple[str, ...] = tuple(key for key, _title in VL_PANELS)


@dataclass(frozen=True)
class Verdict:
    """How an entry compares with the reference in one block, from the paired CI.

    Attributes:
        entry: entry name.
        block: ``(dataset, direction)``.
        kind: ``higher`` or ``lower`` (the CI excludes 0), ``same`` (it contains 0) or ``n/a``.
        text: the difference as printed, e.g. ``+3.2 [+1.0, +5.3] (n=15)``.
    """

    entry: str
    block: Block
    kind: str
    text: str


def verdict(s: EntrySummary, block: Block) -> Verdict:
    """The :class:`Verdict` of one table row (the reference row has none: ``n/a``)."""
    d = s.diff
    if d is None or math.isnan(d.low) or math.isnan(d.high):
        return Verdict(s.entry, block, "n/a", fmt_diff(d))
    kind = "higher" if d.low > 0 else "lower" if d.high < 0 else "same"
    return Verdict(s.entry, block, kind, fmt_diff(d))


def wall_time(suite: Suite, out: Path) -> tuple[float, float, int]:
    """``(elapsed, summed, cells)``: first start to last finish of the complete cells, their summed wall time.

    Elapsed spans every bench call that ran a cell (a resumed bench includes the pause).
    """
    starts, ends, total, n = [], [], 0.0, 0
    for cell in complete_cells(suite, out):
        rec = read_record(out / cell.rel_dir)
        try:
            starts.append(datetime.fromisoformat(str(rec["started"]).replace("Z", "+00:00")))
            ends.append(datetime.fromisoformat(str(rec["finished"]).replace("Z", "+00:00")))
        except (KeyError, ValueError):
            continue
        total += float(rec.get("total_wall_s", 0.0))
        n += 1
    elapsed = (max(ends) - min(starts)).total_seconds() if starts else math.nan
    return elapsed, total, n


# --------------------------------------------------------------------------------------------
# Tables


def _group_rows(suite: Suite, group: str, first: bool) -> list[str]:
    """The rows of a group's table: its entries, with the reference first when it is elsewhere."""
    entries = suite.group_entries(group)
    if suite.reference not in entries and not first:
        entries = [suite.reference, *entries]
    return entries


def group_table(
    suite: Suite,
    entries: Sequence[str],
    blocks: Mapping[Block, tuple[BlockInfo, Sequence[EntrySummary]]],
) -> str:
    """A markdown table: one row per entry, per block the Dice and ASSD means, ΔDice and gap closed."""
    head = ["Entry", "Seeds"]
    for block, (info, summaries) in blocks.items():
        name = block[1] if len({b[0] for b in blocks}) == 1 else f"{block[0]}/{block[1]}"
        unit = assd_parts(info.assd_metric)[0]
        head += [f"{name} Dice (%)", f"{name} ASSD ({unit})", f"{name} ΔDice [CI]"]
        present = [s.entry for s in summaries]
        bounds = gap_entries(suite, present)
        if bounds is not None and any(e in entries for e in bounds):
            head.append(f"{name} gap closed (%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        seeds: set[int] = set()
        cells: list[str] = []
        for _block, (_info, summaries) in blocks.items():
            by = {s.entry: s for s in summaries}
            s = by.get(e)
            bounds = gap_entries(suite, list(by))
            show_gap = bounds is not None and any(x in entries for x in bounds)
            if s is None:
                cells += ["n/a"] * (3 + show_gap)
                continue
            seeds.add(s.n_seeds)
            cells += [fmt_stat(s.dice_mean, 100.0), fmt_stat(s.assd_mean, 1.0), fmt_diff(s.diff)]
            if show_gap:
                cells.append("n/a" if s.gap is None else f"{s.gap:.0f}")
        label = row_label(suite, e).replace("|", "\\|")
        lines.append("| " + " | ".join([label, "/".join(map(str, sorted(seeds))) or "0", *cells]) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Conclusions


def _labels(suite: Suite, verdicts: Sequence[Verdict], blocks: int) -> str:
    parts = []
    for v in verdicts:
        where = f" in {v.block[1]}" if blocks > 1 else ""
        parts.append(f"{suite.label(v.entry)}{where} ({v.text})")
    return "; ".join(parts)


def group_conclusion(
    suite: Suite,
    group: str,
    blocks: Mapping[Block, tuple[BlockInfo, Sequence[EntrySummary]]],
) -> list[str]:
    """Sentences on a group, from the CIs of its entries against the reference only."""
    ref = suite.label(suite.reference)
    entries = [e for e in suite.group_entries(group) if e != suite.reference]
    verdicts = [
        verdict(s, block)
        for block, (_info, summaries) in blocks.items()
        for s in summaries
        if s.entry in entries and not suite.spec.entries[s.entry].upper_bound
    ]
    if not verdicts:
        return []
    higher = [v for v in verdicts if v.kind == "higher"]
    lower = [v for v in verdicts if v.kind == "lower"]
    same = [v for v in verdicts if v.kind == "same"]
    spec = suite.groups()[group]
    level = f"{100 * suite.spec.statistics.level:g}%"
    lines = []
    if spec.question:
        if not higher and not lower:
            largest = max((abs(_diff_mean(blocks, v)) for v in same), default=math.nan)
            answer = (
                f"No detectable effect: no entry of this group differs from {ref} beyond its {level} CI in any "
                f"block (largest mean |ΔDice| {100 * largest:.1f} points)."
            )
        else:
            n_diff = len(higher) + len(lower)
            answer = (
                f"In {n_diff} of {len(verdicts)} entry/block pair(s) the {level} CI of the difference to {ref} "
                "excludes zero (listed below)" + ("; in the others it does not." if n_diff < len(verdicts) else ".")
            )
        lines.append(f"**{spec.question}** {answer}")
    nb = len(blocks)
    if higher:
        lines.append(f"Higher Dice than {ref} ({level} CI above zero): {_labels(suite, higher, nb)}.")
    if lower:
        lines.append(f"Lower Dice than {ref} ({level} CI below zero): {_labels(suite, lower, nb)}.")
    if same:
        names = sorted({suite.label(v.entry) for v in same}, key=[suite.label(e) for e in entries].index)
        lines.append(
            f"No detectable difference from {ref} (the CI contains zero) in {len(same)} entry/block pair(s): "
            f"{', '.join(names)}."
        )
    return lines


def _diff_mean(blocks: Mapping[Block, tuple[BlockInfo, Sequence[EntrySummary]]], v: Verdict) -> float:
    for s in blocks[v.block][1]:
        if s.entry == v.entry and s.diff is not None:
            return s.diff.mean
    return math.nan


def gap_sentences(
    suite: Suite, blocks: Mapping[Block, tuple[BlockInfo, Sequence[EntrySummary]]], entries: Sequence[str]
) -> list[str]:
    """Per block: the reference's rank by mean Dice among the UDA entries of ``entries``, and the share
    of the lower -> upper gap each of them closes (or why that share is undefined)."""
    lines = []
    for block, (_info, summaries) in blocks.items():
        by = {s.entry: s for s in summaries}
        uda = [
            s
            for s in summaries
            if s.entry in entries and not suite.spec.entries[s.entry].upper_bound and not math.isnan(s.dice_mean.mean)
        ]
        ref = by.get(suite.reference)
        if ref is not None and ref in uda:
            ranked = sorted(uda, key=lambda s: -s.dice_mean.mean)
            lines.append(
                f"{block[1]}: {suite.label(suite.reference)} ranks {ranked.index(ref) + 1} of {len(ranked)} "
                f"by mean Dice among the entries without target labels (best: {suite.label(ranked[0].entry)}, "
                f"{100 * ranked[0].dice_mean.mean:.1f})."
            )
        bounds = gap_entries(suite, list(by))
        if bounds is None:
            continue
        lo, hi = by[bounds[0]].dice_mean.mean, by[bounds[1]].dice_mean.mean
        low_name, high_name = suite.label(bounds[0]), f"{suite.label(bounds[1])} {UPPER_MARK}"
        if all(s.gap is None for s in summaries):
            lines.append(
                f"{block[1]}: gap closed is undefined: the upper bound {high_name} ({100 * hi:.1f}) is not detectably "
                f"above the lower bound {low_name} ({100 * lo:.1f}) at this budget."
            )
            continue
        closing = sorted((s for s in uda if s.gap is not None and s.entry not in bounds), key=lambda s: -(s.gap or 0.0))
        if closing:
            shown = ", ".join(f"{suite.label(s.entry)} {s.gap:.0f}%" for s in closing)
            lines.append(
                f"{block[1]}: of the {100 * (hi - lo):.1f}-point gap between {low_name} ({100 * lo:.1f}) and "
                f"{high_name} ({100 * hi:.1f}), the entries close {shown}."
            )
    return lines


# --------------------------------------------------------------------------------------------
# VL diagnostics figure

VlCurves = dict[str, dict[Block, tuple[np.ndarray, np.ndarray]]]


VlPanels = dict[str, VlCurves]


def vl_panels(suite: Suite, out: Path, keys: Sequence[str] = VL_KEYS) -> VlPanels:
    """key -> entry -> block -> (steps, mean over seeds), for entries that logged VL diagnostics.

    Each complete cell's ``metrics.jsonl`` files are read once for all ``keys``.
    """
    acc: dict[tuple[str, str, Block], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for cell in complete_cells(suite, out):
        block = (cell.dataset, cell.direction)
        for stage in load_run_metrics(out / cell.rel_dir / "run"):
            for r in stage.rows:
                if r.get("kind", "train") != "train" or "vl_grad_embed" not in r:
                    continue
                for key in keys:
                    value = _vl_value(r, key)
                    if math.isfinite(value):
                        acc[(key, cell.entry, block)][int(r["step"])].append(value)
    panels: VlPanels = {key: defaultdict(dict) for key in keys}
    for (key, entry, block), by_step in acc.items():
        steps = np.array(sorted(by_step), dtype=np.float64)
        panels[key][entry][block] = (steps, np.array([np.mean(by_step[int(s)]) for s in steps]))
    return {key: dict(curves) for key, curves in panels.items()}


def vl_curves(suite: Suite, out: Path, key: str) -> VlCurves:
    """entry -> block -> (steps, mean over seeds) of one :data:`VL_PANELS` key (see :func:`vl_panels`)."""
    return vl_panels(suite, out, (key,))[key]


def _vl_value(row: Mapping[str, object], key: str) -> float:
    if key == "vl_loss":
        parts = [logged_float(row[k]) for k in ("vl_s", "vl_t") if k in row]
        return float(np.mean(parts)) if parts else math.nan
    if key == "vl_sv_std":
        parts = [logged_float(row[k]) for k in ("vl_s_sv_std", "vl_t_sv_std") if k in row]
        return float(np.mean(parts)) if parts else math.nan
    return logged_float(row[key]) if key in row else math.nan


def vl_table(suite: Suite, panels: VlPanels) -> str:
    """Markdown: per entry and block, each :data:`VL_PANELS` value at the first and the last logged step.

    Empty when no cell logged VL diagnostics. Values are means over seeds (as in ``PAGE_vl.png``).
    """
    entries = [e for e in suite.spec.entries if e in panels["vl_loss"]]
    if not entries:
        return ""
    head = ["Entry", "Block", *(f"{title}: first -> last" for _key, title in VL_PANELS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        for block in suite.blocks():
            if block not in panels["vl_loss"][e]:
                continue
            cells = []
            for key, _title in VL_PANELS:
                steps, values = panels[key].get(e, {}).get(block, (np.zeros(0), np.zeros(0)))
                if not values.size:
                    cells.append("n/a")
                    continue
                cells.append(f"{values[0]:.3g} (it {steps[0]:.0f}) -> {values[-1]:.3g} (it {steps[-1]:.0f})")
            label = suite.label(e).replace("|", "\\|")
            lines.append("| " + " | ".join([label, block[1], *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot_vl(suite: Suite, panels: VlPanels, path: Path) -> Path | None:
    """``PAGE_vl.png`` (see the module docstring); None when no cell logged VL diagnostics."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    entries = [e for e in suite.spec.entries if e in panels["vl_loss"]]
    if not entries:
        return None
    blocks = [b for b in suite.blocks() if any(b in panels["vl_loss"][e] for e in entries)]
    fig = Figure(figsize=(4.2 * len(VL_PANELS), 3.2 * len(blocks)), layout="constrained")
    axes = fig.subplots(len(blocks), len(VL_PANELS), squeeze=False)
    cmap = colormaps["tab20"]
    for i, block in enumerate(blocks):
        for j, (key, title) in enumerate(VL_PANELS):
            ax = axes[i, j]
            for k, e in enumerate(entries):
                if block not in panels[key].get(e, {}):
                    continue
                x, y = panels[key][e][block]
                keep = np.isfinite(y) & ((y > 0) if key == "vl_grad_f_vis" else np.ones_like(y, dtype=bool))
                ls = "-" if e == suite.reference else "--" if k % 2 else "-."
                lw = 2.0 if e == suite.reference else 1.0
                ax.plot(x[keep], y[keep], ls=ls, lw=lw, color=cmap(k % cmap.N), label=suite.label(e))
            if key == "vl_grad_f_vis" and ax.get_lines():
                ax.set_yscale("log")
            ax.set_title(f"{block[1]}: {title}", fontsize=8)
            ax.set_xlabel("iteration of the stage that logged it", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle(f"{suite.name}: vision-language diagnostics, mean over seeds", fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The document


def write_results(suite: Suite, out: str | Path, page: str | Path, command: str) -> dict[str, Path]:
    """Write the results document ``page`` and its figures next to it.

    Args:
        suite: the loaded suite.
        out: the bench folder.
        page: the markdown file to write (e.g. ``docs/results_phantom.md``).
        command: the command that regenerates it (printed at the top).

    Returns:
        kind (``markdown``, ``dice_figure``, ``vl_figure`` when written) -> path.

    Raises:
        BenchError: no cell is complete.
    """
    out, page = Path(out), Path(page)
    rows, infos = collect(suite, out)
    if not rows:
        raise BenchError(f"{out}: no complete cell, nothing to write into {page}.")
    blocks = {b: (infos[b], summarise_block(rows, b, infos[b], suite)) for b in suite.blocks() if b in infos}
    groups = suite.groups()
    files = {"markdown": page}
    first = next(iter(groups))
    main_blocks = {
        b: (info, [s for s in ss if s.entry in suite.group_entries(first)]) for b, (info, ss) in blocks.items()
    }
    files["dice_figure"] = plot_bench(suite, main_blocks, page.with_name(f"{page.stem}_dice.png"))
    panels = vl_panels(suite, out)
    vl = plot_vl(suite, panels, page.with_name(f"{page.stem}_vl.png"))
    if vl is not None:
        files["vl_figure"] = vl
    elapsed, summed, n_done = wall_time(suite, out)
    n_cells = len(suite.cells())
    any_info = next(iter(infos.values()))
    diffs = [s.diff for _i, ss in blocks.values() for s in ss if s.diff is not None]
    md = [
        f"# Results: {suite.name}",
        "",
        f"Generated by `{command}` from the bench's cells; do not edit by hand. Adding `--report-only` "
        "rewrites it from existing cells without training.",
        "",
        "## Setup",
        "",
        *([suite.spec.description.strip(), ""] if suite.spec.description.strip() else []),
        f"- Suite: `{suite.path.name}`, {len(suite.spec.entries)} entries, "
        f"{len(blocks)} dataset/direction block(s), {n_done} of {n_cells} cells complete.",
        f"- Wall time: {format_seconds(elapsed)} from the first cell's start to the last cell's finish; "
        f"{format_seconds(summed)} summed over the cells (train + evaluate).",
        f"- Evaluation: {any_info.domain} {any_info.split} split of each target domain, 3D Dice (%) and ASSD "
        f"({assd_parts(any_info.assd_metric)[0]}) per volume, every entry at its last iteration (no target labels).",
        "- Each Dice/ASSD cell: mean ± std over training seeds of the per-seed class mean (std with ddof=1); "
        "per-class values are in the bench's `bench.md` and `bench.csv`.",
    ]
    if diffs:
        md.append(
            f"- ΔDice: mean paired difference (Dice points) to {suite.label(suite.reference)}, paired over "
            f"(seed, test volume) units of the seeds both entries have (a 3-seed row is compared with the "
            f"reference's runs of the same 3 seeds; the reference row's own mean is over all its seeds); "
            f"{diffs[0].describe()}. `n` = paired units."
        )
    md.append(f"- {UPPER_MARK} upper bound trained with target labels: not a UDA result.")
    md.append("")
    for k, (group, spec) in enumerate(groups.items()):
        entries = _group_rows(suite, group, first=k == 0)
        if not entries:
            continue
        md += [f"## {spec.title or group}", "", group_table(suite, entries, blocks)]
        if k == 0:
            md += [f"![per-class Dice]({files['dice_figure'].name})", ""]
    if vl is not None:
        md += [
            "## Vision-language diagnostics",
            "",
            "Mean over seeds of the logged VL loss, the gradient norm the weighted VL term sends to the image "
            "features `F_vis` (log scale) and the off-diagonal std of the image similarity matrix `S_v`, "
            "for every entry that logged them.",
            "",
            f"![VL diagnostics]({vl.name})",
            "",
            vl_table(suite, panels),
        ]
    n_cmp = sum(
        s.diff is not None and not math.isnan(s.diff.low) and not suite.spec.entries[s.entry].upper_bound
        for _i, ss in blocks.values()
        for s in ss
    )
    alpha = 1.0 - suite.spec.statistics.level
    md += [
        "## Conclusions",
        "",
        "Every statement below follows from the confidence intervals above. The intervals are not corrected "
        f"for multiple comparisons: of these {n_cmp} comparisons, about {alpha * n_cmp:.1f} would exclude zero "
        "by chance alone even if no entry differed from the reference.",
        "",
    ]
    for group, spec in groups.items():
        sentences = group_conclusion(suite, group, blocks)
        if group == first:
            sentences += gap_sentences(suite, blocks, suite.group_entries(group))
        if sentences:
            md += [f"### {spec.title or group}", "", *(f"- {s}" for s in sentences), ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, "\n".join(md))
    return files


__all__ = [
    "VL_PANELS",
    "Verdict",
    "gap_sentences",
    "group_conclusion",
    "group_table",
    "plot_vl",
    "verdict",
    "vl_curves",
    "vl_panels",
    "vl_table",
    "wall_time",
    "write_results",
]
