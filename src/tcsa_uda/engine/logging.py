"""Metric logging: a JSON-lines file plus TensorBoard scalars."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tcsa_uda.atomic import make_dir, output_write_error
from tcsa_uda.layout import METRICS_FILE, TENSORBOARD_DIR


class MetricsLogger:
    """Append one JSON object per logged step to ``metrics.jsonl`` and mirror it to TensorBoard.

    Args:
        folder: run (stage) folder; ``metrics.jsonl`` and ``tb/`` are created in it.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, folder: Path, tensorboard: bool = True) -> None:
        self.folder = Path(folder)
        make_dir(self.folder)
        self.path = self.folder / METRICS_FILE
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder / TENSORBOARD_DIR))

    def log(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        """Record ``values`` at ``step`` (non-finite values are kept as strings, never dropped)."""
        row: dict[str, Any] = {"step": step, "kind": kind}
        for k, v in values.items():
            fv = float(v)
            row[k] = fv if math.isfinite(fv) else str(fv)
            if self._writer is not None:
                self._writer.add_scalar(f"{kind}/{k}", fv, step)
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise output_write_error(self.path, exc) from exc

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a ``metrics.jsonl`` file (skipping a torn last line from an interrupted run)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def logged_float(v: Any) -> float:
    """A logged value as float; non-finite values are logged as strings (``"nan"``, ``"inf"``)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan
