"""The layout of a run folder, defined once: every module that writes or reads a run uses these names.

A run folder written by ``tcsa-uda train``::

    RUN/config.yaml                       the resolved training configuration
    RUN/stage1_<method>/                  one folder per stage (1-based index, method name)
        metrics.jsonl                     one JSON object per logged iteration
        tb/                               TensorBoard scalars
        checkpoint_last.pt                resume point, every ``checkpoint_every`` iterations
        final.pt                          the stage's last iteration
        best.pt                           the iteration chosen by a label-free selection criterion
    RUN/final.pt                          the last stage's selected checkpoint (what evaluate uses)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
"""The resolved configuration of a run."""
FINAL = "final.pt"
"""A stage's last iteration; at the run level, the last stage's selected checkpoint."""
LAST = "checkpoint_last.pt"
"""The periodic resume checkpoint of a stage."""
BEST = "best.pt"
"""The checkpoint a label-free selection criterion chose within a stage."""
METRICS_FILE = "metrics.jsonl"
"""One JSON object per logged iteration of a stage."""
TENSORBOARD_DIR = "tb"
"""TensorBoard event files of a stage."""

_STAGE_DIR = re.compile(r"^stage(\d+)_(.+)$")


@dataclass(frozen=True)
class StageFolder:
    """One stage folder of a run.

    Attributes:
        index: the stage number, 1-based as in the folder name.
        method: the method the stage trained.
        path: the folder.
    """

    index: int
    method: str
    path: Path


def stage_dir(run: str | Path, index: int, method: str) -> Path:
    """The folder of stage ``index`` (0-based position in the config's ``stages``) of ``run``."""
    return Path(run) / f"stage{index + 1}_{method}"


def stage_folders(run: str | Path) -> list[StageFolder]:
    """Every ``stage<k>_<method>`` folder of ``run``, by stage number (empty if ``run`` is not a folder)."""
    root = Path(run)
    if not root.is_dir():
        return []
    found = []
    for sub in root.iterdir():
        m = _STAGE_DIR.match(sub.name)
        if m is not None and sub.is_dir():
            found.append(StageFolder(int(m.group(1)), m.group(2), sub))
    return sorted(found, key=lambda s: s.index)


def selected_checkpoint(stage: str | Path) -> Path:
    """A stage's selected checkpoint: ``best.pt`` when a selection criterion chose one, else ``final.pt``."""
    stage = Path(stage)
    return stage / BEST if (stage / BEST).is_file() else stage / FINAL


def run_checkpoint(run: str | Path) -> Path:
    """The checkpoint that stands for a whole run (``RUN/final.pt``)."""
    return Path(run) / FINAL
