"""The life cycle of a run folder: start, resume or replace a run, checked before anything is written.

``train`` calls :func:`check_run_folder` (and, on ``--resume``, :func:`check_resume_points`)
before it writes anything, then :func:`start_run_folder`:

* A folder that already holds a run (``config.yaml``, ``final.pt`` or a ``stage<k>_<method>/``
  folder, :mod:`tcsa_uda.layout`) is refused unless ``--resume`` (continue it) or
  ``--overwrite`` (replace it) is given. Other files in the folder are never touched.
* ``--resume`` compares the run's saved ``config.yaml`` with the new configuration and refuses
  every difference except those in :data:`RESUME_MAY_CHANGE` (iteration counts of stages that
  have not finished, and keys that change only logging, speed or where the run executes); the
  error lists every differing key with both values. A key the saved file lacks (written by an
  older version) takes its default.
* ``--overwrite`` removes the old run's files (``config.yaml``, ``final.pt`` and the stage
  folders) only after every check passed, so a run that fails validation leaves the old run
  intact.
* Leftover temporary files of interrupted atomic writes (``.<name>.tmp-*``) are removed when a
  run starts or resumes.
"""

from __future__ import annotations

import fnmatch
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcsa_uda.atomic import TEMPORARY_GLOB, output_write_error
from tcsa_uda.config import load_config, to_dict
from tcsa_uda.engine.checkpoint import CheckpointError, check_compatible, load_checkpoint
from tcsa_uda.errors import ConfigError, TcsaUdaError
from tcsa_uda.layout import CONFIG_FILE, FINAL, LAST, run_checkpoint, selected_checkpoint, stage_dir, stage_folders
from tcsa_uda.train_config import TrainConfig

RESUME_MAY_CHANGE: tuple[str, ...] = (
    "stages.*.iterations",
    "optim.decay_iterations",
    "log_every",
    "checkpoint_every",
    "progress",
    "tensorboard",
    "num_threads",
    "device",
    "data.num_workers",
    "selection.log_oracle",
    "text.cache_dir",
    "precision",
    "channels_last",
    "compile",
)
"""Config keys (``*`` = any stage index) that may differ between a run and its ``--resume``.

``stages.<i>.iterations`` only for stages that have not finished (a finished stage is not trained
again, so its recorded length must stay true), and never below the iteration of the stage's
resume checkpoint; ``optim.decay_iterations`` goes with a changed length. The others change only
logging, checkpoint frequency, speed or the device (``device`` may change the last bits of the
floating-point results, which is why it is named here rather than hidden). ``channels_last`` and
``compile`` change only speed; a new ``precision`` is checked against the checkpoint's by
:meth:`tcsa_uda.engine.performance.RunPerformance.restore` (an explicit change is followed with a
warning, ``auto`` resolving to another precision than the checkpoint's is refused).
"""


class RunFolderError(TcsaUdaError):
    """A run folder cannot be used as asked (an existing run without ``--resume``/``--overwrite``)."""


