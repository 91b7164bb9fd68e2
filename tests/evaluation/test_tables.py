"""Tests of tcsa_uda.evaluation.tables: the papers' layout, the stated conventions, LaTeX."""

from __future__ import annotations

import math

import pytest

from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.tables import (
    TableRow,
    TableSpec,
    assd_parts,
    format_cell,
    latex_escape,
    latex_table,
    markdown_table,
)
from tcsa_uda.metrics.volume import MetricAccumulator

NAN = float("nan")


def _summary(with_nan: bool = False):
    """Two volumes, classes 1 (MYO) and 2 (AA), hand-chosen values."""
    acc = MetricAccumulator(class_names={1: "MYO", 2: "AA"})
    acc.add("a", {1: {"dice": 0.80, "assd_mm_pooled": 2.0}, 2: {"dice": 0.60, "assd_mm_pooled": 4.0}})
    acc.add(
        "b", {1: {"dice": 0.90, "assd_mm_pooled": 3.0}, 2: {"dice": 0.40, "assd_mm_pooled": NAN if with_nan else 6.0}}
    )
    return acc.summary()


def _cells(md: str, row: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_has_the_papers_layout_with_mean_and_std():
    spec = TableSpec(class_names={2: "AA", 1: "MYO"}, assd_metric="assd_mm_pooled", domain="CT", split="test")
    md = markdown_table([TableRow("TCSA-UDA", _summary())], spec)
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    assert header == ["Method", "Dice AA", "Dice MYO", "Dice Mean", "ASSD AA", "ASSD MYO", "ASSD Mean"]
    # AA dice 0.6, 0.4 -> 50.0 (10.0); MYO 0.8, 0.9 -> 85.0 (5.0); class mean (50 + 85) / 2 = 67.5,
    # std over the per-volume class averages 70 and 65 -> 2.5. ASSD AA 4, 6 -> 5.0 (1.0); MYO 2.5 (0.5);
    # mean 3.75, per-volume averages 3.0 and 4.5 -> std 0.75.
    assert _cells(md, "TCSA-UDA") == [
        "TCSA-UDA",
        "50.0 (10.0)",
        "85.0 (5.0)",
        "67.5 (2.5)",
        "5.0 (1.0)",
        "2.5 (0.5)",
        "3.8 (0.8)",
    ]
    assert "Mean (std) over 2 CT test volume(s), std with ddof=0" in md
    assert "ASSD in mm" in md and "variant pooled" in md
    assert "ASSD undefined (NaN)" in md


def test_nan_values_are_marked_and_explained():
    spec = TableSpec(class_names={1: "MYO", 2: "AA"}, assd_metric="assd_mm_pooled")
    md = markdown_table([TableRow("run", _summary(with_nan=True))], spec)
    cells = _cells(md, "run")
    assert cells[5] == "4.0 (0.0)*"  # AA ASSD: values 4 and NaN -> mean and std of the one defined value
    assert cells[6] == "3.2 (0.0)*"  # class mean (2.5 + 4.0) / 2 = 3.25; std over volume a only (b has a NaN)
    assert "* some values undefined (NaN) and left out of this mean" in md


def test_parity_policy_selection_and_missing_predictions_are_stated():
    spec = TableSpec(
        class_names={1: "MYO", 2: "AA"},
        assd_metric="assd_vox_mean_of_means",
        empty_policy="sifa_mpscl",
        parity="sifa",
        model_selection="oracle: best target test Dice",
    )
    summary = _summary()
    summary = {
        **summary,
        "classes": {
            c: {"dice": s["dice"], "assd_vox_mean_of_means": s["assd_mm_pooled"]} for c, s in summary["classes"].items()
        },
        "class_mean": {
            "dice": summary["class_mean"]["dice"],
            "assd_vox_mean_of_means": summary["class_mean"]["assd_mm_pooled"],
        },
    }
    md = markdown_table([TableRow("folder", summary, missing=("b",))], spec)
    assert "ASSD in voxels of the evaluated grid" in md and "mean_of_means = (mean d(P->G) + mean d(G->P)) / 2" in md
    assert "ASSD = 1 (the MPSCL-line rule); Dice of two empty masks undefined (NaN)" in md
    assert "Parity preset sifa" in md
    assert "Model selection: oracle: best target test Dice." in md
    assert "ORACLE selection: chosen with target test labels" in md
    assert "folder: 1 case(s) without a prediction file, scored as empty predictions: b." in md
    assert "### Dice (%) and ASSD (vox, mean_of_means)" in md


def test_the_mpscl_preset_states_its_tail_and_its_empty_rule():
    spec = TableSpec(
        class_names={1: "MYO"},
        assd_metric="assd_mm_pooled",
        empty_policy="mpscl",
        parity="mpscl",
        tail_policy="released_batch32",
    )
    md = markdown_table([TableRow("ours", _summary())], spec)
    assert "ASSD = 1 and Dice of two empty masks = 0 (as the released MPSCL / TCSA-UDA evaluation)" in md
    assert "Parity preset mpscl: the released MPSCL / TCSA-UDA evaluation (eval_UDA.py) reproduced" in md
    assert "Tail policy released_batch32: slices predicted in batches of 32, so the last D mod 32 slices" in md
    sifa = markdown_table([TableRow("ours", _summary())], TableSpec(class_names={1: "MYO"}, parity="sifa"))
    assert "no released script gives exactly these numbers" in sifa and "Tail policy" not in sifa
    with pytest.raises(ConfigError, match=r"TableSpec\.tail_policy: expected 'none' or one of 'released_batch32'"):
        TableSpec(class_names={1: "MYO"}, tail_policy="batch16")


def test_dice_only_table_has_no_assd_columns():
    acc = MetricAccumulator()
    acc.add("a", {1: {"dice": 0.5}})
    md = markdown_table([TableRow("r", acc.summary())], TableSpec(class_names={1: "liver"}))
    assert _cells(md, "r") == ["r", "50.0 (0.0)", "50.0 (0.0)"]
    assert "ASSD" not in md


def test_latex_table_escapes_and_groups_columns():
    spec = TableSpec(class_names={1: "MYO", 2: "A_A"}, assd_metric="assd_mm_pooled", model_selection="last iteration")
    tex = latex_table([TableRow("TCSA & co", _summary(with_nan=True))], spec, label="tab:mr2ct")
    assert r"\multicolumn{3}{c}{Dice (\%) $\uparrow$}" in tex
    assert r"\multicolumn{3}{c}{ASSD (mm, pooled) $\downarrow$}" in tex
    assert r"\cmidrule(lr){2-4}\cmidrule(lr){5-7}" in tex
    assert r"Method & MYO & A\_A & Mean & MYO & A\_A & Mean \\" in tex
    assert (
        r"TCSA \& co & 85.0 (5.0) & 50.0 (10.0) & 67.5 (2.5) & 2.5 (0.5) & 4.0 (0.0)$^{*}$ & 3.2 (0.0)$^{*}$ \\" in tex
    )
    assert r"\label{tab:mr2ct}" in tex and "Model selection: last iteration." in tex
    assert tex.count(r"\begin{tabular}{lcccccc}") == 1


def test_helpers_and_validation():
    assert assd_parts("assd_vox_mean_of_means") == ("vox", "mean_of_means")
    with pytest.raises(ConfigError, match=r"expected assd_<mm|vox>_<pooled|mean_of_means>, found 'hd95_mm'"):
        assd_parts("hd95_mm")
    with pytest.raises(ConfigError, match="empty_policy: expected one of"):
        TableSpec(class_names={1: "a"}, empty_policy="zero")
    with pytest.raises(ConfigError, match="at least one foreground class"):
        TableSpec(class_names={})
    assert format_cell({"mean": NAN, "std": NAN, "n_nan": 2}, 100, 1) == "n/a"
    assert format_cell({"mean": 0.1234, "std": NAN, "n_nan": 0}, 100, 2) == "12.34"
    assert latex_escape("50% of a_b & {c}") == r"50\% of a\_b \& \{c\}"
    assert math.isclose(float(format_cell({"mean": 1.25, "std": 0.0, "n_nan": 0}, 1, 2).split()[0]), 1.25)
    with pytest.raises(ConfigError, match="no 'assd_mm_pooled' for class 1"):
        ok = {"mean": 0.5, "std": 0.0, "n_nan": 0}
        markdown_table(
            [TableRow("r", {"classes": {1: {"dice": ok}}, "class_mean": {"dice": ok}})],
            TableSpec(class_names={1: "a"}, assd_metric="assd_mm_pooled"),
        )
