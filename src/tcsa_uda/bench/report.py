"""The bench report: ``bench.csv``, ``bench.md``, ``bench.tex`` and ``bench.png`` from the cells.

Inputs are the per-volume metrics that ``tcsa-uda evaluate`` wrote into every complete cell
(``cells/.../eval/metrics.csv``, and ``metrics.json`` for the settings). Everything below is
computed from the long table that is also written as ``bench.csv`` (one row per entry, dataset,
direction, seed, test volume, class and metric), so every number of the tables can be recomputed
from that file.

One table per (dataset, direction) block, one row per entry:

* **Dice and ASSD per class and their class mean**, ``mean ± std`` over seeds. Per seed, a class's
  value is the mean over the test volumes (undefined values left out, as the evaluator does), and
  the class mean is the mean of the per-class values (undefined if a class is). Across seeds:
  the mean and the sample std (ddof=1; no ``±`` with one seed). A ``*`` marks a cell where
  undefined (NaN) values were left out.
* **ΔDice vs the reference entry**: the mean paired difference of the per-volume class-mean Dice
  (in Dice points), paired over (seed, test volume) units present for both entries, with a CI
  from :mod:`tcsa_uda.evaluation.stats` (percentile bootstrap by default: see there why). Units
  whose class-mean Dice is undefined in either entry are dropped and counted.
* **Gap closed** (when the suite has a ``lower_bound`` and an ``upper_bound`` entry):
  ``(entry - lower) / (upper - lower)`` in percent, on the Dice class mean; undefined unless the
  upper bound is detectably above the lower bound (the CI of their paired difference, computed as
  ΔDice, lies above zero).

Upper-bound entries (trained with target labels) are marked ``†`` and never counted as a UDA
result. The method of every number is stated under each table and in each LaTeX caption.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tcsa_uda.atomic import atomic_write_text
from tcsa_uda.bench.runner import EVAL_DIR, BenchError, cell_spec, cell_state, format_seconds, read_record
from tcsa_uda.bench.suite import Cell, Suite
from tcsa_uda.evaluation.stats import PairedDifference, paired_ci
from tcsa_uda.evaluation.tables import POLICY_TEXT, UNIT_TEXT, VARIANT_TEXT, assd_parts, is_oracle, latex_escape

CSV_COLUMNS: tuple[str, ...] = ("entry", "dataset", "direction", "seed", "case", "class", "metric", "value")
"""Columns of ``bench.csv`` (long format; ``class`` is the class name, NaN written ``nan``)."""
REPORT_FILES: dict[str, str] = {"csv": "bench.csv", "markdown": "bench.md", "latex": "bench.tex", "figure": "bench.png"}
UPPER_MARK = "†"
NAN_MARK = "*"
_DICE = "dice"

Block = tuple[str, str]


@dataclass(frozen=True)
class LongRow:
    """One row of ``bench.csv``.

    Attributes:
        entry: entry name.
        dataset: dataset name.
        direction: direction name.
        seed: training seed.
        case: test volume id.
        cls: class name.
        metric: metric name (``dice``, ``assd_mm_pooled``, ...).
        value: the value (NaN when undefined).
    """

    entry: str
    dataset: str
    direction: str
    seed: int
    case: str
    cls: str
    metric: str
    value: float


@dataclass(frozen=True)
class Stat:
    """A value over seeds.

    Attributes:
        mean: mean over the seeds where it is defined (NaN if none).
        std: sample std over those seeds (NaN with fewer than two).
        n: seeds where it is defined.
        nan_left_out: some undefined value (a volume or a seed) was left out.
    """

    mean: float
    std: float
    n: int
    nan_left_out: bool


@dataclass
class BlockInfo:
    """What the cells of one (dataset, direction) block share.

    Attributes:
        classes: foreground class names in column order.
        assd_metric: the ASSD column, e.g. ``assd_mm_pooled``.
        empty_policy: the evaluator's missing-structure policy.
        parity: the evaluator's parity preset, if any.
        domain: the evaluated (target) domain.
        split: the evaluated split.
        n_cases: test volumes per cell.
        oracle_selection: entries whose checkpoint was chosen with target test labels.
    """

    classes: list[str]
    assd_metric: str
    empty_policy: str
    parity: str | None
    domain: str
    split: str
    n_cases: set[int] = field(default_factory=set)
    oracle_selection: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class EntrySummary:
    """One table row.

    Attributes:
        entry: entry name.
        n_seeds: seeds with a complete cell.
        missing_seeds: seeds of the suite without a complete cell.
        dice: class name -> Dice over seeds (fractions, not %).
        dice_mean: class-mean Dice over seeds.
        assd: class name -> ASSD over seeds.
        assd_mean: class-mean ASSD over seeds.
        diff: paired difference in class-mean Dice against the reference (None for the reference).
        gap: gap closed in percent (None when not defined).
    """

    entry: str
    n_seeds: int
    missing_seeds: tuple[int, ...]
    dice: dict[str, Stat]
    dice_mean: Stat
    assd: dict[str, Stat]
    assd_mean: Stat
    diff: PairedDifference | None
    gap: float | None


# --------------------------------------------------------------------------------------------
# Reading the cells


def _float(text: str) -> float:
    return math.nan if text.strip().lower() in ("nan", "") else float(text)


def complete_cells(suite: Suite, out: Path) -> list[Cell]:
    """The suite's cells whose evaluation is complete and whose recorded spec matches the suite."""
    return [c for c in suite.cells() if cell_state(out / c.rel_dir, cell_spec(suite, c))[0] == "done"]