def run_files(out_dir: Path) -> list[Path]:
    """The files and folders of a run that exist in ``out_dir`` (config, final checkpoint, stage folders)."""
    out_dir = Path(out_dir)
    found = [p for p in (out_dir / CONFIG_FILE, run_checkpoint(out_dir)) if p.exists()]
    return found + [s.path for s in stage_folders(out_dir)]


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config mappings (lists by index).

    Returns:
        One entry per differing key, ``key: saved X, now Y``; a list whose length changed is one entry.
    """
    out: list[str] = []
    for key in sorted(set(saved) | set(new), key=str):
        dotted = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(config_differences(a, b, dotted + "."))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                if isinstance(x, Mapping) and isinstance(y, Mapping):
                    out.extend(config_differences(x, y, f"{dotted}.{i}."))
                elif x != y:
                    out.append(f"{dotted}.{i}: saved {x!r}, now {y!r}")
        elif a != b:
            if isinstance(a, list) and isinstance(b, list):
                out.append(f"{dotted}: saved {len(a)} item(s), now {len(b)}")
            else:
                out.append(f"{dotted}: saved {a!r}, now {b!r}")
    return out


def _allowed(entry: str, finished: set[int]) -> bool:
    key = entry.split(":", 1)[0]
    if not any(fnmatch.fnmatchcase(key, pattern) for pattern in RESUME_MAY_CHANGE):
        return False
    parts = key.split(".")
    return not (parts[0] == "stages" and len(parts) > 2 and parts[1].isdigit() and int(parts[1]) in finished)


def finished_stages(cfg: TrainConfig, out_dir: Path) -> set[int]:
    """0-based indices of the stages of ``cfg`` whose ``final.pt`` exists in ``out_dir``."""
    return {k for k, s in enumerate(cfg.stages) if (stage_dir(out_dir, k, s.method) / FINAL).is_file()}


def check_run_folder(cfg: TrainConfig, out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an existing run without ``resume``/``overwrite``, and a resume with another configuration.

    Reads only; writes nothing.

    Raises:
        ConfigError: both ``resume`` and ``overwrite``; ``out_dir`` is a file; the saved
            configuration cannot be read or differs in a key outside :data:`RESUME_MAY_CHANGE`
            (every such key listed with both values).
        RunFolderError: ``out_dir`` holds a run and neither option was given.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise ConfigError("train: --resume continues the run in --out and --overwrite replaces it; give one of them.")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"train --out {out_dir}: expected a folder, found a file.")
    existing = run_files(out_dir)
    if existing and not (resume or overwrite):
        names = ", ".join(p.name for p in existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise RunFolderError(
            f"train --out {out_dir}: the folder already holds a run ({names}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out folder."
        )
    saved_path = out_dir / CONFIG_FILE
    if not resume or not saved_path.is_file():
        return
    try:
        saved = load_config(TrainConfig, saved_path)
    except TcsaUdaError as exc:
        raise ConfigError(
            f"train --resume: cannot read the run's saved configuration ({exc}); start a new run or pass --overwrite."
        ) from exc
    finished = finished_stages(saved, out_dir)
    diffs = config_differences(to_dict(saved), to_dict(cfg))
    refused = [d for d in diffs if not _allowed(d, finished)]
    if refused:
        raise ConfigError(
            f"train --resume: the configuration differs from the run's {saved_path} in {len(refused)} key(s): "
            f"{'; '.join(refused)}. Only {', '.join(RESUME_MAY_CHANGE)} may change on resume (iterations only of "
            "unfinished stages); use the saved config, or start a new run (another --out, or --overwrite)."
        )


def check_resume_points(cfg: TrainConfig, out_dir: Path, expected: Mapping[str, Any]) -> None:
    """Load and check every checkpoint a ``--resume`` of ``cfg`` will read, before anything is written.

    The selected checkpoint of each finished stage (it initialises the next stage) and the
    ``checkpoint_last.pt`` of the first unfinished stage must load safely (:func:`load_checkpoint`:
    weights-only, content hash), be written for the run's network and class set
    (:func:`check_compatible`), and the resume point must not lie beyond the stage's iterations.

    Raises:
        CheckpointError: one of them is unsafe, modified, for another network or class set, or
            for another stage.
        ConfigError: ``stages.<i>.iterations`` was lowered below the resume point.
    """
    out_dir = Path(out_dir)
    for k, stage in enumerate(cfg.stages):
        sdir = stage_dir(out_dir, k, stage.method)
        if (sdir / FINAL).is_file():
            path = selected_checkpoint(sdir)
        elif (sdir / LAST).is_file():
            path = sdir / LAST
        else:
            return
        state = load_checkpoint(path)
        check_compatible(path, state, expected)
        if state.get("stage") != k or state.get("method") != stage.method:
            raise CheckpointError(
                f"Checkpoint {path}: written for stage {state.get('stage')!r} ({state.get('method')!r}), "
                f"found in the folder of stage {k} ({stage.method!r})."
            )
        if path.name == LAST:
            at = int(state.get("iteration", 0))
            if at > stage.iterations:
                raise ConfigError(
                    f"stages.{k}.iterations={stage.iterations}: the run's resume checkpoint {path} is at iteration "
                    f"{at}; give at least {at} iterations."
                )
            return


def start_run_folder(out_dir: Path, *, overwrite: bool) -> None:
    """Create ``out_dir``; with ``overwrite`` remove the old run's files; remove leftover temporary files.

    Call only after every check passed (main rank only).

    Raises:
        OutputWriteError: the folder cannot be created or cleaned (permission, read-only disk).
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for path in run_files(out_dir):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        remove_temporary_files(out_dir)
    except OSError as exc:
        raise output_write_error(out_dir, exc) from exc


def remove_temporary_files(out_dir: Path) -> list[Path]:
    """Remove ``.<name>.tmp-*`` files left by interrupted atomic writes in the run and stage folders."""
    out_dir = Path(out_dir)
    removed: list[Path] = []
    for folder in [out_dir, *(s.path for s in stage_folders(out_dir))]:
        for path in folder.glob(TEMPORARY_GLOB):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
    return removed
