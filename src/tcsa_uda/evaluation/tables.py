"""Summary tables in the layout of the papers: per class Dice and ASSD, mean (std) over volumes.

One row per evaluated model (or prediction folder), as in the tables of SIFA, MPSCL and TCSA-UDA
(arXiv 2511.05782): ``Dice (%)`` for every class and their mean, then ``ASSD`` for every class
and their mean. Each cell is ``mean (std)`` over volumes from
:meth:`~tcsa_uda.metrics.volume.MetricAccumulator.summary`. Numbers in these papers are not
comparable unless the conventions are known, so every table carries notes naming the ASSD
variant and unit, the policy for missing structures, the parity preset, the number of volumes
and the model selection (an ``oracle`` selection is flagged), in markdown under the table and in
the LaTeX caption.

Example::

    spec = TableSpec(class_names={1: "MYO", 2: "LAC"}, assd_metric="assd_mm_pooled")
    text = markdown_table([TableRow("TCSA-UDA", acc.summary())], spec)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tcsa_uda.errors import ConfigError

_ASSD_NAME = re.compile(r"^assd_(mm|vox)_(pooled|mean_of_means)$")

UNIT_TEXT: dict[str, str] = {
    "mm": "mm (voxel spacing from the ground-truth NIfTI affine)",
    "vox": "voxels of the evaluated grid (no spacing)",
}
VARIANT_TEXT: dict[str, str] = {
    "pooled": "pooled = mean over the union of both directed surface-distance sets (MONAI symmetric, medpy >= 0.5)",
    "mean_of_means": "mean_of_means = (mean d(P->G) + mean d(G->P)) / 2 (older medpy, SIFA-era papers)",
}
POLICY_TEXT: dict[str, str] = {
    "nan": "ASSD undefined (NaN): left out of the mean and counted (cells marked *)",
    "sifa_mpscl": "ASSD = 1 (the MPSCL-line rule); Dice of two empty masks undefined (NaN)",
    "mpscl": "ASSD = 1 and Dice of two empty masks = 0 (as the released MPSCL / TCSA-UDA evaluation)",
    "adr": "ASSD = 100 (as ADR)",
}
PARITY_TEXT: dict[str, str] = {
    "sifa": (
        "Parity preset sifa: the SIFA-era metric conventions (ASSD in voxels, mean_of_means, missing structure "
        "-> ASSD 1) on whole-volume predictions; no released script gives exactly these numbers (SIFA's "
        "evaluate.py leaves the last D mod 128 slices unpredicted and stops on a missing structure)"
    ),
    "mpscl": (
        "Parity preset mpscl: the released MPSCL / TCSA-UDA evaluation (eval_UDA.py) reproduced, its 32-slice "
        "batch tail included"
    ),
}
TAIL_TEXT: dict[str, str] = {
    "released_batch32": (
        "Tail policy released_batch32: slices predicted in batches of 32, so the last D mod 32 slices of each volume "
        "along the slicing axis are background in the prediction and still scored, as in the released evaluation"
    ),
}
NAN_MARK = "*"


@dataclass(frozen=True)
class TableRow:
    """One row: a label and the summary of its evaluation.

    Attributes:
        label: the row name (method, run or prediction folder).
        summary: :meth:`MetricAccumulator.summary` of the row's volumes.
        missing: ids of cases that had no prediction and were scored as empty predictions.
    """

    label: str
    summary: Mapping[str, Any]
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """What a table shows and the conventions it must state.

    Attributes:
        class_names: foreground class id -> name, in column order.
        assd_metric: the ASSD column, ``assd_<mm|vox>_<pooled|mean_of_means>``; None for a
            Dice-only table.
        empty_policy: name of the missing-structure policy the metrics were computed with.
        parity: name of a parity preset (``sifa``, ``mpscl``) or None.
        tail_policy: ``none`` or a key of :data:`TAIL_TEXT` (slices left unpredicted, still scored).
        model_selection: how the evaluated checkpoint was chosen, when known.
        domain: the evaluated domain.
        split: the evaluated split.
        ddof: delta degrees of freedom of the std.
        notes: extra notes appended to the generated ones.
        decimals: decimals printed (Dice in %, ASSD in its unit).
    """

    class_names: Mapping[int, str]
    assd_metric: str | None = None
    empty_policy: str = "nan"
    parity: str | None = None
    tail_policy: str = "none"
    model_selection: str | None = None
    domain: str | None = None
    split: str | None = None
    ddof: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    decimals: int = 1

    def __post_init__(self) -> None:
        if not self.class_names:
            raise ConfigError("TableSpec.class_names: expected at least one foreground class, found none.")
        if self.assd_metric is not None:
            assd_parts(self.assd_metric)
        if self.empty_policy not in POLICY_TEXT:
            raise ConfigError(
                f"TableSpec.empty_policy: expected one of {', '.join(map(repr, POLICY_TEXT))}, found "
                f"{self.empty_policy!r}."
            )
        if self.tail_policy != "none" and self.tail_policy not in TAIL_TEXT:
            raise ConfigError(
                f"TableSpec.tail_policy: expected 'none' or one of {', '.join(map(repr, TAIL_TEXT))}, found "
                f"{self.tail_policy!r}."
            )
        if self.parity is not None and self.parity not in PARITY_TEXT:
            raise ConfigError(
                f"TableSpec.parity: expected one of {', '.join(map(repr, PARITY_TEXT))} or None, found {self.parity!r}."
            )


def assd_parts(metric: str) -> tuple[str, str]:
    """``(unit, variant)`` of an ASSD metric name such as ``assd_mm_pooled``.

    Raises:
        ConfigError: the name does not follow ``assd_<mm|vox>_<pooled|mean_of_means>``.
    """
    m = _ASSD_NAME.match(metric)
    if m is None:
        raise ConfigError(f"assd metric: expected assd_<mm|vox>_<pooled|mean_of_means>, found {metric!r}.")
    return m.group(1), m.group(2)


def is_oracle(selection: str | None) -> bool:
    """True when a model-selection description names the oracle (target test labels)."""
    return selection is not None and "oracle" in selection.lower()


def is_upper_bound(selection: str | None) -> bool:
    """True when a model-selection description says the model was trained with target labels."""
    return selection is not None and "upper bound" in selection.lower()


def table_notes(spec: TableSpec, rows: Sequence[TableRow]) -> list[str]:
    """The conventions of a table, one sentence each (shown under it and in the LaTeX caption)."""
    n_cases = sorted({int(r.summary.get("n_cases", 0)) for r in rows})
    where = " ".join(x for x in (spec.domain, spec.split) if x) or "evaluated"
    count = " or ".join(map(str, n_cases))
    notes = [
        f"Mean (std) over {count} {where} volume(s), std with ddof={spec.ddof}; Mean = mean of the per-class means.",
    ]
    if spec.assd_metric is None:
        notes.append("Dice in %, per 3D volume.")
    else:
        unit, variant = assd_parts(spec.assd_metric)
        notes.append(f"Dice in %, per 3D volume. ASSD in {UNIT_TEXT[unit]}; variant {VARIANT_TEXT[variant]}.")
        notes.append(f"Missing structure (empty prediction or ground truth): {POLICY_TEXT[spec.empty_policy]}.")
    if spec.parity is not None:
        notes.append(PARITY_TEXT[spec.parity] + ".")
    if spec.tail_policy != "none":
        notes.append(TAIL_TEXT[spec.tail_policy] + ".")
    if spec.model_selection is not None:
        notes.append(f"Model selection: {spec.model_selection}.")
        if is_oracle(spec.model_selection):
            notes.append("ORACLE selection: chosen with target test labels, not an unsupervised result.")
        if is_upper_bound(spec.model_selection):
            notes.append("UPPER BOUND: trained with target labels, not an unsupervised domain adaptation result.")
    for row in rows:
        if row.missing:
            notes.append(
                f"{row.label}: {len(row.missing)} case(s) without a prediction file, scored as empty predictions: "
                f"{', '.join(row.missing)}."
            )
    if any(_has_nan(r, spec) for r in rows):
        notes.append(f"{NAN_MARK} some values undefined (NaN) and left out of this mean; counts in metrics.json.")
    notes.extend(spec.notes)
    return notes


def _metrics(spec: TableSpec) -> list[str]:
    return ["dice"] if spec.assd_metric is None else ["dice", spec.assd_metric]


def _stats(summary: Mapping[str, Any], class_id: int | None, metric: str, label: str) -> Mapping[str, Any]:
    try:
        block = summary["class_mean"] if class_id is None else summary["classes"][class_id]
        return block[metric]
    except KeyError as exc:
        where = "the class mean" if class_id is None else f"class {class_id}"
        raise ConfigError(f"table row {label!r}: the summary has no {metric!r} for {where}.") from exc


def _has_nan(row: TableRow, spec: TableSpec) -> bool:
    for metric in _metrics(spec):
        for cid in [*spec.class_names, None]:
            stats = _stats(row.summary, cid, metric, row.label)
            if int(stats.get("n_nan", 0)) > 0:
                return True
    return False


def format_cell(stats: Mapping[str, Any], scale: float, decimals: int) -> str:
    """``mean (std)`` scaled (100 for Dice in %), ``n/a`` when undefined, ``*`` when NaN were left out."""
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{scale * float(mean):.{decimals}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ({scale * float(std):.{decimals}f})"
    if int(stats.get("n_nan", 0)) > 0:
        text += NAN_MARK
    return text


def _cells(row: TableRow, spec: TableSpec) -> list[str]:
    out = []
    for metric in _metrics(spec):
        scale = 100.0 if metric == "dice" else 1.0
        for cid in [*spec.class_names, None]:
            out.append(format_cell(_stats(row.summary, cid, metric, row.label), scale, spec.decimals))
    return out


def _assd_heading(spec: TableSpec) -> str:
    if spec.assd_metric is None:
        return ""
    unit, variant = assd_parts(spec.assd_metric)
    return f"ASSD ({unit}, {variant})"


def markdown_table(rows: Sequence[TableRow], spec: TableSpec, title: str | None = None) -> str:
    """The table in GitHub markdown, with a title line and the notes as a list below it."""
    if not rows:
        raise ConfigError("markdown_table: expected at least one row, found none.")
    names = list(spec.class_names.values())
    header = ["Method", *(f"Dice {n}" for n in names), "Dice Mean"]
    if spec.assd_metric is not None:
        header += [*(f"ASSD {n}" for n in names), "ASSD Mean"]
    heading = "Dice (%)" + (f" and {_assd_heading(spec)}" if spec.assd_metric else "")
    lines = [f"### {title or heading}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([_md_escape(row.label), *_cells(row, spec)]) + " |")
    lines.append("")
    lines.extend(f"- {note}" for note in table_notes(spec, rows))
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Escape the LaTeX special characters of plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(rows: Sequence[TableRow], spec: TableSpec, label: str = "tab:results", title: str | None = None) -> str:
    """The table as a LaTeX ``table`` (booktabs) whose caption holds the notes."""
    if not rows:
        raise ConfigError("latex_table: expected at least one row, found none.")
    names = [latex_escape(n) for n in spec.class_names.values()]
    k = len(names) + 1
    blocks = [r"Dice (\%) $\uparrow$"]
    if spec.assd_metric is not None:
        blocks.append(latex_escape(_assd_heading(spec)) + r" $\downarrow$")
    cols = "l" + "c" * k * len(blocks)
    group = " & ".join(rf"\multicolumn{{{k}}}{{c}}{{{b}}}" for b in blocks)
    rules = "".join(rf"\cmidrule(lr){{{2 + i * k}-{1 + (i + 1) * k}}}" for i in range(len(blocks)))
    header = " & ".join(["Method", *([*names, "Mean"] * len(blocks))])
    caption = " ".join(
        [latex_escape(title) + "." if title else "", *(latex_escape(n) for n in table_notes(spec, rows))]
    ).strip()
    caption = caption.replace(NAN_MARK + " some", "$^{*}$ some")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        rf" & {group} \\",
        rules,
        rf"{header} \\",
        r"\midrule",
    ]
    for row in rows:
        cells = [c.replace(NAN_MARK, "$^{*}$") for c in _cells(row, spec)]
        lines.append(" & ".join([latex_escape(row.label), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"