def read_cell(out: Path, cell: Cell) -> tuple[list[LongRow], dict[str, Any]]:
    """The long rows of one complete cell and the ``meta`` of its ``metrics.json``.

    Raises:
        BenchError: ``metrics.csv`` lacks the columns ``tcsa-uda evaluate`` writes.
    """
    edir = out / cell.rel_dir / EVAL_DIR
    with open(edir / "metrics.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        need = ["case", "class", "class_name", _DICE]
        if any(k not in fields for k in need):
            raise BenchError(
                f"{edir / 'metrics.csv'}: expected the columns {need} of tcsa-uda evaluate, found {fields}."
            )
        metrics = [k for k in fields if k not in ("case", "class", "class_name")]
        raw = list(reader)
    raw.sort(key=lambda r: int(r["class"]))  # stable: cases keep their order within a class
    rows = [
        LongRow(cell.entry, cell.dataset, cell.direction, cell.seed, r["case"], r["class_name"], m, _float(r[m]))
        for r in raw
        for m in metrics
    ]
    meta = json.loads((edir / "metrics.json").read_text(encoding="utf-8")).get("meta", {})
    return rows, meta


def _assd_metric(settings: Mapping[str, Any]) -> str:
    unit = "vox" if settings.get("units") == "vox" else "mm"
    return f"assd_{unit}_{settings.get('assd_variant', 'pooled')}"


def collect(suite: Suite, out: Path) -> tuple[list[LongRow], dict[Block, BlockInfo]]:
    """The long rows of every complete cell and the shared settings of each block.

    Raises:
        BenchError: two cells of one block disagree on the classes or the evaluation settings.
    """
    rows: list[LongRow] = []
    infos: dict[Block, BlockInfo] = {}
    for cell in complete_cells(suite, out):
        cell_rows, meta = read_cell(out, cell)
        rows.extend(cell_rows)
        settings = meta.get("settings", {})
        classes = list(dict.fromkeys(r.cls for r in cell_rows))
        info = BlockInfo(
            classes=classes,
            assd_metric=_assd_metric(settings),
            empty_policy=str(settings.get("empty_policy", "nan")),
            parity=settings.get("parity"),
            domain=cell.target,
            split=str(meta.get("split", suite.spec.evaluation.split)),
        )
        block = (cell.dataset, cell.direction)
        known = infos.setdefault(block, info)
        same = (known.classes, known.assd_metric, known.empty_policy, known.parity) == (
            info.classes,
            info.assd_metric,
            info.empty_policy,
            info.parity,
        )
        if not same:
            raise BenchError(
                f"{out / cell.rel_dir}: classes or evaluation settings differ from the other cells of "
                f"{block[0]}/{block[1]} ({info.classes}, {info.assd_metric}, {info.empty_policy} vs {known.classes}, "
                f"{known.assd_metric}, {known.empty_policy})."
            )
        known.n_cases.add(len({r.case for r in cell_rows}))
        if is_oracle(meta.get("model_selection")):
            known.oracle_selection.add(cell.entry)
    return rows, infos


def write_long_csv(rows: Sequence[LongRow], path: Path) -> None:
    """Write ``bench.csv`` atomically (NaN written ``nan``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.entry, r.dataset, r.direction, r.seed, r.case, r.cls, r.metric, repr(float(r.value))])
    atomic_write_text(path, buf.getvalue())


def read_long_csv(path: str | Path) -> list[LongRow]:
    """Read ``bench.csv`` back.

    Raises:
        BenchError: the header is not :data:`CSV_COLUMNS`.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(header) != CSV_COLUMNS:
            raise BenchError(f"{path}: expected the columns {list(CSV_COLUMNS)}, found {header}.")
        return [LongRow(e, d, di, int(s), c, k, m, _float(v)) for e, d, di, s, c, k, m, v in reader]


# --------------------------------------------------------------------------------------------
# Statistics of one block


def _nanmean(values: Sequence[float]) -> tuple[float, bool]:
    arr = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(arr)
    return (float(arr[ok].mean()) if ok.any() else math.nan), bool((~ok).any())


def per_seed(rows: Sequence[LongRow], classes: Sequence[str], metric: str) -> dict[int, tuple[dict[str, float], bool]]:
    """Per seed: class name -> mean over volumes (NaN left out), plus whether any NaN was left out.

    ``rows`` are the rows of one entry in one block.
    """
    by: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.metric == metric:
            by[r.seed][r.cls].append(r.value)
    out = {}
    for seed, per_class in by.items():
        vals, left = {}, False
        for c in classes:
            vals[c], nan = _nanmean(per_class.get(c, []))
            left |= nan
        out[seed] = (vals, left)
    return out


def over_seeds(values: Sequence[float], nan_left_out: bool = False) -> Stat:
    """Mean and sample std (ddof=1) over seeds; undefined seeds left out and flagged."""
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[~np.isnan(arr)]
    n = int(ok.size)
    return Stat(
        mean=float(ok.mean()) if n else math.nan,
        std=float(ok.std(ddof=1)) if n > 1 else math.nan,
        n=n,
        nan_left_out=nan_left_out or n < arr.size,
    )


def metric_stats(rows: Sequence[LongRow], classes: Sequence[str], metric: str) -> tuple[dict[str, Stat], Stat]:
    """Per class and class mean: the per-seed values summarised over seeds (see the module docstring)."""
    seeds = per_seed(rows, classes, metric)
    per_class: dict[str, Stat] = {}
    for c in classes:
        vals = [seeds[s][0][c] for s in sorted(seeds)]
        left = any(math.isnan(v) for v in vals) or _class_has_nan(rows, c, metric)
        per_class[c] = over_seeds(vals, left)
    means = []
    for s in sorted(seeds):
        vals = [seeds[s][0][c] for c in classes]
        means.append(math.nan if any(math.isnan(v) for v in vals) else float(np.mean(vals)))
    any_left = any(left for _, left in seeds.values())
    return per_class, over_seeds(means, any_left)


def _class_has_nan(rows: Sequence[LongRow], cls: str, metric: str) -> bool:
    return any(r.cls == cls and r.metric == metric and math.isnan(r.value) for r in rows)


def unit_dice(rows: Sequence[LongRow], classes: Sequence[str]) -> dict[tuple[int, str], float]:
    """(seed, case) -> the volume's class-mean Dice (NaN if a class's Dice is undefined there)."""
    by: dict[tuple[int, str], dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.metric == _DICE:
            by[(r.seed, r.case)][r.cls] = r.value
    out = {}
    for key, vals in by.items():
        v = [vals.get(c, math.nan) for c in classes]
        out[key] = math.nan if any(math.isnan(x) for x in v) else float(np.mean(v))
    return out


def paired_against(
    entry_units: Mapping[tuple[int, str], float],
    ref_units: Mapping[tuple[int, str], float],
    suite: Suite,
) -> PairedDifference:
    """The paired difference entry - reference over the (seed, case) units both have."""
    keys = sorted(set(entry_units) & set(ref_units))
    a = np.array([entry_units[k] for k in keys], dtype=np.float64)
    b = np.array([ref_units[k] for k in keys], dtype=np.float64)
    st = suite.spec.statistics
    return paired_ci(a, b, method=st.ci, level=st.level, n_boot=st.n_boot, seed=st.seed)


def gap_entries(suite: Suite, present: Sequence[str]) -> tuple[str, str] | None:
    """``(lower, upper)`` entries of "gap closed" in a block, when both have results there."""
    lower = suite.lower_bound
    uppers = [u for u in suite.upper_bounds if u in present]
    if lower is None or lower not in present or not uppers:
        return None
    return lower, uppers[0]


def bounds_difference(
    by_entry: Mapping[str, Sequence[LongRow]], bounds: tuple[str, str], info: BlockInfo, suite: Suite
) -> PairedDifference:
    """The paired difference upper - lower bound in class-mean Dice (same units and CI as ΔDice)."""
    lower, upper = (unit_dice(by_entry[b], info.classes) for b in bounds)
    return paired_against(upper, lower, suite)


def gap_defined(
    by_entry: Mapping[str, Sequence[LongRow]], bounds: tuple[str, str], info: BlockInfo, suite: Suite
) -> bool:
    """Whether "gap closed" is defined: the upper bound is detectably above the lower bound.

    A gap whose CI contains zero is noise; dividing by it gives meaningless percentages
    (thousands of percent for a 0.1-point gap).
    """
    d = bounds_difference(by_entry, bounds, info, suite)
    return not math.isnan(d.low) and d.low > 0


def summarise_block(rows: Sequence[LongRow], block: Block, info: BlockInfo, suite: Suite) -> list[EntrySummary]:
    """One :class:`EntrySummary` per entry with at least one complete cell in ``block``."""
    mine = [r for r in rows if (r.dataset, r.direction) == block]
    by_entry: dict[str, list[LongRow]] = defaultdict(list)
    for r in mine:
        by_entry[r.entry].append(r)
    present = [e for e in suite.spec.entries if e in by_entry]
    ref = suite.reference
    ref_units = unit_dice(by_entry[ref], info.classes) if ref in by_entry else None
    out = []
    for e in present:
        er = by_entry[e]
        dice, dice_mean = metric_stats(er, info.classes, _DICE)
        assd, assd_mean = metric_stats(er, info.classes, info.assd_metric)
        diff = None
        if e != ref and ref_units is not None:
            diff = paired_against(unit_dice(er, info.classes), ref_units, suite)
        seeds = sorted({r.seed for r in er})
        missing = tuple(s for s in suite.seeds_of(e) if s not in seeds)
        out.append(EntrySummary(e, len(seeds), missing, dice, dice_mean, assd, assd_mean, diff, None))
    bounds = gap_entries(suite, present)
    if bounds is None or not gap_defined(by_entry, bounds, info, suite):
        return out
    means = {s.entry: s.dice_mean.mean for s in out}
    lo, hi = means[bounds[0]], means[bounds[1]]
    return [
        s if math.isnan(s.dice_mean.mean) else replace(s, gap=100.0 * (s.dice_mean.mean - lo) / (hi - lo)) for s in out
    ]


# --------------------------------------------------------------------------------------------
# Formatting


def fmt_stat(stat: Stat, scale: float, decimals: int = 1, pm: str = "±") -> str:
    """``mean ± std`` (``mean`` with one seed), ``n/a`` when undefined, ``*`` when NaN were left out."""
    if math.isnan(stat.mean):
        return "n/a"
    text = f"{scale * stat.mean:.{decimals}f}"
    if not math.isnan(stat.std):
        text += f" {pm} {scale * stat.std:.{decimals}f}"
    return text + (NAN_MARK if stat.nan_left_out else "")


def fmt_diff(diff: PairedDifference | None, decimals: int = 1) -> str:
    """``+3.2 [+1.0, +5.3] (n=20)`` in Dice points; ``reference`` for the reference row."""
    if diff is None:
        return "reference"
    if math.isnan(diff.mean):
        return f"n/a (n=0{f', {diff.n_dropped} dropped' if diff.n_dropped else ''})"
    text = f"{100 * diff.mean:+.{decimals}f}"
    if not math.isnan(diff.low):
        text += f" [{100 * diff.low:+.{decimals}f}, {100 * diff.high:+.{decimals}f}]"
    dropped = f", {diff.n_dropped} dropped" if diff.n_dropped else ""
    return f"{text} (n={diff.n}{dropped})"


def fmt_gap(s: EntrySummary, bounds: tuple[str, str] | None, decimals: int = 0) -> str:
    """Gap closed in percent (``n/a`` when undefined); the two bounds are labelled."""
    if s.gap is None:
        return "n/a"
    text = f"{s.gap:.{decimals}f}"
    if bounds is not None and s.entry == bounds[0]:
        return text + " (lower)"
    if bounds is not None and s.entry == bounds[1]:
        return text + " (upper)"
    return text


def row_label(suite: Suite, entry: str) -> str:
    """The entry's label, ``†`` for an upper bound."""
    label = suite.label(entry)
    return f"{label} {UPPER_MARK}" if suite.spec.entries[entry].upper_bound else label


def block_title(suite: Suite, block: Block) -> str:
    """``DATASET: DIRECTION (SOURCE -> TARGET)``."""
    d = suite.spec.directions[block[1]]
    return f"{block[0]}: {block[1]} ({d.source} -> {d.target})"


def block_notes(suite: Suite, block: Block, info: BlockInfo, summaries: Sequence[EntrySummary]) -> list[str]:
    """The method of every number of a block's table, one sentence each."""
    n_cases = " or ".join(str(n) for n in sorted(info.n_cases))
    n_seeds = sorted({s.n_seeds for s in summaries})
    unit, variant = assd_parts(info.assd_metric)
    notes = [
        f"Each cell: mean {'±'} std over {' or '.join(map(str, n_seeds))} training seed(s) of the per-seed mean over "
        f"{n_cases} {info.domain} {info.split} volume(s) (undefined values left out); std = sample std over seeds "
        "(ddof=1), omitted with one seed. Mean = mean over classes of the per-class values, per seed.",
        f"Dice in %, per 3D volume. ASSD in {UNIT_TEXT[unit]}; variant {VARIANT_TEXT[variant]}.",
        f"Missing structure: {POLICY_TEXT.get(info.empty_policy, info.empty_policy)}.",
    ]
    if info.parity:
        notes.append(f"Evaluation parity preset: {info.parity}.")
    diffs = [s.diff for s in summaries if s.diff is not None]
    ref = suite.label(suite.reference)
    if diffs:
        notes.append(
            f"ΔDice: mean paired difference in class-mean Dice (points) of the entry minus the reference {ref!r}, "
            "paired over (seed, test volume) units present for both; "
            f"{diffs[0].describe()}; n = paired units; units whose class-mean Dice is undefined in either entry "
            "are dropped and counted."
        )
    elif suite.reference not in {s.entry for s in summaries}:
        notes.append(f"ΔDice: n/a, the reference {ref!r} has no complete cell in this block.")
    bounds = gap_entries(suite, [s.entry for s in summaries])
    if bounds is not None:
        lo, hi = (suite.label(b) for b in bounds)
        if all(s.gap is None for s in summaries):
            notes.append(
                f"Gap closed: n/a, the upper bound {hi!r} is not detectably above the lower bound {lo!r} "
                "(the CI of their paired difference reaches zero or below)."
            )
        else:
            notes.append(
                f"Gap closed = (entry - lower) / (upper - lower) x 100 on the Dice Mean column, lower = {lo!r}, "
                f"upper = {hi!r}."
            )
    if any(suite.spec.entries[s.entry].upper_bound for s in summaries):
        notes.append(f"{UPPER_MARK} upper bound (trained with target labels): not a UDA result, not counted as one.")
    if info.oracle_selection:
        notes.append(
            "ORACLE model selection (target test labels) in the cells of: "
            f"{', '.join(sorted(info.oracle_selection))}; these are not unsupervised results."
        )
    for s in summaries:
        if s.missing_seeds:
            notes.append(
                f"{suite.label(s.entry)}: {len(s.missing_seeds)} of {len(suite.seeds_of(s.entry))} seed(s) without "
                f"a complete cell (failed or not run): {', '.join(map(str, s.missing_seeds))}."
            )
    missing_entries = [suite.label(e) for e in suite.spec.entries if e not in {s.entry for s in summaries}]
    if missing_entries:
        notes.append(f"No complete cell (failed or not run): {', '.join(missing_entries)}.")
    if any(st.nan_left_out for s in summaries for st in [*s.dice.values(), s.dice_mean, *s.assd.values(), s.assd_mean]):
        notes.append(f"{NAN_MARK} some undefined (NaN) values were left out of this mean.")
    return notes


def _header(info: BlockInfo, suite: Suite, bounds: tuple[str, str] | None) -> list[str]:
    head = ["Entry", "Seeds", *(f"Dice {c}" for c in info.classes), "Dice Mean"]
    head += [*(f"ASSD {c}" for c in info.classes), "ASSD Mean"]
    head.append(f"ΔDice vs {suite.label(suite.reference)} [{100 * suite.spec.statistics.level:g}% CI]")
    if bounds is not None:
        head.append("Gap closed (%)")
    return head


def _cells(s: EntrySummary, info: BlockInfo, bounds: tuple[str, str] | None, pm: str) -> list[str]:
    cells = [str(s.n_seeds)]
    cells += [fmt_stat(s.dice[c], 100.0, pm=pm) for c in info.classes] + [fmt_stat(s.dice_mean, 100.0, pm=pm)]
    cells += [fmt_stat(s.assd[c], 1.0, pm=pm) for c in info.classes] + [fmt_stat(s.assd_mean, 1.0, pm=pm)]
    cells.append(fmt_diff(s.diff))
    if bounds is not None:
        cells.append(fmt_gap(s, bounds))
    return cells


def markdown_block(suite: Suite, block: Block, info: BlockInfo, summaries: Sequence[EntrySummary]) -> str:
    """One block's table in GitHub markdown, with its notes as a list below it."""
    bounds = gap_entries(suite, [s.entry for s in summaries])
    head = _header(info, suite, bounds)
    lines = [f"### {block_title(suite, block)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        label = row_label(suite, s.entry).replace("|", "\\|")
        lines.append("| " + " | ".join([label, *_cells(s, info, bounds, "±")]) + " |")
    lines.append("")
    lines += [f"- {n}" for n in block_notes(suite, block, info, summaries)]
    return "\n".join(lines) + "\n"


def _latex(text: str) -> str:
    out = latex_escape(text)
    for plain, tex in (("±", r"$\pm$"), ("Δ", r"$\Delta$"), (UPPER_MARK, r"$^\dagger$"), ("->", r"$\to$")):
        out = out.replace(plain, tex)
    return out.replace(NAN_MARK, "$^{*}$")


def latex_block(suite: Suite, block: Block, info: BlockInfo, summaries: Sequence[EntrySummary], label: str) -> str:
    """One block's table as a LaTeX ``table`` (booktabs) whose caption holds the notes."""
    bounds = gap_entries(suite, [s.entry for s in summaries])
    head = _header(info, suite, bounds)
    caption = " ".join(
        [_latex(block_title(suite, block)) + "."] + [_latex(n) for n in block_notes(suite, block, info, summaries)]
    )
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{l{'c' * (len(head) - 1)}}}",
        r"\toprule",
        " & ".join(_latex(h) for h in head) + r" \\",
        r"\midrule",
    ]
    for s in summaries:
        cells = [_latex(row_label(suite, s.entry)), *(_latex(c) for c in _cells(s, info, bounds, "±"))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Figure


def plot_bench(suite: Suite, blocks: Mapping[Block, tuple[BlockInfo, Sequence[EntrySummary]]], path: Path) -> Path:
    """Per-class Dice per entry (mean ± std over seeds), one panel per block; upper bounds hatched."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from tcsa_uda.evaluation.figures import save_figure

    n = len(blocks)
    fig = Figure(figsize=(max(6.0, 1.6 * (max(len(i.classes) for i, _ in blocks.values()) + 1) + 2), 3.4 * n))
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    cmap = colormaps["tab10"]
    entries = list(suite.spec.entries)
    for ax, (block, (info, summaries)) in zip(axes, blocks.items(), strict=True):
        groups = [*info.classes, "Mean"]
        x = np.arange(len(groups), dtype=np.float64)
        width = 0.8 / max(1, len(summaries))
        for k, s in enumerate(summaries):
            stats = [s.dice[c] for c in info.classes] + [s.dice_mean]
            means = [100 * st.mean for st in stats]
            stds = [0.0 if math.isnan(st.std) else 100 * st.std for st in stats]
            upper = suite.spec.entries[s.entry].upper_bound
            ax.bar(
                x - 0.4 + width * (k + 0.5),
                means,
                width,
                yerr=stds,
                capsize=2,
                color=cmap(entries.index(s.entry) % cmap.N),
                hatch="//" if upper else None,
                edgecolor="black" if upper else None,
                label=row_label(suite, s.entry),
            )
        ax.set_xticks(x)
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_ylabel("Dice (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{block_title(suite, block)}, {info.domain} {info.split}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncols=min(4, len(summaries)), loc="upper left")
    fig.suptitle(f"{suite.name}: per-class Dice, mean ± std over seeds ({UPPER_MARK}/hatched: upper bound)")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The report


def _status_lines(suite: Suite, out: Path) -> tuple[list[str], float]:
    lines, total = [], 0.0
    for cell in suite.cells():
        rec = read_record(out / cell.rel_dir)
        wall = rec.get("total_wall_s")
        state = cell_state(out / cell.rel_dir, cell_spec(suite, cell))[0]
        if state == "done" and isinstance(wall, (int, float)):
            total += float(wall)
        elif state != "done":
            why = rec.get("message") or ("stale (spec changed)" if state == "stale" else "not run")
            lines.append(f"- `{cell.name}`: {why} (folder `{cell.rel_dir}`)")
    return lines, total


def write_report(suite: Suite, out: str | Path) -> dict[str, Path]:
    """Write ``bench.csv``, ``bench.md``, ``bench.tex`` and ``bench.png`` into ``out``.

    Returns:
        kind (``csv``, ``markdown``, ``latex``, ``figure``) -> path.

    Raises:
        BenchError: no cell is complete, or cells of a block disagree on classes or settings.
    """
    out = Path(out)
    rows, infos = collect(suite, out)
    if not rows:
        raise BenchError(f"{out}: no complete cell, nothing to report.")
    files = {k: out / v for k, v in REPORT_FILES.items()}
    write_long_csv(rows, files["csv"])
    rows = read_long_csv(files["csv"])  # the tables are computed from the file as written
    blocks = {}
    for block in suite.blocks():
        if block in infos:
            blocks[block] = (infos[block], summarise_block(rows, block, infos[block], suite))
    problems, wall = _status_lines(suite, out)
    n_cells = len(suite.cells())
    md = [
        f"# Bench: {suite.name}",
        "",
        *([suite.spec.description.strip(), ""] if suite.spec.description.strip() else []),
        f"Suite: `{suite.path.name}`. Cells complete: {n_cells - len(problems)} of {n_cells} "
        f"({len(suite.spec.entries)} entries x {len(suite.blocks())} dataset/direction block(s) x their seeds). "
        "Summed wall time of the complete cells (train + evaluate): "
        f"{format_seconds(wall)}.",
        "",
        "Per-volume values: `bench.csv` (long format). Figure: `bench.png`.",
        "",
    ]
    tex = [f"% tcsa-uda bench {suite.name}: one table per dataset/direction block\n"]
    for k, (block, (info, summaries)) in enumerate(blocks.items()):
        md.append(markdown_block(suite, block, info, summaries))
        tex.append(latex_block(suite, block, info, summaries, label=f"tab:bench_{suite.name}_{k}"))
    if problems:
        md += ["## Cells without results", "", *problems, ""]
    md.append(f"![per-class Dice]({REPORT_FILES['figure']})\n")
    atomic_write_text(files["markdown"], "\n".join(md))
    atomic_write_text(files["latex"], "\n".join(tex))
    plot_bench(suite, blocks, files["figure"])
    return files


__all__ = [
    "CSV_COLUMNS",
    "REPORT_FILES",
    "BlockInfo",
    "EntrySummary",
    "LongRow",
    "Stat",
    "collect",
    "complete_cells",
    "fmt_diff",
    "fmt_stat",
    "latex_block",
    "markdown_block",
    "metric_stats",
    "over_seeds",
    "per_seed",
    "plot_bench",
    "read_long_csv",
    "summarise_block",
    "unit_dice",
    "write_long_csv",
    "write_report",
]
