"""How well does each label-free selection criterion pick checkpoints? (against the oracle)

A training run with ``selection.log_oracle: true`` logs, every ``selection.every`` iterations,
every selection score (``"kind": "select"`` rows of ``metrics.jsonl``; see
:mod:`tcsa_uda.engine.selection`), including ``oracle``: mean foreground Dice on target TEST
slices. This module replays each criterion's rule on those rows, exactly as the engine applies it
(:meth:`Selector.update`: first strict improvement wins), and reports, per stage:

- the iteration each criterion would pick and the oracle score there;
- the best oracle score of the stage (what selection on test labels would give; an upper bound);
- the regret: best oracle minus the oracle at the pick (0 = the criterion found the best point);
- the Spearman rank correlation of the criterion with the oracle over the logged points, signed
  so that +1 means "ranks checkpoints exactly as the oracle does".

Caveat, stated in every table: the study replays criteria on ONE trajectory. In a run that
selects with criterion X, stage 2 starts from X's stage-1 pick, so its trajectory would differ;
replaying the last stage of a ``criterion: last`` run measures picking within a stage.

Usage (library): ``study_run(RUN)`` then ``study_markdown({...})``; the script
``scripts/selection_study.py RUN [RUN ...]`` prints the tables (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from tcsa_uda.engine.logging import logged_float
from tcsa_uda.engine.selection import Selector
from tcsa_uda.errors import ConfigError
from tcsa_uda.evaluation.figures import StageMetrics, load_run_metrics
from tcsa_uda.train_config import CRITERION_DIRECTION, SelectionConfig

#: the label-free criteria compared with the oracle, in table order
CRITERIA: tuple[str, ...] = ("last", "source_val_dice", "target_entropy", "target_aux_agreement")


@dataclass(frozen=True)
class Pick:
    """The checkpoint a criterion picks within one stage.

    Attributes:
        criterion: the rule (``last``, a score name, or ``oracle``).
        step: the picked iteration.
        oracle: the oracle score (target test Dice, 0..1) at ``step``; NaN when not logged.
    """

    criterion: str
    step: int
    oracle: float


@dataclass(frozen=True)
class StageStudy:
    """Every criterion's pick in one stage, with the oracle's best point.

    Attributes:
        stage: the stage's name, e.g. ``stage 2 (tcsa)``.
        points: number of logged selection points.
        picks: criterion -> its pick (``CRITERIA`` that were logged).
        best: the oracle's own pick (highest oracle score).
        correlation: criterion -> signed Spearman correlation with the oracle (NaN when
            undefined, e.g. a constant score; ``last`` has none).
    """

    stage: str
    points: int
    picks: dict[str, Pick]
    best: Pick
    correlation: dict[str, float]

    def regret(self, criterion: str) -> float:
        """Oracle points lost by ``criterion`` against the best point (>= 0)."""
        return self.best.oracle - self.picks[criterion].oracle


def select_rows(stage: StageMetrics) -> list[dict[str, float]]:
    """The stage's ``select`` rows as floats, one per step (a resumed run's later row wins), by step."""
    by_step: dict[int, dict[str, float]] = {}
    for row in stage.rows:
        if row.get("kind") == "select":
            by_step[int(row["step"])] = {k: logged_float(v) for k, v in row.items() if k not in ("kind",)}
    return [by_step[s] for s in sorted(by_step)]


def replay(rows: Sequence[Mapping[str, float]], criterion: str) -> int:
    """The step that ``criterion`` picks among ``rows`` (the engine's rule, :meth:`Selector.update`).

    Raises:
        ConfigError: no rows, or a criterion that was not logged.
    """
    if not rows:
        raise ConfigError("selection study: no 'select' rows (train with selection.every set).")
    if criterion != "last" and criterion not in rows[0]:
        raise ConfigError(
            f"selection study: criterion {criterion!r} was not logged; logged: "
            f"{sorted(k for k in rows[0] if k != 'step')}."
        )
    # replays logged scores only (no forward pass): the input encoding is never used
    selector = Selector(cfg=SelectionConfig(criterion=criterion), source="", target="", encoding="grey")  # type: ignore[arg-type]
    for row in rows:
        selector.update(int(row["step"]), dict(row))
    if selector.best_iteration < 0:
        raise ConfigError(f"selection study: criterion {criterion!r} is NaN at every logged point.")
    return selector.best_iteration


def _signed_spearman(x: Sequence[float], y: Sequence[float], sign: int) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(sign * spearmanr(a[ok], b[ok]).statistic)


def study_stage(stage: StageMetrics) -> StageStudy:
    """Replay every logged label-free criterion and the oracle on one stage.

    Raises:
        ConfigError: the stage logged no oracle (train with ``selection.log_oracle=true``).
    """
    rows = select_rows(stage)
    if not rows or "oracle" not in rows[0]:
        raise ConfigError(
            f"selection study: {stage.name} logged no oracle score; train with selection.log_oracle=true."
        )
    oracle_at = {int(r["step"]): r["oracle"] for r in rows}
    oracle = [r["oracle"] for r in rows]
    picks: dict[str, Pick] = {}
    corr: dict[str, float] = {}
    for crit in CRITERIA:
        if crit != "last" and crit not in rows[0]:
            continue
        step = replay(rows, crit)
        picks[crit] = Pick(crit, step, oracle_at[step])
        if crit != "last":
            corr[crit] = _signed_spearman([r[crit] for r in rows], oracle, CRITERION_DIRECTION[crit])
    best_step = replay(rows, "oracle")
    return StageStudy(stage.name, len(rows), picks, Pick("oracle", best_step, oracle_at[best_step]), corr)


def study_run(run: str | Path) -> list[StageStudy]:
    """:func:`study_stage` for every stage of the run folder ``run`` that logged selection scores."""
    stages = [s for s in load_run_metrics(run) if any(r.get("kind") == "select" for r in s.rows)]
    if not stages:
        raise ConfigError(
            f"{run}: no stage folder with 'select' rows in metrics.jsonl (a run folder of `tcsa-uda train`?)."
        )
    return [study_stage(s) for s in stages]


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{100 * v:.1f}"


def study_markdown(studies: Mapping[str, StageStudy]) -> str:
    """A markdown table: one column per run (label -> one stage's study), one row per criterion.

    Cells are "oracle Dice at the pick (step)"; the last columns are the mean regret and the mean
    signed Spearman correlation over the runs. Dice values in %.
    """
    if not studies:
        raise ConfigError("selection study: nothing to tabulate.")
    labels = list(studies)
    crits = [c for c in CRITERIA if all(c in s.picks for s in studies.values())]
    head = "| criterion | " + " | ".join(labels) + " | mean regret (points) | mean Spearman with oracle |"
    lines = [head, "|---|" + "---|" * (len(labels) + 2)]
    for crit in crits:
        cells = [f"{_pct(s.picks[crit].oracle)} ({s.picks[crit].step})" for s in studies.values()]
        regret = float(np.mean([100 * s.regret(crit) for s in studies.values()]))
        rhos = [s.correlation[crit] for s in studies.values() if crit in s.correlation]
        rho = "-" if not rhos else ("n/a" if all(math.isnan(r) for r in rhos) else f"{np.nanmean(rhos):+.2f}")
        lines.append(f"| `{crit}` | " + " | ".join(cells) + f" | {regret:.1f} | {rho} |")
    best = [f"{_pct(s.best.oracle)} ({s.best.step})" for s in studies.values()]
    lines.append("| oracle (upper bound, uses target test labels) | " + " | ".join(best) + " | 0.0 | - |")
    lines += [
        "",
        "Cells: oracle score (mean foreground Dice % on the logged target test slices) at the iteration the "
        "criterion picks (in brackets). Criteria are replayed on one trajectory per run (see "
        "`tcsa_uda.evaluation.selection_study`).",
    ]
    return "\n".join(lines) + "\n"
