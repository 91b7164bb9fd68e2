"""Compare label-free selection criteria with the oracle on runs trained with selection.log_oracle=true.

Usage: python scripts/selection_study.py RUN [RUN ...]
Prints one markdown table per stage number (columns: the runs, labelled by folder name).
See tcsa_uda.evaluation.selection_study and docs/evaluation.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tcsa_uda.evaluation.selection_study import StageStudy, study_markdown, study_run


def main(runs: list[str]) -> None:
    per_stage: dict[int, dict[str, StageStudy]] = {}
    names: dict[int, str] = {}
    for run in runs:
        for k, study in enumerate(study_run(run)):
            per_stage.setdefault(k, {})[Path(run).name] = study
            names[k] = study.stage
    for k in sorted(per_stage):
        points = sorted({s.points for s in per_stage[k].values()})
        print(f"### {names[k]}: {', '.join(map(str, points))} logged points per run\n")
        print(study_markdown(per_stage[k]))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
